"""Per-slot cgroups: an exact memory limit, exact peak, OOM detection, and
a task limit.

Moving a process between cgroups costs an RCU grace period (~10-15 ms
measured here, on every hierarchy), so runs are never moved: each
long-lived slot supervisor joins its own cgroup once, and the programs it
forks are born inside it. The supervisor's own charge is measured just
before each stage and added to the limit and subtracted from the peak; runs
set their oom_score_adj to 1000 (and the supervisor to -1000 where it may),
so the OOM killer picks the run, not the supervisor.

The pids controller, where writable, limits the stage's tasks (threads
included) whatever their uid or user namespace; RLIMIT_NPROC stays as a
backstop above it.

Where no writable memory hierarchy exists, `NoCgroups` keeps the call
sites free of ifs and the rlimits remain the memory and process limits.
"""

from __future__ import annotations

import os
from pathlib import Path


class NoCgroups:
    available = False
    reason = "no writable memory cgroup hierarchy"

    def join(self, name: str) -> None:
        pass

    def start_stage(self, limit: int, tasks: int) -> bool:
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

    def __init__(self, base: Path, pids_base: Path | None) -> None:
        self.base = base
        self.pids_base = pids_base
        self.reason = f"cgroup v1 memory controller at {base}" + (
            f"; pids controller at {pids_base}" if pids_base else "; no writable pids controller")
        self.pids = pids_base is not None
        self.cg: Path | None = None
        self._baseline = 0
        self._oom_before = 0
        self._has_memsw = (base.parent / "memory.memsw.limit_in_bytes").exists()

    @classmethod
    def probe(cls) -> "CgroupV1Memory | NoCgroups":
        base, why = _writable_base("memory", "memory.limit_in_bytes")
        if base is None:
            none = NoCgroups()
            none.reason = why
            return none
        pids_base, _ = _writable_base("pids", "pids.max")
        # Slots of Pesto processes that are gone: empty groups rmdir cleanly.
        for top in (base, pids_base):
            for stale in top.iterdir() if top else ():
                if stale.is_dir():
                    try:
                        stale.rmdir()
                    except OSError:
                        pass
        return cls(base, pids_base)

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
        self._pids_max = self._pids_current = -1
        if self.pids_base is not None:
            pcg = self.pids_base / name
            pcg.mkdir(exist_ok=True)
            _write(pcg / "cgroup.procs", str(os.getpid()))
            self._pids_max = os.open(pcg / "pids.max", os.O_RDWR | os.O_CLOEXEC)
            self._pids_current = os.open(pcg / "pids.current", os.O_RDONLY | os.O_CLOEXEC)

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

    def start_stage(self, limit: int, tasks: int) -> bool:
        """Set the limits for the stage whose standby is waiting; zero the peak.

        `tasks` more tasks than now may exist in the slot: the supervisor
        and the standby (already counted) are outside that budget.
        """
        self._baseline = int(os.pread(self._usage, 64, 0))
        self._set_limit(str(limit + self._baseline).encode())
        os.pwrite(self._max_usage, b"0", 0)
        self._oom_before = self._oom_kills()
        if self._pids_max >= 0:
            now = int(os.pread(self._pids_current, 64, 0))
            os.pwrite(self._pids_max, str(now + tasks).encode(), 0)
        return True

    def finish_stage(self) -> tuple[int | None, bool]:
        """(peak bytes of the stage, whether the OOM killer acted in it)."""
        peak = int(os.pread(self._max_usage, 64, 0)) - self._baseline
        oom = self._oom_kills() > self._oom_before
        # Between stages the supervisor itself must never hit a limit.
        self._set_limit(b"-1")
        if self._pids_max >= 0:
            os.pwrite(self._pids_max, b"max", 0)
        return max(peak, 0), oom


def _writable_base(controller: str, probe_file: str) -> tuple[Path | None, str]:
    """(<hierarchy>/<our cgroup>/pesto, "") for a v1 controller we may write; else (None, why)."""
    root = Path("/sys/fs/cgroup") / controller
    own = _own_path(controller)
    if own is None or not (root / "cgroup.procs").exists():
        return None, f"no cgroup v1 {controller} hierarchy"
    base = root / own.lstrip("/") / "pesto"
    try:
        base.mkdir(exist_ok=True)
        probe = base / f"probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        _write(probe / probe_file, "64")
        probe.rmdir()
    except OSError as exc:
        return None, f"cgroup v1 {controller} at {base} not writable: {exc.strerror}"
    return base, ""


def probe() -> "CgroupV1Memory | NoCgroups":
    if os.geteuid() != 0:
        none = NoCgroups()
        none.reason = "not root"
        return none
    return CgroupV1Memory.probe()
