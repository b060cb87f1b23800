"""The expression language of insights and conditions: what parses, what it means, and what is refused."""

from __future__ import annotations

import pandas as pd
import pytest

from c360_pipelines.core.expressions import (
    And,
    Compare,
    ExpressionError,
    Member,
    holds,
    mask,
    parse_condition,
    parse_insight,
)
from c360_pipelines.core.insights import compute_insights, insight_values, parse_insights


def test_a_condition_reads_like_sql_with_bare_words_for_text() -> None:
    condition = parse_condition("type = order and status in (open, 'on hold')")
    assert condition == And((Compare("type", "=", "order"), Member("status", ("open", "on hold"))))


def test_conditions_on_one_profile_compare_numbers_dates_and_text_without_case() -> None:
    profile = {"lifetime_value": 1200.5, "region": "ca", "email": None, "last_order_at": pd.Timestamp("2024-07-01")}
    assert holds(parse_condition("lifetime_value >= 1000 and region = CA"), profile)
    assert holds(parse_condition("email is null and not (region in (NY, TX))"), profile)
    assert holds(parse_condition("last_order_at > 2024-06-30"), profile)
    assert not holds(parse_condition("email = x@y.org or lifetime_value < 10"), profile)
    assert not holds(parse_condition("missing_field != 3"), profile)  # like SQL: nothing compares with empty


def test_a_condition_masks_a_frame_the_same_way_it_holds_row_by_row() -> None:
    frame = pd.DataFrame({"type": ["order", "ORDER", "ticket", None], "amount": [10.0, 250.0, None, 5.0]})
    condition = parse_condition("type = order and amount > 100 or type is null")
    expected = [holds(condition, row) for row in frame.to_dict("records")]
    assert mask(condition, frame).tolist() == expected == [False, True, False, True]


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "amount >", "a = 1 and", "amount >= 1; drop"])
def test_anything_that_is_not_the_language_is_refused_and_never_evaluated(text: str) -> None:
    with pytest.raises(ExpressionError, match="cannot parse"):
        parse_condition(text)


def test_an_insight_is_an_aggregate_with_an_optional_condition() -> None:
    insight = parse_insight("SUM(amount) where kind = order")
    assert (insight.aggregate, insight.field, insight.where) == ("sum", "amount", Compare("kind", "=", "order"))
    with pytest.raises(ExpressionError, match="needs a field"):
        parse_insight("max()")


def test_insights_aggregate_each_persons_engagement_and_fill_in_empty_values() -> None:
    engagement = pd.DataFrame({
        "c360_id": ["p1", "p1", "p1", "p2"], "source": "shop", "currency": "USD", "channel": "web",
        "engagement_type": ["order", "order", "ticket", "ticket"], "amount": [10.0, 32.5, None, None],
        "status": ["paid", "refunded", "open", "closed"],
        "occurred_at": pd.to_datetime(["2024-01-01", "2024-03-01", "2024-04-01", "2024-02-01"]),
    })
    definitions = parse_insights({"lifetime_value": "sum(amount) where type = order and status != refunded",
                                  "last_order_at": "max(occurred_at) where type = order",
                                  "open_tickets": "count() where type = ticket and status in (open, pending)"})
    values = compute_insights(engagement, definitions)
    p1 = insight_values(values[values["c360_id"] == "p1"].to_dict("records"), definitions)
    p2 = insight_values(values[values["c360_id"] == "p2"].to_dict("records"), definitions)
    assert p1 == {"lifetime_value": 10, "last_order_at": "2024-03-01T00:00:00", "open_tickets": 1}
    assert p2 == {"lifetime_value": 0, "last_order_at": None, "open_tickets": 0}


def test_an_insight_over_an_unknown_field_is_refused_with_the_fields_there_are() -> None:
    with pytest.raises(ExpressionError, match="unknown field.*price.*fields: amount"):
        parse_insights({"revenue": "sum(price)"})
