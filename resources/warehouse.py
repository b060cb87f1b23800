"""The warehouse: every c360 table behind one SQLAlchemy URL (SQLite by default, PostgreSQL in production).

Writes are batch-scoped and transactional: `replace_rows` deletes what a batch wrote before and inserts its
new rows in one transaction, which is what makes re-materialising a partition idempotent. Bulk inserts use
each backend's fast path (many rows per INSERT on SQLite, COPY on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from functools import lru_cache
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from c360_pipelines.config import ConfigError
from c360_pipelines.core.insights import times_as_text as _times_text
from c360_pipelines.model import (
    MODELS,
    PROFILE_MODELS,
    PROFILE_STATE_MODELS,
    TABLES,
    columns_of,
    date_columns,
    datetime_columns,
)

INSERT_CHUNK_ROWS = 50_000
# SQLite's limit on the parameters of one statement before 3.32 (later versions allow 32,766)
SQLITE_STATEMENT_PARAMETERS = 999
INDEX_SORT_CACHE_KIB = 4096  # about SQLite's smallest sorter run (250 pages of 16 KiB)
ANALYZE_AFTER_ROWS = 1_000


@lru_cache(maxsize=16)
def _engine(url: str) -> sa.Engine:
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 60})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
        raise ConfigError(f"key 'warehouse': cannot use '{_redact(url)}': {error}") from None
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    # Takes effect only on a new database, before WAL fixes its layout: 16 KiB pages instead of 4 made the 1M
    # profile build write a tenth less, with a third less system time.
    cursor.execute("PRAGMA page_size=16384")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA cache_size=-262144")  # 256 MiB of page cache: bulk loads touch big indexes
    # Temporary files stay files (the OS caches them): a large sort spills sorted runs to them, and with
    # temp_store=MEMORY the 1M warehouse's GROUP BY of name spellings took twice as long, its index builds a third.
    # Reads through a memory map instead of a read() per page: at most 2 GiB in the sqlite3 module's build. The
    # 1M profile build's workers spent a third less system time and the build took a tenth less.
    cursor.execute(f"PRAGMA mmap_size={16 * 1024**3}")
    # large sorts (index builds after a bulk load, ORDER BY, GROUP BY) may use helper threads: off by default
    cursor.execute(f"PRAGMA threads={min(4, os.cpu_count() or 1)}")
    cursor.close()


def _redact(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


class WarehouseResource(dg.ConfigurableResource):
    """Reads and writes c360's tables in the warehouse at `url` (any SQLAlchemy URL)."""

    url: str

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.ensure_tables()

    @property
    def engine(self) -> sa.Engine:
        return _engine(self.url)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def ensure_tables(self) -> None:
        """Create every c360 table and index that does not exist yet."""
        try:
            with self.engine.begin() as connection:
                self._recreate_outdated_derived_tables(connection)
                for table in TABLES.values():
                    table.create(connection, checkfirst=True)
                    for index in table.indexes:  # an index added since the table was created
                        index.create(connection, checkfirst=True)
        except sa.exc.OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
            raise ConfigError(f"key 'warehouse': cannot reach {_redact(self.url)}: {reason}") from None

    @staticmethod
    def _recreate_outdated_derived_tables(connection: sa.Connection) -> None:
        """Profile tables are derived: one from an older c360 is dropped (and the next build is a full one)."""
        inspector = sa.inspect(connection)
        for name, model in {**PROFILE_MODELS, **PROFILE_STATE_MODELS}.items():
            if inspector.has_table(name):
                existing = {column["name"] for column in inspector.get_columns(name)}
                if existing != set(columns_of(model)):
                    TABLES[name].drop(connection)

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as connection:
            yield connection

    def replace_rows(
        self, table: str, frame: pd.DataFrame, where: Mapping[str, Any], connection: sa.Connection | None = None
    ) -> int:
        """Delete the rows matching `where`, then insert `frame`, in one transaction. Returns rows inserted."""
        if connection is None:
            with self.transaction() as own:
                return self.replace_rows(table, frame, where, own)
        target = TABLES[table]
        clause = sa.and_(*(target.c[column] == value for column, value in where.items()))
        connection.execute(target.delete().where(clause))
        return self.insert_rows(table, frame, connection)

    def insert_rows(self, table: str, frame: pd.DataFrame, connection: sa.Connection) -> int:
        """Bulk-insert `frame` in chunks, so memory stays bounded however large the batch is. Columns of the table
        that `frame` lacks are inserted empty; others in `frame` are ignored."""
        columns = columns_of(MODELS[table])
        column_list = ", ".join(f'"{c}"' for c in columns)
        raw = connection.connection.driver_connection
        for start in range(0, len(frame), INSERT_CHUNK_ROWS):
            chunk = frame.iloc[start:start + INSERT_CHUNK_ROWS]
            rows = _python_rows(chunk, table, columns, times_as_text=connection.dialect.name == "sqlite")
            if connection.dialect.name == "postgresql":
                with raw.cursor() as cursor, cursor.copy(f'COPY "{table}" ({column_list}) FROM STDIN') as copy:
                    for row in rows.tolist():
                        copy.write_row(row)
            else:
                _insert_many_per_statement(raw, f'INSERT INTO "{table}" ({column_list}) VALUES ', rows)
        if connection.dialect.name == "postgresql" and len(frame) >= ANALYZE_AFTER_ROWS:
            # Until autovacuum gets round to it, a freshly filled table has no statistics and the planner guesses:
            # lookups by 360 ID then went to parallel scans (17 ms instead of 1 ms). The statistics commit with
            # the rows.
            connection.exec_driver_sql(f'ANALYZE "{table}"')
        return len(frame)

    def execute(self, statement: str | sa.Executable, params: Mapping[str, Any] | None = None) -> None:
        with self.transaction() as connection:
            connection.execute(sa.text(statement) if isinstance(statement, str) else statement, params or {})

    def read_frame(self, query: str | sa.Executable, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        with self.engine.connect() as connection:
            if isinstance(query, str):
                return read_sql(connection, query, params)
            return pd.read_sql(query, connection, params=dict(params or {}))

    def scalar(self, query: str, params: Mapping[str, Any] | None = None) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(sa.text(query), dict(params or {})).scalar()

    def count(self, table: str, where: Mapping[str, Any] | None = None) -> int:
        target = TABLES[table]
        statement = sa.select(sa.func.count()).select_from(target)
        for column, value in (where or {}).items():
            statement = statement.where(target.c[column] == value)
        with self.engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())


