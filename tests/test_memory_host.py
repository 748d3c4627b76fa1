"""Memory without a memory cgroup: `pesto doctor` names the mechanism, and the
engine's memory watch (pesto/sandbox/memory.py) stops a run at its limit.

The watch is proven with a Python folder set to mode "watch" (so it runs
wherever Python does); the real user of the mode, Bun, is covered by
tests/test_languages.py where it is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pesto.config import load_settings
from tests.conftest import UID_BASE, Runner

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")


def doctor_json(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "pesto.cli", "doctor", "--json"], cwd=REPO,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PESTO_UID_BASE": str(UID_BASE + 540), **env})
    return json.loads(out.stdout)


def test_doctor_names_the_memory_mechanism():
    without = doctor_json(PESTO_DISABLE="cgroups")["memory"]
    assert without["cgroup"] is False
    assert without["how"][0].startswith("no memory cgroup")
    python = next(line for line in without["how"] if "python" in line.split(":")[0])
    assert python.endswith("RLIMIT_AS at the limit")
    with_cg = doctor_json()
    if with_cg["cgroups"]["enabled"]:
        assert with_cg["memory"]["cgroup"] is True
        assert "memory cgroup per slot" in with_cg["memory"]["how"][0]


@pytest.fixture(scope="module")
def watch_runner(tmp_path_factory):
    """An engine without cgroups whose "pywatch" language is Python in mode watch."""
    langs = tmp_path_factory.mktemp("langs")
    shutil.copytree(REPO / "languages" / "python", langs / "pywatch")
    toml = langs / "pywatch" / "language.toml"
    text = toml.read_text().replace('language = "Python"', 'language = "PyWatch"')
    text = text.replace('memory = "address-space"',
                        'memory = "watch"\nmemory_reserve = 536870912')
    toml.write_text(text)
    settings = load_settings(env={}, data_dir=str(tmp_path_factory.mktemp("data")),
                             languages_dir=str(langs), uid_base=UID_BASE + 540, uid_count=5,
                             workers=1, disable=("cgroups",))
    r = Runner(settings)
    yield r
    r.close()


HOG = """
import time
chunks = []
for i in range(1024):
    chunks.append(bytearray(1 << 20))   # zero-filled: every page touched
    time.sleep(0.001)
print("survived", len(chunks))
"""


def test_memory_watch_stops_a_run_past_its_limit(watch_runner):
    r = watch_runner.run("pywatch", HOG, memory_limit=64 * MIB, run_timeout=20000).runtime
    # RLIMIT_DATA (64 + 512 MiB) would let it reach 576 MiB: the watch stops it first.
    assert "survived" not in r.stdout, r
    assert r.status == "memory", r
    assert 64 * MIB <= r.memory <= 64 * MIB + 32 * MIB, r.memory / MIB


def test_memory_watch_lets_a_run_under_its_limit_finish(watch_runner):
    ok = watch_runner.run("pywatch", "x = bytearray(16 << 20)\nprint('fine')\n",
                          memory_limit=64 * MIB).runtime
    assert ok.status == "ok" and ok.stdout == "fine\n", ok
