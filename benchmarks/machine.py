"""How fast this (shared) machine was when a benchmark ran, so that seconds from different days can be compared.

A fixed piece of the work c360 does most, SQLite inserts and a GROUP BY over half a million rows made in Python,
is timed at the start of a run. A tight arithmetic loop is no guide: on a day when this machine's neighbours
thrash its caches, the loop runs at full speed while this workload and every benchmark here take two to three
times as long. Ratios to a peer run in the same process (Splink) are the steadier comparison.
"""

from __future__ import annotations

import sqlite3
import time

WORKLOAD_ROWS = 500_000


def workload_seconds() -> float:
    """Seconds to insert WORKLOAD_ROWS rows into an in-memory SQLite table and group them: the best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        connection = sqlite3.connect(":memory:")
        connection.execute("CREATE TABLE t (number INTEGER, text TEXT, padding TEXT)")
        connection.executemany("INSERT INTO t VALUES (?, ?, ?)",
                               ((n, str(n % 50_000), "x" * 20) for n in range(WORKLOAD_ROWS)))
        connection.execute("SELECT text, COUNT(*) FROM t GROUP BY text").fetchall()
        connection.close()
        best = min(best, time.perf_counter() - started)
    return best


def speed_note(seconds: float) -> str:
    return (f"Machine speed for this run: the fixed workload of `benchmarks/machine.py` (SQLite inserts and a "
            f"GROUP BY of {WORKLOAD_ROWS:,} rows) took {seconds:.2f} s; seconds in this section scale roughly "
            "with it.")


if __name__ == "__main__":
    print(f"{workload_seconds():.2f} s")
