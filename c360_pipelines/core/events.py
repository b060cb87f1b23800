"""Change events: what happened to each profile between two builds, as typed CloudEvents.

`diff_profiles` compares the profiles as last published with the new ones and says, per 360 ID:
`profile.merged` (the survivor absorbed other IDs), `profile.split` (an ID's records went to several people),
`profile.created`, `profile.updated` (with each changed field's old and new value) and `profile.deleted`.
Actions then watch the created and updated profiles and emit their own event type when their condition
starts to hold. A rerun on unchanged data produces nothing, and an event's id is derived from the change
itself, so the same change always carries the same id and a receiver can drop duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from c360_pipelines.core.expressions import Condition, mask
from c360_pipelines.core.insights import Insight

CREATED, UPDATED, MERGED, SPLIT, DELETED = ("profile.created", "profile.updated", "profile.merged",
                                            "profile.split", "profile.deleted")
PROFILE_EVENT_TYPES = (CREATED, UPDATED, MERGED, SPLIT, DELETED)
EVENT_SOURCE = "/c360/profiles"
EVENT_COLUMNS = ["event_id", "type", "subject", "time", "data"]
# Attributes of a profile that events carry and compare; bookkeeping columns are left out.
NOT_PUBLISHED = ("profile_hash", "last_changed", "first_name_norm", "last_name_norm")
CONTACT_KINDS = ("email", "phone", "address")


@dataclass(frozen=True)
class Action:
    """`when` starts to hold on a created or updated profile -> emit an event of type `emit` with `data`."""

    name: str
    on: tuple[str, ...]
    when: Condition
    emit: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ProfileState:
    """Profiles as published at one moment: golden rows, insights (long) and contact points."""

    golden: pd.DataFrame
    insights: pd.DataFrame  # c360_id, insight, value, number
    contact_points: pd.DataFrame  # c360_id, kind, value

    @classmethod
    def empty(cls) -> ProfileState:
        return cls(pd.DataFrame(columns=["c360_id", "profile_hash", "last_changed"]),
                   pd.DataFrame(columns=["c360_id", "insight", "value", "number"]),
                   pd.DataFrame(columns=["c360_id", "kind", "value"]))


def diff_profiles(before: ProfileState, after: ProfileState, ids: pd.DataFrame, splits: pd.DataFrame,
                  insights: Mapping[str, Insight], actions: Iterable[Action], now: dt.datetime) -> pd.DataFrame:
    """Every event between two states, in delivery order: merges, splits, creations, updates, deletions, actions.

    `ids` is the current ids table (c360_id, status, merged_into); `splits` holds the identity history's split
    rows (c360_id, related), which tell a profile that came out of a split from a new person.
    """
    old_ids, new_ids = set(before.golden["c360_id"]), set(after.golden["c360_id"])
    old_hash = dict(zip(before.golden["c360_id"], before.golden["profile_hash"], strict=True))
    new_hash = dict(zip(after.golden["c360_id"], after.golden["profile_hash"], strict=True))
    survivor_of = _survivors(ids)
    events: list[dict[str, Any]] = []

    absorbed: dict[str, list[str]] = {}
    for gone in sorted(old_ids - new_ids):
        survivor = survivor_of.get(gone)
        if survivor is not None and survivor in new_ids:
            absorbed.setdefault(survivor, []).append(gone)
    for survivor, merged in sorted(absorbed.items()):
        events.append(_event(MERGED, survivor, {"c360_id": survivor, "survivor": survivor, "absorbed": merged},
                             key=f"{','.join(merged)}>{new_hash[survivor]}"))

    split_from = _split_origins(splits, new_ids - old_ids)
    for origin, pieces in sorted(_group(split_from).items()):
        came_out = sorted({origin, *pieces} & new_ids)
        events.append(_event(SPLIT, origin, {"c360_id": origin, "into": came_out},
                             key=f"{','.join(came_out)}>{new_hash.get(origin, '')}"))

    profiles = _published(after, insights)
    created = sorted(new_ids - old_ids)
    documents = _profile_json(profiles, created)
    for c360_id in created:
        extra = f', "split_from": {json.dumps(split_from[c360_id])}' if c360_id in split_from else ""
        events.append(_event(CREATED, c360_id, None, key=new_hash[c360_id],
                             raw_data=f'{{"c360_id": {json.dumps(c360_id)}{extra}, "profile": {documents[c360_id]}}}'))

    kept = sorted(old_ids & new_ids)
    changed = [c for c in kept if old_hash[c] != new_hash[c]]
    previous = _published(before, insights)
    documents = _profile_json(profiles, changed)
    old_points, new_points = _contact_lists(before.contact_points, changed), _contact_lists(after.contact_points, changed)
    for c360_id in changed:
        changes = _changes(previous.loc[c360_id], profiles.loc[c360_id], old_points[c360_id], new_points[c360_id])
        events.append(_event(UPDATED, c360_id, None, key=f"{old_hash[c360_id]}>{new_hash[c360_id]}",
                             raw_data=f'{{"c360_id": {json.dumps(c360_id)}, "changes": {json.dumps(changes, default=str)}, '
                                      f'"profile": {documents[c360_id]}}}'))

    for gone in sorted(old_ids - new_ids):
        if gone not in {m for merged in absorbed.values() for m in merged}:
            events.append(_event(DELETED, gone, {"c360_id": gone}, key=f"{old_hash[gone]}>deleted"))

    events += _action_events(actions, previous, profiles, created, changed, new_hash)
    frame = pd.DataFrame(events, columns=["event_id", "type", "subject", "data"])
    frame["time"] = now
    return frame[EVENT_COLUMNS]


def _event(kind: str, subject: str, data: Mapping[str, Any] | None, key: str, raw_data: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id(kind, subject, key), "type": kind, "subject": subject,
            "data": raw_data if raw_data is not None else json.dumps(data, default=str)}


def event_id(kind: str, subject: str, key: str) -> str:
    """A UUID-shaped id derived from the change itself, so that recomputing the same change gives the same id."""
    digest = hashlib.sha256(f"{kind}|{subject}|{key}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def cloud_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode document of one outbox row."""
    time = pd.Timestamp(row["time"])
    time = time.tz_localize("UTC") if time.tzinfo is None else time.tz_convert("UTC")
    return {"specversion": "1.0", "id": row["event_id"], "source": EVENT_SOURCE, "type": row["type"],
            "subject": row["subject"], "time": time.isoformat().replace("+00:00", "Z"),
            "datacontenttype": "application/json", "data": json.loads(row["data"])}


