"""PostgreSQL store and several nodes: latency overhead and throughput scaling (prints numbers).

    .venv/bin/python tests/bench/bench_cluster.py [-n 200] [--jobs 120] [--rounds 3]
                                                  [--clients 4] [--sleep-ms 200]
                                                  [--only latency|throughput]
                                                  [--language python|lua]

Needs a PostgreSQL: $PESTO_TEST_POSTGRES_URL (a server URL, no database), else a
throwaway cluster is started like the tests do (Debian's postgresql package).
Starts, side by side in one run on one machine, real `pesto serve` processes:

- S:  one node on SQLite (1 slot);
- P:  one node on PostgreSQL database A (1 slot);
- Q1, Q2: two nodes on PostgreSQL database B (1 slot each).

1. latency: `POST /api/execute` of `print(1)` (Python, or `--language lua`)
   over one keep-alive connection, alternating S and P, `-n` samples each;
   medians and the difference (goal: PostgreSQL <= +1 ms at the median), and
   the median of the back-to-back differences;
2. throughput: `--clients` keep-alive clients running `--jobs` executes
   against P alone, then against Q1 and Q2 (clients split between them), in
   `--rounds` alternating rounds; two workloads: `print(1)` (CPU-bound: the
   runs, the servers and this load generator share the machine's cores) and
   a program sleeping `--sleep-ms` (slot-bound: what the shared queue itself
   adds or loses). Ratio 2 nodes / 1 node (goal >= 1.8). For `print(1)` the
   same rounds also run it bare, 1 at a time against 2 at a time: what this
   machine's cores give two CPU-bound runs side by side, with nothing else
   (no servers, no database) taking a share: the ceiling of the ratio.

Several instances on one host share its CPUs, so every node runs with
pin_cpus off (each would otherwise deal out the same CPUs to its slot).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
from bench_api import Client, bare_once, parallel  # noqa: E402

from tests.postgres import Postgres  # noqa: E402


class Node:
    def __init__(self, name: str, root: Path, store: str | None, uid_base: int,
                 token: str | None = None) -> None:
        self.name = name
        self.data_dir = root / f"data-{name}"
        self.sandbox = Path(tempfile.mkdtemp(prefix=f"pesto-bench-{name}-", dir="/var/lib"))
        os.chmod(self.sandbox, 0o711)
        env = {**os.environ, "PESTO_UID_BASE": str(uid_base), "PESTO_UID_COUNT": "20",
               "PESTO_SANDBOX_DIR": str(self.sandbox), "PESTO_PIN_CPUS": "false",
               "PESTO_NODE_NAME": name}
        store_args = ["--store", store] if store else []
        cli = [sys.executable, "-m", "pesto.cli"]
        if token is None:
            out = subprocess.run([*cli, "token", "create", "--name", "bench", "--data-dir",
                                  str(self.data_dir), *store_args], check=True,
                                 capture_output=True, text=True, cwd=REPO, env=env)
            token = out.stdout.strip().splitlines()[-1]
        self.token = token
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [*cli, "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning", "--workers", "1", *store_args],
            cwd=REPO, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit(f"node {name} did not start")
            time.sleep(0.1)

    def client(self) -> Client:
        return Client(self.port, self.token)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.sandbox, ignore_errors=True)


class ProgramClient(Client):
    """A Client sending another program (its stdout must still be "1\n")."""

    def __init__(self, node: Node, language: str, code: str) -> None:
        body = json.dumps({"language": language, "code": code}).encode()
        super().__init__(node.port, node.token)
        self.request = self.request.split(b"Content-Length:")[0] + (
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


def sleeper(node: Node, ms: int) -> ProgramClient:
    return ProgramClient(node, "python", f"import time; time.sleep({ms / 1000}); print(1)")


def throughput(nodes: list[Node], clients: int, jobs: int, sleep_ms: int | None) -> float:
    """Executes per second with `clients` connections spread over `nodes`."""
    made = [sleeper(nodes[i % len(nodes)], sleep_ms) if sleep_ms else
            Client(nodes[i % len(nodes)].port, nodes[i % len(nodes)].token)
            for i in range(clients)]
    try:
        return parallel(clients, jobs, lambda i: made[i].execute())
    finally:
        for client in made:
            client.close()


def latency(s: Node, p: Node, language: str, n: int) -> None:
    """1. Latency of print(1), alternating S and P over one connection each."""
    cs, cp = (ProgramClient(node, language, "print(1)") for node in (s, p))
    for _ in range(20):             # warm both (imports, statement caches)
        cs.execute()
        cp.execute()
    lat_s, lat_p = [], []
    for i in range(n):
        first, second = (cs, cp) if i % 2 else (cp, cs)
        t1, t2 = first.execute(), second.execute()
        (lat_s if first is cs else lat_p).append(t1)
        (lat_p if first is cs else lat_s).append(t2)
    cs.close()
    cp.close()
    ms = lambda v: statistics.median(v) * 1000  # noqa: E731
    print(f"latency, {language} print(1) (median of {n}): SQLite {ms(lat_s):.2f} ms, PostgreSQL "
          f"{ms(lat_p):.2f} ms, overhead {ms(lat_p) - ms(lat_s):+.2f} ms (goal <= +1 ms); "
          f"p90 {statistics.quantiles(lat_s, n=10)[-1] * 1000:.2f} / "
          f"{statistics.quantiles(lat_p, n=10)[-1] * 1000:.2f} ms", flush=True)
    # Each pair's S and P ran back to back: the median of their differences is less
    # moved by the machine's speed changing from one minute to the next.
    paired = statistics.median(p_ - s_ for s_, p_ in zip(lat_s, lat_p)) * 1000
    print(f"  median of the {n} paired differences (P - S, back to back): {paired:+.2f} ms",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200, help="latency samples of each store")
    ap.add_argument("--jobs", type=int, default=120, help="executes per throughput round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--sleep-ms", type=int, default=200)
    ap.add_argument("--only", choices=["latency", "throughput"], help="measure one part only")
    ap.add_argument("--language", choices=["python", "lua"], default="python",
                    help="the latency's program, print(1): Lua starts in a tenth of Python's "
                         "time, so the run's own spread hides less of the store's cost")
    ap.add_argument("--uid-base", type=int, default=int(os.environ.get("PESTO_TEST_UID_BASE")
                                                        or 64000) + 600)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pesto-bench-cluster-"))
    pg = Postgres.start()
    nodes: list[Node] = []
    try:
        a, b = pg.new_database(), pg.new_database()
        s = Node("S", root, None, args.uid_base)
        p = Node("P", root, a, args.uid_base + 20)
        q1 = Node("Q1", root, b, args.uid_base + 40)
        q2 = Node("Q2", root, b, args.uid_base + 60, token=q1.token)
        nodes = [s, p, q1, q2]
        print(f"nodes: S (SQLite), P (PostgreSQL, alone), Q1+Q2 (PostgreSQL, shared); "
              f"1 slot each; {os.cpu_count()} CPUs", flush=True)

        if args.only != "throughput":
            latency(s, p, args.language, args.n)
        if args.only == "latency":
            return
        # 2. Throughput, alternating 1 node and 2 nodes.
        for label, sleep_ms in (("print(1)", None), (f"sleep {args.sleep_ms} ms", args.sleep_ms)):
            one, two, bare1, bare2 = [], [], [], []
            jobs = args.jobs if sleep_ms is None else max(8, args.jobs // 3)
            for _ in range(args.rounds):
                one.append(throughput([p], args.clients, jobs, sleep_ms))
                two.append(throughput([q1, q2], args.clients, jobs, sleep_ms))
                if sleep_ms is None:
                    bare1.append(parallel(1, jobs, lambda _: bare_once()))
                    bare2.append(parallel(2, jobs, lambda _: bare_once()))
            m1, m2 = statistics.median(one), statistics.median(two)
            print(f"throughput {label}: 1 node x 1 slot {m1:.1f}/s "
                  f"({', '.join(f'{x:.1f}' for x in one)}), 2 nodes x 1 slot {m2:.1f}/s "
                  f"({', '.join(f'{x:.1f}' for x in two)}): x{m2 / m1:.2f} (goal >= 1.8)",
                  flush=True)
            if bare1:
                b1, b2 = statistics.median(bare1), statistics.median(bare2)
                print(f"  bare {label}, same rounds: 1 at a time {b1:.1f}/s, 2 at a time "
                      f"{b2:.1f}/s: x{b2 / b1:.2f} (the machine's own ceiling for this ratio)",
                      flush=True)
    finally:
        for node in nodes:
            node.stop()
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
