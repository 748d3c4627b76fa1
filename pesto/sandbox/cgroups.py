"""Per-slot cgroups (v2, or v1 where the host has that): an exact memory
limit without swap, exact peak, OOM detection, and a task limit.

Moving a process between cgroups waits for an RCU grace period, on every
hierarchy (docs/benchmarks.md), so runs are never moved: each
long-lived slot supervisor joins its own cgroup once, and the programs it
forks are born inside it. The supervisor's own charge is measured just
before each stage and added to the limit and subtracted from the peak; runs
set their oom_score_adj to 1000 (and the supervisor to -1000 where it may),
so the OOM killer picks the run, not the supervisor.

The pids controller, where writable, also limits the stage's tasks
(threads included) whatever their uid or user namespace, with a few tasks
of headroom for the supervisor's own forks; RLIMIT_NPROC (per uid) stays.

Where no writable memory hierarchy exists, `NoCgroups` keeps the call
sites free of ifs and the rlimits remain the memory and process limits.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs


class NoCgroups:
    available = False
    reason = "no writable memory cgroup hierarchy"

    def join(self, name: str) -> None:
        pass

    def start_stage(self, limit: int, tasks: int) -> bool:
        return False

    def finish_stage(self) -> tuple[int | None, bool]:
        return None, False

    def relax(self) -> None:
        pass


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


@attrs.frozen
class Kind:
    """Where one cgroup version keeps what a stage needs."""
    name: str
    usage: str           # current charge
    peak: str            # peak charge, reset per stage by writing `peak_reset`
    peak_reset: bytes
    limit: str
    unlimited: bytes
    events: str          # has an "oom_kill N" line


V1 = Kind("v1", "memory.usage_in_bytes", "memory.max_usage_in_bytes", b"0",
          "memory.limit_in_bytes", b"-1", "memory.oom_control")
# memory.peak is reset through the descriptor that writes to it (Linux 6.12+).
V2 = Kind("v2", "memory.current", "memory.peak", b"reset", "memory.max", b"max", "memory.events")


class SlotCgroups:
    """A slot's memory (and pids) cgroups, v1 or v2: the same steps, other files."""
    available = True

    def __init__(self, kind: Kind, base: Path, pids_base: Path | None) -> None:
        self.kind = kind
        self.base = base
        self.pids_base = pids_base
        self.reason = f"cgroup {kind.name} memory controller at {base}" + (
            f"; pids controller at {pids_base}" if pids_base else "; no writable pids controller")
        self._baseline = 0
        self._oom_before = 0
        self._peak_ok = True

    def join(self, name: str) -> None:
        """Move the calling supervisor into its slot's cgroup (once, at slot start)."""
        cg = self.base / name
        cg.mkdir(exist_ok=True)
        _write(cg / "cgroup.procs", str(os.getpid()))
        pcg = self.pids_base / name if self.pids_base else None
        if pcg is not None and pcg != cg:   # v1: a hierarchy of its own
            pcg.mkdir(exist_ok=True)
            _write(pcg / "cgroup.procs", str(os.getpid()))
        try:   # needs CAP_SYS_RESOURCE; runs raise their own score to 1000 anyway
            _write(Path("/proc/self/oom_score_adj"), "-1000")
        except PermissionError:
            pass
        # Opened once: each stage then costs a few preads and pwrites.
        def fd(path: Path, flags: int = os.O_RDWR) -> int:
            return os.open(path, flags | os.O_CLOEXEC)
        k = self.kind
        self._usage = fd(cg / k.usage, os.O_RDONLY)
        self._peak = fd(cg / k.peak)
        self._limit = fd(cg / k.limit)
        self._events = fd(cg / k.events, os.O_RDONLY)
        # No swap. v2 says so once; v1's memory+swap limit must follow the
        # memory limit at every change (see _set_limit).
        self._memsw = -1
        if k is V1 and (cg / "memory.memsw.limit_in_bytes").exists():
            self._memsw = fd(cg / "memory.memsw.limit_in_bytes")
        if k is V2 and (cg / "memory.swap.max").exists():
            _write(cg / "memory.swap.max", "0")
        self._pids_max = self._pids_current = -1
        if pcg is not None:
            self._pids_max = fd(pcg / "pids.max")
            self._pids_current = fd(pcg / "pids.current", os.O_RDONLY)

    def _oom_kills(self) -> int:
        for line in os.pread(self._events, 4096, 0).split(b"\n"):
            if line.startswith(b"oom_kill "):
                return int(line.split()[1])
        return 0

    def _set_limit(self, limit: bytes) -> None:
        # v1: memsw (memory+swap) equal to memory means no swap. memsw must
        # stay >= memory at every write, so open it up first.
        if self._memsw >= 0:
            os.pwrite(self._memsw, b"-1", 0)
        os.pwrite(self._limit, limit, 0)
        if self._memsw >= 0 and limit != self.kind.unlimited:
            os.pwrite(self._memsw, limit, 0)

    def start_stage(self, limit: int, tasks: int) -> bool:
        """Set the limits for the stage whose standby is waiting; zero the peak.

        `tasks` more tasks than now may exist in the slot: the supervisor
        and the standby (already counted) are outside that budget.
        """
        self._baseline = int(os.pread(self._usage, 64, 0))
        self._set_limit(str(limit + self._baseline).encode())
        try:
            os.pwrite(self._peak, self.kind.peak_reset, 0)
        except OSError:   # v2 before Linux 6.12: no per-stage peak here
            self._peak_ok = False
        self._oom_before = self._oom_kills()
        if self._pids_max >= 0:
            now = int(os.pread(self._pids_current, 64, 0))
            os.pwrite(self._pids_max, str(now + tasks).encode(), 0)
        return True

    def finish_stage(self) -> tuple[int | None, bool]:
        """(peak bytes of the stage or None, whether the OOM killer acted in it)."""
        peak = int(os.pread(self._peak, 64, 0)) - self._baseline if self._peak_ok else None
        oom = self._oom_kills() > self._oom_before
        return (max(peak, 0) if peak is not None else None), oom

    def relax(self) -> None:
        """Lift the stage's limits: between stages the supervisor itself must
        never hit one. Called after the reply (the stage's processes are
        gone, so its limits have room for the supervisor until then)."""
        self._set_limit(self.kind.unlimited)
        if self._pids_max >= 0:
            os.pwrite(self._pids_max, b"max", 0)


