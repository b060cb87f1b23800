"""Active learning for `c360 label`: dedupe's disagreement learner picks the pairs worth a person's answer.

dedupe's learner (a match classifier and a blocking-rule learner, asking where they disagree or where the
classifier is least sure) runs on a sample of records, not on the whole warehouse: `prepare_training` on 5,000
records takes minutes and gigabytes, on 1,500 a few seconds. The sample is drawn where answers teach most: the
records of the pairs c360's own model scores closest to its link threshold, records already labelled (so
the learner starts from every earlier answer), and random records, so that it also sees plain non-matches.
Answers go to the warehouse (`training_label`) and back into the learner before it picks the next pair.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from c360_pipelines.config import MatchConfig
from c360_pipelines.identity import DISTINCT, MATCH, record_fields, save_label, uncertain_pairs
from resources.warehouse import WarehouseResource

SAMPLE_RECORDS = 1500
LABEL_FIELDS = ("first_name", "last_name", "birth_date", "email", "phone", "address")
RECORD = "record"  # the record key travels inside each record dict; dedupe ignores fields it does not compare


def _dedupe_fields() -> list[Any]:
    from dedupe import variables

    return [variables.String("first_name", has_missing=True), variables.String("last_name", has_missing=True),
            variables.ShortString("birth_date", has_missing=True), variables.String("email", has_missing=True),
            variables.ShortString("phone", has_missing=True), variables.String("address", has_missing=True)]


def sample_keys(warehouse: WarehouseResource, config: MatchConfig, size: int = SAMPLE_RECORDS,
                seed: int = 360) -> list[str]:
    """Record keys for the learner: every labelled record, then records of the model's most uncertain pairs
    (half the sample), then random records up to `size`."""
    labels = warehouse.read_frame("SELECT record_a, record_b FROM training_label")
    chosen = dict.fromkeys(pd.concat([labels["record_a"], labels["record_b"]]).tolist())
    labelled = len(chosen)
    for pair in uncertain_pairs(warehouse, config, size).itertuples():
        if len(chosen) >= labelled + size // 2:
            break
        chosen.update(dict.fromkeys((pair.record_a, pair.record_b)))
    everyone = warehouse.read_frame("SELECT source || ':' || source_record_id AS record FROM individual "
                                    "ORDER BY source, source_record_id")["record"].to_numpy()
    for key in np.random.default_rng(seed).permutation(everyone):
        if len(chosen) >= size:
            break
        chosen.setdefault(str(key), None)
    return list(chosen)


class ActiveLabeler:
    """dedupe's active learner over a sample of the warehouse; `pairs()` yields the pairs it most wants
    answered, `answer()` stores an answer and teaches the learner."""

    def __init__(self, warehouse: WarehouseResource, config: MatchConfig, sample_size: int = SAMPLE_RECORDS) -> None:
        import dedupe

        logging.getLogger("dedupe").setLevel(logging.WARNING)
        self.warehouse = warehouse
        fields = record_fields(warehouse, sample_keys(warehouse, config, sample_size))
        self.records = {key: {RECORD: key, **{name: values.get(name) for name in LABEL_FIELDS}}
                        for key, values in fields.items()}
        self.learner = dedupe.Dedupe(_dedupe_fields())
        self.learner.prepare_training(self.records)
        earlier = self._earlier_answers()
        self._teach(earlier)
        self.answered = {frozenset((a[RECORD], b[RECORD])) for pairs in earlier.values() for a, b in pairs}

    def _earlier_answers(self) -> dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]:
        labels = self.warehouse.read_frame("SELECT record_a, record_b, label FROM training_label")
        known = labels[labels["record_a"].isin(self.records) & labels["record_b"].isin(self.records)]
        return {label: [(self.records[a], self.records[b]) for a, b in zip(group["record_a"], group["record_b"], strict=True)]
                for label, group in known.groupby("label")}

    def _teach(self, answers: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]]) -> None:
        answers = {MATCH: answers.get(MATCH, []), DISTINCT: answers.get(DISTINCT, [])}
        if answers[MATCH] or answers[DISTINCT]:
            self.learner.mark_pairs(answers)  # type: ignore[arg-type]

    def pairs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """The next pair dedupe is most curious about, until its sample runs out."""
        while True:
            try:
                (first, second), = self.learner.uncertain_pairs()
            except IndexError:
                return
            if first[RECORD] != second[RECORD] and frozenset((first[RECORD], second[RECORD])) not in self.answered:
                yield first, second

    def answer(self, first: dict[str, Any], second: dict[str, Any], label: str, labeled_by: str) -> None:
        save_label(self.warehouse, first[RECORD], second[RECORD], label, labeled_by)
        self.answered.add(frozenset((first[RECORD], second[RECORD])))
        self._teach({label: [(first, second)]})
