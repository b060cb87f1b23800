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
from c360_pipelines.core.insights import numbers_as_text, times_as_text
from c360_pipelines.core.records import record_key
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


# A contact frame may carry the row number of its record in `records`: its codes and times are then that
# record's (which is what they are in the warehouse), taken by position instead of matched by name.
RECORD_INDEX = "record_index"
_RECORD_CODES = ("person", "record", "record_code", "updated_ns", "extracted_ns")


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
        chosen.append(_provenance(winners, attribute))
    for kind in CONTACT_KINDS:
        candidates = contact_candidates(data, kind, placeholders)
        winners = choose(candidates[candidates["status"] == OK], rules[kind], source_order, ignore_empty)
        chosen.append(_provenance(winners, kind))
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
    return Profiles(golden.reset_index(), all_points, pd.concat(chosen, ignore_index=True))


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
    record_names = record_key(data.records["source"], data.records["source_record_id"])
    names = pd.Index(np.sort(record_names.unique()))
    records = _with_codes(data.records, people, names)
    return ProfileInput(records, *(_with_record_codes(frame, records) if RECORD_INDEX in frame.columns
                                   else _with_codes(frame, people, names)
                                   for frame in (data.emails, data.phones, data.addresses)))


def _with_codes(frame: pd.DataFrame, people: np.ndarray, records: pd.Index) -> pd.DataFrame:
    frame = frame.copy()
    frame["person"] = pd.Categorical(frame["c360_id"], categories=people).codes.astype(np.int64)
    frame["record"] = record_key(frame["source"], frame["source_record_id"]).to_numpy()
    frame["record_code"] = records.get_indexer(frame["record"]).astype(np.int64)
    frame["updated_ns"] = _nanoseconds(frame["updated_at"])
    frame["extracted_ns"] = _nanoseconds(frame["extracted_at"])
    return frame


