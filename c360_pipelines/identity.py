"""Identity resolution over the warehouse: train the match model, then resolve every record to a 360 ID.

The model is a persisted, versioned artefact (`match_model`), trained when there is none or when asked;
resolution always scores with the latest one, so re-running on unchanged data links exactly the same pairs
and keeps every ID. Each step reads the canonical tables and writes its own tables in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from c360_pipelines.config import MatchConfig
from c360_pipelines.core import block, compare, link, score
from c360_pipelines.core.cluster import cluster_records
from c360_pipelines.core.ids import assign_ids
from c360_pipelines.core.records import RECORD_KEY_SEPARATOR, MatchInput, build_match_input
from c360_pipelines.ingest import utc_now
from c360_pipelines.model import TABLES
from resources.warehouse import WarehouseResource

KEEP_PROBABILITY = 0.01


@dataclass
class Prepared:
    data: MatchInput
    candidates: block.Candidates
    compared: pd.DataFrame


@dataclass(frozen=True)
class ResolutionReport:
    records: int
    candidate_pairs: int
    linked_pairs: int
    guarded_pairs: int
    people: int
    created: int
    merged: int
    split: int
    guard_events: int


def load_match_input(warehouse: WarehouseResource) -> MatchInput:
    def read(sql: str) -> pd.DataFrame:
        return warehouse.read_frame(sql)

    return build_match_input(
        read("SELECT source, source_record_id, first_name_norm, last_name_norm, birth_date FROM individual"),
        read("SELECT source, source_record_id, email_key, is_valid FROM contact_point_email"),
        read("SELECT source, source_record_id, phone_e164, is_valid FROM contact_point_phone"),
        read("SELECT source, source_record_id, line1, postal_code, city FROM contact_point_address"),
        read("SELECT source, source_record_id, identification_type, identifier FROM party_identification"),
    )


def prepare(data: MatchInput, config: MatchConfig) -> Prepared:
    """Drop junk values, find candidate pairs, drop values too common to mean anything, compare."""
    junk = frozenset(config.junk_values)
    data = _without_values(data, junk)
    candidates = block.candidate_pairs(data, config.max_block_size)
    common = frozenset(candidates.too_common["value"])
    data = _without_values(data, common)
    return Prepared(data, candidates, compare.compare_pairs(data, candidates.pairs))


def _without_values(data: MatchInput, values: frozenset[str]) -> MatchInput:
    if not values:
        return data
    return MatchInput(
        records=data.records,
        emails=data.emails[~data.emails["value"].isin(values)],
        phones=data.phones[~data.phones["value"].isin(values)],
        identifiers=data.identifiers[~data.identifiers["value"].isin(values)],
        addresses=data.addresses,
    )


# ------------------------------------------------------------------------------------------- model


def train_match_model(warehouse: WarehouseResource, config: MatchConfig) -> tuple[int, score.MatchModel]:
    """Train a new model version on the current canonical tables (and the training labels) and store it."""
    prepared = prepare(load_match_input(warehouse), config)
    labels = split_labels(warehouse)[0]
    matches = labels[labels["label"] == MATCH]
    labeled = compared_for(prepared, matches[["record_a", "record_b"]]) if len(matches) else None
    model = score.train(prepared.data, prepared.compared, labeled_matches=labeled)
    with warehouse.transaction() as connection:
        latest = connection.execute(sa.select(sa.func.max(TABLES["match_model"].c.version))).scalar() or 0
        version = int(latest) + 1
        row = pd.DataFrame([{"version": version, "trained_at": utc_now(), "records": len(prepared.data),
                             "candidate_pairs": len(prepared.compared), "parameters": json.dumps(model.to_json())}])
        warehouse.insert_rows("match_model", row, connection)
    return version, model


def latest_match_model(warehouse: WarehouseResource) -> score.MatchModel | None:
    parameters = warehouse.scalar("SELECT parameters FROM match_model ORDER BY version DESC LIMIT 1")
    return score.MatchModel.from_json(json.loads(parameters)) if parameters else None


# ---------------------------------------------------------------------------------------- resolve


def score_and_decide(prepared: Prepared, model: score.MatchModel, config: MatchConfig, pairs: pd.DataFrame | None = None,
                     compared: pd.DataFrame | None = None) -> pd.DataFrame:
    if compared is None:
        compared = prepared.compared if pairs is None else compare.compare_pairs(prepared.data, pairs)
    model = score.rescaled(model, len(prepared.data))
    return link.decide_links(prepared.data, compared, score.predict(model, compared), config)


def resolve_identities(warehouse: WarehouseResource, config: MatchConfig, now: dt.datetime | None = None) -> ResolutionReport:
    """Link, cluster and assign 360 IDs; write identity_link, xref, ids and identity_guard."""
    now = now or utc_now()
    model = latest_match_model(warehouse)
    if model is None:
        _, model = train_match_model(warehouse, config)
    prepared = prepare(load_match_input(warehouse), config)
    decided = score_and_decide(prepared, model, config)
    links = decided.loc[decided["linked"], ["i", "j", "link_score"]].rename(columns={"link_score": "score"})

    def score_missing(pairs: pd.DataFrame) -> pd.Series:
        return score_and_decide(prepared, model, config, pairs=pairs)["link_score"]

    clustering = cluster_records(len(prepared.data), links, score_missing, config.cluster_threshold,
                                 config.max_cluster_size)
    records = prepared.data.records
    clusters = pd.DataFrame({"record_key": records["record_key"], "cluster": clustering.labels})
    previous_xref = warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref")
    previous_xref["record_key"] = previous_xref["source"] + RECORD_KEY_SEPARATOR + previous_xref["source_record_id"]
    previous_ids = warehouse.read_frame("SELECT * FROM ids")
    assignment = assign_ids(clusters, previous_xref, previous_ids, now)

    keys = records["record_key"].to_numpy()
    kept = decided[(decided["probability"] >= KEEP_PROBABILITY) | decided["rule"].notna() | decided["guard"].notna()]
    link_rows = pd.DataFrame({
        "record_a": keys[kept["i"].to_numpy()], "record_b": keys[kept["j"].to_numpy()],
        "probability": kept["probability"].to_numpy(), "match_weight": kept["match_weight"].to_numpy(),
        "rule": kept["rule"].to_numpy(), "guard": kept["guard"].to_numpy(), "linked": kept["linked"].to_numpy(),
        "evidence": link.evidence_json(kept),
    })
    xref = _xref_rows(assignment.xref, clustering.labels, decided, keys)
    guards = _guard_rows(prepared.candidates.too_common, clustering.guard_events, now)
    with warehouse.transaction() as connection:
        for table in ("identity_link", "xref", "ids"):
            connection.execute(TABLES[table].delete())
        warehouse.insert_rows("identity_link", link_rows, connection)
        warehouse.insert_rows("xref", xref, connection)
        warehouse.insert_rows("ids", assignment.ids, connection)
        warehouse.insert_rows("identity_guard", guards, connection)
        warehouse.insert_rows("id_change", assignment.changes.assign(changed_at=now), connection)
    change_counts = assignment.changes["change"].value_counts()
    return ResolutionReport(
        records=len(records), candidate_pairs=len(decided), linked_pairs=int(decided["linked"].sum()),
        guarded_pairs=int(decided["guard"].notna().sum()), people=int(assignment.xref["c360_id"].nunique()),
        created=int(change_counts.get("created", 0)), merged=int(change_counts.get("merged", 0)),
        split=int(change_counts.get("split", 0)), guard_events=len(guards),
    )


def _xref_rows(xref: pd.DataFrame, labels: np.ndarray, decided: pd.DataFrame, keys: np.ndarray) -> pd.DataFrame:
    """Each record with its person and the strongest link inside its cluster (its evidence)."""
    same_cluster = decided[labels[decided["i"].to_numpy()] == labels[decided["j"].to_numpy()]]
    both_ways = pd.concat([
        same_cluster.assign(rec=same_cluster["i"], other=same_cluster["j"]),
        same_cluster.assign(rec=same_cluster["j"], other=same_cluster["i"]),
    ])
    best = both_ways.sort_values("link_score", ascending=False, kind="stable").drop_duplicates("rec")
    documents = link.evidence_documents(best)
    evidence = {
        int(rec): json.dumps({"linked_to": str(keys[other]), **document}, sort_keys=True)
        for rec, other, document in zip(best["rec"], best["other"], documents, strict=True)
    }
    position = pd.Series(np.arange(len(keys)), index=keys)
    source, _, record_id = xref["record_key"].str.partition(RECORD_KEY_SEPARATOR).T.to_numpy()
    positions = position.reindex(xref["record_key"]).to_numpy()
    return pd.DataFrame({
        "source": source, "source_record_id": record_id, "c360_id": xref["c360_id"].to_numpy(),
        "evidence": [evidence.get(int(p), '"single record"') for p in positions],
    })


def _guard_rows(too_common: pd.DataFrame, events: pd.DataFrame, now: dt.datetime) -> pd.DataFrame:
    common = pd.DataFrame({
        "resolved_at": now, "guard": "too_common_value", "value": too_common["value"].astype(str),
        "records": too_common["records"].astype("int64"),
        "detail": "shared by too many records to identify anyone (" + too_common["blocking_key"] + ")",
    })
    clusters = events.assign(resolved_at=now, value=None)
    return pd.concat([common, clusters], ignore_index=True).reindex(
        columns=["resolved_at", "guard", "value", "records", "detail"])


# ---------------------------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class Explanation:
    record_a: str
    record_b: str
    same_person: bool
    c360_ids: tuple[str | None, str | None]
    probability: float
    match_weight: float
    rule: str | None
    guard: str | None
    linked: bool
    fields: list[tuple[str, str, float]]  # comparison, level name, contribution in bits


def explain_pair(warehouse: WarehouseResource, config: MatchConfig, record_a: str, record_b: str) -> Explanation:
    """Why two records are (or are not) the same person, computed with the current model and data."""
    model = latest_match_model(warehouse)
    if model is None:
        raise LookupError("no match model yet: run `c360 run` first")
    prepared = prepare(load_match_input(warehouse), config)
    position = {key: index for index, key in enumerate(prepared.data.records["record_key"])}
    for key in (record_a, record_b):
        if key not in position:
            raise LookupError(f"no source record {key} (expected SOURCE:ID, e.g. crm:0031)")
    i, j = sorted((position[record_a], position[record_b]))
    compared = compare.compare_pairs(prepared.data, pd.DataFrame({"i": [i], "j": [j]}))
    decided = score_and_decide(prepared, model, config, compared=compared).iloc[0]
    ids = warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref")
    by_key = dict(zip(ids["source"] + RECORD_KEY_SEPARATOR + ids["source_record_id"], ids["c360_id"], strict=True))
    id_a, id_b = by_key.get(record_a), by_key.get(record_b)
    fields = []
    for name in compare.COMPARISONS:
        level = int(compared.iloc[0][name])
        label = "missing on one side" if level == compare.MISSING else compare.LEVELS[name][level]
        fields.append((name, label, float(decided[f"w_{name}"])))
    return Explanation(
        record_a, record_b, id_a is not None and id_a == id_b, (id_a, id_b), float(decided["probability"]),
        float(decided["match_weight"]), decided["rule"] if isinstance(decided["rule"], str) else None,
        decided["guard"] if isinstance(decided["guard"], str) else None, bool(decided["linked"]), fields,
    )


def lookup_record(warehouse: WarehouseResource, source: str, source_record_id: str) -> dict[str, object] | None:
    """The person a source record belongs to: 360 ID and every linked source record."""
    found = warehouse.read_frame(
        "SELECT c360_id FROM xref WHERE source = :source AND source_record_id = :id",
        {"source": source, "id": source_record_id},
    )
    if found.empty:
        return None
    c360_id = str(found["c360_id"].iloc[0])
    records = warehouse.read_frame(
        "SELECT x.source, x.source_record_id, i.first_name, i.last_name, i.birth_date, x.evidence "
        "FROM xref x JOIN individual i ON i.source = x.source AND i.source_record_id = x.source_record_id "
        "WHERE x.c360_id = :id ORDER BY x.source, x.source_record_id",
        {"id": c360_id},
    )
    emails = warehouse.read_frame(
        "SELECT DISTINCT e.email FROM contact_point_email e JOIN xref x ON x.source = e.source "
        "AND x.source_record_id = e.source_record_id WHERE x.c360_id = :id AND e.email IS NOT NULL ORDER BY 1",
        {"id": c360_id},
    )
    phones = warehouse.read_frame(
        "SELECT DISTINCT p.phone_e164 FROM contact_point_phone p JOIN xref x ON x.source = p.source "
        "AND x.source_record_id = p.source_record_id WHERE x.c360_id = :id AND p.phone_e164 IS NOT NULL ORDER BY 1",
        {"id": c360_id},
    )
    return {
        "c360_id": c360_id,
        "records": [
            {key: (None if pd.isna(value) else (json.loads(value) if key == "evidence" else str(value)))
             for key, value in row.items()}
            for row in records.to_dict("records")
        ],
        "emails": emails["email"].tolist(),
        "phones": phones["phone_e164"].tolist(),
    }


# --------------------------------------------------------------------------------------------- labels

MATCH, DISTINCT = "match", "distinct"
HELD_OUT_SHARE = 5  # one label in five is kept back to evaluate the model


def compared_for(prepared: Prepared, pairs: pd.DataFrame) -> pd.DataFrame:
    """Comparison levels for pairs given as record keys (record_a, record_b); unknown records are dropped."""
    position = pd.Series(np.arange(len(prepared.data)), index=prepared.data.records["record_key"])
    a = position.reindex(pairs["record_a"]).to_numpy()
    b = position.reindex(pairs["record_b"]).to_numpy()
    known = ~(np.isnan(a) | np.isnan(b))
    i, j = np.minimum(a[known], b[known]).astype("int64"), np.maximum(a[known], b[known]).astype("int64")
    return compare.compare_pairs(prepared.data, pd.DataFrame({"i": i, "j": j}))


def split_labels(warehouse: WarehouseResource) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, held out): a stable split by pair, so a label never moves between the two."""
    labels = warehouse.read_frame("SELECT record_a, record_b, label FROM training_label")
    if labels.empty:
        return labels, labels
    bucket = pd.util.hash_pandas_object(labels[["record_a", "record_b"]], index=False) % HELD_OUT_SHARE
    return labels[bucket != 0], labels[bucket == 0]


