"""Golden profiles over the warehouse: read each person's records, apply the profile rules, write four tables.

`build_profiles` reads the canonical tables through `xref`, runs the core's survivorship and insights, and
replaces `golden_profile`, `profile_contact_points`, `profile_attribute_provenance` and `profile_insights` in
one transaction. A profile keeps its `last_changed` time when its content fingerprint is unchanged, so a rerun
on the same data changes nothing. Reading one profile is `lookup.Customer360.profile`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from c360_pipelines import __version__
from c360_pipelines.config import C360Config
from c360_pipelines.core.events import ProfileState
from c360_pipelines.core.insights import compute_insights, parse_insights
from c360_pipelines.core.survive import (
    ProfileInput,
    Rule,
    content_hashes,
    spelling_population,
)
from c360_pipelines.core.survive import (
    build_profiles as survive,
)
from c360_pipelines.events import record_profile_events
from c360_pipelines.ingest import utc_now
from c360_pipelines.model import MODELS, PROFILE_MODELS, TABLES, columns_of
from resources.warehouse import WarehouseResource, fill_temporary_table, indexes_rebuilt_after, read_sql

PROFILE_TABLES = tuple(PROFILE_MODELS)


FULL, INCREMENTAL = "full", "incremental"
PROFILE_FORMAT = 3  # bump when a profile's content or fingerprint is computed differently: forces a full rebuild
SCOPE_TABLE = "profile_scope"


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
    only those of the people listed in the connection's temporary `profile_scope` table."""
    if isinstance(source, WarehouseResource):
        with source.engine.connect() as connection:
            return load_profile_input(connection, scoped)
    connection = source

    def read(sql: str) -> pd.DataFrame:
        return read_sql(connection, sql)

    in_scope = f" AND x.c360_id IN (SELECT c360_id FROM {SCOPE_TABLE})" if scoped else ""
    records = read(
        "SELECT x.c360_id, i.source, i.source_record_id, i.batch_id, i.updated_at, b.extracted_at, i.first_name, "
        "i.middle_name, i.last_name, i.name_suffix, i.first_name_norm, i.last_name_norm, i.birth_date, i.gender "
        "FROM individual i JOIN xref x ON x.source = i.source AND x.source_record_id = i.source_record_id "
        f"JOIN batch b ON b.source = i.source AND b.batch_id = i.batch_id WHERE 1 = 1{in_scope}")
    keys = records[["source", "source_record_id", "c360_id", "updated_at", "extracted_at"]]

    def with_keys(columns: str, table: str) -> pd.DataFrame:
        scope = (" JOIN xref x ON x.source = p.source AND x.source_record_id = p.source_record_id "
                 f"WHERE 1 = 1{in_scope}") if scoped else ""
        return read(f"SELECT p.source, p.source_record_id, {columns} FROM {table} p{scope}").merge(
            keys, on=["source", "source_record_id"], how="inner")

    emails = with_keys("p.email_raw, p.email, p.email_key, p.domain, p.is_valid", "contact_point_email")
    phones = with_keys("p.phone_raw, p.phone_e164, p.phone_type, p.is_valid", "contact_point_phone")
    addresses = with_keys("p.address_raw, p.line1, p.line2, p.city, p.region, p.postal_code, p.country, p.is_parsed",
                          "contact_point_address")
    engagement = read(
        "SELECT x.c360_id, e.source, e.engagement_id, e.batch_id, e.engagement_type, e.amount, e.currency, "
        "e.channel, e.status, e.occurred_at "
        "FROM engagement e JOIN xref x ON x.source = e.person_source AND x.source_record_id = e.person_record_id "
        f"WHERE 1 = 1{in_scope}")
    return ProfileInput(records, emails, phones, addresses), engagement


