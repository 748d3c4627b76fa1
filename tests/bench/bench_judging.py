"""Judging: one request with N test cases against N separate /api/execute calls
(prints a table; not a test).

    .venv/bin/python tests/bench/bench_judging.py [-n 3] [--workers 2]

Starts a real `pesto serve` (uvicorn, real HTTP, the real sandbox) and, -n
times, alternating so that machine noise hits all alike:

- C, 100 cases: one judged request vs 100 separate calls sent one after
  another, and vs the same 100 calls sent `workers` at a time;
- Java, 20 cases: likewise;
- per-case cost: a judged C request with 100 cases minus one with 1 case
  (the median of five: it carries the compile's noise), over 99, on a
  one-worker server (no parallelism: the cost of a case, not
  of a slot), against running the compiled program bare (posix_spawn, stdin
  piped, output read, reaped) in a scratch dir as root; and the same
  difference on the default server, where a job's cases run side by side.

Medians in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.api.conftest import Server, pesto_cli  # noqa: E402
from tests.bench.bare import bare_once  # noqa: E402

C_CODE = r"""
#include <stdio.h>
int main(void) { long a, b; if (scanf("%ld %ld", &a, &b) != 2) return 1; printf("%ld\n", a + b); return 0; }
"""
JAVA_CODE = """
import java.util.Scanner;
public class Main {
    public static void main(String[] args) {
        Scanner s = new Scanner(System.in);
        System.out.println(s.nextLong() + s.nextLong());
    }
}
"""
UIDS = (int(os.environ.get("PESTO_TEST_UID_BASE") or 62000) + 600, 60)


def cases(n: int) -> list[dict]:
    return [{"stdin": f"{i} {i}", "expectedOutput": str(2 * i)} for i in range(n)]


def judged(client: httpx.Client, language: str, code: str, n: int) -> float:
    t = time.perf_counter()
    r = client.post("/api/execute", json={"language": language, "code": code,
                                          "testCases": cases(n)})
    elapsed = time.perf_counter() - t
    body = r.json()
    assert r.status_code == 200 and body["summary"]["passed"] == n, r.text[:500]
    return elapsed * 1000


def separate(client: httpx.Client, language: str, code: str, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        r = client.post("/api/execute", json={"language": language, "code": code,
                                              "stdin": f"{i} {i}"})
        assert r.json()["runtime"]["stdout"] == f"{2 * i}\n", r.text[:500]
    return (time.perf_counter() - t) * 1000


def separate_parallel(url: str, headers: dict, language: str, code: str, n: int,
                      width: int) -> float:
    async def run() -> float:
        sem = asyncio.Semaphore(width)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as c:
            async def one(i: int) -> None:
                async with sem:
                    r = await c.post("/api/execute", json={"language": language, "code": code,
                                                           "stdin": f"{i} {i}"})
                    assert r.json()["runtime"]["stdout"] == f"{2 * i}\n", r.text[:500]
            t = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(n)))
            return (time.perf_counter() - t) * 1000
    return asyncio.run(run())


def start(data_dir: Path, workers: int) -> tuple[Server, dict]:
    out = pesto_cli("token", "create", "--name", f"bench{workers}", "--data-dir", str(data_dir))
    headers = {"X-Pesto-Token": out.stdout.strip().splitlines()[-1]}
    return Server(data_dir, "--workers", str(workers), "--log-level", "warning",
                  uids=UIDS), headers


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-java", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pesto-bench-judging-"))
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)

    try:
        # Ratios: the default server.
        server, headers = start(tmp / "data", args.workers)
        try:
            with httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
                judged(client, "c", C_CODE, 2)            # warm-up
                for _ in range(args.n):
                    one = statistics.median(judged(client, "c", C_CODE, 1) for _ in range(5))
                    many = judged(client, "c", C_CODE, 100)
                    add("C: 100 cases, one judged request", many)
                    add(f"per case, judged ({args.workers} workers: cases side by side)",
                        (many - one) / 99)
                    add("C: 100 separate calls, one at a time",
                        separate(client, "c", C_CODE, 100))
                    add(f"C: 100 separate calls, {args.workers} at a time",
                        separate_parallel(server.url, headers, "c", C_CODE, 100, args.workers))
                    if args.skip_java:
                        continue
                    add("Java: 20 cases, one judged request",
                        judged(client, "java", JAVA_CODE, 20))
                    add("Java: 20 separate calls, one at a time",
                        separate(client, "java", JAVA_CODE, 20))
                    add(f"Java: 20 separate calls, {args.workers} at a time",
                        separate_parallel(server.url, headers, "java", JAVA_CODE, 20,
                                          args.workers))
        finally:
            server.stop()
        # Per-case cost: one worker, so cases run one after another.
        scratch = tmp / "bare"
        scratch.mkdir()
        (scratch / "main.c").write_text(C_CODE)
        subprocess.run(["gcc", "-std=gnu17", "-O2", "-o", str(scratch / "main"),
                        str(scratch / "main.c")], check=True)
        server, headers = start(tmp / "data1", 1)
        try:
            with httpx.Client(base_url=server.url, headers=headers, timeout=600) as client:
                judged(client, "c", C_CODE, 2)
                for _ in range(args.n):
                    one = statistics.median(judged(client, "c", C_CODE, 1) for _ in range(5))
                    many = judged(client, "c", C_CODE, 100)
                    add("per case, judged (one worker)", (many - one) / 99)
                    bare = [bare_once([str(scratch / "main")], f"{i} {i}".encode()) * 1000
                            for i in range(100)]
                    add("per case, bare run of the compiled program", statistics.median(bare))
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {name: statistics.median(values) for name, values in rows.items()}
    print(f"\n{args.n} rounds, {args.workers} worker(s), medians in ms\n")
    print("| measurement | median ms |")
    print("|---|---:|")
    for name, value in med.items():
        print(f"| {name} | {value:.1f} |")
    print()
    for lang, n in (("C", 100), ("Java", 20)):
        one = med.get(f"{lang}: {n} cases, one judged request")
        if one is None:
            continue
        seq = med[f"{lang}: {n} separate calls, one at a time"]
        par = med[f"{lang}: {n} separate calls, {args.workers} at a time"]
        print(f"{lang}: judged is {seq / one:.1f}x faster than separate calls one at a time, "
              f"{par / one:.1f}x faster than {args.workers} at a time")
    overhead = med["per case, judged (one worker)"] - med[
        "per case, bare run of the compiled program"]
    print(f"per-case overhead over bare: {overhead:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
