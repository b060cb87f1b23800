"""Identity stage 7: survivorship. One golden profile per person, and the provenance of every value in it.

For each single-valued attribute, every record of the person offers a candidate (its value, a comparison key
and when the record was current). A strategy ranks the candidates; the tie-breaks that follow it are always
the same (most recent, then source order, then record key), so the same records always give the same
profile. The provenance says which record won, by which rule (naming the tie-break when one decided) and what
it beat. Contact points are not collapsed: every distinct email, phone and address is kept, one of each kind
marked primary by the same rules. Vectorised over all people at once with pandas.
"""

from __future__ import annotations

import json
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
    "record_key": ("record", True),
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
                   placeholders: frozenset[str] = frozenset(), ignore_empty: bool = True) -> Profiles:
    """Golden values, contact points and provenance for every person in `data`."""
    people = pd.Index(sorted(data.records["c360_id"].unique()), name="c360_id")
    golden = pd.DataFrame(index=people)
    chosen: list[pd.DataFrame] = []
    contact_points: list[pd.DataFrame] = []
    for attribute in SCALAR_ATTRIBUTES:
        candidates = scalar_candidates(data.records, attribute)
        winners = choose(candidates, rules[attribute], source_order, ignore_empty)
        golden[attribute] = winners.set_index("c360_id")["value"].reindex(people)
        chosen.append(winners.assign(attribute=attribute))
    for kind in CONTACT_KINDS:
        candidates = contact_candidates(data, kind, placeholders)
        winners = choose(candidates[candidates["status"] == OK], rules[kind], source_order, ignore_empty)
        chosen.append(winners.assign(attribute=kind))
        contact_points.append(collapse_contact_points(candidates, winners, kind))
        if kind == "address":
            parts = winners.set_index("c360_id")[list(ADDRESS_PARTS)].reindex(people)
            golden = golden.join(parts.rename(columns={"line1": "address_line1", "line2": "address_line2"}))
        else:
            golden[kind] = winners.set_index("c360_id")["value"].reindex(people)
    golden["full_name"] = _full_name(golden)
    for name in ("first_name", "last_name"):
        golden[f"{name}_norm"] = name_norm(golden[name].astype("string")).astype(object).where(golden[name].notna(), None)
    golden["birth_date"] = pd.to_datetime(golden["birth_date"], errors="coerce").dt.date
    golden = golden.join(_record_summary(data.records))
    contact_points = [points for points in contact_points if not points.empty]
    all_points = pd.concat(contact_points, ignore_index=True) if contact_points else collapse_contact_points(
        pd.DataFrame(columns=["key", "value"]), pd.DataFrame(columns=["c360_id", "key"]), "email")
    return Profiles(golden.reset_index(), all_points,
                    _provenance(pd.concat(chosen, ignore_index=True)))


# ------------------------------------------------------------------------------------ candidates