def _with_record_codes(frame: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """A contact frame whose rows name their record by position (`record_index`) takes its codes and times from
    the coded records: the same values, without joining record names as text again for every frame."""
    at = frame[RECORD_INDEX].to_numpy()
    return frame.assign(**{column: records[column].to_numpy()[at] for column in _RECORD_CODES})


def _nanoseconds(stamps: pd.Series) -> np.ndarray:
    """Times as int64 nanoseconds; a missing time is the smallest integer (NaT's own representation)."""
    values = pd.to_datetime(stamps).to_numpy(dtype="datetime64[ns]")
    return values.view(np.int64)


def _ensure_codes(rows: pd.DataFrame) -> pd.DataFrame:
    """Frames handed in directly (tests, single attributes) get their codes here."""
    if "person" in rows.columns:
        return rows
    people = _people_of(rows)
    names = record_key(rows["source"], rows["source_record_id"])
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
        joined = (rows["line1"].fillna("") + " " + rows["line2"].fillna("")).tolist()
        street = pd.Series([" ".join(text.split()) for text in joined], index=rows.index, dtype=object)
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
    ranking = _Ranking.of(ranked, criteria)
    winners = ranked.take(ranking.winner_rows).reset_index(drop=True)
    winners = _with_representative_value(winners, ranked, ranking)
    winners["rule"] = _deciding_rule(ranked, ranking, criteria)
    winners["candidates"] = ranking.group_sizes
    winners["competing"] = _competing_json(ranked, ranking)
    return winners.drop(columns=["frequency", "length", "updated_ns", "extracted_ns", "source_rank", "record",
                                 "record_code", "key_code", "quality", "population", "folded"], errors="ignore")


@dataclass(frozen=True)
class _Ranking:
    """The candidates' rows ranked best first within each person (person order), as positions in the frame.

    Sorting positions on integer columns, then taking only the rows and columns each output needs, is what
    keeps choosing fast: sorting the wide candidate frame itself moved every string column twice.
    """

    order: np.ndarray  # row positions, by person, best first
    starts: np.ndarray  # where each person's rows start in `order`
    group: np.ndarray  # for each position in `order`, the person's number among the ranked people
    losing: np.ndarray  # for each position in `order`: its value is not the winner's

    @classmethod
    def of(cls, ranked: pd.DataFrame, criteria: list[str]) -> _Ranking:
        # np.lexsort sorts by its last key first; a descending column sorts by its bitwise complement, which
        # (unlike negation) cannot overflow on the int64 minimum that stands for "never"
        keys = [ranked["key_code"].to_numpy()]
        for criterion in reversed(criteria):
            column, ascending = _CRITERIA[criterion]
            values = ranked[column].to_numpy().astype(np.int64)
            keys.append(values if ascending else ~values)
        keys.append(ranked["person"].to_numpy())
        order = np.lexsort(keys)
        person = ranked["person"].to_numpy()[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = person[1:] != person[:-1]
        starts = np.flatnonzero(first)
        group = np.cumsum(first) - 1
        key_code = ranked["key_code"].to_numpy()[order]
        losing = key_code != key_code[starts][group]
        return cls(order, starts, group, losing)

    @property
    def winner_rows(self) -> np.ndarray:
        return self.order[self.starts]

    @property
    def group_sizes(self) -> np.ndarray:
        return np.diff(np.append(self.starts, len(self.order)))

    @property
    def runner_up_positions(self) -> np.ndarray:
        """Per ranked person, the position in `order` of the best losing row, or -1 when nothing lost."""
        positions = np.full(len(self.starts), -1, dtype=np.int64)
        losing = np.flatnonzero(self.losing)
        groups = self.group[losing]
        first_of_group = np.ones(len(losing), dtype=bool)
        first_of_group[1:] = groups[1:] != groups[:-1]
        positions[groups[first_of_group]] = losing[first_of_group]
        return positions


def _rankable(candidates: pd.DataFrame, rule: Rule, source_order: list[str], ignore_empty: bool) -> pd.DataFrame:
    values = candidates["value"].to_numpy(dtype=object)
    # missing values found for the whole column at once: one by one, a NaN from a pandas step cost a pd.isna call
    empty = pd.isna(values) | np.array([type(value) is str and not value.strip() for value in values.tolist()],
                                       dtype=bool)
    has_key = candidates["key"].notna().to_numpy()
    # take, not a boolean index: the rows come as a frame of its own, so the columns below are added to it in
    # place (assign copied every column of it once more: over a quarter of ranking)
    if ignore_empty:
        frame = candidates.take(np.flatnonzero(~empty & has_key))
    else:  # a record without the value competes with an empty one: under most_recent, a later blank clears it
        frame = candidates.take(np.flatnonzero(empty | has_key))
        blank = empty[empty | has_key]
        frame.loc[blank, ["value", "key"]] = [None, EMPTY_KEY]
    key_code = pd.factorize(frame["key"], sort=True)[0]
    person = frame["person"].to_numpy()
    person_and_key = pd.factorize(person.astype(np.int64) * (int(key_code.max(initial=0)) + 1) + key_code)[0]
    order = [*rule.sources, *(s for s in source_order if s not in rule.sources)]
    rank = {source: position for position, source in enumerate(order)}
    source_codes, sources = pd.factorize(frame["source"])
    source_rank = np.array([rank.get(source, len(rank)) for source in sources], dtype=np.int64)
    frame["key_code"] = key_code
    frame["frequency"] = np.bincount(person_and_key)[person_and_key] if len(frame) else np.zeros(0, dtype=np.int64)
    frame["length"] = np.array([len(value) if type(value) is str else len(str(value))
                                for value in frame["value"].tolist()], dtype=np.int64)
    frame["source_rank"] = source_rank[source_codes] if len(frame) else np.zeros(0, dtype=np.int64)
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


def _with_representative_value(winners: pd.DataFrame, ranked: pd.DataFrame, ranking: _Ranking) -> pd.DataFrame:
    """Show the winning value in its best-written form among the person's records (`Anne`, not `ANNE`)."""
    if "population" not in ranked.columns or ranked.empty:  # only names have renderings to choose from
        return winners
    rows = ranking.order[~ranking.losing]
    unfolded = ranked["folded"].to_numpy()[rows] == 0
    rows = rows[unfolded]
    # per person and rendering: its best quality and how many records wrote it; the best rendering is the first
    # by quality, then records, then text (the codes of a sorted factorize are in text order)
    value_code, values = pd.factorize(ranked["value"].to_numpy(dtype=object)[rows], sort=True)
    written = value_code >= 0
    person, value_code = ranked["person"].to_numpy()[rows][written], value_code[written]
    quality = ranked["quality"].to_numpy()[rows][written].astype(np.int64)
    pair, pairs = pd.factorize(person.astype(np.int64) * len(values) + value_code)
    best_quality = np.full(len(pairs), -1, dtype=np.int64)
    np.maximum.at(best_quality, pair, quality)
    seen = np.bincount(pair, minlength=len(pairs))
    pair_person, pair_value = np.divmod(np.asarray(pairs, dtype=np.int64), max(len(values), 1))
    order = np.lexsort((pair_value, -seen, -best_quality, pair_person))
    first = order[_run_starts(pair_person[order])]
    best = pd.Series(np.asarray(values, dtype=object)[pair_value[first]], index=pair_person[first])
    shouting = best_quality[first] == 0  # a name only ever written in one case is shown capitalised as names are
    best[shouting] = best[shouting].map(capitalise_name)
    winners["value"] = winners["person"].map(best).fillna(winners["value"])
    return winners


@lru_cache(maxsize=100_000)
def capitalise_name(name: str) -> str:
    """JOHN -> John, o'brien -> O'Brien, MCDONALD -> McDonald (nameparser's rules)."""
    parsed = HumanName(name)
    parsed.capitalize(force=True)
    return str(parsed) or name


def _deciding_rule(ranked: pd.DataFrame, ranking: _Ranking, criteria: list[str]) -> np.ndarray:
    """The strategy, or after a tie on it, the first tie-break where the winner beat the best other value."""
    strategy = criteria[0]
    rule = np.full(len(ranking.starts), f"{strategy} (no competing value)", dtype=object)
    runner_up = ranking.runner_up_positions
    contested = runner_up >= 0
    winner_rows = ranking.winner_rows[contested]
    runner_up_rows = ranking.order[runner_up[contested]]
    decided_by = np.full(len(winner_rows), f"{strategy}, tie broken by value order", dtype=object)
    decided = np.zeros(len(winner_rows), dtype=bool)
    for position, criterion in enumerate(criteria):
        column = ranked[_CRITERIA[criterion][0]].to_numpy()
        differs = column[winner_rows] != column[runner_up_rows]
        decided_by[differs & ~decided] = strategy if position == 0 else f"{strategy}, tie broken by {criterion}"
        decided |= differs
    rule[contested] = decided_by
    return rule


def _competing_json(ranked: pd.DataFrame, ranking: _Ranking) -> np.ndarray:
    """Per ranked person, a JSON list of the values that lost with their records (at most MAX_COMPETING)."""
    competing = np.full(len(ranking.starts), "[]", dtype=object)
    losing = np.flatnonzero(ranking.losing)
    if not len(losing):
        return competing
    groups = ranking.group[losing]
    starts = _run_starts(groups)
    rank_in_group = np.arange(len(losing)) - np.repeat(starts, np.diff(np.append(starts, len(losing))))
    kept = rank_in_group < MAX_COMPETING
    rows = ranking.order[losing[kept]]
    groups = groups[kept]
    values, records = ranked["value"].to_numpy(dtype=object)[rows], ranked["record"].to_numpy(dtype=object)[rows]
    fragments = ['{"value": ' + json.dumps(None if _is_missing(value) else value) + ', "record": '
                 + json.dumps(record) + "}" for value, record in zip(values, records, strict=True)]
    starts = _run_starts(groups)
    competing[groups[starts]] = ["[" + joined + "]" for joined in _join_runs(fragments, starts, ", ")]
    return competing


def _is_missing(value: object) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _run_starts(codes: np.ndarray) -> np.ndarray:
    """Where each run of equal consecutive values starts."""
    first = np.ones(len(codes), dtype=bool)
    first[1:] = codes[1:] != codes[:-1]
    return np.flatnonzero(first)


def _join_runs(values: list[str], starts: np.ndarray, separator: str) -> list[str]:
    """`values` joined per run, the runs starting at `starts` (one list sliced at the boundaries: pandas'
    groupby-join calls back into Python per group and took minutes at a million groups)."""
    ends = [*starts[1:].tolist(), len(values)]
    return [separator.join(values[start:end]) for start, end in zip(starts.tolist(), ends, strict=True)]


# ---------------------------------------------------------------------------------- contact points

POINT_COLUMNS = ["c360_id", "kind", "value", "value_key", "status", "detail", "is_primary", "sources", "records",
                 "first_seen", "last_seen"]
_STATUS_RANK = {OK: 0, PLACEHOLDER: 1, INVALID: 2}


def collapse_contact_points(candidates: pd.DataFrame, winners: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Every distinct contact point of each person: its sources and records, first and last seen, primary or not."""
    # the columns needed, at the rows that count, taken one by one: filtering the whole candidate frame first
    # copied every column of it, the address parts too
    at = np.flatnonzero((candidates["key"].notna() & candidates["value"].notna()).to_numpy())
    if not len(at):
        return pd.DataFrame(columns=POINT_COLUMNS)

    def column(name: str) -> np.ndarray:
        return candidates[name].to_numpy()[at]

    person, key, status = column("person"), column("key"), column("status")
    key_code, keys = pd.factorize(key, sort=True)
    status_rank = pd.Series(status).map(_STATUS_RANK).to_numpy()
    order = np.lexsort([column("record_code"), status_rank, key_code, person])
    point_code = person[order].astype(np.int64) * len(keys) + key_code[order]
    starts = _run_starts(point_code)
    first_rows = order[starts]
    updated, extracted = column("updated_ns"), column("extracted_ns")
    seen = np.where(updated == _NEVER, extracted, updated)[order]
    primary = pd.Series(winners["key"].to_numpy(), index=winners["person"].to_numpy())
    return pd.DataFrame({
        "c360_id": column("c360_id")[first_rows],
        "kind": kind,
        "value": column("value")[first_rows],
        "value_key": key[first_rows],
        "status": status[first_rows],
        "detail": _first_present(column("detail").astype(object)[order], starts),
        "is_primary": key[first_rows] == primary.reindex(person[first_rows]).to_numpy(),
        "sources": _distinct_sources(column("source").astype(object)[order], starts),
        "records": _join_runs(column("record").astype(object)[order].tolist(), starts, ","),
        "first_seen": np.minimum.reduceat(seen, starts).astype("datetime64[ns]"),
        "last_seen": np.maximum.reduceat(seen, starts).astype("datetime64[ns]"),
    }, columns=POINT_COLUMNS)


def _first_present(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per run, the first value that is not missing (None when none is), as groupby's `first` gives."""
    present = ~pd.isna(values)
    run = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(values))))
    found = np.full(len(starts), None, dtype=object)
    positions = np.flatnonzero(present)
    runs = run[positions]
    first = _run_starts(runs)
    found[runs[first]] = values[positions[first]]
    return found


