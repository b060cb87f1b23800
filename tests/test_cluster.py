"""Clustering: linked pairs become people, without chaining and without runaway groups."""

import pandas as pd

from c360_pipelines.core.cluster import AMBIGUOUS, NEVER_TOGETHER, cluster_records


def links(*edges: tuple[int, int, float]) -> pd.DataFrame:
    return pd.DataFrame(edges, columns=["i", "j", "score"])


def never(pairs: pd.DataFrame) -> pd.Series:
    return pd.Series(0.0, index=pairs.index)


def always(pairs: pd.DataFrame) -> pd.Series:
    return pd.Series(0.99, index=pairs.index)


def test_linked_records_form_one_person_and_the_rest_stay_single() -> None:
    result = cluster_records(4, links((0, 1, 0.99)), never, 0.9, 25)
    assert result.labels[0] == result.labels[1] and len(set(result.labels)) == 3


def test_a_chain_through_one_record_does_not_join_records_that_disagree() -> None:
    # 0-1 and 1-2 are links, but 0 and 2 score 0 against each other (twins sharing a record's details).
    result = cluster_records(3, links((0, 1, 0.95), (1, 2, 0.95)), never, 0.9, 25)
    assert result.labels[0] != result.labels[2]


def test_records_agreeing_all_round_become_one_person() -> None:
    result = cluster_records(3, links((0, 1, 0.99), (1, 2, 0.99)), always, 0.9, 25)
    assert len(set(result.labels)) == 1


def test_a_cluster_larger_than_the_limit_is_reported_and_not_merged() -> None:
    star = links(*((0, k, 0.99) for k in range(1, 15)))
    result = cluster_records(15, star, always, 0.9, max_cluster_size=10)
    assert len(set(result.labels)) == 15
    assert list(result.guard_events["guard"]) == ["cluster_size"]


def test_a_linked_group_far_too_large_loses_its_weakest_links_first() -> None:
    weak_star = [(0, k, 0.91) for k in range(1, 60)]
    result = cluster_records(62, links(*weak_star, (60, 61, 0.99)), never, 0.9, max_cluster_size=10)
    assert "component_size" in set(result.guard_events["guard"])
    assert result.labels[60] == result.labels[61]  # the strong link elsewhere is untouched


def test_a_cannot_link_decision_keeps_two_records_apart() -> None:
    result = cluster_records(2, links((0, 1, 0.99)), always, 0.9, 25, cannot_link=pd.DataFrame({"i": [0], "j": [1]}))
    assert result.labels[0] != result.labels[1]


def test_a_must_link_decision_joins_two_records() -> None:
    result = cluster_records(2, links(), always, 0.9, 25, must_link=pd.DataFrame({"i": [0], "j": [1]}))
    assert result.labels[0] == result.labels[1]


def bridged_pair(never_together: tuple[int, int]) -> tuple[pd.DataFrame, object]:
    """Records 0 and 1, and six records 2..7 that agree with both and with each other."""
    edges = links(*((a, b, 0.99) for a in range(8) for b in range(a + 1, 8) if (a, b) != never_together))

    def scorer(pairs: pd.DataFrame) -> pd.Series:
        apart = (pairs["i"] == never_together[0]) & (pairs["j"] == never_together[1])
        return pd.Series(NEVER_TOGETHER, index=pairs.index).where(apart, 0.99)

    return edges, scorer


def test_records_that_can_never_be_together_stay_apart_however_many_records_agree_with_both() -> None:
    edges, scorer = bridged_pair((0, 1))
    result = cluster_records(8, edges, scorer, 0.5, 25)
    assert result.labels[0] != result.labels[1]


def test_a_pair_that_merely_scores_zero_is_outvoted_by_records_agreeing_with_both() -> None:
    edges, _ = bridged_pair((0, 1))
    result = cluster_records(8, edges, never, 0.5, 25)
    assert len(set(result.labels)) == 1


def test_a_cannot_link_decision_holds_against_records_agreeing_with_both() -> None:
    edges, _ = bridged_pair((0, 1))
    result = cluster_records(8, edges, always, 0.5, 25, cannot_link=pd.DataFrame({"i": [0], "j": [1]}))
    assert result.labels[0] != result.labels[1]


def two_people_and_a_record_between(fit_with_second: float) -> tuple[pd.DataFrame, object]:
    """Records 0-2 are one person and 3-5 another (0 and 3 can never be together); record 6 scores 0.99
    with the first and `fit_with_second` with the second."""
    first, second = (0, 1, 2), (3, 4, 5)

    def score(a: int, b: int) -> float:
        if {a, b} == {0, 3}:
            return NEVER_TOGETHER
        if 6 in (a, b):
            return 0.99 if ({a, b} - {6}) <= set(first) else fit_with_second
        return 0.99 if ({a, b} <= set(first) or {a, b} <= set(second)) else 0.1

    pairs = [(a, b) for a in range(7) for b in range(a + 1, 7)]

    def scorer(asked: pd.DataFrame) -> pd.Series:
        return pd.Series([score(a, b) for a, b in zip(asked["i"], asked["j"], strict=True)], index=asked.index)

    return links(*((a, b, score(a, b)) for a, b in pairs if score(a, b) >= 0.9)), scorer


def test_a_record_that_fits_two_people_known_apart_equally_is_left_on_its_own_and_reported() -> None:
    edges, scorer = two_people_and_a_record_between(fit_with_second=0.99)
    result = cluster_records(7, edges, scorer, 0.5, 25)
    assert len(set(result.labels[[0, 1, 2]])) == 1 and len(set(result.labels[[3, 4, 5]])) == 1
    assert result.labels[0] != result.labels[3]
    assert result.labels[6] not in set(result.labels[:6])
    assert result.guard_events.loc[result.guard_events["guard"] == AMBIGUOUS, "record"].tolist() == [6]


def test_a_record_that_fits_one_person_better_joins_that_person() -> None:
    edges, scorer = two_people_and_a_record_between(fit_with_second=0.2)
    result = cluster_records(7, edges, scorer, 0.5, 25)
    assert result.labels[6] == result.labels[0] != result.labels[3]
    assert AMBIGUOUS not in set(result.guard_events["guard"])
