"""The c360 command line, as a user runs it."""

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from c360_pipelines.cli import app

runner = CliRunner()


@pytest.fixture
def demo_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    result = runner.invoke(app, ["demo", "--people", "120", "--out", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    return tmp_path / "demo"


def test_demo_writes_four_systems_a_truth_file_and_a_config(demo_project: Path) -> None:
    for path in ("data/crm/contacts_1.csv", "data/shop/customers.jsonl", "data/shop/orders.csv",
                 "data/support/tickets.csv", "data/loyalty/members.csv", "truth.csv", "people.csv", "c360.yaml"):
        assert (demo_project / path).exists(), path
    truth = pd.read_csv(demo_project / "truth.csv")
    assert set(truth["source"]) == {"crm", "shop", "support", "loyalty"}
    assert truth["person_id"].nunique() <= 120


def test_the_demo_is_the_same_for_the_same_seed(tmp_path: Path) -> None:
    for name in ("a", "b"):
        runner.invoke(app, ["demo", "--people", "60", "--seed", "7", "--out", str(tmp_path / name)])
    assert (tmp_path / "a/truth.csv").read_text() == (tmp_path / "b/truth.csv").read_text()
    assert (tmp_path / "a/data/crm/contacts_1.csv").read_bytes() == (tmp_path / "b/data/crm/contacts_1.csv").read_bytes()


def test_run_lands_everything_reports_quarantine_and_a_second_run_has_nothing_new(demo_project: Path) -> None:
    first = runner.invoke(app, ["run", "--config", str(demo_project / "c360.yaml")])
    assert first.exit_code == 0, first.output
    assert "conformed tables" in first.output and "individual" in first.output
    assert "set aside with their reasons" in first.output
    second = runner.invoke(app, ["run", "--config", str(demo_project / "c360.yaml")])
    assert second.exit_code == 0 and "nothing new" in second.output


def test_validate_passes_on_the_demo_and_fails_naming_the_key_on_a_bad_mapping(demo_project: Path) -> None:
    config = demo_project / "c360.yaml"
    assert runner.invoke(app, ["validate", "--config", str(config)]).exit_code == 0
    config.write_text(config.read_text().replace("email: email\n      phone: mobile", "email: e_mail\n      phone: mobile"))
    result = runner.invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 2
    assert "source 'loyalty', key 'fields.email': column 'e_mail' not found" in " ".join(result.output.split())


def test_a_malformed_config_is_an_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "c360.yaml"
    bad.write_text("sources: [\n")
    result = runner.invoke(app, ["validate", "--config", str(bad)])
    assert result.exit_code == 2 and "c360.yaml" in result.output and "malformed YAML" in result.output


def test_export_writes_csv_parquet_and_jsonl(demo_project: Path, tmp_path: Path) -> None:
    config = str(demo_project / "c360.yaml")
    assert runner.invoke(app, ["run", "--config", config]).exit_code == 0
    for suffix in ("csv", "parquet", "jsonl"):
        out = tmp_path / f"individual.{suffix}"
        result = runner.invoke(app, ["export", "individual", "-o", str(out), "--config", config])
        assert result.exit_code == 0, result.output
    csv = pd.read_csv(tmp_path / "individual.csv")
    assert len(csv) == len(pd.read_parquet(tmp_path / "individual.parquet")) > 100
    first = json.loads((tmp_path / "individual.jsonl").read_text().splitlines()[0])
    assert {"source", "source_record_id", "first_name"} <= set(first)


def test_export_of_an_unknown_table_lists_the_tables(demo_project: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "customers", "-o", str(tmp_path / "x.csv"), "--config", str(demo_project / "c360.yaml")])
    assert result.exit_code == 2 and "unknown table 'customers'" in result.output