def _distinct_sources(sources: np.ndarray, starts: np.ndarray) -> list[str]:
    """Per run, its distinct sources sorted and comma-separated."""
    codes, names = pd.factorize(sources, sort=True)
    if not len(starts):
        return []
    return _source_lists(np.bitwise_or.reduceat(_source_bits(codes), starts), names)


def _source_bits(codes: np.ndarray) -> np.ndarray:
    return np.left_shift(np.int64(1), codes.astype(np.int64))


def _source_lists(sets: np.ndarray, names: pd.Index) -> list[str]:
    """Each set of sources (one bit per source code, the codes in name order) as its names comma-separated, each
    distinct set joined once: a few dozen sets for a million people, where a join per person was the cost."""
    distinct, inverse = np.unique(sets, return_inverse=True)
    listed = names.tolist()
    joined = [",".join(name for bit, name in enumerate(listed) if members >> bit & 1) for members in distinct.tolist()]
    return np.array(joined, dtype=object)[inverse.ravel()].tolist()


# -------------------------------------------------------------------------------------- assembling


def _full_name(golden: pd.DataFrame) -> pd.Series:
    parts = golden[list(NAME_ATTRIBUTES)].fillna("")
    joined = parts["first_name"] + " " + parts["middle_name"] + " " + parts["last_name"] + " " + parts["name_suffix"]
    joined = pd.Series([" ".join(text.split()) for text in joined.tolist()], index=golden.index, dtype=object)
    return joined.where(joined != "", None)


