"""The warehouse resource: bulk writes that leave each backend ready to answer indexed lookups."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from c360_pipelines.model import MODELS, TABLES, columns_of
from resources.warehouse import (
    ANALYZE_AFTER_ROWS,
    SQLITE_STATEMENT_PARAMETERS,
    WarehouseResource,
    indexes_rebuilt_after,
)


def xref_rows(count: int) -> pd.DataFrame:
    return pd.DataFrame({"source": "crm", "source_record_id": [str(n) for n in range(count)],
                         "c360_id": [f"c360_{n // 2:016x}" for n in range(count)], "evidence": "single record"})


@pytest.mark.postgres
def test_a_bulk_insert_on_postgres_leaves_planner_statistics_so_lookups_use_the_index(postgres_url: str) -> None:
    warehouse = WarehouseResource(url=postgres_url)
    warehouse.ensure_tables()
    with warehouse.transaction() as connection:
        warehouse.insert_rows("xref", xref_rows(ANALYZE_AFTER_ROWS * 5), connection)
    distinct = warehouse.scalar("SELECT n_distinct FROM pg_stats WHERE tablename = 'xref' AND attname = 'c360_id'")
    assert distinct is not None
    plan = warehouse.read_frame("EXPLAIN SELECT * FROM xref WHERE c360_id = 'c360_0000000000000007'")
    assert "Index" in " ".join(plan.iloc[:, 0]) and "Gather" not in " ".join(plan.iloc[:, 0])


def test_a_small_insert_writes_its_rows_without_further_work(warehouse_url: str) -> None:
    warehouse = WarehouseResource(url=warehouse_url)
    warehouse.ensure_tables()
    with warehouse.transaction() as connection:
        assert warehouse.insert_rows("xref", xref_rows(10), connection) == 10
    assert warehouse.count("xref") == 10


# rows of profile_contact_points that one INSERT takes on SQLite, and counts around it
ROWS_PER_STATEMENT = SQLITE_STATEMENT_PARAMETERS // len(columns_of(MODELS["profile_contact_points"]))


@pytest.mark.parametrize("count", [1, ROWS_PER_STATEMENT - 1, ROWS_PER_STATEMENT, ROWS_PER_STATEMENT + 1,
                                   2 * ROWS_PER_STATEMENT + 7])
def test_a_bulk_insert_stores_every_row_and_value_however_the_rows_fall_into_statements(
        warehouse_url: str, count: int) -> None:
    warehouse = WarehouseResource(url=warehouse_url)
    warehouse.ensure_tables()
    seen = pd.Timestamp("2024-05-01 10:00:00")
    points = pd.DataFrame({
        "c360_id": [f"c360_{n:06d}" for n in range(count)], "kind": "email",
        "value": [f"person{n}@example.com" for n in range(count)], "value_key": [f"person{n}" for n in range(count)],
        "status": "ok", "detail": [None if n % 3 else "example.com" for n in range(count)],
        "is_primary": [n % 2 == 0 for n in range(count)], "sources": "crm", "records": [f"crm:{n}" for n in range(count)],
        "first_seen": [seen + pd.Timedelta(seconds=n) for n in range(count)],
        "last_seen": [pd.NaT if n % 4 == 0 else seen + pd.Timedelta(days=1, microseconds=n) for n in range(count)]})
    with warehouse.transaction() as connection:
        assert warehouse.insert_rows("profile_contact_points", points, connection) == count
    stored = pd.read_sql(sa.select(TABLES["profile_contact_points"]).order_by("c360_id"), warehouse.engine)
    assert stored["c360_id"].tolist() == points["c360_id"].tolist()
    assert stored["detail"].where(stored["detail"].notna(), None).tolist() == points["detail"].tolist()
    assert stored["is_primary"].astype(bool).tolist() == points["is_primary"].tolist()
    assert pd.to_datetime(stored["first_seen"]).tolist() == points["first_seen"].tolist()
    last_seen = [None if pd.isna(t) else pd.Timestamp(t).to_pydatetime() for t in stored["last_seen"]]
    assert last_seen == [None if pd.isna(t) else t.to_pydatetime() for t in points["last_seen"]]
    assert all(isinstance(t, dt.datetime) for t in last_seen if t is not None)


def test_an_index_added_in_a_later_version_is_created_on_an_existing_warehouse(warehouse_url: str) -> None:
    warehouse = WarehouseResource(url=warehouse_url)
    warehouse.ensure_tables()
    with warehouse.transaction() as connection:
        connection.exec_driver_sql("DROP INDEX ix_event_delivery__subscriber__seq")
    warehouse.ensure_tables()
    with warehouse.engine.connect() as connection:
        names = {index["name"] for index in sa.inspect(connection).get_indexes("event_delivery")}
    assert "ix_event_delivery__subscriber__seq" in names


def test_indexes_dropped_for_a_bulk_load_are_built_again_and_the_page_cache_is_as_before(tmp_path: Path) -> None:
    warehouse = WarehouseResource(url=f"sqlite:///{tmp_path / 'warehouse.db'}")
    warehouse.ensure_tables()

    def indexes(connection: sa.Connection) -> set[str]:
        return {row[0] for row in connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'golden_profile'")}

    with warehouse.transaction() as connection:
        cache = connection.exec_driver_sql("PRAGMA cache_size").scalar()
        with indexes_rebuilt_after(connection, ["golden_profile"]):
            assert indexes(connection) == set()
        assert indexes(connection) == {index.name for index in TABLES["golden_profile"].indexes}
        assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == cache