def cloud_event_json(row: Mapping[str, Any]) -> str:
    """The same document as `cloud_event`, serialised without parsing `data` again (the delivery hot path)."""
    time = row["time"]
    if isinstance(time, str):
        time = dt.datetime.fromisoformat(time)
    if time.tzinfo is not None:
        time = time.astimezone(dt.UTC).replace(tzinfo=None)
    head = {"specversion": "1.0", "id": row["event_id"], "source": EVENT_SOURCE, "type": row["type"],
            "subject": row["subject"], "time": time.isoformat() + "Z", "datacontenttype": "application/json"}
    return json.dumps(head, ensure_ascii=False)[:-1] + ', "data": ' + row["data"] + "}"


def _survivors(ids: pd.DataFrame) -> dict[str, str]:
    """Each merged ID's live survivor, following chains of merges."""
    merged_into = dict(zip(ids["c360_id"], ids["merged_into"], strict=True))
    status = dict(zip(ids["c360_id"], ids["status"], strict=True))
    result: dict[str, str] = {}
    for start in merged_into:
        current, seen = start, set()
        while status.get(current) == "merged" and isinstance(merged_into.get(current), str) and current not in seen:
            seen.add(current)
            current = merged_into[current]
        if status.get(current) == "active" and current != start:
            result[start] = current
    return result


def event_anchors(c360_ids: Iterable[str], ids: pd.DataFrame, splits: pd.DataFrame) -> dict[str, str]:
    """For each ID, the ID whose profile its merged or split event is about: a merged ID's survivor, a split
    piece's origin (or that origin's survivor), else itself. Profiles diffed together must share an anchor."""
    survivor_of = _survivors(ids)
    anchors = {c360_id: survivor_of.get(c360_id, c360_id) for c360_id in c360_ids}
    for origin, related in zip(splits["c360_id"], splits["related"].fillna(""), strict=True):
        for piece in filter(None, str(related).split(",")):
            if piece in anchors:
                anchors[piece] = survivor_of.get(origin, origin)
    return anchors


def _split_origins(splits: pd.DataFrame, new: set[str]) -> dict[str, str]:
    """New IDs that came out of a split, mapped to the ID that split."""
    origin: dict[str, str] = {}
    for c360_id, related in zip(splits["c360_id"], splits["related"].fillna(""), strict=True):
        for piece in filter(None, str(related).split(",")):
            if piece in new:
                origin[piece] = c360_id
    return origin


