"""Cleanup and kill: what ends a run and removes its traces.

A run's processes are killed by uid (SANDBOX.md: kill by uid, never by
"the child I spawned") and reaped by the slot supervisor, a child
subreaper; its files are removed by a walk that never follows a link.
`sweep` does all of it for a uid whose holder died before cleaning.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal

from pesto.sandbox.context import Context
from pesto.sandbox.uids import UidLeases


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid`, orphans and setsid'd daemons included.

    kill(-1) executed as the run's uid reaches exactly the processes that
    uid owns. A few rounds catch what a fork bomb forked during the first;
    zombies also count as signalled, so the caller reaps and calls again
    rather than this looping until ESRCH.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(3):
                os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass  # ESRCH: nothing of this uid is left
        except BaseException:
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)


class Reaper:
    """Reaps descendants and adds up their CPU time and peak RSS for one stage.

    As subreaper, "no child left" means no process of this run exists any more.
    """

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.cpu = 0.0
        self.rss = 0

    def count(self, ru: resource.struct_rusage) -> None:
        self.cpu += ru.ru_utime + ru.ru_stime
        self.rss = max(self.rss, ru.ru_maxrss * 1024)

    def reap_exited(self) -> bool:
        """Reap what has exited; True if descendants are still alive."""
        while True:
            try:
                pid, _status, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            self.count(ru)

    def kill_and_reap(self) -> None:
        """Kill every process of the uid and reap all of them."""
        while self.reap_exited():
            kill_uid(self.uid)
            try:   # wait for one to die, then reap the rest that did
                _pid, _status, ru = os.wait4(-1, 0)
            except ChildProcessError:
                return
            self.count(ru)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(name: str, dir_fd: int) -> None:
    """Remove `name` (in dir_fd) and everything under it, never following a link.

    Every directory is opened with O_NOFOLLOW relative to a descriptor, so a
    link planted anywhere is removed as a link, never walked through (and no
    process of the run is alive by now to race this). Depth costs neither
    recursion nor descriptors: the subdirectories of a nested directory are
    first renamed up into the top one, so a run that nested thousands of
    directories cannot make its clean-up fail. Raises OSError for what could
    not be removed.
    """
    try:
        top = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=dir_fd)   # a file or a link: removed itself
        return
    try:
        pending = [_emptied(top)]
        taken = set(pending[0])   # names in `top` that a move must not reuse
        while pending:
            for sub in pending.pop():
                fd = os.open(sub, _DIR_FLAGS, dir_fd=top)
                try:
                    moved = []
                    for d in _emptied(fd):   # up into `top`, under a fresh name
                        new = f".pesto-rm-{len(taken)}"
                        while new in taken:
                            new += "_"
                        taken.add(new)
                        os.rename(d, new, src_dir_fd=fd, dst_dir_fd=top)
                        moved.append(new)
                finally:
                    os.close(fd)
                os.rmdir(sub, dir_fd=top)
                pending.append(moved)
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=dir_fd)


def _emptied(fd: int) -> list[str]:
    """Unlink every non-directory in directory fd; return its subdirectories' names."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


def scrub_shared_tmp(uid: int) -> None:
    """Without Landlock a run can write the world-writable dirs: remove what it left."""
    for top in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


def sweep(uid: int, ctx: Context) -> None:
    """Remove every trace of a uid whose previous holder died before cleaning."""
    kill_uid(uid)
    # A work dir in the shared work root (no private tmpfs); one in a dead
    # slot's tmpfs vanished with the slot.
    if os.path.lexists(os.path.join(ctx.work_root, str(uid))):
        fd = os.open(ctx.work_root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            remove_tree(str(uid), fd)
        finally:
            os.close(fd)
    if not ctx.landlock_abi:
        scrub_shared_tmp(uid)


def sweep_if_dirty(uid: int, lock_fd: int, ctx: Context) -> bool:
    """Sweep a uid just locked if its previous holder died before cleaning
    (lock file left "dirty", or a work dir left behind). True if it swept."""
    dirty = os.pread(lock_fd, 5, 0) == b"dirty"
    if dirty or os.path.lexists(os.path.join(ctx.work_root, str(uid))):
        sweep(uid, ctx)
        return True
    return False


def sweep_stale(ctx: Context) -> list[int]:
    """At start-up: sweep every uid left dirty by a crashed server or supervisor.

    Only uids whose lock is free are touched (another live Pesto may hold the rest).
    """
    leases = UidLeases(ctx, 0)
    swept = []
    for name in os.listdir(leases.lock_dir):
        if not name.isdigit():
            continue
        try:
            fd = leases.lock_exact(int(name))
        except BlockingIOError:
            continue
        try:
            if sweep_if_dirty(int(name), fd, ctx):
                os.ftruncate(fd, 0)
                swept.append(int(name))
        finally:
            os.close(fd)
    return swept
