"""Identity stage 7: survivorship. One golden profile per person, and the provenance of every value in it.

For each single-valued attribute, every record of the person offers a candidate (its value, a comparison key
and when the record was current). A strategy ranks the candidates; the tie-breaks that follow it are always
the same (most recent, then source order, then record key), so the same records always give the same
profile. The provenance says which record won, by which rule (naming the tie-break when one decided) and what
it beat. Contact points are not collapsed: every distinct email, phone and address is kept, one of each kind
marked primary by the same rules. Vectorised over all people at once with pandas; people, records and values
are integer-coded before any sort or grouping, since sorting and grouping strings is what made the first
version take minutes at a million records.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from nameparser import HumanName

from c360_pipelines.core import compare
from c360_pipelines.core.standardise import name_norm

STRATEGIES = ("source_priority", "most_recent", "most_frequent", "most_complete")
NAME_ATTRIBUTES = ("first_name", "middle_name", "last_name", "name_suffix")
SCALAR_ATTRIBUTES = (*NAME_ATTRIBUTES, "birth_date", "gender")
CONTACT_KINDS = ("email", "phone", "address")
ADDRESS_PARTS = ("line1", "line2", "city", "region", "postal_code", "country")
OK, INVALID, PLACEHOLDER = "ok", "invalid", "placeholder"
MAX_COMPETING = 20
EMPTY_KEY = "\x00empty"
_NEVER = np.iinfo(np.int64).min

# The criteria that rank candidates, by name, with the column and direction each sorts by.
_CRITERIA: dict[str, tuple[str, bool]] = {
    "most_frequent": ("frequency", False),
    "most_complete": ("length", False),
    "most_recent": ("updated_ns", False),
    "most_recent_batch": ("extracted_ns", False),
    "common_spelling": ("population", False),
    "full_name_over_nickname": ("folded", True),
    "source_priority": ("source_rank", True),
    "record_key": ("record_code", True),
}
_TIE_BREAKS = ("most_recent", "most_recent_batch", "source_priority", "record_key")


@dataclass(frozen=True)
class Rule:
    """A strategy and, for `source_priority`, the sources in the order to trust them (others follow)."""

    strategy: str
    sources: tuple[str, ...] = ()


@dataclass
class ProfileInput:
    """A person's records, their contact points and engagement, each row already carrying its `c360_id`.

    Every frame has c360_id, source, source_record_id, updated_at (when the source last changed the record,
    may be empty) and extracted_at (when its batch was landed).
    """

    records: pd.DataFrame  # + first_name, middle_name, last_name, name_suffix, *_norm, birth_date, gender
    emails: pd.DataFrame  # + email, email_key, domain, is_valid
    phones: pd.DataFrame  # + phone_e164, phone_raw, phone_type, is_valid
    addresses: pd.DataFrame  # + address_raw, line1 .. country, is_parsed


@dataclass
class Profiles:
    golden: pd.DataFrame
    contact_points: pd.DataFrame
    provenance: pd.DataFrame


def build_profiles(data: ProfileInput, rules: dict[str, Rule], source_order: list[str],
                   placeholders: frozenset[str] = frozenset(), ignore_empty: bool = True,
                   population: Mapping[str, pd.Series] | None = None) -> Profiles:
    """Golden values, contact points and provenance for every person in `data`.

    `population` (name attribute -> records per spelling key, from `spelling_population`) is what the
    common-spelling tie-break counts; without it, the spellings in `data` are counted. Give it when `data` holds
    only some of the people, so that a profile comes out the same whoever it is built with.
    """
    data = coded(data)
    people = pd.Index(_people_of(data.records), name="c360_id")
    golden = pd.DataFrame(index=people)
    chosen: list[pd.DataFrame] = []
    contact_points: list[pd.DataFrame] = []
    for attribute in SCALAR_ATTRIBUTES:
        candidates = scalar_candidates(data.records, attribute, population)
        winners = choose(candidates, rules[attribute], source_order, ignore_empty)
        golden[attribute] = _by_person(winners, "value", len(people))
        chosen.append(winners.assign(attribute=attribute))
    for kind in CONTACT_KINDS:
        candidates = contact_candidates(data, kind, placeholders)
        winners = choose(candidates[candidates["status"] == OK], rules[kind], source_order, ignore_empty)
        chosen.append(winners.assign(attribute=kind))
        contact_points.append(collapse_contact_points(candidates, winners, kind))
        if kind == "address":
            for part in ADDRESS_PARTS:
                golden[{"line1": "address_line1", "line2": "address_line2"}.get(part, part)] = \
                    _by_person(winners, part, len(people))
        else:
            golden[kind] = _by_person(winners, "value", len(people))
    golden["full_name"] = _full_name(golden)
    for name in ("first_name", "last_name"):
        golden[f"{name}_norm"] = name_norm(golden[name].astype("string")).astype(object).where(golden[name].notna(), None)
    golden["birth_date"] = pd.to_datetime(golden["birth_date"], errors="coerce").dt.date
    summary = _record_summary(data.records, len(people))
    for column in summary.columns:
        golden[column] = summary[column].to_numpy()
    contact_points = [points for points in contact_points if not points.empty]
    all_points = pd.concat(contact_points, ignore_index=True) if contact_points else pd.DataFrame(columns=POINT_COLUMNS)
    return Profiles(golden.reset_index(), all_points, _provenance(pd.concat(chosen, ignore_index=True)))


def _by_person(winners: pd.DataFrame, column: str, people: int) -> np.ndarray:
    """A column of the winners laid out by person code, empty where a person has no winner."""
    laid_out = np.full(people, None, dtype=object)
    laid_out[winners["person"].to_numpy()] = winners[column].to_numpy(dtype=object)
    return laid_out


# ------------------------------------------------------------------------------------ coding


def _people_of(records: pd.DataFrame) -> np.ndarray:
    return np.sort(records["c360_id"].unique().astype(str))


def coded(data: ProfileInput) -> ProfileInput:
    """The input with integer codes every frame shares: person (by sorted c360_id), record (by sorted
    source:id), and recency as int64 nanoseconds (empty = oldest)."""
    people = _people_of(data.records)
    record_names = data.records["source"].astype(str) + ":" + data.records["source_record_id"].astype(str)
    records = pd.Index(np.sort(record_names.unique()))
    return ProfileInput(*(_with_codes(frame, people, records) for frame in
                          (data.records, data.emails, data.phones, data.addresses)))


def _with_codes(frame: pd.DataFrame, people: np.ndarray, records: pd.Index) -> pd.DataFrame:
    frame = frame.copy()
    frame["person"] = pd.Categorical(frame["c360_id"], categories=people).codes.astype(np.int64)
    frame["record"] = (frame["source"].astype(str) + ":" + frame["source_record_id"].astype(str)).to_numpy()
    frame["record_code"] = records.get_indexer(frame["record"]).astype(np.int64)
    frame["updated_ns"] = _nanoseconds(frame["updated_at"])
    frame["extracted_ns"] = _nanoseconds(frame["extracted_at"])
    return frame


def _nanoseconds(stamps: pd.Series) -> np.ndarray:
    """Times as int64 nanoseconds; a missing time is the smallest integer (NaT's own representation)."""
    values = pd.to_datetime(stamps).to_numpy(dtype="datetime64[ns]")
    return values.view(np.int64)


def _ensure_codes(rows: pd.DataFrame) -> pd.DataFrame:
    """Frames handed in directly (tests, single attributes) get their codes here."""
    if "person" in rows.columns:
        return rows
    people = _people_of(rows)
    names = rows["source"].astype(str) + ":" + rows["source_record_id"].astype(str)
    return _with_codes(rows, people, pd.Index(np.sort(names.unique())))


# ------------------------------------------------------------------------------------ candidates


def scalar_candidates(records: pd.DataFrame, attribute: str,
                      population: Mapping[str, pd.Series] | None = None) -> pd.DataFrame:
    """One candidate per record for a name part, birth date or gender; the key is what counts as the same value."""
    records = _ensure_codes(records)
    value = records[attribute]
    if attribute == "birth_date":
        value = pd.to_datetime(value, errors="coerce").dt.strftime("%Y-%m-%d")
        key = value
    else:
        norm = records[f"{attribute}_norm"] if f"{attribute}_norm" in records.columns else None
        key = name_keys(value, norm)
    frame = _candidate_frame(records, value.astype("object"), key.astype("object"))
    frame["quality"] = 0
    frame["folded"] = 0
    if attribute == "first_name":
        frame = _fold_nicknames(frame)
    if attribute in NAME_ATTRIBUTES:
        frame["quality"] = _well_cased(frame["value"])
        if population is not None:
            frame["population"] = frame["key"].map(population[attribute]).fillna(0).astype(int)
        else:
            frame["population"] = frame.groupby("key")["key"].transform("size").fillna(0).astype(int)
    return frame


def name_keys(values: pd.Series, norms: pd.Series | None = None) -> pd.Series:
    """What counts as the same spelling of a name part: its folded form when standardising made one, else the
    value case-folded."""
    folded = values.astype("object").str.casefold()
    return folded if norms is None else norms.where(norms.notna(), folded)


def spelling_population(spellings: pd.DataFrame) -> dict[str, pd.Series]:
    """Records per spelling key of each name part, from (attribute, value, norm, records) rows: the counts the
    common-spelling tie-break compares."""
    keys = name_keys(spellings["value"], spellings["norm"])
    counted = spellings.assign(key=keys).dropna(subset=["key"]).groupby(["attribute", "key"])["records"].sum()
    return {attribute: (counted.xs(attribute, level="attribute") if attribute in counted.index.get_level_values(0)
                        else pd.Series(dtype="int64")).astype("int64") for attribute in NAME_ATTRIBUTES}


def _fold_nicknames(frame: pd.DataFrame) -> pd.DataFrame:
    """A nickname votes for the full name it shortens when the same person's records also carry that name.

    `Kim`, `Kim`, `Kimberly` is one person called Kimberly written three ways, not a majority for `Kim`. The
    folded rows keep their own value and are marked, so the winning record is one that sent the full name.
    """
    distinct = frame[["person", "key"]].dropna().drop_duplicates()
    several = distinct[distinct["person"].duplicated(keep=False)]
    pairs = several.merge(several, on="person", suffixes=("", "_full"))
    pairs = pairs[pairs["key"] != pairs["key_full"]]
    names = pairs[["key", "key_full"]].drop_duplicates()
    shortening = {(short, full) for short, full in zip(names["key"], names["key_full"], strict=True)
                  if _shortens(short, full)}
    if not shortening:
        return frame
    folds = pairs[[pair in shortening for pair in zip(pairs["key"], pairs["key_full"], strict=True)]]
    folds = folds.drop_duplicates(["person", "key"])
    frame = frame.merge(folds, on=["person", "key"], how="left")
    frame["folded"] = frame["key_full"].notna().astype(int)
    frame["key"] = frame["key_full"].where(frame["key_full"].notna(), frame["key"])
    return frame.drop(columns="key_full")


def contact_candidates(data: ProfileInput, kind: str, placeholders: frozenset[str]) -> pd.DataFrame:
    """Every contact point of one kind, one row per record and value, with its status (ok, invalid, placeholder)."""
    if kind == "email":
        rows = _ensure_codes(data.emails)
        value = rows["email"].where(rows["email"].notna(), rows.get("email_raw"))
        key = rows["email_key"].where(rows["email_key"].notna(), value)
        frame = _candidate_frame(rows, value, key)
        frame["detail"] = rows["domain"].to_numpy()
        valid = rows["is_valid"].astype(bool).to_numpy()
    elif kind == "phone":
        rows = _ensure_codes(data.phones)
        value = rows["phone_e164"].where(rows["phone_e164"].notna(), rows["phone_raw"])
        frame = _candidate_frame(rows, value, value)
        frame["detail"] = rows["phone_type"].to_numpy()
        valid = (rows["is_valid"].astype(bool) & rows["phone_e164"].notna()).to_numpy()
    else:
        rows = _ensure_codes(data.addresses)
        value = _one_line_address(rows)
        # The unit may arrive in line 1 or in its own column: the key joins them so both agree.
        street = (rows["line1"].fillna("") + " " + rows["line2"].fillna("")).str.split().str.join(" ")
        key = street + "|" + rows["postal_code"].fillna(rows["city"]).fillna("")
        key = key.where(rows["line1"].notna(), rows["address_raw"].str.upper())
        frame = _candidate_frame(rows, value, key)
        frame["detail"] = None
        for part in ADDRESS_PARTS:
            frame[part] = rows[part].to_numpy()
        valid = rows["is_parsed"].astype(bool).to_numpy()
    frame["quality"] = 0
    status = np.where(valid, OK, INVALID)
    status = np.where(frame["value"].isin(placeholders) | frame["key"].isin(placeholders), PLACEHOLDER, status)
    frame["status"] = status
    return frame


def _candidate_frame(rows: pd.DataFrame, value: pd.Series, key: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({
        "person": rows["person"].to_numpy(),
        "c360_id": rows["c360_id"].to_numpy(),
        "source": rows["source"].to_numpy(),
        "source_record_id": rows["source_record_id"].to_numpy(),
        "record": rows["record"].to_numpy(),
        "record_code": rows["record_code"].to_numpy(),
        "value": value.to_numpy(dtype=object),
        "key": key.to_numpy(dtype=object),
        "updated_ns": rows["updated_ns"].to_numpy(),
        "extracted_ns": rows["extracted_ns"].to_numpy(),
    })


def _shortens(short: str, full: str) -> bool:
    """`short` is a nickname of `full` (the nickname lists go both ways for some pairs: the longer is the full name)."""
    if full not in compare.canonical_names(short):
        return False
    return short not in compare.canonical_names(full) or len(full) > len(short)


def _well_cased(values: pd.Series) -> pd.Series:
    """1 for a value written the way names are (not all upper or all lower case), else 0."""
    text = values.fillna("").astype(str)
    return (~(text.str.isupper() | text.str.islower())).astype(int)


def _one_line_address(rows: pd.DataFrame) -> pd.Series:
    street = rows["line1"].fillna("") + (" " + rows["line2"]).fillna("")
    place = rows["city"].fillna("") + (", " + rows["region"]).fillna("") + (" " + rows["postal_code"]).fillna("")
    joined = (street + ", " + place).str.strip(", ")
    return joined.where(rows["line1"].notna(), rows["address_raw"])


# --------------------------------------------------------------------------------------- choose


def choose(candidates: pd.DataFrame, rule: Rule, source_order: list[str], ignore_empty: bool = True) -> pd.DataFrame:
    """The winning candidate per person under `rule`, with the deciding criterion, count and what it beat.

    Columns: person, c360_id, value, key, source, source_record_id, rule, candidates, competing (JSON) and,
    for addresses, the address parts.
    """
    ranked = _rankable(candidates, rule, source_order, ignore_empty)
    criteria = _criteria_for(rule.strategy, by_spelling="population" in ranked.columns)
    order = ["person", *(_CRITERIA[c][0] for c in criteria), "key_code"]
    ranked = ranked.sort_values(order, ascending=[True, *(_CRITERIA[c][1] for c in criteria), True],
                                kind="mergesort", ignore_index=True)
    first = ~ranked["person"].duplicated().to_numpy()
    winners = ranked[first].copy()
    winning_key = pd.Series(winners["key_code"].to_numpy(), index=winners["person"].to_numpy())
    losers = ranked[ranked["key_code"].to_numpy() != winning_key.reindex(ranked["person"]).to_numpy()]
    winners = _with_representative_value(winners, ranked, winning_key)
    winners["rule"] = _deciding_rule(winners, losers, criteria)
    winners["candidates"] = winners["person"].map(ranked.groupby("person").size()).astype(int)
    winners["competing"] = winners["person"].map(_competing_json(losers)).fillna("[]")
    return winners.drop(columns=["frequency", "length", "updated_ns", "extracted_ns", "source_rank", "record",
                                 "record_code", "key_code", "quality", "population", "folded"],
                        errors="ignore").reset_index(drop=True)


def _rankable(candidates: pd.DataFrame, rule: Rule, source_order: list[str], ignore_empty: bool) -> pd.DataFrame:
    frame = candidates.copy()
    text = frame["value"].astype("string").str.strip()
    empty = (text.isna() | (text == "")).to_numpy()
    if ignore_empty:
        frame = frame[~empty]
    else:  # a record without the value competes with an empty one: under most_recent, a later blank clears it
        frame.loc[empty, ["value", "key"]] = [None, EMPTY_KEY]
    frame = frame[frame["key"].notna().to_numpy()].copy()
    frame["key_code"] = pd.factorize(frame["key"], sort=True)[0]
    frame["frequency"] = frame.groupby(["person", "key_code"], sort=False)["key_code"].transform("size")
    frame["length"] = frame["value"].astype(str).str.len()
    order = [*rule.sources, *(s for s in source_order if s not in rule.sources)]
    rank = {source: position for position, source in enumerate(order)}
    frame["source_rank"] = frame["source"].map(rank).fillna(len(rank)).astype(int)
    return frame


def _criteria_for(strategy: str, by_spelling: bool) -> list[str]:
    """The strategy's own criteria, then the fixed tie-breaks. For names, a tie goes first to the spelling that
    more people in the whole data set share: `Katherine` over the one-off `Katehrine`, `Jennifer` over `Jenny`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown survivorship strategy '{strategy}'; expected one of {', '.join(STRATEGIES)}")
    if strategy == "most_complete":
        head = ["most_complete", "most_frequent"]
    elif strategy == "most_recent":
        head = ["most_recent", "most_recent_batch"]
    else:
        head = [strategy]
    if by_spelling:
        head += ["common_spelling", "full_name_over_nickname"]
    return [*head, *(c for c in _TIE_BREAKS if c not in head)]


def _with_representative_value(winners: pd.DataFrame, ranked: pd.DataFrame, winning_key: pd.Series) -> pd.DataFrame:
    """Show the winning value in its best-written form among the person's records (`Anne`, not `ANNE`)."""
    if "population" not in ranked.columns or ranked.empty:  # only names have renderings to choose from
        return winners
    same = ranked[(ranked["folded"].to_numpy() == 0)
                  & (ranked["key_code"].to_numpy() == winning_key.reindex(ranked["person"]).to_numpy())]
    renderings = (same.groupby(["person", "value"], sort=False)
                  .agg(quality=("quality", "max"), seen=("value", "size")).reset_index()
                  .sort_values(["person", "quality", "seen", "value"], ascending=[True, False, False, True]))
    best = renderings.drop_duplicates("person").set_index("person")
    shouting = best["quality"] == 0  # a name only ever written in one case is shown capitalised as names are
    best.loc[shouting, "value"] = best.loc[shouting, "value"].map(capitalise_name)
    winners["value"] = winners["person"].map(best["value"]).fillna(winners["value"])
    return winners


@lru_cache(maxsize=100_000)
def capitalise_name(name: str) -> str:
    """JOHN -> John, o'brien -> O'Brien, MCDONALD -> McDonald (nameparser's rules)."""
    parsed = HumanName(name)
    parsed.capitalize(force=True)
    return str(parsed) or name


def _deciding_rule(winners: pd.DataFrame, losers: pd.DataFrame, criteria: list[str]) -> pd.Series:
    """The strategy, or after a tie on it, the first tie-break where the winner beat the best other value."""
    runner_up = losers.drop_duplicates("person").set_index("person")
    rule = pd.Series(criteria[0], index=winners.index, dtype=object)
    unopposed = ~winners["person"].isin(runner_up.index)
    rule[unopposed] = f"{criteria[0]} (no competing value)"
    contested = winners[~unopposed]
    decided = np.zeros(len(contested), dtype=bool)
    for position, criterion in enumerate(criteria):
        column = _CRITERIA[criterion][0]
        differs = contested[column].to_numpy() != runner_up[column].reindex(contested["person"]).to_numpy()
        newly = differs & ~decided
        if position > 0:
            rule.loc[contested.index[newly]] = f"{criteria[0]}, tie broken by {criterion}"
        decided |= differs
    rule.loc[contested.index[~decided]] = f"{criteria[0]}, tie broken by value order"
    return rule


def _competing_json(losers: pd.DataFrame) -> pd.Series:
    """Per person, a JSON list of the values that lost with their records (at most MAX_COMPETING)."""
    if losers.empty:
        return pd.Series(dtype=object)
    kept = losers[losers.groupby("person", sort=False).cumcount().to_numpy() < MAX_COMPETING]
    values = kept["value"].astype(object).where(kept["value"].notna(), None).map(json.dumps)
    fragments = '{"value": ' + values + ', "record": ' + kept["record"].map(json.dumps) + "}"
    joined = join_sorted_groups(pd.DataFrame({"person": kept["person"].to_numpy(), "f": fragments.to_numpy()}),
                                ["person"], "f", ", ")
    return "[" + joined + "]"


# ---------------------------------------------------------------------------------- contact points

POINT_COLUMNS = ["c360_id", "kind", "value", "value_key", "status", "detail", "is_primary", "sources", "records",
                 "first_seen", "last_seen"]


def collapse_contact_points(candidates: pd.DataFrame, winners: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Every distinct contact point of each person: its sources and records, first and last seen, primary or not."""
    rows = candidates[(candidates["key"].notna() & candidates["value"].notna()).to_numpy()].copy()
    if rows.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    rows["key_code"] = pd.factorize(rows["key"], sort=True)[0]
    rows["seen_ns"] = np.where(rows["updated_ns"] == _NEVER, rows["extracted_ns"], rows["updated_ns"])
    rows["status_rank"] = rows["status"].map({OK: 0, PLACEHOLDER: 1, INVALID: 2}).to_numpy()
    rows = rows.sort_values(["person", "key_code", "status_rank", "record_code"], kind="mergesort", ignore_index=True)
    grouped = rows.groupby(["person", "key_code"], sort=False)
    points = grouped.agg(c360_id=("c360_id", "first"), value_key=("key", "first"), value=("value", "first"),
                         status=("status", "first"), detail=("detail", "first"),
                         first_seen=("seen_ns", "min"), last_seen=("seen_ns", "max"))
    points["records"] = join_sorted_groups(rows, ["person", "key_code"], "record", ",").to_numpy()
    rows["source_code"] = pd.factorize(rows["source"], sort=True)[0]
    unique_sources = rows.drop_duplicates(["person", "key_code", "source_code"]).sort_values(
        ["person", "key_code", "source_code"], kind="mergesort")
    points["sources"] = join_sorted_groups(unique_sources, ["person", "key_code"], "source", ",").to_numpy()
    points = points.reset_index()
    for column in ("first_seen", "last_seen"):
        points[column] = pd.to_datetime(points[column].to_numpy().astype("datetime64[ns]"))
    primary = pd.Series(winners["key"].to_numpy(), index=winners["person"].to_numpy())
    points["is_primary"] = points["value_key"].to_numpy() == primary.reindex(points["person"]).to_numpy()
    points["kind"] = kind
    return points[POINT_COLUMNS]


def join_sorted_groups(frame: pd.DataFrame, by: list[str], column: str, separator: str) -> pd.Series:
    """`column` joined per group of `by`, for a frame whose groups are contiguous (sorted by `by`).

    pandas' `groupby().agg(",".join)` calls back into Python per group with heavy overhead (minutes at a
    million groups); slicing one list at the group boundaries does the same in about a second.
    """
    if frame.empty:
        return pd.Series(dtype=object)
    keys = frame[by].to_numpy()
    boundary = np.ones(len(frame), dtype=bool)
    boundary[1:] = (keys[1:] != keys[:-1]).any(axis=1)
    starts = np.flatnonzero(boundary)
    ends = [*starts[1:], len(frame)]
    values = frame[column].astype(str).tolist()
    joined = [separator.join(values[start:end]) for start, end in zip(starts, ends, strict=True)]
    first_rows = frame[by].iloc[starts]
    index = pd.MultiIndex.from_frame(first_rows) if len(by) > 1 else pd.Index(first_rows.iloc[:, 0], name=by[0])
    return pd.Series(joined, index=index)


# -------------------------------------------------------------------------------------- assembling


def _full_name(golden: pd.DataFrame) -> pd.Series:
    parts = golden[list(NAME_ATTRIBUTES)].fillna("")
    joined = parts["first_name"] + " " + parts["middle_name"] + " " + parts["last_name"] + " " + parts["name_suffix"]
    joined = joined.str.split().str.join(" ")
    return joined.where(joined != "", None)


def _record_summary(records: pd.DataFrame, people: int) -> pd.DataFrame:
    """Per person (in person-code order): record count, first and last seen, and the sources."""
    person = records["person"].to_numpy()
    seen = np.where(records["updated_ns"] == _NEVER, records["extracted_ns"], records["updated_ns"])
    frame = pd.DataFrame({"person": person, "source": records["source"].to_numpy(), "seen": seen})
    grouped = frame.groupby("person")
    summary = pd.DataFrame(index=pd.RangeIndex(people, name="person"))
    summary["record_count"] = grouped.size().reindex(summary.index, fill_value=0).astype(int)
    for column, how in (("first_seen", "min"), ("last_seen", "max")):
        stamps = grouped["seen"].agg(how).reindex(summary.index).to_numpy()
        summary[column] = pd.to_datetime(np.where(stamps == _NEVER, np.datetime64("NaT"), stamps.astype("datetime64[ns]")))
    frame["source_code"] = pd.factorize(frame["source"], sort=True)[0]
    distinct = frame.drop_duplicates(["person", "source_code"]).sort_values(["person", "source_code"], kind="mergesort")
    summary["sources"] = join_sorted_groups(distinct, ["person"], "source", ",").reindex(summary.index)
    return summary


def _provenance(chosen: pd.DataFrame) -> pd.DataFrame:
    chosen = chosen[chosen["value"].notna()]
    return chosen[["c360_id", "attribute", "value", "source", "source_record_id", "rule", "candidates",
                   "competing"]].astype({"value": str})


def content_hashes(golden: pd.DataFrame, contact_points: pd.DataFrame, insights: pd.DataFrame) -> pd.Series:
    """A fingerprint of each profile's content (attributes, contact points, insights), by c360_id.

    Order-independent within a person, and deterministic across runs, so a rerun on unchanged data gives
    the same fingerprints and a change anywhere in a profile gives a new one.
    """
    attributes = golden.drop(columns=["profile_hash", "last_changed"], errors="ignore").set_index("c360_id")
    own = pd.Series(pd.util.hash_pandas_object(_as_text(attributes), index=False).to_numpy(), index=attributes.index)
    total = own.astype(np.uint64)
    for part in (contact_points.drop(columns=["first_seen", "last_seen"], errors="ignore"), insights):
        summed = pd.Series(np.uint64(0), index=total.index)
        if not part.empty:
            hashed = pd.Series(pd.util.hash_pandas_object(_as_text(part.drop(columns="c360_id")), index=False)
                               .to_numpy(), index=part["c360_id"].to_numpy())
            summed = hashed.groupby(level=0).sum().reindex(total.index, fill_value=0).astype(np.uint64)
        total = total * np.uint64(1_000_003) + summed
    return total.map(lambda h: f"{int(h):016x}")


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as text, every kind of missing value alike: a profile's fingerprint must not depend on whether the
    other profiles built with it made a column float, object or datetime."""
    return frame.astype(str).where(frame.notna(), "\x00")
