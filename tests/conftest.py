"""Shared fixtures: small projects written inline, and a warehouse on each backend.

Every test that takes `warehouse_url` runs twice: on a SQLite file in its tmp_path, and on a PostgreSQL
database created for that test alone (dropped afterwards). PostgreSQL comes from `C360_TEST_PG`, by
default the server at 127.0.0.1:5432; if it cannot be reached the Postgres tests fail rather than skip.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from c360_pipelines.config import C360Config, load_config

PG_ADMIN_URL = os.environ.get("C360_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable (set C360_TEST_PG): {error.orig}")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin: sa.Engine) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped when the test ends."""
    name = f"c360_test_{uuid.uuid4().hex[:12]}"
    with postgres_admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with postgres_admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def write_project(root: Path, sources_yaml: str, files: dict[str, str | bytes], warehouse: str) -> C360Config:
    """Write data files and a c360.yaml under `root`, and load it."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    config = root / "c360.yaml"
    config.write_text(f"warehouse: {warehouse}\n" + textwrap.dedent(sources_yaml), encoding="utf-8")
    return load_config(config)


CRM_SOURCE = """
sources:
  - name: crm
    path: data/crm/*.csv
    id: Id
    updated_at: Modified
    fields:
      first_name: First
      last_name: Last
      email: Email
      phone: Phone
"""


@pytest.fixture
def crm_project(tmp_path: Path, warehouse_url: str) -> C360Config:
    """A one-source project with one CSV batch of three people."""
    return write_project(
        tmp_path,
        CRM_SOURCE,
        {
            "data/crm/batch_1.csv": """
                Id,First,Last,Email,Phone,Modified
                1,ann,SMITH,Ann.Smith@Gmail.com,(415) 555-2671,2024-01-01
                2,Bob,Jones,bob@example.org,415.555.0199,2024-01-01
                3,Cy,Young,,+44 20 7946 0958,2024-01-01
            """
        },
        warehouse_url,
    )
