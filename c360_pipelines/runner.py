"""`c360 run`: land every new or changed batch and rebuild what depends on it, in-process, on a real instance.

The Dagster instance lives under `.c360/dagster` beside the config (or in `DAGSTER_HOME`), so runs, partitions
and materialisations started here show up in `dagster dev` on the same project, and the other way round.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.conformed import conformed_key
from assets.identity import IDS_KEY, LINKS_KEY, MODEL_KEY, XREF_KEY
from assets.profiles import PROFILE_KEYS
from assets.sources import batch_partitions, raw_key, staged_key
from c360_pipelines.config import C360Config, ConfigError, MatchConfig
from c360_pipelines.core.cluster import AMBIGUOUS
from c360_pipelines.definitions import build_definitions
from resources.sources import BatchRef, FileDropReader, batches_to_run, reader_for
from resources.warehouse import WarehouseResource

# Runs leave the queue within a second (Dagster's default waits up to 5 s per run, and a new batch passes
# through two runs on its way to the webhooks); runs that write the warehouse go one at a time.
INSTANCE_YAML = """telemetry:
  enabled: false
run_queue:
  dequeue_interval_seconds: 1
  tag_concurrency_limits:
    - key: c360/writes
      limit: 1
"""
EARLIER_INSTANCE_YAMLS = ("telemetry:\n  enabled: false\n",
                          "telemetry:\n  enabled: false\nrun_queue:\n  dequeue_interval_seconds: 1\n")
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class StageSummary:
    name: str
    seconds: float = 0.0
    counts: dict[str, int | str] = field(default_factory=dict)


@dataclass
class RunSummary:
    batches: list[tuple[str, str]] = field(default_factory=list)
    stages: list[StageSummary] = field(default_factory=list)
    seconds: float = 0.0


Progress = Callable[[str], None]


def dagster_home(config: C360Config) -> Path:
    """`DAGSTER_HOME` if set, else `.c360/dagster` beside the config, created with telemetry off."""
    home = Path(os.environ.get("DAGSTER_HOME") or config.state_dir / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists() or settings.read_text(encoding="utf-8") in EARLIER_INSTANCE_YAMLS:
        settings.write_text(INSTANCE_YAML, encoding="utf-8")
    return home


def open_instance(config: C360Config) -> dg.DagsterInstance:
    os.environ["DAGSTER_HOME"] = str(dagster_home(config))
    return dg.DagsterInstance.get()


def pending_batches(config: C360Config, warehouse: WarehouseResource) -> dict[str, list[BatchRef]]:
    """Per source, the batches that are new or changed since they were landed (by the batch ledger)."""
    ledger = warehouse.read_frame("SELECT source, batch_id, fingerprint FROM batch")
    pending: dict[str, list[BatchRef]] = {}
    for source in config.sources:
        reader = reader_for(config, source)
        offered = reader.require_files() if isinstance(reader, FileDropReader) else reader.discover()
        known = ledger[ledger["source"] == source.name]
        pending[source.name] = batches_to_run(offered, dict(zip(known["batch_id"], known["fingerprint"], strict=True)))
    return pending


def run_pipeline(
    config: C360Config, instance: dg.DagsterInstance | None = None, progress: Progress = lambda _: None
) -> RunSummary:
    """Land and stage every pending batch, then rebuild the conformed tables; returns what was done."""
    started = time.perf_counter()
    instance = instance or open_instance(config)
    warehouse = WarehouseResource(url=config.warehouse)
    warehouse.ensure_tables()
    defs = build_definitions(config)
    assets = list(defs.assets or [])
    summary = RunSummary()
    seconds: dict[str, float] = {}

    def materialize(selection: object, what: str, partition_key: str | None = None) -> None:
        result = dg.materialize(
            assets, selection=selection, partition_key=partition_key, instance=instance,  # type: ignore[arg-type]
            resources={"warehouse": warehouse}, tags={"c360/trigger": "c360 run"}, run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
        _raise_on_failure(result, what)

    pending = pending_batches(config, warehouse)
    for source in config.sources:
        batches = pending[source.name]
        if not batches:
            continue
        partitions = batch_partitions(source.name)
        registered = set(instance.get_dynamic_partitions(partitions.name))
        new_keys = [b.batch_id for b in batches if b.batch_id not in registered]
        if new_keys:
            instance.add_dynamic_partitions(partitions.name, new_keys)
        source_started = time.perf_counter()
        for batch in batches:
            progress(f"{source.name}: landing and staging {batch.batch_id}")
            materialize([raw_key(source.name), staged_key(source.name)], f"{source.name} batch {batch.batch_id}",
                        partition_key=batch.batch_id)
            summary.batches.append((source.name, batch.batch_id))
        seconds[source.name] = time.perf_counter() - source_started

    conformed_missing = instance.get_latest_materialization_event(conformed_key("individual")) is None
    if summary.batches or conformed_missing:
        progress("conformed: rebuilding the canonical tables")
        conformed_started = time.perf_counter()
        materialize(dg.AssetSelection.groups("conformed"), "conformed tables")
        seconds["conformed"] = time.perf_counter() - conformed_started
        progress("identity: linking records and assigning 360 IDs")
        identity_started = time.perf_counter()
        selection = [XREF_KEY, IDS_KEY, LINKS_KEY]
        if instance.get_latest_materialization_event(MODEL_KEY) is None or not _has_model(warehouse):
            selection.append(MODEL_KEY)
        materialize(selection, "identity resolution")
        seconds["identity"] = time.perf_counter() - identity_started
    profiles_missing = (instance.get_latest_materialization_event(PROFILE_KEYS[0]) is None
                        or (warehouse.count("golden_profile") == 0 and warehouse.count("xref") > 0))
    if summary.batches or conformed_missing or profiles_missing:
        progress("profiles: building golden profiles and insights")
        profiles_started = time.perf_counter()
        materialize(list(PROFILE_KEYS), "golden profiles")
        seconds["profiles"] = time.perf_counter() - profiles_started
    summary.stages = stage_summaries(warehouse, seconds, config.match)
    summary.seconds = time.perf_counter() - started
    return summary


def _has_model(warehouse: WarehouseResource) -> bool:
    return warehouse.count("match_model") > 0


def _raise_on_failure(result: dg.ExecuteInProcessResult, what: str) -> None:
    if result.success:
        return
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            cause = error.cause if error and error.cause else error
            message = cause.message.strip() if cause else "unknown error"
            for prefix in ("c360_pipelines.config.ConfigError: ",):
                message = message.removeprefix(prefix)
            raise ConfigError(message) if "ConfigError" in (cause.cls_name or "") else RuntimeError(
                f"{what} failed: {message}"
            )
    raise RuntimeError(f"{what} failed")


def stage_summaries(warehouse: WarehouseResource, seconds: dict[str, float],
                    match: MatchConfig | None = None) -> list[StageSummary]:
    """Per source run now: batches and rows read, staged and quarantined (all batches); then the canonical tables."""
    ledger = warehouse.read_frame(
        "SELECT source, COUNT(*) AS batches, SUM(rows_read) AS rows_read, SUM(rows_staged) AS rows_staged, "
        "SUM(rows_quarantined) AS rows_quarantined FROM batch GROUP BY source ORDER BY source"
    )
    stages = [
        StageSummary(
            row.source,
            seconds[row.source],
            {
                "batches": int(row.batches),
                "rows read": int(row.rows_read or 0),
                "rows staged": int(row.rows_staged or 0),
                "rows quarantined": int(row.rows_quarantined or 0),
            },
        )
        for row in ledger.itertuples()
        if row.source in seconds
    ]
    if "conformed" in seconds:
        tables = ("individual", "contact_point_email", "contact_point_phone", "contact_point_address",
                  "party_identification", "engagement")
        stages.append(StageSummary("conformed", seconds["conformed"], {t: warehouse.count(t) for t in tables}))
    if "identity" in seconds:
        people = warehouse.scalar("SELECT COUNT(*) FROM ids WHERE status = 'active'")
        linked = warehouse.scalar("SELECT COUNT(*) FROM identity_link WHERE linked")
        guarded = warehouse.scalar("SELECT COUNT(*) FROM identity_link WHERE guard IS NOT NULL")
        resolved = warehouse.scalar("SELECT records_resolved FROM identity_run")
        ambiguous = warehouse.scalar(f"SELECT COUNT(*) FROM identity_guard WHERE guard = '{AMBIGUOUS}' "
                                     "AND resolved_at = (SELECT MAX(resolved_at) FROM identity_guard)")
        stages.append(StageSummary("identity", seconds["identity"], {
            "source records": warehouse.count("xref"), "records (re)resolved this run": int(resolved or 0),
            "people (360 IDs)": int(people), "linked pairs": int(linked),
            "pairs kept apart by a guard": int(guarded),
            "records fitting two people, left on their own": int(ambiguous or 0),
            **_guard_states(warehouse, match or MatchConfig())}))
    if "profiles" in seconds:
        rebuilt = warehouse.scalar("SELECT profiles_built FROM profile_build")
        stages.append(StageSummary("profiles", seconds["profiles"], {
            "golden profiles": warehouse.count("golden_profile"), "profiles (re)built this run": int(rebuilt or 0),
            "contact points": warehouse.count("profile_contact_points"),
            "insight values": warehouse.count("profile_insights")}))
    return stages


def _guard_states(warehouse: WarehouseResource, match: MatchConfig) -> dict[str, int | str]:
    """Each guard's state under the current model, and the clustering threshold, and why (measured on the data,
    or configured)."""
    from c360_pipelines.core.link import measured_settings
    from c360_pipelines.identity import latest_match_model

    model = latest_match_model(warehouse)
    return dict(measured_settings(match, model.field_conflicts if model is not None else {}))


def retrain(config: C360Config, instance: dg.DagsterInstance | None = None) -> tuple[int, object]:
    """Materialise a new match model and the identity assets after it; returns its version and evaluation."""
    from c360_pipelines.identity import evaluate_on_held_out_labels

    instance = instance or open_instance(config)
    warehouse = WarehouseResource(url=config.warehouse)
    warehouse.ensure_tables()
    assets = list(build_definitions(config).assets or [])
    result = dg.materialize(
        assets, selection=[MODEL_KEY, XREF_KEY, IDS_KEY, LINKS_KEY, *PROFILE_KEYS], instance=instance,
        resources={"warehouse": warehouse}, tags={"c360/trigger": "c360 train"}, run_config=QUIET_RUN_CONFIG,
        raise_on_error=False,
    )
    _raise_on_failure(result, "training")
    version = int(warehouse.scalar("SELECT MAX(version) FROM match_model"))
    return version, evaluate_on_held_out_labels(warehouse, config.match)
