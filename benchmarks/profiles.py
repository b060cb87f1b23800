"""Golden profiles: how often the golden value is the person's true current value, and how fast at 1M records.

Accuracy runs on the demo generator, which knows each person's current true name, email, phone and address
(`people.csv`). The whole pipeline runs as `c360 run` would; then every survivorship strategy is applied to
every attribute, beside the default rules, on the same records. A person is judged by the profile that holds
most of their records. Two figures per attribute:

- **all people**: the golden value equals the true value;
- **where sent**: the same, over the people for whom at least one of their source records carries the true
  value at all (a person whose only record has a typo cannot get a correct profile from any rule).

Speed builds the profiles of about 1M source records (`--scale-people 440000`) in a fresh process after the
pipeline has run, so the peak memory is the profile build's own.

    python benchmarks/profiles.py                          # accuracy on 10k people
    python benchmarks/profiles.py --scale-people 440000    # also the 1M build time and memory
    python benchmarks/profiles.py --scale-people 440000 --against HEAD~3   # and the ratio to older code
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import _replace_section
from benchmarks.memory import PeakTreeMemory

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "profiles"
ATTRIBUTES = ("name", "email", "phone", "address")


def prepared_project(people: int, seed: int) -> Path:
    """A demo project of `people` people with the whole pipeline run on it (reused when already there)."""
    from c360_pipelines.config import load_config
    from c360_pipelines.demo import write_demo
    from c360_pipelines.runner import run_pipeline

    project = WORK / f"demo_{people}_{seed}"
    if not (project / ".c360" / "done").exists():
        import shutil

        shutil.rmtree(project, ignore_errors=True)
        write_demo(project, people=people, seed=seed)
        run_pipeline(load_config(project / "c360.yaml"), progress=lambda m: print(f"  {m}", flush=True))
        (project / ".c360" / "done").write_text("ok", encoding="utf-8")
    return project


def accuracy(project: Path) -> list[dict[str, object]]:
    from c360_pipelines.config import PROFILE_ATTRIBUTES, load_config
    from c360_pipelines.core.standardise import fold_address_line
    from c360_pipelines.core.survive import STRATEGIES, Rule, build_profiles, spelling_population
    from c360_pipelines.profiles import load_profile_input, read_spellings, rules_from
    from resources.warehouse import WarehouseResource

    config = load_config(project / "c360.yaml")
    warehouse = WarehouseResource(url=config.warehouse)
    data, _ = load_profile_input(warehouse)
    with warehouse.engine.connect() as connection:  # spellings counted over every record, as c360 run does
        population = spelling_population(read_spellings(connection))
    people = pd.read_csv(project / "people.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(project / "truth.csv", dtype=str)
    xref = warehouse.read_frame("SELECT source, source_record_id, c360_id FROM xref")
    held = truth.merge(xref, on=["source", "source_record_id"])
    owner = (held.groupby(["person_id", "c360_id"]).size().rename("n").reset_index()
             .sort_values(["person_id", "n"], ascending=[True, False]).drop_duplicates("person_id"))
    people["street"] = fold_address_line(people["address_line1"])

    def observed(golden: pd.DataFrame) -> pd.DataFrame:
        """Per true person: their profile's name, email, phone and address, in comparable form."""
        frame = owner.merge(golden, on="c360_id")
        street = (frame["address_line1"].fillna("") + " " + frame["address_line2"].fillna("")).str.strip()
        return pd.DataFrame({
            "person_id": frame["person_id"],
            "name": frame["first_name"].fillna("") + "|" + frame["last_name"].fillna(""),
            "email": frame["email"], "phone": frame["phone"],
            "address": fold_address_line(street) + "|" + frame["postal_code"].fillna(""),
        })

    expected = pd.DataFrame({"person_id": people["person_id"],
                             "name": people["first_name"] + "|" + people["last_name"],
                             "email": people["email"], "phone": people["phone"],
                             "address": people["street"] + "|" + people["postal_code"]})
    sent = _true_value_was_sent(data, owner, expected)
    placeholders = frozenset(v.lower() for v in config.match.junk_values)
    variants = {"default rules": rules_from(config),
                **{strategy: {a: Rule(strategy) for a in PROFILE_ATTRIBUTES} for strategy in STRATEGIES}}
    rows = []
    for name, rules in variants.items():
        started = time.perf_counter()
        golden = build_profiles(data, rules, config.source_order, placeholders, population=population).golden
        seconds = time.perf_counter() - started
        joined = expected.merge(observed(golden), on="person_id", how="left", suffixes=("", "_golden"))
        row: dict[str, object] = {"rules": name, "people": len(expected), "seconds": round(seconds, 1)}
        for attribute in ATTRIBUTES:
            right = joined[attribute] == joined[f"{attribute}_golden"]
            reachable = joined["person_id"].isin(sent[attribute])
            row[f"{attribute}_all"] = round(100 * right.mean(), 2)
            row[f"{attribute}_where_sent"] = round(100 * right[reachable].mean(), 2)
        rows.append(row)
        print(row, flush=True)
    ceiling = {f"{a}_all": round(100 * expected["person_id"].isin(sent[a]).mean(), 2) for a in ATTRIBUTES}
    rows.append({"rules": "ceiling: true value in some record", "people": len(expected), "seconds": "-",
                 **ceiling, **{f"{a}_where_sent": 100.0 for a in ATTRIBUTES}})
    return rows


