"""Dagster's own instance storage on PostgreSQL, with the dagster.yaml documented in docs/."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from c360_pipelines.config import C360Config
from c360_pipelines.runner import run_pipeline

pytestmark = pytest.mark.postgres


@pytest.fixture
def postgres_instance(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    url = sa.make_url(postgres_url)
    monkeypatch.setenv("C360_DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("C360_DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("C360_DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("C360_DAGSTER_PG_DB", url.database or "")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[1] / "docs" / "dagster.postgres.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_runs_and_partitions_are_stored_in_postgres(crm_project: C360Config, postgres_instance: dg.DagsterInstance,
                                                   postgres_url: str) -> None:
    assert type(postgres_instance.run_storage).__name__ == "PostgresRunStorage"
    run_pipeline(crm_project, postgres_instance)
    assert postgres_instance.get_dynamic_partitions("crm_batches") == ["data/crm/batch_1.csv"]
    with sa.create_engine(postgres_url).connect() as connection:
        runs = connection.execute(sa.text("SELECT COUNT(*) FROM runs")).scalar_one()
    assert runs == 4  # the batch, the conformed tables, identity, then profiles
    assert os.environ["C360_DAGSTER_PG_DB"] in postgres_url
