"""Golden profiles over the warehouse: read each person's records, apply the profile rules, write four tables.

`build_profiles` reads the canonical tables through `xref`, runs the core's survivorship and insights, and
replaces `golden_profile`, `profile_contact_points`, `profile_attribute_provenance` and `profile_insights` in
one transaction. A profile keeps its `last_changed` time when its content fingerprint is unchanged, so a rerun
on the same data changes nothing. Reading one profile is `lookup.Customer360.profile`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import itertools
import json
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from c360_pipelines import __version__
from c360_pipelines.config import C360Config
from c360_pipelines.core.events import ProfileState, event_anchors
from c360_pipelines.core.insights import compute_insights, parse_insights
from c360_pipelines.core.survive import (
    RECORD_INDEX,
    ProfileInput,
    Rule,
    content_hashes,
    spelling_population,
)
from c360_pipelines.core.survive import (
    build_profiles as survive,
)
from c360_pipelines.events import append_events, profile_events
from c360_pipelines.ingest import utc_now
from c360_pipelines.model import MODELS, PROFILE_MODELS, TABLES, columns_of
from resources.warehouse import WarehouseResource, fill_temporary_table, indexes_rebuilt_after, read_sql

PROFILE_TABLES = tuple(PROFILE_MODELS)


FULL, INCREMENTAL = "full", "incremental"
PROFILE_FORMAT = 3  # bump when a profile's content or fingerprint is computed differently: forces a full rebuild
SCOPE_TABLE = "profile_scope"
SCOPE_RECORDS_TABLE = "profile_scope_records"
READ_TABLES = ("profile_membership", "profile_engagement_seen")  # what each profile was built from
PART_TABLES = (*PROFILE_TABLES, *READ_TABLES)  # rows kept per 360 ID
# About 0.15 GB of working memory per part at peak. Smaller parts also shorten the wait for the first part and
# the writing of the last ones while the workers are idle, and their frames stay in the processor's caches: at
# 1M records, parts of 25k people took 64-66 s and 124 s of CPU, parts of 10k 59-62 s and 110-116 s of CPU.
PART_PEOPLE = 10_000
BUILD_WORKERS = 2
PARENT_CHECK_SECONDS = 0.5


@dataclass(frozen=True)
class ProfileReport:
    profiles: int
    changed: int
    contact_points: int
    provenance_rows: int
    insight_rows: int
    events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    mode: str = FULL
    rebuilt: int = 0
    parts: int = 1


def rules_from(config: C360Config) -> dict[str, Rule]:
    from c360_pipelines.config import PROFILE_ATTRIBUTES

    return {name: Rule(rule.strategy, rule.sources) for name in PROFILE_ATTRIBUTES
            for rule in [config.profile.strategy_for(name)]}


def rules_fingerprint(config: C360Config) -> str:
    """What a profile depends on besides its records: a change here means every profile is rebuilt."""
    payload = json.dumps({"profile": config.profile.model_dump(mode="json"), "junk": sorted(config.match.junk_values),
                          "source_order": list(config.source_order), "c360": __version__,
                          "format": PROFILE_FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_profile_input(source: WarehouseResource | sa.Connection, scoped: bool = False
                       ) -> tuple[ProfileInput, pd.DataFrame]:
    """Every person record, contact point and engagement row, each with its c360_id and recency; with `scoped`,
    only those of the people listed in the connection's temporary `profile_scope` table (without, that table is
    filled with every 360 ID: both read the same way)."""
    if isinstance(source, WarehouseResource):
        with source.engine.connect() as connection:
            return load_profile_input(connection, scoped)
    connection = source

    def read(sql: str) -> pd.DataFrame:
        return read_sql(connection, sql)

    if not scoped:
        _fill_scope(connection, every_profile_id(connection))
    keys = _scoped_record_keys(connection)
    # SQLite's planner would rather scan every person record than the few keys: CROSS JOIN fixes its join order
    keys_first = "CROSS JOIN" if connection.dialect.name == "sqlite" else "JOIN"
    records = read(
        "SELECT x.position, x.c360_id, i.source, i.source_record_id, i.updated_at, b.extracted_at, i.first_name, "
        "i.middle_name, i.last_name, i.name_suffix, i.first_name_norm, i.last_name_norm, i.birth_date, i.gender "
        f"FROM {keys} x {keys_first} individual i ON i.source = x.source AND i.source_record_id = x.source_record_id "
        "JOIN batch b ON b.source = i.source AND b.batch_id = i.batch_id")
    positions = pd.Index(records.pop("position"))

    def of_records(columns: str, table: str) -> pd.DataFrame:
        # A contact row names its record by the key's position: the record's source, id, 360 ID and times are
        # taken from `records` by row number, not read again as text and joined on it.
        found = read(f"SELECT x.position, {columns} FROM {keys} x "
                     f"JOIN {table} p ON p.source = x.source AND p.source_record_id = x.source_record_id")
        at = positions.get_indexer(found.pop("position"))
        found = found[at >= 0].reset_index(drop=True)
        at = at[at >= 0]
        shared = {column: records[column].to_numpy()[at] for column in
                  ("c360_id", "source", "source_record_id", "updated_at", "extracted_at")}
        return pd.DataFrame({**shared, **found, RECORD_INDEX: at})

    emails = of_records("p.email_raw, p.email, p.email_key, p.domain, p.is_valid", "contact_point_email")
    phones = of_records("p.phone_raw, p.phone_e164, p.phone_type, p.is_valid", "contact_point_phone")
    addresses = of_records("p.address_raw, p.line1, p.line2, p.city, p.region, p.postal_code, p.country, p.is_parsed",
                           "contact_point_address")
    engagement = read(
        "SELECT x.c360_id, e.source, e.engagement_type, e.amount, e.currency, e.channel, e.status, e.occurred_at "
        f"FROM {keys} x JOIN engagement e ON e.person_source = x.source AND e.person_record_id = x.source_record_id")
    return ProfileInput(records, emails, phones, addresses), engagement


def _scoped_record_keys(connection: sa.Connection) -> str:
    """Fill the temporary table of the scoped people's xref rows, numbered in record-key order; returns its name.
    Reads go through it in that order: each lookup then lands next to the last one in the tables' indexes (in
    360 ID order they were scattered, and reading took four times as long)."""
    # the database numbers the rows as they go in (ROW_NUMBER() took another sort: a third more time)
    numbered = "INTEGER PRIMARY KEY" if connection.dialect.name == "sqlite" else "BIGSERIAL"
    connection.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {SCOPE_RECORDS_TABLE} "
                               f"(position {numbered}, source VARCHAR, source_record_id VARCHAR, c360_id VARCHAR)")
    connection.exec_driver_sql(f"DELETE FROM {SCOPE_RECORDS_TABLE}")
    connection.exec_driver_sql(
        f"INSERT INTO {SCOPE_RECORDS_TABLE} (source, source_record_id, c360_id) "
        f"SELECT x.source, x.source_record_id, x.c360_id FROM xref x WHERE x.c360_id IN (SELECT c360_id FROM {SCOPE_TABLE}) "
        "ORDER BY x.source, x.source_record_id")
    return SCOPE_RECORDS_TABLE


def build_profiles(warehouse: WarehouseResource, config: C360Config, now: dt.datetime | None = None,
                   full: bool = False, part_people: int = PART_PEOPLE, workers: int = BUILD_WORKERS) -> ProfileReport:
    """Bring the golden profiles, contact points, provenance and insights up to date; returns what was done.

    Only the profiles whose records, engagement or identity changed since the last build are rebuilt and
    rewritten; everything is rebuilt on the first build, when the rules changed, or with `full`. The people to
    build are cut into parts of about `part_people`; more than one part are built by `workers` processes while
    this one writes, all in one transaction, so memory stays bounded by the part size.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fingerprint = rules_fingerprint(config)
    full = full or last_fingerprint(warehouse) != fingerprint
    with warehouse.engine.connect() as reader:
        scope = every_profile_id(reader) if full else affected_ids(reader)
    # More than a part's worth: the workers start now and load their modules while this process plans.
    workers = workers if len(scope) > part_people else 1
    with _worker_pool(workers) as pool, warehouse.transaction() as connection:
        inputs = build_inputs(warehouse, config, now or utc_now()) if scope else None
        parts = build_parts(scope, inputs.ids, inputs.splits, part_people) if inputs else []
        timings["plan"] = time.perf_counter() - started
        written = {"profiles": 0, "unchanged": 0, "events": 0}
        _delete_profiles(connection, None if full else scope)
        # A full build fills whole tables: their indexes are built once, after the load. Not on PostgreSQL, where
        # dropping an index locks the table against the workers still reading the published profiles.
        rebuild_indexes = full and not warehouse.is_postgres

        def record_reads() -> None:
            # rows go in in the order of the tables' record-key indexes: only the 360-ID ones are built after
            with indexes_rebuilt_after(connection, READ_TABLES if rebuild_indexes else (), only=("c360_id",)):
                _record_reads(connection, scoped=not full)

        # On SQLite this transaction has held the only write lock since its DELETE, so nothing can land between
        # the parts' reads and the record of them, and the record is made while the first parts are built.
        # Elsewhere it is made first: a record newer than what a part read would hide that change from the next
        # build, an older one only makes it rebuild the profile.
        if warehouse.is_postgres:
            record_reads()
        meanwhile = (lambda: None) if warehouse.is_postgres else record_reads
        with indexes_rebuilt_after(connection, PROFILE_TABLES if rebuild_indexes else ()):
            for part in built_parts(inputs, parts, pool, workers, meanwhile) if inputs else ():
                writing = time.perf_counter()
                written["events"] += _write_part(warehouse, connection, part)
                written["profiles"] += part.profiles
                written["unchanged"] += part.unchanged
                for stage, seconds in {**part.seconds, "write": time.perf_counter() - writing}.items():
                    timings[stage] = timings.get(stage, 0.0) + seconds
        connection.exec_driver_sql('DELETE FROM "profile_build"')
        connection.execute(TABLES["profile_build"].insert().values(
            built_at=utc_now(), rules_fingerprint=fingerprint, mode=FULL if full else INCREMENTAL,
            profiles_built=written["profiles"]))
    timings["total"] = time.perf_counter() - started
    return ProfileReport(warehouse.count("golden_profile"), written["profiles"] - written["unchanged"],
                         warehouse.count("profile_contact_points"), warehouse.count("profile_attribute_provenance"),
                         warehouse.count("profile_insights"), written["events"], timings,
                         FULL if full else INCREMENTAL, written["profiles"], len(parts))


