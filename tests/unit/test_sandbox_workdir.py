"""Work dirs (workdir.py) in a temp dir, as the current user: made, filled
without following a link, emptied."""

from __future__ import annotations

import os

import pytest

from pesto.sandbox import workdir
from pesto.sandbox.protocol import File

UID = os.getuid()

pytestmark = pytest.mark.skipif(
    UID != 0 and os.getgid() != UID,
    reason="work dirs are chowned to (uid, uid): this user's gid differs from its uid")


@pytest.fixture
def root(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def test_make_and_fill(root):
    path, fd = root
    workdir.make(fd, UID)
    d = path / str(UID)
    assert oct(d.stat().st_mode & 0o777) == "0o700" and d.stat().st_uid == UID
    workdir.fill(fd, UID, [File("main.py", b"print(1)\n"), File("pkg/sub/m.py", b"\x00\xff"),
                           File("pkg/n.py", b"")], None)
    assert (d / "main.py").read_bytes() == b"print(1)\n"
    assert (d / "pkg" / "sub" / "m.py").read_bytes() == b"\x00\xff"
    assert oct((d / "main.py").stat().st_mode & 0o777) == "0o600"
    assert (d / "pkg" / "n.py").stat().st_uid == UID


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/abs", "a//b", ".", "a/", "a/./b"])
def test_bad_names_are_refused(root, name):
    path, fd = root
    workdir.make(fd, UID)
    with pytest.raises(ValueError):
        workdir.fill(fd, UID, [File(name, b"x")], None)
    assert not (path / "x").exists()


def test_never_writes_through_a_link(root, tmp_path_factory):
    path, fd = root
    outside = tmp_path_factory.mktemp("outside")
    workdir.make(fd, UID)
    d = path / str(UID)
    os.symlink(outside, d / "dir")
    os.symlink(outside / "file", d / "file")
    with pytest.raises(OSError):
        workdir.fill(fd, UID, [File("dir/x", b"x")], None)
    with pytest.raises(OSError):
        workdir.fill(fd, UID, [File("file", b"x")], None)
    assert os.listdir(outside) == []


def test_an_existing_file_is_not_overwritten(root):
    path, fd = root
    workdir.make(fd, UID)
    workdir.fill(fd, UID, [File("a", b"1")], None)
    with pytest.raises(FileExistsError):
        workdir.fill(fd, UID, [File("a", b"2")], None)
    assert (path / str(UID) / "a").read_bytes() == b"1"


def test_remove_and_clear(root):
    path, fd = root
    workdir.make(fd, UID)
    workdir.fill(fd, UID, [File("a/b", b"1")], None)
    workdir.remove(fd, UID)
    assert os.listdir(path) == []
    (path / "66001" / "x").mkdir(parents=True)
    (path / "stray").write_text("x")
    workdir.clear(fd)
    assert os.listdir(path) == []
