"""The three ingestion steps, as plain functions over a source reader and the warehouse.

`land_batch` reads one batch and lands its rows as sent (`raw_record`), `stage_landed_batch` maps the landed
rows onto the canonical model (`staged_*`), and `rebuild_conformed` derives the canonical tables (the
current version of every source record) from everything staged. Each step replaces exactly what it wrote
before for the same batch, in one transaction, so running it twice leaves the same tables. The Dagster
assets are thin wrappers around these; they are also what the tests call directly.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json
import sqlalchemy as sa

from c360_pipelines.config import C360Config, SourceConfig
from c360_pipelines.core.conform import RAW_JSON, ROW_NUMBER, check_mapped_columns, stage_batch
from c360_pipelines.core.standardise import TEXT
from c360_pipelines.model import CANONICAL_MODELS, PERSON_TABLES, TABLES, columns_of, staged_table_name
from resources.sources import RawBatch, reader_for
from resources.warehouse import WarehouseResource, indexes_rebuilt_after


@dataclass(frozen=True)
class LandingReport:
    source: str
    batch_id: str
    rows_read: int
    rows_landed: int
    rows_unreadable: int
    fingerprint: str


@dataclass(frozen=True)
class StagingReport:
    source: str
    batch_id: str
    rows_landed: int
    rows_staged: int
    rows_quarantined: int
    table_rows: dict[str, int]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def land_batch(config: C360Config, source: SourceConfig, batch_id: str, warehouse: WarehouseResource) -> LandingReport:
    """Read one batch and land it: readable rows in `raw_record`, unreadable ones in `quarantine`."""
    reader = reader_for(config, source)
    offered = {ref.batch_id: ref for ref in reader.discover()}
    batch = reader.read(batch_id)
    location = offered[batch_id].location if batch_id in offered else batch_id
    fingerprint = offered[batch_id].fingerprint if batch_id in offered else ""
    if len(batch.rows):
        check_mapped_columns(source, batch.columns, location)
    now = utc_now()
    raw_rows = _raw_record_rows(source.name, batch_id, batch)
    unreadable = pd.DataFrame(
        {
            "source": source.name,
            "batch_id": batch_id,
            "row_number": pd.array([u.row_number for u in batch.unreadable], dtype="Int64"),
            "stage": "extract",
            "reason": [u.reason for u in batch.unreadable],
            "raw": [u.text for u in batch.unreadable],
            "quarantined_at": now,
        }
    )
    batch_key = {"source": source.name, "batch_id": batch_id}
    with warehouse.transaction() as connection:
        seq = _batch_seq(connection, source.name, batch_id)
        warehouse.replace_rows("raw_record", raw_rows, batch_key, connection)
        warehouse.replace_rows("quarantine", unreadable, {**batch_key, "stage": "extract"}, connection)
        ledger = pd.DataFrame(
            [{**batch_key, "seq": seq, "location": location, "fingerprint": fingerprint,
              "rows_read": batch.rows_read, "rows_landed": len(raw_rows), "extracted_at": now}]
        )
        warehouse.replace_rows("batch", ledger, batch_key, connection)
    return LandingReport(source.name, batch_id, batch.rows_read, len(raw_rows), len(batch.unreadable), fingerprint)


def _raw_record_rows(source: str, batch_id: str, batch: RawBatch) -> pd.DataFrame:
    values = batch.rows.drop(columns=[ROW_NUMBER])
    records = (
        values.to_json(orient="records", lines=True, force_ascii=False).splitlines() if len(values) else []
    )
    return pd.DataFrame(
        {"source": source, "batch_id": batch_id, "row_number": batch.rows[ROW_NUMBER].to_numpy(), "record": records}
    )


def _batch_seq(connection: sa.Connection, source: str, batch_id: str) -> int:
    """A batch keeps its arrival order when it is landed again; a new one comes after every other."""
    batch = TABLES["batch"]
    existing = connection.execute(
        sa.select(batch.c.seq).where(batch.c.source == source, batch.c.batch_id == batch_id)
    ).scalar()
    if existing is not None:
        return int(existing)
    latest = connection.execute(sa.select(sa.func.max(batch.c.seq)).where(batch.c.source == source)).scalar()
    return int(latest or 0) + 1


def read_landed_rows(warehouse: WarehouseResource, source: str, batch_id: str) -> pd.DataFrame:
    """The landed rows of a batch as text columns, with `_row_number` and `_raw` (the row's JSON)."""
    raw = TABLES["raw_record"]
    statement = (
        sa.select(raw.c.row_number, raw.c.record)
        .where(raw.c.source == source, raw.c.batch_id == batch_id)
        .order_by(raw.c.row_number)
    )
    with warehouse.engine.connect() as connection:
        landed = connection.execute(statement).all()
    numbers = [number for number, _ in landed]
    records = [record for _, record in landed]
    rows = _records_to_frame(records)
    rows[ROW_NUMBER] = numbers
    rows[RAW_JSON] = pd.array(records, dtype=TEXT)
    return rows


def _records_to_frame(records: list[str]) -> pd.DataFrame:
    """Parse JSON-object rows (all values text) with Arrow's reader; keys missing from a row read as ''."""
    if not records:
        return pd.DataFrame()
    columns = list(dict.fromkeys(key for record in records[:1000] for key in json.loads(record)))
    schema = pa.schema([(column, pa.string()) for column in columns])
    table = pa_json.read_json(
        io.BytesIO("\n".join(records).encode("utf-8")),
        read_options=pa_json.ReadOptions(block_size=1 << 24),
        parse_options=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
    )
    return table.to_pandas(types_mapper=lambda _: TEXT).fillna("")


def stage_landed_batch(source: SourceConfig, batch_id: str, warehouse: WarehouseResource) -> StagingReport:
    """Map a landed batch onto the canonical model, replacing whatever that batch staged before."""
    rows = read_landed_rows(warehouse, source.name, batch_id)
    if len(rows):
        check_mapped_columns(source, [c for c in rows.columns if not c.startswith("_")], f"batch {batch_id}")
    now = utc_now()
    staged = stage_batch(rows, source, batch_id, now)
    batch_key = {"source": source.name, "batch_id": batch_id}
    table_rows: dict[str, int] = {}
    with warehouse.transaction() as connection:
        for table, frame in staged.tables.items():
            table_rows[table] = warehouse.replace_rows(staged_table_name(table), frame, batch_key, connection)
        warehouse.replace_rows("quarantine", staged.quarantine, {**batch_key, "stage": "stage"}, connection)
        quarantined = connection.execute(
            sa.select(sa.func.count()).select_from(TABLES["quarantine"]).where(
                TABLES["quarantine"].c.source == source.name, TABLES["quarantine"].c.batch_id == batch_id
            )
        ).scalar_one()
        rows_staged = table_rows["engagement" if source.kind == "engagement" else "individual"]
        batch = TABLES["batch"]
        connection.execute(
            batch.update()
            .where(batch.c.source == source.name, batch.c.batch_id == batch_id)
            .values(rows_staged=rows_staged, rows_quarantined=quarantined, staged_at=now)
        )
    return StagingReport(source.name, batch_id, len(rows), rows_staged, int(quarantined), table_rows)


def rebuild_conformed(warehouse: WarehouseResource) -> dict[str, int]:
    """Rebuild every canonical table from the staged tables: the current version of each source record.

    The current version of a record is the one with the latest `updated_at`, then from the latest batch,
    then the last row; contact points and identifiers come with the version of the record they belong to.
    """
    counts: dict[str, int] = {}
    with warehouse.transaction() as connection:
        for table in CANONICAL_MODELS:
            connection.execute(TABLES[table].delete())
        # Whole tables are replaced, each table's indexes built once after its load; individual's first, as the
        # contact-point loads join on them.
        with indexes_rebuilt_after(connection, ["individual"]):
            connection.execute(sa.text(_latest_version_sql("individual", ("source", "source_record_id"),
                                                           "updated_at")))
        for table in PERSON_TABLES:
            if table != "individual":
                with indexes_rebuilt_after(connection, [table]):
                    connection.execute(sa.text(_belonging_to_current_individual_sql(table)))
        with indexes_rebuilt_after(connection, ["engagement"]):
            connection.execute(sa.text(_latest_version_sql("engagement", ("source", "engagement_id"),
                                                           "occurred_at")))
        for table in CANONICAL_MODELS:
            counts[table] = int(
                connection.execute(sa.select(sa.func.count()).select_from(TABLES[table])).scalar_one()
            )
    return counts


def _column_list(table: str, alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{c}"' for c in columns_of(CANONICAL_MODELS[table]))


def _latest_version_sql(table: str, key: tuple[str, ...], stamp: str) -> str:
    partition = ", ".join(f"s.{column}" for column in key)
    return f"""
        INSERT INTO {table} ({_column_list(table)})
        SELECT {_column_list(table)} FROM (
            SELECT {_column_list(table, "s")},
                   ROW_NUMBER() OVER (
                       PARTITION BY {partition}
                       ORDER BY (s.{stamp} IS NULL), s.{stamp} DESC, b.seq DESC, s.row_number DESC
                   ) AS version_rank
            FROM {staged_table_name(table)} s
            JOIN batch b ON b.source = s.source AND b.batch_id = s.batch_id
        ) ranked
        WHERE version_rank = 1
    """


def _belonging_to_current_individual_sql(table: str) -> str:
    return f"""
        INSERT INTO {table} ({_column_list(table)})
        SELECT {_column_list(table, "c")}
        FROM {staged_table_name(table)} c
        JOIN individual i ON i.source = c.source AND i.batch_id = c.batch_id AND i.row_number = c.row_number
    """
