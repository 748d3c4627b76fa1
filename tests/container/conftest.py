"""Fixtures for the container tests: build the image once per session, run
it without --privileged, a token from `podman exec`. Knobs: see helpers.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.container.helpers import (BASE_IMAGE, HERE, HOST_CA, LANGUAGES, REPO,
                                     Container, language_slug, podman, podman_env)

build_report: dict[str, Any] = {}


def pytest_report_header(config: pytest.Config) -> list[str]:
    if not shutil.which("podman"):
        return ["container: podman not installed"]
    version = subprocess.run(["podman", "--version"], capture_output=True, text=True,
                             env=podman_env()).stdout.strip()
    return [f"container: {version}, base {BASE_IMAGE}, LANGUAGES={LANGUAGES}, "
            f"CONTAINERS_CONF={podman_env()['CONTAINERS_CONF']}"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if build_report:
        terminalreporter.write_sep("-", "container image")
        for key, value in build_report.items():
            terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="session")
def podman_ready() -> None:
    if not shutil.which("podman"):
        pytest.skip("podman is not installed: run tests/container/make_base.sh as root "
                    "(installs podman, runc, debootstrap and makes the base image)")
    if os.geteuid() != 0:
        pytest.skip("the container tests use rootful podman: run them as root")


@pytest.fixture(scope="session")
def base_image(podman_ready: None) -> str:
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        proc = subprocess.run([str(HERE / "make_base.sh")], capture_output=True, text=True,
                              env={**podman_env(), "PESTO_BASE_IMAGE": BASE_IMAGE},
                              timeout=900)
        assert proc.returncode == 0, f"make_base.sh failed:\n{proc.stdout}\n{proc.stderr}"
    return BASE_IMAGE


@pytest.fixture(scope="session")
def image(podman_ready: None, request: pytest.FixtureRequest) -> str:
    """The image under test: built once per session (layer cache makes a rebuild
    with unchanged sources take seconds)."""
    given = os.environ.get("PESTO_CONTAINER_IMAGE")
    if given:
        build_report["image"] = f"{given} (given, not built)"
        return given
    base = request.getfixturevalue("base_image")
    tag = f"localhost/pesto-test:{language_slug(LANGUAGES)}"
    strict = "0" if LANGUAGES == "all" else "1"
    # No --ulimit here: RUN steps inherit podman's own limits, which fit.
    args = ["build", "--format", "docker",
            "--build-arg", f"BASE_IMAGE={base}",
            "--build-arg", f"LANGUAGES={LANGUAGES}",
            "--build-arg", f"PESTO_STRICT_INSTALL={strict}",
            "-t", tag, "-f", str(REPO / "Containerfile")]
    if HOST_CA.is_file():
        args += ["-v", f"{HOST_CA}:/run/pesto-build/ca.crt:ro"]
    context = REPO
    if os.environ.get("PESTO_CONTAINER_CONTEXT") == "git":
        # The committed tree, not the working one (others may be mid-edit).
        context = Path(tempfile.mkdtemp(prefix="pesto-context-"))
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(context)], input=archive, check=True)
        args[args.index("-f") + 1] = str(context / "Containerfile")
    started = time.monotonic()
    proc = podman(*args, str(context), check=False, timeout=3600)
    if context != REPO:
        shutil.rmtree(context, ignore_errors=True)
    elapsed = time.monotonic() - started
    log = proc.stdout + proc.stderr
    log_file = Path(tempfile.gettempdir()) / f"pesto-container-build-{language_slug(LANGUAGES)}.log"
    log_file.write_text(log)
    if proc.returncode != 0:
        # The selftest's verdicts and the tail, each line cut short (the failing
        # step's "Error: building at STEP" line repeats the whole RUN command).
        lines = log.splitlines()
        keep = [line for line in lines if line.startswith(("selftest ", "image: "))]
        tail = [line[:300] for line in lines[-40:] if line not in keep]
        pytest.fail(f"podman build failed after {elapsed:.0f} s (LANGUAGES={LANGUAGES}; "
                    f"full log {log_file}):\n" + "\n".join(keep + ["..."] + tail),
                    pytrace=False)
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    selftests = [line for line in log.splitlines() if line.startswith("selftest ")]
    build_report.update({
        "image": tag,
        "LANGUAGES": LANGUAGES,
        "build time": f"{elapsed:.0f} s (layer cache may have been used)",
        "size": f"{size / 1e6:.0f} MB",
        "build selftest": "; ".join(selftests) or "(none printed)",
    })
    return tag


@pytest.fixture(scope="session")
def admin_secret() -> str:
    return "pesto_admin_" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def container(image: str, admin_secret: str) -> Iterator[Container]:
    volume = f"pesto-test-{uuid.uuid4().hex[:8]}"
    ctr = Container(image, volume, env={"PESTO_ADMIN_TOKEN": admin_secret})
    try:
        yield ctr.start()
    finally:
        ctr.remove()
        podman("volume", "rm", "-f", volume, check=False)


@pytest.fixture(scope="session")
def token(container: Container) -> str:
    return container.create_token("me")


@pytest.fixture(scope="session")
def api(container: Container, token: str) -> Iterator[httpx.Client]:
    with container.client(token) as client:
        yield client


@pytest.fixture(scope="session")
def image_languages(container: Container) -> list[str]:
    """Language ids in the image (folders with a language.toml)."""
    out = container.exec("sh", "-c", "cd /opt/pesto/languages && ls */language.toml").stdout
    return sorted(line.split("/")[0] for line in out.split())


@pytest.fixture(scope="session")
def doctor(container: Container) -> dict[str, str]:
    """`pesto doctor` inside the container: layer name -> its line."""
    out = container.exec("pesto", "doctor", check=False).stdout
    layers = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not line.startswith("config:"):
            layers[parts[0]] = parts[1]
    return layers