def _delete_profiles(connection: sa.Connection, scope: list[str] | None) -> None:
    """Delete the profile rows of the IDs in `scope` (None: of every ID)."""
    if scope is not None:
        _fill_scope(connection, scope)
    where = "" if scope is None else f" WHERE c360_id IN (SELECT c360_id FROM {SCOPE_TABLE})"
    for table in PART_TABLES:
        connection.exec_driver_sql(f'DELETE FROM "{table}"{where}')


def _record_reads(connection: sa.Connection, scoped: bool) -> None:
    """Record which person records and engagement rows, at which batch, the profiles are built from (of the
    people in `profile_scope` when `scoped`): what the next build's `affected_ids` compares with. Made by the
    database from the same rows the parts read, in key order, which is how those lookups go."""
    where = f" WHERE x.c360_id IN (SELECT c360_id FROM {SCOPE_TABLE})" if scoped else ""
    connection.exec_driver_sql(
        "INSERT INTO profile_membership (source, source_record_id, batch_id, c360_id) "
        "SELECT x.source, x.source_record_id, i.batch_id, x.c360_id FROM xref x "
        "JOIN individual i ON i.source = x.source AND i.source_record_id = x.source_record_id "
        f"JOIN batch b ON b.source = i.source AND b.batch_id = i.batch_id{where} ORDER BY x.source, x.source_record_id")
    connection.exec_driver_sql(
        "INSERT INTO profile_engagement_seen (source, engagement_id, batch_id, c360_id) "
        "SELECT e.source, e.engagement_id, e.batch_id, x.c360_id FROM xref x "
        f"JOIN engagement e ON e.person_source = x.source AND e.person_record_id = x.source_record_id{where} "
        "ORDER BY e.source, e.engagement_id")


