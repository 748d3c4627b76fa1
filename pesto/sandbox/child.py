"""The child's side of a stage: one linear function from fork to exec.

Runs in a process forked from the single-threaded supervisor, so Python
code between fork and exec cannot deadlock on another thread's lock. The
order of the steps matters and is explained at each one. Any failure is
written to `report_fd` as "step:errno:message" and the child exits 127:
the parent never mistakes a half-built sandbox for a run.
"""

from __future__ import annotations

import os
import resource
import signal

from pesto.sandbox import kernel
from pesto.sandbox import landlock as _landlock
from pesto.sandbox import namespaces as _ns

# Signals Python itself sets to SIG_IGN; an ignored disposition survives
# exec, so the program would inherit it (e.g. `yes | head` never ending).
_RESTORE_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)


def exec_child(*, argv: list[str], env: dict[str, str], cwd: str,
               uid: int, gid: int, rlimits: list[tuple[int, int]],
               stdin_fd: int, stdout_fd: int, stderr_fd: int, report_fd: int,
               landlock_fd: int | None, seccomp: kernel.SeccompProgram | None,
               namespaces: dict | None = None) -> None:
    step = "start"
    try:
        step = "signals"
        for sig in _RESTORE_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

        # A session of its own: no controlling terminal, and the run's
        # process group is not the supervisor's.
        step = "setsid"
        os.setsid()

        step = "stdio"
        os.dup2(stdin_fd, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)

        # The OOM killer must pick the run, never its supervisor (raising
        # one's own score needs no privilege).
        step = "oom_score_adj"
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")

        step = "chdir"
        os.chdir(cwd)

        # Limits before dropping privileges: an unprivileged process could
        # not lower its own hard limits back up, and NPROC is counted per uid.
        step = "rlimits"
        for res, value in rlimits:
            resource.setrlimit(res, (value, value))

        # Identity: groups first (needs root), then gid, then uid last,
        # since after setresuid we could do none of the others.
        step = "identity"
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

        # Namespaces after the uid change, so that the user namespace is the
        # run's own (this works without CAP_SYS_ADMIN, e.g. in a container),
        # and before Landlock and seccomp, which would forbid the unshare.
        step = "namespaces"
        if namespaces is not None:
            _ns.enter(uid, gid, namespaces["tmp_size"], namespaces["writable"])
            _ns.fork_init(namespaces["status_fd"])   # returns in the program, PID 2 of the new namespace
            os.chdir(cwd)   # the work dir is a new (bind) mount now
            if landlock_fd is not None:
                # The new /proc is a new mount, which the supervisor's rule
                # (made for the old one) does not cover.
                _landlock.allow_read(landlock_fd, "/proc")

        # no_new_privs: setuid binaries cannot elevate, and it is required
        # for an unprivileged process to install Landlock and seccomp.
        step = "no_new_privs"
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)

        step = "landlock"
        if landlock_fd is not None:
            kernel.landlock_restrict_self(landlock_fd)

        # seccomp last: the steps above use syscalls it would deny.
        step = "seccomp"
        if seccomp is not None:
            seccomp.install()

        step = "exec"
        os.execve(argv[0], argv, env)
    except BaseException as exc:  # noqa: BLE001 - everything must be reported
        err = getattr(exc, "errno", 0) or 0
        msg = f"{step}:{err}:{exc}".encode(errors="replace")[:4000]
        try:
            os.write(report_fd, msg)
        except OSError:
            pass
    finally:
        os._exit(127)
