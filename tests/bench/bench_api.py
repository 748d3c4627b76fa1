"""HTTP service overhead, throughput and memory (prints numbers; not a timed test).

    .venv/bin/python tests/bench/bench_api.py [-n 300] [--clients 8] [--throughput-runs 1500]
                                              [--rounds 5] [--rss-requests 10000] [--workers N]

Starts a real `pesto serve` on a free port with a fresh data dir and token,
then, in one run on one machine:

1. latency: `POST /api/execute` of Python `print(1)` over one keep-alive
   connection, alternating with a bare `/usr/bin/python3 -c 'print(1)'`
   (posix_spawn + pipe + waitpid) and with the same request given straight to
   an `Engine` in this process, so that machine noise hits all alike; medians
   and differences (goal: overhead <= 3 ms at the median). The API-over-engine
   difference is what the HTTP layer, auth, store and scheduler cost;
2. throughput: `--clients` keep-alive clients against the same number of
   bare runs in parallel, in `--rounds` rounds that alternate the two sides
   (goal: >= 0.75 of bare);
3. memory: the server's RSS (and its sandbox spawner's) every 1,000 of
   `--rss-requests` executes (goal: flat, <= 150 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bare import bare_once as _bare_once  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BODY = json.dumps({"language": "python", "code": "print(1)"}).encode()
BARE = ["/usr/bin/python3", "-c", "print(1)"]


def bare_once() -> float:
    return _bare_once(BARE)


class Client:
    """One keep-alive HTTP/1.1 connection on a plain socket.

    The load generator shares the machine's CPUs with the server, so it is
    kept as light as a Python client can be (a request prebuilt once, the
    response read by its Content-Length), like wrk or ab would be: what is
    measured is the server. Every answer is still checked in full.
    """

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.request = (f"POST /api/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Content-Type: application/json\r\nX-Pesto-Token: {token}\r\n"
                        f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
        self.sock: socket.socket | None = None
        self.buf = b""

    def _connect(self) -> None:
        self.close()
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _exchange(self) -> tuple[int, bytes]:
        """Send the request, return (status, body); ConnectionError if closed."""
        assert self.sock is not None
        self.sock.sendall(self.request)
        buf = self.buf
        while (end := buf.find(b"\r\n\r\n")) < 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed by the server")
            buf += chunk
        head = buf[:end].decode("latin-1").lower()
        status = int(head.split(None, 2)[1])
        length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        body_end = end + 4 + length
        while len(buf) < body_end:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("closed by the server")
            buf += chunk
        self.buf = buf[body_end:]
        return status, buf[end + 4:body_end]

    def execute(self) -> float:
        t = time.perf_counter()
        try:
            if self.sock is None:
                self._connect()
                t = time.perf_counter()
            status, data = self._exchange()
        except (BrokenPipeError, ConnectionError):
            # The server closes keep-alive connections idle for 5 s (between phases).
            self._connect()
            t = time.perf_counter()
            status, data = self._exchange()
        elapsed = time.perf_counter() - t
        if status != 200:
            raise RuntimeError(f"{status}: {data[:300]!r}")
        run = json.loads(data)["runtime"]
        if run["stdout"] != "1\n":
            raise RuntimeError(f"unexpected result: {run}")
        return elapsed

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def parallel(workers: int, total: int, work) -> float:
    """Runs per second of `work()` called `total` times by `workers` threads."""
    counter = iter(range(total))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def loop(state) -> None:
        try:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                work(state)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    states = [i for i in range(workers)]
    threads = [threading.Thread(target=loop, args=(s,)) for s in states]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise errors[0]
    return total / elapsed


def start_server(data_dir: Path, workers: int | None) -> tuple[subprocess.Popen, int, str]:
    cli = [sys.executable, "-m", "pesto.cli"]
    out = subprocess.run([*cli, "token", "create", "--name", "bench", "--data-dir", str(data_dir)],
                         check=True, capture_output=True, text=True, cwd=REPO)
    token = out.stdout.strip().splitlines()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    extra = ["--workers", str(workers)] if workers else []
    proc = subprocess.Popen([*cli, "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", *extra], cwd=REPO)
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port, token
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("pesto serve did not start")
        time.sleep(0.1)


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=300, help="latency samples of each side")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--throughput-runs", type=int, default=1500, help="runs of each side")
    ap.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds")
    ap.add_argument("--rss-requests", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=None, help="server workers (default: CPUs)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="pesto-bench-"))
    proc, port, token = start_server(tmp / "data", args.workers)
    med = lambda xs: statistics.median(xs) * 1000  # noqa: E731
    p90 = lambda xs: statistics.quantiles(xs, n=10)[-1] * 1000  # noqa: E731
    try:
        from pesto.config import load_settings
        from pesto.engine import Engine
        from pesto.models import ExecuteRequest

        loop = asyncio.new_event_loop()
        engine = loop.run_until_complete(Engine.start(load_settings(env={})))
        request = ExecuteRequest(language="python", code="print(1)")

        def engine_once() -> float:
            t = time.perf_counter()
            result = loop.run_until_complete(engine.execute(request, "bench"))
            elapsed = time.perf_counter() - t
            assert result.runtime.stdout == "1\n", result
            return elapsed

        client = Client(port, token)
        for _ in range(20):                  # warm caches on every side
            bare_once()
            engine_once()
            client.execute()
        api, bare, direct = [], [], []
        sides = [(bare, bare_once), (direct, engine_once), (api, client.execute)]
        for _ in range(args.n):
            random.shuffle(sides)            # no side always runs right after another
            for samples, once in sides:
                samples.append(once())
        client.close()
        loop.run_until_complete(engine.close())
        loop.close()
        print(f"machine: {os.cpu_count()} CPUs; server workers: {args.workers or os.cpu_count()}")
        print(f"latency ({args.n} each, interleaved in random order, one keep-alive connection)")
        print(f"  bare python3 -c 'print(1)':  median {med(bare):7.2f} ms   p90 {p90(bare):7.2f} ms")
        print(f"  Engine.execute in-process:   median {med(direct):7.2f} ms   p90 {p90(direct):7.2f} ms")
        print(f"  POST /api/execute print(1):  median {med(api):7.2f} ms   p90 {p90(api):7.2f} ms")
        print(f"  overhead at the median:      {med(api) - med(bare):+7.2f} ms   (goal <= 3 ms)")
        print(f"    of which the engine:       {med(direct) - med(bare):+7.2f} ms")
        print(f"    of which HTTP/auth/store:  {med(api) - med(direct):+7.2f} ms")

        clients = [Client(port, token) for _ in range(args.clients)]
        # Rounds alternate the two sides (in a random order each round), so
        # that a slower minute of this shared machine hits both alike.
        per_round = max(1, args.throughput_runs // args.rounds)
        api_time = bare_time = 0.0
        cpu_before = cpu_seconds(proc.pid)
        ratios = []
        for _ in range(args.rounds):
            sides = [("api", lambda i: clients[i].execute()), ("bare", lambda i: bare_once())]
            random.shuffle(sides)
            rates = {}
            for name, work in sides:
                rates[name] = parallel(args.clients, per_round, work)
            api_time += per_round / rates["api"]
            bare_time += per_round / rates["bare"]
            ratios.append(rates["api"] / rates["bare"])
        server_cpu = (cpu_seconds(proc.pid) - cpu_before) / (per_round * args.rounds)
        api_rate = per_round * args.rounds / api_time
        bare_rate = per_round * args.rounds / bare_time
        print(f"throughput ({args.clients} clients, {args.rounds} alternating rounds of "
              f"{per_round} runs each side)")
        print(f"  bare parallel:               {bare_rate:7.1f} runs/s")
        print(f"  POST /api/execute:           {api_rate:7.1f} runs/s")
        print(f"  ratio:                       {api_rate / bare_rate:7.2f}        (goal >= 0.75)")
        print(f"  ratio per round:             {' '.join(f'{r:.2f}' for r in ratios)}")
        print(f"  server process CPU per request: {server_cpu * 1000:.2f} ms "
              "(HTTP, auth, store, scheduler and the engine's client side)")

        if args.rss_requests:
            print(f"memory over {args.rss_requests} more requests ({args.clients} clients)")
            spawner = children(proc.pid)
            start = rss_kib(proc.pid)
            print(f"  start: server {start / 1024:6.1f} MiB"
                  + "".join(f", child {c} {rss_kib(c) / 1024:5.1f} MiB" for c in spawner))
            done = 0
            step = 1000
            while done < args.rss_requests:
                batch = min(step, args.rss_requests - done)
                rate = parallel(args.clients, batch, lambda i: clients[i].execute())
                done += batch
                print(f"  after {done:6d}: server {rss_kib(proc.pid) / 1024:6.1f} MiB"
                      + "".join(f", child {c} {rss_kib(c) / 1024:5.1f} MiB" for c in spawner)
                      + f"   ({rate:.0f} req/s)")
            end = rss_kib(proc.pid)
            print(f"  server RSS {start / 1024:.1f} -> {end / 1024:.1f} MiB "
                  f"({(end - start) / 1024:+.1f} MiB; goal flat, <= 150 MiB)")
        for c in clients:
            c.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
