"""Identity stage 4: decide which scored pairs are links, by the user's rules, the model and the guards.

A pair is linked when any rule holds for it (every criterion of the rule) or when the model's probability
reaches the threshold, unless a guard intervenes. The name-conflict guard stops a link between records whose
first names clearly differ (not equal, not nicknames, not a typo, not swapped with the surname), which is
what separates twins, spouses and parents sharing an address, a phone or a family email; a shared identifier,
or one a keystroke or two away, overrides it. The birth-date guard does the same for birth dates that differ
in every part (a parent and child of the same name); a typo or a day/month swap is not a conflict. Every pair
keeps its evidence: the rule that fired, or the score with each field's contribution, and any guard.

A guard vetoes only where its field can be trusted. By default (`auto`) it measures that on the data: among
pairs that are surely one person without the field (a shared identifier, and the other guarded field agrees),
the share that still conflict on it. In customer data that share is near zero; in a data set whose records
were corrupted at random (FEBRL) one sure pair in six has another first name. Above `NOISY_FIELD_SHARE` the
guard stands down and the conflict only weighs as model evidence. With too few sure pairs to tell, it stays on.

The same measure sets how tightly a person's records must hang together in the clustering (`auto`). On such
noisy data a corrupted copy often scores low against the other copies of its person while it scores high
against the original: the clustering then accepts a record into a group at a lower similarity
(`NOISY_DATA_CLUSTER_THRESHOLD`), where on clean data the same shape is more often a second person.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import pandas as pd

from c360_pipelines.config import Criterion, MatchConfig, MatchRule
from c360_pipelines.core.cluster import NEVER_TOGETHER
from c360_pipelines.core.compare import COMPARISONS
from c360_pipelines.core.records import MatchInput

NAME_CONFLICT = "name_conflict"
BIRTH_DATE_CONFLICT = "birth_date_conflict"
GUARDED_FIELDS = {NAME_CONFLICT: "first_name", BIRTH_DATE_CONFLICT: "birth_date"}
EVIDENCE_CHUNK = 100_000
NOISY_FIELD_SHARE = 0.02
MIN_SURE_PAIRS = 100
_SURE_WITHOUT = {"first_name": "a birth date", "birth_date": "a first name"}  # what else makes those pairs sure


CLEAN_DATA_CLUSTER_THRESHOLD = 0.5
NOISY_DATA_CLUSTER_THRESHOLD = 0.25


@dataclass(frozen=True)
class GuardStatus:
    guard: str
    in_force: bool
    reason: str


@dataclass(frozen=True)
class ClusterThreshold:
    value: float
    reason: str


def conflict_share(field_conflicts: dict[str, tuple[int, int]], field: str) -> float | None:
    """How often pairs surely of one person conflict on `field`; None with too few such pairs to tell."""
    sure, conflicting = field_conflicts.get(field, (0, 0))
    return conflicting / sure if sure >= MIN_SURE_PAIRS else None


def cluster_threshold(config: MatchConfig, field_conflicts: dict[str, tuple[int, int]]) -> ClusterThreshold:
    """The clustering threshold: as configured, or (`auto`) lower on data whose sure pairs often conflict."""
    if config.cluster_threshold != "auto":
        return ClusterThreshold(config.cluster_threshold, f"{config.cluster_threshold} by configuration")
    noisy = {field: share for field in GUARDED_FIELDS.values()
             if (share := conflict_share(field_conflicts, field)) is not None and share > NOISY_FIELD_SHARE}
    if noisy:
        measured = ", ".join(f"{field} in {share:.1%}" for field, share in noisy.items())
        return ClusterThreshold(NOISY_DATA_CLUSTER_THRESHOLD,
                                f"{NOISY_DATA_CLUSTER_THRESHOLD}: noisy data, pairs that share an identifier "
                                f"conflict on {measured} (limit {NOISY_FIELD_SHARE:.0%})")
    measured = any(conflict_share(field_conflicts, field) is not None for field in GUARDED_FIELDS.values())
    why = ("pairs that share an identifier rarely conflict" if measured
           else "too few pairs share an identifier to measure how noisy the data is")
    return ClusterThreshold(CLEAN_DATA_CLUSTER_THRESHOLD, f"{CLEAN_DATA_CLUSTER_THRESHOLD}: {why}")


def guard_status(config: MatchConfig, field_conflicts: dict[str, tuple[int, int]]) -> dict[str, GuardStatus]:
    """Whether each guard vetoes links on this data, and why: as configured, or as measured (`auto`)."""
    settings = {NAME_CONFLICT: config.name_conflict_guard, BIRTH_DATE_CONFLICT: config.birth_date_conflict_guard}
    statuses = {}
    for guard, setting in settings.items():
        field = GUARDED_FIELDS[guard]
        if setting != "auto":
            statuses[guard] = GuardStatus(guard, bool(setting), f"{'on' if setting else 'off'} by configuration")
            continue
        sure = field_conflicts.get(field, (0, 0))[0]
        share = conflict_share(field_conflicts, field)
        if share is None:
            statuses[guard] = GuardStatus(guard, True, f"on: only {sure} pairs share an identifier, too few to "
                                                       f"measure how noisy {field} is")
            continue
        noisy = share > NOISY_FIELD_SHARE
        statuses[guard] = GuardStatus(
            guard, not noisy, f"{'off' if noisy else 'on'}: {field} conflicts in {share:.1%} of {sure:,} pairs that "
                              f"share an identifier and {_SURE_WITHOUT[field]} (limit {NOISY_FIELD_SHARE:.0%})")
    return statuses


def measured_settings(config: MatchConfig, field_conflicts: dict[str, tuple[int, int]]) -> dict[str, str]:
    """Each guard's state and the clustering threshold, with why, for a run's summary or an asset's metadata."""
    return {**{f"{name} guard": status.reason for name, status in guard_status(config, field_conflicts).items()},
            "cluster threshold": cluster_threshold(config, field_conflicts).reason}


