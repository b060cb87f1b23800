"""The `c360` command line: demo data, runs, validation and exports."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from c360_pipelines.config import CONFIG_ENV_VAR, C360Config, ConfigError, load_config

app = typer.Typer(
    help="c360: every customer source in one canonical model, on Dagster.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar=CONFIG_ENV_VAR, help="Path to c360.yaml (default: ./c360.yaml)."),
]


def _load(config: Path | None) -> C360Config:
    try:
        return load_config(config)
    except ConfigError as error:
        _fail(error)


def _fail(error: Exception) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {error}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the data set and its c360.yaml into.")] = Path("demo"),
    people: Annotated[int, typer.Option("--people", "-n", min=10, help="How many true people to generate.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 360,
) -> None:
    """Write a seeded, realistic four-system demo data set (with truth.csv) and a c360.yaml for it."""
    from c360_pipelines.demo import write_demo

    started = time.perf_counter()
    summary = write_demo(out, people=people, seed=seed)
    console.print(_counts_table(f"demo data for {summary.people:,} people in {out}/", "source", "records", summary.records))
    console.print(f"wrote {out / 'c360.yaml'}, {out / 'truth.csv'} and {out / 'people.csv'} "
                  f"in {time.perf_counter() - started:.1f}s")


@app.command()
def run(config: ConfigOption = None) -> None:
    """Land every new or changed batch, stage it and rebuild everything downstream, in-process."""
    from c360_pipelines.runner import run_pipeline

    project = _load(config)
    try:
        with console.status("starting") as status:
            summary = run_pipeline(project, progress=lambda message: _step(status, message))
    except ConfigError as error:
        _fail(error)
    if not summary.batches:
        console.print("nothing new: every batch is already landed and staged")
    downstream = {"conformed": "conformed tables (rebuilt", "identity": "identity (resolved",
                  "profiles": "golden profiles (built"}
    sources = [stage for stage in summary.stages if stage.name not in downstream]
    if sources:
        table = Table(title="sources (all batches landed so far)", title_justify="left")
        for column in ("source", "batches", "rows read", "rows staged", "rows quarantined", "seconds"):
            table.add_column(column, justify="left" if column == "source" else "right")
        for stage in sources:
            table.add_row(stage.name, *(f"{v:,}" for v in stage.counts.values()), f"{stage.seconds:.1f}")
        console.print(table)
    for stage in summary.stages:
        if stage.name in downstream:
            console.print(_counts_table(f"{downstream[stage.name]} in {stage.seconds:.1f}s)", "table", "rows",
                                        stage.counts))
    quarantined = sum(stage.counts.get("rows quarantined", 0) for stage in sources)
    if quarantined:
        console.print(f"{quarantined:,} row(s) set aside with their reasons: c360 export quarantine -o quarantine.csv")
    console.print(f"{len(summary.batches)} batch(es) processed in {summary.seconds:.1f}s; warehouse: {project.warehouse}")


def _counts_table(title: str, what: str, unit: str, counts: dict[str, object]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(what)
    table.add_column(unit, justify="right")
    for name, count in counts.items():
        table.add_row(name, f"{count:,}" if isinstance(count, (int, float)) else str(count))
    return table


def _step(status: object, message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", highlight=False)
    status.update(message)  # type: ignore[attr-defined]


@app.command()
def validate(config: ConfigOption = None) -> None:
    """Check the config, every source (files, columns, databases) and the warehouse, without running."""
    from c360_pipelines.core.conform import check_mapped_columns
    from resources.sources import FileDropReader, reader_for
    from resources.warehouse import WarehouseResource

    project = _load(config)
    problems: list[str] = []
    table = Table(title=f"{project.config_path}", title_justify="left")
    for column in ("source", "kind", "batches", "columns checked", "status"):
        table.add_column(column)
    for source in project.sources:
        try:
            reader = reader_for(project, source)
            refs = reader.require_files() if isinstance(reader, FileDropReader) else reader.discover()
            first = reader.read(refs[0].batch_id)
            if len(first.rows):
                check_mapped_columns(source, first.columns, refs[0].location)
            table.add_row(source.name, source.kind, str(len(refs)), str(len(first.columns)), "[green]ok[/]")
        except ConfigError as error:
            problems.append(str(error))
            table.add_row(source.name, source.kind, "-", "-", "[red]error[/]")
    try:
        WarehouseResource(url=project.warehouse).ensure_tables()
    except ConfigError as error:
        problems.append(str(error))
    console.print(table)
    if problems:
        for problem in problems:
            errors.print(f"[bold red]error:[/] {problem}", highlight=False)
        raise typer.Exit(code=2)
    console.print(f"config and sources are valid; warehouse {project.warehouse} is reachable")


@app.command()
def export(
    table: Annotated[str, typer.Argument(help="A warehouse table, e.g. individual, contact_point_email, quarantine.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write: .csv, .parquet or .jsonl.")],
    config: ConfigOption = None,
) -> None:
    """Write a warehouse table to a CSV, Parquet or JSON-lines file, streaming it in chunks.

    `golden_profile` to .jsonl or .parquet nests each profile's contact points and insights in it."""
    from c360_pipelines.model import TABLES
    from resources.warehouse import WarehouseResource

    project = _load(config)
    if table not in TABLES:
        _fail(ConfigError(f"unknown table '{table}'; tables: {', '.join(sorted(TABLES))}"))
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".parquet", ".jsonl"):
        _fail(ConfigError(f"{output}: unsupported extension '{suffix}'; use .csv, .parquet or .jsonl"))
    warehouse = WarehouseResource(url=project.warehouse)
    warehouse.ensure_tables()
    output.parent.mkdir(parents=True, exist_ok=True)
    if table == "golden_profile" and suffix != ".csv":
        from c360_pipelines.profiles import export_profiles

        rows = export_profiles(warehouse, output)
    else:
        rows = _export_table(warehouse.engine, TABLES[table], output, suffix, EXPORT_COLUMNS.get(table))
    console.print(f"wrote {rows:,} rows of {table} to {output}")