def _record_summary(records: pd.DataFrame, people: int) -> pd.DataFrame:
    """Per person (in person-code order): record count, first and last seen, and the sources."""
    person = records["person"].to_numpy()
    seen = np.where(records["updated_ns"] == _NEVER, records["extracted_ns"], records["updated_ns"])
    summary = pd.DataFrame(index=pd.RangeIndex(people, name="person"))
    summary["record_count"] = np.bincount(person, minlength=people).astype(int)
    # every person has a record; a time of "never" is the smallest integer, so it is the first seen when present
    first, last = np.full(people, np.iinfo(np.int64).max), np.full(people, _NEVER)
    np.minimum.at(first, person, seen)
    np.maximum.at(last, person, seen)
    for column, stamps in (("first_seen", first), ("last_seen", last)):
        summary[column] = pd.to_datetime(stamps.view("datetime64[ns]"))
    codes, names = pd.factorize(records["source"], sort=True)
    sets = np.zeros(people, dtype=np.int64)
    np.bitwise_or.at(sets, person, _source_bits(codes))
    summary["sources"] = _source_lists(sets, names)
    return summary


def _provenance(winners: pd.DataFrame, attribute: str) -> pd.DataFrame:
    """The provenance rows of one attribute: each person's winning value with its record, rule and what it beat."""
    winners = winners[winners["value"].notna().to_numpy()]
    return pd.DataFrame({
        "c360_id": winners["c360_id"].to_numpy(), "attribute": attribute,
        "value": [value if type(value) is str else str(value) for value in winners["value"]],
        **{column: winners[column].to_numpy() for column in
           ("source", "source_record_id", "rule", "candidates", "competing")}})


