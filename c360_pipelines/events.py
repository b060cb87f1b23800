"""The event outbox and webhook delivery.

Profile builds append their change events to the `events` table in the same transaction as the profile
change (see `profiles.build_profiles`). Delivery is separate and repeatable: `deliver_pending` queues new
events for each subscriber that wants their type, then POSTs each due event as a CloudEvent signed per
Standard Webhooks. Events of one profile go to a subscriber strictly in order: while one waits for a retry,
the later ones wait too. A failed attempt is retried with exponential backoff; after `max_attempts` the event
is dead-lettered and the profile's later events move on. Every attempt is logged. State is committed after
every small batch, so a crash repeats at most that batch (at least once; receivers drop duplicates by
`webhook-id`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
import urllib3
from standardwebhooks.webhooks import Webhook

from c360_pipelines.config import C360Config, SubscriberConfig
from c360_pipelines.core.events import Action, ProfileState, cloud_event, cloud_event_json, diff_profiles
from c360_pipelines.core.expressions import parse_condition
from c360_pipelines.core.insights import parse_insights
from c360_pipelines.ingest import utc_now
from c360_pipelines.model import TABLES
from resources.warehouse import WarehouseResource

PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
CONTENT_TYPE = "application/cloudevents+json"
BATCH_SIZE = 500
MAX_BACKOFF_SECONDS = 3600.0
PARALLEL_SUBJECTS = 8


# ------------------------------------------------------------------------------------------ outbox


def actions_from(config: C360Config) -> list[Action]:
    return [Action(a.name, a.on, parse_condition(a.when), a.emit, a.data) for a in config.actions]


def profile_events(before: ProfileState, after: ProfileState, ids: pd.DataFrame, splits: pd.DataFrame,
                   config: C360Config, now: dt.datetime) -> pd.DataFrame:
    """The change events between two states of some profiles (see `core.events.diff_profiles`), without seq."""
    return diff_profiles(before, after, ids, splits, parse_insights(config.profile.all_insights),
                         actions_from(config), now)


def append_events(warehouse: WarehouseResource, connection: sa.Connection, events: pd.DataFrame) -> int:
    """Append events to the outbox, numbered after the last one, inside the caller's transaction."""
    if events.empty:
        return 0
    last = connection.execute(sa.select(sa.func.max(TABLES["events"].c.seq))).scalar() or 0
    events = events.copy()
    events.insert(0, "seq", range(int(last) + 1, int(last) + 1 + len(events)))
    warehouse.insert_rows("events", events, connection)
    return len(events)


