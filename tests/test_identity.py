"""Identity resolution on the demo data set, whose truth is known: the hard cases stay apart, people join up."""

import itertools
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from typer.testing import CliRunner

from c360_pipelines.cli import app
from c360_pipelines.config import C360Config, load_config
from c360_pipelines.demo import write_demo
from c360_pipelines.identity import explain_pair, resolve_identities
from c360_pipelines.runner import run_pipeline
from resources.warehouse import WarehouseResource


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> tuple[C360Config, pd.DataFrame, pd.DataFrame]:
    """The demo for 600 people, run end to end once; returns the config, xref joined to truth, and people."""
    root = tmp_path_factory.mktemp("identity_demo")
    write_demo(root, people=600, seed=11)
    config = load_config(root / "c360.yaml")
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
    xref = WarehouseResource(url=config.warehouse).read_frame("SELECT source, source_record_id, c360_id FROM xref")
    truth = pd.read_csv(root / "truth.csv", dtype=str).merge(xref, on=["source", "source_record_id"], how="left")
    people = pd.read_csv(root / "people.csv", dtype=str).fillna("")
    return config, truth, people


def pairs(frame: pd.DataFrame, by: str) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for _, group in frame.groupby(by):
        found.update(itertools.combinations(sorted(group["source"] + ":" + group["source_record_id"]), 2))
    return found


def test_every_record_gets_a_360_id(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame]) -> None:
    _, truth, _ = resolved
    assert truth["c360_id"].notna().all()


def test_the_same_people_are_found_with_high_precision_and_recall(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame]) -> None:
    _, truth, _ = resolved
    true_pairs, found = pairs(truth, "person_id"), pairs(truth, "c360_id")
    precision = len(true_pairs & found) / len(found)
    recall = len(true_pairs & found) / len(true_pairs)
    assert precision > 0.95 and recall > 0.95, (precision, recall)


@pytest.mark.parametrize("tag", ["twin", "household", "shared_email"])
def test_hard_cases_are_not_merged(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame], tag: str) -> None:
    _, truth, people = resolved
    tagged = set(people.loc[people["tags"].str.contains(tag), "person_id"])
    ids_per_person = truth[truth["person_id"].isin(tagged)].groupby("c360_id")["person_id"].nunique()
    wrongly_merged = int((ids_per_person > 1).sum())
    assert wrongly_merged <= max(1, len(tagged) // 50), f"{wrongly_merged} 360 IDs mix {tag} people"


def test_unrelated_people_typing_the_same_junk_email_are_not_linked(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame]) -> None:
    config, truth, _ = resolved
    warehouse = WarehouseResource(url=config.warehouse)
    junk = warehouse.read_frame(
        "SELECT source, source_record_id FROM contact_point_email WHERE email_key = 'noemail@example.com'")
    merged = junk.merge(truth, on=["source", "source_record_id"]).groupby("c360_id")["person_id"].nunique()
    assert len(junk) >= 2 and (merged <= 1).all()


def test_a_rerun_on_unchanged_data_keeps_every_id(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame]) -> None:
    config, truth, _ = resolved
    warehouse = WarehouseResource(url=config.warehouse)
    report = resolve_identities(warehouse, config.match)
    again = warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref")
    before = truth[["source", "source_record_id", "c360_id"]].sort_values(["source", "source_record_id"]).reset_index(drop=True)
    after = again.sort_values(["source", "source_record_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after, check_dtype=False)
    assert report.created == report.merged == report.split == 0


def test_explain_names_the_guard_that_keeps_twins_apart(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame]) -> None:
    config, truth, people = resolved
    twin_ids = people.loc[people["tags"].str.contains("twin"), "person_id"].tolist()
    by_person = truth.groupby("person_id")
    for first, second in zip(twin_ids[::2], twin_ids[1::2], strict=False):
        a, b = by_person.get_group(first).iloc[0], by_person.get_group(second).iloc[0]
        why = explain_pair(WarehouseResource(url=config.warehouse), config.match,
                           f"{a.source}:{a.source_record_id}", f"{b.source}:{b.source_record_id}")
        if why.guard:
            assert not why.same_person and why.guard == "name_conflict"
            assert {f: lv for f, lv, _ in why.fields}["first_name"] == "different"
            return
    pytest.fail("no twin pair was compared: the demo should contain twins sharing a surname and an address")


def test_lookup_prints_the_person_with_all_their_records(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame]) -> None:
    config, truth, _ = resolved
    multi = truth.groupby("c360_id").filter(lambda g: g["source"].nunique() >= 3).iloc[0]
    result = CliRunner().invoke(app, ["lookup", "--source", multi.source, "--id", multi.source_record_id,
                                      "--config", str(config.config_path)])
    assert result.exit_code == 0, result.output
    person = json.loads(result.output)
    assert person["c360_id"] == multi.c360_id and len({r["source"] for r in person["records"]}) >= 3


