"""Engine overhead per run over the bare interpreter (prints numbers; not a test).

    .venv/bin/python tests/bench/bench_engine.py [-n 200] [--disable cgroups,landlock]

Runs Python `print(1)` through the engine and `/usr/bin/python3 -E -s main.py`
bare (posix_spawn + waitpid, output to a pipe), alternating the two so that
machine noise hits both alike, and prints medians and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import sys
import uuid

from pesto.config import load_settings
from pesto.engine import Engine
from pesto.models import ExecuteRequest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bare import bare_once as _bare_once  # noqa: E402


def bare_once(path: str) -> float:
    return _bare_once(["/usr/bin/python3", "-E", "-s", path])


async def throughput(engine: Engine, req: ExecuteRequest, seconds: float) -> None:
    """Runs/s through the engine with 8 concurrent requests, against bare runs
    of the same interpreter with as many in parallel as there are CPUs."""
    import concurrent.futures
    deadline = time.perf_counter() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await engine.execute(req, uuid.uuid4().hex)
            done += 1
    t = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(8)))
    eng = done / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write("print(1)\n")
        n = os.cpu_count() or 1
        count = 0
        t = time.perf_counter()
        end = t + seconds
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            def loop() -> int:
                k = 0
                while time.perf_counter() < end:
                    bare_once(path)
                    k += 1
                return k
            count = sum(pool.map(lambda _: loop(), range(n)))
        bare = count / (time.perf_counter() - t)
    print(f"throughput: engine {eng:.1f} runs/s (8 concurrent), bare {bare:.1f} runs/s "
          f"({n} parallel): ratio {eng / bare:.2f}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--disable", default="", help="comma-separated layers to turn off")
    ap.add_argument("--throughput", type=float, default=0,
                    help="also measure runs/s with 8 concurrent requests for this many seconds")
    args = ap.parse_args()
    disable = tuple(x for x in args.disable.split(",") if x)
    engine = await Engine.start(load_settings(disable=disable))
    req = ExecuteRequest(language="python", code="print(1)")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write("print(1)\n")
        for _ in range(10):   # warm caches on both sides
            bare_once(path)
            await engine.execute(req, "warm")
        eng, bare, inner = [], [], []
        for _ in range(args.n):
            bare.append(bare_once(path))
            t = time.perf_counter()
            res = await engine.execute(req, uuid.uuid4().hex)
            eng.append(time.perf_counter() - t)
            inner.append(res.runtime.wall_time / 1000)
            assert res.runtime.stdout == "1\n", res
    if args.throughput:
        await throughput(engine, req, args.throughput)
    await engine.close()
    layers = ", ".join(k for k, v in engine.layers.items() if v["enabled"])
    med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    p90 = lambda xs: statistics.quantiles(xs, n=10)[-1] * 1000  # noqa: E731
    print(f"layers on: {layers}")
    print(f"runs: {args.n} each, alternating")
    print(f"bare python3 print(1):   median {med(bare):7.2f} ms   p90 {p90(bare):7.2f} ms")
    print(f"engine python print(1):  median {med(eng):7.2f} ms   p90 {p90(eng):7.2f} ms")
    print(f"  (stage wallTime as reported: median {med(inner):.2f} ms)")
    print(f"overhead at the median:  {med(eng) - med(bare):+.2f} ms  "
          f"(ratio {med(eng) / med(bare):.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
