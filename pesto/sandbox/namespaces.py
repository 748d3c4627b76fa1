"""Per-stage namespaces: what they give, and the slot's network namespace.

The exec helper (pesto-exec.c) enters them in the standby, after it has
become the run's uid, so the user namespace belongs to that uid (no
privilege needed, and it works inside a default podman container where
CAP_SYS_ADMIN is missing). Inside it the stage owns new IPC, UTS, mount
and PID namespaces, and joins its slot's network namespace:

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

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


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