def _true_value_was_sent(data: object, owner: pd.DataFrame, expected: pd.DataFrame) -> dict[str, set[str]]:
    """Per attribute, the people for whom some record of their profile carries the true value."""
    from c360_pipelines.core.standardise import fold_address_line

    def people_with(frame: pd.DataFrame, column: str, values: pd.Series) -> set[str]:
        joined = frame.merge(owner, on="c360_id").merge(expected[["person_id", column]], on="person_id",
                                                         suffixes=("_sent", ""))
        return set(joined.loc[joined[f"{column}_sent"] == joined[column], "person_id"])

    records, emails, phones, addresses = (data.records, data.emails, data.phones, data.addresses)  # type: ignore[attr-defined]
    names = records.assign(name=records["first_name"].fillna("") + "|" + records["last_name"].fillna(""))
    street = (addresses["line1"].fillna("") + " " + addresses["line2"].fillna("")).str.strip()
    addresses = addresses.assign(address=fold_address_line(street) + "|" + addresses["postal_code"].fillna(""))
    return {
        "name": people_with(names[["c360_id", "name"]], "name", expected["name"]),
        "email": people_with(emails.rename(columns={"email": "email"})[["c360_id", "email"]], "email", expected["email"]),
        "phone": people_with(phones.rename(columns={"phone_e164": "phone"})[["c360_id", "phone"]], "phone",
                             expected["phone"]),
        "address": people_with(addresses[["c360_id", "address"]], "address", expected["address"]),
    }


def build_at_scale(people: int) -> dict[str, object]:
    """Child process: build every profile of an already-resolved project, timing it and its peak memory."""
    from c360_pipelines.config import load_config
    from c360_pipelines.profiles import build_profiles
    from resources.warehouse import WarehouseResource

    project = WORK / f"demo_{people}_7"
    config = load_config(project / "c360.yaml")
    warehouse = WarehouseResource(url=config.warehouse)
    warehouse.ensure_tables()
    with warehouse.transaction() as connection:  # the first build: every profile new, one created event each
        for table in ("golden_profile", "profile_contact_points", "profile_attribute_provenance", "profile_insights",
                      "profile_membership", "profile_engagement_seen", "profile_build", "events"):
            connection.exec_driver_sql(f'DELETE FROM "{table}"')
    started = time.perf_counter()
    with PeakTreeMemory() as peak:
        report = build_profiles(warehouse, config)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    rerun = build_profiles(warehouse, config)
    return {"records": warehouse.count("xref"), "profiles": report.profiles, "seconds": round(seconds, 1),
            "stage_s": {stage: round(v, 1) for stage, v in report.seconds.items()}, "parts": report.parts,
            "contact_points": report.contact_points, "provenance_rows": report.provenance_rows,
            "insight_rows": report.insight_rows, "events": report.events,
            "rerun_seconds": round(time.perf_counter() - started, 1), "rerun_events": rerun.events,
            "peak_gb": peak.gb, "resident_gb": peak.resident_gb}


def scale_build(people: int, root: Path = ROOT) -> dict[str, object]:
    """The 1M build in a fresh process of the code at `root` (its --child mode), on this checkout's project."""
    started = resource.getrusage(resource.RUSAGE_CHILDREN)
    child = subprocess.run([sys.executable, str(root / "benchmarks" / "profiles.py"), "--scale-people", str(people),
                            "--child"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root)},
                           check=False)
    if child.returncode != 0:
        sys.exit(f"profile build failed:\n{child.stderr[-3000:]}")
    finished = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["cpu_seconds"] = round(sum(getattr(finished, f) - getattr(started, f) for f in ("ru_utime", "ru_stime")), 1)
    return result


