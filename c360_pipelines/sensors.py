"""Sensors: new batches at a source come in, profile change events go out.

A source's sensor registers each new or changed batch as a partition and runs it; its cursor is a JSON map
of batch id to content fingerprint, so a file rewritten in place runs again, while an untouched one never
does. The run of the last batch a tick finds also brings the conformed tables, identity and profiles up to
date (incrementally), so new data reaches the profiles in one run; automation (evaluated every few seconds)
covers every other change. Runs that write the warehouse carry the `c360/writes` tag, which the instance c360
creates limits to one at a time. The events sensor runs the `deliver_events` job whenever the outbox holds
events waiting for a subscriber.
"""


import json

import dagster as dg

from assets.conformed import conformed_key
from assets.identity import IDS_KEY, LINKS_KEY, XREF_KEY
from assets.profiles import PROFILE_KEYS
from assets.sources import batch_partitions, raw_key, staged_key
from c360_pipelines.config import C360Config, ConfigError, SourceConfig
from c360_pipelines.events import deliver_pending, undelivered_work
from c360_pipelines.model import CANONICAL_MODELS
from resources.sources import batches_to_run, reader_for
from resources.warehouse import WarehouseResource

# A file drop is checked with a directory listing, cheap enough at every pass of Dagster's sensor daemon (which
# comes round every 5 s: asking for 5 s lands between passes and waits for the next, 10 s); a SQL source runs
# its query.
FILE_SENSOR_INTERVAL_SECONDS = 1
SQL_SENSOR_INTERVAL_SECONDS = 30


def landed_batches(warehouse: WarehouseResource, source: str) -> dict[str, str]:
    """Batch id -> fingerprint of every batch of `source` already in the warehouse's ledger."""
    warehouse.ensure_tables()
    ledger = warehouse.read_frame("SELECT batch_id, fingerprint FROM batch WHERE source = :s", {"s": source})
    return dict(zip(ledger["batch_id"], ledger["fingerprint"], strict=True))


WRITES_TAG = {"c360/writes": "warehouse"}  # the instance runs one such run at a time (see runner.INSTANCE_YAML)
DOWNSTREAM = [*(conformed_key(table) for table in CANONICAL_MODELS), XREF_KEY, IDS_KEY, LINKS_KEY, *PROFILE_KEYS]


def build_batch_sensor(config: C360Config, source: SourceConfig) -> dg.SensorDefinition:
    partitions = batch_partitions(source.name)
    landing = [raw_key(source.name), staged_key(source.name)]

    @dg.sensor(
        name=f"{source.name}_new_batches",
        description=f"Watches `{source.path or source.table or 'the query'}` and lands each new or changed "
        f"`{source.name}` batch as a partition of raw/{source.name} and staged/{source.name}.",
        target=dg.AssetSelection.assets(*landing, *DOWNSTREAM),
        minimum_interval_seconds=SQL_SENSOR_INTERVAL_SECONDS if source.format == "sql" else FILE_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def new_batches(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult | dg.SkipReason:
        known: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        try:
            offered = reader_for(config, source).discover()
            landed = landed_batches(warehouse, source.name)
        except ConfigError as error:
            return dg.SkipReason(str(error))
        # Batches landed by `c360 run` are in the warehouse's ledger, not in this sensor's cursor.
        todo = batches_to_run(offered, {**known, **landed})
        if not todo:
            return dg.SkipReason(f"no new batch at {source.name} ({len(offered)} known)")
        registered = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = [batch.batch_id for batch in todo if batch.batch_id not in registered]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(partition_key=batch.batch_id, run_key=f"{batch.batch_id}@{batch.fingerprint}",
                              asset_selection=landing + (DOWNSTREAM if batch is todo[-1] else []), tags=WRITES_TAG)
                for batch in todo
            ],
            dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
            cursor=json.dumps({**known, **{batch.batch_id: batch.fingerprint for batch in todo}}),
        )

    return new_batches


EVENTS_SENSOR_INTERVAL_SECONDS = 1  # a cheap query: at every pass of the sensor daemon
AUTOMATION_INTERVAL_SECONDS = 5
ACTIVE_RUN_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                       dg.DagsterRunStatus.STARTED]


def build_automation_sensor() -> dg.AutomationConditionSensorDefinition:
    """Evaluates every asset's automation condition every few seconds (the default sensor waits 30 s)."""
    return dg.AutomationConditionSensorDefinition(
        "c360_automation", target=dg.AssetSelection.all(), minimum_interval_seconds=AUTOMATION_INTERVAL_SECONDS,
        run_tags=WRITES_TAG,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Runs conformed tables, identity and profiles as soon as what they depend on has changed.")


def build_event_delivery(config: C360Config) -> tuple[dg.JobDefinition, dg.SensorDefinition]:
    """The `deliver_events` job and the sensor that runs it whenever the outbox holds undelivered events."""

    @dg.op(name="deliver_pending_events",
           description="POST every due event to its subscribers (signed, in order per profile, with retries).")
    def deliver(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
        report = deliver_pending(warehouse, config)
        context.log.info(f"queued {report.queued}, delivered {report.delivered}, failed {report.failed}, "
                         f"dead-lettered {report.dead_lettered}, still waiting {report.waiting}")
        for subscriber, error in report.errors.items():
            context.log.error(f"subscriber {subscriber}: {error}")

    @dg.job(name="deliver_events", description="Deliver the profile change events waiting in the outbox.")
    def deliver_events() -> None:
        deliver()

    @dg.sensor(
        name="profile_change_events",
        description="Watches the outbox of profile change events and delivers new or due ones to the subscribers "
                    "in c360.yaml.",
        job=deliver_events,
        minimum_interval_seconds=EVENTS_SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def profile_change_events(context: dg.SensorEvaluationContext,
                              warehouse: WarehouseResource) -> dg.RunRequest | dg.SkipReason:
        if not config.subscribers:
            return dg.SkipReason("no subscribers in c360.yaml")
        waiting = undelivered_work(warehouse, config)
        if not waiting:
            return dg.SkipReason("no event waiting for delivery")
        active = context.instance.get_runs(filters=dg.RunsFilter(job_name="deliver_events",
                                                                 statuses=ACTIVE_RUN_STATUSES), limit=1)
        if active:
            return dg.SkipReason(f"{waiting} event deliveries waiting; a delivery run is already going")
        return dg.RunRequest(tags={"c360/trigger": "profile change events"})

    return deliver_events, profile_change_events
