"""A compile stage's output, kept to seed the work dirs of the runs after it.

A submission with test cases compiles once; each case then runs under a
fresh uid in an empty work dir holding a copy of what the compile stage
left in its own (`snapshot` by the compiling slot's supervisor, `copy_in`
by whichever slot runs a case). Both run as root in a supervisor:

- The compile stage's work dir is hostile (the Judge0 CVEs were a root
  worker following links a compile stage planted). `snapshot` runs only
  once no process of the compile uid is left, opens every component
  relative to its parent's descriptor with O_NOFOLLOW, copies regular
  files and directories, records links as links (never following them),
  skips everything else (FIFOs, sockets, devices), and stops at fixed
  bounds on depth and entries, so nothing the stage made can make it loop,
  block or run out of descriptors.
- The artifact dir is root's (0700, under the sandbox dir): no run can
  write it, so `copy_in` may trust what it reads there. It writes into a
  fresh work dir in which no untrusted process has run yet, as the
  supervisor's `prepare` does with a request's files.
"""

from __future__ import annotations

import os
import re
import shutil
import stat

from pesto.errors import ArtifactError

MAX_DEPTH = 32          # directory nesting kept
MAX_ENTRIES = 10_000    # files, directories and links kept

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NAME = re.compile(r"[0-9a-f]{32}\Z")


def artifact_root(work_root: str) -> str:
    """Where artifacts live: next to the work root, in root's own 0700 dir."""
    return os.path.join(os.path.dirname(work_root.rstrip("/")), "artifacts")


def artifact_path(work_root: str, name: str) -> str:
    if not _NAME.match(name):   # server-chosen (uuid4 hex); never a path from a client
        raise ValueError(f"bad artifact name {name!r}")
    return os.path.join(artifact_root(work_root), name)


def snapshot(parent_fd: int, name: str, dest: str) -> None:
    """Copy the tree `name` (in parent_fd) to the new directory `dest`.

    Raises ArtifactError when the tree is over the bounds (dest is removed).
    """
    root = os.path.dirname(dest)
    os.makedirs(root, mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    os.mkdir(dest, 0o700)
    count = [0]
    try:
        src = os.open(name, _DIR, dir_fd=parent_fd)
        try:
            _copy_tree(src, dest, 0, count)
        finally:
            os.close(src)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _copy_tree(src_fd: int, dest: str, depth: int, count: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise ArtifactError(f"the compile output nests directories deeper than {MAX_DEPTH}")
    with os.scandir(src_fd) as entries:
        names = [e.name for e in entries]
    for entry in names:
        count[0] += 1
        if count[0] > MAX_ENTRIES:
            raise ArtifactError(f"the compile output has more than {MAX_ENTRIES} entries")
        st = os.stat(entry, dir_fd=src_fd, follow_symlinks=False)
        target = os.path.join(dest, entry)
        if stat.S_ISLNK(st.st_mode):
            # Kept as a link: root never follows it; the runs see it as the
            # compile stage did, under their own Landlock rules.
            os.symlink(os.readlink(entry, dir_fd=src_fd), target)
        elif stat.S_ISDIR(st.st_mode):
            fd = os.open(entry, _DIR, dir_fd=src_fd)
            try:
                os.mkdir(target, 0o700)
                _copy_tree(fd, target, depth + 1, count)
            finally:
                os.close(fd)
        elif stat.S_ISREG(st.st_mode):
            # O_NONBLOCK: were it a FIFO after all, open must not wait for a writer.
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=src_fd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                              0o700 if st.st_mode & 0o100 else 0o600)
                try:
                    _copy_fd(fd, out)
                finally:
                    os.close(out)
            finally:
                os.close(fd)
        # FIFOs, sockets and devices are not part of a compile's output.


def copy_in(src: str, dfd: int, uid: int) -> None:
    """Copy the artifact dir `src` into the directory dfd, owned by uid."""
    src_fd = os.open(src, _DIR)
    try:
        _copy_back(src_fd, dfd, uid)
    finally:
        os.close(src_fd)


def _copy_back(src_fd: int, dfd: int, uid: int) -> None:
    with os.scandir(src_fd) as entries:
        listing = [(e.name, e.is_symlink(), e.is_dir(follow_symlinks=False)) for e in entries]
    for entry, is_link, is_dir in listing:
        if is_link:
            os.symlink(os.readlink(entry, dir_fd=src_fd), entry, dir_fd=dfd)
            os.chown(entry, uid, uid, dir_fd=dfd, follow_symlinks=False)
        elif is_dir:
            os.mkdir(entry, 0o700, dir_fd=dfd)
            os.chown(entry, uid, uid, dir_fd=dfd, follow_symlinks=False)
            sub_src = os.open(entry, _DIR, dir_fd=src_fd)
            try:
                sub = os.open(entry, _DIR, dir_fd=dfd)
                try:
                    _copy_back(sub_src, sub, uid)
                finally:
                    os.close(sub)
            finally:
                os.close(sub_src)
        else:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_fd)
            try:
                mode = os.fstat(fd).st_mode & 0o700
                out = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                              | os.O_CLOEXEC, mode, dir_fd=dfd)
                try:
                    _copy_fd(fd, out)
                    os.fchown(out, uid, uid)
                finally:
                    os.close(out)
            finally:
                os.close(fd)


def _copy_fd(src: int, dst: int) -> None:
    size = os.fstat(src).st_size
    copied = 0
    while copied < size:
        try:
            n = os.copy_file_range(src, dst, size - copied)
        except OSError:       # across file systems on older kernels: plain reads
            n = 0
        if n == 0:
            break
        copied += n
    while chunk := os.read(src, 1 << 20):   # the rest, if copy_file_range stopped early
        os.write(dst, chunk)


def remove(work_root: str, name: str) -> None:
    """Delete an artifact (root's own tree: rmtree never follows its links)."""
    shutil.rmtree(artifact_path(work_root, name), ignore_errors=True)


STALE_AFTER = 24 * 3600     # seconds: longer than any job can run (100 cases x 30 s x 2)


def sweep_old(work_root: str, now: float | None = None) -> int:
    """Remove artifacts a crashed server left behind; how many went.

    Only old ones: other Pesto instances may share the sandbox dir and be
    judging right now.
    """
    import time
    root = artifact_root(work_root)
    now = time.time() if now is None else now
    gone = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if _NAME.match(entry.name) and now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER:
                shutil.rmtree(entry.path, ignore_errors=True)
                gone += 1
        except OSError:
            continue
    return gone
