"""The bare side of every benchmark: one interpreter run, timed, no sandbox."""

from __future__ import annotations

import os
import time

ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def bare_once(argv: list[str]) -> float:
    """Seconds to posix_spawn argv, read its output to EOF and reap it."""
    r, w = os.pipe()
    t = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, ENV, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1)])
    os.close(w)
    while os.read(r, 4096):
        pass
    os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t
    os.close(r)
    return elapsed
