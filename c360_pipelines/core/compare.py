"""Identity stage 2: compare each candidate pair field by field, as discrete agreement levels.

Each comparison yields a level per pair: -1 when either side has no value (no evidence either way), 0 for
disagreement, and higher levels for closer agreement. String similarity is computed in C++ for all pairs at
once (rapidfuzz `cpdist`); shared emails, phones and identifiers are found with joins, and for those the
number of records holding the shared value is kept (`*_freq`) so that a value many people share counts for
little. First names that are nicknames of one another (Bob / Robert) agree at their own level.

The fields are factorised once per record set (`MatchInput.arrays`); a pair gathers codes and strings by
position, so a million pairs cost about twelve seconds, most of it in the string distances themselves.
"""

from __future__ import annotations

import re
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


def similarity(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Jaro-Winkler similarity of aligned strings ("" where missing, as in `MatchInput.arrays`)."""
    if not len(left):
        return np.array([], dtype="float64")
    return process.cpdist(list(left), list(right), scorer=JaroWinkler.normalized_similarity, workers=-1)


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
    r = data.arrays
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    out = pairs[["i", "j"]].reset_index(drop=True).copy()
    _compare_names(data, i, j, out)
    for name, count in (("first_name", r.first_name_count), ("last_name", r.last_name_count)):
        out[f"{name}_freq"] = np.where(out[name].to_numpy() == 3, count[i], 0).astype("int64")
    out["birth_date"] = _birth_date_levels(r.birth[i], r.birth[j])
    for name, table, values in (("email", data.emails, r.email), ("phone", data.phones, r.phone)):
        level, freq = _shared_value_levels(pairs, table, value_counts=table["value"].value_counts())
        near = _within_edits(values[i], values[j], 2)
        if name == "email":
            near[near] = ~_namesake_emails(values[i][near], values[j][near])
        out[name] = np.where(level == 1, 2, np.where((level == 0) & near, 1, level)).astype("int8")
        out[f"{name}_freq"] = freq
    out["address"] = _address_levels(data, pairs, i, j)
    out["identifier"] = _identifier_levels(data, pairs, i, j)
    return out


def _compare_names(data: MatchInput, i: np.ndarray, j: np.ndarray, out: pd.DataFrame) -> None:
    """First and last name levels (and similarities) of the pairs (i, j), written into `out`."""
    r = data.arrays
    first_a, first_b = r.first_name[i], r.first_name[j]
    last_a, last_b = r.last_name[i], r.last_name[j]
    out["first_name_sim"] = similarity(first_a, first_b)
    out["first_name"] = _first_name_levels(r.name_code_first[i], r.name_code_first[j], first_a, first_b,
                                           out["first_name_sim"].to_numpy(), r.first_name_count[i],
                                           r.first_name_count[j])
    out["last_name_sim"] = similarity(last_a, last_b)
    out["last_name"] = _graded(r.name_code_last[i], r.name_code_last[j], out["last_name_sim"].to_numpy(), (0.92, 0.8))
    _credit_swapped_names(out, first_a, last_a, first_b, last_b)


def _credit_swapped_names(out: pd.DataFrame, first_a: np.ndarray, last_a: np.ndarray, first_b: np.ndarray,
                          last_b: np.ndarray) -> None:
    """First and last name entered the wrong way round on one side: the very same names count as the same,
    names a typo apart as similar, not different."""
    first_to_last = similarity(first_a, last_b)
    last_to_first = similarity(last_a, first_b)
    swapped = (first_to_last >= 0.9) & (last_to_first >= 0.9) & (out["first_name"].to_numpy() <= 1) & (
        out["last_name"].to_numpy() <= 1)
    exactly = swapped & (first_to_last == 1.0) & (last_to_first == 1.0)
    for name in ("first_name", "last_name"):
        out.loc[swapped, name] = np.maximum(out.loc[swapped, name], 1)
        out.loc[exactly, name] = 3


def _graded(code_a: np.ndarray, code_b: np.ndarray, sim: np.ndarray, thresholds: tuple[float, float]) -> np.ndarray:
    missing = (code_a < 0) | (code_b < 0)
    same = code_a == code_b
    levels = np.select([missing, same, sim >= thresholds[0], sim >= thresholds[1]], [MISSING, 3, 2, 1], default=0)
    return levels.astype("int8")


def _plausible_typo(count_a: np.ndarray, count_b: np.ndarray) -> np.ndarray:
    """A misspelling is a rare variant of a common name; two spellings both in common use are two names (Marc, Mary)."""
    rarer, commoner = np.minimum(count_a, count_b), np.maximum(count_a, count_b)
    return (rarer <= 2) | (rarer * 5 <= commoner)


def _first_name_levels(code_a: np.ndarray, code_b: np.ndarray, a: np.ndarray, b: np.ndarray, sim: np.ndarray,
                       count_a: np.ndarray, count_b: np.ndarray) -> np.ndarray:
    """Levels from name codes (-1 missing), the names themselves, their similarity and how many records have each."""
    missing = (code_a < 0) | (code_b < 0)
    same = code_a == code_b
    candidates = ~missing & ~same
    nickname = np.zeros(len(code_a), dtype=bool)
    if candidates.any():
        # each distinct pair of names is looked up once: a million pairs hold a few thousand name pairs
        width = int(max(code_a.max(), code_b.max())) + 1
        keys = code_a[candidates].astype("int64") * width + code_b[candidates]
        _, first_at, inverse = np.unique(keys, return_index=True, return_inverse=True)
        left, right = a[candidates][first_at], b[candidates][first_at]
        compatible = np.array([nickname_compatible(x, y) for x, y in zip(left, right, strict=True)], dtype=bool)
        nickname[candidates] = compatible[inverse]
    typo = (sim >= 0.88) & _plausible_typo(count_a, count_b)
    levels = np.select([missing, same, nickname, typo], [MISSING, 3, 2, 1], default=0)
    return levels.astype("int8")


def _birth_date_levels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """From (year, month, day) rows, -1 where missing."""
    missing = (a[:, 0] < 0) | (b[:, 0] < 0)
    year, month, day = (a[:, k] == b[:, k] for k in (0, 1, 2))
    swapped = (a[:, 1] == b[:, 2]) & (a[:, 2] == b[:, 1]) & year
    same = year & month & day
    two_of_three = (year.astype(int) + month.astype(int) + day.astype(int)) == 2
    # Only a year a keystroke away is a typo: 1957 and 2000 on the same day of the year are two generations.
    other_year = two_of_three & ~year
    two_of_three[other_year] = _within_edits(a[other_year, 0].astype(str), b[other_year, 0].astype(str), 1)
    levels = np.select([missing, same, two_of_three | swapped, year], [MISSING, 3, 2, 1], default=0)
    return levels.astype("int8")


def _shared_value_levels(pairs: pd.DataFrame, table: pd.DataFrame, value_counts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """1 when the pair shares a value, 0 when both have values but none shared, -1 when one has none.

    Also returns, for shared values, how many records hold the rarest shared value.
    """
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    largest = max(int(i.max()) if len(i) else 0, int(j.max()) if len(j) else 0, int(table["rec"].max()) if len(table) else 0)
    has_value = np.zeros(largest + 1, bool)
    has_value[table["rec"].to_numpy()] = True
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


def _address_levels(data: MatchInput, pairs: pd.DataFrame, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    r = data.arrays
    postal_a, postal_b = r.postal_code_code[i], r.postal_code_code[j]
    missing = (postal_a < 0) | (postal_b < 0)
    same_postal = (postal_a == postal_b) & ~missing
    street_sim = similarity(r.line1[i], r.line1[j])
    same_street = (r.line1_code[i] == r.line1_code[j]) & (r.line1_code[i] >= 0)
    # Any of a record's addresses may match: a shared (line1, postal code) pair anywhere counts as the same place.
    places = contact_values(data, "address")
    shared_place, _ = _shared_value_levels(pairs, places, places["value"].value_counts())
    # A postal code one keystroke off (2440 / 2404) on the same street is a typo, not a move.
    postal_typo = _within_edits(r.postal_code[i], r.postal_code[j], 1)
    levels = np.select(
        [(shared_place == 1) | (same_postal & same_street), missing,
         (same_postal | postal_typo) & (street_sim >= 0.85), same_postal],
        [3, MISSING, 2, 1],
        default=0,
    )
    return levels.astype("int8")


_DIGITS = re.compile(r"[0-9]+")
_NOT_LETTERS = re.compile(r"[^a-z]")


def _namesake_emails(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Addresses with the same letters that differ only in their numbers or separators: how the addresses of
    two people of the same name differ (maria.garcia51 / maria.garcia92 / maria.garcia / mariagarcia). Only a
    slip inside a number present on both sides (51 / 15, 51 / 52) stays a typo."""
    def parts(address: str) -> tuple[str, str, str, str]:
        local, _, domain = address.partition("@")
        return _NOT_LETTERS.sub("", local), domain, _DIGITS.sub("#", local), "".join(_DIGITS.findall(local))

    found = []
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        (letters_a, domain_a, shape_a, digits_a), (letters_b, domain_b, shape_b, digits_b) = parts(a), parts(b)
        typo_in_number = shape_a == shape_b and DamerauLevenshtein.distance(digits_a, digits_b) <= 1
        found.append(letters_a == letters_b and domain_a == domain_b and not typo_in_number)
    return np.array(found, dtype=bool)


def _within_edits(left: np.ndarray, right: np.ndarray, edits: int) -> np.ndarray:
    """Both present ("" is missing) and at most `edits` keystrokes apart."""
    if not len(left):
        return np.array([], dtype=bool)
    distance = process.cpdist(list(left), list(right), scorer=DamerauLevenshtein.distance, workers=-1)
    return (distance <= edits) & (left != "") & (right != "")


def _identifier_levels(data: MatchInput, pairs: pd.DataFrame, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """2: a shared identifier; 1: the same type with a value one or two keystrokes away; 0: different; -1: none."""
    ids = data.identifiers
    shared, _ = _shared_value_levels(pairs, ids, ids["value"].value_counts())
    typed = ids.assign(kind=ids["value"].str.split("=", n=1).str[0])[["rec", "kind"]].drop_duplicates()
    same_kind, _ = _shared_value_levels(pairs, typed.rename(columns={"kind": "value"}), typed["kind"].value_counts())
    r = data.arrays
    same_type = (r.identifier_kind[i] == r.identifier_kind[j]) & (r.identifier_kind[i] >= 0)
    near = same_type & _within_edits(r.identifier[i], r.identifier[j], 2)
    return np.where(shared == 1, 2, np.where(near, 1, np.where(same_kind == 1, 0, MISSING))).astype("int8")


# ------------------------------------------------------------------------------------------ households

HOUSEHOLD_KINDS = ("email", "phone", "address")
MAX_HOLDERS_CHECKED = 50  # a value held by more records is no household's: blocking or term frequency see to it
NEAR_LEVEL = {"email": 1, "phone": 1, "address": 2}  # the lowest level of each comparison that is a near spelling


def place_keys(line1: pd.Series | np.ndarray, postal_code: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """What makes two addresses the same place: the street line and the postal code ("" where there is none)."""
    return line1 + "|" + postal_code


def contact_values(data: MatchInput, kind: str) -> pd.DataFrame:
    """(rec, value) of every email, phone or place (street line and postal code) of the records."""
    if kind == "address":
        places = data.addresses
        return pd.DataFrame({"rec": places["rec"].to_numpy(),
                             "value": place_keys(places["line1"], places["postal_code"].fillna("")).to_numpy()}
                            ).drop_duplicates()
    return (data.emails if kind == "email" else data.phones)[["rec", "value"]]


def household_values(data: MatchInput, conflict_fields: tuple[str, ...],
                     records: np.ndarray | None = None) -> dict[str, frozenset[str]]:
    """Per kind, the contact values that records known to be different people hold: two holders whose first
    names (or birth dates) clearly conflict, on the fields in `conflict_fields`. A family email, a household
    landline, a shared home address. With `records` (positions), only the values those records hold are looked
    at (with all their holders): what scoring a few pairs of a new batch needs."""
    return {kind: _household_values_of(data, contact_values(data, kind), conflict_fields, records)
            for kind in HOUSEHOLD_KINDS}


def household_shares(data: MatchInput, compared: pd.DataFrame, conflict_fields: tuple[str, ...],
                     records: np.ndarray | None = None) -> pd.DataFrame:
    """Per compared pair and kind: whether the pair agrees on one of the household values of that kind (found as
    `household_values` finds them, with the same `records`): both hold it, or one holds it and the other's value
    of that kind is a near spelling of it (a family email with a typo, the home street written another way)."""
    shares = pd.DataFrame(index=compared.index)
    r = data.arrays
    # the value of each record that the near levels compare (its first email, phone and address)
    compared_value = {"email": r.email, "phone": r.phone, "address": place_keys(r.line1, r.postal_code)}
    i, j = compared["i"].to_numpy(), compared["j"].to_numpy()
    for kind in HOUSEHOLD_KINDS:
        values = contact_values(data, kind)
        household = _household_values_of(data, values, conflict_fields, records)
        households = values[values["value"].isin(household)]
        shares[kind] = np.zeros(len(compared), dtype=bool)
        if len(households) and len(compared):
            level, _ = _shared_value_levels(compared, households, households["value"].value_counts())
            holds = pd.Series(compared_value[kind]).isin(household).to_numpy()
            near = (holds[i] | holds[j]) & (compared[kind].to_numpy() >= NEAR_LEVEL[kind])
            shares[kind] = (level == 1) | near
    return shares


def _household_values_of(data: MatchInput, values: pd.DataFrame, conflict_fields: tuple[str, ...],
                         records: np.ndarray | None) -> frozenset[str]:
    """Of the (rec, value) rows of one kind, the values two holders of clearly different people share."""
    if not conflict_fields:
        return frozenset()
    if records is not None:
        values = values[values["value"].isin(values.loc[values["rec"].isin(records), "value"])]
    holders = values.groupby("value")["rec"].transform("size")
    values = values[(holders >= 2) & (holders <= MAX_HOLDERS_CHECKED)]
    pairs = values.merge(values, on="value", suffixes=("_a", "_b"))
    pairs = pairs[pairs["rec_a"] < pairs["rec_b"]].reset_index(drop=True)
    if pairs.empty:
        return frozenset()
    i, j = pairs["rec_a"].to_numpy(), pairs["rec_b"].to_numpy()
    conflict = np.zeros(len(pairs), dtype=bool)
    if "first_name" in conflict_fields:
        names = pd.DataFrame(index=pairs.index)
        _compare_names(data, i, j, names)
        conflict |= names["first_name"].to_numpy() == 0
    if "birth_date" in conflict_fields:
        conflict |= _birth_date_levels(data.arrays.birth[i], data.arrays.birth[j]) == 0
    return frozenset(pairs.loc[conflict, "value"])
