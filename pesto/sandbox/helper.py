"""The exec helper (pesto-exec.c): built once, and started for every stage.

The binary is named by a hash of its source, so a changed source is never
run as a stale binary: `find()` builds it (C compiler needed: install.sh
installs one) into `build/` beside the source. `spawn()` starts it with
posix_spawn (vfork + exec: no copy of the supervisor's memory).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from pesto.errors import HelperMissing

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pesto-exec.c")
BUILD_DIR = os.path.join(os.path.dirname(SOURCE), "build")


@functools.cache
def find() -> str:
    """Path of the helper for this source, building it if needed."""
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    target = os.path.join(BUILD_DIR, f"pesto-exec-{digest}")
    if os.access(target, os.X_OK):
        return target
    cc = shutil.which("cc") or shutil.which("gcc") or next(
        (p for p in ("/usr/bin/cc", "/usr/bin/gcc") if os.access(p, os.X_OK)), None)
    musl = shutil.which("musl-gcc")
    if cc is None and musl is None:
        raise HelperMissing(f"{target} is not built and no C compiler is installed "
                            "(run ./install.sh, which installs gcc and builds it)")
    os.makedirs(BUILD_DIR, mode=0o755, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    errors = ""
    # Best first. Static against musl: it starts in less CPU than static
    # glibc, whose start-up probes the CPU's caches with CPUID (a trap to the
    # hypervisor in a VM) and reads /proc/self/exe; each stage pays that
    # start once, and its forks copy fewer pages. Then static glibc where
    # libc.a is installed (a static exec skips the dynamic loader), then
    # whatever links. Figures: docs/benchmarks.md, "Costs behind design choices".
    attempts = [[musl, "-static"]] if musl else []
    if cc is not None:
        attempts += [[cc, "-static"], [cc]]
    for compiler, *extra in attempts:
        proc = subprocess.run([compiler, "-O2", "-Wall", *extra, "-o", tmp, SOURCE],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)   # atomic: concurrent builders agree
            for old in os.listdir(BUILD_DIR):   # builds of earlier sources
                if old.startswith("pesto-exec-") and not old.endswith(".tmp") \
                        and old != os.path.basename(target):
                    with contextlib.suppress(FileNotFoundError):   # another builder's
                        os.unlink(os.path.join(BUILD_DIR, old))   # running copies go on
            return target
        errors = proc.stderr
    raise HelperMissing(f"cannot build {SOURCE}: {errors.strip()[-2000:]}")


def read_all(fd: int) -> bytes:
    """Read a pipe to EOF (a standby's report, its init's status, its output)."""
    chunks = []
    while data := os.read(fd, 4096):
        chunks.append(data)
    return b"".join(chunks)


def encode_spec(*, argv: Sequence[str], env: Mapping[str, str],
                rlimits: Sequence[tuple[int, int]], read_paths: Sequence[str]) -> bytes:
    """The stage's spec as the helper reads it from its control pipe: four
    counted groups of NUL-terminated fields (argv, env, rlimit pairs, read
    paths), in that order (pesto-exec.c's usage)."""
    items: list[str] = []
    for group in (list(argv), [f"{k}={v}" for k, v in env.items()],
                  [str(x) for pair in rlimits for x in pair], list(read_paths)):
        items.append(str(len(group)))
        items.extend(group)
    spec = "\0".join(items) + "\0"
    if spec.count("\0") != len(items):
        # A NUL would shift every later field (execve could not take it either).
        bad = next(s for s in items if "\0" in s)
        raise ValueError(f"NUL byte in a program argument or environment: {bad[:40]!r}")
    return spec.encode()


def spawn(*, uid: int, gid: int, workdir: str, tmp_size: int, namespaces: bool,
          stdin: int, stdout: int, stderr: int, ctl: int, report: int, status: int = -1,
          seccomp: int = -1, slot_ns: tuple[int, int, int] = (-1, -1, -1), landlock_abi: int = 0,
          landlock_handled: tuple[int, int, int] = (0, 0, 0),
          landlock_rules: Sequence[tuple[str, int]] = ()) -> int:
    """Start a standby for one stage; returns its pid.

    Every value goes as a named option (pesto-exec.c's usage); an absent
    descriptor (-1) is left out. The descriptors given reach the helper as
    copies made by the spawn's file actions, above every given number (so
    that no copy overwrites a descriptor still to be copied); the originals
    stay close-on-exec. The helper moves them to fixed numbers and closes
    every other one it inherited. The caller closes its copies of the
    child's ends afterwards.
    """
    userns, netns, mntns = slot_ns
    fds = {"stdin": stdin, "stdout": stdout, "stderr": stderr, "ctl": ctl, "report": report,
           "status": status, "seccomp": seccomp, "userns": userns, "netns": netns,
           "mntns": mntns}
    base = max(fds.values()) + 1
    argv = [find()]
    actions = []
    for i, (name, fd) in enumerate(fds.items()):
        if fd >= 0:
            actions.append((os.POSIX_SPAWN_DUP2, fd, base + i))
            argv.append(f"--{name}={base + i}")
    handled_fs, handled_net, scoped = landlock_handled
    argv += [f"--uid={uid}", f"--gid={gid}", f"--workdir={workdir}", f"--tmp-size={tmp_size}",
             f"--namespaces={int(namespaces)}", f"--landlock-abi={landlock_abi}",
             f"--handled-fs={handled_fs}", f"--handled-net={handled_net}", f"--scoped={scoped}"]
    argv += [f"--rule={rights}:{path}" for path, rights in landlock_rules]
    return os.posix_spawn(argv[0], argv, {}, file_actions=actions)
