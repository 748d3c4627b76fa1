"""The bare side of every benchmark: one interpreter run, timed, no sandbox."""

from __future__ import annotations

import os
import time

ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def bare_once(argv: list[str], stdin: bytes | None = None) -> float:
    """Seconds to posix_spawn argv, feed it `stdin` (if given), read its output
    to EOF and reap it."""
    r, w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, w, 1)]
    if stdin is not None:
        in_r, in_w = os.pipe()
        actions.append((os.POSIX_SPAWN_DUP2, in_r, 0))
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, ENV, file_actions=actions)
    os.close(w)
    if stdin is not None:
        os.close(in_r)
        os.write(in_w, stdin)
        os.close(in_w)
    while os.read(r, 4096):
        pass
    os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t
    os.close(r)
    return elapsed