# Tables whose export is a contract with other systems: exactly these columns, in this order.
EXPORT_COLUMNS = {"xref": ["source", "source_record_id", "c360_id"]}


def _export_table(engine: sa.Engine, table: sa.Table, output: Path, suffix: str, columns: list[str] | None = None,
                  chunk_rows: int = 100_000) -> int:
    rows = 0
    writer: pq.ParquetWriter | None = None
    selected = [table.c[name] for name in columns] if columns else list(table.columns)
    with engine.connect() as connection, open(output, "w", encoding="utf-8", newline="") as text_out:
        statement = sa.select(*selected).order_by(*list(table.primary_key.columns) or selected[:2])
        chunks = pd.read_sql(statement, connection, chunksize=chunk_rows)
        for index, chunk in enumerate(chunks):
            rows += len(chunk)
            if suffix == ".csv":
                chunk.to_csv(text_out, index=False, header=index == 0)
            elif suffix == ".jsonl":
                if len(chunk):
                    text_out.write(chunk.to_json(orient="records", lines=True, date_format="iso", force_ascii=False))
                    text_out.write("\n")
            else:
                batch = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(output, batch.schema)
                writer.write_table(batch.cast(writer.schema))
    if suffix == ".parquet":
        if writer is None:
            empty = pd.DataFrame({c.name: pd.Series(dtype="object") for c in selected})
            pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), output)
        else:
            writer.close()
    elif suffix == ".csv" and rows == 0:
        output.write_text(",".join(c.name for c in selected) + "\n", encoding="utf-8")
    return rows


@app.command()
def lookup(
    source: Annotated[str, typer.Option("--source", "-s", help="The source, as named in c360.yaml.")],
    record_id: Annotated[str, typer.Option("--id", help="The record's key in that source.")],
    config: ConfigOption = None,
) -> None:
    """Print the person a source record belongs to (360 ID, every linked record) as JSON."""
    from c360_pipelines.identity import lookup_record
    from resources.warehouse import WarehouseResource

    project = _load(config)
    person = lookup_record(WarehouseResource(url=project.warehouse), source, record_id)
    if person is None:
        _fail(LookupError(f"no record {source}:{record_id} in xref (is the source name right, and has `c360 run` run?)"))
    print(json.dumps(person, indent=2, ensure_ascii=False, default=str))


