"""A slot's uids: the one its current job holds, and the next job's, leased ahead.

A lease is a lock on the uid's lock file (uids.py). While a job holds it,
the file reads "dirty"; it is emptied only once the job's processes and
files are gone, so a holder that dies mid-job leaves the uid to be swept
by its next holder before anything of it runs again.
"""

from __future__ import annotations

import os

from pesto.sandbox.cleanup import sweep, sweep_if_dirty
from pesto.sandbox.context import Context
from pesto.sandbox.uids import UidLeases


class Leases:
    """Leases uids for one slot, one job ahead (so that the server can be
    told the next job's uid, and its work dir, at the end of this one)."""

    def __init__(self, ctx: Context, slot: int) -> None:
        self.ctx = ctx
        self.uids = UidLeases(ctx, slot)
        self.ahead: tuple[int, int] | None = None   # (uid, lock fd) of the next job

    def _lease_uid(self) -> tuple[int, int]:
        """(uid, lock fd) of a free uid, swept if a dead holder left it dirty."""
        uid, lock_fd = self.uids.lease()
        try:
            sweep_if_dirty(uid, lock_fd, self.ctx)
            os.pwrite(lock_fd, b"dirty", 0)   # until release(clean=True)
        except BaseException:
            os.close(lock_fd)
            raise
        return uid, lock_fd

    def take(self) -> tuple[int, int]:
        """(uid, lock fd) for the next job: the one leased ahead, or a fresh one.
        Raises NoFreeUid, or OSError from a sweep."""
        lease = self.ahead or self._lease_uid()
        self.ahead = None
        return lease

    def lease_ahead(self) -> int:
        """Lease the next job's uid (while this job holds its own); -1 if none is free."""
        if self.ahead is None:
            try:
                self.ahead = self._lease_uid()
            except Exception:
                return -1
        return self.ahead[0]

    @property
    def ahead_uid(self) -> int:
        return self.ahead[0] if self.ahead else -1

    @staticmethod
    def release(lock_fd: int, *, clean: bool) -> None:
        """Give a uid back; unless `clean`, its lock file stays dirty and
        its next holder sweeps it."""
        try:
            if clean:
                os.ftruncate(lock_fd, 0)
        finally:
            os.close(lock_fd)

    def release_ahead(self) -> None:
        """At the slot's end: the uid leased ahead was never used, so it is clean."""
        if self.ahead is not None:
            self.release(self.ahead[1], clean=True)
            self.ahead = None

    def sweep(self, uid: int) -> None:
        """Sweep a uid another (dead) supervisor held, once its lock is free."""
        fd = self.uids.lock_exact(uid, wait=True)
        try:
            sweep(uid, self.ctx)
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)
