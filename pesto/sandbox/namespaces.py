"""Per-stage namespaces through an unprivileged user namespace.

Called in the child after it has become the run's uid, so the user
namespace belongs to that uid (no privilege needed, and it works inside a
default podman container where CAP_SYS_ADMIN is missing). Inside it the
child owns new network, IPC, UTS and mount namespaces:

- network: no interface is up, not even loopback, so no address of the
  host or the container (the API itself) is reachable, whatever syscall
  is used to try;
- IPC: no System V objects or POSIX message queues shared with anyone;
- UTS: a hostname of its own;
- mount: everything private (nothing propagates out), the whole tree
  read-only, fresh size-capped tmpfs on /tmp, /var/tmp and /dev/shm;
- PID: the program is PID 2 under a tiny init (PID 1 ignores signals it
  has no handler for, which would make `kill -9 $$` a no-op); the exit of
  init kills everything left in the namespace. A /proc of the namespace's
  own is mounted where allowed (podman masks parts of the container's
  /proc, and then the kernel refuses; the run then sees the container's
  processes but can signal none of them).

The program keeps its uid inside (identity map), so the work dir's files
stay its own; after exec it holds no capability (non-zero uid, no_new_privs).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal

from pesto.sandbox import kernel

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
FLAGS = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS | CLONE_NEWPID

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

SYS_MOUNT_SETATTR = 442
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _readonly_tree(path: str) -> None:
    """Make every mount under path read-only (mount_setattr, Linux 5.12+)."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    AT_FDCWD = -100
    ret = _libc.syscall(SYS_MOUNT_SETATTR, ctypes.c_int(AT_FDCWD), path.encode(),
                        ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                        ctypes.c_size_t(ctypes.sizeof(attr)))
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount_setattr({path}): {os.strerror(e)}")


def slot_network() -> tuple[int, int]:
    """A network namespace for one slot, reused by its runs one after another.

    Creating and destroying a network namespace per run cost ~6 ms of CPU per
    run here (a third of a Python hello world). A slot's runs never overlap,
    and a namespace whose loopback is down holds no state a run could leave
    for the next (no interface, no route; its abstract sockets die with their
    processes; a run has no capability to change it). It is owned by a user
    namespace owned by root, so the supervisor's children (euid 0, the
    owner) may enter both even without CAP_SYS_ADMIN (e.g. in a container).

    Returns (userns fd, netns fd). Called in the supervisor; raises OSError.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # a holder that creates the namespaces and waits to be killed
        try:
            os.close(r)
            if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
                os._exit(1)
            os.write(w, b"1")
            while True:
                signal.pause()   # until the supervisor has opened the namespaces and kills us
        finally:
            os._exit(0)
    os.close(w)
    try:
        if os.read(r, 1) != b"1":
            raise OSError(errno.EPERM, "cannot create a user+network namespace")
        # The same ids inside as outside (as much of them as we have).
        for kind in ("uid_map", "gid_map"):
            with open(f"/proc/self/{kind}") as f:
                _write(f"/proc/{pid}/{kind}", f.read())
        user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        net_fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        return user_fd, net_fd   # the fds keep the namespaces alive
    finally:
        os.close(r)
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def join(user_fd: int, net_fd: int) -> None:
    """Enter a slot's user and network namespaces (as root, before the uid change)."""
    for fd, kind in ((user_fd, CLONE_NEWUSER), (net_fd, CLONE_NEWNET)):
        if _libc.setns(fd, kind) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns: {os.strerror(e)}")


def enter(uid: int, gid: int, tmp_size: int, writable: list[str], network: bool = True) -> None:
    """Unshare user, network, IPC, UTS, mount and PID namespaces and set them up.

    The PID namespace applies to the children of the caller: `fork_init`
    must follow. network=False when the caller has joined its slot's
    network namespace instead (see slot_network).

    `writable` are mount points (the work dir) to keep writable under the
    read-only tree: they are bind-mounted onto themselves first so that
    they are mounts of their own.
    """
    # Changing uid made us non-dumpable, which makes /proc/self/* root's:
    # we could not write our own maps. A normal exec would set it back anyway.
    kernel.prctl(kernel.PR_SET_DUMPABLE, 1)
    if _libc.unshare(FLAGS if network else FLAGS & ~CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"unshare: {os.strerror(e)}")
    # Identity maps: inside, the program is still `uid`. setgroups must be
    # denied before an unprivileged process may write its gid map.
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    # Nothing mounted here may propagate back to the host or the container.
    kernel.mount("none", "/", "", MS_REC | MS_PRIVATE)
    for path in writable:
        kernel.mount(path, path, "", MS_BIND | MS_REC)
    tmpfs: list[str] = []
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(path):
            kernel.mount("pesto-tmp", path, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                         f"size={tmp_size},nr_inodes=4096,mode=1777")
            tmpfs.append(path)
    _readonly_tree("/")
    # The read-only pass covered the new mounts too: open the writable ones again.
    for path in [*writable, *tmpfs]:
        attr = _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
        ret = _libc.syscall(SYS_MOUNT_SETATTR, ctypes.c_int(-100), path.encode(),
                            ctypes.c_uint(0), ctypes.byref(attr),
                            ctypes.c_size_t(ctypes.sizeof(attr)))
        if ret != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mount_setattr({path}, rw): {os.strerror(e)}")


def close_all_except(*keep: int) -> None:
    # A forked process that will not exec still holds every descriptor of
    # the supervisor (its socket to the server, the other ends of the
    # program's pipes): close them all, with close_range between the keepers.
    # Never call closerange(n, n): CPython 3.11 turns closerange(0, 0) into
    # close_range(0, UINT_MAX), which closes everything.
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


def fork_init(status_fd: int) -> None:
    """Become: caller (outside the PID namespace) -> init (PID 1) -> program (PID 2).

    Returns only in the program. Init reaps everything in the namespace,
    and when the program ends writes "status utime stime maxrss" to
    status_fd (the supervisor's end of the stage) and exits, which kills
    whatever is left. The caller only mirrors init's end so that a stray
    wait on it tells the same story. Caller and init run no user code,
    keep no descriptor of the supervisor's, and are not dumpable: the
    program (same uid, no capability after exec) cannot ptrace them or
    open their /proc/<pid>/mem.
    """
    init = os.fork()
    if init:
        kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        close_all_except()
        _, status = os.waitpid(init, 0)
        os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + 9)
    # init (PID 1): dies with the caller, and so does the whole namespace.
    kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
    kernel.prctl(kernel.PR_SET_PDEATHSIG, 9)
    # A /proc of this namespace, where the kernel allows it.
    try:
        kernel.mount("proc", "/proc", "proc", kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC)
    except OSError:
        pass
    program = os.fork()
    if program == 0:
        os.close(status_fd)
        return
    close_all_except(status_fd)
    utime = stime = 0.0
    maxrss = 0
    while True:
        pid, status, ru = os.wait4(-1, 0)
        utime += ru.ru_utime
        stime += ru.ru_stime
        maxrss = max(maxrss, ru.ru_maxrss)
        if pid == program:
            break
    os.write(status_fd, f"{status} {utime} {stime} {maxrss}".encode())
    os._exit(0)   # the kernel kills whatever is left in the namespace
