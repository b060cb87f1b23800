"""Calculated insights: aggregates over each person's engagement rows, declared as small expressions.

`lifetime_value: sum(amount) where type = order and status != refunded` is parsed once (see `expressions`)
and computed for everyone at once with pandas. A person with no matching rows has no row for the insight;
readers fill in the insight's empty value (0 for counts and sums, nothing otherwise), which keeps the table
small when most people never, say, opened a ticket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from c360_pipelines.core.expressions import ExpressionError, Insight, fields_of, mask, parse_insight

# Field names an insight may use, and the engagement column each reads. `type` and `kind` are the same.
ENGAGEMENT_FIELDS = {
    "type": "engagement_type", "kind": "engagement_type", "amount": "amount", "currency": "currency",
    "channel": "channel", "status": "status", "occurred_at": "occurred_at", "source": "source",
}
INSIGHT_COLUMNS = ["c360_id", "insight", "value", "number"]


def parse_insights(definitions: Mapping[str, str]) -> dict[str, Insight]:
    """Parse every definition and check that it only reads known engagement fields."""
    parsed: dict[str, Insight] = {}
    for name, text in definitions.items():
        insight = parse_insight(text)
        unknown = sorted(fields_of(insight) - set(ENGAGEMENT_FIELDS))
        if unknown:
            raise ExpressionError(f"insight '{name}': unknown field(s) {', '.join(unknown)}; "
                                  f"fields: {', '.join(sorted(ENGAGEMENT_FIELDS))}")
        parsed[name] = insight
    return parsed


def engagement_frame(engagement: pd.DataFrame) -> pd.DataFrame:
    """Engagement rows under the field names insights use (c360_id kept)."""
    frame = pd.DataFrame({"c360_id": engagement["c360_id"].to_numpy()})
    for name, column in ENGAGEMENT_FIELDS.items():
        values = engagement[column]
        if name == "occurred_at":
            values = pd.to_datetime(values)
        elif name == "amount":
            values = pd.to_numeric(values, errors="coerce")
        frame[name] = values.to_numpy()
    return frame


def compute_insights(engagement: pd.DataFrame, insights: Mapping[str, Insight]) -> pd.DataFrame:
    """Long-format insight values: one row per person and insight that had matching engagement rows."""
    rows = engagement_frame(engagement)
    # grouped by a number per person, in 360 ID order: grouping by the ID's text hashed it again for every insight
    person, people = pd.factorize(rows["c360_id"], sort=True)
    results = [_compute(rows, person, np.asarray(people, dtype=object), name, insight)
               for name, insight in insights.items()]
    results = [r.astype({"number": float}) for r in results if not r.empty]
    if not results:
        return pd.DataFrame(columns=INSIGHT_COLUMNS)
    return pd.concat(results, ignore_index=True)[INSIGHT_COLUMNS]


def _compute(rows: pd.DataFrame, person: np.ndarray, people: np.ndarray, name: str, insight: Insight) -> pd.DataFrame:
    selected = mask(insight.where, rows).to_numpy()
    if insight.field is None:
        values = pd.Series(person[selected]).value_counts(sort=False).sort_index()
    else:
        column = rows[insight.field][selected]
        present = column.notna().to_numpy()
        aggregate = {"count": "count", "count_distinct": "nunique", "sum": "sum", "avg": "mean", "min": "min",
                     "max": "max"}[insight.aggregate]
        if aggregate in ("sum", "mean") and not pd.api.types.is_numeric_dtype(column):
            raise ExpressionError(f"insight '{name}': {insight.aggregate}() needs a number field, not {insight.field}")
        values = column[present].groupby(person[selected][present]).agg(aggregate)
    if values.empty:
        return pd.DataFrame(columns=INSIGHT_COLUMNS)
    frame = pd.DataFrame({"c360_id": people[values.index.to_numpy()], "raw": values.reset_index(drop=True)})
    frame["insight"] = name
    if pd.api.types.is_datetime64_any_dtype(frame["raw"]):
        frame["value"] = _seconds_text(frame["raw"])
        frame["number"] = None
    elif pd.api.types.is_numeric_dtype(frame["raw"]):
        frame["number"] = frame["raw"].astype(float).round(6)
        frame["value"] = numbers_as_text(frame["number"].to_numpy(), format_number)
    else:
        frame["value"] = frame["raw"].astype(str)
        frame["number"] = None
    return frame[INSIGHT_COLUMNS]


def numbers_as_text(numbers: np.ndarray, formatter: Callable[[Any], str] = str) -> np.ndarray:
    """`formatter` of each number, made once per distinct value (counts and amounts repeat a lot). Floats are
    told apart by their bits, so 0.0 and -0.0 keep their own text, as they do value by value."""
    bits = numbers.view(np.int64) if numbers.dtype == np.float64 else numbers
    _, first, inverse = np.unique(bits, return_index=True, return_inverse=True)
    return np.array([formatter(number) for number in numbers[first].tolist()], dtype=object)[inverse.ravel()]


def times_as_text(stamps: np.ndarray, whole_seconds_short: bool = False) -> np.ndarray:
    """Each time (datetime64[us]) as `YYYY-MM-DD HH:MM:SS.ffffff`, or with `whole_seconds_short` without the
    fraction when it is zero (`datetime.isoformat(" ")`); None for NaT. Made by numpy once per distinct time:
    a person's times repeat across their contact points, and a part's across its people."""
    distinct, inverse = np.unique(stamps.view(np.int64), return_inverse=True)
    times = distinct.view("datetime64[us]")
    texts = np.char.replace(np.datetime_as_string(times, unit="us"), "T", " ")
    if whole_seconds_short:
        texts = np.where(distinct % 1_000_000 == 0, texts.astype("U19"), texts)
    made = texts.astype(object)
    made[np.isnat(times)] = None
    return made[inverse.ravel()]


def _seconds_text(times: pd.Series) -> pd.Series | np.ndarray:
    """`YYYY-MM-DDTHH:MM:SS` of each time; for naive times made by numpy for the whole column (pandas' strftime
    formats value by value and was a third of the insights' time)."""
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        return times.dt.strftime("%Y-%m-%dT%H:%M:%S")
    return np.datetime_as_string(times.to_numpy(dtype="datetime64[s]"), unit="s").astype(object)


def format_number(value: float) -> str:
    """12 for 12.0, 12.5 for 12.5: numbers as people write them."""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def insight_values(stored: Iterable[Mapping[str, Any]], insights: Mapping[str, Insight]) -> dict[str, Any]:
    """One person's insights from their stored rows (insight, value, number), with each insight's empty value
    where they have no row; counts read back as whole numbers."""
    found = {row["insight"]: (row["number"] if row["number"] is not None and row["number"] == row["number"]
                              else row["value"]) for row in stored}
    values = {name: found.get(name, insight.empty_value) for name, insight in insights.items()}
    return {name: (int(v) if isinstance(v, float) and v.is_integer() else v) for name, v in values.items()}
