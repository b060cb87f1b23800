"""How fast this (shared) machine was when a benchmark ran, so that seconds from different days can be compared.

The yardstick is a peer's run that the issues themselves quote: Splink 5 linking FEBRL4 with the settings of its
own example (`benchmarks/identity.py`'s `run_splink`), best of two. It took 2.8 s on the day the earlier figures
in RESULTS.md were measured (the identity issue quotes 3.1 s). On the slow days since, it took 4.7 to 7.5 s,
while the long benchmarks took two to two and a half times as long: Splink on 1M records 236.6 s instead of
96.3 s, the 1M profile build 140 to 165 s instead of 63 s. It is a rough guide, and it understates how much
slower a long run is; for identity at scale, Splink's own 1M time in the same run is the better one.

Two cheaper yardsticks tried first did not follow those days: a tight arithmetic loop ran at full speed, and a
fixed SQLite workload (inserts and a GROUP BY of 500k rows in memory) took 2.00 s on one slow day and 0.97 to
1.60 s on the next, as slow, one.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REFERENCE_SECONDS = 2.8  # Splink on FEBRL4 in the run that measured the figures of commit fddb55d


def workload_seconds() -> float:
    """Seconds Splink takes to link FEBRL4 (training, prediction, clustering): the best of two runs."""
    from benchmarks.identity import read_febrl, run_splink

    frames = {f"febrl4{part}": read_febrl(f"dataset4{part}.csv") for part in ("a", "b")}
    quiet = logging.getLogger("splink")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            run_splink(frames, "link_only")
            best = min(best, time.perf_counter() - started)
    finally:
        quiet.setLevel(level)
    return best


def speed_note(seconds: float) -> str:
    return (f"Machine speed for this run: Splink linking FEBRL4 (`benchmarks/machine.py`) took {seconds:.1f} s, "
            f"against {REFERENCE_SECONDS} s on the day of the earlier figures: seconds in this section are roughly "
            f"{seconds / REFERENCE_SECONDS:.1f} times what that day would have given.")


if __name__ == "__main__":
    measured = workload_seconds()
    print(f"{measured:.1f} s ({measured / REFERENCE_SECONDS:.1f} x the {REFERENCE_SECONDS} s of the reference day)")
