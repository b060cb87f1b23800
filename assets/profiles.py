"""Profile assets: one golden profile per active 360 ID, its contact points, provenance and insights.

The four tables are written together, in one transaction, after every identity run (and whenever the
profile rules in c360.yaml change and the assets are materialised by hand).
"""

import dagster as dg

from assets.conformed import conformed_key
from assets.identity import IDS_KEY, XREF_KEY
from c360_pipelines.config import C360Config
from c360_pipelines.profiles import build_profiles
from resources.warehouse import WarehouseResource

GOLDEN_KEY = dg.AssetKey(["profiles", "golden_profile"])
CONTACT_POINTS_KEY = dg.AssetKey(["profiles", "profile_contact_points"])
PROVENANCE_KEY = dg.AssetKey(["profiles", "profile_attribute_provenance"])
INSIGHTS_KEY = dg.AssetKey(["profiles", "profile_insights"])
PROFILE_KEYS = (GOLDEN_KEY, CONTACT_POINTS_KEY, PROVENANCE_KEY, INSIGHTS_KEY)


def build_profile_assets(config: C360Config) -> list[dg.AssetsDefinition]:
    upstream = [XREF_KEY, IDS_KEY, *(conformed_key(t) for t in ("individual", "contact_point_email",
                                                              "contact_point_phone", "contact_point_address",
                                                              "engagement"))]

    def spec(key: dg.AssetKey, description: str) -> dg.AssetSpec:
        return dg.AssetSpec(key, deps=upstream, group_name="profiles", kinds={"sql"},
                            automation_condition=dg.AutomationCondition.eager(), description=description)

    @dg.multi_asset(
        specs=[
            spec(GOLDEN_KEY, "The single view of each customer: one row per active 360 ID with the surviving name, "
                             "birth date, primary email, phone and address, chosen by the `profile:` rules in "
                             "c360.yaml (most frequent by default; ties go to the most recent record, then the "
                             "source order), plus the sources that know the person and when they were first and "
                             "last seen."),
            spec(CONTACT_POINTS_KEY, "Every distinct email, phone and address a person has in any source, not "
                                     "collapsed: each with the sources and records that sent it, first and last "
                                     "seen, its status (ok, invalid, placeholder), and one of each kind primary."),
            spec(PROVENANCE_KEY, "Where each golden value came from: the winning source record, the rule that "
                                 "decided (and the tie-break, when there was a tie), and the competing values it beat."),
            spec(INSIGHTS_KEY, "Calculated insights per person over their engagement rows (orders, tickets): "
                               "lifetime value, order count, last order, open tickets and whatever "
                               "`profile.insights` in c360.yaml declares."),
        ],
        name="build_golden_profiles",
        check_specs=[
            dg.AssetCheckSpec("one_profile_per_active_id", asset=GOLDEN_KEY,
                              description="Every active 360 ID has exactly one golden profile."),
            dg.AssetCheckSpec("no_profile_for_a_retired_id", asset=GOLDEN_KEY,
                              description="No merged or retired 360 ID has a golden profile."),
            dg.AssetCheckSpec("xref_points_at_live_ids", asset=GOLDEN_KEY,
                              description="Every xref row points at an active 360 ID (or one redirected to it)."),
        ],
    )
    def build(context: dg.AssetExecutionContext, warehouse: WarehouseResource):  # type: ignore[no-untyped-def]
        """Survivorship, contact points, provenance and insights for every person."""
        report = build_profiles(warehouse, config)
        context.log.info(f"{report.profiles:,} profiles, {report.changed:,} changed")
        yield dg.MaterializeResult(asset_key=GOLDEN_KEY, metadata={
            "dagster/row_count": report.profiles, "changed": report.changed,
            **{f"seconds_{k}": round(v, 2) for k, v in report.seconds.items()}})
        yield dg.MaterializeResult(asset_key=CONTACT_POINTS_KEY, metadata={"dagster/row_count": report.contact_points})
        yield dg.MaterializeResult(asset_key=PROVENANCE_KEY, metadata={"dagster/row_count": report.provenance_rows})
        yield dg.MaterializeResult(asset_key=INSIGHTS_KEY, metadata={"dagster/row_count": report.insight_rows})
        yield from profile_checks(warehouse)

    return [build]


def profile_checks(warehouse: WarehouseResource) -> list[dg.AssetCheckResult]:
    missing = int(warehouse.scalar(
        "SELECT COUNT(*) FROM ids i LEFT JOIN golden_profile g ON g.c360_id = i.c360_id "
        "WHERE i.status = 'active' AND g.c360_id IS NULL"))
    repeated = int(warehouse.scalar(
        "SELECT COUNT(*) FROM (SELECT c360_id FROM golden_profile GROUP BY c360_id HAVING COUNT(*) > 1) d"))
    retired = int(warehouse.scalar(
        "SELECT COUNT(*) FROM golden_profile g JOIN ids i ON i.c360_id = g.c360_id WHERE i.status != 'active'"))
    dangling = int(warehouse.scalar(
        "SELECT COUNT(*) FROM xref x LEFT JOIN ids i ON i.c360_id = x.c360_id "
        "WHERE i.c360_id IS NULL OR (i.status != 'active' AND i.merged_into IS NULL)"))
    return [
        dg.AssetCheckResult(check_name="one_profile_per_active_id", asset_key=GOLDEN_KEY,
                            passed=missing == 0 and repeated == 0,
                            metadata={"active_ids_without_profile": missing, "ids_with_several_profiles": repeated}),
        dg.AssetCheckResult(check_name="no_profile_for_a_retired_id", asset_key=GOLDEN_KEY, passed=retired == 0,
                            metadata={"profiles_of_retired_ids": retired}),
        dg.AssetCheckResult(check_name="xref_points_at_live_ids", asset_key=GOLDEN_KEY, passed=dangling == 0,
                            metadata={"xref_rows_at_dead_ids": dangling}),
    ]
