"""The image and the running container: what `podman run` gets without extra
flags, the first token, the health check, the PID 1 and what layers are on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.container.helpers import HOST_CA, LANGUAGES, REPO, Container, podman

pytestmark = pytest.mark.container

CAP_SYS_ADMIN = 21


def test_image_config(image: str) -> None:
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    cfg = inspected["Config"]
    assert cfg["Entrypoint"][0] == "/usr/bin/tini", cfg["Entrypoint"]
    assert cfg["Cmd"][:2] == ["pesto", "serve"], cfg["Cmd"]
    assert "8080/tcp" in cfg["ExposedPorts"]
    assert "/var/lib/pesto" in cfg["Volumes"]
    health = inspected.get("Healthcheck") or cfg.get("Healthcheck") or {}
    assert health.get("Test"), "no HEALTHCHECK (built with --format oci?)"
    assert "/healthz" in " ".join(health["Test"])


def test_container_is_not_privileged(container: Container) -> None:
    host = json.loads(podman("inspect", container.name).stdout)[0]["HostConfig"]
    assert host["Privileged"] is False
    assert not host.get("CapAdd")
    status = container.exec("cat", "/proc/1/status").stdout
    cap_eff = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("CapEff:")), 16)
    assert not cap_eff & (1 << CAP_SYS_ADMIN), f"PID 1 has CAP_SYS_ADMIN: {cap_eff:x}"


def test_pid1_is_a_reaper(container: Container) -> None:
    assert container.exec("cat", "/proc/1/comm").stdout.strip() == "tini"


def test_healthcheck_passes(container: Container) -> None:
    r = podman("healthcheck", "run", container.name, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


def test_data_dir_is_the_volume_and_private(container: Container) -> None:
    mounts = json.loads(podman("inspect", container.name).stdout)[0]["Mounts"]
    vol = [m for m in mounts if m["Destination"] == "/var/lib/pesto"]
    assert vol and vol[0]["Type"] == "volume" and vol[0]["Name"] == container.volume
    assert container.exec("stat", "-c", "%a %U", "/var/lib/pesto").stdout.split() == ["700", "root"]


def test_image_is_trimmed(container: Container, image_languages: list[str]) -> None:
    lists = container.exec("sh", "-c", "ls /var/lib/apt/lists | grep -v -e '^partial$' -e '^lock$' "
                           "|| true").stdout.split()
    assert lists == [], f"apt lists left in the image: {lists[:5]}"
    leftovers = container.exec("sh", "-c", "ls -d /root/.cache /var/cache/apt/archives/*.deb "
                               "2>/dev/null || true").stdout.split()
    assert leftovers == []
    # No compiler a run does not need: the C++ front end only with C++.
    if "cpp" not in image_languages:
        assert container.exec("sh", "-c", "command -v g++ || true").stdout.strip() == ""
    if not {"c", "cpp"} & set(image_languages):
        assert container.exec("sh", "-c", "command -v gcc cc || true").stdout.strip() == ""


def test_image_holds_the_requested_languages(image_languages: list[str]) -> None:
    if LANGUAGES in ("all", "none"):
        pytest.skip(f"LANGUAGES={LANGUAGES}: the set depends on what could be installed")
    assert image_languages == sorted(LANGUAGES.split(","))


def test_first_token_from_podman_exec(container: Container) -> None:
    out = container.exec("pesto", "token", "create", "--name", "first").stdout
    secret = out.strip().splitlines()[-1]
    assert " " not in secret and len(secret) >= 20, out
    with container.client(secret) as api:
        assert api.get("/api/jobs/no-such-job").status_code == 404
    with container.client() as anon:
        r = anon.get("/api/jobs/no-such-job")
        assert r.status_code == 401 and r.json()["code"] == "TOKEN_MISSING"
    with container.client("pesto_not_a_real_token") as bad:
        r = bad.get("/api/jobs/no-such-job")
        assert r.status_code == 401 and r.json()["code"] == "TOKEN_INVALID"
    listing = container.exec("pesto", "token", "list").stdout
    assert "first" in listing and secret not in listing


def test_admin_token_from_environment(container: Container, admin_secret: str) -> None:
    """PESTO_ADMIN_TOKEN given to `podman run -e` is a working token from the start."""
    with container.client(admin_secret) as api:
        r = api.get("/api/jobs/no-such-job")
    assert r.status_code == 404, f"PESTO_ADMIN_TOKEN not accepted: {r.status_code} {r.text}"


def test_public_routes(container: Container) -> None:
    with container.client() as anon:
        assert anon.get("/api/ping").json() == {"message": "OK"}
        assert anon.get("/healthz").json() == {"status": "ok"}
        runtimes = anon.get("/api/runtimes").json()["runtime"]
        assert runtimes == anon.get("/api/list-runtimes").json()["runtime"]


def test_runtimes_match_the_image(container: Container, image_languages: list[str]) -> None:
    with container.client() as anon:
        runtimes = anon.get("/api/runtimes").json()["runtime"]
    assert len(runtimes) == len(image_languages), (runtimes, image_languages)


def test_doctor_shows_layers(doctor: dict[str, str]) -> None:
    for layer in ("users", "rlimits", "seccomp", "landlock", "namespaces", "cgroups"):
        assert layer in doctor, f"`pesto doctor` has no {layer} line: {doctor}"
    for layer in ("users", "rlimits", "seccomp", "landlock"):
        assert doctor[layer].startswith("on"), f"{layer}: {doctor[layer]}"


def test_namespaces_are_used_in_the_container(doctor: dict[str, str]) -> None:
    """A default rootful podman container allows `unshare -U -n`: runs must use it."""
    assert doctor["namespaces"].startswith("on"), f"namespaces: {doctor['namespaces']}"


def test_build_fails_when_a_test_program_is_wrong(base_image: str, tmp_path: Path) -> None:
    """A language whose test program does not print "Hello world!" through the
    sandbox fails the image build (LANGUAGES.md)."""
    context = tmp_path / "context"
    context.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(context)], input=archive, check=True)
    wrong = context / "languages" / "wrongpy"
    wrong.mkdir()
    (wrong / "install.sh").write_text("#!/bin/sh\ntest -x /usr/bin/python3\n")
    (wrong / "language.toml").write_text(
        (REPO / "languages" / "python" / "language.toml").read_text()
        .replace('language = "Python"', 'language = "Wrong Python"')
        .replace('aliases = ["py", "python3", "py3"]', 'aliases = []'))
    (wrong / "test.py").write_text('print("Hello world?")\n')
    args = ["build", "--format", "docker", "--build-arg", f"BASE_IMAGE={base_image}",
            "--build-arg", "LANGUAGES=wrongpy", "-t", "localhost/pesto-test:wrong"]
    if HOST_CA.is_file():
        args += ["-v", f"{HOST_CA}:/run/pesto-build/ca.crt:ro"]
    proc = podman(*args, str(context), check=False, timeout=1800)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the build passed with a wrong hello world"
    assert "selftest wrongpy: FAILED" in log, log[-3000:]
    assert "Hello world?" in log      # the result is shown to whoever builds
    podman("rmi", "-f", "localhost/pesto-test:wrong", check=False)