def guards_in_force(config: MatchConfig, field_conflicts: dict[str, tuple[int, int]]) -> frozenset[str]:
    return frozenset(name for name, status in guard_status(config, field_conflicts).items() if status.in_force)


def criterion_holds(criterion: Criterion, compared: pd.DataFrame, data: MatchInput) -> np.ndarray:
    if criterion.identifier is not None:
        if criterion.identifier == "*":
            return (compared["identifier"] == 2).to_numpy()
        return _shares_identifier_of_type(compared, data, criterion.identifier)
    field = criterion.field
    if field in ("email", "phone"):
        return (compared[field] == 2).to_numpy()
    if field == "birth_date":
        return (compared["birth_date"] == 3).to_numpy()
    if field == "postal_code":
        return (compared["address"] >= 1).to_numpy()
    if field == "address":
        return (compared["address"] >= (2 if criterion.method == "fuzzy" else 3)).to_numpy()
    level, similarity = compared[field], compared[f"{field}_sim"]
    if criterion.method == "fuzzy":
        # level >= 1 keeps the comparison's own judgement: two common names a letter apart are not a typo.
        nickname = (level == 2).to_numpy() if field == "first_name" else False
        return (level >= 1).to_numpy() & ((similarity >= criterion.threshold).to_numpy() | nickname | (level == 3).to_numpy())
    return (level == 3).to_numpy()


def _shares_identifier_of_type(compared: pd.DataFrame, data: MatchInput, kind: str) -> np.ndarray:
    typed = data.identifiers[data.identifiers["value"].str.startswith(f"{kind}=")]
    left = compared[["i", "j"]].reset_index(names="pair").merge(typed, left_on="i", right_on="rec")
    shared = left.merge(typed, left_on=["j", "value"], right_on=["rec", "value"])["pair"].unique()
    holds = np.zeros(len(compared), dtype=bool)
    holds[compared.index.get_indexer(shared)] = True
    return holds


