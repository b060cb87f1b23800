"""Identity stage 6: give every person one stable, opaque 360 ID.

IDs carry over from the previous run: a cluster keeps the ID its records had. When a cluster holds records of
several previous IDs (people merged), the oldest ID survives and the others are recorded as `merged_into` it.
When the records of one previous ID end up in several clusters (a split), the cluster with most of them keeps
the ID. A cluster with no previous ID gets a new one, derived from its smallest record key, so that a run from
scratch on the same data gives the same IDs. Unchanged data gives the identical mapping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import pandas as pd

ACTIVE, MERGED, RETIRED = "active", "merged", "retired"
ID_COLUMNS = ["c360_id", "status", "merged_into", "first_seen", "last_changed"]


@dataclass
class Assignment:
    xref: pd.DataFrame  # record_key, c360_id
    ids: pd.DataFrame  # c360_id, status, merged_into, first_seen, last_changed
    changes: pd.DataFrame  # c360_id, change (created|merged|split|updated), related (other ids)


def mint_id(seed: str, taken: set[str]) -> str:
    salt = 0
    while True:
        digest = hashlib.sha256(f"{seed}#{salt}".encode()).hexdigest()[:16]
        candidate = f"c360_{digest}"
        if candidate not in taken:
            return candidate
        salt += 1


def assign_ids(
    clusters: pd.DataFrame, previous_xref: pd.DataFrame, previous_ids: pd.DataFrame, now: dt.datetime,
    taken_elsewhere: set[str] | frozenset[str] = frozenset(),
) -> Assignment:
    """`clusters` has record_key and cluster; the previous tables are those of the last run (may be empty).

    For a re-resolution of part of the records, give that part's clusters, previous xref rows and IDs, and
    every other ID ever issued as `taken_elsewhere`, so that no new ID collides with one.
    """
    previous_ids = previous_ids.reindex(columns=ID_COLUMNS)
    members = clusters[["record_key", "cluster"]].merge(previous_xref[["record_key", "c360_id"]], on="record_key", how="left")
    first_seen = dict(zip(previous_ids["c360_id"], pd.to_datetime(previous_ids["first_seen"]), strict=True))

    # Each previous ID goes to the cluster holding most of its records (ties: the smallest record key).
    ordered = members.dropna(subset=["c360_id"]).sort_values("record_key", kind="stable")
    grouped = ordered.groupby(["c360_id", "cluster"], sort=False)["record_key"]
    held = pd.concat([grouped.size().rename("records"), grouped.first().rename("first_key")], axis=1).reset_index()
    held = held.sort_values(["c360_id", "records", "first_key"], ascending=[True, False, True])
    home = held.drop_duplicates("c360_id").set_index("c360_id")["cluster"]
    split_ids = set(held.loc[held.duplicated("c360_id", keep=False), "c360_id"])

    taken = set(previous_ids["c360_id"].dropna()) | set(taken_elsewhere)
    chosen: dict[int, str] = {}
    merged_into: dict[str, str] = {}
    changes: list[dict[str, object]] = []
    claims: dict[int, list[str]] = {}
    for c360_id, cluster_number in zip(home.index, home.to_numpy(), strict=True):
        claims.setdefault(cluster_number, []).append(c360_id)
    never_seen = pd.Timestamp(now)
    smallest_key = members.sort_values("record_key", kind="stable").drop_duplicates("cluster")
    for cluster_number, keys in zip(smallest_key["cluster"], smallest_key["record_key"], strict=True):
        candidates = sorted(claims.get(cluster_number, []), key=lambda i: (first_seen.get(i, never_seen), i))
        if candidates:
            survivor = candidates[0]
            for absorbed in candidates[1:]:
                merged_into[absorbed] = survivor
            if len(candidates) > 1:
                changes.append({"c360_id": survivor, "change": "merged", "related": ",".join(candidates[1:])})
        else:
            survivor = mint_id(str(keys), taken)
            taken.add(survivor)
            changes.append({"c360_id": survivor, "change": "created", "related": ""})
        chosen[cluster_number] = survivor

    xref = pd.DataFrame({"record_key": members["record_key"], "c360_id": members["cluster"].map(chosen)})
    for split in sorted(split_ids):
        pieces = members.loc[members["c360_id"] == split, "cluster"].map(chosen).unique()
        changes.append({"c360_id": split, "change": "split", "related": ",".join(sorted(set(pieces) - {split}))})
    ids = _ids_table(xref, previous_ids, merged_into, now)
    return Assignment(xref.sort_values("record_key").reset_index(drop=True), ids,
                      pd.DataFrame(changes, columns=["c360_id", "change", "related"]))


def _ids_table(xref: pd.DataFrame, previous: pd.DataFrame, merged_into: dict[str, str], now: dt.datetime) -> pd.DataFrame:
    active = set(xref["c360_id"])
    rows = {row.c360_id: row._asdict() for row in previous.itertuples(index=False)}
    for c360_id in active:
        if c360_id not in rows:
            rows[c360_id] = {"c360_id": c360_id, "status": ACTIVE, "merged_into": None, "first_seen": now, "last_changed": now}
        elif rows[c360_id]["status"] != ACTIVE:
            rows[c360_id].update(status=ACTIVE, merged_into=None, last_changed=now)
    for c360_id, row in rows.items():
        if c360_id in active:
            continue
        target = merged_into.get(c360_id)
        status = MERGED if target else RETIRED
        if row["status"] != status or row["merged_into"] != target:
            row.update(status=status, merged_into=target, last_changed=now)
    # A retired ID that was merged earlier keeps pointing at a live survivor.
    table = pd.DataFrame(list(rows.values()), columns=ID_COLUMNS)
    return table.sort_values("c360_id").reset_index(drop=True)


def resolve(c360_id: str, ids: pd.DataFrame) -> str | None:
    """Follow `merged_into` from a retired ID to the live survivor (None for an unknown or deleted ID)."""
    table = ids.set_index("c360_id")
    seen: set[str] = set()
    current = c360_id
    while current in table.index and current not in seen:
        seen.add(current)
        row = table.loc[current]
        if row["status"] == ACTIVE:
            return current
        if not isinstance(row["merged_into"], str):
            return None
        current = row["merged_into"]
    return None