@contextmanager
def indexes_rebuilt_after(connection: sa.Connection, tables: Iterable[str],
                          only: tuple[str, ...] | None = None) -> Iterator[None]:
    """Drop the tables' indexes (`only` those on exactly these columns) for a bulk load and build them again
    after it: one index build after the load beats a million B-tree inserts in random order."""
    indexes = [index for table in tables for index in TABLES[table].indexes
               if only is None or tuple(column.name for column in index.columns) == only]
    for index in indexes:
        index.drop(connection)
    yield
    with _sorting_in_parallel(connection) if indexes else nullcontext():
        for index in indexes:
            index.create(connection)


@contextmanager
def _sorting_in_parallel(connection: sa.Connection) -> Iterator[None]:
    """On SQLite, a small page cache while building indexes: its sorter keeps at most a cache's worth in memory,
    so a large index is sorted in runs, which the helper threads (`PRAGMA threads`) sort side by side. With the
    whole sort in one 256 MiB run it took one core: the four largest profile indexes of the 1M build took 2.1 s
    instead of 3.5 to 4.0, at the same CPU."""
    if connection.dialect.name != "sqlite":
        yield
        return
    kept = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size=-{INDEX_SORT_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size={kept}")


def fill_temporary_table(connection: sa.Connection, name: str, frame: pd.DataFrame, key: str) -> None:
    """A temporary table of text columns holding `frame`, private to this connection (created on first use,
    emptied on each later one): the set of rows a scoped read or delete joins against."""
    columns = ", ".join(f"{column} VARCHAR{' PRIMARY KEY' if column == key else ''}" for column in frame.columns)
    connection.exec_driver_sql(f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ({columns})")
    connection.exec_driver_sql(f"DELETE FROM {name}")
    if len(frame):
        # rows straight to the driver: through SQLAlchemy's named parameters a part of 25k IDs took 0.3 s
        marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        rows = frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None)
        connection.exec_driver_sql(f"INSERT INTO {name} ({', '.join(frame.columns)}) "
                                   f"VALUES ({', '.join(marker for _ in frame.columns)})", list(rows))


def read_sql(connection: sa.Connection, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """A frame from plain SQL with `:name` parameters. On SQLite the query goes to the driver directly: the same
    values as through SQLAlchemy's rows, about four times faster (0.24 s instead of 0.89 s for 228k records)."""
    if connection.dialect.name == "sqlite":
        return pd.read_sql(sql, connection.connection.driver_connection, params=dict(params or {}))
    return pd.read_sql(sa.text(sql), connection, params=dict(params or {}))


def _insert_many_per_statement(raw: Any, insert: str, rows: np.ndarray) -> None:
    """Insert `rows` (a 2-D array of Python values) with as many rows per INSERT as SQLite's parameter limit
    allows: each row as its own statement ran SQLite's statement machinery once per row, and took a third more
    time to write the 1M build's profiles."""
    width = rows.shape[1]
    per_statement = max(1, SQLITE_STATEMENT_PARAMETERS // width)
    whole = len(rows) // per_statement * per_statement
    one_row = "(" + ", ".join("?" for _ in range(width)) + ")"
    if whole:
        raw.executemany(insert + ", ".join(one_row for _ in range(per_statement)),
                        rows[:whole].reshape(-1, per_statement * width).tolist())
    if whole < len(rows):
        raw.executemany(insert + one_row, rows[whole:].tolist())


def _python_rows(frame: pd.DataFrame, table: str, columns: Sequence[str], times_as_text: bool = False) -> np.ndarray:
    """The rows of `columns` as a 2-D array of plain Python values (None for missing), which both DB drivers bind
    without adapters.

    With `times_as_text` (SQLite), times and dates are written as the text SQLite stores them as, made here for
    the whole column at once: the sqlite3 module's own adapter is a Python call per value (deprecated since
    Python 3.12) and was a third of the time of inserting a profile.
    """
    model = MODELS[table]
    timestamp_columns = set(datetime_columns(model))
    day_columns = set(date_columns(model))
    rows = np.full((len(frame), len(columns)), None, dtype=object)
    for position, column in enumerate(columns):
        if column not in frame.columns:
            continue
        series = frame[column]
        if column in timestamp_columns:
            # already times: to_datetime would still walk every value to decide whether to cache (3 s at 1M)
            times = series if pd.api.types.is_datetime64_any_dtype(series) else pd.to_datetime(series, errors="coerce")
            stamps = times.to_numpy(dtype="datetime64[us]")
            # as text made once per distinct time (a Python f-string per value was 2 s of the 1M profile build)
            rows[:, position] = _times_text(stamps, whole_seconds_short=True) if times_as_text else stamps.astype(object)
        elif column in day_columns:
            values = _days_as_text(series) if times_as_text else [_as_date(v) for v in series]
            rows[:, position] = np.fromiter(values, dtype=object, count=len(values))
        else:
            plain = series.to_numpy(dtype=object, copy=True)
            plain[pd.isna(plain)] = None
            rows[:, position] = plain
    return rows


def _days_as_text(series: pd.Series) -> list[str | None]:
    """ISO text of each day (dates, times or text), None where missing, for the whole column at once."""
    days = pd.to_datetime(series, errors="coerce").to_numpy(dtype="datetime64[D]")
    made = np.datetime_as_string(days, unit="D").astype(object)
    made[np.isnat(days)] = None
    return made.tolist()


def _as_date(value: Any) -> dt.date | None:
    if value is None or value is pd.NaT or (not isinstance(value, dt.date) and pd.isna(value)):
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return pd.Timestamp(value).date()