def build_profiles(warehouse: WarehouseResource, config: C360Config, now: dt.datetime | None = None,
                   full: bool = False) -> ProfileReport:
    """Bring the golden profiles, contact points, provenance and insights up to date; returns what was done.

    Only the profiles whose records, engagement or identity changed since the last build are rebuilt and
    rewritten; everything is rebuilt on the first build, when the rules changed, or with `full`.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    fingerprint = rules_fingerprint(config)
    full = full or last_fingerprint(warehouse) != fingerprint
    with warehouse.engine.connect() as reader:
        scope = None if full else affected_ids(reader)
        if scope is not None:
            _fill_scope(reader, scope)
        data, engagement = load_profile_input(reader, scoped=scope is not None)
        population = spelling_population(read_spellings(reader))
        before = published_state(reader, scoped=scope is not None)
    timings["read"] = time.perf_counter() - started
    started = time.perf_counter()
    placeholders = frozenset(value.lower() for value in config.match.junk_values)
    built = survive(data, rules_from(config), config.source_order, placeholders, config.profile.ignore_empty,
                    population)
    insights = compute_insights(engagement, parse_insights(config.profile.all_insights))
    golden = _with_engagement_span(built.golden, engagement)
    golden["profile_hash"] = golden["c360_id"].map(content_hashes(golden, built.contact_points, insights))
    now = now or utc_now()
    previous = before.golden[["c360_id", "profile_hash", "last_changed"]]
    golden["last_changed"] = _last_changed(golden, previous, now)
    after = ProfileState(golden, insights, built.contact_points[["c360_id", "kind", "value"]])
    membership = data.records[["source", "source_record_id", "batch_id", "c360_id"]]
    engagement_seen = engagement[["source", "engagement_id", "batch_id", "c360_id"]]
    timings["build"] = time.perf_counter() - started
    started = time.perf_counter()
    frames = {"golden_profile": golden, "profile_contact_points": built.contact_points,
              "profile_attribute_provenance": built.provenance, "profile_insights": insights,
              "profile_membership": membership, "profile_engagement_seen": engagement_seen}
    with warehouse.transaction() as connection:
        if scope is not None:
            _fill_scope(connection, scope)
        # a full build replaces whole tables: their indexes are built once, after the load
        with indexes_rebuilt_after(connection, frames if scope is None else []):
            for table, frame in frames.items():
                where = "" if scope is None else f" WHERE c360_id IN (SELECT c360_id FROM {SCOPE_TABLE})"
                connection.exec_driver_sql(f'DELETE FROM "{table}"{where}')
                warehouse.insert_rows(table, frame[columns_of(MODELS[table])], connection)
        events = record_profile_events(warehouse, connection, before, after, config, now)
        connection.exec_driver_sql('DELETE FROM "profile_build"')
        connection.execute(TABLES["profile_build"].insert().values(
            built_at=utc_now(), rules_fingerprint=fingerprint,
            mode=FULL if scope is None else INCREMENTAL, profiles_built=len(golden)))
    timings["write"] = time.perf_counter() - started
    unchanged = int((golden["c360_id"].map(previous.set_index("c360_id")["profile_hash"])
                     == golden["profile_hash"]).sum())
    return ProfileReport(warehouse.count("golden_profile"), len(golden) - unchanged,
                         warehouse.count("profile_contact_points"), warehouse.count("profile_attribute_provenance"),
                         warehouse.count("profile_insights"), events, timings,
                         FULL if scope is None else INCREMENTAL, len(golden))


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


def read_spellings(connection: sa.Connection) -> pd.DataFrame:
    """Every spelling of every name part across all person records, with how many records carry it (grouped in
    the database, so this stays small however many records there are)."""
    parts = [f"SELECT '{part}' AS attribute, {part} AS value, {norm} AS norm, COUNT(*) AS records FROM individual "
             f"WHERE {part} IS NOT NULL GROUP BY {part}{', ' + norm if norm != 'NULL' else ''}"
             for part, norm in (("first_name", "first_name_norm"), ("middle_name", "NULL"),
                                ("last_name", "last_name_norm"), ("name_suffix", "NULL"))]
    return read_sql(connection, " UNION ALL ".join(parts))


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
    occurred = pd.to_datetime(engagement["occurred_at"])
    span = occurred.groupby(engagement["c360_id"]).agg(["min", "max"])
    golden = golden.copy()
    first = golden["c360_id"].map(span["min"]) if len(span) else pd.Series(pd.NaT, index=golden.index)
    last = golden["c360_id"].map(span["max"]) if len(span) else pd.Series(pd.NaT, index=golden.index)
    golden["first_seen"] = pd.concat([pd.to_datetime(golden["first_seen"]), pd.to_datetime(first)], axis=1).min(axis=1)
    golden["last_seen"] = pd.concat([pd.to_datetime(golden["last_seen"]), pd.to_datetime(last)], axis=1).max(axis=1)
    return golden


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
