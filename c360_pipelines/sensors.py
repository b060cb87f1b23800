"""Sensors on the outside world: a new or changed batch at a source registers a partition and runs it.

The cursor is a JSON map of batch id to content fingerprint, so a file that is rewritten in place runs
again, while an untouched one never does. Identity and profiles then follow through automation.
"""


import json

import dagster as dg

from assets.sources import batch_partitions, raw_key, staged_key
from c360_pipelines.config import C360Config, ConfigError, SourceConfig
from resources.sources import batches_to_run, reader_for

SENSOR_INTERVAL_SECONDS = 15


def build_batch_sensor(config: C360Config, source: SourceConfig) -> dg.SensorDefinition:
    partitions = batch_partitions(source.name)

    @dg.sensor(
        name=f"{source.name}_new_batches",
        description=f"Watches `{source.path or source.table or 'the query'}` and lands each new or changed "
        f"`{source.name}` batch as a partition of raw/{source.name} and staged/{source.name}.",
        target=dg.AssetSelection.assets(raw_key(source.name), staged_key(source.name)),
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def new_batches(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        known: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        try:
            offered = reader_for(config, source).discover()
        except ConfigError as error:
            return dg.SkipReason(str(error))
        todo = batches_to_run(offered, known)
        if not todo:
            return dg.SkipReason(f"no new batch at {source.name} ({len(offered)} known)")
        registered = set(context.instance.get_dynamic_partitions(partitions.name))
        new_keys = [batch.batch_id for batch in todo if batch.batch_id not in registered]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(partition_key=batch.batch_id, run_key=f"{batch.batch_id}@{batch.fingerprint}")
                for batch in todo
            ],
            dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
            cursor=json.dumps({**known, **{batch.batch_id: batch.fingerprint for batch in todo}}),
        )

    return new_batches