def uncertain_pairs(warehouse: WarehouseResource, config: MatchConfig, count: int) -> pd.DataFrame:
    """Unlabelled scored pairs the model is least sure about: match weight closest to the link threshold."""
    pairs = warehouse.read_frame(
        "SELECT l.record_a, l.record_b, l.probability, l.match_weight, l.evidence FROM identity_link l "
        "LEFT JOIN training_label t ON t.record_a = l.record_a AND t.record_b = l.record_b "
        "WHERE t.label IS NULL AND l.rule IS NULL")
    threshold_weight = np.log2(config.threshold / (1 - config.threshold))
    distance = (pairs["match_weight"] - threshold_weight).abs()
    return pairs.assign(distance=distance).sort_values(["distance", "record_a", "record_b"]).head(count)


def save_label(warehouse: WarehouseResource, record_a: str, record_b: str, label: str, labeled_by: str) -> None:
    first, second = sorted((record_a, record_b))
    row = pd.DataFrame([{"record_a": first, "record_b": second, "label": label, "labeled_at": utc_now(),
                         "labeled_by": labeled_by}])
    warehouse.replace_rows("training_label", row, {"record_a": first, "record_b": second})


def record_fields(warehouse: WarehouseResource, keys: list[str]) -> dict[str, dict[str, object]]:
    """The fields a person needs to judge a pair (also dedupe's training-record form)."""
    frame = warehouse.read_frame(
        "SELECT i.source || ':' || i.source_record_id AS record, i.first_name, i.last_name, i.birth_date, "
        "(SELECT MIN(e.email) FROM contact_point_email e WHERE e.source = i.source AND e.source_record_id = i.source_record_id) AS email, "
        "(SELECT MIN(p.phone_e164) FROM contact_point_phone p WHERE p.source = i.source AND p.source_record_id = i.source_record_id) AS phone, "
        "(SELECT MIN(a.line1 || ', ' || COALESCE(a.city, '') || ' ' || COALESCE(a.postal_code, '')) FROM contact_point_address a "
        " WHERE a.source = i.source AND a.source_record_id = i.source_record_id) AS address "
        "FROM individual i")
    frame = frame[frame["record"].isin(keys)]
    return {row["record"]: {k: (None if pd.isna(v) else str(v)) for k, v in row.items() if k != "record"}
            for row in frame.to_dict("records")}


