"""Uid leases one job ahead (leasing.py), on lock files in a temp dir.

The uids are far above any real account's, so the sweep's kill-by-uid
(as root) finds no process to kill, and without root it cannot switch."""

from __future__ import annotations

import os

import pytest

from pesto.sandbox.context import Context
from pesto.sandbox.leasing import Leases

BASE = 4_000_000_000


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "locks").mkdir()
    (tmp_path / "work").mkdir()
    # landlock_abi=1: no scrub of the shared /tmp (not this test's business).
    return Context(uid_base=BASE, uid_count=4, work_root=str(tmp_path / "work"),
                   disk_limit=1 << 20, landlock_abi=1, seccomp=None, tmpfs=False,
                   namespaces=False, userns=False, cgroups=None, layers={})


def lock_file(ctx: Context, uid: int) -> bytes:
    with open(os.path.join(os.path.dirname(ctx.work_root), "locks", str(uid)), "rb") as f:
        return f.read()


def test_a_job_and_the_next_one_hold_different_dirty_uids(ctx):
    leases = Leases(ctx, 0)
    uid, fd = leases.take()
    ahead = leases.lease_ahead()
    assert ahead != uid and leases.ahead_uid == ahead
    assert leases.lease_ahead() == ahead           # leased once
    assert lock_file(ctx, uid) == lock_file(ctx, ahead) == b"dirty"
    Leases.release(fd, clean=True)
    assert lock_file(ctx, uid) == b""
    assert leases.take()[0] == ahead and leases.ahead_uid == -1


def test_slots_never_share_a_uid(ctx):
    a, b = Leases(ctx, 0), Leases(ctx, 1)
    held = [a.take(), b.take(), a.take(), b.take()]
    assert sorted(u for u, _ in held) == [BASE, BASE + 1, BASE + 2, BASE + 3]
    assert a.lease_ahead() == -1                    # every uid is held
    for _, fd in held:
        Leases.release(fd, clean=True)


def test_a_uid_released_dirty_is_swept_by_its_next_holder(ctx):
    leases = Leases(ctx, 0)
    uid, fd = leases.take()
    os.mkdir(os.path.join(ctx.work_root, str(uid)))
    with open(os.path.join(ctx.work_root, str(uid), "left"), "w") as f:
        f.write("x")
    Leases.release(fd, clean=False)                # its holder died mid-job
    assert lock_file(ctx, uid) == b"dirty"
    again = Leases(ctx, 0)                         # slot 0 starts at the same uid
    uid2, fd2 = again.take()
    assert uid2 == uid
    assert not os.path.lexists(os.path.join(ctx.work_root, str(uid)))
    Leases.release(fd2, clean=True)


def test_release_ahead_leaves_it_clean(ctx):
    leases = Leases(ctx, 0)
    ahead = leases.lease_ahead()
    leases.release_ahead()
    assert lock_file(ctx, ahead) == b"" and leases.ahead_uid == -1
