"""Golden profiles in the warehouse: built after identity, stable across reruns, readable by any 360 ID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from assets.profiles import profile_checks
from c360_pipelines.cli import app
from c360_pipelines.config import C360Config, ConfigError, load_config
from c360_pipelines.lookup import Customer360, NotFound
from c360_pipelines.profiles import PART_TABLES, build_parts, build_profiles
from c360_pipelines.runner import run_pipeline
from resources.warehouse import WarehouseResource
from tests.conftest import write_project

SOURCES = """
sources:
  - name: crm
    path: data/crm/*.csv
    id: Id
    updated_at: Modified
    fields: {first_name: First, last_name: Last, email: Email, phone: Phone, address: Address}
  - name: shop
    path: data/shop/*.csv
    id: Id
    updated_at: Modified
    fields: {first_name: First, last_name: Last, email: Email, phone: Phone, address: Address}
  - name: orders
    kind: engagement
    of: shop
    path: data/orders/*.csv
    id: OrderId
    person_id: CustomerId
    occurred_at: At
    fields: {type: {value: order}, amount: Total, status: Status}
profile:
  fields:
    address: most_recent
  insights:
    big_orders: "count() where type = order and amount >= 100"
"""
FILES = {
    "data/crm/batch_1.csv": """
        Id,First,Last,Email,Phone,Address,Modified
        1,Ann,Smith,ann.smith@example.org,(415) 555-2671,"1 Main St, Boston, MA 02108",2024-01-01
        2,Bob,Jones,bob@example.org,415.555.0199,"9 Elm St, Austin, TX 73301",2024-01-01
    """,
    "data/shop/batch_1.csv": """
        Id,First,Last,Email,Phone,Address,Modified
        S1,ANN,SMITH,ann.smith@example.org,4155552671,"22 Oak Ave, Boston, MA 02110",2024-06-01
        S2,Robert,Jones,bob@example.org,,"9 Elm Street, Austin, TX 73301",2024-02-01
    """,
    "data/orders/batch_1.csv": """
        OrderId,CustomerId,At,Total,Status
        O1,S1,2024-06-02,120.00,paid
        O2,S1,2024-07-02,30.50,paid
        O3,S1,2024-08-02,99.00,refunded
    """,
}


@pytest.fixture
def project(tmp_path: Path, warehouse_url: str, instance: object) -> C360Config:
    config = write_project(tmp_path, SOURCES, FILES, warehouse_url)
    run_pipeline(config, instance)  # type: ignore[arg-type]
    return config


def profile_of(warehouse: WarehouseResource, source: str, record_id: str) -> pd.Series:
    return warehouse.read_frame(
        "SELECT g.* FROM golden_profile g JOIN xref x ON x.c360_id = g.c360_id "
        "WHERE x.source = :s AND x.source_record_id = :id", {"s": source, "id": record_id}).iloc[0]


def test_every_active_id_gets_one_profile_built_by_the_configured_rules(project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    assert warehouse.count("golden_profile") == warehouse.scalar("SELECT COUNT(*) FROM ids WHERE status = 'active'") == 2
    ann = profile_of(warehouse, "crm", "1")
    assert (ann["first_name"], ann["last_name"], ann["email"], ann["phone"]) == ("Ann", "Smith",
                                                                                 "ann.smith@example.org", "+14155552671")
    assert ann["address_line1"] == "22 OAK AVE"  # address: most_recent (the shop's June record)
    assert ann["sources"] == "crm,shop" and ann["record_count"] == 2
    # seen from her first record to her last order, which came after every record
    assert (str(ann["first_seen"])[:10], str(ann["last_seen"])[:10]) == ("2024-01-01", "2024-08-02")
    bob = profile_of(warehouse, "crm", "2")
    assert bob["first_name"] == "Robert"  # Bob is a nickname of Robert, which the shop record carries
    assert all(check.passed for check in profile_checks(warehouse))


def test_provenance_contact_points_and_insights_are_read_back_for_a_person(project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    ann = Customer360(project).profile(profile_of(warehouse, "crm", "1")["c360_id"])
    assert not ann["redirected"]
    address = ann["provenance"]["address"]
    assert (address["source"], address["source_record_id"], address["rule"]) == ("shop", "S1", "most_recent")
    assert [c["record"] for c in address["competing"]] == ["crm:1"]
    addresses = [p for p in ann["contact_points"] if p["kind"] == "address"]
    assert len(addresses) == 2 and [p["is_primary"] for p in addresses].count(True) == 1
    assert ann["insights"]["order_count"] == 3
    assert ann["insights"]["lifetime_value"] == 150.5  # the refunded order does not count
    assert ann["insights"]["big_orders"] == 1
    assert ann["insights"]["last_order_at"] == "2024-08-02T00:00:00"


def test_a_rerun_on_unchanged_data_changes_no_profile(project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    before = warehouse.read_frame("SELECT c360_id, profile_hash, last_changed FROM golden_profile ORDER BY c360_id")
    report = build_profiles(warehouse, project)
    after = warehouse.read_frame("SELECT c360_id, profile_hash, last_changed FROM golden_profile ORDER BY c360_id")
    assert report.changed == 0
    pd.testing.assert_frame_equal(before, after)


def profile_tables(warehouse: WarehouseResource) -> dict[str, pd.DataFrame]:
    return {table: warehouse.read_frame(f"SELECT * FROM {table}").sort_values(keys, ignore_index=True)
            for table, keys in (("golden_profile", ["c360_id"]),
                                ("profile_contact_points", ["c360_id", "kind", "value"]),
                                ("profile_attribute_provenance", ["c360_id", "attribute"]),
                                ("profile_insights", ["c360_id", "insight"]),
                                ("profile_membership", ["source", "source_record_id"]),
                                ("profile_engagement_seen", ["source", "engagement_id"]))}


def test_a_new_batch_rebuilds_only_the_profiles_it_touches_and_agrees_with_a_full_rebuild(
        project: C360Config, instance: object) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    root = project.config_path.parent
    (root / "data/crm/batch_2.csv").write_text(
        "Id,First,Last,Email,Phone,Address,Modified\n3,Cy,Young,cy@example.org,,,2024-03-01\n", encoding="utf-8")
    run_pipeline(project, instance)  # type: ignore[arg-type]
    assert warehouse.read_frame("SELECT mode, profiles_built FROM profile_build").to_dict("records") == [
        {"mode": "incremental", "profiles_built": 1}]

    (root / "data/crm/batch_3.csv").write_text(
        'Id,First,Last,Email,Phone,Address,Modified\n2,Bob,Jones,bob@example.org,,"5 Maple Ave, Austin, TX 73301",'
        "2024-09-01\n", encoding="utf-8")
    summary = run_pipeline(project, instance)  # type: ignore[arg-type]
    assert warehouse.read_frame("SELECT mode, profiles_built FROM profile_build").to_dict("records") == [
        {"mode": "incremental", "profiles_built": 1}]
    printed = {stage.name: stage.counts for stage in summary.stages}  # what `c360 run` shows
    assert printed["profiles"]["profiles (re)built this run"] == 1
    assert 2 <= printed["identity"]["records (re)resolved this run"] < printed["identity"]["source records"]
    bob = profile_of(warehouse, "crm", "2")
    assert (bob["address_line1"], bob["record_count"]) == ("5 MAPLE AVE", 2)  # address: most_recent
    assert warehouse.count("golden_profile") == 3

    incremental = profile_tables(warehouse)
    report = build_profiles(warehouse, project, full=True)
    assert (report.mode, report.rebuilt, report.changed, report.events) == ("full", 3, 0, 0)
    for table, frame in profile_tables(warehouse).items():
        pd.testing.assert_frame_equal(frame, incremental[table], check_dtype=False, obj=table)


def test_changed_profile_rules_rebuild_every_profile(project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    assert build_profiles(warehouse, project).rebuilt == 0
    changed = project.model_copy(update={"profile": project.profile.model_copy(update={"ignore_empty": False})})
    assert build_profiles(warehouse, changed).mode == "full"


def test_a_merged_id_answers_with_the_survivors_profile(project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    survivor = profile_of(warehouse, "crm", "1")["c360_id"]
    merged = pd.DataFrame([{"c360_id": "c360_0000000000000001", "status": "merged", "merged_into": survivor,
                            "first_seen": pd.Timestamp("2024-01-01"), "last_changed": pd.Timestamp("2024-02-01")}])
    with warehouse.transaction() as connection:
        warehouse.insert_rows("ids", merged, connection)
    found = Customer360(project).profile("c360_0000000000000001")
    assert found["redirected"] and found["c360_id"] == survivor
    assert found["merged_from"] == ["c360_0000000000000001"]
    with pytest.raises(NotFound):
        Customer360(project).profile("c360_00000000000000ff")


def test_c360_profile_prints_the_values_with_their_sources_and_export_nests_contact_points(
        project: C360Config, tmp_path: Path) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    c360_id = profile_of(warehouse, "crm", "1")["c360_id"]
    runner = CliRunner()
    shown = runner.invoke(app, ["profile", c360_id, "--config", str(project.config_path)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "Ann Smith" in shown.output and "shop:S1" in shown.output and "most_recent" in shown.output
    exported = runner.invoke(app, ["export", "golden_profile", "-o", str(tmp_path / "p.jsonl"),
                                   "--config", str(project.config_path)])
    assert exported.exit_code == 0, exported.output
    profiles = {p["c360_id"]: p for p in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    assert len(profiles) == 2
    assert {p["value"] for p in profiles[c360_id]["contact_points"] if p["kind"] == "email"} == {"ann.smith@example.org"}
    assert profiles[c360_id]["insights"]["order_count"] == "3"
    unknown = runner.invoke(app, ["profile", "c360_nobody", "--config", str(project.config_path)])
    assert unknown.exit_code == 2 and "no profile for c360_nobody" in unknown.output
    assert "is not a 360 ID" in unknown.output


def test_a_bad_profile_rule_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c360.yaml"
    config.write_text(SOURCES.replace("address: most_recent", "adress: most_recent"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"c360.yaml(.|\n)*profile: unknown profile attribute\(s\) in 'fields': adress"):
        load_config(config)
    config.write_text(SOURCES.replace('"count() where type = order and amount >= 100"', '"count( where"'),
                      encoding="utf-8")
    with pytest.raises(ConfigError, match=r"profile.insights.big_orders: cannot parse"):
        load_config(config)
    config.write_text(SOURCES + "  source_priority: [crm, warehouse]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"profile.source_priority: warehouse is not a person source"):
        load_config(config)


def test_a_build_cut_into_parts_in_worker_processes_equals_one_built_whole(project: C360Config) -> None:
    warehouse = WarehouseResource(url=project.warehouse)
    whole = profile_tables(warehouse)
    with warehouse.transaction() as connection:
        for table in (*PART_TABLES, "events"):
            connection.exec_driver_sql(f'DELETE FROM "{table}"')

    report = build_profiles(warehouse, project, full=True, part_people=1, workers=2)

    people = len(whole["golden_profile"])
    assert people > 1 and (report.mode, report.rebuilt, report.events) == ("full", people, people)
    assert sorted(warehouse.read_frame("SELECT type FROM events")["type"]) == ["profile.created"] * people
    for table, frame in profile_tables(warehouse).items():
        pd.testing.assert_frame_equal(frame.drop(columns="last_changed", errors="ignore"),
                                      whole[table].drop(columns="last_changed", errors="ignore"),
                                      check_dtype=False, obj=table)


def test_parts_keep_a_merged_id_with_its_survivor_and_split_pieces_with_their_origin() -> None:
    ids = pd.DataFrame({"c360_id": ["a", "b", "c", "d", "e", "f"],
                        "status": ["active", "merged", "active", "active", "active", "active"],
                        "merged_into": [None, "e", None, None, None, None]})
    splits = pd.DataFrame({"c360_id": ["a"], "related": ["f"]})

    parts = build_parts(["a", "b", "c", "d", "e", "f"], ids, splits, part_people=1)

    assert parts == [["a", "f"], ["c"], ["d"], ["b", "e"]]


def _worker_children(pid: int) -> list[int]:
    """The pool worker processes `pid` started (not multiprocessing's resource tracker)."""
    found = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
             for child in (task / "children").read_text().split()]
    return [child for child in found if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended and only waits to be reaped


def test_a_killed_build_leaves_no_worker_process_behind(tmp_path: Path) -> None:
    script = tmp_path / "build.py"
    script.write_text(textwrap.dedent("""
        import time
        from c360_pipelines.profiles import _worker_pool
        if __name__ == "__main__":
            with _worker_pool(2) as pool:
                for future in [pool.submit(time.sleep, 0.2) for _ in range(4)]:
                    future.result()
                print("building", flush=True)
                time.sleep(120)
    """), encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    build = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=root,
                             env={**os.environ, "PYTHONPATH": str(root)})
    assert build.stdout is not None and build.stdout.readline().strip() == "building"
    workers = _worker_children(build.pid)
    assert len(workers) == 2
    build.kill()
    build.wait()
    deadline = time.monotonic() + 15
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _running(pid)]
    for pid in left:  # not to leave them on this machine when the spec fails
        os.kill(pid, 9)
    assert not left