def _write_part(warehouse: WarehouseResource, connection: sa.Connection, part: BuiltPart) -> int:
    """Insert one part's rows and append its events; returns how many events."""
    for table, frame in part.frames.items():
        warehouse.insert_rows(table, frame[columns_of(MODELS[table])], connection)
    return append_events(warehouse, connection, part.events)


# ----------------------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class BuildInputs:
    """What every part of one build shares, read once and handed to each worker once."""

    url: str
    config: C360Config
    population: dict[str, pd.Series]
    ids: pd.DataFrame  # c360_id, status, merged_into of merged IDs and the IDs they were merged into
    splits: pd.DataFrame  # c360_id, related
    now: dt.datetime


@dataclass
class BuiltPart:
    """The rows of one part's profiles for each table, its change events (without seq) and what it took."""

    frames: dict[str, pd.DataFrame]
    events: pd.DataFrame
    profiles: int
    unchanged: int
    seconds: dict[str, float]


def build_inputs(warehouse: WarehouseResource, config: C360Config, now: dt.datetime) -> BuildInputs:
    """What every part needs besides its own people: merge and split history, and the spelling population."""
    with warehouse.engine.connect() as connection:
        # only merged IDs and what they point at: the events need nothing else, and every part gets a copy
        ids = read_sql(connection, "SELECT c360_id, status, merged_into FROM ids WHERE status = 'merged' "
                                   "OR c360_id IN (SELECT merged_into FROM ids WHERE status = 'merged')")
        splits = read_sql(connection, "SELECT c360_id, related FROM id_change WHERE change = 'split'")
        population = spelling_population(read_spellings(connection))
    return BuildInputs(warehouse.url, config, population, ids, splits, now)