def scalar_candidates(records: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """One candidate per record for a name part, birth date or gender; the key is what counts as the same value."""
    value = records[attribute]
    if attribute == "birth_date":
        value = pd.to_datetime(value, errors="coerce").dt.strftime("%Y-%m-%d")
        key = value
    elif f"{attribute}_norm" in records.columns:
        key = records[f"{attribute}_norm"].where(records[f"{attribute}_norm"].notna(), value.str.casefold())
    else:
        key = value.str.casefold()
    frame = _candidate_frame(records, value.astype("object"), key.astype("object"))
    frame["quality"] = 0
    frame["folded"] = 0
    if attribute == "first_name":
        frame = _fold_nicknames(frame)
    if attribute in NAME_ATTRIBUTES:
        frame["quality"] = _well_cased(frame["value"])
        frame["population"] = frame.groupby("key")["key"].transform("size").fillna(0).astype(int)
    return frame


def _fold_nicknames(frame: pd.DataFrame) -> pd.DataFrame:
    """A nickname votes for the full name it shortens when the same person's records also carry that name.

    `Kim`, `Kim`, `Kimberly` is one person called Kimberly written three ways, not a majority for `Kim`. The
    folded rows keep their own value and are marked, so the winning record is one that sent the full name.
    """
    distinct = frame[["c360_id", "key"]].dropna().drop_duplicates()
    several = distinct[distinct["c360_id"].duplicated(keep=False)]
    pairs = several.merge(several, on="c360_id", suffixes=("", "_full"))
    pairs = pairs[pairs["key"] != pairs["key_full"]]
    shortens = [_shortens(short, full) for short, full in zip(pairs["key"], pairs["key_full"], strict=True)]
    folds = pairs[shortens].drop_duplicates(["c360_id", "key"])
    if folds.empty:
        return frame
    frame = frame.merge(folds, on=["c360_id", "key"], how="left")
    frame["folded"] = frame["key_full"].notna().astype(int)
    frame["key"] = frame["key_full"].where(frame["key_full"].notna(), frame["key"])
    return frame.drop(columns="key_full")


def contact_candidates(data: ProfileInput, kind: str, placeholders: frozenset[str]) -> pd.DataFrame:
    """Every contact point of one kind, one row per record and value, with its status (ok, invalid, placeholder)."""
    if kind == "email":
        rows = data.emails
        value = rows["email"].where(rows["email"].notna(), rows.get("email_raw"))
        key = rows["email_key"].where(rows["email_key"].notna(), value)
        frame = _candidate_frame(rows, value, key)
        frame["detail"] = rows["domain"].to_numpy()
        valid = rows["is_valid"].astype(bool).to_numpy()
    elif kind == "phone":
        rows = data.phones
        value = rows["phone_e164"].where(rows["phone_e164"].notna(), rows["phone_raw"])
        frame = _candidate_frame(rows, value, value)
        frame["detail"] = rows["phone_type"].to_numpy()
        valid = (rows["is_valid"].astype(bool) & rows["phone_e164"].notna()).to_numpy()
    else:
        rows = data.addresses
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
    frame = pd.DataFrame({
        "c360_id": rows["c360_id"].to_numpy(),
        "source": rows["source"].to_numpy(),
        "source_record_id": rows["source_record_id"].to_numpy(),
        "value": value.to_numpy(dtype=object),
        "key": key.to_numpy(dtype=object),
        "updated_at": pd.to_datetime(rows["updated_at"]).to_numpy(),
        "extracted_at": pd.to_datetime(rows["extracted_at"]).to_numpy(),
    })
    return frame


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

    Columns: c360_id, value, key, source, source_record_id, rule, candidates, competing (JSON) and, for
    addresses, the address parts.
    """
    ranked = _rankable(candidates, rule, source_order, ignore_empty)
    criteria = _criteria_for(rule.strategy, by_spelling="population" in ranked.columns)
    ranked = ranked.sort_values(["c360_id", *(_CRITERIA[c][0] for c in criteria), "key"],
                                ascending=[True, *(_CRITERIA[c][1] for c in criteria), True], kind="mergesort")
    first = ~ranked["c360_id"].duplicated()
    winners = ranked[first].copy()
    winners = _with_representative_value(winners, ranked)
    losers = ranked[ranked["key"].to_numpy() != ranked["c360_id"].map(winners.set_index("c360_id")["key"]).to_numpy()]
    winners["rule"] = _deciding_rule(winners, losers, criteria)
    winners["candidates"] = winners["c360_id"].map(ranked.groupby("c360_id").size()).astype(int)
    winners["competing"] = winners["c360_id"].map(_competing_json(losers)).fillna("[]")
    return winners.drop(columns=["frequency", "length", "updated_ns", "extracted_ns", "source_rank", "record",
                                 "quality", "population", "folded", "updated_at", "extracted_at"], errors="ignore").reset_index(drop=True)


def _rankable(candidates: pd.DataFrame, rule: Rule, source_order: list[str], ignore_empty: bool) -> pd.DataFrame:
    frame = candidates.copy()
    text = frame["value"].astype("string").str.strip()
    empty = text.isna() | (text == "")
    if ignore_empty:
        frame = frame[~empty.to_numpy()]
    else:  # a record without the value competes with an empty one: under most_recent, a later blank clears it
        frame.loc[empty.to_numpy(), ["value", "key"]] = [None, EMPTY_KEY]
    frame = frame[frame["key"].notna()].copy()
    frame["frequency"] = frame.groupby(["c360_id", "key"], sort=False)["key"].transform("size")
    frame["length"] = frame["value"].astype(str).str.len()
    frame["updated_ns"] = _nanoseconds(frame["updated_at"])
    frame["extracted_ns"] = _nanoseconds(frame["extracted_at"])
    order = [*rule.sources, *(s for s in source_order if s not in rule.sources)]
    rank = {source: position for position, source in enumerate(order)}
    frame["source_rank"] = frame["source"].map(rank).fillna(len(rank)).astype(int)
    frame["record"] = frame["source"] + ":" + frame["source_record_id"]
    return frame


def _nanoseconds(stamps: pd.Series) -> pd.Series:
    values = pd.to_datetime(stamps)
    return pd.Series(np.where(values.isna(), _NEVER, values.to_numpy(dtype="datetime64[ns]").astype(np.int64)),
                     index=stamps.index)


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


def _with_representative_value(winners: pd.DataFrame, ranked: pd.DataFrame) -> pd.DataFrame:
    """Show the winning value in its best-written form among the person's records (`Anne`, not `ANNE`)."""
    if "population" not in ranked.columns or ranked.empty:  # only names have renderings to choose from
        return winners
    same = ranked[ranked["folded"] == 0].merge(winners[["c360_id", "key"]], on=["c360_id", "key"])
    renderings = (same.groupby(["c360_id", "value"], sort=False)
                  .agg(quality=("quality", "max"), seen=("value", "size")).reset_index()
                  .sort_values(["c360_id", "quality", "seen", "value"], ascending=[True, False, False, True]))
    best = renderings.drop_duplicates("c360_id").set_index("c360_id")
    if "population" in ranked.columns:  # a name only ever written in one case is shown capitalised as names are
        shouting = best["quality"] == 0
        best.loc[shouting, "value"] = best.loc[shouting, "value"].map(capitalise_name)
    winners["value"] = winners["c360_id"].map(best["value"]).fillna(winners["value"])
    return winners


@lru_cache(maxsize=100_000)
def capitalise_name(name: str) -> str:
    """JOHN -> John, o'brien -> O'Brien, MCDONALD -> McDonald (nameparser's rules)."""
    parsed = HumanName(name)
    parsed.capitalize(force=True)
    return str(parsed) or name


def _deciding_rule(winners: pd.DataFrame, losers: pd.DataFrame, criteria: list[str]) -> pd.Series:
    """The strategy, or after a tie on it, the first tie-break where the winner beat the best other value."""
    runner_up = losers.drop_duplicates("c360_id").set_index("c360_id")
    rule = pd.Series(criteria[0], index=winners.index, dtype=object)
    unopposed = ~winners["c360_id"].isin(runner_up.index)
    rule[unopposed] = f"{criteria[0]} (no competing value)"
    contested = winners[~unopposed]
    decided = pd.Series(False, index=contested.index)
    for position, criterion in enumerate(criteria):
        column = _CRITERIA[criterion][0]
        differs = contested[column].to_numpy() != contested["c360_id"].map(runner_up[column]).to_numpy()
        newly = differs & ~decided.to_numpy()
        if position > 0:
            rule.loc[contested.index[newly]] = f"{criteria[0]}, tie broken by {criterion}"
        decided |= differs
    rule.loc[contested.index[~decided.to_numpy()]] = f"{criteria[0]}, tie broken by value order"
    return rule


def _competing_json(losers: pd.DataFrame) -> pd.Series:
    """Per person, a JSON list of the values that lost with their records (at most MAX_COMPETING)."""
    if losers.empty:
        return pd.Series(dtype=object)
    kept = losers[losers.groupby("c360_id", sort=False).cumcount() < MAX_COMPETING]
    fragments = ('{"value": ' + kept["value"].astype(object).where(kept["value"].notna(), None).map(json.dumps) + ', "record": '
                 + kept["record"].map(json.dumps) + "}")
    joined = join_sorted_groups(pd.DataFrame({"c360_id": kept["c360_id"].to_numpy(), "f": fragments.to_numpy()}),
                                ["c360_id"], "f", ", ")
    return "[" + joined + "]"


# ---------------------------------------------------------------------------------- contact points


def collapse_contact_points(candidates: pd.DataFrame, winners: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Every distinct contact point of each person: its sources and records, first and last seen, primary or not."""
    rows = candidates[candidates["key"].notna() & candidates["value"].notna()].copy()
    if rows.empty:
        return pd.DataFrame(columns=["c360_id", "kind", "value", "value_key", "status", "detail", "is_primary",
                                     "sources", "records", "first_seen", "last_seen"])
    rows["seen"] = pd.to_datetime(rows["updated_at"]).fillna(pd.to_datetime(rows["extracted_at"]))
    rows["record"] = rows["source"] + ":" + rows["source_record_id"]
    rows["status_rank"] = rows["status"].map({OK: 0, PLACEHOLDER: 1, INVALID: 2})
    rows = rows.sort_values(["c360_id", "key", "status_rank", "record"], kind="mergesort")
    grouped = rows.groupby(["c360_id", "key"], sort=False)
    points = grouped.agg(value=("value", "first"), status=("status", "first"), detail=("detail", "first"),
                         first_seen=("seen", "min"), last_seen=("seen", "max"))
    points["records"] = join_sorted_groups(rows, ["c360_id", "key"], "record", ",")
    unique_sources = rows.drop_duplicates(["c360_id", "key", "source"]).sort_values(["c360_id", "key", "source"])
    points["sources"] = join_sorted_groups(unique_sources, ["c360_id", "key"], "source", ",")
    points = points.reset_index().rename(columns={"key": "value_key"})
    primary = set(zip(winners["c360_id"], winners["key"], strict=True))
    points["is_primary"] = [pair in primary for pair in zip(points["c360_id"], points["value_key"], strict=True)]
    points["kind"] = kind
    return points


def join_sorted_groups(frame: pd.DataFrame, by: list[str], column: str, separator: str) -> pd.Series:
    """`column` joined per group of `by`, for a frame whose groups are contiguous (sorted by `by`).

    pandas' `groupby().agg(",".join)` calls back into Python per group with heavy overhead (minutes at a
    million groups); slicing one list at the group boundaries does the same in about a second.
    """
    if frame.empty:
        return pd.Series(dtype=object)
    keys = frame[by]
    starts = np.flatnonzero(keys.ne(keys.shift()).any(axis=1).to_numpy())
    ends = [*starts[1:], len(frame)]
    values = frame[column].astype(str).tolist()
    joined = [separator.join(values[start:end]) for start, end in zip(starts, ends, strict=True)]
    index = pd.MultiIndex.from_frame(keys.iloc[starts]) if len(by) > 1 else pd.Index(keys.iloc[starts, 0], name=by[0])
    return pd.Series(joined, index=index)


# -------------------------------------------------------------------------------------- assembling


def _full_name(golden: pd.DataFrame) -> pd.Series:
    parts = golden[list(NAME_ATTRIBUTES)].fillna("")
    joined = parts["first_name"] + " " + parts["middle_name"] + " " + parts["last_name"] + " " + parts["name_suffix"]
    joined = joined.str.split().str.join(" ")
    return joined.where(joined != "", None)


def _record_summary(records: pd.DataFrame) -> pd.DataFrame:
    seen = pd.to_datetime(records["updated_at"]).fillna(pd.to_datetime(records["extracted_at"]))
    frame = pd.DataFrame({"c360_id": records["c360_id"].to_numpy(), "source": records["source"].to_numpy(),
                          "seen": seen.to_numpy()})
    grouped = frame.groupby("c360_id")
    summary = grouped.agg(record_count=("source", "size"), first_seen=("seen", "min"), last_seen=("seen", "max"))
    distinct = frame.drop_duplicates(["c360_id", "source"]).sort_values(["c360_id", "source"])
    summary["sources"] = join_sorted_groups(distinct, ["c360_id"], "source", ",")
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
    own = pd.Series(pd.util.hash_pandas_object(attributes.astype(str), index=False).to_numpy(),
                    index=attributes.index)
    total = own.astype(np.uint64)
    for part in (contact_points.drop(columns=["first_seen", "last_seen"], errors="ignore"), insights):
        if part.empty:
            continue
        hashed = pd.Series(pd.util.hash_pandas_object(part.drop(columns="c360_id").astype(str), index=False).to_numpy(),
                           index=part["c360_id"].to_numpy())
        summed = hashed.groupby(level=0).sum().reindex(total.index, fill_value=0).astype(np.uint64)
        total = total * np.uint64(1_000_003) + summed
    return total.map(lambda h: f"{int(h):016x}")
