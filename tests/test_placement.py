"""spread_cpus: a runtime with threads of its own runs on every CPU the server
may use, while other runs stay on their slot's CPUs (pin_cpus)."""

from __future__ import annotations

import os

import pytest

CPP = r"""
#include <sched.h>
#include <cstdio>
int main() { cpu_set_t s; sched_getaffinity(0, sizeof s, &s); std::printf("%d\n", CPU_COUNT(&s)); }
"""


def test_spread_runtimes_get_every_cpu_others_their_slots(runner) -> None:
    allowed = len(os.sched_getaffinity(0))
    if allowed < 2 or runner.settings.workers > allowed or not runner.settings.pin_cpus:
        pytest.skip(f"slots are not pinned here ({allowed} CPUs, "
                    f"{runner.settings.workers} workers)")
    if not runner.has("cpp"):
        pytest.skip("C++ is not installed")
    per_slot = allowed // runner.settings.workers
    python = runner.run("python", "import os; print(len(os.sched_getaffinity(0)))")
    assert python.runtime.stdout == f"{per_slot}\n"
    cpp = runner.run("cpp", CPP)
    assert cpp.compile.status == "ok", cpp.compile.stderr
    assert cpp.runtime.stdout == f"{allowed}\n"
    # The slot itself stays pinned: the next plain run is placed as before.
    again = runner.run("python", "import os; print(len(os.sched_getaffinity(0)))")
    assert again.runtime.stdout == f"{per_slot}\n"
