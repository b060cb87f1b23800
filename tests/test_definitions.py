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
