"""Uid leases: one lock file per uid, held with flock() for as long as a job
uses the uid, so that several Pesto processes on one host never share one.

A lock is held by the slot supervisor running the job and released (by
close, or by the supervisor's death) only after the uid's processes and
files are gone. A holder that dies mid-job leaves the file "dirty", and
the next holder sweeps the uid before using it.
"""

from __future__ import annotations

import fcntl
import os
import time

from pesto.errors import NoFreeUid
from pesto.sandbox.context import Context


class UidLeases:
    def __init__(self, ctx: Context, slot: int) -> None:
        self.lock_dir = os.path.join(os.path.dirname(ctx.work_root), "locks")
        self.base = ctx.uid_base
        self.count = ctx.uid_count
        # Slots start far apart so that they rarely try the same lock.
        self._next = (slot * 61) % self.count

    def lock_exact(self, uid: int, wait: bool = False) -> int:
        """Lock one uid; BlockingIOError while another holds it (unless wait)."""
        fd = os.open(os.path.join(self.lock_dir, str(uid)),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if wait:
                deadline = time.monotonic() + 5
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.01)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def lease(self) -> tuple[int, int]:
        """(uid, locked fd) of the next free uid. Raises NoFreeUid."""
        for _ in range(self.count):
            uid = self.base + self._next
            self._next = (self._next + 1) % self.count
            try:
                return uid, self.lock_exact(uid)
            except BlockingIOError:
                continue
        raise NoFreeUid("every sandbox uid is held")
