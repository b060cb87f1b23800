"""The asset graph, materialised in-process on each warehouse backend: partitions, idempotence, backfills."""

import textwrap
from pathlib import Path

import dagster as dg
import pytest

from assets.sources import ROWS_ACCOUNTED_FOR, batch_partitions, raw_key, staged_key
from c360_pipelines.config import C360Config, ConfigError, load_config
from c360_pipelines.definitions import build_definitions
from c360_pipelines.runner import run_pipeline
from resources.warehouse import WarehouseResource
from tests.conftest import CRM_SOURCE, write_project


def materialize_batch(config: C360Config, instance: dg.DagsterInstance, source: str, batch_id: str,
                      only_staged: bool = False) -> dg.ExecuteInProcessResult:
    defs = build_definitions(config)
    instance.add_dynamic_partitions(batch_partitions(source).name, [batch_id])
    selection = [staged_key(source)] if only_staged else [raw_key(source), staged_key(source)]
    return dg.materialize(list(defs.assets or []), selection=selection, partition_key=batch_id, instance=instance,
                          resources={"warehouse": WarehouseResource(url=config.warehouse)})


def materialize_conformed(config: C360Config, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = build_definitions(config)
    return dg.materialize(list(defs.assets or []), selection=dg.AssetSelection.groups("conformed"), instance=instance,
                          resources={"warehouse": WarehouseResource(url=config.warehouse)})


def table_counts(config: C360Config) -> dict[str, int]:
    warehouse = WarehouseResource(url=config.warehouse)
    tables = ["raw_record", "staged_individual", "staged_contact_point_email", "quarantine", "batch", "individual"]
    return {table: warehouse.count(table) for table in tables}


def test_a_batch_is_landed_staged_and_accounted_for(crm_project: C360Config, instance: dg.DagsterInstance) -> None:
    result = materialize_batch(crm_project, instance, "crm", "data/crm/batch_1.csv")
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [(ROWS_ACCOUNTED_FOR, True)]
    counts = table_counts(crm_project)
    assert counts["raw_record"] == 3 and counts["staged_individual"] == 3 and counts["staged_contact_point_email"] == 2


def test_rematerialising_a_partition_replaces_its_rows(crm_project: C360Config, instance: dg.DagsterInstance) -> None:
    materialize_batch(crm_project, instance, "crm", "data/crm/batch_1.csv")
    materialize_conformed(crm_project, instance)
    first = table_counts(crm_project)
    materialize_batch(crm_project, instance, "crm", "data/crm/batch_1.csv")
    materialize_conformed(crm_project, instance)
    assert table_counts(crm_project) == first


def test_conformed_tables_hold_the_latest_version_of_each_record_even_when_an_older_one_arrives_later(
    crm_project: C360Config, instance: dg.DagsterInstance
) -> None:
    root = crm_project.base_dir
    (root / "data/crm/batch_2.csv").write_text("Id,First,Last,Email,Phone,Modified\n1,Ann,Smith,ann@new.com,,2024-06-01\n")
    (root / "data/crm/batch_3.csv").write_text("Id,First,Last,Email,Phone,Modified\n1,Ann,Smith,ann@stale.com,,2023-01-01\n")
    for batch in ("batch_1", "batch_2", "batch_3"):
        materialize_batch(crm_project, instance, "crm", f"data/crm/{batch}.csv")
    result = materialize_conformed(crm_project, instance)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations() if c.check_name != "engagements_reach_a_person")
    warehouse = WarehouseResource(url=crm_project.warehouse)
    emails = warehouse.read_frame("SELECT email FROM contact_point_email WHERE source_record_id = '1'")
    assert emails["email"].tolist() == ["ann@new.com"]
    assert warehouse.count("individual") == 3


