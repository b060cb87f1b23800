"""Everything Dagster loads, assembled explicitly from the user's c360.yaml (`C360_CONFIG`, else ./c360.yaml)."""


import dagster as dg

from assets.conformed import CONFORMED_CHECKS, build_conformed_assets
from assets.identity import build_identity_assets
from assets.profiles import build_profile_assets
from assets.sources import build_source_assets
from c360_pipelines.config import C360Config, load_config
from c360_pipelines.sensors import build_automation_sensor, build_batch_sensor, build_event_delivery
from resources.warehouse import WarehouseResource


def build_definitions(config: C360Config) -> dg.Definitions:
    """The asset graph, checks, sensors and resources for one c360 project."""
    source_assets = [asset for source in config.sources for asset in build_source_assets(config, source)]
    deliver_events, events_sensor = build_event_delivery(config)
    return dg.Definitions(
        assets=[*source_assets, *build_conformed_assets(config), *build_identity_assets(config),
                *build_profile_assets(config)],
        asset_checks=CONFORMED_CHECKS,
        jobs=[deliver_events],
        sensors=[*(build_batch_sensor(config, source) for source in config.sources), build_automation_sensor(),
                 events_sensor],
        resources={"warehouse": WarehouseResource(url=config.warehouse)},
        # Each stage is one step writing the warehouse in one transaction: a process per step would add seconds
        # of start-up to every stage of a new batch's way to its webhooks, and buy no parallelism.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(load_config())
