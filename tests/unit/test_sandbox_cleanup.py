"""Tree removal (cleanup.remove_tree) in a temp dir, as the current user:
it removes everything beneath, never anything a link points at, at any depth."""

from __future__ import annotations

import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile

import pytest

from pesto.sandbox.cleanup import Reaper, remove_tree


@pytest.fixture
def top(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def test_removes_a_tree_but_not_what_links_point_at(top, tmp_path_factory):
    root, fd = top
    outside = tmp_path_factory.mktemp("outside")
    (outside / "precious").write_text("keep")
    w = root / "66001"
    (w / "a" / "b").mkdir(parents=True)
    (w / "a" / "b" / "f").write_text("x")
    (w / "g").write_text("y")
    os.symlink(outside, w / "link-to-dir")
    os.symlink(outside / "precious", w / "a" / "link-to-file")
    os.symlink("/nonexistent", w / "dangling")
    os.mkfifo(w / "fifo")
    remove_tree("66001", fd)
    assert os.listdir(root) == []
    assert (outside / "precious").read_text() == "keep"


def test_a_link_as_the_top_is_removed_as_a_link(top, tmp_path_factory):
    root, fd = top
    outside = tmp_path_factory.mktemp("outside")
    (outside / "precious").write_text("keep")
    os.symlink(outside, root / "66001")
    os.symlink(outside / "precious", root / "66002")
    remove_tree("66001", fd)
    remove_tree("66002", fd)
    assert os.listdir(root) == [] and os.listdir(outside) == ["precious"]


def test_missing_is_nothing_to_do(top):
    remove_tree("66001", top[1])


@pytest.fixture
def fast_top(top):
    """In a tmpfs where there is one: a deep tree on a busy disk is slow to make."""
    if not os.access("/dev/shm", os.W_OK):
        yield top
        return
    root = tempfile.mkdtemp(dir="/dev/shm")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    yield pathlib.Path(root), fd
    os.close(fd)
    shutil.rmtree(root)


def test_depth_costs_neither_recursion_nor_descriptors(fast_top):
    """Nested deeper than Python's recursion limit and than a descriptor
    per level would allow under a low RLIMIT_NOFILE."""
    root, fd = fast_top
    os.mkdir(root / "66001")
    d = os.open(root / "66001", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=d)
        os.mknod("f", dir_fd=d)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=d)
        os.close(d)
        d = nxt
    os.close(d)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 128), hard))
    try:
        remove_tree("66001", fd)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert os.listdir(root) == []


def test_names_a_move_could_clash_with(top):
    root, fd = top
    w = root / "66001"
    (w / "x" / ".pesto-rm-1").mkdir(parents=True)
    (w / ".pesto-rm-1" / "y").mkdir(parents=True)
    (w / ".pesto-rm-2").mkdir()
    remove_tree("66001", fd)
    assert os.listdir(root) == []


def test_unremovable_raises(top):
    if os.geteuid() == 0:
        pytest.skip("root removes from a read-only directory anyway")
    root, fd = top
    (root / "66001" / "sub").mkdir(parents=True)
    (root / "66001" / "sub" / "f").write_text("x")
    os.chmod(root / "66001" / "sub", 0o500)
    try:
        with pytest.raises(OSError):
            remove_tree("66001", fd)
    finally:
        os.chmod(root / "66001" / "sub", 0o700)


REAPER_SCRIPT = """
import os, subprocess
from pesto.sandbox.cleanup import Reaper
proc = subprocess.Popen(["/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)   # exited, not yet reaped
reaper = Reaper(os.getuid())
alive = reaper.reap_exited()
print(alive, reaper.cpu > 0, reaper.rss > 0)
proc.returncode = 0   # reaped by the reaper, not by Popen
"""


def test_reaper_counts_what_exited():
    """Reaping only (no kill: that is by uid, and needs root), in a process
    of its own: the reaper waits for any child, and this one's are the
    test session's."""
    out = subprocess.run([sys.executable, "-c", REAPER_SCRIPT], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.split() == ["False", "True", "True"]
