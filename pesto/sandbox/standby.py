"""The standby: a stage's exec helper, started ahead and waiting for its spec.

It has already dropped to the run's uid, entered its namespaces and
installed seccomp (pesto-exec.c); the stage then pays only for writing
its spec, the last set-up steps and exec.
"""

from __future__ import annotations

import os

import attrs

from pesto.sandbox import helper, landlock
from pesto.sandbox.context import Context
from pesto.sandbox.namespaces import SlotNamespaces


@attrs.define
class Standby:
    """An exec helper started ahead of a stage, waiting on ctl_w for its spec."""
    pid: int
    ctl_w: int
    stdin_w: int
    out_r: int
    err_r: int
    report_r: int
    status_r: int   # -1 without a PID namespace
    pidfd: int      # of pid, opened at spawn: immune to pid reuse; its owner closes it
    wide: bool = False   # placed on every CPU the server may use (spread_cpus)

    def close(self) -> None:
        """Close the supervisor's ends (EOF on the control pipe: an unused standby exits)."""
        for fd in (self.ctl_w, self.stdin_w, self.out_r, self.err_r, self.report_r, self.status_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.ctl_w = self.stdin_w = self.out_r = self.err_r = self.report_r = self.status_r = -1


def spawn(ctx: Context, *, uid: int, workdir: str, seccomp_fd: int,
          slot_ns: SlotNamespaces | None, wide_cpus: set[int] | None = None) -> Standby:
    """Start the exec helper that will become the next stage's program, as
    `uid` in `workdir`; with `wide_cpus`, on those CPUs rather than the slot's."""
    if wide_cpus is not None:
        # Affinity is inherited at spawn: widened for that moment only.
        pinned = os.sched_getaffinity(0)
        os.sched_setaffinity(0, wide_cpus)
        try:
            sb = spawn(ctx, uid=uid, workdir=workdir, seccomp_fd=seccomp_fd, slot_ns=slot_ns)
        finally:
            os.sched_setaffinity(0, pinned)
        sb.wide = True
        return sb
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rep_r, rep_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    # With a PID namespace the program is a grandchild: its init reports
    # how it ended (and its rusage) over this pipe, so that the stage ends
    # when the program does, not when the namespaces are torn down.
    st_r, st_w = os.pipe() if ctx.namespaces else (-1, -1)
    abi = ctx.landlock_abi
    try:
        pid = helper.spawn(
            uid=uid, gid=uid, workdir=workdir, tmp_size=ctx.disk_limit,
            namespaces=ctx.namespaces, stdin=stdin_r, stdout=out_w, stderr=err_w,
            ctl=ctl_r, report=rep_w, status=st_w, seccomp=seccomp_fd,
            slot_ns=slot_ns.child_fds() if slot_ns else (-1, -1, -1),
            landlock_abi=abi,
            landlock_handled=landlock.handled(abi) if abi else (0, 0, 0),
            landlock_rules=landlock.rules(abi, [workdir]) if abi else ())
    finally:
        for fd in (stdin_r, out_w, err_w, rep_w, ctl_r, st_w):
            if fd >= 0:
                os.close(fd)
    return Standby(pid, ctl_w, stdin_w, out_r, err_r, rep_r, st_r, os.pidfd_open(pid))
