"""Peak memory of this process and every process it started (worker pools included).

`ru_maxrss` sees one process; a build that fans out to worker processes uses the sum of all of them at once,
so a thread samples that sum from /proc while the measured code runs. Two sums are kept:

- **private**: the processes' own memory (anonymous and shared-memory pages, `RssAnon + RssShmem`), what the
  machine must have free for the run. This is the figure reported.
- **resident**: everything resident in them, which also counts, once per process, the pages of shared libraries
  and of the SQLite database file that the warehouse maps into memory (`mmap_size`): those are the operating
  system's page cache, which a plain read() would have used as well without their being counted.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import TracebackType
from typing import Self


def _process_memory(status: str) -> tuple[int, int]:
    """(private, resident) bytes from the text of /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)

    def kib(name: str) -> int:
        return int(fields.get(name, "0 kB").split()[0]) * 1024

    return kib("RssAnon") + kib("RssShmem"), kib("VmRSS")


def tree_memory_bytes(root: int, with_children: bool = True) -> tuple[int, int]:
    """(private, resident) bytes of `root` and (`with_children`) all its descendants, now."""
    if not with_children:
        return _process_memory(Path(f"/proc/{root}/status").read_text())
    parents: dict[int, int] = {}
    memory: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            memory[int(entry.name)] = _process_memory((entry / "status").read_text())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
        parents[int(entry.name)] = int(stat[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    found = [memory.get(pid, (0, 0)) for pid in tree]
    return sum(private for private, _ in found), sum(resident for _, resident in found)


class PeakTreeMemory:
    """`with PeakTreeMemory() as peak: ...` then `peak.gb` (private) and `peak.resident_gb`: the largest sums
    seen, sampled every `interval` s; of this process alone without `with_children`."""

    def __init__(self, interval: float = 0.2, with_children: bool = True) -> None:
        self.interval = interval
        self.with_children = with_children
        self.peak = 0
        self.peak_resident = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _record(self) -> None:
        private, resident = tree_memory_bytes(os.getpid(), self.with_children)
        self.peak, self.peak_resident = max(self.peak, private), max(self.peak_resident, resident)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._record()

    @property
    def gb(self) -> float:
        return round(self.peak / 1024**3, 2)

    @property
    def resident_gb(self) -> float:
        return round(self.peak_resident / 1024**3, 2)
