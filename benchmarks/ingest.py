"""Ingestion throughput and peak memory: raw CSV file -> landed -> staged -> conformed, through Dagster.

For each size (100k and 1M rows by default) and each backend (the embedded SQLite default and PostgreSQL),
a fresh subprocess generates a CRM-shaped CSV (benchmarks/synthetic.py), then materialises the batch's
`raw/crm` and `staged/crm` partition and the conformed tables in-process, exactly as `c360 run` does. Peak
memory is the subprocess's maximum resident set size. Figures are printed and written to
benchmarks/RESULTS.md (section "Ingestion").

    python benchmarks/ingest.py                    # 100k and 1M, SQLite and Postgres
    python benchmarks/ingest.py --rows 100000 --backends sqlite
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work"
PG_ADMIN = os.environ.get("C360_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TARGET = "1M rows staged in under 120 s with peak memory under 3 GB"


def run_one(rows: int, backend: str) -> dict[str, float | int | str]:
    """Runs in a child process: generate, then land + stage + conform, timing each stage."""
    import dagster as dg

    from benchmarks.synthetic import CRM_CONFIG, write_crm_csv
    from c360_pipelines.config import load_config
    from c360_pipelines.runner import run_pipeline

    project = WORK / f"ingest_{backend}_{rows}"
    csv = project / "data" / "crm.csv"
    if not csv.exists():
        write_crm_csv(csv, rows)
    warehouse, drop = _warehouse(backend, project)
    (project / "c360.yaml").write_text(CRM_CONFIG.format(warehouse=warehouse), encoding="utf-8")
    try:
        config = load_config(project / "c360.yaml")
        stamps: dict[str, float] = {}
        with dg.DagsterInstance.ephemeral() as instance:
            started = time.perf_counter()
            summary = run_pipeline(config, instance, progress=lambda message: stamps.setdefault(message, time.perf_counter()))
            total = time.perf_counter() - started
        conformed_start = next(at for message, at in stamps.items() if message.startswith("conformed"))
        identity_start = next(at for message, at in stamps.items() if message.startswith("identity"))
        staged_seconds = conformed_start - started
        counts = summary.stages[-1].counts
        return {
            "rows": rows,
            "backend": backend,
            "file_mb": round(csv.stat().st_size / 1e6, 1),
            "staged_seconds": round(staged_seconds, 1),
            "total_seconds": round(identity_start - started, 1),
            "identity_seconds": round(total - (identity_start - started), 1),
            "rows_per_second": int(rows / staged_seconds),
            "individuals": counts.get("individual", 0),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024, 2),
        }
    finally:
        drop()


def _warehouse(backend: str, project: Path) -> tuple[str, object]:
    if backend == "sqlite":
        database = project / ".c360" / "warehouse.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        return "sqlite:///.c360/warehouse.db", lambda: None
    name = f"c360_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False), drop


def write_results(results: list[dict[str, float | int | str]]) -> str:
    lines = [
        "## Ingestion (benchmarks/ingest.py)",
        "",
        f"Target: {TARGET}. One CRM-shaped CSV batch with realistic variety (nearly every email and phone distinct),",
        "landed, staged (standardised) and conformed through the Dagster assets, as `c360 run` does it. `staged` is the",
        "time from start until the conformed rebuild begins; `total` includes the conformed rebuild; identity resolution,",
        "which `c360 run` does next, is timed separately (see also benchmarks/identity.py). Peak RSS is the",
        f"benchmark process's maximum resident memory. Machine: {os.cpu_count()} cores. Run: `python benchmarks/ingest.py`.",
        "",
        "| rows | backend | file MB | staged s | rows/s staged | total s | identity s | peak RSS GB | individuals |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['rows']:,} | {r['backend']} | {r['file_mb']} | {r['staged_seconds']} | {r['rows_per_second']:,} | "
            f"{r['total_seconds']} | {r.get('identity_seconds', '-')} | {r['peak_rss_gb']} | {r['individuals']:,} |"
        )
    section = "\n".join(lines) + "\n"
    _replace_section(ROOT / "benchmarks" / "RESULTS.md", "## Ingestion", section)
    return section


def _replace_section(path: Path, heading: str, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n\nWritten by the scripts in benchmarks/.\n\n"
    start = text.find(heading)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1:] if end != -1 else ""
        text = text[:start] + (section.rstrip("\n") + "\n\n" if rest else section) + rest
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--child", nargs=2, metavar=("ROWS", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(int(args.child[0]), args.child[1])))
        return
    results = []
    for rows in args.rows:
        for backend in args.backends:
            child = subprocess.run(
                [sys.executable, __file__, "--child", str(rows), backend],
                capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
            )
            if child.returncode != 0:
                sys.exit(f"benchmark {rows} rows on {backend} failed:\n{child.stderr[-3000:]}")
            result = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{rows:>9,} rows  {backend:<8}  staged {result['staged_seconds']:>6}s  "
                  f"({result['rows_per_second']:,} rows/s)  total {result['total_seconds']}s  peak {result['peak_rss_gb']} GB",
                  flush=True)
            results.append(result)
    print()
    print(write_results(results))


if __name__ == "__main__":
    main()
