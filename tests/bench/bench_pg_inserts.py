"""PostgreSQL store: job inserts per second of one token from many clients (prints numbers).

    .venv/bin/python tests/bench/bench_pg_inserts.py [--clients 8] [-n 100] [--rounds 3]

A platform often sends every job with its one token, from every node. Each
insert (`pesto_submit`, as a node calls it) counts one execution of its
token; this measures whether the inserts of one token wait for each other,
side by side in the same rounds:

- one token, `--clients` connections inserting at once;
- `--clients` tokens, one connection each (nothing shared but the table);
- one token, one connection (no concurrency at all).

Needs a PostgreSQL: $PESTO_TEST_POSTGRES_URL (a server URL, no database), else
a throwaway cluster is started like the tests do, but with durable commits
(PostgreSQL's defaults: fsync and synchronous_commit on), since what a row
lock held until the commit costs depends on the commit's flush.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402

from pesto.clock import utcnow  # noqa: E402
from pesto.pgstore import PgStore  # noqa: E402
from tests.postgres import Postgres  # noqa: E402

SUBMIT = "SELECT pesto_submit($1, $2, $3, $4, $5, $6, $7)"


async def inserts_per_second(conns: list[asyncpg.Connection], tokens: list[int], n: int) -> float:
    async def client(conn: asyncpg.Connection, token: int) -> None:
        for _ in range(n):
            verdict = await conn.fetchval(SUBMIT, uuid.uuid4().hex, token, "running", "{}",
                                          utcnow(), "bench", None)
            assert verdict == "ok", verdict
    started = time.perf_counter()
    await asyncio.gather(*(client(c, t) for c, t in zip(conns, tokens)))
    return len(conns) * n / (time.perf_counter() - started)


async def bench(url: str, clients: int, n: int, rounds: int) -> None:
    store = await PgStore.open(url)
    tokens = []
    for i in range(clients):
        token = await store.create_token(f"bench{i}", f"{i:064d}")
        assert token is not None
        tokens.append(token.id)
    await store.close()
    conns = [await asyncpg.connect(url) for _ in range(clients)]
    try:
        durable = (await conns[0].fetchval("SHOW fsync"),
                   await conns[0].fetchval("SHOW synchronous_commit"))
        print(f"PostgreSQL fsync={durable[0]} synchronous_commit={durable[1]}; "
              f"{clients} clients x {n} inserts, {rounds} rounds", flush=True)
        one, many, single = [], [], []
        for _ in range(rounds):
            one.append(await inserts_per_second(conns, [tokens[0]] * clients, n))
            many.append(await inserts_per_second(conns, tokens, n))
            single.append(await inserts_per_second(conns[:1], tokens[:1], n))
        med = statistics.median
        print(f"one token, {clients} clients:  {med(one):7.0f} inserts/s  "
              f"({', '.join(f'{v:.0f}' for v in one)})")
        print(f"{clients} tokens, {clients} clients: {med(many):7.0f} inserts/s  "
              f"({', '.join(f'{v:.0f}' for v in many)})")
        print(f"one token, 1 client:   {med(single):7.0f} inserts/s  "
              f"({', '.join(f'{v:.0f}' for v in single)})")
        print(f"one token's share of {clients} tokens' rate: {med(one) / med(many):.2f} "
              f"(1.00: its inserts do not wait for each other)")
    finally:
        for conn in conns:
            await conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("-n", type=int, default=100, help="inserts per client per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pg = Postgres.start(durable=True)
    try:
        asyncio.run(bench(pg.new_database(), args.clients, args.n, args.rounds))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
