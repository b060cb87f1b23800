"""Identity stage 3: a match probability per candidate pair, learned without labels (Fellegi-Sunter).

For every comparison level the model holds m (how often true matches show that level) and u (how often
non-matches do). u is measured on random record pairs, which are almost all non-matches; m is measured on
candidate pairs that agree on three *other* identifying fields. The prior is the probability that two
random records are one person. A pair's match weight is the prior log-odds plus the sum of log2(m/u) over
its comparisons (a missing value adds nothing), and its probability follows. A shared
email or phone is weighed by how many records hold that value (term frequency): a value held by two records
is strong evidence, one held by forty is weak. The per-comparison terms are the explanation of a score.

Summing the terms assumes the fields are independent. Within a household they are not: any two members share
its family email or landline, its address and its last name. For a pair that shares a household's value
(`compare.household_values`: one that records of clearly different people hold), those agreements count as the
strongest of them alone (`count_household_once`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from c360_pipelines.core.compare import COMPARISONS, LEVELS, MISSING, compare_pairs
from c360_pipelines.core.records import MatchInput

# Comparisons whose top level is weighed by how common the shared value is.
FREQUENCY_ADJUSTED = {"email": 2, "phone": 2, "first_name": 3, "last_name": 3}
_EPSILON = 1e-6
MIN_POPULATION = 1000


@dataclass
class MatchModel:
    """m and u per comparison level, and the prior: the probability that two random records are one person."""

    m: dict[str, dict[int, float]]
    u: dict[str, dict[int, float]]
    prior: float
    records: int
    trained_on_pairs: int = 0
    # Per guarded field: pairs that are surely one person, and how many of them conflict on that field.
    field_conflicts: dict[str, tuple[int, int]] = field(default_factory=dict)
    learned_from: str = "data"  # or "default model": too few anchored pairs to learn m and u from this data

    def to_json(self) -> dict[str, object]:
        return {
            "m": {c: {str(k): v for k, v in levels.items()} for c, levels in self.m.items()},
            "u": {c: {str(k): v for k, v in levels.items()} for c, levels in self.u.items()},
            "prior": self.prior,
            "records": self.records,
            "trained_on_pairs": self.trained_on_pairs,
            "field_conflicts": {name: list(counts) for name, counts in self.field_conflicts.items()},
            "learned_from": self.learned_from,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> MatchModel:
        def levels(raw: object) -> dict[str, dict[int, float]]:
            return {c: {int(k): float(v) for k, v in ls.items()} for c, ls in raw.items()}  # type: ignore[union-attr]

        conflicts = {name: (int(pairs), int(conflicting))
                     for name, (pairs, conflicting) in data.get("field_conflicts", {}).items()}  # type: ignore[attr-defined]
        return cls(levels(data["m"]), levels(data["u"]), float(data["prior"]), int(data["records"]),  # type: ignore[arg-type]
                   int(data.get("trained_on_pairs", 0)), conflicts,  # type: ignore[call-overload]
                   str(data.get("learned_from", "data")))


def random_pairs(count: int, records: int, seed: int = 360) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    i = rng.integers(0, records, count)
    j = rng.integers(0, records, count)
    keep = i != j
    lo, hi = np.minimum(i, j)[keep], np.maximum(i, j)[keep]
    return pd.DataFrame({"i": lo, "j": hi}).drop_duplicates().reset_index(drop=True)


def estimate_u(data: MatchInput, sample_pairs: int = 300_000, seed: int = 360) -> dict[str, dict[int, float]]:
    """u per level: how often random pairs (nearly all non-matches) agree at that level."""
    sample = compare_pairs(data, random_pairs(sample_pairs, len(data), seed))
    return {name: _level_shares(sample[name], name) for name in COMPARISONS}


def _level_shares(
    levels: pd.Series, name: str, weights: np.ndarray | None = None, pseudo_count: float = 0.0
) -> dict[int, float]:
    """Share of each level among pairs with a value (weighted); pseudo-counts keep unseen levels possible."""
    present = levels.to_numpy() != MISSING
    w = np.ones(len(levels)) if weights is None else weights
    total = w[present].sum() + pseudo_count * len(LEVELS[name])
    shares = {}
    for level in LEVELS[name]:
        hit = w[present & (levels.to_numpy() == level)].sum() + pseudo_count
        shares[level] = float(max(hit / total, _EPSILON)) if total > 0 else _EPSILON
    return shares


# Evidence that singles a person out; a pair agreeing on three of these (not counting the field being
# estimated) is almost surely a match, whatever that field says.
_ANCHORS: dict[str, Callable[[pd.DataFrame], np.ndarray]] = {
    "email": lambda c: ((c["email"] == 2) & (c["email_freq"] <= 2)).to_numpy(),
    "phone": lambda c: ((c["phone"] == 2) & (c["phone_freq"] <= 2)).to_numpy(),
    "identifier": lambda c: (c["identifier"] == 2).to_numpy(),
    "birth_date": lambda c: (c["birth_date"] == 3).to_numpy(),
    "first_name": lambda c: (c["first_name"] >= 2).to_numpy(),
    "last_name": lambda c: (c["last_name"] >= 2).to_numpy(),
}
MIN_ANCHORS = 3


LABEL_WEIGHT = 5.0  # a pair a person confirmed counts as much as five anchored pairs


def estimate_m(compared: pd.DataFrame, labeled_matches: pd.DataFrame | None = None) -> dict[str, dict[int, float]]:
    """m per level, for each field from the pairs that agree on at least three *other* identifying fields.

    Plain EM lets its match class drift onto pairs that agree on correlated fields (a household shares a
    surname, an address and a landline); choosing each field's positives without that field avoids it.
    """
    agreements = {name: anchor(compared) for name, anchor in _ANCHORS.items()}
    labeled = labeled_matches if labeled_matches is not None else compared.iloc[0:0]
    m: dict[str, dict[int, float]] = {}
    for name in COMPARISONS:
        others = sum(hit.astype(int) for other, hit in agreements.items() if other != name)
        weights = np.concatenate([(others >= MIN_ANCHORS).astype(float), np.full(len(labeled), LABEL_WEIGHT)])
        levels = pd.concat([compared[name], labeled[name]], ignore_index=True)
        m[name] = _level_shares(levels, name, weights, pseudo_count=1.0)
    return m


def anchored_pairs(compared: pd.DataFrame) -> int:
    """How many pairs agree on at least MIN_ANCHORS identifying fields: almost surely one person each."""
    if not len(compared):
        return 0
    return int((sum(anchor(compared).astype(int) for anchor in _ANCHORS.values()) >= MIN_ANCHORS).sum())


# Fewer anchored pairs than this cannot give m for seven comparisons; the data is then scored with `fallback`.
MIN_ANCHORED_PAIRS = 50
# Share of true matches that the anchors catch; only sets the prior, by about log2(1/0.8) = 0.3 bits.
ANCHOR_RECALL = 0.8


def random_match_probability(compared: pd.DataFrame, records: int) -> float:
    """How likely two records drawn at random are the same person: anchored pairs / assumed recall / all pairs."""
    all_pairs = max(records * (records - 1) / 2, 1.0)
    return float(np.clip(anchored_pairs(compared) / ANCHOR_RECALL / all_pairs, 1.0 / all_pairs, 0.5))


def field_conflicts(compared: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """For first name and birth date: how many candidate pairs are surely one person without that field (they
    share an identifier and agree on the other of the two), and how many of those still conflict on it.

    This is how noisy the field is in this data, measured where twins and households cannot blur it: they do
    not share a loyalty or customer number. The guards read it (core/link.py).
    """
    shared_identifier = (compared["identifier"] == 2).to_numpy()
    sure = {"first_name": shared_identifier & (compared["birth_date"] == 3).to_numpy(),
            "birth_date": shared_identifier & (compared["first_name"] >= 2).to_numpy()}
    counts = {}
    for name, surely_one in sure.items():
        levels = compared[name].to_numpy()
        present = surely_one & (levels != MISSING)
        counts[name] = (int(present.sum()), int((present & (levels == 0)).sum()))
    return counts


def train(data: MatchInput, compared: pd.DataFrame, seed: int = 360, labeled_matches: pd.DataFrame | None = None,
          fallback: Callable[[], MatchModel] | None = None) -> MatchModel:
    """u from random pairs, m from anchored candidate pairs (and pairs people labelled as matches), the prior
    from how many pairs are anchored, and how noisy the guarded fields are.

    Data too small to learn from (fewer than MIN_ANCHORED_PAIRS anchored pairs) takes m, u and the prior of
    the `fallback` model, rescaled to its size, when one is given.
    """
    if fallback is not None and anchored_pairs(compared) < MIN_ANCHORED_PAIRS:
        return replace(rescaled(fallback(), len(data)), trained_on_pairs=len(compared),
                       field_conflicts=field_conflicts(compared), learned_from="default model")
    return MatchModel(m=estimate_m(compared, labeled_matches), u=estimate_u(data, seed=seed),
                      prior=random_match_probability(compared, len(data)), records=len(data),
                      trained_on_pairs=len(compared), field_conflicts=field_conflicts(compared))


def rescaled(model: MatchModel, records: int) -> MatchModel:
    """The model for a data set that has grown or shrunk since training.

    Matches grow with the number of records, all pairs with its square, so the prior scales by old/new (counting
    at least MIN_POPULATION records: a small project is a sample of a larger population, not a world of its own);
    term-frequency weights use the current record count.
    """
    prior = float(np.clip(model.prior * max(model.records, MIN_POPULATION) / max(records, MIN_POPULATION), 1e-15, 0.5))
    return replace(model, prior=prior, records=records)


def contributions(model: MatchModel, compared: pd.DataFrame, frequency_adjusted: bool = True) -> pd.DataFrame:
    """log2(m/u) per comparison per pair (0 for a missing value): the evidence each field gives."""
    terms = pd.DataFrame(index=compared.index)
    for name in COMPARISONS:
        levels = compared[name].to_numpy()
        weight_of = {level: np.log2(model.m[name][level] / model.u[name][level]) for level in LEVELS[name]}
        lookup = np.zeros(max(LEVELS[name]) + 2)  # index level + 1, so MISSING (-1) lands on 0.0
        for level, weight in weight_of.items():
            lookup[level + 1] = weight
        terms[name] = lookup[levels.astype(int) + 1]
        # How common a name is cannot be read off a handful of records (every name in four is "common").
        names_countable = model.records >= MIN_POPULATION or name not in ("first_name", "last_name")
        if frequency_adjusted and name in FREQUENCY_ADJUSTED and names_countable:
            top = FREQUENCY_ADJUSTED[name]
            freq = compared[f"{name}_freq"].to_numpy()
            shared = (levels == top) & (freq > 0)
            # u for a specific shared value: the chance that a random other record holds that same value. A few
            # hundred records cannot show how rare a value is in the population: count at least MIN_POPULATION.
            value_u = np.clip(freq / max(model.records, MIN_POPULATION), _EPSILON, 1.0)
            terms.loc[shared, name] = np.log2(model.m[name][top] / value_u[shared])
    return terms


# Agreements any two members of a household have, whichever value of theirs the pair shares.
IMPLIED_BY_HOUSEHOLD = ("address", "last_name")


def count_household_once(terms: pd.DataFrame, households: pd.DataFrame) -> pd.DataFrame:
    """For pairs that share a household's value (`households`: per kind, a flag per pair), the household's
    evidence counts once: any two members of a household share its values, its address and its last name, so
    of those agreements only the strongest weighs. Disagreements still count."""
    in_household = households.to_numpy().any(axis=1)
    if not in_household.any():
        return terms
    block = [*households.columns, "last_name"]
    implied = in_household[:, None] & (terms[block].to_numpy() > 0) & np.isin(block, IMPLIED_BY_HOUSEHOLD)
    flags = np.column_stack([households.to_numpy(), np.zeros(len(terms), dtype=bool)]) | implied
    weights = terms[block].to_numpy()
    strongest = np.where(flags, weights, -np.inf).argmax(axis=1)
    keep = np.zeros_like(flags)
    keep[np.arange(len(flags)), strongest] = True
    adjusted = terms.copy()
    adjusted[block] = np.where(flags & ~keep, np.minimum(weights, 0.0), weights)
    return adjusted


def predict(model: MatchModel, compared: pd.DataFrame, frequency_adjusted: bool = True,
            households: pd.DataFrame | None = None) -> pd.DataFrame:
    """Match weight and probability per compared pair, with each comparison's contribution."""
    terms = contributions(model, compared, frequency_adjusted)
    if households is not None:
        households = households.set_axis(terms.index)
        terms = count_household_once(terms, households)
    prior_weight = np.log2(model.prior / (1 - model.prior))
    weight = prior_weight + terms.sum(axis=1).to_numpy()
    probability = 1.0 / (1.0 + np.power(2.0, -np.clip(weight, -60, 60)))
    result = compared[["i", "j"]].copy()
    result["match_weight"] = weight
    result["probability"] = probability
    for name in COMPARISONS:
        result[f"w_{name}"] = terms[name].to_numpy()
    result["household"] = household_kinds(households) if households is not None else None
    return result


def household_kinds(households: pd.DataFrame) -> np.ndarray:
    """Per pair, the kinds of household value it shares ("email,address"), None where it shares none."""
    kinds = np.full(len(households), None, dtype=object)
    for kind in households.columns:
        flagged = households[kind].to_numpy()
        kinds[flagged] = [kind if before is None else f"{before},{kind}" for before in kinds[flagged]]
    return kinds