def content_hashes(golden: pd.DataFrame, contact_points: pd.DataFrame, insights: pd.DataFrame) -> pd.Series:
    """A fingerprint of each profile's content (attributes, contact points, insights), by c360_id.

    Order-independent within a person, and deterministic across runs, so a rerun on unchanged data gives
    the same fingerprints and a change anywhere in a profile gives a new one.
    """
    attributes = golden.drop(columns=["profile_hash", "last_changed"], errors="ignore").set_index("c360_id")
    # categorize=False: the same hashes, without first finding the distinct values of columns that are mostly unique
    own = pd.Series(pd.util.hash_pandas_object(_as_text(attributes), index=False, categorize=False).to_numpy(),
                    index=attributes.index)
    total = own.astype(np.uint64)
    for part in (contact_points.drop(columns=["first_seen", "last_seen"], errors="ignore"), insights):
        summed = pd.Series(np.uint64(0), index=total.index)
        if not part.empty:
            hashed = pd.Series(pd.util.hash_pandas_object(_as_text(part.drop(columns="c360_id")), index=False,
                                                          categorize=False).to_numpy(), index=part["c360_id"].to_numpy())
            summed = hashed.groupby(level=0).sum().reindex(total.index, fill_value=0).astype(np.uint64)
        total = total * np.uint64(1_000_003) + summed
    return total.map(lambda h: f"{int(h):016x}")


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as text, every kind of missing value alike: a profile's fingerprint must not depend on whether the
    other profiles built with it made a column float, object or datetime."""
    text = {}
    for column, values in frame.items():
        missing = values.isna().to_numpy()
        if pd.api.types.is_datetime64_dtype(values.dtype):
            # Always with the fraction: pandas' own text for a column drops it, or the time of day, when no time
            # in it has one, and a profile's fingerprint then changed with the profiles it was built with. This is
            # the text pandas gives a column of times with microseconds, so earlier fingerprints stay the same.
            values = times_as_text(values.to_numpy(dtype="datetime64[us]"))
        elif values.dtype.kind in "iub" or values.dtype == np.float64:
            values = numbers_as_text(values.to_numpy())
        elif values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            values = values.astype(str)  # a column of strings is its own text: str() per value was half the time
        text[column] = np.where(missing, "\x00", np.asarray(values, dtype=object))
    return pd.DataFrame(text, index=frame.index)