def rule_holds(rule: MatchRule, compared: pd.DataFrame, data: MatchInput) -> np.ndarray:
    holds = np.ones(len(compared), dtype=bool)
    for criterion in rule.criteria:
        holds &= criterion_holds(criterion, compared, data)
    return holds


def decide_links(data: MatchInput, compared: pd.DataFrame, scored: pd.DataFrame, config: MatchConfig,
                 guards: frozenset[str] | None = None) -> pd.DataFrame:
    """Per pair: probability, the first rule that holds, the guard that intervened, and the decision.

    `guards` are the guards in force (`guards_in_force`); without it, every guard not switched off is.
    """
    if guards is None:
        guards = guards_in_force(config, {})
    compared = compared.reset_index(drop=True)
    decided = scored.reset_index(drop=True).copy()
    decided["rule"] = pd.Series([None] * len(decided), dtype="object")
    for rule in config.rules:
        holds = rule_holds(rule, compared, data) & decided["rule"].isna().to_numpy()
        decided.loc[holds, "rule"] = rule.name
    identifier_rule = decided["rule"].isin([r.name for r in config.rules if any(c.identifier for c in r.criteria)])
    # A shared identifier outweighs differing first names or birth dates. A nearly shared one does not: family
    # members enrolled together get consecutive numbers (LM-702742 / LM-702743).
    overridden = (compared["identifier"] == 2).to_numpy() | identifier_rule.to_numpy()
    name_conflict = (compared["first_name"] == 0).to_numpy() & ~overridden & (NAME_CONFLICT in guards)
    birth_conflict = (compared["birth_date"] == 0).to_numpy() & ~overridden & (BIRTH_DATE_CONFLICT in guards)
    decided["guard"] = np.where(name_conflict, NAME_CONFLICT, np.where(birth_conflict, BIRTH_DATE_CONFLICT, None))
    wanted = decided["rule"].notna().to_numpy() | (decided["probability"] >= config.threshold).to_numpy()
    decided["linked"] = wanted & decided["guard"].isna().to_numpy()
    # The score the clustering sees: 1 for a rule link, else the model's probability; 0 for a pair whose first
    # names conflict (nicknames and typos the comparison misses end here too) and never together for birth dates
    # that differ in every part: one person has one birth date.
    decided["link_score"] = np.select(
        [birth_conflict, name_conflict, decided["rule"].notna().to_numpy()],
        [NEVER_TOGETHER, 0.0, 1.0], default=decided["probability"].to_numpy())
    return decided


def evidence_documents(decided: pd.DataFrame) -> Iterator[dict[str, object]]:
    """The explanation stored with each pair: rule, score, each field's contribution (bits), guard. Made a chunk
    at a time: two million documents at once would hold gigabytes of dicts."""
    for start in range(0, len(decided), EVIDENCE_CHUNK):
        chunk = decided.iloc[start:start + EVIDENCE_CHUNK]
        probability = chunk["probability"].round(6).tolist()
        weight = chunk["match_weight"].round(3).tolist()
        contributions = chunk[[f"w_{name}" for name in COMPARISONS]].round(3).to_numpy().tolist()
        rules, guards = chunk["rule"].tolist(), chunk["guard"].tolist()
        households = chunk["household"].tolist() if "household" in chunk.columns else [None] * len(chunk)
        for row, bits in enumerate(contributions):
            document: dict[str, object] = {
                "probability": probability[row],
                "match_weight": weight[row],
                "fields": {name: value for name, value in zip(COMPARISONS, bits, strict=True) if value},
            }
            if isinstance(rules[row], str):
                document["rule"] = rules[row]
            if isinstance(guards[row], str):
                document["guard"] = guards[row]
            if isinstance(households[row], str):
                document["household"] = households[row]
            yield document


def evidence_json(decided: pd.DataFrame) -> list[str]:
    """The evidence documents as JSON text, keys sorted (orjson: a tenth of json.dumps's time at 2M pairs)."""
    return [orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode() for document in evidence_documents(decided)]
