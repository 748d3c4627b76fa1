"""Per-slot memory cgroups: an exact limit, exact peak, and OOM detection.

Moving a process between cgroups costs an RCU grace period (~10-15 ms
measured here, on every hierarchy), so runs are never moved: each
long-lived slot supervisor joins its own cgroup once, and the programs it
forks are born inside it. The supervisor's own charge is measured just
before each stage and added to the limit and subtracted from the peak; runs
set their oom_score_adj to 1000 (and the supervisor to -1000 where it may),
so the OOM killer picks the run, not the supervisor.

Where no writable memory hierarchy exists, `NoCgroups` keeps the call
sites free of ifs and the rlimits remain the memory limit.
"""

from __future__ import annotations

import os
from pathlib import Path


class NoCgroups:
    available = False
    reason = "no writable memory cgroup hierarchy"

    def join(self, name: str) -> None:
        pass

    def start_stage(self, limit: int) -> bool:
        return False

    def finish_stage(self) -> tuple[int | None, bool]:
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
        self.cg: Path | None = None
        self._baseline = 0
        self._oom_before = 0
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
            probe = base / f"probe-{os.getpid()}"
            probe.mkdir(exist_ok=True)
            _write(probe / "memory.limit_in_bytes", str(64 << 20))
            probe.rmdir()
        except OSError as exc:
            none = NoCgroups()
            none.reason = f"cgroup v1 memory at {base} not writable: {exc.strerror}"
            return none
        # Slots of Pesto processes that are gone: empty groups rmdir cleanly.
        for stale in base.iterdir():
            if stale.is_dir():
                try:
                    stale.rmdir()
                except OSError:
                    pass
        return cls(base)

    def join(self, name: str) -> None:
        """Move the calling supervisor into its slot's cgroup (once, at slot start)."""
        self.cg = self.base / name
        self.cg.mkdir(exist_ok=True)
        _write(self.cg / "cgroup.procs", str(os.getpid()))
        try:   # needs CAP_SYS_RESOURCE; runs raise their own score to 1000 anyway
            _write(Path("/proc/self/oom_score_adj"), "-1000")
        except PermissionError:
            pass
        # Opened once: each stage then costs a few preads and pwrites.
        def fd(name: str, flags: int = os.O_RDWR) -> int:
            return os.open(self.cg / name, flags | os.O_CLOEXEC)
        self._usage = fd("memory.usage_in_bytes", os.O_RDONLY)
        self._max_usage = fd("memory.max_usage_in_bytes")
        self._limit = fd("memory.limit_in_bytes")
        self._memsw = fd("memory.memsw.limit_in_bytes") if self._has_memsw else -1
        self._oom_control = fd("memory.oom_control", os.O_RDONLY)

    def _oom_kills(self) -> int:
        for line in os.pread(self._oom_control, 4096, 0).split(b"\n"):
            if line.startswith(b"oom_kill "):
                return int(line.split()[1])
        return 0

    def _set_limit(self, limit: bytes) -> None:
        # No swap: memsw (memory+swap) equal to memory. memsw must stay >=
        # memory at every write, so open it up first.
        if self._memsw >= 0:
            os.pwrite(self._memsw, b"-1", 0)
        os.pwrite(self._limit, limit, 0)
        if self._memsw >= 0 and limit != b"-1":
            os.pwrite(self._memsw, limit, 0)

    def start_stage(self, limit: int) -> bool:
        """Set the limit for the program about to be forked; zero the peak."""
        self._baseline = int(os.pread(self._usage, 64, 0))
        self._set_limit(str(limit + self._baseline).encode())
        os.pwrite(self._max_usage, b"0", 0)
        self._oom_before = self._oom_kills()
        return True

    def finish_stage(self) -> tuple[int | None, bool]:
        """(peak bytes of the stage, whether the OOM killer acted in it)."""
        peak = int(os.pread(self._max_usage, 64, 0)) - self._baseline
        oom = self._oom_kills() > self._oom_before
        # Between stages the supervisor itself must never hit a limit.
        self._set_limit(b"-1")
        return max(peak, 0), oom


def probe() -> "CgroupV1Memory | NoCgroups":
    if os.geteuid() != 0:
        none = NoCgroups()
        none.reason = "not root"
        return none
    return CgroupV1Memory.probe()