@app.command()
def profile(
    c360_id: Annotated[str, typer.Argument(help="A 360 ID (a merged one answers with its survivor).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON instead of tables.")] = False,
    config: ConfigOption = None,
) -> None:
    """Print a person's golden profile: every value with where it came from, contact points, insights."""
    from c360_pipelines.lookup import BadRequest, Customer360, NotFound

    project = _load(config)
    try:
        found = Customer360(project).profile(c360_id)
    except (NotFound, BadRequest) as problem:
        _fail(LookupError(f"no profile for {c360_id}: {problem}"))
    if as_json:
        print(json.dumps(found, indent=2, ensure_ascii=False, default=str))
        return
    if found["redirected"]:
        chain = [*found["merged_from"], found["c360_id"]]
        console.print(f"{c360_id} was merged: {' -> '.join(chain)}; showing the survivor", highlight=False)
    person = found["profile"]
    console.print(f"[bold]{person['full_name'] or '(no name)'}[/]  {found['c360_id']}  "
                  f"({person['record_count']} records from {person['sources']})", highlight=False)
    values = Table(title="golden values and where they came from", title_justify="left")
    for column in ("attribute", "value", "source record", "rule", "beat"):
        values.add_column(column)
    for attribute, why in found["provenance"].items():
        beaten = ", ".join(f"{c['value']} ({c['record']})" for c in why["competing"][:3])
        more = len(why["competing"]) - 3
        values.add_row(attribute, why["value"], f"{why['source']}:{why['source_record_id']}", why["rule"],
                       beaten + (f" and {more} more" if more > 0 else ""))
    console.print(values)
    points = Table(title="contact points", title_justify="left")
    for column in ("kind", "value", "primary", "status", "sources", "first seen", "last seen"):
        points.add_column(column)
    for point in found["contact_points"]:
        points.add_row(point["kind"], point["value"], "yes" if point["is_primary"] else "", point["status"],
                       point["sources"], str(point["first_seen"] or "")[:19], str(point["last_seen"] or "")[:19])
    console.print(points)
    insights = {"first seen": person["first_seen"], "last seen": person["last_seen"], **found["insights"]}
    console.print(_counts_table("insights", "insight", "value", {k: v if v is not None else "" for k, v in insights.items()}))


events_app = typer.Typer(help="Profile change events: deliver them to subscribers, replay dead letters, tail the outbox.",
                          no_args_is_help=True)
app.add_typer(events_app, name="events")


@events_app.command("deliver")
def events_deliver(config: ConfigOption = None) -> None:
    """Deliver every due event to its subscribers once, then exit (for cron, scripts and tests)."""
    from c360_pipelines.events import deliver_pending
    from resources.warehouse import WarehouseResource

    project = _load(config)
    if not project.subscribers:
        _fail(ConfigError(f"{project.config_path}: no 'subscribers:' to deliver to"))
    warehouse = WarehouseResource(url=project.warehouse)
    warehouse.ensure_tables()
    report = deliver_pending(warehouse, project)
    console.print(f"queued {report.queued:,}, delivered {report.delivered:,}, failed {report.failed:,} "
                  f"(dead-lettered {report.dead_lettered:,}), waiting {report.waiting:,} in {report.seconds:.1f}s",
                  highlight=False)
    for error in report.errors.values():
        errors.print(f"[bold red]error:[/] {error}", highlight=False)
    if report.errors:
        raise typer.Exit(code=2)


@events_app.command("replay")
def events_replay(
    subscriber: Annotated[str | None, typer.Option(help="Only this subscriber's dead letters.")] = None,
    event: Annotated[str | None, typer.Option(help="Only this event id.")] = None,
    config: ConfigOption = None,
) -> None:
    """Put dead-lettered events back in the delivery queue; the next `deliver` sends them again."""
    from c360_pipelines.events import replay_dead_letters
    from resources.warehouse import WarehouseResource

    project = _load(config)
    warehouse = WarehouseResource(url=project.warehouse)
    warehouse.ensure_tables()
    count = replay_dead_letters(warehouse, subscriber, event)
    console.print(f"{count:,} dead-lettered deliveries queued again", highlight=False)


