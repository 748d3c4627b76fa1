"""Soak: mixed and hostile traffic against a real `pesto serve` for a long time (not a timed test).

    .venv/bin/python tests/bench/soak.py [--minutes 20] [--kill-at 10] [--users 4] [--workers 2]

Starts `pesto serve` on a free port with a fresh data dir, then `--users`
concurrent clients send, at random, for `--minutes`:

- normal programs in several languages (Python, C, JavaScript, Go, Ruby,
  Java): each reads two random numbers and prints their sum and product, so
  every answer is checked against a value computed here; some through
  `POST /api/execute`, some through `POST /api/jobs` and polling;
- hostile ones through the sandbox: a fork bomb, a memory hog, an output
  flood, a sleep past its timeout; a queued-then-cancelled job;
- bad requests (malformed JSON, unknown language, out-of-range limit, wrong
  media type, unknown job), each expecting its exact status and code.

Every `--interval` seconds it prints one line: requests and wrong answers
in the interval, p50/p99 latency of normal `/api/execute` requests (all
languages, and Python alone), the server's and the spawner's RSS and open
fds, the slot supervisors' RSS, leased uids, left-over work dirs, and the
SQLite file and WAL sizes.

At `--kill-at` minutes the server gets `kill -9` in the middle of the load
and is started again on the same data dir and port. At the end the load
stops, the queue drains, and every job is accounted for: each id a client
was given is in the store with a final status; no job is left queued or
running; no job has more than one finished line in the server logs (none
ran twice); each normal answer was right. Exits 1 when any of that fails.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "bench"))
from bench_api import children, rss_kib  # noqa: E402

from tests.api.conftest import free_port, held_uids  # noqa: E402

SANDBOX_DIR = Path("/var/lib/pesto-sandbox")
FINAL = ("completed", "failed", "cancelled")

# Each reads "a b" and prints a+b and a*b on two lines.
NORMAL = {
    "python": ("a, b = map(int, input().split())\nprint(a + b)\nprint(a * b)\n", 6),
    "c": ("#include <stdio.h>\nint main(void){long long a,b;if(scanf(\"%lld %lld\",&a,&b)!=2)"
          "return 1;printf(\"%lld\\n%lld\\n\",a+b,a*b);return 0;}\n", 3),
    "javascript": ("const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/)"
                   ".map(BigInt);\nconsole.log(String(a + b));\nconsole.log(String(a * b));\n", 3),
    "go": ("package main\nimport \"fmt\"\nfunc main() { var a, b int64; fmt.Scan(&a, &b); "
           "fmt.Println(a + b); fmt.Println(a * b) }\n", 1),
    "ruby": ("a, b = gets.split.map(&:to_i)\nputs a + b\nputs a * b\n", 2),
    "java": ("import java.util.Scanner;\npublic class Main { public static void main(String[] x) {"
             " Scanner s = new Scanner(System.in); long a = s.nextLong(), b = s.nextLong();"
             " System.out.println(a + b); System.out.println(a * b); } }\n", 1),
}

HOSTILE = {
    # name: (body, acceptable runtime statuses)
    "fork_bomb": ({"language": "python", "runTimeout": 500, "code":
                   "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                   "        pass\n"}, {"timeout", "signal", "error", "memory"}),
    "memory_hog": ({"language": "python", "memoryLimit": 64 << 20, "code":
                    "x = []\nwhile True:\n    x.append(bytearray(8 << 20))\n"},
                   {"memory", "error", "signal"}),
    "output_flood": ({"language": "python", "code": "while True:\n    print('x' * 4096)\n"},
                     {"output"}),
    "sleep_past_timeout": ({"language": "python", "runTimeout": 300,
                            "code": "import time\ntime.sleep(30)\n"}, {"timeout"}),
}

BAD = [
    # (name, how to send, expected status, expected code)
    ("malformed_json", dict(content=b'{"language": "python", "code": ', json_ct=True),
     400, "INVALID_REQUEST"),
    ("unknown_language", dict(json={"language": "cobol-2087", "code": "x"}),
     400, "RUNTIME_NOT_FOUND"),
    ("limit_out_of_range", dict(json={"language": "python", "code": "1", "runTimeout": 10 ** 9}),
     400, "INVALID_REQUEST"),
    ("wrong_media_type", dict(content=b"print(1)", ct="text/plain"),
     415, "UNSUPPORTED_MEDIA_TYPE"),
]


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.data_dir = tmp / "data"
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.uids = (args.uid_base, args.uid_count)
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self.token = ""
        self.down = False                      # between the kill and the restart
        self.stop = False
        self.rng = random.Random(args.seed)
        # Accounting.
        self.given: dict[str, str] = {}        # job id -> kind, for every id a client was given
        self.expected: dict[str, str] = {}     # async normal job id -> expected stdout
        self.wrong: list[str] = []
        self.starved: list[str] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.lat: list[tuple[float, str, float]] = []   # (when, language, seconds)
        self.interval_counts: collections.Counter[str] = collections.Counter()

    # --- server ----------------------------------------------------------------

    def cli(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pesto.cli", *args], cwd=REPO,
                              capture_output=True, text=True, check=True, **kw)

    def start(self) -> None:
        log = self.tmp / f"serve-{len(self.logs)}.log"
        self.logs.append(log)
        env = {**os.environ, "PESTO_UID_BASE": str(self.uids[0]),
               "PESTO_UID_COUNT": str(self.uids[1])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pesto.cli", "serve", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             str(self.args.workers), "--queue-size", "200"],
            cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit("pesto serve did not start:\n" + log.read_text())

    # --- traffic ---------------------------------------------------------------

    def numbers(self) -> tuple[str, str]:
        a, b = self.rng.randrange(-10 ** 6, 10 ** 6), self.rng.randrange(0, 10 ** 6)
        return f"{a} {b}\n", f"{a + b}\n{a * b}\n"

    def pick_language(self) -> str:
        names = list(NORMAL)
        return self.rng.choices(names, weights=[NORMAL[n][1] for n in names])[0]

    def note(self, kind: str) -> None:
        self.counts[kind] += 1
        self.interval_counts[kind] += 1

    def bad(self, what: str) -> None:
        self.wrong.append(what)
        self.interval_counts["WRONG"] += 1
        print("WRONG:", what, flush=True)

    async def user(self, client: httpx.AsyncClient) -> None:
        ops = ([self.execute_normal] * 8 + [self.job_normal] * 3 + [self.hostile] * 3
               + [self.cancel] + [self.bad_request] * 2)
        while not self.stop:
            op = self.rng.choice(ops)
            try:
                await op(client)
            except (httpx.TransportError, OSError) as exc:
                if not self.down:
                    self.bad(f"{op.__name__}: {type(exc).__name__} {exc} while the server was up")
                self.note("transport_error")
                await asyncio.sleep(0.2)

    async def execute_normal(self, client: httpx.AsyncClient) -> None:
        language = self.pick_language()
        stdin, expected = self.numbers()
        started = time.monotonic()
        r = await client.post("/api/execute", json={"language": language,
                                                    "code": NORMAL[language][0], "stdin": stdin})
        took = time.monotonic() - started
        if r.status_code != 200:
            return self.bad(f"execute {language}: {r.status_code} {r.text[:200]}")
        body = r.json()
        self.given[body["id"]] = "execute"
        self.check_normal(body["id"], language, body, expected)
        self.lat.append((time.monotonic(), language, took))

    def check_normal(self, job_id: str, language: str, result: dict, expected: str) -> None:
        run = result["runtime"]
        if run["status"] == "ok" and run["stdout"] == expected:
            return self.note("normal")
        if run["status"] == "timeout" and run["cpuTime"] < run["wallTime"] // 2:
            # Stopped at its wall-clock limit having had less than half of it
            # on a CPU: the machine was overloaded, not the program wrong.
            # Counted apart and shown, never as right.
            self.starved.append(f"{language} {job_id}: cpu {run['cpuTime']} ms "
                                f"of wall {run['wallTime']} ms")
            print(f"STARVED: {self.starved[-1]}", flush=True)
            return self.note("normal_starved")
        stage = {k: run[k] for k in ("status", "exitCode", "signal", "wallTime", "cpuTime",
                                     "memory", "truncated")}
        self.bad(f"{language} {job_id}: compile {result['compile']['status']}, run {stage}, "
                 f"stdout {run['stdout'][:80]!r}, stderr {run['stderr'][:300]!r}")

    async def job_normal(self, client: httpx.AsyncClient) -> None:
        language = self.pick_language()
        stdin, expected = self.numbers()
        r = await client.post("/api/jobs", json={"language": language,
                                                 "code": NORMAL[language][0], "stdin": stdin})
        if r.status_code != 202:
            return self.bad(f"job {language}: {r.status_code} {r.text[:200]}")
        job_id = r.json()["id"]
        self.given[job_id] = "job"
        self.expected[job_id] = expected
        while not self.stop:
            await asyncio.sleep(0.2)
            r = await client.get(f"/api/jobs/{job_id}")
            if r.status_code != 200:
                return self.bad(f"poll {job_id}: {r.status_code} {r.text[:200]}")
            body = r.json()
            if body["status"] in FINAL:
                # Verified once more at the end, against the store.
                self.note("job_" + body["status"])
                return

    async def hostile(self, client: httpx.AsyncClient) -> None:
        name = self.rng.choice(list(HOSTILE))
        request, statuses = HOSTILE[name]
        r = await client.post("/api/execute", json=request)
        if r.status_code != 200:
            return self.bad(f"{name}: {r.status_code} {r.text[:200]}")
        body = r.json()
        self.given[body["id"]] = name
        if body["runtime"]["status"] not in statuses:
            return self.bad(f"{name}: runtime status {body['runtime']['status']}")
        self.note(name)

    async def cancel(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/api/jobs", json={"language": "python", "runTimeout": 5000,
                                                 "code": "import time\ntime.sleep(10)\n"})
        if r.status_code != 202:
            return self.bad(f"cancel/create: {r.status_code} {r.text[:200]}")
        job_id = r.json()["id"]
        self.given[job_id] = "cancel"
        await asyncio.sleep(self.rng.uniform(0.05, 0.5))
        r = await client.delete(f"/api/jobs/{job_id}")
        if r.status_code != 200 or r.json()["status"] != "cancelled":
            return self.bad(f"cancel {job_id}: {r.status_code} {r.text[:200]}")
        self.note("cancelled")

    async def bad_request(self, client: httpx.AsyncClient) -> None:
        if self.rng.random() < 0.2:
            name, status, code = "unknown_job", 404, "NOT_FOUND"
            r = await client.get("/api/jobs/" + "0" * 32)
        else:
            name, how, status, code = self.rng.choice(BAD)
            headers = {}
            if "ct" in how:
                headers["content-type"] = how["ct"]
            elif how.get("json_ct"):
                headers["content-type"] = "application/json"
            r = await client.post("/api/execute", headers=headers,
                                  **{k: v for k, v in how.items() if k in ("json", "content")})
        if r.status_code != status or r.json().get("code") != code:
            return self.bad(f"{name}: {r.status_code} {r.text[:200]}")
        self.note("bad_request")

    # --- watching --------------------------------------------------------------

    def sample(self) -> dict[str, float]:
        assert self.proc is not None
        server = self.proc.pid
        spawner = next((c for c in children(server) if b"pesto.sandbox.spawner"
                        in Path(f"/proc/{c}/cmdline").read_bytes()), None)
        supervisors = children(spawner) if spawner else []
        lo, n = self.uids
        work = SANDBOX_DIR / "work"
        workdirs = [d for d in os.listdir(work) if d.isdigit() and lo <= int(d) < lo + n] \
            if work.exists() else []
        db = self.data_dir / "pesto.sqlite3"
        wal = self.data_dir / "pesto.sqlite3-wal"
        return {
            "server_rss": rss_kib(server) / 1024, "server_fds": fds(server),
            "spawner_rss": rss_kib(spawner) / 1024 if spawner else -1,
            "spawner_fds": fds(spawner) if spawner else -1,
            "sup_rss": sum(rss_kib(p) for p in supervisors) / 1024,
            "uids": len(held_uids(SANDBOX_DIR, lo, n)), "workdirs": len(workdirs),
            "db_kib": db.stat().st_size / 1024 if db.exists() else 0,
            "wal_kib": wal.stat().st_size / 1024 if wal.exists() else 0,
        }

    def jobs_in_store(self) -> dict[str, tuple[str, str | None, str | None]]:
        db = sqlite3.connect(f"file:{self.data_dir / 'pesto.sqlite3'}?mode=ro", uri=True)
        try:
            return {row[0]: (row[1], row[2], row[3]) for row in
                    db.execute("SELECT id, status, result, error FROM jobs")}
        finally:
            db.close()

    async def watch(self, t0: float) -> None:
        header = ("min  reqs  wrong  p50ms  p99ms  py_p99  server_MiB fds  spawner_MiB fds  "
                  "slots_MiB  uids  workdirs  db_KiB  wal_KiB  jobs")
        print(header, flush=True)
        minute = 0
        killed = False
        since = t0
        while not self.stop:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if (not killed and self.args.kill_at is not None
                    and now - t0 >= self.args.kill_at * 60):
                killed = True
                await self.kill_and_restart()
            if now - since < self.args.interval:
                continue
            minute += 1
            recent = [(lang, s) for (t, lang, s) in self.lat if since <= t < now]
            allms = [s * 1000 for _, s in recent]
            pyms = [s * 1000 for lang, s in recent if lang == "python"]
            s = self.sample()
            reqs = sum(v for k, v in self.interval_counts.items() if k != "WRONG")
            print(f"{minute:3d} {reqs:5d} {self.interval_counts['WRONG']:6d} "
                  f"{percentile(allms, .5):6.0f} {percentile(allms, .99):6.0f} "
                  f"{percentile(pyms, .99):7.0f}  {s['server_rss']:9.1f} {s['server_fds']:4.0f}"
                  f"  {s['spawner_rss']:10.1f} {s['spawner_fds']:4.0f}  {s['sup_rss']:9.1f}"
                  f"  {s['uids']:4d}  {s['workdirs']:8d}  {s['db_kib']:6.0f}  {s['wal_kib']:7.0f}"
                  f"  {len(self.given):5d}", flush=True)
            self.interval_counts.clear()
            since = now

    async def kill_and_restart(self) -> None:
        assert self.proc is not None
        self.down = True
        running = sum(1 for st, _, _ in self.jobs_in_store().values() if st == "running")
        queued = sum(1 for st, _, _ in self.jobs_in_store().values() if st == "queued")
        print(f"--- kill -9 of the server (pid {self.proc.pid}) with {running} job(s) running "
              f"and {queued} queued in the store", flush=True)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        await asyncio.sleep(1)
        started = time.monotonic()
        await asyncio.to_thread(self.start)
        print(f"--- restarted (pid {self.proc.pid}) in {time.monotonic() - started:.1f} s",
              flush=True)
        # Requests in flight at the kill fail; give them a moment to notice.
        await asyncio.sleep(2)
        self.down = False

    # --- the run ---------------------------------------------------------------

    async def run(self) -> int:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        out = self.cli("token", "create", "--name", "soak", "--data-dir", str(self.data_dir))
        self.token = out.stdout.strip().splitlines()[-1]
        self.start()
        headers = {"X-Pesto-Token": self.token}
        t0 = time.monotonic()
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60) as client:
            watcher = asyncio.create_task(self.watch(t0), name="watch")
            users = [asyncio.create_task(self.user(client), name=f"user-{i}")
                     for i in range(self.args.users)]
            await asyncio.sleep(self.args.minutes * 60)
            self.stop = True
            await asyncio.gather(*users)
            await watcher
        return self.account()

    def account(self) -> int:
        # Drain: nothing queued or running may stay in the store.
        deadline = time.monotonic() + 120
        while True:
            jobs = self.jobs_in_store()
            open_jobs = [j for j, (st, _, _) in jobs.items() if st not in FINAL]
            if not open_jobs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        idle = self.sample()
        # The restarted server's own count of what it finished (GET /metrics).
        from prometheus_client.parser import text_string_to_metric_families
        counted: collections.Counter[str] = collections.Counter()
        for family in text_string_to_metric_families(httpx.get(self.url + "/metrics").text):
            for sample in family.samples:
                if sample.name == "pesto_jobs_total":
                    counted[sample.labels["status"]] += int(sample.value)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        problems = list(self.wrong)
        if open_jobs:
            problems.append(f"{len(open_jobs)} job(s) never finished: {open_jobs[:5]}")
        lost = [j for j in self.given if j not in jobs]
        if lost:
            problems.append(f"{len(lost)} job(s) given to a client are not in the store: {lost[:5]}")
        for job_id, expected in self.expected.items():
            status, result, error = jobs.get(job_id, ("missing", None, None))
            if status == "completed":
                wrong_before = len(self.wrong)
                self.check_normal(job_id, "job", json.loads(result), expected)
                problems.extend(self.wrong[wrong_before:])
            elif not (status == "failed" and error and "INTERRUPTED" in error):
                problems.append(f"job {job_id}: {status} {error}")
        # A job's finished line is logged once per run of it.
        finished = collections.Counter()
        for log in self.logs:
            for match in re.finditer(r" job ([0-9a-f]{32}) token=", log.read_text()):
                finished[match.group(1)] += 1
        twice = [j for j, n in finished.items() if n > 1]
        if twice:
            problems.append(f"{len(twice)} job(s) ran twice: {twice[:5]}")
        by_status = collections.Counter(st for st, _, _ in jobs.values())
        interrupted = sum(1 for st, _, err in jobs.values()
                          if st == "failed" and err and "INTERRUPTED" in err)
        unknown = len(set(jobs) - set(self.given))
        latencies = [s * 1000 for _, _, s in self.lat]
        print()
        print(f"requests by kind: {dict(sorted(self.counts.items()))}")
        print(f"jobs in the store: {len(jobs)} {dict(by_status)}; {interrupted} failed "
              f"INTERRUPTED by the kill; {unknown} never answered (in flight at the kill)")
        print(f"ids given to clients: {len(self.given)}, all in the store: {not lost}; "
              f"ran twice: {len(twice)}; left unfinished: {len(open_jobs)}")
        print(f"normal runs stopped at their wall-clock limit while starved of CPU: "
              f"{len(self.starved)}" + "".join(f"\n  {s}" for s in self.starved))
        print(f"normal /api/execute latency over the run: n={len(latencies)} "
              f"p50={percentile(latencies, .5):.0f} ms p99={percentile(latencies, .99):.0f} ms "
              f"mean={statistics.fmean(latencies) if latencies else 0:.0f} ms")
        print(f"pesto_jobs_total of the restarted server by status: {dict(counted)}")
        print("idle at the end: " + ", ".join(f"{k}={v:.1f}" for k, v in idle.items()))
        if problems:
            print(f"\nFAILED: {len(problems)} problem(s)")
            for p in problems[:50]:
                print("  -", p)
            return 1
        print("\nOK: every normal answer right, every job accounted for, none ran twice")
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--kill-at", type=float, default=10,
                    help="minute of the kill -9 and restart (negative: never)")
    ap.add_argument("--interval", type=float, default=60, help="seconds between printed lines")
    ap.add_argument("--users", type=int, default=4, help="concurrent clients")
    ap.add_argument("--workers", type=int, default=2, help="run slots of the server")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--uid-base", type=int,
                    default=int(os.environ.get("PESTO_TEST_UID_BASE") or 62000) + 700)
    ap.add_argument("--uid-count", type=int, default=40)
    args = ap.parse_args()
    if args.kill_at is not None and args.kill_at < 0:
        args.kill_at = None
    tmp = Path(tempfile.mkdtemp(prefix="pesto-soak-"))
    code = asyncio.run(Soak(args, tmp).run())
    if code == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept for a look: {tmp} (data dir, server logs)")
    return code


if __name__ == "__main__":
    sys.exit(main())
