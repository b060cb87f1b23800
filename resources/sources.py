"""Source readers: find a source's batches and read one batch as raw text, losing nothing.

Two interchangeable implementations behind one protocol: `FileDropReader` (a glob of csv, jsonl or parquet
files, each file one batch) and `SqlReader` (a query or table in any SQLAlchemy database, each pull one
batch). Every value comes back as text exactly as sent; rows that cannot be read at all come back as
`UnreadableRow`s with their row number and text, for the quarantine.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from c360_pipelines.config import C360Config, ConfigError, SourceConfig
from c360_pipelines.core.conform import ROW_NUMBER


@dataclass(frozen=True)
class BatchRef:
    """A batch a source has on offer: its partition key, where it is, and a fingerprint of its content."""

    batch_id: str
    location: str
    fingerprint: str


@dataclass(frozen=True)
class UnreadableRow:
    row_number: int | None
    text: str
    reason: str


@dataclass
class RawBatch:
    """One batch as read: every readable row as text (plus `_row_number`), and the rows that were not."""

    rows: pd.DataFrame
    unreadable: list[UnreadableRow] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return [c for c in self.rows.columns if c != ROW_NUMBER]

    @property
    def rows_read(self) -> int:
        return len(self.rows) + len(self.unreadable)


class SourceReader(Protocol):
    source: SourceConfig

    def discover(self) -> list[BatchRef]: ...

    def read(self, batch_id: str) -> RawBatch: ...


def reader_for(config: C360Config, source: SourceConfig) -> SourceReader:
    if source.format == "sql":
        return SqlReader(source)
    return FileDropReader(source, config.base_dir)


def batches_to_run(offered: list[BatchRef], known: dict[str, str]) -> list[BatchRef]:
    """The batches that are new, or whose content changed since they were last landed."""
    return [b for b in offered if known.get(b.batch_id) != b.fingerprint]


# ------------------------------------------------------------------------------------------- files


@dataclass
class FileDropReader:
    source: SourceConfig
    base_dir: Path

    def discover(self) -> list[BatchRef]:
        assert self.source.path is not None
        pattern = Path(self.source.path)
        root = pattern if pattern.is_absolute() else self.base_dir / pattern
        if any(ch in self.source.path for ch in "*?["):
            anchor = Path(root.anchor)
            paths = sorted(p for p in anchor.glob(str(root.relative_to(anchor))) if p.is_file())
        else:
            paths = [root] if root.is_file() else []
        return [self._ref(path) for path in paths]

    def _ref(self, path: Path) -> BatchRef:
        stat = path.stat()
        try:
            batch_id = path.resolve().relative_to(self.base_dir.resolve()).as_posix()
        except ValueError:
            batch_id = path.resolve().as_posix()
        return BatchRef(batch_id, str(path), f"{stat.st_size}-{stat.st_mtime_ns}")

    def require_files(self) -> list[BatchRef]:
        """Discover, and fail with a message naming the source and key when nothing is there."""
        refs = self.discover()
        if not refs:
            raise ConfigError(
                f"source '{self.source.name}', key 'path': no file matches '{self.source.path}' "
                f"(relative to {self.base_dir})"
            )
        return refs

    def path_of(self, batch_id: str) -> Path:
        path = Path(batch_id)
        return path if path.is_absolute() else self.base_dir / path

    def read(self, batch_id: str) -> RawBatch:
        path = self.path_of(batch_id)
        if not path.is_file():
            raise ConfigError(f"source '{self.source.name}', key 'path': file {path} does not exist (batch {batch_id})")
        readers = {"csv": self._read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}
        return readers[self.source.format](path)

    def _read_csv(self, path: Path) -> RawBatch:
        data = path.read_bytes()
        encoding = self.source.encoding or detect_encoding(data)
        if not data.strip(b"\xef\xbb\xbf \t\r\n"):
            return RawBatch(_empty_rows([]))
        header, header_lines = _csv_header(data, encoding, self.source.delimiter)
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if duplicated:
            raise ConfigError(
                f"source '{self.source.name}': {path} has repeated column names: {', '.join(duplicated)}"
            )
        unreadable: list[UnreadableRow] = []

        def keep_aside(row: Any) -> str:
            reason = f"expected {row.expected_columns} fields, found {row.actual_columns}"
            number = row.number - 1 if row.number and row.number > 0 else None
            unreadable.append(UnreadableRow(number, row.text, reason))
            return "skip"

        table = pacsv.read_csv(
            pa.BufferReader(data),
            # Our own (trimmed) names: 'Id, Name' headers are common, and ' Name' would not match the mapping.
            read_options=pacsv.ReadOptions(
                encoding=encoding, use_threads=False, block_size=1 << 24, column_names=header, skip_rows=header_lines
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=self.source.delimiter, newlines_in_values=True, invalid_row_handler=keep_aside
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        rows = table.to_pandas(types_mapper=lambda _: pd.StringDtype("pyarrow"))
        skipped = {u.row_number for u in unreadable}
        numbers = [n for n in range(1, len(rows) + len(unreadable) + 1) if n not in skipped][: len(rows)]
        rows[ROW_NUMBER] = numbers
        return RawBatch(rows, unreadable)


def detect_encoding(data: bytes) -> str:
    """UTF-8 (with or without BOM) when the bytes decode as such, else Windows-1252, else Latin-1."""
    for encoding in ("utf-8", "cp1252"):
        try:
            data.decode(encoding)
        except UnicodeDecodeError:
            continue
        return encoding
    return "latin-1"


def _csv_header(data: bytes, encoding: str, delimiter: str) -> tuple[list[str], int]:
    """The column names (trimmed) and how many physical lines the header takes."""
    head = data[: 1 << 16].decode(encoding, errors="replace").removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(head), delimiter=delimiter)
    for record in reader:
        if record:
            return [name.strip() for name in record], reader.line_num
    return [], 0


def _empty_rows(columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="string") for c in columns})
    frame[ROW_NUMBER] = pd.Series(dtype="int64")
    return frame


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _read_jsonl(path: Path) -> RawBatch:
    records: list[dict[str, str]] = []
    numbers: list[int] = []
    unreadable: list[UnreadableRow] = []
    data = path.read_bytes()
    text = data.decode(detect_encoding(data)).removeprefix("\ufeff")
    number = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        number += 1
        try:
            document = json.loads(line)
        except json.JSONDecodeError as error:
            unreadable.append(UnreadableRow(number, line, f"not valid JSON: {error.msg} at column {error.colno}"))
            continue
        if not isinstance(document, dict):
            unreadable.append(UnreadableRow(number, line, "a JSON line must be an object"))
            continue
        records.append({key: _as_text(value) for key, value in document.items()})
        numbers.append(number)
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = pd.DataFrame.from_records(records, columns=columns).fillna("").astype("string[pyarrow]")
    rows[ROW_NUMBER] = numbers
    return RawBatch(rows if records else _empty_rows(columns), unreadable)


def _read_parquet(path: Path) -> RawBatch:
    frame = pq.read_table(path).to_pandas()
    return RawBatch(_frame_as_text(frame))


def _frame_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    rows = pd.DataFrame(
        {str(column): frame[column].map(_as_text).astype("string[pyarrow]") for column in frame.columns},
        index=range(len(frame)),
    )
    rows[ROW_NUMBER] = range(1, len(frame) + 1)
    return rows


# --------------------------------------------------------------------------------------------- SQL


@dataclass
class SqlReader:
    """A table or query in any SQLAlchemy database; each pull whose content differs is a new batch."""

    source: SourceConfig

    def _select(self) -> sa.TextClause:
        if self.source.table:
            return sa.text(f"SELECT * FROM {self.source.table}")
        assert self.source.query is not None
        return sa.text(self.source.query)

    def _fetch(self) -> pd.DataFrame:
        try:
            engine = sa.create_engine(self.source.url or "")
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as error:
            raise ConfigError(f"source '{self.source.name}', key 'url': {error}") from None
        try:
            connection = engine.connect()
        except sa.exc.DBAPIError as error:
            raise ConfigError(
                f"source '{self.source.name}', key 'url': database unreachable: {_first_line(error)}"
            ) from None
        try:
            return pd.read_sql(self._select(), connection)
        except sa.exc.DBAPIError as error:
            key = "table" if self.source.table else "query"
            raise ConfigError(f"source '{self.source.name}', key '{key}': {_first_line(error)}") from None
        finally:
            connection.close()
            engine.dispose()

    def discover(self) -> list[BatchRef]:
        rows = _frame_as_text(self._fetch())
        digest = hashlib.sha256()
        digest.update(",".join(rows.columns).encode())
        digest.update(pd.util.hash_pandas_object(rows, index=False).values.tobytes())
        fingerprint = f"{len(rows)}-{digest.hexdigest()[:16]}"
        location = self.source.table or self.source.query or ""
        return [BatchRef(f"pull-{digest.hexdigest()[:12]}", location, fingerprint)]

    def read(self, batch_id: str) -> RawBatch:
        return RawBatch(_frame_as_text(self._fetch()))


def _first_line(error: sa.exc.DBAPIError) -> str:
    text = str(error.orig) if error.orig is not None else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