def _group(mapping: Mapping[str, str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for piece, origin in mapping.items():
        grouped.setdefault(origin, []).append(piece)
    return {origin: sorted(pieces) for origin, pieces in grouped.items()}


def insights_wide(long: pd.DataFrame, insights: Mapping[str, Insight], people: pd.Index) -> pd.DataFrame:
    """One column per insight, one row per person, with each insight's empty value where they have none."""
    wide = pd.DataFrame(index=people)
    for name, insight in insights.items():
        rows = long[long["insight"] == name].set_index("c360_id")
        numeric = (len(rows) > 0 and bool(rows["number"].notna().all())) or insight.empty_value is not None
        values = rows["number"] if numeric else rows["value"]
        column = values.reindex(people)
        if insight.empty_value is not None:
            column = column.astype(float).fillna(insight.empty_value)
        if insight.aggregate in ("count", "count_distinct"):
            column = column.astype("Int64")
        wide[name] = column
    return wide


def _published(state: ProfileState, insights: Mapping[str, Insight]) -> pd.DataFrame:
    """Profiles as events show them: golden attributes and insight columns, indexed by c360_id."""
    golden = state.golden.drop(columns=list(NOT_PUBLISHED), errors="ignore").set_index("c360_id")
    return golden.join(insights_wide(state.insights, insights, golden.index))


def _profile_json(profiles: pd.DataFrame, ids: list[str]) -> dict[str, str]:
    """JSON of each listed profile, insights nested, serialised by pandas in one pass (fast for many)."""
    if not ids:
        return {}
    insight_columns = [c for c in profiles.columns if c not in _attribute_columns(profiles)]
    chosen = profiles.loc[ids]
    attributes = chosen[_attribute_columns(profiles)].reset_index()
    lines = attributes.to_json(orient="records", lines=True, date_format="iso", force_ascii=False).splitlines()
    nested = chosen[insight_columns].to_json(orient="records", lines=True, date_format="iso",
                                             force_ascii=False).splitlines() if insight_columns else ["{}"] * len(ids)
    return {c360_id: f'{line[:-1]}, "insights": {inner}}}' for c360_id, line, inner in zip(ids, lines, nested, strict=True)}


def _attribute_columns(profiles: pd.DataFrame) -> list[str]:
    from c360_pipelines.model import GoldenProfile

    return [c for c in profiles.columns if c in GoldenProfile.model_fields]


def _contact_lists(points: pd.DataFrame, ids: list[str]) -> dict[str, dict[str, list[str]]]:
    """Per listed profile, its sorted emails, phones and addresses (one pass over the contact points)."""
    lists = {c360_id: {f"{kind}s": [] for kind in CONTACT_KINDS} for c360_id in ids}
    wanted = points["c360_id"].isin(lists) & points["kind"].isin(CONTACT_KINDS)
    own = points.loc[wanted, ["c360_id", "kind", "value"]].sort_values("value", kind="stable")
    for c360_id, kind, value in own.itertuples(index=False):
        lists[c360_id][f"{kind}s"].append(value)
    return lists


def _changes(old: pd.Series, new: pd.Series, old_points: dict[str, list[str]],
             new_points: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    changes: dict[str, dict[str, Any]] = {}
    for name in new.index:
        before, after = _plain(old.get(name)), _plain(new[name])
        if before != after:
            changes[name] = {"old": before, "new": after}
    for name, values in new_points.items():
        if values != old_points[name]:
            changes[name] = {"old": old_points[name], "new": values}
    return changes


def _plain(value: Any) -> Any:
    if value is None or (not isinstance(value, (str, list)) and pd.isna(value)):
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return pd.Timestamp(value).isoformat() if isinstance(value, (pd.Timestamp, dt.datetime)) else value.isoformat()
    if isinstance(value, (np.floating, float)):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value) if not isinstance(value, (int, float, bool)) else value


def _action_events(actions: Iterable[Action], before: pd.DataFrame, after: pd.DataFrame, created: list[str],
                   changed: list[str], new_hash: Mapping[str, str]) -> list[dict[str, Any]]:
    """An action fires for a profile when its condition holds now and did not hold before (or there was no before)."""
    events: list[dict[str, Any]] = []
    for action in actions:
        watched = ([*created] if CREATED in action.on else []) + ([*changed] if UPDATED in action.on else [])
        if not watched:
            continue
        candidates = after.loc[sorted(watched)]
        holds_now = mask(action.when, _comparable(candidates))
        previously = before.reindex(candidates.index)
        held_before = mask(action.when, _comparable(previously)) & previously.notna().any(axis=1)
        for c360_id in candidates.index[(holds_now & ~held_before).to_numpy()]:
            data = {"action": action.name, "c360_id": c360_id, **action.data}
            events.append(_event(action.emit, c360_id, data, key=f"{action.name}>{new_hash[c360_id]}"))
    return events


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Profile columns typed for conditions: dates and times as timestamps, the rest as they are."""
    frame = frame.copy()
    for column in ("birth_date", "first_seen", "last_seen"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], errors="coerce")
    return frame
