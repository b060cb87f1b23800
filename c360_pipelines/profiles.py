"""Golden profiles over the warehouse: read each person's records, apply the profile rules, write four tables.

`build_profiles` reads the canonical tables through `xref`, runs the core's survivorship and insights, and
replaces `golden_profile`, `profile_contact_points`, `profile_attribute_provenance` and `profile_insights` in
one transaction. A profile keeps its `last_changed` time when its content fingerprint is unchanged, so a rerun
on the same data changes nothing. Reading one profile is `lookup.Customer360.profile`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from c360_pipelines.config import C360Config
from c360_pipelines.core.events import ProfileState
from c360_pipelines.core.insights import compute_insights, parse_insights
from c360_pipelines.events import record_profile_events
from c360_pipelines.core.survive import (
    ProfileInput, Rule, build_profiles as survive, content_hashes,
)
from c360_pipelines.ingest import utc_now
from c360_pipelines.model import PROFILE_MODELS, TABLES, columns_of
from resources.warehouse import WarehouseResource

PROFILE_TABLES = tuple(PROFILE_MODELS)


@dataclass(frozen=True)
class ProfileReport:
    profiles: int
    changed: int
    contact_points: int
    provenance_rows: int
    insight_rows: int
    events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def rules_from(config: C360Config) -> dict[str, Rule]:
    from c360_pipelines.config import PROFILE_ATTRIBUTES

    return {name: Rule(rule.strategy, rule.sources) for name in PROFILE_ATTRIBUTES
            for rule in [config.profile.strategy_for(name)]}


def load_profile_input(warehouse: WarehouseResource) -> tuple[ProfileInput, pd.DataFrame]:
    """Every person record, contact point and engagement row, each with its c360_id and recency."""
    records = warehouse.read_frame(
        "SELECT x.c360_id, i.source, i.source_record_id, i.updated_at, b.extracted_at, i.first_name, "
        "i.middle_name, i.last_name, i.name_suffix, i.first_name_norm, i.last_name_norm, i.birth_date, i.gender "
        "FROM individual i JOIN xref x ON x.source = i.source AND x.source_record_id = i.source_record_id "
        "JOIN batch b ON b.source = i.source AND b.batch_id = i.batch_id")
    keys = records[["source", "source_record_id", "c360_id", "updated_at", "extracted_at"]]

    def with_keys(sql: str) -> pd.DataFrame:
        return warehouse.read_frame(sql).merge(keys, on=["source", "source_record_id"], how="inner")

    emails = with_keys("SELECT source, source_record_id, email_raw, email, email_key, domain, is_valid "
                       "FROM contact_point_email")
    phones = with_keys("SELECT source, source_record_id, phone_raw, phone_e164, phone_type, is_valid "
                       "FROM contact_point_phone")
    addresses = with_keys("SELECT source, source_record_id, address_raw, line1, line2, city, region, postal_code, "
                          "country, is_parsed FROM contact_point_address")
    engagement = warehouse.read_frame(
        "SELECT x.c360_id, e.source, e.engagement_type, e.amount, e.currency, e.channel, e.status, e.occurred_at "
        "FROM engagement e JOIN xref x ON x.source = e.person_source AND x.source_record_id = e.person_record_id")
    return ProfileInput(records, emails, phones, addresses), engagement


def build_profiles(warehouse: WarehouseResource, config: C360Config, now: dt.datetime | None = None) -> ProfileReport:
    """Rebuild every golden profile and its contact points, provenance and insights; returns what was done."""
    import time

    timings: dict[str, float] = {}
    started = time.perf_counter()
    data, engagement = load_profile_input(warehouse)
    timings["read"] = time.perf_counter() - started
    started = time.perf_counter()
    placeholders = frozenset(value.lower() for value in config.match.junk_values)
    built = survive(data, rules_from(config), config.source_order, placeholders, config.profile.ignore_empty)
    insights = compute_insights(engagement, parse_insights(config.profile.all_insights))
    golden = _with_engagement_span(built.golden, engagement)
    golden["profile_hash"] = golden["c360_id"].map(content_hashes(golden, built.contact_points, insights))
    now = now or utc_now()
    before = published_state(warehouse)
    previous = before.golden[["c360_id", "profile_hash", "last_changed"]]
    golden["last_changed"] = _last_changed(golden, previous, now)
    after = ProfileState(golden, insights, built.contact_points[["c360_id", "kind", "value"]])
    timings["build"] = time.perf_counter() - started
    started = time.perf_counter()
    frames = {"golden_profile": golden, "profile_contact_points": built.contact_points,
              "profile_attribute_provenance": built.provenance, "profile_insights": insights}
    with warehouse.transaction() as connection:
        for table, frame in frames.items():
            connection.exec_driver_sql(f'DELETE FROM "{table}"')
            warehouse.insert_rows(table, frame[columns_of(PROFILE_MODELS[table])], connection)
        events = record_profile_events(warehouse, connection, before, after, config, now)
    timings["write"] = time.perf_counter() - started
    unchanged = golden.merge(previous, on=["c360_id", "profile_hash"], how="inner")
    return ProfileReport(len(golden), len(golden) - len(unchanged), len(built.contact_points), len(built.provenance),
                         len(insights), events, timings)


def published_state(warehouse: WarehouseResource) -> ProfileState:
    """The profiles as last built: what change events are computed against."""
    golden = warehouse.read_frame(sa.select(TABLES["golden_profile"]))
    if golden.empty:
        return ProfileState.empty()
    return ProfileState(golden, warehouse.read_frame("SELECT c360_id, insight, value, number FROM profile_insights"),
                        warehouse.read_frame("SELECT c360_id, kind, value FROM profile_contact_points"))


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
