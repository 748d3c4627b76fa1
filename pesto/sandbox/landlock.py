"""Landlock rulesets: what a run may read, execute and write.

Built by the supervisor (root) before the fork; the child only calls
landlock_restrict_self() on the finished ruleset fd.
"""

from __future__ import annotations

import os

from pesto.sandbox import kernel

# Filesystem rights (uapi/linux/landlock.h).
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13        # ABI 2
TRUNCATE = 1 << 14     # ABI 3
IOCTL_DEV = 1 << 15    # ABI 5
# Network rights (ABI 4): handled with no rule means every TCP bind/connect is denied.
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
# Scopes (ABI 6): no abstract-unix connect and no signals outside the run's domain.
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


def fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


# What every run may read (and execute). /etc is not here as a whole: it can
# hold the operator's secrets; only the files runtimes really open are listed.
SYSTEM_READ = (
    "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/alternatives", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
    "/etc/mime.types", "/etc/ssl/openssl.cnf",
    "/usr/share/zoneinfo",
    "/proc", "/sys/devices/system/cpu", "/sys/fs/cgroup",
    "/dev/urandom", "/dev/random",
)
# Device files a run may also write (writes vanish).
SYSTEM_WRITE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full")


def build_ruleset(abi: int, read_paths: list[str], write_paths: list[str]) -> int:
    """A ruleset fd allowing read+exec under read_paths and everything under write_paths.

    Paths that do not exist are skipped. Raises OSError if Landlock refuses.
    """
    handled = fs_rights(abi)
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    ruleset = kernel.landlock_create_ruleset(handled, handled_net, scoped, abi)
    try:
        read_dir = EXECUTE | READ_FILE | READ_DIR
        for path, allowed in ([(p, read_dir) for p in (*SYSTEM_READ, *read_paths)]
                              + [(p, READ_FILE | WRITE_FILE | (TRUNCATE if abi >= 3 else 0))
                                 for p in SYSTEM_WRITE_DEVICES]
                              + [(p, handled) for p in write_paths]):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if not os.path.isdir(path):
                    allowed &= FILE_RIGHTS & handled
                kernel.landlock_add_path(ruleset, allowed, fd)
            finally:
                os.close(fd)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def allow_read(ruleset: int, path: str) -> None:
    """Add one read+exec rule to a ruleset (used by the child for its own /proc)."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        allowed = EXECUTE | READ_FILE | (READ_DIR if os.path.isdir(path) else 0)
        kernel.landlock_add_path(ruleset, allowed, fd)
    finally:
        os.close(fd)
