"""Landlock rulesets: what a run may read, execute and write.

The policy lives here; the exec helper (pesto-exec.c) builds the ruleset in
the run's namespaces and restricts itself just before exec.
"""

from __future__ import annotations

import os


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


def _distinct(paths: tuple[str, ...]) -> tuple[str, ...]:
    """The paths whose real location is not inside an earlier one's: a rule
    follows links, so on a merged-/usr system /bin, /lib... and anything
    under /usr add nothing to the rule for /usr, and each rule costs the
    exec helper an open and a system call per stage."""
    kept: list[str] = []
    covered: list[str] = []   # real locations of the kept paths, with a trailing /
    for p in paths:
        real = os.path.realpath(p).rstrip("/") + "/"
        if not any(real.startswith(c) for c in covered):
            kept.append(p)
            covered.append(real)
    return tuple(kept)


SYSTEM_READ_RULES = _distinct(SYSTEM_READ)

# Device files a run may also write (writes vanish).
SYSTEM_WRITE_DEVICES = ("/dev/null", "/dev/zero", "/dev/full")


def handled(abi: int) -> tuple[int, int, int]:
    """(filesystem, network, scope) rights a ruleset handles: all this ABI knows.

    A handled right with no rule allowing it is denied: TCP bind/connect
    (ABI 4) have none, so every one fails.
    """
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs_rights(abi), net, scoped


def rules(abi: int, write_paths: list[str]) -> list[tuple[str, int]]:
    """(path, rights) of every run: read+exec of the system, read/write of a
    few devices, everything under write_paths (the work dir).

    The exec helper adds them in the run's own mount namespace (so /proc is
    the run's), skips paths that do not exist, and keeps only file rights on
    a path that is not a directory. The language's read paths are added
    there too, from the stage's spec.
    """
    read_dir = EXECUTE | READ_FILE | READ_DIR
    devices = READ_FILE | WRITE_FILE | (TRUNCATE if abi >= 3 else 0)
    return ([(p, read_dir) for p in SYSTEM_READ_RULES]
            + [(p, devices) for p in SYSTEM_WRITE_DEVICES]
            + [(p, fs_rights(abi)) for p in write_paths])
