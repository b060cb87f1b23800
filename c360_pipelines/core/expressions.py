"""A small, safe expression language for insights and conditions (no `eval`), parsed with Lark.

Two forms share one grammar:

- a **condition**: `lifetime_value >= 1000`, `type = order and status in (open, pending)`,
  `email is not null`, `not (region = CA or region = NY)`;
- an **insight**: an aggregate over a person's engagement rows with an optional condition,
  `sum(amount) where type = order and status != refunded`, `count()`, `max(occurred_at) where type = ticket`.

Values are numbers, quoted strings, or bare words (`order` means the text "order"). Text compares without
regard to case. A comparison with an empty field is false, as in SQL. Conditions evaluate on one mapping
(`holds`) or, vectorised, on a whole frame (`mask`).
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, VisitError

GRAMMAR = r"""
?start: condition
insight: AGGREGATE "(" [NAME] ")" ("where"i condition)?

?condition: disjunction
?disjunction: conjunction ("or"i conjunction)*
?conjunction: negation ("and"i negation)*
?negation: "not"i negation -> negate
         | atom
?atom: comparison | "(" condition ")"
comparison: NAME OPERATOR value                          -> compare
          | NAME "in"i "(" value ("," value)* ")"        -> member
          | NAME "not"i "in"i "(" value ("," value)* ")" -> not_member
          | NAME "is"i "null"i                           -> is_null
          | NAME "is"i "not"i "null"i                    -> is_not_null
value: NUMBER -> number
     | STRING        -> string
     | WORD          -> word

