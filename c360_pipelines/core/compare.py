"""Identity stage 2: compare each candidate pair field by field, as discrete agreement levels.

Each comparison yields a level per pair: -1 when either side has no value (no evidence either way), 0 for
disagreement, and higher levels for closer agreement. String similarity is computed in C++ for all pairs at
once (rapidfuzz `cpdist`); shared emails, phones and identifiers are found with joins, and for those the
number of records holding the shared value is kept (`*_freq`) so that a value many people share counts for
little. First names that are nicknames of one another (Bob / Robert) agree at their own level.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from nicknames import NickNamer
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler

from c360_pipelines.core.records import MatchInput

MISSING = -1

# Levels per comparison, highest first; the names are what explanations print.
LEVELS: dict[str, dict[int, str]] = {
    "first_name": {3: "same", 2: "nickname", 1: "similar", 0: "different"},
    "last_name": {3: "same", 2: "very similar", 1: "similar", 0: "different"},
    "birth_date": {3: "same", 2: "one part differs or day/month swapped", 1: "same year", 0: "different"},
    "email": {2: "shared", 1: "one or two characters differ", 0: "different"},
    "phone": {2: "shared", 1: "one or two digits differ", 0: "different"},
    "address": {3: "same street and postal code", 2: "similar street, same postal code or one typo away",
                1: "same postal code", 0: "different"},
    "identifier": {2: "shared", 1: "one or two characters differ", 0: "different value of the same type"},
}
COMPARISONS = tuple(LEVELS)
COMPARED_COLUMNS = ("i", "j", "first_name_sim", "first_name", "last_name_sim", "last_name", "first_name_freq",
                    "last_name_freq", "birth_date", "email", "email_freq", "phone", "phone_freq", "address", "identifier")


def similarity(left: pd.Series, right: pd.Series) -> np.ndarray:
    """Jaro-Winkler similarity of aligned string pairs (0 where either is missing)."""
    a = left.fillna("").astype(str).tolist()
    b = right.fillna("").astype(str).tolist()
    if not a:
        return np.array([], dtype="float64")
    return process.cpdist(a, b, scorer=JaroWinkler.normalized_similarity, workers=-1)


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    return NickNamer()


def canonical_names(name: str) -> frozenset[str]:
    """The full names that `name` is a nickname of (bob -> robert), lower case."""
    return _canonicals(name)


@lru_cache(maxsize=200_000)
def _canonicals(name: str) -> frozenset[str]:
    return frozenset(_nicknamer().canonicals_of(name))


@lru_cache(maxsize=200_000)
def _nicknames(name: str) -> frozenset[str]:
    return frozenset(_nicknamer().nicknames_of(name))


def nickname_compatible(a: str, b: str) -> bool:
    """One name is a nickname of the other (Bob, Robert), or both are nicknames of one name (Bob, Rob)."""
    return b in _nicknames(a) or a in _nicknames(b) or bool(_canonicals(a) & (_canonicals(b) | {b}))


def compare_pairs(data: MatchInput, pairs: pd.DataFrame) -> pd.DataFrame:
    """Levels (and the similarities behind them) for every candidate pair."""
    if pairs.empty:
        return pd.DataFrame({column: pd.Series(dtype="float64" if column.endswith("_sim") else "int64")
                             for column in COMPARED_COLUMNS})
    records = data.records
    left = records.iloc[pairs["i"].to_numpy()].reset_index(drop=True)
    right = records.iloc[pairs["j"].to_numpy()].reset_index(drop=True)
    out = pairs[["i", "j"]].reset_index(drop=True).copy()
    out["first_name_sim"] = similarity(left["first_name_norm"], right["first_name_norm"])
    first_counts = records["first_name_norm"].value_counts()
    out["first_name"] = _first_name_levels(left["first_name_norm"], right["first_name_norm"], out["first_name_sim"],
                                           first_counts)
    out["last_name_sim"] = similarity(left["last_name_norm"], right["last_name_norm"])
    out["last_name"] = _graded(left["last_name_norm"], right["last_name_norm"], out["last_name_sim"], (0.92, 0.8))
    _credit_swapped_names(out, left, right)
    for name in ("first_name", "last_name"):
        counts = records[f"{name}_norm"].value_counts()
        same = out[name].to_numpy() == 3
        out[f"{name}_freq"] = np.where(same, left[f"{name}_norm"].map(counts).fillna(0).to_numpy(), 0).astype("int64")
    out["birth_date"] = _birth_date_levels(left["birth_date"], right["birth_date"])
    for name, table in (("email", data.emails), ("phone", data.phones)):
        level, freq = _shared_value_levels(pairs, table, value_counts=table["value"].value_counts())
        near = _within_two_edits(left[name], right[name])
        out[name] = np.where(level == 1, 2, np.where((level == 0) & near, 1, level)).astype("int8")
        out[f"{name}_freq"] = freq
    out["address"] = _address_levels(data, pairs, left, right)
    out["identifier"] = _identifier_levels(data, pairs)
    return out


def _credit_swapped_names(out: pd.DataFrame, left: pd.DataFrame, right: pd.DataFrame) -> None:
    """First and last name entered the wrong way round on one side: the very same names count as the same,
    names a typo apart as similar, not different."""
    first_to_last = similarity(left["first_name_norm"], right["last_name_norm"])
    last_to_first = similarity(left["last_name_norm"], right["first_name_norm"])
    swapped = (first_to_last >= 0.9) & (last_to_first >= 0.9) & (out["first_name"].to_numpy() <= 1) & (
        out["last_name"].to_numpy() <= 1)
    exactly = swapped & (first_to_last == 1.0) & (last_to_first == 1.0)
    for name in ("first_name", "last_name"):
        out.loc[swapped, name] = np.maximum(out.loc[swapped, name], 1)
        out.loc[exactly, name] = 3


def _graded(a: pd.Series, b: pd.Series, sim: pd.Series, thresholds: tuple[float, float]) -> np.ndarray:
    missing = (a.isna() | b.isna()).to_numpy()
    same = (a.fillna("") == b.fillna("")).to_numpy()
    levels = np.select([missing, same, sim >= thresholds[0], sim >= thresholds[1]], [MISSING, 3, 2, 1], default=0)
    return levels.astype("int8")


def _plausible_typo(a: pd.Series, b: pd.Series, counts: pd.Series) -> np.ndarray:
    """A misspelling is a rare variant of a common name; two spellings both in common use are two names (Marc, Mary)."""
    fa = a.map(counts).fillna(0).to_numpy()
    fb = b.map(counts).fillna(0).to_numpy()
    rarer, commoner = np.minimum(fa, fb), np.maximum(fa, fb)
    return (rarer <= 2) | (rarer * 5 <= commoner)


def _first_name_levels(a: pd.Series, b: pd.Series, sim: pd.Series, counts: pd.Series) -> np.ndarray:
    missing = (a.isna() | b.isna()).to_numpy()
    same = (a.fillna("") == b.fillna("")).to_numpy()
    candidates = ~missing & ~same
    distinct = pd.DataFrame({"a": a[candidates], "b": b[candidates]}).drop_duplicates()
    compatible = {(x, y) for x, y in zip(distinct["a"], distinct["b"], strict=True) if nickname_compatible(x, y)}
    nickname = np.array(
        [bool(c) and (x, y) in compatible for c, x, y in zip(candidates, a.fillna(""), b.fillna(""), strict=True)],
        dtype=bool,
    )
    typo = (sim >= 0.88).to_numpy() & _plausible_typo(a, b, counts)
    levels = np.select([missing, same, nickname, typo], [MISSING, 3, 2, 1], default=0)
    return levels.astype("int8")


def _birth_date_levels(a: pd.Series, b: pd.Series) -> np.ndarray:
    missing = (a.isna() | b.isna()).to_numpy()
    x, y = a.fillna("0000-00-00").str.split("-", expand=True), b.fillna("0000-00-00").str.split("-", expand=True)
    year, month, day = (x[k].to_numpy() == y[k].to_numpy() for k in (0, 1, 2))
    swapped = (x[1].to_numpy() == y[2].to_numpy()) & (x[2].to_numpy() == y[1].to_numpy()) & year
    same = year & month & day
    two_of_three = (year.astype(int) + month.astype(int) + day.astype(int)) == 2
    levels = np.select([missing, same, two_of_three | swapped, year], [MISSING, 3, 2, 1], default=0)
    return levels.astype("int8")


def _shared_value_levels(pairs: pd.DataFrame, table: pd.DataFrame, value_counts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """1 when the pair shares a value, 0 when both have values but none shared, -1 when one has none.

    Also returns, for shared values, how many records hold the rarest shared value.
    """
    has_value = np.zeros(int(max(pairs["j"].max() if len(pairs) else 0, table["rec"].max() if len(table) else 0)) + 1, bool)
    has_value[table["rec"].to_numpy()] = True
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    both = has_value[i] & has_value[j]
    indexed = pairs[["i", "j"]].reset_index(drop=True).reset_index(names="pair")
    left = indexed.merge(table, left_on="i", right_on="rec")[["pair", "j", "value"]]
    shared = left.merge(table, left_on=["j", "value"], right_on=["rec", "value"])[["pair", "value"]]
    shared["freq"] = shared["value"].map(value_counts).astype("int64")
    rarest = shared.groupby("pair")["freq"].min()
    freq = np.zeros(len(pairs), dtype="int64")
    freq[rarest.index.to_numpy()] = rarest.to_numpy()
    levels = np.where(freq > 0, 1, np.where(both, 0, MISSING)).astype("int8")
    return levels, freq


def _address_levels(data: MatchInput, pairs: pd.DataFrame, left: pd.DataFrame, right: pd.DataFrame) -> np.ndarray:
    missing = (left["postal_code"].isna() | right["postal_code"].isna()).to_numpy()
    same_postal = (left["postal_code"].fillna("a") == right["postal_code"].fillna("b")).to_numpy()
    street_sim = similarity(left["line1"], right["line1"])
    same_street = (left["line1"].fillna("a") == right["line1"].fillna("b")).to_numpy()
    # Any of a record's addresses may match: a shared (line1, postal code) pair anywhere counts as the same place.
    places = data.addresses.assign(value=data.addresses["line1"] + "|" + data.addresses["postal_code"].fillna(""))
    shared_place, _ = _shared_value_levels(pairs, places[["rec", "value"]].drop_duplicates(), places["value"].value_counts())
    # A postal code one keystroke off (2440 / 2404) on the same street is a typo, not a move.
    postal_typo = _within_edits(left["postal_code"], right["postal_code"], 1)
    levels = np.select(
        [(shared_place == 1) | (same_postal & same_street), missing,
         (same_postal | postal_typo) & (street_sim >= 0.85), same_postal],
        [3, MISSING, 2, 1],
        default=0,
    )
    return levels.astype("int8")


def _within_two_edits(left: pd.Series, right: pd.Series) -> np.ndarray:
    """Both present and at most two insertions, deletions, substitutions or transpositions apart."""
    return _within_edits(left, right, 2)


def _within_edits(left: pd.Series, right: pd.Series, edits: int) -> np.ndarray:
    if not len(left):
        return np.array([], dtype=bool)
    distance = process.cpdist(left.fillna("").tolist(), right.fillna("").tolist(), scorer=DamerauLevenshtein.distance,
                              workers=-1)
    return (distance <= edits) & left.notna().to_numpy() & right.notna().to_numpy()


def _identifier_levels(data: MatchInput, pairs: pd.DataFrame) -> np.ndarray:
    """2: a shared identifier; 1: the same type with a value one or two keystrokes away; 0: different; -1: none."""
    ids = data.identifiers
    shared, _ = _shared_value_levels(pairs, ids, ids["value"].value_counts())
    typed = ids.assign(kind=ids["value"].str.split("=", n=1).str[0])[["rec", "kind"]].drop_duplicates()
    same_kind, _ = _shared_value_levels(pairs, typed.rename(columns={"kind": "value"}), typed["kind"].value_counts())
    left = data.records["identifier"].iloc[pairs["i"].to_numpy()].reset_index(drop=True)
    right = data.records["identifier"].iloc[pairs["j"].to_numpy()].reset_index(drop=True)
    same_type = (left.str.split("=", n=1).str[0] == right.str.split("=", n=1).str[0]).fillna(False).to_numpy()
    near = same_type & _within_two_edits(left, right)
    return np.where(shared == 1, 2, np.where(near, 1, np.where(same_kind == 1, 0, MISSING))).astype("int8")