def _remove_stale(base: Path) -> None:
    """Slots of Pesto processes that are gone: empty groups rmdir cleanly."""
    for stale in base.iterdir():
        if stale.is_dir():
            try:
                stale.rmdir()
            except OSError:
                pass


def _v1_base(controller: str, probe_file: str) -> tuple[Path | None, str]:
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
    _remove_stale(base)
    return base, ""


def _probe_v1() -> SlotCgroups | NoCgroups:
    base, why = _v1_base("memory", "memory.limit_in_bytes")
    if base is None:
        none = NoCgroups()
        none.reason = why
        return none
    pids_base, _ = _v1_base("pids", "pids.max")
    return SlotCgroups(V1, base, pids_base)


def _probe_v2(root: Path) -> SlotCgroups | NoCgroups:
    """A unified hierarchy: slots under <root>/pesto.

    Not under our own cgroup: it holds processes (the server), and v2 lets a
    cgroup with processes give no controllers to its children. The root
    cgroup is exempt from that rule, and `pesto` itself holds none.
    """
    none = NoCgroups()
    wanted = [c for c in ("memory", "pids")
              if c in (root / "cgroup.controllers").read_text().split()]
    if "memory" not in wanted:
        none.reason = "cgroup v2 without the memory controller"
        return none
    base = root / "pesto"
    enable = " ".join(f"+{c}" for c in wanted)
    try:
        _write(root / "cgroup.subtree_control", enable)
        base.mkdir(exist_ok=True)
        _write(base / "cgroup.subtree_control", enable)
        probe = base / f"probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        _write(probe / "memory.max", str(64 << 20))
        probe.rmdir()
    except OSError as exc:
        none.reason = f"cgroup v2 at {base} not writable (or not delegated): {exc.strerror}"
        return none
    _remove_stale(base)
    return SlotCgroups(V2, base, base if "pids" in wanted else None)


def probe() -> SlotCgroups | NoCgroups:
    if os.geteuid() != 0:
        none = NoCgroups()
        none.reason = "not root"
        return none
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():   # a unified (v2-only) host
        return _probe_v2(root)
    return _probe_v1()
