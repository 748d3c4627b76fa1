"""Hello world per language: through the engine vs bare (prints a table; not a test).

    .venv/bin/python tests/bench/bench_languages.py [-n 10] [--only go,java] [--disable cgroups]

For every installed language, runs its `test.*` program -n times through the
real Engine (end-to-end `execute()`: work dir, compile stage if any, run
stage, clean-up) alternating with the same argv and environment run bare, as
root, in a fresh scratch dir (compile included), so that machine noise hits
both alike. Prints medians in milliseconds, as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pesto.config import load_settings  # noqa: E402
from pesto.runtimes import load_registry  # noqa: E402
from tests.conftest import Runner  # noqa: E402

LANGUAGES = Path(__file__).resolve().parents[2] / "languages"


def bare(rt) -> float:
    work = tempfile.mkdtemp(prefix="pesto-bare-")
    try:
        name = rt.file_name
        shutil.copy(rt.test_file, os.path.join(work, name))
        values = {"file": name, "dir": work, "lang_dir": str(rt.lang_dir),
                  "stem": name.rsplit(".", 1)[0], "memory_mb": "128"}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               "HOME": work, "TMPDIR": work}
        start = time.monotonic()
        for stage, argv in (("compile", rt.spec.compile), ("run", rt.spec.run)):
            if not argv:
                continue
            values["memory_mb"] = "512" if stage == "compile" else "128"
            env.update({k: v.format_map(values) for k, v in rt.spec.environment.items()})
            p = subprocess.run([a.format_map(values) for a in argv], cwd=work, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True)
            if p.returncode != 0:
                raise RuntimeError(f"{rt.id} {stage} failed bare: {p.stderr[-500:]!r}")
        return (time.monotonic() - start) * 1000
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    ap.add_argument("--only", default="")
    ap.add_argument("--disable", default="")
    ap.add_argument("--uid-base", type=int, default=65000)
    a = ap.parse_args()
    only = {x for x in a.only.split(",") if x}
    registry = load_registry(LANGUAGES)
    # Its own uid range, so that it can run beside a server or the tests.
    settings = load_settings(env={}, data_dir=tempfile.mkdtemp(prefix="pesto-bench-"),
                             uid_base=a.uid_base, uid_count=20,
                             disable=[x for x in a.disable.split(",") if x])
    runner = Runner(settings)
    print("| id | version | engine ms (compile + run stages) | bare ms | engine - bare |")
    print("|---|---|---|---|---|")
    try:
        for rt in registry.installed:
            if only and rt.id not in only:
                continue
            code = rt.test_file.read_text()
            runner.run(rt.id, code)
            bare(rt)   # warm both
            e2e, stages, b = [], [], []
            for _ in range(a.n):
                t = time.monotonic()
                res = runner.run(rt.id, code)
                e2e.append((time.monotonic() - t) * 1000)
                if res.runtime.stdout != "Hello world!\n":
                    raise RuntimeError(f"{rt.id}: {res}")
                stages.append(res.compile.wall_time + res.runtime.wall_time)
                b.append(bare(rt))
            me, ms, mb = (statistics.median(x) for x in (e2e, stages, b))
            print(f"| {rt.id} | {rt.version} | {me:.0f} ({ms:.0f}) | {mb:.0f} | {me - mb:+.0f} |",
                  flush=True)
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
