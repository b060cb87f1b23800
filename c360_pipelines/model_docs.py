"""Render the warehouse table reference (docs/tables.md) from the canonical model, so it cannot drift."""

from __future__ import annotations

from pydantic import BaseModel

from c360_pipelines.model import CANONICAL_MODELS, IDENTITY_MODELS, LEDGER_MODELS, TABLES

INTRO = """\
# Warehouse tables

Generated from `c360_pipelines/model.py` by `python -m c360_pipelines.model_docs > docs/tables.md`; a test
keeps it in step with the code. Every table lives in the warehouse named by `warehouse:` in c360.yaml (SQLite
by default, PostgreSQL in production) and can be queried with plain SQL or exported with `c360 export TABLE`.

**Canonical tables** hold the current version of every source record: the version with the latest
`updated_at`, then from the latest batch, then the last row. Each also exists as `staged_<table>`, with the
same columns, holding every version of every batch ever staged (the history, and what a backfill rewrites).
The Dagster asset `conformed/<table>` is the canonical table; `raw/<source>` and `staged/<source>` are the
rows one source contributed to `raw_record` and the `staged_*` tables.
"""


def _section(name: str, model: type[BaseModel]) -> str:
    table = TABLES[name]
    lines = [f"## `{name}`", "", (model.__doc__ or "").strip(), "", "| column | type | description |", "|---|---|---|"]
    for column in table.columns:
        nullable = "" if column.nullable else ", required"
        lines.append(f"| `{column.name}` | {column.type.compile()}{nullable} | {column.comment or ''} |")
    indexes = sorted(", ".join(c.name for c in index.columns) for index in table.indexes)
    if indexes:
        lines += ["", "Indexed on: " + "; ".join(f"({cols})" for cols in indexes) + "."]
    return "\n".join(lines) + "\n"


def render_tables_markdown() -> str:
    parts = [INTRO, "# Canonical tables\n"]
    parts += [_section(name, model) for name, model in CANONICAL_MODELS.items()]
    parts.append("# Landing, quarantine and the batch ledger\n")
    parts += [_section(name, model) for name, model in LEDGER_MODELS.items()]
    parts.append("# Identity\n")
    parts += [_section(name, model) for name, model in IDENTITY_MODELS.items()]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_tables_markdown(), end="")
