"""The new-batch sensor: registers partitions for new or changed batches and asks for runs of them."""

import json
from pathlib import Path

import dagster as dg

from assets.conformed import conformed_key
from assets.identity import XREF_KEY
from assets.profiles import GOLDEN_KEY
from assets.sources import raw_key, staged_key
from c360_pipelines.config import C360Config
from c360_pipelines.definitions import build_definitions
from c360_pipelines.runner import run_pipeline
from c360_pipelines.sensors import DOWNSTREAM, WRITES_TAG, build_batch_sensor
from resources.warehouse import WarehouseResource
from tests.conftest import CRM_SOURCE, write_project


def crm(tmp_path: Path) -> C360Config:
    return write_project(tmp_path, CRM_SOURCE, {"data/crm/a.csv": "Id,First,Last,Email,Phone,Modified\n1,A,B,,,\n"},
                         f"sqlite:///{tmp_path / 'w.db'}")


def evaluate(config: C360Config, instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult | dg.SkipReason:
    sensor = build_batch_sensor(config, config.source("crm"))
    warehouse = WarehouseResource(url=config.warehouse)
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"warehouse": warehouse}))


def test_a_new_file_registers_a_partition_and_requests_a_run_of_it(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    result = evaluate(crm(tmp_path), instance)
    assert isinstance(result, dg.SensorResult)
    assert [request.partition_key for request in result.run_requests or []] == ["data/crm/a.csv"]
    assert result.dynamic_partitions_requests == [dg.AddDynamicPartitionsRequest("crm_batches", ["data/crm/a.csv"])]
    assert "data/crm/a.csv" in json.loads(result.cursor or "{}")


def test_nothing_new_means_no_run(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    config = crm(tmp_path)
    first = evaluate(config, instance)
    assert isinstance(first, dg.SensorResult)
    assert isinstance(evaluate(config, instance, first.cursor), dg.SkipReason)


def test_a_rewritten_file_runs_again_without_registering_its_partition_twice(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    config = crm(tmp_path)
    first = evaluate(config, instance)
    assert isinstance(first, dg.SensorResult)
    instance.add_dynamic_partitions("crm_batches", ["data/crm/a.csv"])
    (tmp_path / "data/crm/a.csv").write_text("Id,First,Last,Email,Phone,Modified\n1,A,B,,,\n2,C,D,,,\n")
    second = evaluate(config, instance, first.cursor)
    assert isinstance(second, dg.SensorResult)
    assert [r.partition_key for r in second.run_requests or []] == ["data/crm/a.csv"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key  # type: ignore[index]
    assert second.dynamic_partitions_requests == []


def test_the_last_new_batch_of_a_tick_also_brings_conformed_identity_and_profiles_up_to_date(
        tmp_path: Path, instance: dg.DagsterInstance) -> None:
    config = crm(tmp_path)
    (tmp_path / "data/crm/b.csv").write_text("Id,First,Last,Email,Phone,Modified\n2,C,D,,,\n", encoding="utf-8")
    sensor = build_batch_sensor(config, config.source("crm"))
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    result = evaluate(config, instance)
    assert isinstance(result, dg.SensorResult)
    first, last = result.run_requests or []
    assert set(first.asset_selection or []) == {raw_key("crm"), staged_key("crm")}
    assert set(last.asset_selection or []) == {raw_key("crm"), staged_key("crm"), *DOWNSTREAM}
    assert {conformed_key("individual"), XREF_KEY, GOLDEN_KEY} <= set(DOWNSTREAM)
    assert first.tags == last.tags == WRITES_TAG  # the instance runs these one at a time
    graph = build_definitions(config).resolve_asset_graph()
    assert set(sensor.targets[0].resolvable_to_job.selection.resolve(graph)) == set(last.asset_selection or [])


def test_a_batch_already_landed_by_c360_run_is_not_landed_again(tmp_path: Path, instance: dg.DagsterInstance) -> None:
    config = crm(tmp_path)
    run_pipeline(config, instance)
    assert isinstance(evaluate(config, instance), dg.SkipReason)
    (tmp_path / "data/crm/b.csv").write_text("Id,First,Last,Email,Phone,Modified\n2,C,D,,,\n", encoding="utf-8")
    result = evaluate(config, instance)
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["data/crm/b.csv"]