def every_profile_id(connection: sa.Connection) -> list[str]:
    """Every 360 ID with records, and every ID that has a profile now (which may have to go)."""
    found = connection.exec_driver_sql("SELECT c360_id FROM xref UNION SELECT c360_id FROM golden_profile")
    return sorted(row[0] for row in found)


def build_parts(scope: list[str], ids: pd.DataFrame, splits: pd.DataFrame, part_people: int) -> list[list[str]]:
    """The IDs to build, cut into parts of about `part_people`. A merged ID goes with its survivor and a split's
    pieces with the ID that split, because the merged and split events are read off both sides at once."""
    anchors = event_anchors(scope, ids, splits)
    ordered = scope if all(a <= b for a, b in itertools.pairwise(scope)) else sorted(scope)
    # Nearly every ID is its own anchor, and those are in order already: only the few others need sorting.
    own = ((c360_id, c360_id) for c360_id in ordered if anchors[c360_id] == c360_id)
    moved = sorted((anchors[c360_id], c360_id) for c360_id in ordered if anchors[c360_id] != c360_id)
    parts: list[list[str]] = [[]]
    previous = None
    for anchor, c360_id in heapq.merge(own, moved):
        if len(parts[-1]) >= part_people and anchor != previous:
            parts.append([])
        parts[-1].append(c360_id)
        previous = anchor
    return [part for part in parts if part]


@contextmanager
def _worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """`workers` processes, started at once (None for one: parts are then built here)."""
    if workers <= 1:
        yield None
        return
    # spawn, not fork: the parent holds database connections and, under Dagster, threads
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
    try:
        for _ in range(workers):
            pool.submit(_started)  # the executor starts a process only for a task no idle one can take
        yield pool
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # idle workers exit on their own: 0.5 s not waited for