def read_events(warehouse: WarehouseResource, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Outbox rows after `after_seq`, oldest first, each with its seq and CloudEvent document."""
    table = TABLES["events"]
    statement = sa.select(table).where(table.c.seq > after_seq).order_by(table.c.seq).limit(limit)
    with warehouse.engine.connect() as connection:
        return [{"seq": row.seq, "event": cloud_event(row._mapping)} for row in connection.execute(statement)]


def last_seq(warehouse: WarehouseResource) -> int:
    return int(warehouse.scalar("SELECT COALESCE(MAX(seq), 0) FROM events"))


def undelivered_work(warehouse: WarehouseResource, config: C360Config) -> int:
    """Events not yet queued for some subscriber, plus deliveries pending and due now."""
    newest = last_seq(warehouse)
    cursors = dict(warehouse.read_frame("SELECT subscriber, last_seq FROM subscriber_cursor").itertuples(index=False))
    unqueued = sum(max(0, newest - int(cursors.get(s.name, 0))) for s in config.subscribers)
    due = int(warehouse.scalar("SELECT COUNT(*) FROM event_delivery WHERE status = 'pending' "
                               "AND next_attempt_at <= :now", {"now": utc_now()}))
    return unqueued + due


# ---------------------------------------------------------------------------------------- delivery


@dataclass
class DeliveryReport:
    queued: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    waiting: int = 0  # pending, in backoff or behind an earlier event of the same profile
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class _Outcome:
    row: dict[str, Any]
    attempted_at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.error is None


def queue_deliveries(warehouse: WarehouseResource, config: C360Config, now: dt.datetime | None = None) -> int:
    """Queue every outbox event after each subscriber's cursor whose type it wants; returns rows queued."""
    queued = 0
    events, cursors = TABLES["events"], TABLES["subscriber_cursor"]
    with warehouse.transaction() as connection:
        for subscriber in config.subscribers:
            cursor = connection.execute(sa.select(cursors.c.last_seq).where(
                cursors.c.subscriber == subscriber.name)).scalar()
            start = int(cursor or 0)
            rows = pd.read_sql(sa.select(events.c.seq, events.c.event_id, events.c.subject, events.c.type)
                               .where(events.c.seq > start).order_by(events.c.seq), connection)
            if rows.empty:
                continue
            wanted = rows[rows["type"].map(subscriber.wants)]
            deliveries = wanted.drop(columns="type").assign(
                subscriber=subscriber.name, status=PENDING, attempts=0, next_attempt_at=now or utc_now())
            warehouse.insert_rows("event_delivery", deliveries, connection)
            connection.execute(cursors.delete().where(cursors.c.subscriber == subscriber.name))
            connection.execute(cursors.insert().values(subscriber=subscriber.name, last_seq=int(rows["seq"].max())))
            queued += len(deliveries)
    return queued


def deliver_pending(warehouse: WarehouseResource, config: C360Config, now: dt.datetime | None = None,
                    max_seconds: float | None = None) -> DeliveryReport:
    """Queue new events, then attempt every due delivery once, in order per profile. Returns what happened."""
    started = time.perf_counter()
    report = DeliveryReport(queued=queue_deliveries(warehouse, config, now))
    # urllib3 rather than httpx: a keep-alive pool with a fraction of the per-request overhead (measured: ~3x)
    client = urllib3.PoolManager(maxsize=PARALLEL_SUBJECTS, retries=False)
    pool = ThreadPoolExecutor(max_workers=PARALLEL_SUBJECTS)
    try:
        for subscriber in config.subscribers:
            try:
                signer = Webhook(subscriber.signing_secret())
            except Exception as error:  # noqa: BLE001 (a missing env var or a malformed secret: report it, deliver the others)
                report.errors[subscriber.name] = str(error)
                continue
            blocked: dict[str, int] = {}
            for batch in _due_batches(warehouse, subscriber, now, blocked):
                outcomes = _send_batch(pool, client, subscriber, signer, batch)
                _record(warehouse, subscriber, outcomes, now, report)
                for outcome in outcomes:
                    if not outcome.ok and int(outcome.row["attempts"]) + 1 < subscriber.max_attempts:
                        subject, seq = outcome.row["subject"], int(outcome.row["seq"])
                        blocked[subject] = min(seq, blocked.get(subject, seq))
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    break
    finally:
        pool.shutdown()
        client.clear()
    report.waiting = int(warehouse.scalar("SELECT COUNT(*) FROM event_delivery WHERE status = 'pending'"))
    report.seconds = time.perf_counter() - started
    return report


def _due_batches(warehouse: WarehouseResource, subscriber: SubscriberConfig, now: dt.datetime | None,
                 blocked_from: dict[str, int]) -> Iterator[list[dict[str, Any]]]:
    """Due deliveries in outbox order, a batch at a time, leaving out any that would overtake a waiting
    earlier event of the same profile. `blocked_from` (profile -> seq) also takes this run's failures."""
    deliveries, events = TABLES["event_delivery"], TABLES["events"]
    after = 0
    while True:
        moment = now or utc_now()
        with warehouse.engine.connect() as connection:
            if after == 0:
                waiting = connection.execute(
                    sa.select(deliveries.c.subject, sa.func.min(deliveries.c.seq))
                    .where(deliveries.c.subscriber == subscriber.name, deliveries.c.status == PENDING,
                           deliveries.c.next_attempt_at > moment)
                    .group_by(deliveries.c.subject))
                blocked_from.update({subject: int(seq) for subject, seq in waiting})
            rows = connection.execute(
                sa.select(deliveries.c.seq, deliveries.c.event_id, deliveries.c.subject, deliveries.c.attempts,
                          events.c.type, events.c.time, events.c.data)
                .join(events, events.c.seq == deliveries.c.seq)
                .where(deliveries.c.subscriber == subscriber.name, deliveries.c.status == PENDING,
                       deliveries.c.next_attempt_at <= moment, deliveries.c.seq > after)
                .order_by(deliveries.c.seq).limit(BATCH_SIZE)).mappings().all()
        if not rows:
            return
        after = int(rows[-1]["seq"])
        batch = [dict(r) for r in rows if r["seq"] < blocked_from.get(r["subject"], 1 << 62)]
        if batch:
            yield batch


def _send_batch(pool: ThreadPoolExecutor, client: urllib3.PoolManager, subscriber: SubscriberConfig, signer: Webhook,
                batch: list[dict[str, Any]]) -> list[_Outcome]:
    """POST a batch: profiles in parallel, each profile's events one after another, stopping at a failure."""
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for row in batch:
        by_subject.setdefault(row["subject"], []).append(row)

    def send_in_order(rows: list[dict[str, Any]]) -> list[_Outcome]:
        outcomes = []
        for row in rows:
            outcome = _post(client, subscriber, signer, row)
            outcomes.append(outcome)
            if not outcome.ok:
                break  # the rest of this profile's events wait for this one
        return outcomes

    results = list(pool.map(send_in_order, by_subject.values()))
    return [outcome for outcomes in results for outcome in outcomes]


def _post(client: urllib3.PoolManager, subscriber: SubscriberConfig, signer: Webhook, row: dict[str, Any]) -> _Outcome:
    body = cloud_event_json(row)
    attempted_at = dt.datetime.now(dt.UTC)
    headers = {"content-type": CONTENT_TYPE, "webhook-id": row["event_id"],
               "webhook-timestamp": str(int(attempted_at.timestamp())),
               "webhook-signature": signer.sign(row["event_id"], attempted_at, body)}
    started = time.perf_counter()
    try:
        response = client.request("POST", subscriber.url, body=body.encode(), headers=headers,
                                  timeout=subscriber.timeout_seconds)
    except urllib3.exceptions.HTTPError as error:
        return _Outcome(row, attempted_at, None, _describe(error), (time.perf_counter() - started) * 1000)
    elapsed = (time.perf_counter() - started) * 1000
    text = response.data[:200].decode(errors="replace")
    error = None if 200 <= response.status < 300 else f"HTTP {response.status}: {text}"
    return _Outcome(row, attempted_at, response.status, error, elapsed)


def _describe(error: urllib3.exceptions.HTTPError) -> str:
    """`ConnectError: ...`, `Timeout: ...`: what went wrong, without urllib3's wrapping."""
    cause = getattr(error, "reason", None) or error
    if isinstance(cause, urllib3.exceptions.NewConnectionError):  # a subclass of the timeout errors in urllib3
        kind = "ConnectError"
    elif isinstance(cause, urllib3.exceptions.TimeoutError):
        kind = "Timeout"
    else:
        kind = type(cause).__name__
    return f"{kind}: {cause}"[:500]


def _record(warehouse: WarehouseResource, subscriber: SubscriberConfig, outcomes: list[_Outcome],
            now: dt.datetime | None, report: DeliveryReport) -> None:
    """Write the batch's attempts, new statuses and dead letters in one transaction (one statement each)."""
    deliveries = TABLES["event_delivery"]
    attempts, updates, dead = [], [], []
    moment = (now or utc_now())
    for outcome in outcomes:
        row, attempt = outcome.row, int(outcome.row["attempts"]) + 1
        attempts.append({"subscriber": subscriber.name, "event_id": row["event_id"], "attempt": attempt,
                         "attempted_at": outcome.attempted_at.replace(tzinfo=None), "status_code": outcome.status_code,
                         "error": outcome.error, "duration_ms": round(outcome.duration_ms, 2)})
        update = {"key_seq": row["seq"], "status": PENDING, "attempts": attempt, "delivered_at": None,
                  "last_error": outcome.error, "next_attempt_at": moment}
        if outcome.ok:
            update.update(status=DELIVERED, delivered_at=moment)
            report.delivered += 1
        elif attempt >= subscriber.max_attempts:
            update.update(status=DEAD)
            dead.append({"subscriber": subscriber.name, "seq": row["seq"], "event_id": row["event_id"],
                         "failed_at": moment, "attempts": attempt, "last_error": outcome.error})
            report.failed += 1
            report.dead_lettered += 1
        else:
            delay = min(subscriber.backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
            update.update(next_attempt_at=moment + dt.timedelta(seconds=delay))
            report.failed += 1
        updates.append(update)
    statement = (deliveries.update()
                 .where(deliveries.c.subscriber == subscriber.name, deliveries.c.seq == sa.bindparam("key_seq"))
                 .values(status=sa.bindparam("status"), attempts=sa.bindparam("attempts"),
                         delivered_at=sa.bindparam("delivered_at"), last_error=sa.bindparam("last_error"),
                         next_attempt_at=sa.bindparam("next_attempt_at")))
    with warehouse.transaction() as connection:
        if updates:
            connection.execute(statement, updates)
        warehouse.insert_rows("delivery_attempt", pd.DataFrame(attempts), connection)
        if dead:
            warehouse.insert_rows("dead_letter", pd.DataFrame(dead), connection)


def replay_dead_letters(warehouse: WarehouseResource, subscriber: str | None = None,
                        event_id: str | None = None) -> int:
    """Put dead-lettered deliveries back in the queue (attempts reset); returns how many."""
    deliveries, letters = TABLES["event_delivery"], TABLES["dead_letter"]
    condition = sa.true()
    if subscriber:
        condition = condition & (letters.c.subscriber == subscriber)
    if event_id:
        condition = condition & (letters.c.event_id == event_id)
    with warehouse.transaction() as connection:
        found = connection.execute(sa.select(letters.c.subscriber, letters.c.seq).where(condition)).all()
        for name, seq in found:
            connection.execute(deliveries.update()
                               .where((deliveries.c.subscriber == name) & (deliveries.c.seq == seq))
                               .values(status=PENDING, attempts=0, next_attempt_at=utc_now(), last_error=None))
        connection.execute(letters.delete().where(condition))
    return len(found)
