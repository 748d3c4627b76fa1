"""What each runtime tolerates under a hard rlimit, without a memory cgroup
(prints a Markdown table; not a test). The numbers in docs/memory.md come
from it.

    .venv/bin/python tests/bench/memory_limits.py [--only go,javascript] [--modes data,address-space]

For every installed language and each rlimit mode (RLIMIT_DATA = the limit,
RLIMIT_AS = the limit), through the real Engine with cgroups off:
  - the smallest memoryLimit (MiB, binary search 8..2048) at which its test
    program still prints "Hello world!" (the heap flags get the same limit);
  - at memoryLimit = 128 MiB: how a program allocating and touching 1 GiB in
    1 MiB pieces ends (status, the runtime's first stderr line), and its
    peak RSS (the largest process's, from the kernel's rusage).
The language's own mode (language.toml) is marked with *.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pesto.config import load_settings  # noqa: E402
from pesto.runtimes import Registry  # noqa: E402
from tests.conftest import UID_BASE, Runner  # noqa: E402
from tests.test_languages import HOGS  # noqa: E402

MIB = 1 << 20
# Hogs for the languages test_languages.py has none for.
MORE_HOGS = {
    "python": "l = []\nfor i in range(1024):\n    l.append(bytearray(b'x' * (1 << 20)))\n"
              "print('survived', len(l))\n",
    "c": "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n"
         "int main(void) { for (int i = 0; i < 1024; i++) { char *p = malloc(1 << 20);\n"
         "  if (!p) { fprintf(stderr, \"malloc failed at %d MiB\\n\", i); return 1; }\n"
         "  memset(p, 1, 1 << 20); } puts(\"survived 1024\"); return 0; }\n",
}


def with_mode(rt, mode: str, reserve: int = 0):
    return attrs.evolve(rt, spec=attrs.evolve(rt.spec, limits=attrs.evolve(
        rt.spec.limits, memory=mode, memory_reserve=reserve * MIB)))


def smallest_reserve(runner: Runner, rt, mode: str) -> int | None:
    """The smallest memory_reserve (MiB) at which hello world runs at 128 MiB."""
    def ok(reserve: int) -> bool:
        swap(runner, with_mode(rt, mode, reserve))
        return hello_ok(runner, rt, 128)
    if ok(0):
        return 0
    lo, hi = 0, 1024
    if not ok(hi):
        return None
    while hi - lo > 4:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def swap(runner: Runner, changed) -> None:
    runner.engine.registry = Registry(all=tuple(
        changed if r.id == changed.id else r for r in runner.original))


def hello_ok(runner: Runner, rt, mib: int) -> bool:
    r = runner.run(rt.id, rt.test_file.read_text(), memory_limit=mib * MIB, run_timeout=20000,
                   compile_timeout=30000)
    return r.runtime.stdout == "Hello world!\n"


def smallest(runner: Runner, rt) -> int | None:
    lo, hi = 8, 2048
    if not hello_ok(runner, rt, hi):
        return None
    while hi - lo > 4:
        mid = (lo + hi) // 2
        if hello_ok(runner, rt, mid):
            hi = mid
        else:
            lo = mid
    return hi


def hog(runner: Runner, rt) -> str:
    code = HOGS.get(rt.id) or MORE_HOGS.get(rt.id)
    if code is None:
        return "-"
    r = runner.run(rt.id, code, memory_limit=128 * MIB, run_timeout=20000,
                   compile_timeout=30000).runtime
    if "survived" in r.stdout:
        return f"NOT STOPPED, peak {r.memory // MIB} MiB"
    first = next((line.strip() for line in r.stderr.splitlines() if line.strip()), "")[:60]
    return f"{r.status.value}, peak {r.memory // MIB} MiB, `{first}`"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma list of language ids")
    ap.add_argument("--modes", default="data,address-space")
    ap.add_argument("--reserve", action="store_true",
                    help="instead: per language, the smallest memory_reserve (RLIMIT_DATA = "
                         "128 MiB + reserve) for hello world in its own mode, and its hog")
    args = ap.parse_args()
    settings = load_settings(env={}, data_dir="/tmp/pesto-memory-bench",
                             uid_base=UID_BASE + 530, uid_count=10, workers=1,
                             disable=("cgroups",), memory_max=4096 * MIB)
    runner = Runner(settings)
    try:
        all_rts = runner.engine.registry.installed
        runner.original = all_rts
        only = set(args.only.split(",")) if args.only else None
        if args.reserve:
            print("| language | mode | smallest reserve at 128 MiB | 1 GiB hog at 128 MiB + that reserve |")
            print("|---|---|---|---|")
            for rt in all_rts:
                mode = rt.spec.limits.memory
                if (only and rt.id not in only) or mode == "address-space":
                    continue
                least = smallest_reserve(runner, rt, mode)
                if least is not None:
                    swap(runner, with_mode(rt, mode, least))
                print(f"| {rt.id} | {mode} | "
                      f"{f'{least} MiB' if least is not None else 'over 1 GiB'} | "
                      f"{hog(runner, rt) if least is not None else '-'} |", flush=True)
            return
        print("| language | own mode | mode | smallest limit for hello world | 1 GiB hog at 128 MiB |")
        print("|---|---|---|---|---|")
        for rt in all_rts:
            if only and rt.id not in only:
                continue
            for mode in args.modes.split(","):
                changed = with_mode(rt, mode)
                swap(runner, changed)
                least = smallest(runner, changed)
                mark = "*" if mode == rt.spec.limits.memory else ""
                print(f"| {rt.id} | {rt.spec.limits.memory} | {mode}{mark} | "
                      f"{f'{least} MiB' if least else 'does not start at 2 GiB'} | "
                      f"{hog(runner, changed)} |", flush=True)
    finally:
        runner.close()


if __name__ == "__main__":
    os.environ.setdefault("PESTO_TEST_UID_BASE", str(UID_BASE))
    main()
