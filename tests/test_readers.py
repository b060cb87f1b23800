"""Reading sources: every readable row comes back as text exactly as sent; unreadable rows are kept aside."""

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from c360_pipelines.config import ConfigError, SourceConfig
from resources.sources import ROW_NUMBER, BatchRef, FileDropReader, SqlReader, batches_to_run


def reader(tmp_path: Path, path: str = "data/*.csv", **options: object) -> FileDropReader:
    return FileDropReader(SourceConfig(name="crm", path=path, id="Id", **options), tmp_path)


def drop(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return f"data/{name}"


def test_each_file_matching_the_glob_is_one_batch_keyed_by_its_path(tmp_path: Path) -> None:
    drop(tmp_path, "b.csv", b"Id\n1\n")
    drop(tmp_path, "a.csv", b"Id\n2\n")
    assert [ref.batch_id for ref in reader(tmp_path).discover()] == ["data/a.csv", "data/b.csv"]


def test_a_rewritten_file_is_offered_again_and_an_untouched_one_is_not(tmp_path: Path) -> None:
    drop(tmp_path, "a.csv", b"Id\n1\n")
    first = reader(tmp_path).discover()
    known = {ref.batch_id: ref.fingerprint for ref in first}
    assert batches_to_run(first, known) == []
    drop(tmp_path, "a.csv", b"Id\n1\n2\n")
    assert [ref.batch_id for ref in batches_to_run(reader(tmp_path).discover(), known)] == ["data/a.csv"]


def test_values_are_read_as_text_exactly_as_sent(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.csv", b"Id,Zip,Amount,Note\n007,02134,1.50,\n")
    rows = reader(tmp_path).read(batch_id).rows
    assert rows.loc[0, ["Id", "Zip", "Amount", "Note"]].tolist() == ["007", "02134", "1.50", ""]


def test_latin_1_files_are_decoded(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.csv", "Id,Name\n1,José Müller\n".encode("latin-1"))
    assert reader(tmp_path).read(batch_id).rows.loc[0, "Name"] == "José Müller"


def test_a_utf8_byte_order_mark_does_not_leak_into_the_first_column_name(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.csv", "\ufeffId,Name\n1,Zoë\n".encode("utf-8"))
    batch = reader(tmp_path).read(batch_id)
    assert batch.columns == ["Id", "Name"] and batch.rows.loc[0, "Name"] == "Zoë"


def test_quoted_newlines_stay_inside_their_field(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.csv", b'Id,Note\n1,"line one\nline two"\n2,plain\n')
    rows = reader(tmp_path).read(batch_id).rows
    assert rows["Note"].tolist() == ["line one\nline two", "plain"]
    assert rows[ROW_NUMBER].tolist() == [1, 2]


def test_an_empty_file_is_a_batch_with_no_rows(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.csv", b"")
    batch = reader(tmp_path).read(batch_id)
    assert batch.rows_read == 0 and batch.unreadable == []


def test_rows_with_the_wrong_number_of_fields_are_kept_aside_with_their_row_number(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.csv", b"Id,Name\n1,Ann\n2,Bob,extra\n3\n4,Dee\n")
    batch = reader(tmp_path).read(batch_id)
    assert batch.rows["Id"].tolist() == ["1", "4"]
    assert batch.rows[ROW_NUMBER].tolist() == [1, 4]
    assert [(u.row_number, u.text) for u in batch.unreadable] == [(2, "2,Bob,extra"), (3, "3")]
    assert "expected 2 fields, found 3" in batch.unreadable[0].reason
    assert batch.rows_read == 4


def test_a_missing_file_names_the_source_and_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="source 'crm', key 'path'.*does not exist"):
        reader(tmp_path).read("data/gone.csv")
    with pytest.raises(ConfigError, match="source 'crm', key 'path': no file matches 'data/\\*.csv'"):
        reader(tmp_path).require_files()


def test_broken_json_lines_are_kept_aside_and_the_rest_is_read(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.jsonl", b'{"Id": 1, "tags": ["a"], "vip": true}\n{"Id": 2, "Na\n[1, 2]\n{"Id": 4, "extra": null}\n')
    batch = reader(tmp_path, "data/*.jsonl", format="jsonl").read(batch_id)
    assert batch.rows["Id"].tolist() == ["1", "4"]
    assert batch.rows.loc[0, "tags"] == '["a"]' and batch.rows.loc[0, "vip"] == "true"
    assert [u.row_number for u in batch.unreadable] == [2, 3]
    assert "not valid JSON" in batch.unreadable[0].reason and "must be an object" in batch.unreadable[1].reason


def test_parquet_files_are_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "data" / "a.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"Id": [1, 2], "Name": ["Ann", None]}).to_parquet(path)
    rows = reader(tmp_path, "data/*.parquet", format="parquet").read("data/a.parquet").rows
    assert rows["Id"].tolist() == ["1", "2"] and rows["Name"].tolist() == ["Ann", ""]


def test_a_sql_source_is_pulled_and_an_unchanged_table_is_not_a_new_batch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    pd.DataFrame({"Id": [1, 2], "Name": ["Ann", "Bob"]}).to_sql("contacts", engine, index=False)
    sql = SqlReader(SourceConfig(name="crm", format="sql", url=url, table="contacts", id="Id"))
    first = sql.discover()
    assert sql.read(first[0].batch_id).rows["Name"].tolist() == ["Ann", "Bob"]
    assert sql.discover() == first
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE contacts SET Name = 'Anne' WHERE Id = 1"))
    assert sql.discover()[0].batch_id != first[0].batch_id


def test_an_unreachable_database_names_the_source_and_the_key() -> None:
    sql = SqlReader(
        SourceConfig(name="erp", format="sql", url="postgresql+psycopg://nobody@127.0.0.1:1/none", query="select 1", id="Id")
    )
    with pytest.raises(ConfigError, match="source 'erp', key 'url': database unreachable"):
        sql.discover()


def test_a_bad_query_names_the_source_and_the_key(tmp_path: Path) -> None:
    sql = SqlReader(SourceConfig(name="erp", format="sql", url=f"sqlite:///{tmp_path / 'x.db'}", query="select * from nope", id="Id"))
    with pytest.raises(ConfigError, match="source 'erp', key 'query'"):
        sql.discover()


def test_batches_to_run_keeps_only_new_or_changed_batches() -> None:
    offered = [BatchRef("a", "a", "1"), BatchRef("b", "b", "2"), BatchRef("c", "c", "3")]
    assert [b.batch_id for b in batches_to_run(offered, {"a": "1", "b": "changed"})] == ["b", "c"]


def test_spaces_around_header_names_are_trimmed_so_the_mapping_finds_them(tmp_path: Path) -> None:
    batch_id = drop(tmp_path, "a.csv", b"Id, Name , Zip\n1, Ann,02134\n")
    batch = reader(tmp_path).read(batch_id)
    assert batch.columns == ["Id", "Name", "Zip"]
    assert batch.rows.loc[0, ["Name", "Zip"]].tolist() == [" Ann", "02134"]