AGGREGATE.2: /(count_distinct|count|sum|avg|min|max)(?=\s*\()/i
OPERATOR: ">=" | "<=" | "!=" | "<>" | "==" | "=" | ">" | "<"
NAME: /[a-z_][a-z0-9_]*/i
WORD: /[A-Za-z0-9_.:@+\-]+/
STRING: /"[^"]*"/ | /'[^']*'/
NUMBER.2: /[+-]?\d+(\.\d+)?([eE][+-]?\d+)?(?![A-Za-z0-9_.:@+\-])/
%import common.WS
%ignore WS
"""

Aggregate = Literal["count", "count_distinct", "sum", "avg", "min", "max"]


class ExpressionError(ValueError):
    """An expression that does not parse; the message points at the column where it went wrong."""


@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Member:
    field: str
    values: tuple[Any, ...]
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    field: str
    negated: bool = False


@dataclass(frozen=True)
class And:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    part: Condition


Condition = Compare | Member | IsNull | And | Or | Not


@dataclass(frozen=True)
class Insight:
    aggregate: Aggregate
    field: str | None
    where: Condition | None

    @property
    def empty_value(self) -> float | None:
        """What the insight is for a person with no matching rows: 0 for counts and sums, else nothing."""
        return 0.0 if self.aggregate in ("count", "count_distinct", "sum") else None


class _ToAst(Transformer[Token, Any]):
    def number(self, items: list[Token]) -> float | int:
        text = str(items[0])
        return float(text) if any(c in text for c in ".eE") else int(text)

    def string(self, items: list[Token]) -> str:
        return str(items[0])[1:-1]

    def word(self, items: list[Token]) -> str:
        return str(items[0])

    @v_args(inline=True)
    def compare(self, name: Token, op: Token, value: Any) -> Compare:
        symbol = {"==": "=", "<>": "!="}.get(str(op), str(op))
        return Compare(str(name).lower(), symbol, value)

    def member(self, items: list[Any]) -> Member:
        return Member(str(items[0]).lower(), tuple(items[1:]))

    def not_member(self, items: list[Any]) -> Member:
        return Member(str(items[0]).lower(), tuple(items[1:]), negated=True)

    def is_null(self, items: list[Token]) -> IsNull:
        return IsNull(str(items[0]).lower())

    def is_not_null(self, items: list[Token]) -> IsNull:
        return IsNull(str(items[0]).lower(), negated=True)

    def conjunction(self, items: list[Condition]) -> And:
        return And(tuple(items))

    def disjunction(self, items: list[Condition]) -> Or:
        return Or(tuple(items))

    def negate(self, items: list[Condition]) -> Not:
        return Not(items[0])

    def insight(self, items: list[Any]) -> Insight:
        aggregate, field, where = (items + [None, None])[:3]
        name = str(field).lower() if field is not None else None
        kind = str(aggregate).lower()
        if kind != "count" and name is None:
            raise ExpressionError(f"{kind}() needs a field, e.g. {kind}(amount)")
        return Insight(kind, name, where)  # type: ignore[arg-type]


_PARSER = Lark(GRAMMAR, start=["condition", "insight"], parser="lalr", maybe_placeholders=True)


def _parse(text: str, start: str) -> Any:
    try:
        return _ToAst().transform(_PARSER.parse(text, start=start))
    except VisitError as error:
        if isinstance(error.orig_exc, ExpressionError):
            raise error.orig_exc from None
        raise
    except LarkError as error:
        column = getattr(error, "column", None)
        where = f" at column {column}" if isinstance(column, int) and column > 0 else ""
        raise ExpressionError(f"cannot parse {text!r}{where}") from None


def parse_condition(text: str) -> Condition:
    return _parse(text, "condition")  # type: ignore[no-any-return]


def parse_insight(text: str) -> Insight:
    return _parse(text, "insight")  # type: ignore[no-any-return]


def fields_of(node: Condition | Insight | None) -> set[str]:
    """Every field name an expression reads."""
    if node is None:
        return set()
    if isinstance(node, Insight):
        return ({node.field} if node.field else set()) | fields_of(node.where)
    if isinstance(node, (And, Or)):
        return set().union(*(fields_of(part) for part in node.parts))
    if isinstance(node, Not):
        return fields_of(node.part)
    return {node.field}


# ------------------------------------------------------------------------------------- one record

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}


def holds(condition: Condition, record: Mapping[str, Any]) -> bool:
    """Whether `condition` holds for one record (a profile with its insights, say)."""
    if isinstance(condition, And):
        return all(holds(part, record) for part in condition.parts)
    if isinstance(condition, Or):
        return any(holds(part, record) for part in condition.parts)
    if isinstance(condition, Not):
        return not holds(condition.part, record)
    value = record.get(condition.field)
    empty = _is_empty(value)
    if isinstance(condition, IsNull):
        return empty != condition.negated
    if empty:
        return False
    if isinstance(condition, Member):
        found = any(_equal(value, candidate) for candidate in condition.values)
        return found != condition.negated
    left, right = _comparable(value, condition.value)
    try:
        return bool(_OPERATORS[condition.op](left, right))
    except TypeError:
        return False


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or (not isinstance(value, (str, bytes)) and bool(pd.isna(value)))


def _equal(value: Any, literal: Any) -> bool:
    left, right = _comparable(value, literal)
    return bool(left == right)


def _comparable(value: Any, literal: Any) -> tuple[Any, Any]:
    """Bring a field value and a literal to one type: numbers, timestamps, or case-folded text."""
    if isinstance(value, bool):
        return str(value).lower(), str(literal).lower()
    if isinstance(value, (int, float)):
        try:
            return value, float(literal)
        except (TypeError, ValueError):
            return str(value), str(literal)
    if isinstance(value, (dt.date, pd.Timestamp)):
        try:
            return pd.Timestamp(value), pd.Timestamp(str(literal))
        except ValueError:
            return str(value), str(literal)
    if isinstance(literal, (int, float)):
        try:
            return float(value), literal
        except (TypeError, ValueError):
            pass
    return str(value).casefold(), str(literal).casefold()


# ---------------------------------------------------------------------------------------- a frame


def mask(condition: Condition | None, frame: pd.DataFrame) -> pd.Series:
    """Where `condition` holds, row by row of `frame`, vectorised. Unknown fields raise `ExpressionError`."""
    if condition is None:
        return pd.Series(True, index=frame.index)
    if isinstance(condition, And):
        result = pd.Series(True, index=frame.index)
        for part in condition.parts:
            result &= mask(part, frame)
        return result
    if isinstance(condition, Or):
        result = pd.Series(False, index=frame.index)
        for part in condition.parts:
            result |= mask(part, frame)
        return result
    if isinstance(condition, Not):
        return ~mask(condition.part, frame)
    if condition.field not in frame.columns:
        raise ExpressionError(f"unknown field '{condition.field}'; fields: {', '.join(sorted(frame.columns))}")
    column = frame[condition.field]
    present = column.notna() & (column != "") if column.dtype == object else column.notna()
    if isinstance(condition, IsNull):
        return present if condition.negated else ~present
    if isinstance(condition, Member):
        found = pd.Series(False, index=frame.index)
        for candidate in condition.values:
            found |= _compare_column(column, "=", candidate)
        return present & (~found if condition.negated else found)
    return present & _compare_column(column, condition.op, condition.value)


def _compare_column(column: pd.Series, op: str, literal: Any) -> pd.Series:
    compare = _OPERATORS[op]
    if pd.api.types.is_datetime64_any_dtype(column):
        result = compare(column, pd.Timestamp(str(literal)))
    elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        try:
            result = compare(column, float(literal))
        except (TypeError, ValueError):
            result = pd.Series(op == "!=", index=column.index)
    else:
        result = compare(column.astype("string").str.casefold(), str(literal).casefold())
    return result.fillna(False).astype(bool)
