"""Stable 360 IDs: what happens to IDs when people appear, merge and split."""

import datetime as dt

import pandas as pd

from c360_pipelines.core.ids import ACTIVE, MERGED, assign_ids, resolve

T0, T1, T2 = dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1), dt.datetime(2024, 3, 1)
EMPTY_XREF = pd.DataFrame(columns=["record_key", "c360_id"])
EMPTY_IDS = pd.DataFrame(columns=["c360_id", "status", "merged_into", "first_seen", "last_changed"])


def clusters(*groups: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"record_key": key, "cluster": n} for n, group in enumerate(groups) for key in group])


def person_of(assignment: object, key: str) -> str:
    xref = assignment.xref  # type: ignore[attr-defined]
    return str(xref.loc[xref["record_key"] == key, "c360_id"].iloc[0])


def test_a_run_from_scratch_gives_the_same_ids_every_time() -> None:
    first = assign_ids(clusters(["crm:1", "shop:9"], ["crm:2"]), EMPTY_XREF, EMPTY_IDS, T0)
    again = assign_ids(clusters(["crm:1", "shop:9"], ["crm:2"]), EMPTY_XREF, EMPTY_IDS, T1)
    pd.testing.assert_frame_equal(first.xref, again.xref)
    assert person_of(first, "crm:1") == person_of(first, "shop:9") != person_of(first, "crm:2")
    assert person_of(first, "crm:1").startswith("c360_")


def test_unchanged_data_keeps_the_identical_mapping_and_changes_nothing() -> None:
    first = assign_ids(clusters(["a:1", "b:1"], ["a:2"]), EMPTY_XREF, EMPTY_IDS, T0)
    second = assign_ids(clusters(["a:1", "b:1"], ["a:2"]), first.xref, first.ids, T1)
    pd.testing.assert_frame_equal(first.xref, second.xref)
    pd.testing.assert_frame_equal(first.ids, second.ids)
    assert second.changes.empty


def test_a_new_record_does_not_change_the_ids_of_unaffected_people() -> None:
    first = assign_ids(clusters(["a:1"], ["a:2"]), EMPTY_XREF, EMPTY_IDS, T0)
    second = assign_ids(clusters(["a:1", "b:7"], ["a:2"], ["a:0"]), first.xref, first.ids, T1)
    assert person_of(second, "a:1") == person_of(first, "a:1") == person_of(second, "b:7")
    assert person_of(second, "a:2") == person_of(first, "a:2")
    assert list(second.changes["change"]) == ["created"]


def test_when_two_people_merge_the_older_id_survives_and_the_other_points_to_it() -> None:
    first = assign_ids(clusters(["a:1"]), EMPTY_XREF, EMPTY_IDS, T0)
    second = assign_ids(clusters(["a:1"], ["b:1"]), first.xref, first.ids, T1)
    older, newer = person_of(second, "a:1"), person_of(second, "b:1")
    third = assign_ids(clusters(["a:1", "b:1"]), second.xref, second.ids, T2)
    assert person_of(third, "b:1") == older
    row = third.ids.set_index("c360_id").loc[newer]
    assert row["status"] == MERGED and row["merged_into"] == older
    assert resolve(newer, third.ids) == older
    assert third.changes.to_dict("records") == [{"c360_id": older, "change": "merged", "related": newer}]


def test_when_a_person_splits_the_largest_part_keeps_the_id() -> None:
    first = assign_ids(clusters(["a:1", "a:2", "a:3"]), EMPTY_XREF, EMPTY_IDS, T0)
    original = person_of(first, "a:1")
    second = assign_ids(clusters(["a:1"], ["a:2", "a:3"]), first.xref, first.ids, T1)
    assert person_of(second, "a:2") == person_of(second, "a:3") == original
    assert person_of(second, "a:1") != original
    assert second.ids.set_index("c360_id").loc[original, "status"] == ACTIVE
    assert "split" in set(second.changes["change"])


def test_a_retired_id_chain_resolves_to_the_live_survivor() -> None:
    ids = pd.DataFrame([
        {"c360_id": "c360_a", "status": "merged", "merged_into": "c360_b", "first_seen": T1, "last_changed": T2},
        {"c360_id": "c360_b", "status": "merged", "merged_into": "c360_c", "first_seen": T1, "last_changed": T2},
        {"c360_id": "c360_c", "status": "active", "merged_into": None, "first_seen": T0, "last_changed": T0},
    ])
    assert resolve("c360_a", ids) == "c360_c"
    assert resolve("c360_unknown", ids) is None
