"""Lookup API latency under load on loopback, against ~100k profiles, on SQLite and on PostgreSQL.

A demo project of N people is run end to end on SQLite (and its warehouse copied to a fresh PostgreSQL
database for the second backend). `c360 serve` runs in its own process; a load generator in another process
sends requests at a fixed rate (open loop: a slow answer does not slow the sender) for a fixed time, with a
realistic mix: profile by 360 ID, universal lookup by source key, search by a phone typed differently from the
source, the person's records. Latency percentiles and errors are printed and written to benchmarks/RESULTS.md.

    python benchmarks/api.py --people 100000 --rate 200 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import _replace_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "api"
KEY = "bench-api-key"
WORKERS = 2
PG_ADMIN = os.environ.get("C360_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def prepared(people: int) -> Path:
    from c360_pipelines.config import load_config
    from c360_pipelines.demo import write_demo
    from c360_pipelines.runner import run_pipeline

    project = WORK / f"demo_{people}"
    if not (project / ".c360" / "done").exists():
        shutil.rmtree(project, ignore_errors=True)
        write_demo(project, people=people, seed=17)
        run_pipeline(load_config(project / "c360.yaml"), progress=lambda m: print(f"  {m}", flush=True))
        (project / ".c360" / "done").write_text("ok", encoding="utf-8")
    return project


def copy_to_postgres(project: Path) -> tuple[str, str]:
    """A fresh PostgreSQL database holding a copy of every table of the project's SQLite warehouse."""
    from c360_pipelines.config import load_config
    from c360_pipelines.model import TABLES
    from resources.warehouse import WarehouseResource

    source = WarehouseResource(url=load_config(project / "c360.yaml").warehouse)
    name = f"c360_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    target = WarehouseResource(url=url)
    target.ensure_tables()
    for table in ("xref", "ids", "id_change", "individual", "contact_point_email", "contact_point_phone",
                  "contact_point_address", "engagement", "golden_profile", "profile_contact_points",
                  "profile_attribute_provenance", "profile_insights", "events"):
        frame = source.read_frame(sa.select(TABLES[table]))
        with target.transaction() as connection:
            target.insert_rows(table, frame, connection)
        print(f"  copied {len(frame):,} rows of {table}", flush=True)
    with target.transaction() as connection:  # committed: statistics from a rolled-back ANALYZE are lost
        connection.execute(sa.text("ANALYZE"))
    return url, name


def request_mix(project: Path, url: str, count: int = 2000, seed: int = 1) -> list[str]:
    """Paths to ask for: 40% profiles, 30% universal lookups, 20% phone searches, 10% record lists."""
    from resources.warehouse import WarehouseResource

    warehouse = WarehouseResource(url=url)
    rng = random.Random(seed)
    ids = warehouse.read_frame("SELECT c360_id, phone FROM golden_profile ORDER BY c360_id")
    keys = warehouse.read_frame("SELECT source, source_record_id FROM xref ORDER BY source, source_record_id")
    phones = ids["phone"].dropna().tolist()
    paths = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.4:
            paths.append(f"/v1/profiles/{rng.choice(ids['c360_id'].tolist())}")
        elif roll < 0.7:
            row = keys.iloc[rng.randrange(len(keys))]
            paths.append(f"/v1/lookup/{row['source']}/{row['source_record_id']}")
        elif roll < 0.9:
            national = rng.choice(phones)[2:]
            paths.append(f"/v1/search?phone=({national[:3]})%20{national[3:6]}-{national[6:]}")
        else:
            paths.append(f"/v1/profiles/{rng.choice(ids['c360_id'].tolist())}/records")
    return paths


def load(base: str, paths: list[str], rate: float, seconds: float, workers: int = 32) -> dict[str, object]:
    """Open-loop load: request n is due at start + n/rate; its latency counts from when it was due, so a slow
    server cannot hide its queueing by slowing the sender (no coordinated omission). Threads with urllib3
    keep-alive connections send; the sender itself costs well under a millisecond per request."""
    import queue
    import threading

    import urllib3

    pool = urllib3.PoolManager(maxsize=workers, retries=False, headers={"Authorization": f"Bearer {KEY}"})
    for warm in paths[:50]:
        pool.request("GET", base + warm)
    due: queue.Queue[tuple[float, str] | None] = queue.Queue()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def worker() -> None:
        while (item := due.get()) is not None:
            scheduled, path = item
            try:
                status = pool.request("GET", base + path, timeout=10).status
            except urllib3.exceptions.HTTPError:
                status = 0
            elapsed = (time.perf_counter() - scheduled) * 1000
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    total = int(rate * seconds)
    start = time.perf_counter()
    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        due.put((scheduled, paths[n % len(paths)]))
    for _ in threads:
        due.put(None)
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    values = np.array(latencies)
    return {"requests": total, "achieved_rate": round(total / elapsed, 1), "statuses": statuses,
            "p50_ms": round(float(np.percentile(values, 50)), 2), "p95_ms": round(float(np.percentile(values, 95)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2), "max_ms": round(float(values.max()), 2)}


def measure(project: Path, url: str, backend: str, rate: float, seconds: float) -> dict[str, object]:
    config = project / f"c360.{backend}.yaml"
    text = (project / "c360.yaml").read_text(encoding="utf-8")
    config.write_text(text.replace("warehouse: sqlite:///.c360/warehouse.db", f"warehouse: {url}"), encoding="utf-8")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "c360"), "serve", "--port", str(port), "--workers",
                               str(WORKERS), "--config", str(config)], env={**os.environ, "C360_API_KEY": KEY},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        from c360_pipelines.config import load_config

        paths = request_mix(project, load_config(config).warehouse)
        result = load(f"http://127.0.0.1:{port}", paths, rate, seconds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"backend": backend, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    args = parser.parse_args()
    from c360_pipelines.config import load_config
    from resources.warehouse import WarehouseResource

    project = prepared(args.people)
    sqlite_url = load_config(project / "c360.yaml").warehouse
    profiles = WarehouseResource(url=sqlite_url).count("golden_profile")
    rows = []
    if "sqlite" in args.backends:
        rows.append(measure(project, sqlite_url, "sqlite", args.rate, args.seconds))
        print(rows[-1], flush=True)
    if "postgres" in args.backends:
        url, name = copy_to_postgres(project)
        try:
            rows.append(measure(project, url, "postgres", args.rate, args.seconds))
            print(rows[-1], flush=True)
        finally:
            with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    heading = "## Lookup API latency"
    lines = [heading, "", (f"`python benchmarks/api.py --people {args.people} --rate {args.rate:g} --seconds "
                           f"{args.seconds:g}`: {profiles:,} profiles; `c360 serve --workers {WORKERS}` and an "
                           "open-loop load generator on 127.0.0.1; mix: 40% profile by ID, 30% universal lookup, "
                           "20% search by a phone typed differently, 10% record lists. Target: p99 < 20 ms at "
                           "200 requests/s on PostgreSQL."), "",
             "| backend | requests | achieved req/s | p50 ms | p95 ms | p99 ms | max ms | statuses |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['backend']} | {row['requests']:,} | {row['achieved_rate']} | {row['p50_ms']} | "
                     f"{row['p95_ms']} | {row['p99_ms']} | {row['max_ms']} | {json.dumps(row['statuses'])} |")
    _replace_section(ROOT / "benchmarks" / "RESULTS.md", heading, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
