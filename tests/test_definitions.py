"""What Dagster loads: one asset pair per source, the canonical tables, checks and sensors, all documented."""

from pathlib import Path

import dagster as dg
import pytest

from c360_pipelines.demo import write_demo


@pytest.fixture
def demo_defs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    write_demo(tmp_path, people=50)
    monkeypatch.setenv("C360_CONFIG", str(tmp_path / "c360.yaml"))
    from c360_pipelines.definitions import defs

    return defs()


def test_every_source_has_an_extract_and_a_staged_asset_and_the_canonical_tables_follow(demo_defs: dg.Definitions) -> None:
    keys = {key.to_user_string() for key in demo_defs.resolve_asset_graph().get_all_asset_keys()}
    for source in ("crm", "shop", "shop_orders", "support", "support_tickets", "loyalty"):
        assert {f"raw/{source}", f"staged/{source}"} <= keys
    assert {"conformed/individual", "conformed/contact_point_email", "conformed/engagement"} <= keys


def test_every_asset_has_a_description_for_the_ui(demo_defs: dg.Definitions) -> None:
    graph = demo_defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        description = graph.get(key).description
        assert description and len(description) > 40, key


def test_the_canonical_tables_update_automatically_after_new_staged_data(demo_defs: dg.Definitions) -> None:
    graph = demo_defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey(["conformed", "individual"]))
    assert node.automation_condition is not None
    assert dg.AssetKey(["staged", "crm"]) in node.parent_keys


def test_each_source_has_a_running_batch_sensor(demo_defs: dg.Definitions) -> None:
    sensor = demo_defs.resolve_sensor_def("loyalty_new_batches")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_the_workspace_file_points_at_the_definitions_module() -> None:
    workspace = (Path(__file__).parents[1] / "workspace.yaml").read_text()
    assert "c360_pipelines.definitions" in workspace


def test_the_table_reference_in_docs_matches_the_model() -> None:
    from c360_pipelines.model_docs import render_tables_markdown

    committed = (Path(__file__).parents[1] / "docs" / "tables.md").read_text()
    assert committed == render_tables_markdown(), "regenerate: python -m c360_pipelines.model_docs > docs/tables.md"


def test_the_match_model_learns_from_the_training_labels_that_people_write(demo_defs: dg.Definitions) -> None:
    graph = demo_defs.resolve_asset_graph()
    labels, model = dg.AssetKey(["identity", "training_labels"]), dg.AssetKey(["identity", "match_model"])
    assert labels in graph.get(model).parent_keys
    assert not graph.get(labels).is_executable  # `c360 label` writes them, not a run
    assert graph.get(labels).group_name == "identity"


def test_a_missing_match_model_is_trained_automatically_without_waiting_for_labels(tmp_path: Path) -> None:
    from c360_pipelines.config import load_config
    from c360_pipelines.definitions import build_definitions
    from c360_pipelines.runner import run_pipeline

    write_demo(tmp_path, people=50)
    config = load_config(tmp_path / "c360.yaml")
    model = dg.AssetKey(["identity", "match_model"])
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
        defs = build_definitions(config)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        instance.wipe_assets([model])
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert after.get_num_requested(model) == 1