def test_bad_rows_are_quarantined_and_the_rest_of_the_batch_proceeds(tmp_path: Path, warehouse_url: str,
                                                                     instance: dg.DagsterInstance) -> None:
    config = write_project(tmp_path, CRM_SOURCE, {"data/crm/b.csv": """
        Id,First,Last,Email,Phone,Modified
        1,Ann,Smith,ann@x.com,,2024-01-01
        2,Bob,Jones,bob@x.com,,2024-01-01,surplus
        ,Nameless,Person,n@x.com,,2024-01-01
        4,Dee,Lee,not-an-email,,not-a-date
    """}, warehouse_url)
    result = materialize_batch(config, instance, "crm", "data/crm/b.csv")
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
    quarantine = WarehouseResource(url=config.warehouse).read_frame("SELECT row_number, stage, reason, raw FROM quarantine ORDER BY row_number")
    assert quarantine[["row_number", "stage"]].values.tolist() == [[2, "extract"], [3, "stage"]]
    assert quarantine.loc[0, "raw"] == "2,Bob,Jones,bob@x.com,,2024-01-01,surplus"
    assert table_counts(config)["staged_individual"] == 2


def test_a_backfill_restages_landed_rows_after_a_mapping_change(crm_project: C360Config, instance: dg.DagsterInstance) -> None:
    materialize_batch(crm_project, instance, "crm", "data/crm/batch_1.csv")
    (crm_project.base_dir / "data/crm/batch_1.csv").unlink()  # the backfill must need only what was landed
    config_path = crm_project.config_path
    config_path.write_text(config_path.read_text().replace("      phone: Phone\n", "      phone: Phone\n      middle_name: Modified\n"))
    remapped = load_config(config_path)
    assert materialize_batch(remapped, instance, "crm", "data/crm/batch_1.csv", only_staged=True).success
    middles = WarehouseResource(url=remapped.warehouse).read_frame("SELECT middle_name FROM staged_individual")
    assert set(middles["middle_name"]) == {"2024-01-01"}


def test_a_mapped_column_missing_from_a_file_stops_with_the_source_and_key(tmp_path: Path, warehouse_url: str,
                                                                           instance: dg.DagsterInstance) -> None:
    config = write_project(tmp_path, CRM_SOURCE, {"data/crm/b.csv": "Id,First,Last,Mail,Phone,Modified\n1,A,B,a@x.com,,\n"}, warehouse_url)
    with pytest.raises(ConfigError, match="source 'crm', key 'fields.email': column 'Email' not found"):
        materialize_batch(config, instance, "crm", "data/crm/b.csv")


def test_run_processes_new_batches_only(crm_project: C360Config, instance: dg.DagsterInstance) -> None:
    first = run_pipeline(crm_project, instance)
    assert first.batches == [("crm", "data/crm/batch_1.csv")]
    assert run_pipeline(crm_project, instance).batches == []
    (crm_project.base_dir / "data/crm/batch_2.csv").write_text("Id,First,Last,Email,Phone,Modified\n9,New,Person,,,\n")
    third = run_pipeline(crm_project, instance)
    assert third.batches == [("crm", "data/crm/batch_2.csv")]
    assert WarehouseResource(url=crm_project.warehouse).count("individual") == 4
    assert set(instance.get_dynamic_partitions("crm_batches")) == {"data/crm/batch_1.csv", "data/crm/batch_2.csv"}


def test_run_stops_with_a_clear_message_when_a_source_has_no_files(tmp_path: Path, warehouse_url: str,
                                                                   instance: dg.DagsterInstance) -> None:
    config = write_project(tmp_path, CRM_SOURCE, {}, warehouse_url)
    with pytest.raises(ConfigError, match="source 'crm', key 'path': no file matches"):
        run_pipeline(config, instance)


def test_engagements_join_their_person_source(tmp_path: Path, warehouse_url: str, instance: dg.DagsterInstance) -> None:
    sources = CRM_SOURCE + textwrap.indent(textwrap.dedent("""
        - name: orders
          kind: engagement
          of: crm
          path: data/orders.csv
          id: order_id
          person_id: customer
          occurred_at: at
          fields: {amount: total}
    """), "  ")
    config = write_project(tmp_path, sources, {
        "data/crm/a.csv": "Id,First,Last,Email,Phone,Modified\n1,Ann,Smith,,,\n",
        "data/orders.csv": "order_id,customer,at,total\nO1,1,2024-01-01,10.5\nO2,404,2024-01-02,3\n",
    }, warehouse_url)
    run_pipeline(config, instance)
    warehouse = WarehouseResource(url=config.warehouse)
    joined = warehouse.read_frame(
        "SELECT e.engagement_id, i.first_name FROM engagement e JOIN individual i "
        "ON i.source = e.person_source AND i.source_record_id = e.person_record_id")
    assert joined.values.tolist() == [["O1", "Ann"]]
