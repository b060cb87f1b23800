"""Per-source assets: `raw/<source>` lands each batch as sent, `staged/<source>` maps it onto the model.

Both are partitioned by batch with a `DynamicPartitionsDefinition` per source (`<source>_batches`): one
partition per landed file, or per pull of a SQL source. Re-materialising a partition replaces that batch's
rows; a backfill of `staged/<source>` over all partitions re-stages the source from its landed rows, which
is how a mapping change reaches data that arrived before it.
"""


import dagster as dg

from c360_pipelines.config import C360Config, SourceConfig
from c360_pipelines.ingest import land_batch, stage_landed_batch
from resources.warehouse import WarehouseResource

ROWS_ACCOUNTED_FOR = "rows_accounted_for"


def batch_partitions(source_name: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{source_name}_batches")


def raw_key(source_name: str) -> dg.AssetKey:
    return dg.AssetKey(["raw", source_name])


def staged_key(source_name: str) -> dg.AssetKey:
    return dg.AssetKey(["staged", source_name])


def build_source_assets(config: C360Config, source: SourceConfig) -> list[dg.AssetsDefinition]:
    """The extract and staged assets of one source, closed over its mapping."""
    partitions = batch_partitions(source.name)
    where = source.path or source.table or "a SQL query"
    tags = {"c360/source": source.name, "c360/kind": source.kind}

    @dg.asset(
        key=raw_key(source.name),
        partitions_def=partitions,
        group_name="sources",
        kinds={source.format},
        tags=tags,
        description=(
            f"Every row of each `{source.name}` batch ({source.format} from `{where}`) landed exactly as sent, "
            "as JSON in the `raw_record` table. Rows that cannot be read at all (a wrong number of fields, "
            "broken JSON) go to `quarantine` with their row number and text, so nothing the source sent is lost. "
            "One partition per landed file or SQL pull."
        ),
    )
    def extract(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        report = land_batch(config, source, context.partition_key, warehouse)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows_landed,
                "rows_read": report.rows_read,
                "rows_unreadable": report.rows_unreadable,
                "fingerprint": report.fingerprint,
            }
        )

    @dg.asset(
        key=staged_key(source.name),
        deps=[raw_key(source.name)],
        partitions_def=partitions,
        group_name="sources",
        kinds={"pandas"},
        tags=tags,
        check_specs=[
            dg.AssetCheckSpec(
                ROWS_ACCOUNTED_FOR,
                asset=staged_key(source.name),
                description="Every row the batch sent is either staged or quarantined: rows read = staged + quarantined.",
            )
        ],
        description=(
            f"The landed `{source.name}` rows mapped onto the canonical customer model through the `fields` "
            "in c360.yaml and standardised (emails, E.164 phones, split names, USPS-style addresses, dates), "
            "written to the `staged_*` tables. A row without its key, or a duplicate key within the batch, "
            "goes to `quarantine` with the reason; a value that does not parse keeps its raw text and a flag."
        ),
    )
    def staged(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        report = stage_landed_batch(source, context.partition_key, warehouse)
        rows_read = warehouse.scalar(
            "SELECT rows_read FROM batch WHERE source = :source AND batch_id = :batch_id",
            {"source": source.name, "batch_id": context.partition_key},
        )
        accounted = report.rows_staged + report.rows_quarantined
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": report.rows_staged,
                "rows_quarantined": report.rows_quarantined,
                **{f"rows/{table}": count for table, count in report.table_rows.items() if count},
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=ROWS_ACCOUNTED_FOR,
                    passed=rows_read == accounted,
                    metadata={"rows_read": rows_read or 0, "staged_plus_quarantined": accounted},
                )
            ],
        )

    return [extract, staged]
