"""How a stage's memory limit is held where no memory cgroup holds it.

With a memory cgroup (cgroups.py) the limit is the cgroup's: exact, and no
memory rlimit is set. Without one, each language's mode (language.toml,
`[limits] memory`) picks the mechanism: `rlimit()` below, and for runtimes
that no rlimit can hold tightly the engine's own memory watch (`RssWatch`).
The numbers behind each language's choice are in docs/memory.md.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from typing import Literal

MIB = 1 << 20

# The mechanisms a language can choose (its `[limits] memory`), each below.
MemoryMode = Literal["address-space", "data", "runtime-flag", "watch"]


def rlimit(mode: MemoryMode, memory: int, reserve: int) -> tuple[int, int]:
    """The rlimit for a stage limited to `memory` bytes, without a cgroup.

    address-space: RLIMIT_AS at the limit (what most runtimes tolerate).
    data: RLIMIT_DATA at the limit plus the language's `memory_reserve`,
      for runtimes that reserve address space with PROT_NONE (RLIMIT_DATA
      does not count it; RLIMIT_AS would): Go, Node, BEAM.
    runtime-flag: the runtime's own heap flag is the cap; RLIMIT_DATA at
      the limit plus `memory_reserve` backs it, which must cover the fixed
      writable regions the runtime maps at start (SBCL's, the JVM's).
    watch: RLIMIT_DATA at the limit plus `memory_reserve` is only the hard
      backstop of a runtime that cannot start under less (Bun); the
      supervisor's RssWatch stops it at the limit.
    """
    if mode == "address-space":
        return resource.RLIMIT_AS, memory
    return resource.RLIMIT_DATA, memory + reserve


def describe(mode: str, reserve: int) -> str:
    """One language's mechanism without a cgroup, as `pesto doctor` says it."""
    plus = f" + {reserve // MIB} MiB" if reserve else ""
    return {
        "address-space": "RLIMIT_AS at the limit",
        "data": f"RLIMIT_DATA at the limit{plus}",
        "runtime-flag": (f"its heap flag holds the limit; it cannot start under a tight "
                         f"rlimit: RLIMIT_DATA at the limit{plus} behind it"
                         if reserve else "its heap flag, RLIMIT_DATA at the limit behind it"),
        "watch": (f"cannot start under a tight rlimit: the engine's memory watch stops it "
                  f"at the limit (+ what it touches in {TICK * 1000:.0f} ms), RLIMIT_DATA at "
                  f"the limit{plus} as the hard backstop"),
    }[mode]


def host_report(cgroup: bool, runtimes: Iterable) -> list[str]:
    """What enforces memoryLimit on this host: the cgroup, or per language."""
    if cgroup:
        return ["a memory cgroup per slot: the limit is exact for every language "
                "(status memory when its OOM killer acts)"]
    groups: dict[str, list[str]] = {}
    for r in runtimes:
        groups.setdefault(describe(r.spec.limits.memory, r.spec.limits.memory_reserve),
                          []).append(r.id)
    return ["no memory cgroup: an rlimit per language (docs/memory.md)"] + [
        f"{', '.join(ids)}: {how}" for how, ids in groups.items()]


# -- the memory watch -------------------------------------------------------
# For a runtime that maps large fixed regions at start and cannot run under
# a tight RLIMIT_DATA (Bun: two 128 MiB regions): the supervisor samples the
# resident memory of the run's processes every TICK seconds and stops the
# run once it is past the limit (status "memory"). A program can outgrow the
# limit by what it touches in one tick: that is the documented margin.

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
