"""Identity resolution over the warehouse: train the match model, then resolve every record to a 360 ID.

The model is a persisted, versioned artefact (`match_model`), trained when there is none or when asked;
resolution always scores with the latest one, so re-running on unchanged data links exactly the same pairs
and keeps every ID. Each step reads the canonical tables and writes its own tables in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa

from c360_pipelines import __version__
from c360_pipelines.config import MatchConfig
from c360_pipelines.core import block, compare, link, score
from c360_pipelines.core.cluster import AMBIGUOUS, Clustering, cluster_records
from c360_pipelines.core.ids import assign_ids
from c360_pipelines.core.records import RECORD_KEY_SEPARATOR, MatchInput, build_match_input, record_key
from c360_pipelines.default_model import default_model
from c360_pipelines.ingest import utc_now
from c360_pipelines.model import TABLES
from resources.warehouse import WarehouseResource, fill_temporary_table, indexes_rebuilt_after, read_sql

KEEP_PROBABILITY = 0.01
HOUSEHOLD_NOTE = "a household's: counted once"
FULL, INCREMENTAL = "full", "incremental"
REGROWTH_FOR_FULL = 1.1
MAX_SCOPE_ROUNDS = 16


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
    mode: str = "full"
    records_resolved: int = 0


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


def prepare(data: MatchInput, config: MatchConfig, compare_all: bool = True,
            compared_before: tuple[block.Candidates, pd.DataFrame] | None = None) -> Prepared:
    """Drop junk values, find candidate pairs, drop values too common to mean anything, compare (every pair, or,
    without `compare_all`, none yet: an incremental resolution compares only the pairs it needs). With
    `compared_before`, the candidates and comparisons of the same input are taken instead of computed."""
    junk = frozenset(config.junk_values)
    data = _without_values(data, junk)
    candidates = compared_before[0] if compared_before else block.candidate_pairs(data, config.max_block_size)
    common = frozenset(candidates.too_common["value"])
    data = _without_values(data, common)
    if compared_before:
        return Prepared(data, candidates, compared_before[1])
    pairs = candidates.pairs if compare_all else candidates.pairs.iloc[:0]
    return Prepared(data, candidates, compare.compare_pairs(data, pairs))


def _without_values(data: MatchInput, values: frozenset[str]) -> MatchInput:
    if not values:
        return data
    return data.with_values(
        emails=data.emails[~data.emails["value"].isin(values)],
        phones=data.phones[~data.phones["value"].isin(values)],
        identifiers=data.identifiers[~data.identifiers["value"].isin(values)],
    )


# ------------------------------------------------------------------------------------------- model


# The candidate pairs training compared, kept for the resolution that follows in the same process (the
# identity assets run right after the model's): at 1M records blocking and comparing take a minute or more.
# Only the pairs are kept; the records are read again, which is also how the resolution knows they are the same.
_trained_on: dict[str, tuple[str, block.Candidates, pd.DataFrame]] = {}


def _input_fingerprint(data: MatchInput, config: MatchConfig) -> str:
    """Everything `prepare` reads: the records and their values, and the settings that drop values."""
    digest = hashlib.sha256(json.dumps([config.junk_values, config.max_block_size]).encode())
    for frame in (data.records, data.emails, data.phones, data.identifiers, data.addresses):
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def train_match_model(warehouse: WarehouseResource, config: MatchConfig,
                      data: MatchInput | None = None) -> tuple[int, score.MatchModel]:
    """Train a new model version on the current canonical tables (and the training labels) and store it."""
    data = data if data is not None else load_match_input(warehouse)
    prepared = prepare(data, config)
    _trained_on[warehouse.url] = (_input_fingerprint(data, config), prepared.candidates, prepared.compared)
    labels = split_labels(warehouse)[0]
    matches = labels[labels["label"] == MATCH]
    labeled = compared_for(prepared, matches[["record_a", "record_b"]]) if len(matches) else None
    model = score.train(prepared.data, prepared.compared, labeled_matches=labeled, fallback=default_model)
    with warehouse.transaction() as connection:
        latest = connection.execute(sa.select(sa.func.max(TABLES["match_model"].c.version))).scalar() or 0
        version = int(latest) + 1
        row = pd.DataFrame([{"version": version, "trained_at": utc_now(), "records": len(prepared.data),
                             "candidate_pairs": len(prepared.compared), "parameters": json.dumps(model.to_json())}])
        warehouse.insert_rows("match_model", row, connection)
    return version, model


def latest_match_model(warehouse: WarehouseResource) -> score.MatchModel | None:
    return latest_match_model_version(warehouse)[1]


def latest_match_model_version(warehouse: WarehouseResource) -> tuple[int, score.MatchModel | None]:
    found = warehouse.read_frame("SELECT version, parameters FROM match_model ORDER BY version DESC LIMIT 1")
    if found.empty:
        return 0, None
    return int(found["version"].iloc[0]), score.MatchModel.from_json(json.loads(found["parameters"].iloc[0]))


# ---------------------------------------------------------------------------------------- resolve


def score_and_decide(prepared: Prepared, model: score.MatchModel, config: MatchConfig, pairs: pd.DataFrame | None = None,
                     compared: pd.DataFrame | None = None) -> pd.DataFrame:
    if compared is None:
        compared = prepared.compared if pairs is None else compare.compare_pairs(prepared.data, pairs)
    model = score.rescaled(model, len(prepared.data))
    guards = link.guards_in_force(config, model.field_conflicts)
    trusted = tuple(sorted(link.GUARDED_FIELDS[guard] for guard in guards))
    pairs = compared[["i", "j"]]
    # only the values of these pairs' records are looked at: an incremental run scores a few thousand pairs
    involved = np.unique(pairs.to_numpy()) if len(pairs) < len(prepared.data) else None
    households = compare.household_shares(prepared.data, compared, trusted, involved)
    return link.decide_links(prepared.data, compared, score.predict(model, compared, households=households),
                             config, guards)


def resolve_identities(warehouse: WarehouseResource, config: MatchConfig, now: dt.datetime | None = None,
                       full: bool = False) -> ResolutionReport:
    """Link, cluster and assign 360 IDs; write identity_link, xref, ids and identity_guard.

    After a first full resolution, a run re-resolves only what changed: the new, changed and removed records and
    every person they link to (grown until no link leaves the set, so each re-clustered group is whole). A full
    resolution happens on the first run, with `full`, when the model, the match settings or the set of too-common
    values changed, or once the records grew by a tenth since the last full one (the model's prior depends on it).
    """
    now = now or utc_now()
    data = load_match_input(warehouse)
    version, model = latest_match_model_version(warehouse)
    if model is None:
        version, model = train_match_model(warehouse, config, data)
    trained = _trained_on.pop(warehouse.url, None)
    same_input = trained is not None and trained[0] == _input_fingerprint(data, config)
    prepared = prepare(data, config, compare_all=False,
                       compared_before=(trained[1], trained[2]) if trained is not None and same_input else None)
    versions = warehouse.read_frame("SELECT source, source_record_id, batch_id FROM individual")
    fingerprint = _resolution_fingerprint(config, version, prepared.candidates.too_common)
    last = warehouse.read_frame("SELECT fingerprint, records_at_full FROM identity_run")
    incremental = (not full and len(last) == 1 and last["fingerprint"].iloc[0] == fingerprint
                   and len(prepared.data) <= int(last["records_at_full"].iloc[0]) * REGROWTH_FOR_FULL)
    if incremental:
        report = _resolve_changed(warehouse, config, model, prepared, versions, fingerprint,
                                  int(last["records_at_full"].iloc[0]), now)
        if report is not None:
            return report
    if len(prepared.compared) != len(prepared.candidates.pairs):
        prepared = Prepared(prepared.data, prepared.candidates,
                            compare.compare_pairs(prepared.data, prepared.candidates.pairs))
    return _resolve_all(warehouse, config, model, prepared, versions, fingerprint, now)


def _resolve_all(warehouse: WarehouseResource, config: MatchConfig, model: score.MatchModel, prepared: Prepared,
                 versions: pd.DataFrame, fingerprint: str, now: dt.datetime) -> ResolutionReport:
    decided = score_and_decide(prepared, model, config)
    records = prepared.data.records
    clustering = _cluster(prepared, model, config, decided)
    clusters = pd.DataFrame({"record_key": records["record_key"], "cluster": clustering.labels})
    previous_xref = _with_record_keys(warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref"))
    previous_ids = warehouse.read_frame("SELECT * FROM ids")
    assignment = assign_ids(clusters, previous_xref, previous_ids, now)
    keys = records["record_key"].to_numpy()
    xref = _xref_rows(assignment.xref, clustering.labels, decided, keys)
    guards = _guard_rows(prepared.candidates.too_common, clustering.guard_events, now, keys)
    replaced = ("identity_link", "xref", "ids", "identity_membership")
    with warehouse.transaction() as connection, indexes_rebuilt_after(connection, replaced):
        for table in replaced:
            connection.execute(TABLES[table].delete())
        warehouse.insert_rows("identity_link", _link_rows(decided, keys), connection)
        warehouse.insert_rows("xref", xref, connection)
        warehouse.insert_rows("ids", assignment.ids, connection)
        warehouse.insert_rows("identity_guard", guards, connection)
        warehouse.insert_rows("id_change", assignment.changes.assign(changed_at=now), connection)
        warehouse.insert_rows("identity_membership", versions, connection)
        _record_run(connection, FULL, fingerprint, len(records), len(records), len(records), now)
    return _report(warehouse, len(records), decided, assignment.changes, len(guards), FULL, len(records))


def _resolve_changed(warehouse: WarehouseResource, config: MatchConfig, model: score.MatchModel, prepared: Prepared,
                     versions: pd.DataFrame, fingerprint: str, records_at_full: int,
                     now: dt.datetime) -> ResolutionReport | None:
    """Re-resolve the changed records and the people they touch; None when the scope does not settle (the
    caller then resolves everything)."""
    records = prepared.data.records
    keys = records["record_key"].to_numpy()
    previous_xref = _with_record_keys(warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref"))
    previous_id = previous_xref.set_index("record_key")["c360_id"]
    resolved = _with_record_keys(warehouse.read_frame("SELECT source, source_record_id, batch_id FROM identity_membership"))
    current = _with_record_keys(versions)
    start, removed = _changed_records(current, resolved, keys, previous_id)
    if start.empty and removed.empty:
        with warehouse.transaction() as connection:
            _record_run(connection, INCREMENTAL, fingerprint, len(records), records_at_full, 0, now)
        nothing = pd.DataFrame({"linked": pd.Series(dtype=bool), "guard": pd.Series(dtype=object)})
        return _report(warehouse, len(records), nothing, pd.DataFrame(columns=["change"]), 0, INCREMENTAL, 0)
    grown = _grow_scope(prepared, model, config, keys, previous_id, start, removed)
    if grown is None:
        return None
    in_scope, people, decided = grown

    clustering = _cluster(prepared, model, config, decided)
    scope_keys = keys[in_scope]
    clusters = pd.DataFrame({"record_key": scope_keys, "cluster": clustering.labels[in_scope]})
    all_ids = warehouse.read_frame("SELECT * FROM ids")
    mine = all_ids["c360_id"].isin(people)
    assignment = assign_ids(clusters, previous_xref[previous_xref["record_key"].isin(scope_keys)], all_ids[mine], now,
                            taken_elsewhere=frozenset(all_ids.loc[~mine, "c360_id"]))
    xref = _xref_rows(assignment.xref, clustering.labels, decided, keys)
    guards = _guard_rows(prepared.candidates.too_common.iloc[:0], clustering.guard_events, now, keys)
    touched = pd.Index(scope_keys).union(pd.Index(removed))
    with warehouse.transaction() as connection:
        fill_temporary_table(connection, SCOPE, pd.DataFrame({"record_key": touched}).assign(
            source=lambda f: f["record_key"].str.partition(RECORD_KEY_SEPARATOR)[0],
            source_record_id=lambda f: f["record_key"].str.partition(RECORD_KEY_SEPARATOR)[2]), key="record_key")
        fill_temporary_table(connection, SCOPE_IDS, assignment.ids[["c360_id"]].drop_duplicates(), key="c360_id")
        in_scope_records = f"(source, source_record_id) IN (SELECT source, source_record_id FROM {SCOPE})"
        connection.exec_driver_sql(f"DELETE FROM xref WHERE {in_scope_records}")
        connection.exec_driver_sql(f"DELETE FROM identity_membership WHERE {in_scope_records}")
        connection.exec_driver_sql(f"DELETE FROM identity_link WHERE record_a IN (SELECT record_key FROM {SCOPE}) "
                                   f"OR record_b IN (SELECT record_key FROM {SCOPE})")
        connection.exec_driver_sql(f"DELETE FROM ids WHERE c360_id IN (SELECT c360_id FROM {SCOPE_IDS})")
        warehouse.insert_rows("identity_link", _link_rows(decided, keys), connection)
        warehouse.insert_rows("xref", xref, connection)
        warehouse.insert_rows("ids", assignment.ids, connection)
        warehouse.insert_rows("identity_guard", guards, connection)
        warehouse.insert_rows("id_change", assignment.changes.assign(changed_at=now), connection)
        warehouse.insert_rows("identity_membership", versions[current["record_key"].isin(scope_keys).to_numpy()],
                              connection)
        _record_run(connection, INCREMENTAL, fingerprint, len(records), records_at_full, len(scope_keys), now)
    return _report(warehouse, len(records), decided, assignment.changes, len(guards), INCREMENTAL, len(scope_keys))


SCOPE, SCOPE_IDS = "identity_scope", "identity_scope_ids"


def _changed_records(current: pd.DataFrame, resolved: pd.DataFrame, keys: np.ndarray,
                     previous_id: pd.Series) -> tuple[pd.Index, pd.Index]:
    """Records to start from (new, of a newer version than the one resolved, or never placed by a run that
    failed) and records that are gone, by record key."""
    compared = current.merge(resolved[["record_key", "batch_id"]], on="record_key", how="outer",
                             suffixes=("", "_resolved"), indicator=True)
    newer = (compared["_merge"] == "both") & (compared["batch_id"] != compared["batch_id_resolved"])
    changed = compared.loc[(compared["_merge"] == "left_only") | newer, "record_key"]
    removed = compared.loc[compared["_merge"] == "right_only", "record_key"]
    unplaced = pd.Index(keys).difference(previous_id.index)
    return pd.Index(changed).union(unplaced), pd.Index(removed)


def _grow_scope(prepared: Prepared, model: score.MatchModel, config: MatchConfig, keys: np.ndarray,
                previous_id: pd.Series, start: pd.Index,
                removed: pd.Index) -> tuple[np.ndarray, set[str], pd.DataFrame] | None:
    """From the starting records and the people of the starting and removed records, add every person a
    scored link reaches until no link leaves the set. Returns which records are in it, their people's IDs and
    every candidate pair that touches it, decided; None if it has not settled after MAX_SCOPE_ROUNDS."""
    position = pd.Series(np.arange(len(keys)), index=keys)
    person_of = previous_id.reindex(keys).reset_index(drop=True)
    in_scope = np.zeros(len(keys), dtype=bool)
    in_scope[position.reindex(start).dropna().astype(int).to_numpy()] = True
    people = set(previous_id.reindex(start.union(removed)).dropna())
    pairs = prepared.candidates.pairs
    left, right = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    seen = np.zeros(len(pairs), dtype=bool)
    decided = [score_and_decide(prepared, model, config, pairs=pairs.iloc[:0])]
    for _ in range(MAX_SCOPE_ROUNDS):
        in_scope |= person_of.isin(people).to_numpy()  # hashed: np.isin on strings sorts, seconds at 100k
        touching = (in_scope[left] | in_scope[right]) & ~seen
        seen |= touching
        if touching.any():
            decided.append(score_and_decide(prepared, model, config, pairs=pairs[touching]))
        linked = pd.concat(decided, ignore_index=True).query("linked")
        ends = np.concatenate([linked["i"].to_numpy(), linked["j"].to_numpy()]).astype(int)
        outside = ends[~in_scope[ends]]
        if not len(outside):
            return in_scope, people, pd.concat(decided, ignore_index=True)
        people |= set(person_of.iloc[outside].dropna())
        in_scope[outside] = True
    return None


def _cluster(prepared: Prepared, model: score.MatchModel, config: MatchConfig, decided: pd.DataFrame) -> Clustering:
    links = decided.loc[decided["linked"], ["i", "j", "link_score"]].rename(columns={"link_score": "score"})

    def score_missing(pairs: pd.DataFrame) -> pd.Series:
        return score_and_decide(prepared, model, config, pairs=pairs)["link_score"]

    threshold = link.cluster_threshold(config, model.field_conflicts).value
    return cluster_records(len(prepared.data), links, score_missing, threshold, config.max_cluster_size)


def _link_rows(decided: pd.DataFrame, keys: np.ndarray) -> pd.DataFrame:
    kept = decided[(decided["probability"] >= KEEP_PROBABILITY) | decided["rule"].notna() | decided["guard"].notna()]
    return pd.DataFrame({
        "record_a": keys[kept["i"].to_numpy()], "record_b": keys[kept["j"].to_numpy()],
        "probability": kept["probability"].to_numpy(), "match_weight": kept["match_weight"].to_numpy(),
        "rule": kept["rule"].to_numpy(), "guard": kept["guard"].to_numpy(), "linked": kept["linked"].to_numpy(),
        "evidence": link.evidence_json(kept),
    })


def _with_record_keys(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(record_key=record_key(frame["source"], frame["source_record_id"]))


def _resolution_fingerprint(config: MatchConfig, model_version: int, too_common: pd.DataFrame) -> str:
    payload = json.dumps({"match": config.model_dump(mode="json"), "model": model_version, "c360": __version__,
                          "too_common": sorted(too_common["value"].astype(str))}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _record_run(connection: sa.Connection, mode: str, fingerprint: str, records: int, records_at_full: int,
                resolved: int, now: dt.datetime) -> None:
    connection.execute(TABLES["identity_run"].delete())
    connection.execute(TABLES["identity_run"].insert().values(
        resolved_at=now, mode=mode, fingerprint=fingerprint, records=records, records_at_full=records_at_full,
        records_resolved=resolved))


def _report(warehouse: WarehouseResource, records: int, decided: pd.DataFrame, changes: pd.DataFrame, guards: int,
            mode: str, resolved: int) -> ResolutionReport:
    change_counts = changes["change"].value_counts()
    people = int(warehouse.scalar("SELECT COUNT(*) FROM ids WHERE status = 'active'"))
    return ResolutionReport(
        records=records, candidate_pairs=len(decided), linked_pairs=int(decided["linked"].sum()),
        guarded_pairs=int(decided["guard"].notna().sum()), people=people,
        created=int(change_counts.get("created", 0)), merged=int(change_counts.get("merged", 0)),
        split=int(change_counts.get("split", 0)), guard_events=guards, mode=mode, records_resolved=resolved,
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
        int(rec): orjson.dumps({"linked_to": str(keys[other]), **document}, option=orjson.OPT_SORT_KEYS).decode()
        for rec, other, document in zip(best["rec"], best["other"], documents, strict=True)
    }
    position = pd.Series(np.arange(len(keys)), index=keys)
    source, _, record_id = xref["record_key"].str.partition(RECORD_KEY_SEPARATOR).T.to_numpy()
    positions = position.reindex(xref["record_key"]).to_numpy()
    return pd.DataFrame({
        "source": source, "source_record_id": record_id, "c360_id": xref["c360_id"].to_numpy(),
        "evidence": [evidence.get(int(p), '"single record"') for p in positions],
    })


def _guard_rows(too_common: pd.DataFrame, events: pd.DataFrame, now: dt.datetime, keys: np.ndarray) -> pd.DataFrame:
    common = pd.DataFrame({
        "resolved_at": now, "guard": "too_common_value", "value": too_common["value"].astype(str),
        "records": too_common["records"].astype("int64"),
        "detail": "shared by too many records to identify anyone (" + too_common["blocking_key"] + ")",
    })
    about = events["record"].to_numpy()
    named = pd.notna(about)
    value = np.full(len(events), None, dtype=object)
    value[named] = keys[about[named].astype("int64")]
    clusters = events.drop(columns="record").assign(resolved_at=now, value=value)
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
    guards_off: list[str] = field(default_factory=list)  # guards that do not veto on this data, with the reason
    ambiguous: list[str] = field(default_factory=list)  # of the two, records left on their own as fitting two people


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
    household = decided["household"].split(",") if isinstance(decided["household"], str) else []
    fields = []
    for name in compare.COMPARISONS:
        level = int(compared.iloc[0][name])
        label = "missing on one side" if level == compare.MISSING else compare.LEVELS[name][level]
        if name in household or (household and name in score.IMPLIED_BY_HOUSEHOLD and level > 0):
            label += f" ({HOUSEHOLD_NOTE})"
        fields.append((name, label, float(decided[f"w_{name}"])))
    return Explanation(
        record_a, record_b, id_a is not None and id_a == id_b, (id_a, id_b), float(decided["probability"]),
        float(decided["match_weight"]), decided["rule"] if isinstance(decided["rule"], str) else None,
        decided["guard"] if isinstance(decided["guard"], str) else None, bool(decided["linked"]), fields,
        [f"{name}: {status.reason}" for name, status in link.guard_status(config, model.field_conflicts).items()
         if not status.in_force],
        _ambiguous_now(warehouse, (record_a, record_b)),
    )


def _ambiguous_now(warehouse: WarehouseResource, keys: tuple[str, str]) -> list[str]:
    """Which of `keys` the latest identity run left on their own because they fit two people."""
    found = warehouse.read_frame(
        f"SELECT value FROM identity_guard WHERE guard = '{AMBIGUOUS}' AND value IN (:a, :b) "
        "AND resolved_at = (SELECT MAX(resolved_at) FROM identity_guard)", {"a": keys[0], "b": keys[1]})
    return sorted(found["value"])


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
    threshold_weight = float(np.log2(config.threshold / (1 - config.threshold)))
    return warehouse.read_frame(
        "SELECT l.record_a, l.record_b, l.probability, l.match_weight FROM identity_link l "
        "LEFT JOIN training_label t ON t.record_a = l.record_a AND t.record_b = l.record_b "
        "WHERE t.label IS NULL AND l.rule IS NULL "
        "ORDER BY ABS(l.match_weight - :threshold_weight), l.record_a, l.record_b LIMIT :count",
        {"threshold_weight": threshold_weight, "count": int(count)})


def save_label(warehouse: WarehouseResource, record_a: str, record_b: str, label: str, labeled_by: str) -> None:
    first, second = sorted((record_a, record_b))
    row = pd.DataFrame([{"record_a": first, "record_b": second, "label": label, "labeled_at": utc_now(),
                         "labeled_by": labeled_by}])
    warehouse.replace_rows("training_label", row, {"record_a": first, "record_b": second})


def record_fields(warehouse: WarehouseResource, keys: list[str]) -> dict[str, dict[str, object]]:
    """The fields a person needs to judge a pair (also dedupe's training-record form)."""
    wanted = pd.DataFrame({"record_key": sorted(set(keys))})
    wanted["source"] = wanted["record_key"].str.partition(RECORD_KEY_SEPARATOR)[0]
    wanted["source_record_id"] = wanted["record_key"].str.partition(RECORD_KEY_SEPARATOR)[2]
    with warehouse.engine.connect() as connection:
        fill_temporary_table(connection, "record_fields_wanted", wanted, key="record_key")
        frame = read_sql(connection,
            "SELECT i.source || ':' || i.source_record_id AS record, i.first_name, i.last_name, i.birth_date, "
            "(SELECT MIN(e.email) FROM contact_point_email e WHERE e.source = i.source AND e.source_record_id = i.source_record_id) AS email, "
            "(SELECT MIN(p.phone_e164) FROM contact_point_phone p WHERE p.source = i.source AND p.source_record_id = i.source_record_id) AS phone, "
            "(SELECT MIN(a.line1 || ', ' || COALESCE(a.city, '') || ' ' || COALESCE(a.postal_code, '')) FROM contact_point_address a "
            " WHERE a.source = i.source AND a.source_record_id = i.source_record_id) AS address "
            "FROM record_fields_wanted w JOIN individual i ON i.source = w.source AND i.source_record_id = w.source_record_id")
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
