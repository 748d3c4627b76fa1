"""Shared fixtures: a real Engine (real spawner, real uids) on its own event loop.

pytest loads this file for tests/unit too, which runs without root: importing
it must need none, and a fixture that needs root starts (or skips) only when
a test asks for it.
"""

from __future__ import annotations

import asyncio
import os
import platform
import uuid

import pytest

from pesto.config import load_settings
from pesto.models import ExecuteRequest, ExecuteResult


def pytest_report_header(config):
    from pesto.sandbox import kernel
    return [f"kernel {platform.release()}, Landlock ABI {kernel.landlock_abi()}, "
            f"euid {os.geteuid()}"]


# A uid range of this test session's own (the process id picks one of six
# blocks), so that another Pesto on this host (a dev server, another test
# run) is never mistaken for a leak of ours. Sub-ranges: engine, layer tests.
# PESTO_TEST_UID_BASE sets it (the suites run inside the container use it).
UID_BASE = int(os.environ.get("PESTO_TEST_UID_BASE") or 62000 + (os.getpid() % 6) * 500)

class Runner:
    """Drives one Engine from synchronous tests."""

    def __init__(self, settings):
        from pesto.engine import Engine
        self.loop = asyncio.new_event_loop()
        try:
            self.engine = self.loop.run_until_complete(Engine.start(settings))
        except BaseException:
            self.loop.close()
            raise
        self.settings = settings
        self.ready_uids: set[int] = set()

    def run(self, language: str, code: str | None = None, **kw) -> ExecuteResult:
        req = ExecuteRequest(language=language, code=code, **kw)
        result = self.loop.run_until_complete(self.engine.execute(req, uuid.uuid4().hex))
        self.settle()
        return result

    def gather(self, *requests: ExecuteRequest) -> list[ExecuteResult]:
        async def all_():
            return await asyncio.gather(*(self.engine.execute(r, uuid.uuid4().hex)
                                          for r in requests))
        results = self.loop.run_until_complete(all_())
        self.settle()
        return results

    def settle(self) -> None:
        """Wait for the cleanup that slots do after answering (see Supervisor.serve),
        and note the uids idle slots hold ready for their next job."""
        self.ready_uids = self.loop.run_until_complete(self.engine.sandbox.settle())

    def has(self, language: str) -> bool:
        return any(language in r.names for r in self.engine.registry.installed)

    def close(self):
        self.loop.run_until_complete(self.engine.close())
        self.loop.close()


@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root to switch to run uids")
    settings = load_settings(env={}, data_dir=str(tmp_path_factory.mktemp("data")),
                             uid_base=UID_BASE, uid_count=400)
    r = Runner(settings)
    yield r
    r.close()


def _range_and_ready(runner_or_settings):
    settings = getattr(runner_or_settings, "settings", runner_or_settings)
    ready = getattr(runner_or_settings, "ready_uids", set())
    return settings, ready


def run_uid_processes(runner_or_settings) -> list[str]:
    """Every live process (zombies included) whose uid is in the run range,
    except the standby children of uids idle slots hold for their next job."""
    settings, ready = _range_and_ready(runner_or_settings)
    found = []
    lo, hi = settings.uid_base, settings.uid_base + settings.uid_count
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        if lo <= uid < hi and uid not in ready:
                            with open(f"/proc/{pid}/stat") as st:
                                state = st.read().rsplit(")", 1)[1].split()[:2]
                            found.append(f"{pid} uid={uid} state={state[0]} ppid={state[1]}")
                        break
        except OSError:
            continue
    return found


def supervisor_dirs(spawner_pid: int) -> list[str]:
    """/proc paths of every directory the spawner's children (the slot
    supervisors) hold open: among them each slot's work root, its private
    tmpfs included, which no path in the host's tree reaches."""
    dirs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) != spawner_pid:
                    continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                path = f"/proc/{pid}/fd/{fd}"
                if os.path.isdir(path):
                    dirs.append(path)
        except (OSError, ValueError, IndexError):
            continue   # exited meanwhile
    return dirs


def leftover_workdirs(runner_or_settings) -> list[str]:
    """Work dirs of uids in this test run's range (other Pesto processes may
    share the root), except the empty ones idle slots hold for their next job."""
    settings, ready = _range_and_ready(runner_or_settings)
    lo, hi = settings.uid_base, settings.uid_base + settings.uid_count
    # The host's work root, and each slot's private tmpfs (invisible in the
    # host's tree: seen through its supervisor's open descriptors).
    roots = [str(settings.sandbox_dir / "work")]
    engine = getattr(runner_or_settings, "engine", None)
    if engine is not None:
        roots += supervisor_dirs(engine.sandbox.spawner_pid)
    left = set()
    for root in roots:
        try:
            names = os.listdir(root)
        except OSError:
            continue   # a supervisor's descriptor closed meanwhile
        for n in names:
            if n.isdigit() and lo <= int(n) < hi:
                if int(n) in ready and not os.listdir(os.path.join(root, n)):
                    continue
                left.add(n)
    return sorted(left)


def find_run_process(settings, needle: str) -> int | None:
    """The pid of a process in the run range whose command line contains needle."""
    lo, hi = settings.uid_base, settings.uid_base + settings.uid_count
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if not lo <= os.stat(f"/proc/{pid}").st_uid < hi:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    return int(pid)
        except OSError:
            continue
    return None


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL (tests/postgres.py); skipped with the reason when there is none,
    except under CI=true, where a missing PostgreSQL is a failure (.ci/run installs it)."""
    from tests.postgres import Postgres
    try:
        server = Postgres.start()
    except RuntimeError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
    yield server
    server.stop()
