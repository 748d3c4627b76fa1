"""What this host offers, probed once: each layer available or not, and why.

A missing optional layer becomes a no-op (None / NoCgroups / tmpfs=False)
so call sites carry no ifs; `layers` is what `pesto doctor` prints.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
from typing import Any

import attrs

from pesto.sandbox import cgroups, helper, kernel, seccomp



@attrs.define
class Layer:
    available: bool
    enabled: bool
    reason: str


@attrs.define
class Context:
    uid_base: int
    uid_count: int
    work_root: str
    disk_limit: int
    landlock_abi: int
    seccomp: kernel.SeccompProgram | None
    tmpfs: bool
    namespaces: bool
    userns: bool        # unprivileged user namespaces work (even if namespaces are disabled)
    cgroups: Any
    layers: dict[str, Layer]

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: attrs.asdict(layer) for name, layer in self.layers.items()}


def _in_child(fn) -> tuple[bool, str]:
    """Run fn() in a forked child (so the probe cannot taint us); (ok, message)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            msg = fn() or "ok"
            os.write(w, b"1" + msg.encode())
        except BaseException as exc:  # noqa: BLE001
            os.write(w, b"0" + str(exc).encode()[:500])
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1024):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return data[:1] == b"1", data[1:].decode(errors="replace")


def _probe_seccomp(prog: kernel.SeccompProgram) -> tuple[bool, str]:
    def check() -> str:
        kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        prog.install()
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return "filter installed; AF_INET socket() denied"
        raise RuntimeError("filter installed but AF_INET socket() was allowed")
    return _in_child(check)


_NS_CHECK = """
import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect(("127.0.0.1", 9))
except OSError as exc:
    print("ok" if exc.errno in (errno.ENETUNREACH, errno.EADDRNOTAVAIL) else exc)
else:
    print("loopback reachable in the new network namespace")
"""


def _probe_namespaces(work_root: str) -> tuple[bool, str]:
    """The whole per-stage namespace set-up, through the exec helper, as an
    unprivileged uid, checked from inside by a program."""
    nobody = 65534
    workdir = os.path.join(work_root, f".probe-ns-{os.getpid()}")
    os.mkdir(workdir, 0o700)
    os.chown(workdir, nobody, nobody)
    pipes = [os.pipe() for _ in range(4)]   # stdin, stdout, control, report
    (in_r, in_w), (out_r, out_w), (ctl_r, ctl_w), (rep_r, rep_w) = pipes
    try:
        pid = helper.spawn(uid=nobody, gid=nobody, workdir=workdir, tmp_size=1 << 20,
                           namespaces=True, stdin=in_r, stdout=out_w, stderr=out_w,
                           ctl=ctl_r, report=rep_w)
        for fd in (in_r, in_w, out_w, ctl_r, rep_w):
            os.close(fd)
        os.write(ctl_w, helper.encode_spec(argv=["/usr/bin/python3", "-S", "-c", _NS_CHECK],
                                            env={}, rlimits=[], read_paths=[]))
        os.close(ctl_w)
        report, out = helper.read_all(rep_r), helper.read_all(out_r)
        os.waitpid(pid, 0)
    finally:
        for fd in (rep_r, out_r):
            os.close(fd)
        os.rmdir(workdir)
    if report:
        return False, report.decode(errors="replace")
    if out.strip() != b"ok":
        return False, out.decode(errors="replace")[:300] or "the check printed nothing"
    return True, "user, network, IPC, UTS, mount and PID namespaces per stage"


def _probe_tmpfs(work_root: str, userns: bool) -> tuple[bool, str]:
    """Can a slot get its private tmpfs (namespaces.slot_namespaces)?"""
    from pesto.sandbox import namespaces
    try:
        slot = namespaces.slot_namespaces(work_root, 1 << 20, user=userns, net=False, mnt=True)
    except OSError as exc:
        return False, (f"cannot mount a private tmpfs ({exc.strerror or exc}): "
                       "the disk cap is RLIMIT_FSIZE per file only")
    assert slot is not None
    for fd in (*slot.child_fds(), slot.work_fd):
        if fd >= 0:
            os.close(fd)
    return True, "a private size-capped tmpfs per slot for its work dirs (kernel-enforced disk cap)"


def probe(*, uid_base: int, uid_count: int, sandbox_dir: str,
          disable: tuple[str, ...] = (), disk_limit: int = 64 << 20) -> Context:
    """Probe every layer once. Creates sandbox_dir/{locks,work} if needed."""
    work_root = os.path.join(sandbox_dir, "work")
    os.makedirs(sandbox_dir, mode=0o711, exist_ok=True)
    os.chmod(sandbox_dir, 0o711)
    os.makedirs(os.path.join(sandbox_dir, "locks"), mode=0o700, exist_ok=True)
    os.makedirs(work_root, mode=0o711, exist_ok=True)
    os.chmod(work_root, 0o711)
    layers: dict[str, Layer] = {}
    # Every stage is started through it: without it there is no sandbox.
    helper.find()   # raises HelperMissing, saying what to do

    root = os.geteuid() == 0
    clash = [p.pw_name for p in pwd.getpwall() if uid_base <= p.pw_uid < uid_base + uid_count]
    users_ok = root and not clash
    layers["users"] = Layer(users_ok, users_ok,
                            f"uids {uid_base}..{uid_base + uid_count - 1}, one per run"
                            if users_ok else ("not root" if not root else
                                              f"uid range holds system accounts: {clash[:5]}"))
    layers["rlimits"] = Layer(True, True, "setrlimit before exec")

    prog = None
    if not seccomp.supported():
        layers["seccomp"] = Layer(False, False, "filter written for x86_64 only")
    else:
        candidate = kernel.SeccompProgram(seccomp.build_filter())
        ok, why = _probe_seccomp(candidate)
        enabled = ok and "seccomp" not in disable
        prog = candidate if enabled else None
        layers["seccomp"] = Layer(ok, enabled, why if ok else f"unavailable: {why}")

    abi = kernel.landlock_abi()
    ll_enabled = abi > 0 and "landlock" not in disable
    layers["landlock"] = Layer(abi > 0, ll_enabled,
                               f"ABI {abi}" + (" (TCP and scoping rules)" if abi >= 6 else "")
                               if abi else "Landlock not offered by this kernel")

    ns_ok, ns_why = _probe_namespaces(work_root) if root else (False, "not root")
    layers["namespaces"] = Layer(ns_ok, ns_ok and "namespaces" not in disable,
                                 ns_why if ns_ok else f"unavailable: {ns_why}")

    cg = cgroups.probe() if "cgroups" not in disable else cgroups.NoCgroups()
    layers["cgroups"] = Layer(cg.available, cg.available, cg.reason)

    tmpfs_ok, tmpfs_why = _probe_tmpfs(work_root, ns_ok) if root else (False, "not root")
    layers["disk"] = Layer(tmpfs_ok, tmpfs_ok and "disk" not in disable, tmpfs_why)

    return Context(uid_base=uid_base, uid_count=uid_count, work_root=work_root,
                   disk_limit=disk_limit,
                   landlock_abi=abi if ll_enabled else 0, seccomp=prog,
                   tmpfs=layers["disk"].enabled, namespaces=layers["namespaces"].enabled,
                   userns=ns_ok,
                   cgroups=cg, layers=layers)
