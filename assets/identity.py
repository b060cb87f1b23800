"""Identity assets: the training labels, the match model, then links, cross-reference and 360 IDs.

`identity/match_model` is a persisted artefact: trained when there is none (and whenever it is
materialised by hand), so that day-to-day runs score with the same model and IDs stay stable.
`identity/xref`, `identity/ids` and `identity/identity_link` are written together after every change to
the canonical tables.
"""

import dagster as dg

from assets.conformed import conformed_key
from c360_pipelines.config import C360Config
from c360_pipelines.core.link import measured_settings
from c360_pipelines.identity import evaluate_on_held_out_labels, resolve_identities, train_match_model
from c360_pipelines.model import PERSON_TABLES
from resources.warehouse import WarehouseResource

LABELS_KEY = dg.AssetKey(["identity", "training_labels"])
MODEL_KEY = dg.AssetKey(["identity", "match_model"])
LINKS_KEY = dg.AssetKey(["identity", "identity_link"])
XREF_KEY = dg.AssetKey(["identity", "xref"])
IDS_KEY = dg.AssetKey(["identity", "ids"])


def build_identity_assets(config: C360Config) -> list[dg.AssetsDefinition | dg.AssetSpec]:
    canonical = [conformed_key(table) for table in PERSON_TABLES]
    # Written by people, not by a run: `c360 label` stores each answer as it is given.
    labels = dg.AssetSpec(
        LABELS_KEY, group_name="identity", kinds={"sql"},
        description="The pairs a person has judged (table `training_label`): same person or not, answered in "
                    "`c360 label`, which asks about the pairs dedupe's active learner most wants answered. The "
                    "match model learns from them, one in five held back to check it; `c360 label --export FILE` "
                    "writes them in dedupe's JSON training format.")

    @dg.asset(
        key=MODEL_KEY,
        deps=[*canonical, LABELS_KEY],
        group_name="identity",
        kinds={"python"},
        # Labels are written outside runs and never count as materialised: waiting for them, on_missing would
        # never train a model. Nor does a new answer retrain it; `c360 train` does.
        automation_condition=dg.AutomationCondition.on_missing().ignore(dg.AssetSelection.assets(LABELS_KEY)),
        check_specs=[dg.AssetCheckSpec(
            "accurate_on_held_out_labels", asset=MODEL_KEY,
            description="On the labels kept back from training (one in five), the model's links have precision "
                        ">= 0.95 and recall >= 0.90. Warns while there are no labels yet: run `c360 label`.")],
        description=(
            "The learned match model (Fellegi-Sunter): for every field and agreement level, how often true "
            "matches and non-matches show it. Learned from the canonical tables without labels: u from random "
            "record pairs, m from candidate pairs that agree on three other identifying fields. Trained once and "
            "kept (table `match_model`, one row per version) so that reruns score the same way; materialise it "
            "again to retrain."
        ),
    )
    def match_model(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        version, model = train_match_model(warehouse, config.match)
        context.log.info(f"trained match model version {version} on {model.trained_on_pairs:,} candidate pairs")
        evaluation = evaluate_on_held_out_labels(warehouse, config.match)
        if evaluation.precision is None or evaluation.recall is None:
            check = dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                        metadata={"held_out_labels": 0, "hint": "no labels yet: run c360 label"})
        else:
            check = dg.AssetCheckResult(
                passed=evaluation.precision >= 0.95 and evaluation.recall >= 0.90,
                metadata={"held_out_labels": evaluation.held_out, "precision": round(evaluation.precision, 4),
                          "recall": round(evaluation.recall, 4)})
        return dg.MaterializeResult(
            metadata={"version": version, "records": model.records, "candidate_pairs": model.trained_on_pairs,
                      "prior": round(model.prior, 8), "learned_from": model.learned_from,
                      **measured_settings(config.match, model.field_conflicts)},
            check_results=[check],
        )

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(LINKS_KEY, deps=[*canonical, MODEL_KEY], group_name="identity", kinds={"sql"},
                         automation_condition=dg.AutomationCondition.eager(),
                         description="Every scored candidate pair worth keeping, with its evidence: the rule that "
                                     "held, or the model's score with each field's contribution, and any guard."),
            dg.AssetSpec(XREF_KEY, deps=[*canonical, MODEL_KEY], group_name="identity", kinds={"sql"},
                         automation_condition=dg.AutomationCondition.eager(),
                         description="The universal ID lookup: every source record with the 360 ID of the person "
                                     "it belongs to, and the link that ties it to that person."),
            dg.AssetSpec(IDS_KEY, deps=[*canonical, MODEL_KEY], group_name="identity", kinds={"sql"},
                         automation_condition=dg.AutomationCondition.eager(),
                         description="Every 360 ID ever issued with its status: active, merged into a survivor "
                                     "(the older ID survives a merge), or retired; with first seen and last changed."),
        ],
        name="resolve_identities",
        check_specs=[
            dg.AssetCheckSpec("every_record_has_one_person", asset=XREF_KEY,
                              description="Every canonical person record appears in xref exactly once."),
            dg.AssetCheckSpec("retired_ids_reach_a_survivor", asset=IDS_KEY,
                              description="Every merged ID points at an ID that exists."),
        ],
    )
    def resolve(context: dg.AssetExecutionContext, warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
        """Link, cluster and give every person a stable 360 ID."""
        report = resolve_identities(warehouse, config.match)
        context.log.info(f"{report.records:,} records -> {report.people:,} people "
                         f"({report.mode}: {report.records_resolved:,} records re-resolved)")
        yield dg.MaterializeResult(asset_key=LINKS_KEY, metadata={
            "dagster/row_count": warehouse.count("identity_link"), "candidate_pairs": report.candidate_pairs,
            "linked_pairs": report.linked_pairs, "guarded_pairs": report.guarded_pairs})
        yield dg.MaterializeResult(asset_key=XREF_KEY, metadata={
            "dagster/row_count": report.records, "people": report.people, "mode": report.mode,
            "records_resolved": report.records_resolved})
        yield dg.MaterializeResult(asset_key=IDS_KEY, metadata={
            "people": report.people, "created": report.created, "merged": report.merged, "split": report.split,
            "guard_events": report.guard_events})
        missing = warehouse.scalar(
            "SELECT COUNT(*) FROM individual i LEFT JOIN xref x ON x.source = i.source "
            "AND x.source_record_id = i.source_record_id WHERE x.c360_id IS NULL")
        repeated = warehouse.scalar(
            "SELECT COUNT(*) FROM (SELECT source, source_record_id FROM xref GROUP BY source, source_record_id "
            "HAVING COUNT(*) > 1) d")
        yield dg.AssetCheckResult(check_name="every_record_has_one_person", asset_key=XREF_KEY,
                                  passed=int(missing) == 0 and int(repeated) == 0,
                                  metadata={"records_without_person": int(missing), "records_repeated": int(repeated)})
        dangling = warehouse.scalar(
            "SELECT COUNT(*) FROM ids m LEFT JOIN ids s ON s.c360_id = m.merged_into "
            "WHERE m.status = 'merged' AND s.c360_id IS NULL")
        yield dg.AssetCheckResult(check_name="retired_ids_reach_a_survivor", asset_key=IDS_KEY,
                                  passed=int(dangling) == 0, metadata={"dangling_merges": int(dangling)})

    return [labels, match_model, resolve]
