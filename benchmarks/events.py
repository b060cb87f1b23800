"""Change events: delivery throughput to a local receiver, and the latency from a file landing to its webhook.

Throughput: N events for many profiles go into a fresh outbox, and `c360 events deliver`'s code path POSTs them
(signed) to a receiver in another process on 127.0.0.1; events per second over the whole delivery.

Latency: a demo project with about 100k people is run to the end and its subscriber is brought up to date; then
`dagster dev` runs on it, a new file of 1,000 CRM records (changes to existing people) is dropped into the CRM
folder, and the receiver notes when the first and the last resulting webhook arrive. Nobody clicks anything: the
source sensor, automation and the events sensor do it all.

    python benchmarks/events.py --throughput 5000
    python benchmarks/events.py --latency-people 100000
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import _replace_section

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "events"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def serve(port: int, log: Path) -> None:
    """Receiver process: answer 204 to every POST and append (arrival time, event type, subject) to `log`."""
    handle = open(log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (open for the process's whole life)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            event = json.loads(body)
            handle.write(f"{time.time()}\t{event['type']}\t{event['subject']}\n")
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def start_receiver(port: int, log: Path) -> subprocess.Popen[bytes]:
    log.unlink(missing_ok=True)
    log.touch()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--log", str(log)])
    import socket

    for _ in range(200):  # until it accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the receiver did not start on port {port}")


def write_config(project: Path, warehouse: str, port: int, extra: str = "") -> Path:
    config = project / "c360.yaml"
    text = config.read_text(encoding="utf-8") if config.exists() else \
        f"warehouse: {warehouse}\nsources:\n  - {{name: crm, path: data/*.csv, id: Id}}\n"
    text = text.split("\nsubscribers:")[0].rstrip("\n")
    config.write_text(text + f"\nsubscribers:\n  - name: bench\n    url: http://127.0.0.1:{port}/hooks\n"
                             f"    secret: {SECRET}\n{extra}", encoding="utf-8")
    return config


def throughput(events: int, port: int = 8391) -> dict[str, object]:
    from c360_pipelines.config import load_config
    from c360_pipelines.events import deliver_pending
    from resources.warehouse import WarehouseResource

    project = WORK / "throughput"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    config = load_config(write_config(project, f"sqlite:///{project / 'warehouse.db'}", port))
    warehouse = WarehouseResource(url=config.warehouse)
    warehouse.ensure_tables()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = pd.DataFrame({"seq": range(1, events + 1), "event_id": [f"bench-{i}" for i in range(1, events + 1)],
                         "type": "profile.updated", "subject": [f"c360_{i % (events // 5 or 1):08d}" for i in range(events)],
                         "time": now, "data": json.dumps({"changes": {"email": {"old": "a@x.org", "new": "b@x.org"}}})})
    with warehouse.transaction() as connection:
        warehouse.insert_rows("events", rows, connection)
    log = WORK / "throughput.log"
    receiver = start_receiver(port, log)
    try:
        started = time.perf_counter()
        report = deliver_pending(warehouse, config)
        seconds = time.perf_counter() - started
    finally:
        receiver.terminate()
    received = len(log.read_text().splitlines())
    return {"events": events, "delivered": report.delivered, "received": received, "seconds": round(seconds, 1),
            "events_per_second": round(report.delivered / seconds)}


def latency(people: int, port: int = 8392, records: int = 1000) -> dict[str, object]:
    from benchmarks.api import prepared
    from c360_pipelines.config import load_config
    from c360_pipelines.events import last_seq
    from c360_pipelines.identity import resolve_identities
    from c360_pipelines.profiles import build_profiles
    from c360_pipelines.runner import dagster_home
    from resources.warehouse import WarehouseResource

    project = prepared(people)  # the same project the API benchmark reads; run that one first
    config = load_config(write_config(project, "", port))
    warehouse = WarehouseResource(url=config.warehouse)
    warehouse.ensure_tables()
    # identity and profiles up to date with this c360 (a no-op when they are), so the batch is timed alone
    resolve_identities(warehouse, config.match)
    build_profiles(warehouse, config)
    with warehouse.transaction() as connection:  # the subscriber is already in sync with everything so far
        connection.exec_driver_sql("DELETE FROM subscriber_cursor")
        connection.exec_driver_sql(f"INSERT INTO subscriber_cursor VALUES ('bench', {last_seq(warehouse)})")
    profiles = warehouse.count("golden_profile")
    batch = project / "data" / "crm" / f"contacts_bench_{int(time.time())}.csv"
    rows = _changed_crm_rows(project, records)

    log = WORK / "latency.log"
    receiver = start_receiver(port, log)
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(config)), "C360_CONFIG": str(project / "c360.yaml")}
    dev = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-m", "c360_pipelines.definitions",
                            "-p", "3391"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        time.sleep(45)  # the webserver, the daemon and a first tick of every sensor
        with open(batch, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(rows.columns)
            writer.writerows(rows.itertuples(index=False))
        landed = time.time()
        deadline = landed + 900
        arrivals: list[float] = []
        quiet_since = None
        while time.time() < deadline:
            arrivals = [float(line.split("\t")[0]) for line in log.read_text().splitlines()]
            if arrivals and quiet_since is None and time.time() - max(arrivals) > 20:
                quiet_since = time.time()
                break
            time.sleep(1)
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:  # seen after a run: dagster dev outlived SIGTERM; the measurement is done
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
        receiver.terminate()
    if not arrivals:
        return {"people": people, "profiles": profiles, "records": records, "first_s": None, "last_s": None,
                "webhooks": 0}
    return {"people": people, "profiles": profiles, "records": records, "webhooks": len(arrivals),
            "first_s": round(min(arrivals) - landed, 1), "last_s": round(max(arrivals) - landed, 1)}


def _changed_crm_rows(project: Path, records: int) -> pd.DataFrame:
    """`records` CRM rows sent again with a new email and a later change date: real updates to existing people."""
    current = pd.read_csv(project / "data" / "crm" / "contacts_1.csv", dtype=str, keep_default_na=False).head(records)
    stamp = int(time.time())  # new addresses every run: a batch that repeats the last one changes nothing
    current["Email"] = [f"bench.{stamp}.{i}@example.net" for i in range(len(current))]
    current["LastModifiedDate"] = "2025-01-15T10:00:00Z"
    return current


def write_results(rows: dict[str, dict[str, object]]) -> None:
    """Write the measured lines; a line this run did not measure (throughput or latency) keeps its old figure."""
    heading = "## Change events"
    results = ROOT / "benchmarks" / "RESULTS.md"
    text = results.read_text(encoding="utf-8") if results.exists() else ""
    previous = {kind: line for line in text.split(heading, 1)[-1].split("\n## ")[0].splitlines()
                for kind, marker in (("throughput", "- Delivery throughput"), ("latency", "- Latency"))
                if line.startswith(marker)} if heading in text else {}
    lines = [heading, ""]
    if "throughput" in rows:
        t = rows["throughput"]
        lines.append(f"- Delivery throughput (`python benchmarks/events.py --throughput {t['events']}`): "
                     f"{t['delivered']:,} signed webhooks to a receiver process on 127.0.0.1 in {t['seconds']} s, "
                     f"**{t['events_per_second']:,} events/s** (target >= 500).")
    elif "throughput" in previous:
        lines.append(previous["throughput"])
    if "latency" in rows:
        lat = rows["latency"]
        lines.append(f"- Latency with `dagster dev` running (`python benchmarks/events.py --latency-people "
                     f"{lat['people']}`): a file of {lat['records']:,} changed CRM records dropped into a project of "
                     f"{lat['profiles']:,} profiles; first webhook after **{lat['first_s']} s**, the last of "
                     f"{lat['webhooks']:,} after **{lat['last_s']} s** (target < 30 s).")
    elif "latency" in previous:
        lines.append(previous["latency"])
    _replace_section(ROOT / "benchmarks" / "RESULTS.md", heading, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--throughput", type=int, default=0, help="events to deliver")
    parser.add_argument("--latency-people", type=int, default=0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.log)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, object]] = {}
    if args.throughput:
        results["throughput"] = throughput(args.throughput)
        print(results["throughput"], flush=True)
    if args.latency_people:
        results["latency"] = latency(args.latency_people)
        print(results["latency"], flush=True)
    write_results(results)


if __name__ == "__main__":
    main()