@events_app.command("status")
def events_status(config: ConfigOption = None) -> None:
    """Deliveries per subscriber: pending, delivered and dead."""
    from resources.warehouse import WarehouseResource

    project = _load(config)
    warehouse = WarehouseResource(url=project.warehouse)
    warehouse.ensure_tables()
    counts = warehouse.read_frame("SELECT subscriber, status, COUNT(*) AS n FROM event_delivery GROUP BY 1, 2")
    table = Table(title=f"{warehouse.count('events'):,} events in the outbox", title_justify="left")
    for column in ("subscriber", "pending", "delivered", "dead"):
        table.add_column(column, justify="left" if column == "subscriber" else "right")
    for subscriber in project.subscribers:
        mine = counts[counts["subscriber"] == subscriber.name].set_index("status")["n"]
        table.add_row(subscriber.name, *(f"{int(mine.get(s, 0)):,}" for s in ("pending", "delivered", "dead")))
    console.print(table)


@events_app.command("tail")
def events_tail(
    from_start: Annotated[bool, typer.Option("--from-start", help="Begin with the oldest event, not the newest.")] = False,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new events as they are written.")] = True,
    interval: Annotated[float, typer.Option(help="Seconds between looks at the outbox.")] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Print events as they are written to the outbox, one CloudEvent JSON document per line."""
    from c360_pipelines.events import last_seq, read_events
    from resources.warehouse import WarehouseResource

    project = _load(config)
    warehouse = WarehouseResource(url=project.warehouse)
    warehouse.ensure_tables()
    after = 0 if from_start else last_seq(warehouse)
    try:
        while True:
            batch = read_events(warehouse, after)
            for item in batch:
                print(json.dumps(item["event"], ensure_ascii=False), flush=True)
                after = item["seq"]
            if not follow and not batch:
                return
            if not batch:
                time.sleep(interval)
    except KeyboardInterrupt:
        return


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8360,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (one per core is a good start).")] = 1,
    config: ConfigOption = None,
) -> None:
    """Serve the lookup API (/v1, OpenAPI at /docs) and the Customer 360 page (/) over the warehouse."""
    import uvicorn

    from c360_pipelines.api import create_app
    from resources.warehouse import WarehouseResource

    project = _load(config)
    try:
        WarehouseResource(url=project.warehouse).ensure_tables()
        application = create_app(project)
    except ConfigError as error:
        _fail(error)
    console.print(f"Customer 360 page: http://{host}:{port}/   API docs: http://{host}:{port}/docs", highlight=False)
    if workers == 1:
        uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False)
        return
    # Several processes each build the app from the same config (sessions of the page are per process).
    os.environ[CONFIG_ENV_VAR] = str(project.config_path.resolve())
    uvicorn.run("c360_pipelines.api:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


@app.command()
def explain(
    record_a: Annotated[str, typer.Argument(help="A record as SOURCE:ID, e.g. crm:003000000001.")],
    record_b: Annotated[str, typer.Argument(help="Another record as SOURCE:ID.")],
    config: ConfigOption = None,
) -> None:
    """Why two records are (or are not) the same person: rule, score per field, guards."""
    from c360_pipelines.identity import HOUSEHOLD_NOTE, explain_pair
    from resources.warehouse import WarehouseResource

    project = _load(config)
    try:
        why = explain_pair(WarehouseResource(url=project.warehouse), project.match, record_a, record_b)
    except LookupError as error:
        _fail(error)
    verdict = "the SAME person" if why.same_person else "DIFFERENT people"
    console.print(f"{record_a} and {record_b} are {verdict} ({why.c360_ids[0]} / {why.c360_ids[1]})", highlight=False)
    table = Table(title="evidence, field by field (bits: + for same person, - against)", title_justify="left")
    for column in ("field", "agreement", "bits"):
        table.add_column(column, justify="right" if column == "bits" else "left")
    for name, level, bits in why.fields:
        table.add_row(name, level, f"{bits:+.1f}")
    console.print(table)
    console.print(f"model: match weight {why.match_weight:+.1f} bits, probability {why.probability:.4f} "
                  f"(links at {project.match.threshold})", highlight=False)
    if any(HOUSEHOLD_NOTE in level for _, level, _ in why.fields):
        console.print("household: the two share a value that records of different people hold (a family email, "
                      "a home address), or one holds it and the other writes it nearly the same; any two of that "
                      "household agree on it and on the last name, so of those only the strongest counts",
                      highlight=False)
    if why.rule:
        console.print(f"rule that holds: {why.rule}", highlight=False)
    if why.guard:
        reasons = {"name_conflict": "first names clearly differ: twins, family members",
                   "birth_date_conflict": "birth dates differ entirely: a parent and child of the same name"}
        console.print(f"guard: {why.guard} ({reasons.get(why.guard, 'see the docs')}) - not linked directly",
                      highlight=False)
    for guard in why.guards_off:
        console.print(f"guard {guard}", highlight=False)
    for record in why.ambiguous:
        console.print(f"{record} fits two people known to be two (conflicting birth dates) equally well: it was left on "
                      "its own for a steward to decide", highlight=False)
    otherwise = "" if why.linked == why.same_person or why.ambiguous else (
        " (the clustering decided otherwise, through the other records)")
    console.print(f"pair decision: {'linked' if why.linked else 'not linked'}{otherwise}", highlight=False)


@app.command()
def label(
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many pairs to ask about at most.")] = 10,
    export: Annotated[Path | None, typer.Option("--export", help="Write every label to this file in dedupe's "
                                                "JSON training format instead of asking.")] = None,
    config: ConfigOption = None,
) -> None:
    """Answer whether the pairs dedupe's active learner is most curious about are the same person; `c360 train`
    learns from the answers."""
    import getpass
    import itertools

    from c360_pipelines.identity import DISTINCT, MATCH, export_dedupe_training
    from c360_pipelines.labeling import LABEL_FIELDS, RECORD, SAMPLE_RECORDS, ActiveLabeler
    from resources.warehouse import WarehouseResource

    project = _load(config)
    warehouse = WarehouseResource(url=project.warehouse)
    warehouse.ensure_tables()
    if export is not None:
        training = export_dedupe_training(warehouse)
        export.write_text(json.dumps(training, indent=2, ensure_ascii=False), encoding="utf-8")
        console.print(f"wrote {len(training[MATCH])} match and {len(training[DISTINCT])} distinct pair(s) to {export}")
        return
    if warehouse.count("identity_link") == 0:
        console.print("no records to ask about yet: run `c360 run` first")
        return
    with console.status(f"dedupe's active learner is reading a sample of up to {SAMPLE_RECORDS:,} records"):
        labeler = ActiveLabeler(warehouse, project.match)
    answers = {"y": MATCH, "n": DISTINCT}
    labelled = 0
    for number, (first, second) in enumerate(itertools.islice(labeler.pairs(), count), start=1):
        table = Table(title=f"pair {number} of at most {count}", title_justify="left")
        table.add_column("field")
        table.add_column(first[RECORD])
        table.add_column(second[RECORD])
        for name in LABEL_FIELDS:
            table.add_row(name, str(first.get(name) or ""), str(second.get(name) or ""))
        console.print(table)
        answer = typer.prompt("Same person? (y)es / (n)o / (u)nsure / (f)inished", default="u").strip().lower()[:1]
        if answer == "f":
            break
        if answer in answers:
            labeler.answer(first, second, answers[answer], getpass.getuser())
            labelled += 1
    total = warehouse.count("training_label")
    console.print(f"saved {labelled} label(s); {total} in all. Run `c360 train` to learn from them.")


@app.command()
def train(config: ConfigOption = None) -> None:
    """Train a new match model version (from the data and your labels) and re-resolve every 360 ID with it."""
    from c360_pipelines.runner import retrain

    project = _load(config)
    with console.status("training"):
        version, evaluation = retrain(project)
    console.print(f"match model version {version} trained; 360 IDs re-resolved (IDs of unaffected people kept)")
    if evaluation.held_out:
        console.print(f"on {evaluation.held_out} held-out label(s): precision {evaluation.precision:.3f}, "
                      f"recall {evaluation.recall:.3f}")


if __name__ == "__main__":
    app()
