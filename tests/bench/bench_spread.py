"""spread_cpus: hello world with and without it, against bare (prints a table; not a test).

    .venv/bin/python tests/bench/bench_spread.py [-n 7] [--only java,erlang,cpp]

Two engines with pinned slots (pin_cpus, one slot per CPU) side by side:
"before" has every language's `spread_cpus` turned off (each stage on its
slot's CPU), "after" the languages as shipped. Each round runs the
language's test program end to end on both, then bare (as
bench_languages.py does it), in turn, so that machine noise hits all
alike. Medians in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pesto.config import load_settings  # noqa: E402
from pesto.engine import Engine  # noqa: E402
from pesto.models import ExecuteRequest  # noqa: E402
from pesto.runtimes import Registry  # noqa: E402
from tests.bench.bench_languages import bare  # noqa: E402


def without_spread(registry: Registry) -> Registry:
    return Registry(tuple(attrs.evolve(r, spec=attrs.evolve(r.spec, spread_cpus=False))
                          for r in registry.all))


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=7)
    ap.add_argument("--only", default="java,erlang,cpp")
    ap.add_argument("--uid-base", type=int, default=65100)
    a = ap.parse_args()
    engines = {}
    for i, name in enumerate(("before", "after")):
        settings = load_settings(env={}, data_dir=tempfile.mkdtemp(prefix="pesto-bench-"),
                                 uid_base=a.uid_base + 20 * i, uid_count=20, pin_cpus=True)
        engines[name] = await Engine.start(settings)
    engines["before"].registry = without_spread(engines["before"].registry)
    print("| language | before ms | after ms | bare ms | before vs bare | after vs bare |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        for lang in a.only.split(","):
            rt = engines["after"].registry.resolve(lang, "latest")
            code = rt.test_file.read_text()
            times: dict[str, list[float]] = {"before": [], "after": [], "bare": []}
            for round_ in range(a.n + 1):          # round 0 warms up
                for name, engine in engines.items():
                    t = time.perf_counter()
                    result = await engine.execute(ExecuteRequest(language=lang, code=code),
                                                  uuid.uuid4().hex)
                    elapsed = (time.perf_counter() - t) * 1000
                    await engine.sandbox.settle()
                    if result.runtime.stdout != "Hello world!\n":
                        raise RuntimeError(f"{lang}: {result}")
                    if round_:
                        times[name].append(elapsed)
                b = bare(rt)
                if round_:
                    times["bare"].append(b)
            m = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {lang} | {m['before']:.0f} | {m['after']:.0f} | {m['bare']:.0f} | "
                  f"{(m['before'] / m['bare'] - 1) * 100:+.0f} % | "
                  f"{(m['after'] / m['bare'] - 1) * 100:+.0f} % |", flush=True)
    finally:
        for engine in engines.values():
            await engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
