"""Several real `pesto serve` nodes on one real PostgreSQL: the shared queue, cancels and
reads from any node, kill -9 under load, cluster-wide limits, migrations, `pesto doctor`.

Each node is its own process with its own sandbox dir and uid range; they share only
the database. What a node did is read from the database (`jobs.node_id`) and from
each node's log (one INFO line per job it ran).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import (PY, STORE_URLS, Server, add_token, assert_error, free_port,
                                pesto_cli, wait_uids_free)
from tests.conftest import UID_BASE

HELLO = {**PY, "code": "print(1)"}
LEASE = "2"             # seconds: a killed node's jobs are failed this long after its last beat
NODE_UIDS = 30          # uids per node, above the engine tests' 400 (tests/conftest.py)


def _sql(url: str, query: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        import asyncpg
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


class Cluster:
    """N nodes (`pesto serve --store postgresql://...`) on one fresh database."""

    def __init__(self, tmp_path: Path, url: str, n: int, workers: int = 1) -> None:
        self.url = url
        self.data_dir = tmp_path / "data"
        STORE_URLS[self.data_dir] = url
        self.secret = add_token(self.data_dir, "tester")
        self.headers = {"X-Pesto-Token": self.secret}
        self.nodes: list[Server] = []
        try:
            for i in range(n):
                self.add_node(tmp_path, i, workers)
        except BaseException:
            self.stop()
            raise

    def add_node(self, tmp_path: Path, i: int, workers: int) -> Server:
        # Run uids must traverse the sandbox dir (not under pytest's 0700 tmp dirs), and the
        # namespace layer cannot set up work dirs under this host's /tmp: next to the default.
        sandbox = Path(tempfile.mkdtemp(prefix=f"pesto-test-node{i}-", dir="/var/lib"))
        os.chmod(sandbox, 0o711)
        node = Server(self.data_dir, "--workers", str(workers), "--log-level", "info",
                      uids=(UID_BASE + 400 + i * NODE_UIDS, NODE_UIDS),
                      env={"PESTO_SANDBOX_DIR": str(sandbox), "PESTO_NODE_LEASE": LEASE,
                           "PESTO_NODE_NAME": f"node-{i}", "PESTO_PIN_CPUS": "false"})
        node.sandbox = sandbox
        node.uids = (UID_BASE + 400 + i * NODE_UIDS, NODE_UIDS)
        self.nodes.append(node)
        return node

    def node_ids(self) -> dict[str, str]:
        """node name -> node id, of the live nodes."""
        return {r["name"]: r["id"] for r in _sql(self.url, "SELECT id, name FROM nodes")}

    def post(self, node: Server, path: str, body: Any, **kw: Any) -> httpx.Response:
        return httpx.post(node.url + path, json=body, headers=kw.pop("headers", self.headers),
                          timeout=60, **kw)

    def get(self, node: Server, job_id: str) -> dict[str, Any]:
        return httpx.get(f"{node.url}/api/jobs/{job_id}", headers=self.headers, timeout=10).json()

    def wait_finished(self, node: Server, ids: list[str], timeout: float) -> dict[str, dict]:
        final: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        for job_id in ids:
            while True:
                job = self.get(node, job_id)
                if job["status"] in ("completed", "failed", "cancelled"):
                    final[job_id] = job
                    break
                assert time.monotonic() < deadline, (job, self.logs()[-4000:])
                time.sleep(0.05)
        return final

    def logs(self) -> str:
        return "\n".join(node.output() for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        STORE_URLS.pop(self.data_dir, None)


@pytest.fixture
def cluster_of(tmp_path: Path, postgres: Any):
    made: list[Cluster] = []

    def make(n: int, workers: int = 1) -> Cluster:
        made.append(Cluster(tmp_path, postgres.new_database(), n, workers))
        return made[-1]

    yield make
    for cluster in made:
        cluster.stop()
        for node in cluster.nodes:
            if node.proc.returncode == -9:
                continue        # killed: its work dirs stay until a node starts on its sandbox dir
            assert wait_uids_free(node.sandbox, *node.uids) == [], node.output()[-3000:]
        for node in cluster.nodes:
            shutil.rmtree(node.sandbox, ignore_errors=True)


def test_jobs_submitted_to_one_node_are_run_by_the_others_and_any_node_answers(cluster_of) -> None:
    cluster = cluster_of(3)
    a, b, c = cluster.nodes
    ids = cluster.node_ids()
    assert sorted(ids) == ["node-0", "node-1", "node-2"]
    # Six half-second jobs, all sent to node A (one slot): the other nodes claim them.
    body = {**PY, "code": "import time; time.sleep(0.5); print('ran')"}
    jobs = [cluster.post(a, "/api/jobs", body).json()["id"] for _ in range(6)]
    final = cluster.wait_finished(b, jobs, timeout=30)      # read through another node
    assert {job["status"] for job in final.values()} == {"completed"}
    assert all(job["result"]["runtime"]["stdout"] == "ran\n" for job in final.values())
    ran_on = {r["node_id"] for r in _sql(cluster.url, "SELECT node_id FROM jobs WHERE id = ANY($1)",
                                         jobs)}
    assert ran_on == set(ids.values()), ran_on           # every node took some

    # A synchronous execute on a node whose slot is busy is run by another node, and
    # answered as soon as that node finishes (its NOTIFY, not a poll).
    slow = cluster.post(a, "/api/jobs", {**PY, "code": "import time; time.sleep(5)",
                                         "runTimeout": 8000}).json()["id"]
    deadline = time.monotonic() + 10
    while cluster.get(c, slow)["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    busy = _sql(cluster.url, "SELECT node_id FROM jobs WHERE id = $1", slow)[0]["node_id"]
    busy_node = next(n for n, name in zip(cluster.nodes, ["node-0", "node-1", "node-2"])
                     if ids[name] == busy)
    started = time.monotonic()
    answer = cluster.post(busy_node, "/api/execute", HELLO)
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["runtime"]["stdout"] == "1\n"
    other = _sql(cluster.url, "SELECT node_id FROM jobs WHERE id = $1", answer.json()["id"])
    assert other[0]["node_id"] != busy
    assert took < 0.9, took      # the fallback poll is 1 s: the answer came by notification

    # DELETE through a node that does not run the job reaches the node that does.
    canceller = next(n for n in cluster.nodes if n is not busy_node)
    started = time.monotonic()
    cancelled = httpx.delete(f"{canceller.url}/api/jobs/{slow}", headers=cluster.headers,
                             timeout=10).json()
    assert cancelled["status"] == "cancelled", cancelled
    # The running node announces the finish of a job it was asked to cancel, though
    # it was started at once where it was submitted (test below): no 1 s poll.
    assert time.monotonic() - started < 0.9


class Listener:
    """LISTEN on a channel from the test process (its own thread and event loop)."""

    def __init__(self, url: str, channel: str) -> None:
        import asyncpg
        import threading
        self.heard: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

        async def connect() -> Any:
            conn = await asyncpg.connect(url)
            await conn.add_listener(channel, lambda *args: self.heard.append(args[3]))
            return conn

        self._conn = asyncio.run_coroutine_threadsafe(connect(), self._loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._conn.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def test_only_the_finish_of_a_job_another_node_may_wait_for_is_announced(cluster_of) -> None:
    """A job run by the node it was sent to has its waiter there: its finish is saved
    without a NOTIFY that every node would handle. A job sent to one node and run by
    another is NOTIFYed (the first may be waiting for it)."""
    cluster = cluster_of(2)
    a, b = cluster.nodes
    names = cluster.node_ids()
    ids = {a: names["node-0"], b: names["node-1"]}
    done = Listener(cluster.url, "pesto_done")
    try:
        at_once = cluster.post(a, "/api/execute", HELLO).json()["id"]
        # A busy for 3 s, B for 1 s: jobs queued meanwhile are then all run by B.
        sleeps = [cluster.post(node, "/api/jobs", {**PY, "code": f"import time; time.sleep({s})"})
                  for node, s in ((a, 3), (b, 1))]
        sent = {cluster.post(node, "/api/jobs", HELLO).json()["id"]: node for node in (a, b)}
        final = cluster.wait_finished(a, [*sent, *(r.json()["id"] for r in sleeps)], timeout=30)
        assert {job["status"] for job in final.values()} == {"completed"}
        ran = {r["id"]: r["node_id"] for r in _sql(
            cluster.url, "SELECT id, node_id FROM jobs WHERE id = ANY($1)", list(sent))}
        assert set(ran.values()) == {ids[b]}, ran        # both waited for B's slot
        elsewhere = [job for job, node in sent.items() if ran[job] != ids[node]]
        assert len(elsewhere) == 1
        deadline = time.monotonic() + 5
        while elsewhere[0] not in done.heard:
            assert time.monotonic() < deadline, done.heard
            time.sleep(0.02)
        assert done.heard == elsewhere, (at_once, done.heard)   # not at_once, the sleeps, B's own
    finally:
        done.close()


def test_a_batch_of_judged_jobs_sent_to_one_node_is_run_and_read_across_nodes(cluster_of) -> None:
    cluster = cluster_of(2)
    a, b = cluster.nodes
    ids = cluster.node_ids()
    # Four judged jobs (the program sleeps so that one slot cannot take them all at once).
    code = "import sys, time; time.sleep(0.4); print(int(sys.stdin.read()) * 2)"
    cases = [{"stdin": "1", "expectedOutput": "2"}, {"stdin": "5", "expectedOutput": "11"}]
    batch = cluster.post(a, "/api/jobs/batch", {"submissions": [
        {**PY, "code": code, "testCases": cases} for _ in range(4)]})
    assert batch.status_code == 202, batch.text
    jobs = [job["id"] for job in batch.json()["jobs"]]
    cluster.wait_finished(b, jobs, timeout=60)
    listed = httpx.get(f"{b.url}/api/jobs", params={"ids": ",".join(jobs)},
                       headers=cluster.headers, timeout=10).json()["jobs"]
    assert [job["id"] for job in listed] == jobs                 # in the order asked, via B
    for job in listed:
        assert job["status"] == "completed", job
        assert [case["verdict"] for case in job["result"]["testCases"]] == \
            ["accepted", "wrong_answer"]
        assert job["result"]["summary"]["passed"] == 1
    ran_on = {r["node_id"] for r in _sql(cluster.url, "SELECT node_id FROM jobs WHERE id = ANY($1)",
                                         jobs)}
    assert ran_on == set(ids.values()), ran_on


def test_kill_9_of_a_node_under_load_loses_no_job_and_runs_none_twice(cluster_of) -> None:
    cluster = cluster_of(3, workers=1)
    victim = cluster.nodes[2]
    victim_id = cluster.node_ids()["node-2"]
    ids: list[str] = []
    for i in range(24):               # spread over the three nodes' APIs
        body = {**PY, "code": f"import time; time.sleep(0.4); print({i})"}
        response = cluster.post(cluster.nodes[i % 3], "/api/jobs", body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    # Kill node 2 while it runs a job (not between two).
    deadline = time.monotonic() + 20
    while not _sql(cluster.url, "SELECT 1 FROM jobs WHERE node_id = $1 AND status = 'running'",
                   victim_id):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    victim.kill9()
    survivor = cluster.nodes[0]
    final = cluster.wait_finished(survivor, ids, timeout=60)
    statuses = [final[i]["status"] for i in ids]
    assert set(statuses) <= {"completed", "failed"}, statuses
    rows = {r["id"]: r for r in _sql(cluster.url, "SELECT id, node_id FROM jobs WHERE id = ANY($1)",
                                     ids)}
    logs = cluster.logs()
    failed = 0
    for i, job_id in enumerate(ids):
        job = final[job_id]
        runs = len(re.findall(rf"job {job_id} token=\S+ .*status=completed", logs))
        if job["status"] == "completed":
            assert job["result"]["runtime"]["stdout"] == f"{i}\n"
            assert runs == 1, (job_id, runs)      # run by exactly one node, once
        else:
            failed += 1
            assert job["error"]["code"] == "INTERRUPTED", job
            assert "not run again" in job["error"]["message"]
            assert rows[job_id]["node_id"] == victim_id      # only the killed node's job
            assert runs == 0
    assert failed == 1, statuses      # one slot on the killed node: exactly its one job
    # The dead node is gone from the live nodes.
    assert "node-2" not in cluster.node_ids()


def test_token_limits_hold_across_nodes(cluster_of) -> None:
    cluster = cluster_of(2)
    a, b = cluster.nodes
    # Requests per minute: 6 allowed, requests alternate between the nodes.
    limited = {"X-Pesto-Token": add_token(cluster.data_dir, "limited", rate_limit=6)}
    codes = [httpx.get(f"{node.url}/api/jobs/none", headers=limited).status_code
             for node in [a, b] * 6]
    assert codes.count(404) == 6 and codes.count(429) == 6, codes
    assert codes[:6] == [404] * 6
    assert_error(httpx.get(f"{b.url}/api/jobs/none", headers=limited), 429, "RATE_LIMITED")
    # Concurrent jobs: one at a time, whichever node is asked.
    single = {"X-Pesto-Token": add_token(cluster.data_dir, "single", max_concurrency=1)}
    slow = {**PY, "code": "import time; time.sleep(3)", "runTimeout": 6000}
    first = cluster.post(a, "/api/jobs", slow, headers=single)
    assert first.status_code == 202
    assert_error(cluster.post(b, "/api/jobs", slow, headers=single), 429, "TOO_MANY_JOBS")
    httpx.delete(f"{b.url}/api/jobs/{first.json()['id']}", headers=single, timeout=10)
    # The monthly quota counts every node's executions.
    quota = {"X-Pesto-Token": add_token(cluster.data_dir, "quota", monthly_limit=2)}
    assert cluster.post(a, "/api/execute", HELLO, headers=quota).status_code == 200
    assert cluster.post(b, "/api/execute", HELLO, headers=quota).status_code == 200
    assert_error(cluster.post(a, "/api/execute", HELLO, headers=quota), 429, "QUOTA_EXCEEDED")
    assert_error(cluster.post(b, "/api/execute", HELLO, headers=quota), 429, "QUOTA_EXCEEDED")


def test_a_revocation_reaches_every_node_and_no_revoked_token_runs_a_job(cluster_of) -> None:
    """Nodes cache live tokens; every write to the tokens table NOTIFYs them to forget.

    With the trigger that NOTIFYs switched off, a revoked token is still in the nodes'
    caches (a read passes: the cache is used) but runs nothing: the job's insert
    reads the revocation. With it on, every node refuses the token within moments.
    """
    cluster = cluster_of(2)
    a, b = cluster.nodes
    doomed = {"X-Pesto-Token": add_token(cluster.data_dir, "doomed")}
    other = add_token(cluster.data_dir, "other")
    _sql(cluster.url, "ALTER TABLE tokens DISABLE TRIGGER tokens_changed")
    for node in (a, b):                                 # each node caches the token
        assert httpx.get(f"{node.url}/api/jobs/none", headers=doomed).status_code == 404
    _sql(cluster.url, "UPDATE tokens SET revoked_at = 'now' WHERE name = 'doomed'")
    assert httpx.get(f"{a.url}/api/jobs/none", headers=doomed).status_code == 404   # cached
    for node in (a, b):
        refused = assert_error(cluster.post(node, "/api/execute", HELLO, headers=doomed), 401,
                               "TOKEN_REVOKED")
        assert refused["message"] == "Token has been revoked"
    assert _sql(cluster.url, "SELECT count(*) FROM jobs j JOIN tokens t ON t.id = j.token_id"
                             " WHERE t.name = 'doomed'")[0][0] == 0
    # Such a run starts beside its insert and is stopped by the refusal: its slot is free
    # again (a leaked one would show busy; the uids are checked free at the end).
    for node in (a, b):
        busy = re.search(r"^pesto_slots_busy (\S+)$", httpx.get(f"{node.url}/metrics").text, re.M)
        assert busy is not None and float(busy.group(1)) == 0, busy
        assert cluster.post(node, "/api/execute", HELLO).json()["runtime"]["stdout"] == "1\n"
    # The trigger on: a revoke NOTIFYs every node, whose whole cache empties.
    _sql(cluster.url, "ALTER TABLE tokens ENABLE TRIGGER tokens_changed")
    other_headers = {"X-Pesto-Token": other}
    for node in (a, b):
        assert httpx.get(f"{node.url}/api/jobs/none", headers=other_headers).status_code == 404
    assert pesto_cli("token", "revoke", "other", "--store", cluster.url).returncode == 0
    deadline = time.monotonic() + 5
    for node in (a, b):
        while httpx.get(f"{node.url}/api/jobs/none", headers=other_headers).status_code == 404:
            assert time.monotonic() < deadline, "the revocation did not reach a node"
            time.sleep(0.01)
        for headers in (other_headers, doomed):
            assert_error(httpx.get(f"{node.url}/api/jobs/none", headers=headers), 401,
                         "TOKEN_REVOKED")


def test_concurrent_submits_cannot_overshoot_a_limit(cluster_of) -> None:
    """Twenty submits at once through two nodes: the database admits exactly the quota."""
    cluster = cluster_of(2, workers=2)
    quota = {"X-Pesto-Token": add_token(cluster.data_dir, "burst", monthly_limit=5)}
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(
            lambda i: cluster.post(cluster.nodes[i % 2], "/api/jobs", HELLO,
                                   headers=quota).status_code, range(20)))
    assert codes.count(202) == 5 and codes.count(429) == 15, codes


def test_migrations_are_applied_once_when_nodes_start_together(postgres: Any) -> None:
    from pesto.pgstore import MIGRATIONS, PgStore

    url = postgres.url("postgres").rsplit("/", 1)[0] + "/"
    name = f"pesto_migrate_{int(time.time() * 1000)}"
    _sql(postgres.url("postgres"), f"CREATE DATABASE {name}")

    async def together() -> list[int]:
        stores = await asyncio.gather(*(PgStore.open(url + name) for _ in range(6)))
        try:
            return [await store.schema_version() for store in stores]
        finally:
            for store in stores:
                await store.close()

    assert asyncio.run(together()) == [len(MIGRATIONS)] * 6
    versions = [r[0] for r in _sql(url + name, "SELECT version FROM pesto_schema ORDER BY 1")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))      # each applied once


def test_doctor_shows_the_store_and_the_live_nodes(cluster_of) -> None:
    cluster = cluster_of(2)
    out = pesto_cli("doctor", "--store", cluster.url).stdout
    assert "store: postgresql://postgres@" in out
    assert "2 live node(s)" in out, out
    for name, node_id in cluster.node_ids().items():
        assert re.search(rf"node {node_id}\s+{name}\s+workers=1", out), out


def test_a_bad_or_unreachable_store_is_one_clear_line(tmp_path: Path) -> None:
    bad = pesto_cli("serve", "--data-dir", str(tmp_path / "d"), "--store", "mysql://x/y",
                    check=False)
    assert bad.returncode == 2
    assert "store_url must start with sqlite:/// or postgresql://" in bad.stderr
    assert "Traceback" not in bad.stderr
    port = free_port()       # nothing listens there
    down = pesto_cli("serve", "--data-dir", str(tmp_path / "d"), "--store",
                     f"postgresql://pesto:secret-pw@127.0.0.1:{port}/pesto", check=False)
    assert down.returncode == 2 and "pesto serve:" in down.stderr, down.stderr
    assert "Traceback" not in down.stderr and "secret-pw" not in down.stderr


def test_both_stores_offer_every_store_method_with_the_same_signature() -> None:
    """A method added to the SQLite store must be ported to the PostgreSQL one (and the
    protocol callers program against): every public coroutine of either store is in both."""
    import inspect

    from pesto.pgstore import PgStore
    from pesto.store import Store
    from pesto.stores import StoreAPI

    def methods(cls: type) -> dict[str, inspect.Signature]:
        # Plain functions too: a few SQLite methods are synchronous (callers await
        # what the PostgreSQL store's coroutine gives them).
        return {name: inspect.signature(fn) for name, fn in vars(cls).items()
                if inspect.isfunction(fn) and not name.startswith("_")}

    sqlite, pg, api = methods(Store), methods(PgStore), methods(StoreAPI)
    assert set(sqlite) <= set(pg), f"not in PgStore: {sorted(set(sqlite) - set(pg))}"
    assert set(api) <= set(sqlite)
    for name, signature in sqlite.items():
        assert list(pg[name].parameters) == list(signature.parameters), name


def test_store_url_picks_the_backend(tmp_path: Path, postgres: Any) -> None:
    from pesto.config import load_settings
    from pesto.pgstore import PgStore
    from pesto.store import DB_NAME, Store
    from pesto.stores import open_store

    pg_url = postgres.new_database()

    async def kinds() -> list[type]:
        made = []
        for url in (None, f"sqlite://{tmp_path}/elsewhere", pg_url):
            store = await open_store(load_settings(env={}, data_dir=str(tmp_path / "default"),
                                                   store_url=url))
            made.append(type(store))
            await store.close()
        return made

    assert asyncio.run(kinds()) == [Store, Store, PgStore]
    assert (tmp_path / "default" / DB_NAME).exists()
    assert (tmp_path / "elsewhere" / DB_NAME).exists()
