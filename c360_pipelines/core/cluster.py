"""Identity stage 5: group linked records into people.

Links form connected components; a component of three or more records is then clustered with dedupe's
hierarchical (centroid) clustering over the scores of *every* pair inside it, pairs that were never
candidates being scored now (`score_pairs`). A single wrong link can therefore not chain two people together
when the other pairs between them disagree, and a guarded pair (twins) scores 0. A component larger than
`max_component` is first cut by keeping only its strongest links; a cluster still larger than
`max_cluster_size` is split into single records and reported, never merged blindly.

Steward decisions fit here: `must_link` pairs enter as links with score 1, `cannot_link` pairs score
`NEVER_TOGETHER`, as does a pair the birth-date guard stopped (see `link.decide_links`): no group holding both
records of such a pair is ever formed, however well other records bridge them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

PairScorer = Callable[[pd.DataFrame], pd.Series]

# Far enough below any threshold that, under centroid linkage, a group holding both records of the pair stays
# beyond reach of a merge even after averaging with thousands of agreeing pairs (its distance is 1 - score).
NEVER_TOGETHER = -1000.0
AMBIGUOUS = "ambiguous_record"


@dataclass
class Clustering:
    labels: np.ndarray  # cluster number per record position
    guard_events: pd.DataFrame  # guard, records, detail, and the record (position) an event is about


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def cluster_records(
    n: int,
    links: pd.DataFrame,
    score_pairs: PairScorer,
    threshold: float,
    max_cluster_size: int,
    must_link: pd.DataFrame | None = None,
    cannot_link: pd.DataFrame | None = None,
) -> Clustering:
    """Cluster `n` records given `links` (i, j, score); returns a cluster label per record."""
    edges = links[["i", "j", "score"]]
    if must_link is not None and len(must_link):
        forced = must_link[["i", "j"]].assign(score=1.0)
        edges = pd.concat([edges, forced], ignore_index=True) if len(edges) else forced
    forbidden = set(map(tuple, cannot_link[["i", "j"]].to_numpy())) if cannot_link is not None else set()
    edges = edges[[(a, b) not in forbidden for a, b in zip(edges["i"], edges["j"], strict=True)]] if forbidden else edges
    edges = edges.drop_duplicates(["i", "j"])
    events: list[dict[str, object]] = []
    edges = _cut_oversized_components(n, edges, max_cluster_size * 4, events)

    component = _components(n, edges["i"].to_numpy(), edges["j"].to_numpy())
    sizes = np.bincount(component)
    members = pd.DataFrame({"rec": np.arange(n), "component": component})
    # Two linked records are one person; only groups of three or more need hierarchical clustering.
    pairs_only = members[sizes[component] == 2].sort_values("rec")
    labels = np.arange(n)
    if len(pairs_only):
        first_of_pair = pairs_only.groupby("component")["rec"].transform("min").to_numpy()
        labels[pairs_only["rec"].to_numpy()] = first_of_pair
    members = members[sizes[component] >= 3]
    complete = _all_pairs_within(members)
    known = edges.set_index(["i", "j"])["score"]
    scores = pd.Series(known.reindex(pd.MultiIndex.from_frame(complete[["i", "j"]])).to_numpy(), index=complete.index)
    unknown = scores.isna().to_numpy()
    if unknown.any():
        scores[unknown] = score_pairs(complete.loc[unknown, ["i", "j"]].reset_index(drop=True)).to_numpy()
    if forbidden:
        never = np.array([(a, b) in forbidden for a, b in zip(complete["i"], complete["j"], strict=True)], dtype=bool)
        scores[never] = NEVER_TOGETHER

    # A group whose every pair scores at least the threshold ends as one cluster under centroid linkage
    # anyway (a centroid is never farther than the farthest member): only disagreeing groups need dedupe.
    group_of_pair = component[complete["i"].to_numpy()] if len(complete) else np.array([], dtype="int64")
    weakest = pd.Series(scores.to_numpy(), index=group_of_pair).groupby(level=0).min() if len(complete) else pd.Series(dtype=float)
    cohesive = set(weakest.index[weakest.to_numpy() >= threshold])
    together = members[members["component"].isin(cohesive)]
    if len(together):
        _label_groups(labels, together, max_cluster_size, events)
    mixed = ~np.isin(group_of_pair, list(cohesive))
    complete, scores = complete[mixed], scores[mixed]
    if len(complete):
        scored = np.empty(len(complete), dtype=[("pairs", "<i8", 2), ("score", "f4")])
        scored["pairs"] = complete[["i", "j"]].to_numpy()
        scored["score"] = scores.to_numpy(dtype="float32")
        # imported here: dedupe (with scikit-learn) adds a second to every process that loads the definitions,
        # and only an identity step that meets a disagreeing group needs it
        from dedupe.clustering import cluster as dedupe_cluster

        for cluster_members, _confidence in dedupe_cluster(scored, threshold=threshold):
            group = np.array(cluster_members, dtype="int64")
            if len(group) > max_cluster_size:
                events.append({"guard": "cluster_size", "records": len(group),
                               "detail": f"a cluster of {len(group)} records exceeds max_cluster_size "
                                         f"{max_cluster_size}; its records stay apart"})
                continue
            labels[group] = group.min()
        _set_apart_ambiguous(labels, complete, scores.to_numpy(), threshold, events)
    guard_events = pd.DataFrame(events, columns=["guard", "records", "detail", "record"])
    return Clustering(labels=labels, guard_events=guard_events)


def _label_groups(labels: np.ndarray, members: pd.DataFrame, max_cluster_size: int, events: list[dict[str, object]]) -> None:
    """Label each whole group with its smallest record, unless it is too large to be one person."""
    sizes = members.groupby("component")["rec"].transform("size").to_numpy()
    smallest = members.groupby("component")["rec"].transform("min").to_numpy()
    fits = sizes <= max_cluster_size
    labels[members["rec"].to_numpy()[fits]] = smallest[fits]
    for size in sorted(set(sizes[~fits].tolist())):
        events.append({"guard": "cluster_size", "records": int(size),
                       "detail": f"a cluster of {size} records exceeds max_cluster_size {max_cluster_size}; "
                                 "its records stay apart"})


def _all_pairs_within(members: pd.DataFrame) -> pd.DataFrame:
    if members.empty:
        return pd.DataFrame({"i": pd.Series(dtype="int64"), "j": pd.Series(dtype="int64")})
    joined = members.merge(members, on="component", suffixes=("_a", "_b"))
    joined = joined[joined["rec_a"] < joined["rec_b"]]
    return pd.DataFrame({"i": joined["rec_a"].to_numpy(), "j": joined["rec_b"].to_numpy()}).reset_index(drop=True)


def _cut_oversized_components(n: int, edges: pd.DataFrame, limit: int, events: list[dict[str, object]]) -> pd.DataFrame:
    """Keep only the strongest links inside components too large to be one person, until they fit."""
    while True:
        component = _components(n, edges["i"].to_numpy(), edges["j"].to_numpy())
        sizes = np.bincount(component)
        oversized = np.flatnonzero(sizes > limit)
        if len(oversized) == 0:
            return edges
        inside = np.isin(component[edges["i"].to_numpy()], oversized)
        floor = float(edges.loc[inside, "score"].min())
        events.append({"guard": "component_size", "records": int(sizes[oversized].max()),
                       "detail": f"{len(oversized)} linked group(s) larger than {limit} records: links scoring "
                                 f"{floor:.4f} or less inside them were dropped"})
        edges = edges[~inside | (edges["score"] > floor).to_numpy()]


def _set_apart_ambiguous(labels: np.ndarray, complete: pd.DataFrame, scores: np.ndarray, threshold: float,
                         events: list[dict[str, object]]) -> None:
    """Leave on its own a record that the cluster of another person, known to be another because a pair between
    the two can never be together, would also accept (its records agree with it at the threshold on average):
    which of the two it belongs to is a guess, such as a support ticket with only the name and the family email
    of a father and son of one name. A wrong guess would show one person's data on the other's profile."""
    i, j = complete["i"].to_numpy(), complete["j"].to_numpy()
    apart = labels[i] != labels[j]
    if not apart.any():
        return
    i, j, scores = i[apart], j[apart], scores[apart]
    never = scores <= NEVER_TOGETHER
    distinct = {(a, b) for a, b in zip(labels[i[never]].tolist(), labels[j[never]].tolist(), strict=True)}
    if not distinct:
        return
    distinct |= {(b, a) for a, b in distinct}
    fits = pd.DataFrame({"rec": np.concatenate([i, j]), "other": np.concatenate([labels[j], labels[i]]),
                         "score": np.concatenate([scores, scores])})
    fits = fits[[(int(labels[r]), o) in distinct for r, o in zip(fits["rec"], fits["other"], strict=True)]]
    mean = fits.groupby(["rec", "other"])["score"].mean()
    candidates = np.unique(mean.index.get_level_values("rec").to_numpy()[mean.to_numpy() >= threshold])
    ambiguous = candidates[np.bincount(labels, minlength=len(labels))[labels[candidates]] > 1]
    if not len(ambiguous):
        return
    touched = np.unique(labels[ambiguous])
    labels[ambiguous] = ambiguous
    for label in touched:
        members = np.setdiff1d(np.flatnonzero(labels == label), ambiguous)
        if len(members):
            labels[members] = members.min()
    events.extend({"guard": AMBIGUOUS, "records": 1, "record": int(record),
                   "detail": "fits as well with another person (known to be another: conflicting birth dates) as with its "
                             "own records; left on its own for a steward to decide"} for record in ambiguous)
