"""Labels: people answer the model's hardest questions, and the model learns from the answers."""

import itertools
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from c360_pipelines.cli import app
from c360_pipelines.config import C360Config, load_config
from c360_pipelines.core.score import estimate_m
from c360_pipelines.demo import write_demo
from c360_pipelines.identity import save_label
from c360_pipelines.labeling import RECORD, ActiveLabeler
from c360_pipelines.runner import retrain, run_pipeline
from resources.warehouse import WarehouseResource


def resolve_demo(root: Path, warehouse_url: str | None = None) -> C360Config:
    write_demo(root / "demo", people=200, seed=5)
    if warehouse_url is not None:
        config_path = root / "demo" / "c360.yaml"
        config_path.write_text(config_path.read_text(encoding="utf-8").replace(
            "warehouse: sqlite:///.c360/warehouse.db", f"warehouse: {warehouse_url}"), encoding="utf-8")
    config = load_config(root / "demo" / "c360.yaml")
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
    return config


@pytest.fixture
def resolved_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> C360Config:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return resolve_demo(tmp_path)


def test_label_asks_about_uncertain_pairs_and_stores_the_answers(resolved_demo: C360Config) -> None:
    result = CliRunner().invoke(app, ["label", "-n", "5", "--config", str(resolved_demo.config_path)], input="y\nn\nu\nf\n")
    assert result.exit_code == 0, result.output
    assert "Same person?" in result.output and "saved 2 label(s)" in result.output
    labels = WarehouseResource(url=resolved_demo.warehouse).read_frame("SELECT label FROM training_label ORDER BY label")
    assert labels["label"].tolist() == ["distinct", "match"]


def test_dedupes_learner_starts_from_earlier_answers_and_never_asks_about_them_again(
        tmp_path: Path, warehouse_url: str) -> None:
    resolved_demo = resolve_demo(tmp_path, warehouse_url)
    warehouse = WarehouseResource(url=resolved_demo.warehouse)
    first, second = next(ActiveLabeler(warehouse, resolved_demo.match, sample_size=300).pairs())
    ActiveLabeler(warehouse, resolved_demo.match, sample_size=300).answer(first, second, "distinct", "tester")

    again = ActiveLabeler(warehouse, resolved_demo.match, sample_size=300)
    taught = {frozenset((a[RECORD], b[RECORD])) for a, b in again.learner.training_pairs["distinct"]}
    asked = {frozenset((a[RECORD], b[RECORD])) for a, b in itertools.islice(again.pairs(), 40)}
    answered = frozenset((first[RECORD], second[RECORD]))
    assert answered in taught
    assert answered not in asked and len(asked) == 40


def test_labels_export_to_dedupes_training_format(resolved_demo: C360Config, tmp_path: Path) -> None:
    warehouse = WarehouseResource(url=resolved_demo.warehouse)
    pair = warehouse.read_frame("SELECT record_a, record_b FROM identity_link LIMIT 1").iloc[0]
    save_label(warehouse, pair.record_a, pair.record_b, "match", "tester")
    out = tmp_path / "training.json"
    result = CliRunner().invoke(app, ["label", "--export", str(out), "--config", str(resolved_demo.config_path)])
    assert result.exit_code == 0, result.output
    training = json.loads(out.read_text())
    assert set(training) == {"match", "distinct"} and len(training["match"]) == 1
    first, second = training["match"][0]
    assert {"first_name", "last_name", "email"} <= set(first) and set(first) == set(second)


def test_labelled_matches_move_the_models_m_towards_what_people_confirmed() -> None:
    levels = {"first_name": [0] * 10, "last_name": [3] * 10, "birth_date": [3] * 10, "email": [2] * 10,
              "phone": [2] * 10, "address": [3] * 10, "identifier": [-1] * 10, "email_freq": [1] * 10,
              "phone_freq": [1] * 10}
    compared = pd.DataFrame(levels)
    confirmed = pd.DataFrame({**{k: v[:1] for k, v in levels.items()}, "first_name": [2]})
    without, with_labels = estimate_m(compared), estimate_m(compared, confirmed)
    assert with_labels["first_name"][2] > without["first_name"][2]


def test_training_reports_precision_and_recall_on_held_out_labels(resolved_demo: C360Config) -> None:
    warehouse = WarehouseResource(url=resolved_demo.warehouse)
    truth = pd.read_csv(resolved_demo.base_dir / "truth.csv", dtype=str)
    person = dict(zip(truth["source"] + ":" + truth["source_record_id"], truth["person_id"], strict=True))
    pairs = warehouse.read_frame("SELECT record_a, record_b FROM identity_link ORDER BY record_a, record_b")
    for row in pairs.head(60).itertuples():
        save_label(warehouse, row.record_a, row.record_b,
                   "match" if person[row.record_a] == person[row.record_b] else "distinct", "tester")
    with dg.DagsterInstance.ephemeral() as instance:
        version, evaluation = retrain(resolved_demo, instance)
        check = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(dg.AssetKey(["identity", "match_model"]), "accurate_on_held_out_labels"))
    assert version == 2 and evaluation.held_out > 0
    assert evaluation.precision is not None and evaluation.precision >= 0.9
    assert check is not None and check.evaluation.metadata["held_out_labels"].value == evaluation.held_out  # type: ignore[union-attr]
    assert np.isfinite(evaluation.recall)  # type: ignore[arg-type]
