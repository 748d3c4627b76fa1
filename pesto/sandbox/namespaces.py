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

import attrs

from pesto.sandbox import kernel
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


@attrs.define
class SlotNamespaces:
    """A slot's namespaces, held open by descriptors (-1: not used)."""
    user_fd: int
    net_fd: int
    mnt_fd: int
    work_fd: int   # the work root as the slot's runs see it (its private tmpfs)

    def child_fds(self) -> tuple[int, int, int]:
        return self.user_fd, self.net_fd, self.mnt_fd


def slot_namespaces(work_root: str, tmpfs_size: int, *, user: bool, net: bool,
                    mnt: bool) -> SlotNamespaces | None:
    """Namespaces one slot's runs join, one run after another; None if none is asked.

    - network: creating and destroying a network namespace per run costs
      a sizeable share of a short run's CPU (docs/benchmarks.md). A slot's
      runs never overlap, and a namespace whose loopback is down holds no
      state a run could leave for the next (no interface, no route; its
      abstract sockets die with their processes; a run has no capability to
      change it).
    - mount: a private size-capped tmpfs over the work root, so a run's
      files are bounded by the kernel (fallocate included) and the next job
      of the slot finds it empty. One mount per slot, not per run, saves a
      mount and unmount per run (docs/benchmarks.md). It is invisible to
      the host and the other slots, and it vanishes with the slot.
    - user: owned by root, so that in a container without CAP_SYS_ADMIN a
      tmpfs may be mounted there at all, and so that the supervisor's
      children (euid 0, the owner) may enter all three without it.

    The namespaces are made by a short-lived holder child; the descriptors
    returned keep them alive. Called in the supervisor; raises OSError.
    """
    flags = (CLONE_NEWUSER if user else 0) | (CLONE_NEWNET if net else 0) \
        | (CLONE_NEWNS if mnt else 0)
    if not flags & (CLONE_NEWNET | CLONE_NEWNS):
        return None
    up_r, up_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the holder: creates the namespaces, mounts, waits to be killed
        try:
            os.close(up_r)
            os.close(go_w)
            if _libc.unshare(flags) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            os.write(up_w, b"1")
            if os.read(go_r, 1) != b"g":   # our id maps are written
                os._exit(1)
            if mnt:
                # Nothing mounted here may propagate back to the host.
                kernel.mount("none", "/", "", MS_REC | MS_PRIVATE)
                kernel.mount("pesto-work", work_root, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV,
                             f"size={tmpfs_size},nr_inodes=16384,mode=0711")
            os.write(up_w, b"2")
            while True:
                signal.pause()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(up_w, f"E{exc}".encode()[:500])
        finally:
            os._exit(0)
    os.close(up_w)
    os.close(go_r)
    fds: list[int] = []
    try:
        if os.read(up_r, 1) != b"1":
            raise OSError(errno.EPERM, f"cannot unshare namespaces {flags:#x}")
        if user:
            # The same ids inside as outside (as much of them as we have).
            for kind in ("uid_map", "gid_map"):
                with open(f"/proc/self/{kind}") as f:
                    _write(f"/proc/{pid}/{kind}", f.read())
        os.write(go_w, b"g")
        reply = os.read(up_r, 500)
        if reply != b"2":
            raise OSError(errno.EPERM, f"slot namespaces: {reply[1:].decode(errors='replace')}")

        def ns(kind: str, wanted: bool) -> int:
            if not wanted:
                return -1
            fds.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC))
            return fds[-1]
        slot = SlotNamespaces(ns("user", user), ns("net", net), ns("mnt", mnt), -1)
        # The tmpfs, reached through the holder's root while it lives.
        slot.work_fd = os.open(f"/proc/{pid}/root{work_root}" if mnt else work_root,
                               os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return slot
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    finally:
        os.close(up_r)
        os.close(go_w)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