def _exit_with_parent(parent: int) -> None:
    """Worker start-up: end this process once the one that started it is gone. A killed build (kill -9, the
    out-of-memory killer, a run terminated by force) otherwise left its workers waiting for work forever, each
    holding a part's worth of memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _started() -> None:
    """Nothing: the worker has imported this module, and with it everything a part needs, by the time it runs."""


def built_parts(inputs: BuildInputs, parts: list[list[str]], pool: ProcessPoolExecutor | None, workers: int,
                meanwhile: Callable[[], None] = lambda: None) -> Iterator[BuiltPart]:
    """Each part built, in order: here without a pool or for a single part, else by the pool's `workers`, at
    most one part each ahead of the writer so finished parts do not pile up in memory. `meanwhile` runs while
    the first parts are being built: two for each worker, which keeps them busy through it (with one each, they
    sat idle for half of the 1M build's 3.5 s record of reads)."""
    if pool is None or len(parts) <= 1:
        meanwhile()
        yield from (build_part(inputs, part) for part in parts)
        return
    waiting: deque[Future[BuiltPart]] = deque()
    remaining = iter(parts)
    for part in itertools.islice(remaining, 2 * workers):
        waiting.append(pool.submit(build_part, inputs, part))  # the inputs are small: 0.6 MB at 1M records
    meanwhile()
    for part in remaining:
        waiting.append(pool.submit(build_part, inputs, part))
        while len(waiting) > workers:
            yield waiting.popleft().result()
    while waiting:
        yield waiting.popleft().result()


def build_part(inputs: BuildInputs, part: list[str]) -> BuiltPart:
    """Read, build and diff the profiles of the 360 IDs in `part` (against their published state)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    config = inputs.config
    with WarehouseResource(url=inputs.url).engine.connect() as reader:
        _fill_scope(reader, part)
        data, engagement = load_profile_input(reader, scoped=True)
        before = published_state(reader, scoped=True)
        reader.rollback()  # the temporary table stays; the read transaction ends
    seconds["read"] = time.perf_counter() - started
    started = time.perf_counter()
    placeholders = frozenset(value.lower() for value in config.match.junk_values)
    built = survive(data, rules_from(config), config.source_order, placeholders, config.profile.ignore_empty,
                    inputs.population)
    insights = compute_insights(engagement, parse_insights(config.profile.all_insights))
    golden = _with_engagement_span(built.golden, engagement)
    golden["profile_hash"] = golden["c360_id"].map(content_hashes(golden, built.contact_points, insights))
    previous = before.golden[["c360_id", "profile_hash", "last_changed"]]
    golden["last_changed"] = _last_changed(golden, previous, inputs.now)
    seconds["build"] = time.perf_counter() - started
    started = time.perf_counter()
    after = ProfileState(golden, insights, built.contact_points[["c360_id", "kind", "value"]])
    events = profile_events(before, after, inputs.ids, inputs.splits, config, inputs.now)
    seconds["events"] = time.perf_counter() - started
    unchanged = int((golden["c360_id"].map(previous.set_index("c360_id")["profile_hash"])
                     == golden["profile_hash"]).sum())
    frames = {"golden_profile": golden, "profile_contact_points": built.contact_points,
              "profile_attribute_provenance": built.provenance, "profile_insights": insights}
    return BuiltPart(frames, events, len(golden), unchanged, seconds)


def last_fingerprint(warehouse: WarehouseResource) -> str | None:
    """The rules fingerprint of the last build (None before the first)."""
    with warehouse.engine.connect() as connection:
        return connection.execute(sa.select(TABLES["profile_build"].c.rules_fingerprint)).scalar()


def affected_ids(connection: sa.Connection) -> list[str]:
    """The 360 IDs whose profile may differ from the one built last, found by comparing today's xref, person
    records and engagement with what the last build read: people who gained, lost or swapped a record, whose
    record has a newer version, or whose engagement changed; profiles of IDs no longer active; active IDs
    without a profile. No clocks are compared, so a batch staged in the middle of a build is never missed."""
    found = connection.execute(sa.text("""
        SELECT x.c360_id FROM xref x
          JOIN individual i ON i.source = x.source AND i.source_record_id = x.source_record_id
          LEFT JOIN profile_membership m ON m.source = x.source AND m.source_record_id = x.source_record_id
          WHERE m.c360_id IS NULL OR m.c360_id <> x.c360_id OR m.batch_id <> i.batch_id
        UNION
        SELECT m.c360_id FROM profile_membership m
          LEFT JOIN xref x ON x.source = m.source AND x.source_record_id = m.source_record_id
          LEFT JOIN individual i ON i.source = m.source AND i.source_record_id = m.source_record_id
          WHERE x.c360_id IS NULL OR x.c360_id <> m.c360_id OR i.batch_id IS NULL OR i.batch_id <> m.batch_id
        UNION
        SELECT x.c360_id FROM engagement e
          JOIN xref x ON x.source = e.person_source AND x.source_record_id = e.person_record_id
          LEFT JOIN profile_engagement_seen s ON s.source = e.source AND s.engagement_id = e.engagement_id
          WHERE s.c360_id IS NULL OR s.c360_id <> x.c360_id OR s.batch_id <> e.batch_id
        UNION
        SELECT s.c360_id FROM profile_engagement_seen s
          LEFT JOIN engagement e ON e.source = s.source AND e.engagement_id = s.engagement_id
          WHERE e.batch_id IS NULL OR e.batch_id <> s.batch_id
        UNION
        SELECT g.c360_id FROM golden_profile g LEFT JOIN ids i ON i.c360_id = g.c360_id
          WHERE i.status IS NULL OR i.status <> 'active'
        UNION
        SELECT i.c360_id FROM ids i LEFT JOIN golden_profile g ON g.c360_id = i.c360_id
          WHERE i.status = 'active' AND g.c360_id IS NULL"""))
    return sorted(row[0] for row in found)


SPELLING_PARTS: tuple[tuple[str, str | None], ...] = (
    ("first_name", "first_name_norm"), ("middle_name", None), ("last_name", "last_name_norm"), ("name_suffix", None))


def read_spellings(connection: sa.Connection,
                   parts: tuple[tuple[str, str | None], ...] = SPELLING_PARTS) -> pd.DataFrame:
    """Every spelling of each name part (with its folded form where standardising made one) across all person
    records, with how many records carry it (grouped in the database, so this stays small however many records
    there are)."""
    selects = [f"SELECT '{part}' AS attribute, {part} AS value, {norm or 'NULL'} AS norm, COUNT(*) AS records "
               f"FROM individual WHERE {part} IS NOT NULL GROUP BY {part}{', ' + norm if norm else ''}"
               for part, norm in parts]
    return read_sql(connection, " UNION ALL ".join(selects))


def _fill_scope(connection: sa.Connection, ids: list[str]) -> None:
    fill_temporary_table(connection, SCOPE_TABLE, pd.DataFrame({"c360_id": ids}, dtype=object), key="c360_id")


def published_state(source: WarehouseResource | sa.Connection, scoped: bool = False) -> ProfileState:
    """The profiles as last built (with `scoped`, those listed in `profile_scope`): what events are computed against."""
    if isinstance(source, WarehouseResource):
        with source.engine.connect() as connection:
            return published_state(connection, scoped)
    where = f" WHERE c360_id IN (SELECT c360_id FROM {SCOPE_TABLE})" if scoped else ""
    table = TABLES["golden_profile"]
    statement = sa.select(table)  # typed: times come back as datetimes on SQLite too
    if scoped:
        statement = statement.where(table.c.c360_id.in_(sa.select(sa.table(SCOPE_TABLE, sa.column("c360_id")))))
    golden = pd.read_sql(statement, source)
    if golden.empty:
        return ProfileState.empty()
    insights = read_sql(source, f"SELECT c360_id, insight, value, number FROM profile_insights{where}")
    return ProfileState(golden, insights, read_sql(source, f"SELECT c360_id, kind, value FROM profile_contact_points{where}"))


def _with_engagement_span(golden: pd.DataFrame, engagement: pd.DataFrame) -> pd.DataFrame:
    """Widen first_seen and last_seen with the person's engagement times."""
    occurred = pd.to_datetime(engagement["occurred_at"]).to_numpy(dtype="datetime64[ns]")
    person = pd.Index(golden["c360_id"]).get_indexer(engagement["c360_id"])
    earliest = np.full(len(golden), np.datetime64("NaT"), dtype="datetime64[ns]")
    latest = earliest.copy()
    known = (person >= 0) & ~np.isnat(occurred)
    # per person: the engagement times sorted, so the first and last of each run are its min and max
    order = np.lexsort((occurred[known], person[known]))
    people, times = person[known][order], occurred[known][order]
    if len(people):
        starts = np.flatnonzero(np.r_[True, people[1:] != people[:-1]])
        ends = np.r_[starts[1:], len(people)] - 1
        earliest[people[starts]], latest[people[ends]] = times[starts], times[ends]
    golden = golden.copy()
    # fmin and fmax skip a missing time on either side. cache=False: the columns are times already, and deciding
    # whether to cache made pandas turn thousands of them into Timestamp objects (2% of building a part)
    golden["first_seen"] = np.fmin(_datetime64(golden["first_seen"]), earliest)
    golden["last_seen"] = np.fmax(_datetime64(golden["last_seen"]), latest)
    return golden


def _datetime64(times: pd.Series) -> np.ndarray:
    return pd.to_datetime(times, cache=False).to_numpy(dtype="datetime64[ns]")


def _last_changed(golden: pd.DataFrame, previous: pd.DataFrame, now: dt.datetime) -> pd.Series:
    kept = previous.set_index("c360_id")
    same = golden["c360_id"].map(kept["profile_hash"]) == golden["profile_hash"]
    before = pd.to_datetime(golden["c360_id"].map(kept["last_changed"]))
    return before.where(same, pd.Timestamp(now))


# ------------------------------------------------------------------------------------------- export

_CONTACT_FIELDS = ["kind", "value", "is_primary", "status", "detail", "sources", "first_seen", "last_seen"]


def _export_schema() -> pa.Schema:
    from c360_pipelines.model import GoldenProfile, _base_type

    arrow_types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(),
                   dt.date: pa.date32(), dt.datetime: pa.timestamp("us")}
    fields = [pa.field(name, arrow_types[_base_type(info.annotation)])
              for name, info in GoldenProfile.model_fields.items()]
    contact = pa.struct([pa.field(name, pa.bool_() if name == "is_primary" else
                                  pa.timestamp("us") if name.endswith("_seen") else pa.string())
                         for name in _CONTACT_FIELDS])
    return pa.schema([*fields, pa.field("contact_points", pa.list_(contact)),
                      pa.field("insights", pa.map_(pa.string(), pa.string()))])


