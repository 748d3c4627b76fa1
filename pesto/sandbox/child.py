"""The child's side of a stage: one linear function from fork to exec.

The child is forked *ahead* of the job (a "standby", see Supervisor), from
the single-threaded supervisor, so Python code between fork and exec cannot
deadlock on another thread's lock. It does everything that does not depend
on the program while the slot is idle (phase 1), then blocks on its control
pipe until the stage's spec arrives (phase 2: the few steps that depend on
it, then exec). The order of the steps matters and is explained at each
one. Any failure is written to `report_fd` as "step:errno:message" and the
child exits 127: the parent never mistakes a half-built sandbox for a run.
"""

from __future__ import annotations

import json
import os
import resource
import signal

from pesto.sandbox import kernel
from pesto.sandbox import landlock as _landlock
from pesto.sandbox import namespaces as _ns

# Signals Python itself sets to SIG_IGN; an ignored disposition survives
# exec, so the program would inherit it (e.g. `yes | head` never ending).
_RESTORE_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)


def _read_spec(fd: int) -> dict | None:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks)) if chunks else None


def standby(*, uid: int, gid: int, workdir: str, ctl_fd: int, report_fd: int,
            stdin_fd: int, stdout_fd: int, stderr_fd: int,
            landlock_abi: int, seccomp: kernel.SeccompProgram | None,
            namespaces: dict | None) -> None:
    step = "start"
    try:
        # ---- phase 1: ahead of the job --------------------------------
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

        # The slot's own network namespace (no interface up), entered while
        # still root: its owner may enter it without CAP_SYS_ADMIN.
        step = "slot_network"
        if namespaces is not None and namespaces.get("slot_ns"):
            _ns.join(*namespaces["slot_ns"])

        # A fork holds every descriptor of the supervisor, this stage's
        # control pipe's write end included (which would keep the spec
        # from ever ending): keep only what the child uses.
        step = "close_fds"
        keep = [0, 1, 2, ctl_fd, report_fd]
        if namespaces is not None:
            keep.append(namespaces["status_fd"])
        _ns.close_all_except(*keep)

        # The OOM killer must pick the run, never its supervisor (raising
        # one's own score needs no privilege).
        step = "oom_score_adj"
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")

        # Identity: groups first (needs root), then gid, then uid last,
        # since after setresuid we could do none of the others. Everything
        # after this runs as the run's uid.
        step = "identity"
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

        # A standby must not outlive its supervisor (set after the uid
        # change, which clears it).
        step = "pdeathsig"
        kernel.prctl(kernel.PR_SET_PDEATHSIG, signal.SIGKILL)

        # Namespaces after the uid change, so that the user namespace is the
        # run's own (this works without CAP_SYS_ADMIN, e.g. in a container),
        # and before Landlock and seccomp, which would forbid the unshare.
        step = "namespaces"
        if namespaces is not None:
            _ns.enter(uid, gid, namespaces["tmp_size"], [workdir],
                      network=not namespaces.get("slot_ns"))
            _ns.fork_init(namespaces["status_fd"])   # returns in the program: PID 2

        # The ruleset is built here, after the mounts, so that its /proc rule
        # names this namespace's /proc. The language's own paths come with
        # the spec. Opening with O_PATH needs no read permission.
        step = "landlock_rules"
        ruleset = _landlock.build_ruleset(landlock_abi, [], [workdir]) if landlock_abi else None

        # no_new_privs: setuid binaries cannot elevate, and it is required
        # for an unprivileged process to install Landlock and seccomp.
        step = "no_new_privs"
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)

        # seccomp already now: nothing phase 2 does (read, chdir, setrlimit,
        # landlock, execve) is on its deny list.
        step = "seccomp"
        if seccomp is not None:
            seccomp.install()

        # ---- phase 2: the stage's spec ----------------------------------
        step = "spec"
        spec = _read_spec(ctl_fd)
        if spec is None:
            os._exit(0)   # the supervisor discarded this standby

        step = "chdir"
        os.chdir(workdir)

        # Lowering limits needs no privilege; NPROC is counted per uid.
        step = "rlimits"
        for res, value in spec["rlimits"]:
            resource.setrlimit(res, (value, value))

        step = "landlock"
        if ruleset is not None:
            for path in spec["read_paths"]:
                if os.path.exists(path):
                    _landlock.allow_read(ruleset, path)
            kernel.landlock_restrict_self(ruleset)

        step = "exec"
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as exc:  # noqa: BLE001 - everything must be reported
        err = getattr(exc, "errno", 0) or 0
        msg = f"{step}:{err}:{exc}".encode(errors="replace")[:4000]
        try:
            os.write(report_fd, msg)
        except OSError:
            pass
    finally:
        os._exit(127)
