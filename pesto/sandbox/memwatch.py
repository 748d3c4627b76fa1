"""The engine's own memory watch, for runtimes no rlimit can hold tightly.

Where no memory cgroup counts a run's memory, an rlimit is the limit
(supervisor.memory_rlimit). A runtime that maps large fixed regions at
start and cannot run under a tight RLIMIT_DATA (Bun: two 128 MiB regions,
docs/memory.md) gets a loose RLIMIT_DATA as a hard backstop, and this
watch: the supervisor samples the resident memory of the run's processes
every TICK seconds and stops the run once it is past the limit (status
"memory"). A program can outgrow the limit by what it touches in one tick
before it is stopped: that is the documented margin.
"""

from __future__ import annotations

import os
import time

TICK = 0.005          # seconds between samples
RESCAN = 0.1          # seconds between looks for new processes of the uid
_PAGE = os.sysconf("SC_PAGE_SIZE")


class RssWatch:
    """Resident memory of every process of one uid, against a limit."""

    def __init__(self, uid: int, limit: int) -> None:
        self.uid = uid
        self.limit = limit
        self.pids: list[str] = []
        self.scanned = 0.0
        self.next = 0.0
        self.peak = 0          # the most seen resident at one sample

    def due(self, now: float) -> bool:
        return now >= self.next

    def over(self, now: float) -> bool:
        """True once the uid's processes hold more than the limit resident."""
        self.next = now + TICK
        if not self.pids or now - self.scanned >= RESCAN:
            self._scan(now)
        total = 0
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/statm", "rb") as f:
                    total += int(f.read().split()[1]) * _PAGE
            except (OSError, IndexError, ValueError):
                continue   # exited meanwhile
        self.peak = max(self.peak, total)
        return total > self.limit

    def _scan(self, now: float) -> None:
        """The uid's processes, by the owner of their /proc entry (the run
        uid is unique to this run: SANDBOX.md layer 1)."""
        found = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.stat(f"/proc/{name}").st_uid == self.uid:
                        found.append(name)
                except OSError:
                    pass
        self.pids = found
        self.scanned = now


def remaining(watch: RssWatch | None, timeout: float) -> float:
    """The poll timeout: no longer than until the next sample."""
    if watch is None:
        return timeout
    return max(0.0, min(timeout, watch.next - time.monotonic()))
