"""Identity stage 1: candidate pairs, from blocking keys computed for all records at once.

Two records become a candidate pair when they share a value of any blocking key (an email, a phone, an
identifier, surname + birth date, ...). Pairs are made with a self-join per key, so the cost follows the
number of real candidates, not n². A key value shared by more than `max_block_size` records is too common
to say anything about identity (noemail@example.com, a call-centre number): it makes no pairs and is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jellyfish
import numpy as np
import pandas as pd

from c360_pipelines.core.records import MatchInput

KeyBuilder = Callable[[MatchInput], pd.DataFrame]


def _from_long(table: str) -> KeyBuilder:
    return lambda data: getattr(data, table)[["rec", "value"]].rename(columns={"value": "key"})


def _from_columns(*columns: str) -> KeyBuilder:
    def build(data: MatchInput) -> pd.DataFrame:
        frame = data.records[list(columns)].dropna()
        key = frame[columns[0]].astype(str)
        for column in columns[1:]:
            key = key + "|" + frame[column].astype(str)
        return pd.DataFrame({"rec": frame.index.to_numpy(), "key": key.to_numpy()})

    return build


def _sounds_like_surname_in_postcode(data: MatchInput) -> pd.DataFrame:
    """Metaphone of the surname + first initial + postal code: catches surname typos at the same address."""
    frame = data.records[["last_name_norm", "first_name_norm", "postal_code"]].dropna()
    if frame.empty:
        return pd.DataFrame({"rec": pd.Series(dtype="int64"), "key": pd.Series(dtype="object")})
    codes = pd.Series(frame["last_name_norm"].unique())
    phonetic = dict(zip(codes, codes.map(jellyfish.metaphone), strict=True))
    key = frame["last_name_norm"].map(phonetic) + "|" + frame["first_name_norm"].str[0] + "|" + frame["postal_code"]
    return pd.DataFrame({"rec": frame.index.to_numpy(), "key": key.to_numpy()})


BLOCKING_KEYS: dict[str, KeyBuilder] = {
    "email": _from_long("emails"),
    "phone": _from_long("phones"),
    "identifier": _from_long("identifiers"),
    "surname_birth_date": _from_columns("last_name_norm", "birth_date"),
    "first_name_birth_date": _from_columns("first_name_norm", "birth_date"),
    "full_name_postal_code": _from_columns("first_name_norm", "last_name_norm", "postal_code"),
    "address": _from_columns("line1", "postal_code"),
    "street_start_surname": _from_columns("street_start", "last_name_norm"),
    "street_start_first_name": _from_columns("street_start", "first_name_norm"),
    "surname_sound_initial_postal_code": _sounds_like_surname_in_postcode,
    "full_name": _from_columns("first_name_norm", "last_name_norm"),
    "names_either_order": _from_columns("name_tokens"),
    "birth_date_postal_code": _from_columns("birth_date", "postal_code"),
    "birth_date_surname_initial": _from_columns("birth_date", "last_initial"),
    "birth_date_first_initial": _from_columns("birth_date", "first_initial"),
    "postal_code_birth_year": _from_columns("postal_code", "birth_year"),
}


@dataclass
class Candidates:
    pairs: pd.DataFrame  # columns i < j (record positions)
    too_common: pd.DataFrame  # key, value, records: values skipped as too common to block on


def candidate_pairs(data: MatchInput, max_block_size: int = 50, junk_values: frozenset[str] = frozenset()) -> Candidates:
    """Every pair of records sharing a value of some blocking key, once, as positions i < j.

    Key values are factorised to integers first: deduplicating, counting and joining a million string keys per
    blocking key is what used to take most of the time.
    """
    records = max(len(data), 1)
    found: list[np.ndarray] = []
    skipped: list[pd.DataFrame] = []
    for name, build in BLOCKING_KEYS.items():
        keys = build(data)
        keys = keys[~keys["key"].isin(junk_values)]
        codes, values = pd.factorize(keys["key"])
        # one row per (value, record), ordered by value then record
        unique = _sorted_unique(codes.astype("int64") * records + keys["rec"].to_numpy(dtype="int64"))
        code, rec = unique // records, unique % records
        sizes = np.bincount(code, minlength=len(values))
        common = np.flatnonzero(sizes > max_block_size)
        if len(common):
            skipped.append(pd.DataFrame({"blocking_key": name, "value": np.asarray(values)[common],
                                         "records": sizes[common]}).sort_values("value"))
        useful = (sizes[code] > 1) & (sizes[code] <= max_block_size)
        found.append(_pairs_within_blocks(code[useful], rec[useful], records))
    pairs = _sorted_unique(np.concatenate(found)) if found else np.array([], dtype="int64")
    too_common = (
        pd.concat(skipped, ignore_index=True)[["blocking_key", "value", "records"]]
        if skipped
        else pd.DataFrame(columns=["blocking_key", "value", "records"])
    )
    return Candidates(pd.DataFrame({"i": pairs // records, "j": pairs % records}), too_common)


def _pairs_within_blocks(code: np.ndarray, rec: np.ndarray, records: int) -> np.ndarray:
    """Pairs i < j of records sharing a block, each encoded as i * records + j."""
    if not len(code):
        return np.array([], dtype="int64")
    keys = pd.DataFrame({"code": code, "rec": rec})
    joined = keys.merge(keys, on="code", suffixes=("_a", "_b"))
    a, b = joined["rec_a"].to_numpy(), joined["rec_b"].to_numpy()
    keep = a < b
    return a[keep] * records + b[keep]


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's hash-based unique is several times slower on millions of int64."""
    ordered = np.sort(values)
    if not len(ordered):
        return ordered
    keep = np.empty(len(ordered), dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]
