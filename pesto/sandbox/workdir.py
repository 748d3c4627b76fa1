"""A job's work dir: made, filled and emptied by root without ever
following a link a run could have planted (SANDBOX.md, "Every path inside
a run-writable directory is hostile").

Every call takes the descriptor of the work root (the host's, or the slot's
private tmpfs) and names the work dir by its uid, relative to it.
"""

from __future__ import annotations

import os

from pesto.sandbox import artifacts, protocol
from pesto.sandbox.cleanup import remove_tree


def make(work_fd: int, uid: int) -> None:
    """The uid's empty work dir, owned by it; made before any process of the uid exists."""
    os.mkdir(str(uid), 0o700, dir_fd=work_fd)
    os.chown(str(uid), uid, uid, dir_fd=work_fd, follow_symlinks=False)


def fill(work_fd: int, uid: int, files: list[protocol.File], artifact: str | None) -> None:
    """Write the job's files (and first a copy of the artifact at that path,
    if any) into the uid's work dir, owned by the uid.

    Only while no untrusted process has run in the dir (the standby waiting
    there runs only our code), so no planted link can redirect root.
    Raises ValueError for a name with an empty, "." or ".." part.
    """
    dfd = os.open(str(uid), os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=work_fd)
    try:
        if artifact:   # a compile stage's output (root's own copy)
            artifacts.copy_in(artifact, dfd, uid)
        for f in files:
            write_file(dfd, f.name, f.data, uid)
    finally:
        os.close(dfd)


def write_file(dfd: int, name: str, data: bytes, uid: int) -> None:
    """Create `name` ("a/b/c", parents made as needed) under directory dfd,
    never through a link; the file must not exist yet."""
    parts = name.split("/")
    fds = [dfd]
    try:
        for part in parts[:-1]:
            if part in ("", ".", ".."):
                raise ValueError(f"bad file name {name!r}")
            try:
                os.mkdir(part, 0o700, dir_fd=fds[-1])
                os.chown(part, uid, uid, dir_fd=fds[-1], follow_symlinks=False)
            except FileExistsError:
                pass
            fds.append(os.open(part, os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
        leaf = parts[-1]
        if leaf in ("", ".", ".."):
            raise ValueError(f"bad file name {name!r}")
        fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600, dir_fd=fds[-1])
        try:
            write_all(fd, data)
            os.fchown(fd, uid, uid)
        finally:
            os.close(fd)
    finally:
        for fd in fds[1:]:
            os.close(fd)


def remove(work_fd: int, uid: int) -> None:
    """Remove the uid's work dir, once no process of the uid is left."""
    remove_tree(str(uid), work_fd)


def clear(work_fd: int) -> None:
    """Remove everything under the work root (a slot's private tmpfs, which
    holds one job at a time: anything there is an earlier job's leftover)."""
    for name in os.listdir(work_fd):
        remove_tree(name, work_fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
