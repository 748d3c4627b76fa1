"""Per-uid memory cgroups: an exact limit, exact peak, and OOM detection.

One cgroup per uid slot (`<own cgroup>/pesto/<uid>`), created on first use
and reused: the uid lock guarantees one run at a time in it. Where no
writable memory hierarchy exists, `NoCgroups` keeps the call sites free of
ifs and the rlimits remain the memory limit.
"""

from __future__ import annotations

import os
from pathlib import Path


class NoCgroups:
    available = False
    reason = "no writable memory cgroup hierarchy"

    def prepare(self, uid: int, limit: int) -> str | None:
        return None

    def finish(self, uid: int) -> tuple[int | None, bool]:
        return None, False


def _own_path(controller: str) -> str | None:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return path
    return None


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class CgroupV1Memory:
    """cgroup v1 `memory` controller (the hierarchy this kind of host has)."""
    available = True

    def __init__(self, base: Path) -> None:
        self.base = base
        self.reason = f"cgroup v1 memory controller at {base}"
        self._oom_before: dict[int, int] = {}
        self._has_memsw = (base.parent / "memory.memsw.limit_in_bytes").exists()

    @classmethod
    def probe(cls) -> "CgroupV1Memory | NoCgroups":
        root = Path("/sys/fs/cgroup/memory")
        own = _own_path("memory")
        if own is None or not (root / "memory.limit_in_bytes").exists():
            return NoCgroups()
        base = root / own.lstrip("/") / "pesto"
        try:
            base.mkdir(exist_ok=True)
            probe = base / "probe"
            probe.mkdir(exist_ok=True)
            _write(probe / "memory.limit_in_bytes", str(64 << 20))
            probe.rmdir()
        except OSError as exc:
            none = NoCgroups()
            none.reason = f"cgroup v1 memory at {base} not writable: {exc.strerror}"
            return none
        return cls(base)

    def _oom_kills(self, cg: Path) -> int:
        with open(cg / "memory.oom_control") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def prepare(self, uid: int, limit: int) -> str:
        """Set the stage's limit and zero its peak; returns the cgroup.procs path to join."""
        cg = self.base / str(uid)
        cg.mkdir(exist_ok=True)
        # No swap: memsw (memory+swap) equal to memory. memsw must stay >=
        # memory at every write, so open it up first.
        if self._has_memsw:
            _write(cg / "memory.memsw.limit_in_bytes", "-1")
        _write(cg / "memory.limit_in_bytes", str(limit))
        if self._has_memsw:
            _write(cg / "memory.memsw.limit_in_bytes", str(limit))
        _write(cg / "memory.max_usage_in_bytes", "0")
        self._oom_before[uid] = self._oom_kills(cg)
        return str(cg / "cgroup.procs")

    def finish(self, uid: int) -> tuple[int | None, bool]:
        """(peak bytes, whether the OOM killer acted) for the stage just ended."""
        cg = self.base / str(uid)
        with open(cg / "memory.max_usage_in_bytes") as f:
            peak = int(f.read())
        return peak, self._oom_kills(cg) > self._oom_before.pop(uid, 0)


def probe() -> "CgroupV1Memory | NoCgroups":
    if os.geteuid() != 0:
        none = NoCgroups()
        none.reason = "not root"
        return none
    return CgroupV1Memory.probe()
