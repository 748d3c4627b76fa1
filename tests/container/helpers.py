"""Helpers for the container tests: podman calls, a running container, probes.

The fixtures (conftest.py) build the image with podman and run it the
way the README says (no --privileged, no --cap-add, only the two --ulimit
flags), and talk to it over HTTP on a free localhost port.

Environment knobs:
  PESTO_CONTAINER_LANGUAGES  LANGUAGES build argument
                             (default "python,c,go,javascript,typescript")
  PESTO_CONTAINER_IMAGE      use this image instead of building one
  PESTO_CONTAINER_CONTEXT    "git": build from `git archive HEAD` instead of
                             the working tree
  PESTO_BASE_IMAGE           base image (default localhost/debian:bookworm-slim,
                             made by make_base.sh when missing)
  CONTAINERS_CONF            podman config (default: containers.conf here, runc)
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# podman's default container limits (nofile 1048576, nproc 32768) are above
# the hard limits podman itself gets on these machines, whose root lacks
# CAP_SYS_RESOURCE (the machine is itself sandboxed): runc then cannot set
# them and the container does not start. The README documents both flags.
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
# Go, Node and Bun besides Python and C: the runtimes whose memory limit
# needs more than RLIMIT_AS where the container has no memory cgroup.
LANGUAGES = os.environ.get("PESTO_CONTAINER_LANGUAGES", "python,c,go,javascript,typescript")
BASE_IMAGE = os.environ.get("PESTO_BASE_IMAGE", "localhost/debian:bookworm-slim")
# A TLS-intercepting egress proxy (as on these machines) needs its CA for the
# PyPI/npm downloads during the build; it is mounted, never copied in.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(HERE / "containers.conf"))
    return env


def podman(*args: str, check: bool = True, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True,
                          env=podman_env(), timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def language_slug(languages: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", languages.lower()).strip("-") or "none"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Container:
    """A running Pesto container, reached over HTTP on 127.0.0.1:<port>."""

    def __init__(self, image: str, volume: str, env: dict[str, str] | None = None) -> None:
        self.image = image
        self.volume = volume
        self.env = env or {}
        self.name = f"pesto-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "Container":
        # Exactly the README's command line plus a test name and a free port.
        envs = [a for k, v in self.env.items() for a in ("-e", f"{k}={v}")]
        podman("run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:8080",
               "-v", f"{self.volume}:/var/lib/pesto", *ULIMITS, *envs, self.image)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/healthz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.status_code
            except httpx.HTTPError as exc:
                last = exc
            state = podman("inspect", "--format", "{{.State.Status}}", self.name,
                           check=False).stdout.strip()
            if state not in ("running", "created", "configured"):
                break
            time.sleep(0.3)
        raise AssertionError(f"container {self.name} not healthy ({last!r}); logs:\n"
                             f"{self.logs()[-4000:]}")

    def logs(self) -> str:
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr

    def exec(self, *argv: str, check: bool = True, timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=check, timeout=timeout)

    def create_token(self, name: str | None = None) -> str:
        out = self.exec("pesto", "token", "create", "--name",
                        name or f"t-{uuid.uuid4().hex[:8]}").stdout
        return out.strip().splitlines()[-1]

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"X-Pesto-Token": token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def stop(self) -> subprocess.CompletedProcess[str]:
        return podman("stop", "-t", "15", self.name, check=False, timeout=60)

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False, timeout=60)


def execute(api: httpx.Client, language: str, code: str, **fields: Any) -> dict[str, Any]:
    r = api.post("/api/execute", json={"language": language, "code": code, **fields})
    assert r.status_code == 200, f"{r.status_code}: {r.text[:2000]}"
    return r.json()


def run_json(api: httpx.Client, language: str, code: str, **fields: Any) -> Any:
    """Run a probe that prints one JSON document on its last stdout line."""
    result = execute(api, language, code, **fields)
    stdout = result["runtime"]["stdout"].strip()
    assert stdout, f"probe printed nothing: {json.dumps(result)[:3000]}"
    return json.loads(stdout.splitlines()[-1])


def run_uids(ctr: Container) -> range:
    """The uid range the server in the container hands to runs."""
    env = dict(line.split("=", 1) for line in ctr.exec("env").stdout.splitlines() if "=" in line)
    base = int(env.get("PESTO_UID_BASE", 61000))
    return range(base, base + int(env.get("PESTO_UID_COUNT", 1000)))


def run_uid_processes(ctr: Container, uids: range | None = None) -> list[str]:
    """`ps` lines of processes owned by run uids (zombies included), except the
    engine's own stand-bys (the exec helper, which takes the next job's uid in
    advance and runs no user code until it execs the program)."""
    uids = uids if uids is not None else run_uids(ctr)
    out = ctr.exec("ps", "-eo", "uid=,pid=,ppid=,stat=,args=").stdout
    return [line for line in out.splitlines()
            if line.split() and int(line.split()[0]) in uids
            and "/pesto/sandbox/build/pesto-exec-" not in line]