def compared_with(revision: str, people: int, rounds: int) -> dict[str, object]:
    """The 1M build of `revision` and of this checkout, alternately, `rounds` times each, on the same project and
    machine: a ratio that a slow or busy day on this shared machine does not move."""
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(baseline), revision],
                       check=True)
        try:
            (baseline / "benchmarks" / ".work").symlink_to(ROOT / "benchmarks" / ".work")
            runs: dict[str, list[dict[str, object]]] = {"baseline": [], "current": []}
            for _ in range(rounds):
                for side, root in (("baseline", baseline), ("current", ROOT)):
                    runs[side].append(scale_build(people, root))
                    print(side, runs[side][-1]["seconds"], "s", runs[side][-1]["cpu_seconds"], "s of CPU", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)
    median = {side: {key: statistics.median(float(r[key]) for r in found) for key in ("seconds", "cpu_seconds")}
              for side, found in runs.items()}
    return {"revision": revision, "rounds": rounds, **{f"{side}_{key}": value for side, values in median.items()
                                                        for key, value in values.items()},
            "ratio": round(median["current"]["seconds"] / median["baseline"]["seconds"], 3),
            "cpu_ratio": round(median["current"]["cpu_seconds"] / median["baseline"]["cpu_seconds"], 3)}


def write_results(accuracy_rows: list[dict[str, object]], people: int, scale: dict[str, object] | None,
                  comparison: dict[str, object] | None = None, machine_note: str = "") -> None:
    lines = [(f"Demo data, {people:,} people, seed 360, zero labels; `python benchmarks/profiles.py`. "
              "Percent of people whose golden value equals their true current value; *where sent* counts only "
              "people for whom some source record carries that true value."), "",
             ("| rules | name | name (where sent) | email | email (where sent) | phone | phone (where sent) | "
              "address | address (where sent) | seconds |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for row in accuracy_rows:
        cells = [row["rules"], *(row[f"{a}_{k}"] for a in ATTRIBUTES for k in ("all", "where_sent")), row["seconds"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if scale:
        lines += ["", (f"First build of the profiles of {scale['records']:,} source records ({scale['profiles']:,} people; "
                       f"`python benchmarks/profiles.py --scale-people 440000`, SQLite, in a fresh process): "
                       f"**{scale['seconds']} s**, peak memory of the process and its workers **{scale['peak_gb']} GB** "
                       f"(private; resident with the mapped database file and libraries counted per process: "
                       f"{scale.get('resident_gb', '-')} GB), "
                       f"in {scale['parts']} parts built by 2 worker processes while the first writes (stage seconds "
                       f"summed over the processes, which share 2 cores: {_stages(scale['stage_s'])}); wrote "
                       f"{scale['contact_points']:,} contact points, {scale['provenance_rows']:,} provenance rows and "
                       f"{scale['insight_rows']:,} insight values, and {scale['events']:,} profile.created events "
                       f"to the outbox. Rebuilding on unchanged data: {scale['rerun_seconds']} s, "
                       f"{scale['rerun_events']} events.")]
    if scale and machine_note:  # the machine's speed goes with the timed build
        lines += ["", machine_note]
    if comparison:
        lines += ["", (f"Same-session comparison with `{comparison['revision']}` (`python benchmarks/profiles.py "
                       f"--scale-people 440000 --against {comparison['revision']}`: the two builds alternately, "
                       f"{comparison['rounds']} times each, medians): {comparison['baseline_seconds']} s and "
                       f"{comparison['baseline_cpu_seconds']} s of CPU before, {comparison['current_seconds']} s and "
                       f"{comparison['current_cpu_seconds']} s of CPU now: **{comparison['ratio']}×** the time, "
                       f"{comparison['cpu_ratio']}× the CPU.")]
    heading = "## Golden profiles"
    results = ROOT / "benchmarks" / "RESULTS.md"
    if not scale and results.exists():  # keep the scale figure of an earlier run that measured it
        earlier = results.read_text(encoding="utf-8").split(heading, 1)[-1].split("\n## ")[0]
        lines += ["", *(line for line in earlier.splitlines() if line.startswith(("First build of the profiles",
                                                                                  "Same-session comparison",
                                                                                  "Machine speed")))]
    _replace_section(ROOT / "benchmarks" / "RESULTS.md", heading, heading + "\n\n" + "\n".join(lines) + "\n")


def _stages(seconds: dict[str, float]) -> str:
    return ", ".join(f"{stage} {value}" for stage, value in seconds.items() if stage != "total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--scale-people", type=int, default=0)
    parser.add_argument("--against", metavar="REVISION",
                        help="also build the 1M profiles with the code of this git revision, alternately with this "
                             "checkout's, and report the ratio (needs --scale-people)")
    parser.add_argument("--rounds", type=int, default=2, help="builds of each side with --against")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(build_at_scale(args.scale_people)))
        return
    from benchmarks.machine import speed_note, workload_seconds

    machine_seconds = workload_seconds()
    rows = accuracy(prepared_project(args.people, seed=360))
    scale = comparison = None
    if args.scale_people:
        prepared_project(args.scale_people, seed=7)
        scale = scale_build(args.scale_people)
        print(scale)
        if args.against:
            comparison = compared_with(args.against, args.scale_people, args.rounds)
            print(comparison)
    write_results(rows, args.people, scale, comparison, speed_note(machine_seconds))


if __name__ == "__main__":
    main()
