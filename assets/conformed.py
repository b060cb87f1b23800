"""The canonical tables (`conformed/*`): the current version of every source record, across all sources.

One multi-asset rebuilds all six tables in one transaction, because contact points and identifiers must
come from the same version of a record as its `individual` row. It runs on its own after new staged
batches (`AutomationCondition.eager()`).
"""


import dagster as dg

from assets.sources import staged_key
from c360_pipelines.config import C360Config
from c360_pipelines.ingest import rebuild_conformed
from c360_pipelines.model import CANONICAL_MODELS
from resources.warehouse import WarehouseResource


def conformed_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["conformed", table])


_DESCRIPTIONS = {
    "individual": "One row per source record of a person, across every source: the record's current version "
    "(latest `updated_at`, then latest batch), with names split and cleaned, birth date and gender.",
    "contact_point_email": "Every email of every current person record, lower-cased, validated, with a matching "
    "key that folds gmail dots and +tags.",
    "contact_point_phone": "Every phone of every current person record in E.164 form, with validity and line "
    "type from libphonenumber.",
    "contact_point_address": "Every postal address of every current person record, split into parts with USPS "
    "abbreviations folded.",
    "party_identification": "Identifiers people hold in source systems (loyalty numbers, customer numbers), "
    "normalised for matching.",
    "engagement": "Orders, tickets, visits and other interactions, each pointing at the person record it "
    "belongs to: the current version of each.",
}


def build_conformed_assets(config: C360Config) -> list[dg.AssetsDefinition]:
    staged = [staged_key(source.name) for source in config.sources]

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                conformed_key(table),
                deps=staged,
                group_name="conformed",
                kinds={"sql"},
                description=_DESCRIPTIONS[table],
                automation_condition=dg.AutomationCondition.eager(),
                metadata={"table": table, "columns": ", ".join(CANONICAL_MODELS[table].model_fields)},
            )
            for table in CANONICAL_MODELS
        ],
        name="conformed_tables",
    )
    def conformed_tables(warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
        """Rebuild the canonical tables from every staged batch: the current version of each source record."""
        counts = rebuild_conformed(warehouse)
        for table, count in counts.items():
            yield dg.MaterializeResult(asset_key=conformed_key(table), metadata={"dagster/row_count": count})

    return [conformed_tables]


def _duplicate_keys(warehouse: WarehouseResource, table: str, key: str) -> dg.AssetCheckResult:
    duplicates = warehouse.read_frame(
        f"SELECT source, {key}, COUNT(*) AS copies FROM {table} GROUP BY source, {key} HAVING COUNT(*) > 1"
    )
    return dg.AssetCheckResult(
        passed=duplicates.empty,
        metadata={"duplicate_keys": len(duplicates), "examples": repr(duplicates.head(5).to_dict("records"))},
    )


@dg.asset_check(
    asset=conformed_key("individual"),
    description="Each source record appears exactly once: (source, source_record_id) is unique.",
)
def individual_keys_unique(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    return _duplicate_keys(warehouse, "individual", "source_record_id")


@dg.asset_check(
    asset=conformed_key("engagement"),
    description="Each engagement's key is unique within its source.",
)
def engagement_keys_unique(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    return _duplicate_keys(warehouse, "engagement", "engagement_id")


@dg.asset_check(
    asset=conformed_key("engagement"),
    description="Engagements point at a person record that c360 has (a warning: the person may arrive later).",
)
def engagements_reach_a_person(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    orphans = warehouse.scalar(
        "SELECT COUNT(*) FROM engagement e LEFT JOIN individual i "
        "ON i.source = e.person_source AND i.source_record_id = e.person_record_id "
        "WHERE i.source_record_id IS NULL"
    )
    return dg.AssetCheckResult(
        passed=int(orphans) == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"engagements_without_person": int(orphans)},
    )


CONFORMED_CHECKS = [individual_keys_unique, engagement_keys_unique, engagements_reach_a_person]
