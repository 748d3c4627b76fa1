"""pesto.sandbox.artifacts: a compile stage's hostile work dir is copied by root
without following anything planted in it (the Judge0 CVE-2024-28185 trap)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from pesto.sandbox import artifacts

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to a run uid needs root")

NAME = "0123456789abcdef0123456789abcdef"


def _snapshot(src: Path, dest: Path) -> None:
    fd = os.open(src.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        artifacts.snapshot(fd, src.name, str(dest))
    finally:
        os.close(fd)


def test_links_stay_links_fifos_and_devices_are_skipped(tmp_path: Path) -> None:
    secret = tmp_path / "root-only"
    secret.write_text("server secret")
    os.chmod(secret, 0o600)
    work = tmp_path / "work" / "61000"
    (work / "classes" / "pkg").mkdir(parents=True)
    (work / "main").write_bytes(b"\x7fELF binary")
    os.chmod(work / "main", 0o755)
    (work / "classes" / "pkg" / "A.class").write_bytes(b"\xca\xfe\xba\xbe")
    os.symlink(secret, work / "out.txt")                   # planted: a link to root's file
    os.symlink("/", work / "classes" / "root")             # and a link to a directory
    os.mkfifo(work / "pipe")                               # opening it would block
    done = threading.Event()
    dest = tmp_path / "artifacts" / NAME
    t = threading.Thread(target=lambda: (_snapshot(work, dest), done.set()), daemon=True)
    t.start()
    assert done.wait(10), "snapshot blocked (on the FIFO?)"
    assert sorted(os.listdir(dest)) == ["classes", "main", "out.txt"]
    assert os.readlink(dest / "out.txt") == str(secret)     # kept as a link, never read
    assert os.readlink(dest / "classes" / "root") == "/"
    assert (dest / "classes" / "pkg" / "A.class").read_bytes() == b"\xca\xfe\xba\xbe"
    assert stat.S_IMODE(os.stat(dest / "main").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o700
    # Seeding a run's work dir: everything owned by the run's uid, links not followed.
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    try:
        artifacts.copy_in(str(dest), fd, 61001)
    finally:
        os.close(fd)
    for path in [run / "main", run / "out.txt", run / "classes" / "pkg" / "A.class"]:
        assert os.lstat(path).st_uid == 61001, path
    assert os.readlink(run / "out.txt") == str(secret)
    assert os.stat(secret).st_uid == 0                       # root's file untouched
    assert os.access(run / "main", os.X_OK)


def test_too_deep_or_too_many_entries_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    deep = tmp_path / "deep" / "61000"
    path = deep
    for _ in range(artifacts.MAX_DEPTH + 2):
        path = path / "d"
    path.mkdir(parents=True)
    dest = tmp_path / "artifacts" / NAME
    with pytest.raises(artifacts.ArtifactError, match="deeper"):
        _snapshot(deep, dest)
    assert not dest.exists()
    wide = tmp_path / "wide" / "61000"
    wide.mkdir(parents=True)
    for i in range(artifacts.MAX_ENTRIES + 1):
        (wide / str(i)).touch()
    with pytest.raises(artifacts.ArtifactError, match="entries"):
        _snapshot(wide, dest)
    assert not dest.exists()


def test_names_are_never_paths_and_old_leftovers_are_swept(tmp_path: Path) -> None:
    work_root = str(tmp_path / "work")
    for bad in ("../etc", "a/b", "", "ABC"):
        with pytest.raises(ValueError):
            artifacts.artifact_path(work_root, bad)
    root = Path(artifacts.artifact_root(work_root))
    old, new = root / ("a" * 32), root / ("b" * 32)
    old.mkdir(parents=True)
    new.mkdir()
    os.utime(old, (time.time() - artifacts.STALE_AFTER - 10,) * 2)
    assert artifacts.sweep_old(work_root) == 1
    assert not old.exists() and new.exists()
