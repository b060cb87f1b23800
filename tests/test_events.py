"""Change events: which events a profile change makes, actions, the end-to-end path and the sensors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from c360_pipelines.core.events import Action, ProfileState, diff_profiles
from c360_pipelines.core.expressions import parse_condition
from c360_pipelines.core.insights import parse_insights
from c360_pipelines.definitions import build_definitions
from c360_pipelines.events import deliver_pending
from c360_pipelines.runner import run_pipeline
from resources.warehouse import WarehouseResource
from tests.conftest import write_project
from tests.webhook_receiver import SECRET, Receiver

NOW = dt.datetime(2026, 3, 1, 9, 0)
INSIGHTS = parse_insights({"lifetime_value": "sum(amount) where type = order"})
VIP = Action("vip", ("profile.created", "profile.updated"), parse_condition("lifetime_value >= 1000"),
             "segment.entered", {"segment": "vip"})


def state(*profiles: dict[str, object], values: dict[str, float] | None = None) -> ProfileState:
    golden = pd.DataFrame([{"first_name": None, "email": None, **p} for p in profiles])
    golden["profile_hash"] = [json.dumps(p, sort_keys=True, default=str) for p in profiles]
    insights = pd.DataFrame([{"c360_id": k, "insight": "lifetime_value", "value": str(v), "number": v}
                             for k, v in (values or {}).items()], columns=["c360_id", "insight", "value", "number"])
    return ProfileState(golden, insights, pd.DataFrame(columns=["c360_id", "kind", "value"]))


def ids(*rows: tuple[str, str, str | None]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["c360_id", "status", "merged_into"])


NO_SPLITS = pd.DataFrame(columns=["c360_id", "related"])


def test_unchanged_profiles_make_no_event() -> None:
    same = state({"c360_id": "a", "email": "a@x.org"})
    assert diff_profiles(same, same, ids(("a", "active", None)), NO_SPLITS, INSIGHTS, [VIP], NOW).empty


def test_a_merge_names_the_survivor_and_the_absorbed_and_an_update_lists_old_and_new_values() -> None:
    before = state({"c360_id": "a", "first_name": "Ann", "email": None}, {"c360_id": "b", "first_name": "Ann"})
    after = state({"c360_id": "a", "first_name": "Ann", "email": "ann@x.org"})
    events = diff_profiles(before, after, ids(("a", "active", None), ("b", "merged", "a")), NO_SPLITS, INSIGHTS, [],
                           NOW)
    assert events["type"].tolist() == ["profile.merged", "profile.updated"]
    assert json.loads(events["data"][0]) == {"c360_id": "a", "survivor": "a", "absorbed": ["b"]}
    changes = json.loads(events["data"][1])["changes"]
    assert changes["email"] == {"old": None, "new": "ann@x.org"}
    assert "first_name" not in changes


def test_a_split_names_the_ids_that_came_out_and_each_new_one_is_created() -> None:
    before = state({"c360_id": "a", "first_name": "Ann"})
    after = state({"c360_id": "a", "first_name": "Ann"}, {"c360_id": "c", "first_name": "Anna"})
    splits = pd.DataFrame([{"c360_id": "a", "related": "c"}])
    events = diff_profiles(before, after, ids(("a", "active", None), ("c", "active", None)), splits, INSIGHTS, [], NOW)
    assert events["type"].tolist() == ["profile.split", "profile.created"]
    assert json.loads(events["data"][0]) == {"c360_id": "a", "into": ["a", "c"]}
    assert json.loads(events["data"][1])["split_from"] == "a"


def test_a_profile_that_is_gone_without_a_survivor_is_deleted() -> None:
    before = state({"c360_id": "a"}, {"c360_id": "b"})
    after = state({"c360_id": "a"})
    events = diff_profiles(before, after, ids(("a", "active", None), ("b", "retired", None)), NO_SPLITS, INSIGHTS, [],
                           NOW)
    assert events[["type", "subject"]].values.tolist() == [["profile.deleted", "b"]]


def test_the_same_change_always_has_the_same_event_id() -> None:
    before, after = state({"c360_id": "a", "email": "a@x.org"}), state({"c360_id": "a", "email": "b@x.org"})
    first = diff_profiles(before, after, ids(("a", "active", None)), NO_SPLITS, INSIGHTS, [], NOW)
    again = diff_profiles(before, after, ids(("a", "active", None)), NO_SPLITS, INSIGHTS, [], NOW + dt.timedelta(1))
    assert first["event_id"].tolist() == again["event_id"].tolist()


def test_an_action_fires_when_its_condition_starts_to_hold_and_not_while_it_keeps_holding() -> None:
    empty = ProfileState.empty()
    small = state({"c360_id": "a", "email": "1"}, values={"a": 400.0})
    crossed = state({"c360_id": "a", "email": "2"}, values={"a": 1200.0})
    still = state({"c360_id": "a", "email": "3"}, values={"a": 1500.0})
    active = ids(("a", "active", None))

    def fired(before: ProfileState, after: ProfileState) -> list[str]:
        events = diff_profiles(before, after, active, NO_SPLITS, INSIGHTS, [VIP], NOW)
        return events.loc[events["type"] == "segment.entered", "subject"].tolist()

    assert fired(empty, small) == []
    assert fired(small, crossed) == ["a"]
    assert fired(crossed, still) == []
    assert fired(empty, crossed) == ["a"]  # a new profile that already qualifies
    data = diff_profiles(small, crossed, active, NO_SPLITS, INSIGHTS, [VIP], NOW).iloc[-1]["data"]
    assert json.loads(data) == {"action": "vip", "c360_id": "a", "segment": "vip"}


# ------------------------------------------------------------------------------------- end to end

PROJECT = f"""
sources:
  - name: crm
    path: data/crm/*.csv
    id: Id
    updated_at: Modified
    fields: {{first_name: First, last_name: Last, email: Email, phone: Phone}}
  - name: shop
    path: data/shop/*.csv
    id: Id
    fields: {{first_name: First, last_name: Last, email: Email, phone: Phone}}
  - name: loyalty
    path: data/loyalty/*.csv
    id: Id
    fields: {{first_name: First, last_name: Last, email: Email, phone: Phone}}
match:
  rules:
    - name: same_email_and_name
      criteria: [{{field: email}}, {{field: first_name}}, {{field: last_name}}]
    - name: same_phone_and_name
      criteria: [{{field: phone}}, {{field: first_name}}, {{field: last_name}}]
subscribers:
  - name: crm_sync
    url: URL
    secret: {SECRET}
"""
FIRST_BATCH = {
    "data/crm/batch_1.csv": """
        Id,First,Last,Email,Phone,Modified
        1,Ann,Smith,ann.smith@example.org,,2024-01-01
        2,Bob,Jones,bob@example.org,415.555.0199,2024-01-01
    """,
    "data/shop/batch_1.csv": """
        Id,First,Last,Email,Phone
        S1,Ann,,,(415) 555-2671
    """,
    "data/loyalty/batch_0.csv": """
        Id,First,Last,Email,Phone
        L0,Cy,Young,cy@example.org,
    """,
}


@pytest.mark.parametrize("warehouse_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_batch_that_merges_two_people_and_changes_a_third_sends_exactly_those_events(
        tmp_path: Path, warehouse_url: str, instance: dg.DagsterInstance) -> None:
    receiver = Receiver()
    try:
        config = write_project(tmp_path, PROJECT.replace("URL", receiver.url), FIRST_BATCH, warehouse_url)
        warehouse = WarehouseResource(url=config.warehouse)
        run_pipeline(config, instance)
        deliver_pending(warehouse, config)
        created = receiver.verified_events()
        assert sorted(e["type"] for e in created) == ["profile.created"] * 4
        by_record = {(r["source"], r["source_record_id"]): r["c360_id"] for r in
                     warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref").to_dict("records")}
        ann_crm, ann_shop, bob = by_record["crm", "1"], by_record["shop", "S1"], by_record["crm", "2"]
        assert ann_crm != ann_shop

        # the shop sends Ann's record again, now with her surname and email: the two Anns are one person
        (tmp_path / "data/shop/batch_2.csv").write_text(
            "Id,First,Last,Email,Phone\nS1,Ann,Smith,ann.smith@example.org,(415) 555-2671\n", encoding="utf-8")
        (tmp_path / "data/crm/batch_2.csv").write_text(
            "Id,First,Last,Email,Phone,Modified\n2,Bob,Jones,bob.jones@example.net,415.555.0199,2024-06-01\n",
            encoding="utf-8")
        run_pipeline(config, instance)
        report = deliver_pending(warehouse, config)
        events = receiver.verified_events()[len(created):]
        survivor = warehouse.scalar("SELECT c360_id FROM xref WHERE source = 'shop' AND source_record_id = 'S1'")
        assert survivor == warehouse.scalar("SELECT c360_id FROM xref WHERE source = 'crm' AND source_record_id = '1'")
        absorbed = ({ann_crm, ann_shop} - {survivor}).pop()
        # profiles are delivered in parallel, each profile's own events in order
        assert [(e["type"], e["subject"]) for e in events if e["subject"] == survivor] == [
            ("profile.merged", survivor), ("profile.updated", survivor)]
        assert [(e["type"], e["subject"]) for e in events if e["subject"] != survivor] == [("profile.updated", bob)]
        merged, bob_update, survivor_update = (next(e for e in events if (e["type"], e["subject"]) == key) for key in
                                               [("profile.merged", survivor), ("profile.updated", bob),
                                                ("profile.updated", survivor)])
        assert merged["data"] == {"c360_id": survivor, "survivor": survivor, "absorbed": [absorbed]}
        assert bob_update["data"]["changes"]["email"] == {"old": "bob@example.org", "new": "bob.jones@example.net"}
        assert survivor_update["data"]["changes"]["record_count"] == {"old": 1, "new": 2}
        assert report.delivered == 3

        assert deliver_pending(warehouse, config).delivered == 0
        run_pipeline(config, instance)
        assert deliver_pending(warehouse, config).queued == 0
        assert len(receiver.received) == len(created) + 3
    finally:
        receiver.stop()


def test_the_events_sensor_asks_for_a_delivery_run_only_when_events_wait(tmp_path: Path) -> None:
    config = write_project(tmp_path, PROJECT.replace("URL", "http://127.0.0.1:9/hooks"), FIRST_BATCH,
                           f"sqlite:///{tmp_path / 'w.db'}")
    defs = build_definitions(config)
    sensor = defs.resolve_sensor_def("profile_change_events")
    warehouse = WarehouseResource(url=config.warehouse)
    warehouse.ensure_tables()
    with dg.DagsterInstance.ephemeral() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse},
                                          definitions=defs)
        assert isinstance(sensor(context), dg.SkipReason)
        with warehouse.transaction() as connection:
            warehouse.insert_rows("events", pd.DataFrame([{"seq": 1, "event_id": "e1", "type": "profile.created",
                                                           "subject": "c360_a", "time": NOW, "data": "{}"}]), connection)
        request = sensor(context)
        assert isinstance(request, dg.RunRequest)
        assert defs.resolve_job_def("deliver_events").name == "deliver_events"