def export_profiles(warehouse: WarehouseResource, output: Path, chunk_rows: int = 50_000) -> int:
    """Write every golden profile with its contact points and insights nested in it (.jsonl or .parquet)."""
    schema = _export_schema()
    writer: pq.ParquetWriter | None = None
    rows = 0
    with open(output, "w", encoding="utf-8") if output.suffix == ".jsonl" else nullcontext() as text_out:
        for chunk in _profile_chunks(warehouse, chunk_rows):
            rows += len(chunk)
            if text_out is not None:
                for record in chunk:
                    text_out.write(json.dumps(record, ensure_ascii=False, default=_iso) + "\n")
                continue
            table = pa.Table.from_pylist(
                [{**r, "insights": list(r["insights"].items())} for r in chunk], schema=schema)
            writer = writer or pq.ParquetWriter(output, schema)
            writer.write_table(table)
    if output.suffix == ".parquet":
        if writer is None:
            pq.write_table(schema.empty_table(), output)
        else:
            writer.close()
    return rows


def _profile_chunks(warehouse: WarehouseResource, chunk_rows: int) -> Iterator[list[dict[str, Any]]]:
    """Profiles in c360_id order, a chunk at a time, each with its contact points and insights (typed values)."""
    golden_table, points_table = TABLES["golden_profile"], TABLES["profile_contact_points"]
    insights_table = TABLES["profile_insights"]
    after = ""
    while True:
        golden = _typed_rows(warehouse, sa.select(golden_table).where(golden_table.c.c360_id > after)
                             .order_by(golden_table.c.c360_id).limit(chunk_rows))
        if not golden:
            return
        first, last = golden[0]["c360_id"], golden[-1]["c360_id"]
        points = _typed_rows(warehouse, sa.select(points_table).where(points_table.c.c360_id.between(first, last))
                             .order_by(points_table.c.c360_id, points_table.c.kind, points_table.c.is_primary.desc(),
                                       points_table.c.value))
        insights = _typed_rows(warehouse, sa.select(insights_table).where(insights_table.c.c360_id.between(first, last)))
        nested_points: dict[str, list[dict[str, Any]]] = {}
        for point in points:
            nested_points.setdefault(point["c360_id"], []).append({f: point[f] for f in _CONTACT_FIELDS})
        nested_insights: dict[str, dict[str, Any]] = {}
        for insight in insights:
            nested_insights.setdefault(insight["c360_id"], {})[insight["insight"]] = insight["value"]
        yield [{**row, "contact_points": nested_points.get(row["c360_id"], []),
                "insights": nested_insights.get(row["c360_id"], {})} for row in golden]
        after = last


def _typed_rows(warehouse: WarehouseResource, statement: sa.Select[Any]) -> list[dict[str, Any]]:
    with warehouse.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(statement)]


def _iso(value: Any) -> str:
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)
