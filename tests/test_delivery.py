"""Webhook delivery against a real HTTP server on 127.0.0.1: signatures, order, retries, dead letters, restarts."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from c360_pipelines.config import C360Config, ConfigError, load_config
from c360_pipelines.events import deliver_pending, replay_dead_letters
from resources.warehouse import WarehouseResource
from tests.webhook_receiver import SECRET, Receiver

BASE_TIME = dt.datetime(2026, 1, 1, 12, 0, 0)


def project(tmp_path: Path, warehouse_url: str, url: str, extra: str = "", secret: str = SECRET,
            timeout: float = 1) -> C360Config:
    config = tmp_path / "c360.yaml"
    config.write_text(f"""
warehouse: {warehouse_url}
sources:
  - {{name: crm, path: data/*.csv, id: Id}}
subscribers:
  - name: hooks
    url: {url}
    secret: {secret}
    max_attempts: 3
    backoff_seconds: 10
    timeout_seconds: {timeout}
{extra}""", encoding="utf-8")
    return load_config(config)


def outbox(warehouse: WarehouseResource, events: list[tuple[str, str]]) -> None:
    """Append (type, subject) events to the outbox, as a profile build would."""
    start = int(warehouse.scalar("SELECT COALESCE(MAX(seq), 0) FROM events"))
    rows = pd.DataFrame([{"seq": start + i + 1, "event_id": f"evt-{start + i + 1}", "type": kind, "subject": subject,
                          "time": BASE_TIME, "data": json.dumps({"c360_id": subject, "n": start + i + 1})}
                         for i, (kind, subject) in enumerate(events)])
    with warehouse.transaction() as connection:
        warehouse.insert_rows("events", rows, connection)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def warehouse(warehouse_url: str) -> WarehouseResource:
    resource = WarehouseResource(url=warehouse_url)
    resource.ensure_tables()
    return resource


def test_each_event_arrives_once_as_a_signed_cloudevent(tmp_path: Path, warehouse: WarehouseResource,
                                                        receiver: Receiver) -> None:
    config = project(tmp_path, warehouse.url, receiver.url)
    outbox(warehouse, [("profile.created", "c360_a"), ("profile.created", "c360_b")])
    report = deliver_pending(warehouse, config)
    assert (report.queued, report.delivered, report.waiting) == (2, 2, 0)
    events = sorted(receiver.verified_events(), key=lambda e: e["id"])  # verify() raises on a bad signature
    assert [e["id"] for e in events] == ["evt-1", "evt-2"]  # two profiles: delivered in parallel
    assert events[0]["specversion"] == "1.0" and events[0]["source"] == "/c360/profiles"
    assert events[0]["subject"] == "c360_a" and events[0]["data"] == {"c360_id": "c360_a", "n": 1}
    first = next(r for r in receiver.received if r.headers["webhook-id"] == "evt-1")
    assert first.headers["content-type"] == "application/cloudevents+json"
    assert first.headers["webhook-id"] == "evt-1" and first.headers["webhook-signature"].startswith("v1,")
    assert deliver_pending(warehouse, config).delivered == 0
    assert len(receiver.received) == 2


def test_a_tampered_body_fails_verification(tmp_path: Path, warehouse: WarehouseResource, receiver: Receiver) -> None:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    outbox(warehouse, [("profile.created", "c360_a")])
    deliver_pending(warehouse, project(tmp_path, warehouse.url, receiver.url))
    arrived = receiver.received[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(arrived.body.replace("c360_a", "c360_x"), arrived.headers)


def test_a_500_is_retried_after_a_backoff_and_the_profiles_later_events_wait_for_it(
        tmp_path: Path, warehouse: WarehouseResource) -> None:
    tried: set[str] = set()

    def fail_first_try_of_evt_1(_: int, event_id: str) -> tuple[int, float]:
        first_try = event_id not in tried
        tried.add(event_id)
        return (500, 0.0) if event_id == "evt-1" and first_try else (200, 0.0)

    receiver = Receiver(answer=fail_first_try_of_evt_1)
    try:
        config = project(tmp_path, warehouse.url, receiver.url)
        outbox(warehouse, [("profile.created", "c360_a"), ("profile.updated", "c360_a"), ("profile.created", "c360_b")])
        first = deliver_pending(warehouse, config, now=BASE_TIME)
        assert (first.delivered, first.failed) == (1, 1)
        assert [e["id"] for e in receiver.verified_events()] == ["evt-3"]  # c360_a's update waits behind its creation
        assert deliver_pending(warehouse, config, now=BASE_TIME + dt.timedelta(seconds=5)).delivered == 0  # backoff
        later = deliver_pending(warehouse, config, now=BASE_TIME + dt.timedelta(seconds=11))
        assert later.delivered == 2
        assert [e["id"] for e in receiver.verified_events()] == ["evt-3", "evt-1", "evt-2"]
        log = warehouse.read_frame("SELECT event_id, attempt, status_code FROM delivery_attempt ORDER BY attempted_at")
        assert log[log["event_id"] == "evt-1"][["attempt", "status_code"]].values.tolist() == [[1, 500], [2, 200]]
    finally:
        receiver.stop()


def test_a_receiver_that_stays_down_gets_a_dead_letter_that_replay_sends_again(
        tmp_path: Path, warehouse: WarehouseResource) -> None:
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused, and no one else gets the port
    url = f"http://127.0.0.1:{reserved.getsockname()[1]}/hooks"
    config = project(tmp_path, warehouse.url, url)
    outbox(warehouse, [("profile.created", "c360_a"), ("profile.updated", "c360_a")])
    for step in range(6):  # max_attempts: 3 each, with the clock moved past each backoff; evt-2 waits for evt-1
        deliver_pending(warehouse, config, now=BASE_TIME + dt.timedelta(hours=step))
    letters = warehouse.read_frame("SELECT event_id, attempts, last_error FROM dead_letter ORDER BY seq")
    assert letters["event_id"].tolist() == ["evt-1", "evt-2"]
    assert (letters["attempts"] == 3).all() and letters["last_error"].str.contains("ConnectError").all()

    reserved.close()
    receiver = Receiver()
    try:
        revived = project(tmp_path, warehouse.url, receiver.url)
        assert replay_dead_letters(warehouse, subscriber="hooks") == 2
        assert warehouse.count("dead_letter") == 0
        assert deliver_pending(warehouse, revived).delivered == 2
        assert [e["id"] for e in receiver.verified_events()] == ["evt-1", "evt-2"]
    finally:
        receiver.stop()


def test_a_slow_receiver_times_out_and_the_event_is_tried_again(tmp_path: Path, warehouse: WarehouseResource) -> None:
    receiver = Receiver(answer=lambda n, _: (200, 2.0) if n == 1 else (200, 0.0))  # timeout_seconds is 1
    try:
        config = project(tmp_path, warehouse.url, receiver.url)
        outbox(warehouse, [("profile.created", "c360_a")])
        assert deliver_pending(warehouse, config, now=BASE_TIME).failed == 1
        error = warehouse.scalar("SELECT error FROM delivery_attempt")
        assert "Timeout" in error
        assert deliver_pending(warehouse, config, now=BASE_TIME + dt.timedelta(minutes=1)).delivered == 1
    finally:
        receiver.stop()


def test_a_subscriber_gets_only_the_event_types_it_asked_for(tmp_path: Path, warehouse: WarehouseResource,
                                                           receiver: Receiver) -> None:
    config = project(tmp_path, warehouse.url, receiver.url)
    picky = config.model_copy(update={"subscribers": [config.subscribers[0].model_copy(
        update={"events": ("profile.merged", "segment.*")})]})
    outbox(warehouse, [("profile.created", "c360_a"), ("profile.merged", "c360_a"), ("segment.entered", "c360_a"),
                       ("profile.updated", "c360_a")])
    deliver_pending(warehouse, picky)
    assert [e["type"] for e in receiver.verified_events()] == ["profile.merged", "segment.entered"]


def test_a_secret_from_an_unset_environment_variable_is_reported_by_subscriber(
        tmp_path: Path, warehouse: WarehouseResource, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("C360_TEST_HOOK_SECRET", raising=False)
    config = project(tmp_path, warehouse.url, receiver.url, secret="{env: C360_TEST_HOOK_SECRET}")
    outbox(warehouse, [("profile.created", "c360_a")])
    report = deliver_pending(warehouse, config)
    assert report.errors == {"hooks": "subscribers (hooks).secret: environment variable C360_TEST_HOOK_SECRET is not set"}
    monkeypatch.setenv("C360_TEST_HOOK_SECRET", SECRET)
    assert deliver_pending(warehouse, config).delivered == 1


def test_a_secret_that_is_not_a_standard_webhooks_secret_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"subscribers\[0\] \(hooks\)|subscribers\[0\].*whsec_"):
        project(tmp_path, "sqlite://", "http://127.0.0.1:9/x", secret="hunter2")


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_a_restart_in_the_middle_of_delivery_loses_nothing_and_reorders_nothing(
        tmp_path: Path, warehouse: WarehouseResource) -> None:
    receiver = Receiver(answer=lambda _n, _id: (200, 0.01))
    try:
        config = project(tmp_path, warehouse.url, receiver.url, timeout=10)
        subjects = [f"c360_{i % 7}" for i in range(600)]
        outbox(warehouse, [("profile.updated", s) for s in subjects])
        command = [sys.executable, "-m", "c360_pipelines.cli", "events", "deliver", "--config", str(config.config_path)]
        worker = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(receiver.received) < 150 and time.time() < deadline:
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        assert 0 < len(receiver.received) < 600, "the delivery was not interrupted midway"
        for later in range(1, 6):  # the next delivery runs, past any backoff an attempt under load may have earned
            if deliver_pending(warehouse, config, now=dt.datetime.now() + dt.timedelta(hours=later)).waiting == 0:
                break
        seen: list[int] = []
        for event in receiver.verified_events():
            number = int(event["id"].removeprefix("evt-"))
            if number not in seen:
                seen.append(number)
        assert sorted(seen) == list(range(1, 601))  # nothing lost
        for subject in set(subjects):  # per profile, first arrivals are in outbox order
            mine = [n for n in seen if subjects[n - 1] == subject]
            assert mine == sorted(mine)
    finally:
        receiver.stop()
