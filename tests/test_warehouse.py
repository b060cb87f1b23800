"""The warehouse resource: bulk writes that leave each backend ready to answer indexed lookups."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from c360_pipelines.model import TABLES
from resources.warehouse import ANALYZE_AFTER_ROWS, WarehouseResource, indexes_rebuilt_after


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