def test_export_xref_has_exactly_the_contract_columns(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    config, truth, _ = resolved
    out = tmp_path / "xref.csv"
    result = CliRunner().invoke(app, ["export", "xref", "-o", str(out), "--config", str(config.config_path)])
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(out, dtype=str)
    assert list(exported.columns) == ["source", "source_record_id", "c360_id"] and len(exported) == len(truth)


def test_lookup_of_an_unknown_record_is_a_clear_error(resolved: tuple[C360Config, pd.DataFrame, pd.DataFrame]) -> None:
    config, _, _ = resolved
    result = CliRunner().invoke(app, ["lookup", "--source", "crm", "--id", "nope", "--config", str(config.config_path)])
    assert result.exit_code == 2 and "no record crm:nope" in result.output


def test_two_common_names_a_letter_apart_are_different_names_not_a_typo() -> None:
    import numpy as np

    from c360_pipelines.core.compare import _first_name_levels, similarity

    a, b = np.array(["marc", "jonh"], dtype=object), np.array(["mary", "john"], dtype=object)
    code = {"marc": 0, "mary": 1, "jonh": 2, "john": 3}
    records_with = {"marc": 40, "mary": 60, "jonh": 1, "john": 80}

    def per_name(table: dict[str, int], names: np.ndarray) -> np.ndarray:
        return np.array([table[name] for name in names])

    levels = _first_name_levels(per_name(code, a), per_name(code, b), a, b, similarity(a, b),
                                per_name(records_with, a), per_name(records_with, b))
    assert levels.tolist() == [0, 1]


@pytest.mark.parametrize("warehouse_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_new_batch_is_resolved_incrementally_with_the_same_result_as_resolving_everything(
        tmp_path: Path, warehouse_url: str) -> None:
    write_demo(tmp_path, people=400, seed=13)
    config_file = tmp_path / "c360.yaml"
    config_file.write_text(config_file.read_text(encoding="utf-8").replace(
        "warehouse: sqlite:///.c360/warehouse.db", f"warehouse: {warehouse_url}"), encoding="utf-8")
    config = load_config(config_file)
    warehouse = WarehouseResource(url=config.warehouse)
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
        crm = pd.read_csv(tmp_path / "data/crm/contacts_1.csv", dtype=str, keep_default_na=False)
        changed = crm.head(40).assign(Email=[f"moved.{n}@example.net" for n in range(40)],
                                      LastModifiedDate="2025-01-15T10:00:00Z")
        changed.to_csv(tmp_path / "data/crm/contacts_9.csv", index=False)
        run_pipeline(config, instance)
    run = warehouse.read_frame("SELECT mode, records, records_resolved FROM identity_run").iloc[0]
    assert run["mode"] == "incremental" and 40 <= run["records_resolved"] < run["records"] / 2

    def state() -> tuple[pd.DataFrame, pd.DataFrame]:
        return (warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref ORDER BY 1, 2"),
                warehouse.read_frame("SELECT c360_id, status, merged_into FROM ids ORDER BY 1"))

    incremental_xref, incremental_ids = state()
    report = resolve_identities(warehouse, config.match, full=True)
    full_xref, full_ids = state()
    assert report.mode == "full" and report.created == report.merged == report.split == 0
    pd.testing.assert_frame_equal(incremental_xref, full_xref)
    pd.testing.assert_frame_equal(incremental_ids, full_ids)
    assert resolve_identities(warehouse, config.match).records_resolved == 0  # nothing new since


def test_a_first_run_blocks_and_compares_the_records_once_for_training_and_resolving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from c360_pipelines.core import block

    blocked: list[int] = []
    candidate_pairs = block.candidate_pairs

    def counted(*args: object, **kwargs: object) -> block.Candidates:
        found = candidate_pairs(*args, **kwargs)  # type: ignore[arg-type]
        blocked.append(len(found.pairs))
        return found

    monkeypatch.setattr(block, "candidate_pairs", counted)
    write_demo(tmp_path, people=150, seed=3)
    config = load_config(tmp_path / "c360.yaml")
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
    assert len(blocked) == 1 and blocked[0] > 0
    assert WarehouseResource(url=config.warehouse).count("xref") > 0


FAMILY = """
sources:
  - name: crm
    path: data/crm.csv
    id: Id
    fields: {first_name: First, last_name: Last, email: Email, phone: Phone,
             birth_date: {column: Born, format: "%Y-%m-%d"}}
  - name: support
    path: data/tickets.csv
    id: Id
    fields: {first_name: First, last_name: Last, email: Email, phone: Phone}
"""


def family_resolved(tmp_path: Path, files: dict[str, str]) -> tuple[C360Config, WarehouseResource, dict[str, str]]:
    """A crm and a support source of one family, run end to end; returns config, warehouse and SOURCE:ID -> 360 ID."""
    from tests.conftest import write_project

    config = write_project(tmp_path, FAMILY, files, f"sqlite:///{tmp_path / 'w.db'}")
    with dg.DagsterInstance.ephemeral() as instance:
        run_pipeline(config, instance)
    warehouse = WarehouseResource(url=config.warehouse)
    ids = dict(warehouse.read_frame("SELECT source || ':' || source_record_id AS k, c360_id FROM xref").to_numpy())
    return config, warehouse, ids


def test_a_ticket_that_fits_a_father_and_son_of_one_name_is_left_on_its_own_for_a_steward(tmp_path: Path) -> None:
    config, warehouse, ids = family_resolved(tmp_path, {
        "data/crm.csv": """
            Id,First,Last,Email,Phone,Born
            F,Ralph,Hampton,thehamptons47@aol.com,(212) 754-5501,1950-01-31
            S,Ralph,Hampton,thehamptons47@aol.com,(312) 640-6780,1981-04-08
        """,
        "data/tickets.csv": """
            Id,First,Last,Email,Phone
            T1,Ralph,Hampton,thehamptons47@aol.com,
        """,
    })
    assert len({ids["crm:F"], ids["crm:S"], ids["support:T1"]}) == 3
    guards = warehouse.read_frame("SELECT guard, value FROM identity_guard WHERE guard = 'ambiguous_record'")
    assert guards["value"].tolist() == ["support:T1"]
    why = explain_pair(warehouse, config.match, "support:T1", "crm:F")
    assert why.linked and not why.same_person and why.ambiguous == ["support:T1"]


def test_a_family_email_and_the_last_name_count_once_so_a_daughter_called_liz_stays_apart_from_her_mother(
        tmp_path: Path) -> None:
    config, warehouse, ids = family_resolved(tmp_path, {
        "data/crm.csv": """
            Id,First,Last,Email,Phone,Born
            K,Kristopher,Harrison,theharrisons69@icloud.com,(646) 675-8965,1964-07-18
            E,Elizabeth,Harrison,theharrisons69@icloud.com,(512) 390-2567,1957-08-11
        """,
        "data/tickets.csv": """
            Id,First,Last,Email,Phone
            T1,Elizabeth,Harrison,theharrisons69@icloud.com,
            T2,Liz,Harrison,theharrisons69@icloud.com,(201) 210-8441
        """,
    })
    assert ids["support:T1"] == ids["crm:E"]  # her first name on the family email: her own ticket
    assert ids["support:T2"] != ids["crm:E"]  # a nickname, the family email, another phone: someone else
    why = explain_pair(warehouse, config.match, "support:T2", "crm:E")
    labels = {name: label for name, label, _ in why.fields}
    assert labels["email"] == labels["last_name"].replace("same", "shared") == "shared (a household's: counted once)"
    bits = {name: weight for name, _, weight in why.fields}
    assert min(bits["email"], bits["last_name"]) == 0.0 < max(bits["email"], bits["last_name"])