def export_dedupe_training(warehouse: WarehouseResource) -> dict[str, list[list[dict[str, object]]]]:
    """All labels in dedupe's training-file format: {"match": [[record, record], ...], "distinct": [...]}."""
    labels = warehouse.read_frame("SELECT record_a, record_b, label FROM training_label ORDER BY record_a, record_b")
    fields = record_fields(warehouse, sorted(set(labels["record_a"]) | set(labels["record_b"])))
    training: dict[str, list[list[dict[str, object]]]] = {MATCH: [], DISTINCT: []}
    for row in labels.itertuples():
        if row.record_a in fields and row.record_b in fields:
            training[row.label].append([fields[row.record_a], fields[row.record_b]])
    return training


@dataclass(frozen=True)
class LabelEvaluation:
    held_out: int
    precision: float | None
    recall: float | None


def evaluate_on_held_out_labels(warehouse: WarehouseResource, config: MatchConfig) -> LabelEvaluation:
    """Precision and recall of the current model's link decisions on the labels kept back from training."""
    held_out = split_labels(warehouse)[1]
    model = latest_match_model(warehouse)
    if held_out.empty or model is None:
        return LabelEvaluation(len(held_out), None, None)
    prepared = prepare(load_match_input(warehouse), config)
    keys = prepared.data.records["record_key"].to_numpy()
    compared = compared_for(prepared, held_out[["record_a", "record_b"]])
    decided = score_and_decide(prepared, model, config, compared=compared)
    truth = {tuple(sorted(pair)): label for *pair, label in held_out.itertuples(index=False)}
    actual = np.array([truth[tuple(sorted((keys[i], keys[j])))] == MATCH for i, j in zip(decided["i"], decided["j"], strict=True)])
    predicted = decided["linked"].to_numpy()
    true_positive = int((actual & predicted).sum())
    precision = true_positive / int(predicted.sum()) if predicted.sum() else 1.0
    recall = true_positive / int(actual.sum()) if actual.sum() else 1.0
    return LabelEvaluation(len(held_out), precision, recall)
