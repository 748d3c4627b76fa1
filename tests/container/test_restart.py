"""The named volume keeps tokens and jobs across a restart and across
replacing the container (what an upgrade does)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.container.helpers import Container, execute, podman

pytestmark = pytest.mark.container


def test_restart_keeps_tokens_and_jobs(image: str) -> None:
    volume = f"pesto-test-restart-{uuid.uuid4().hex[:8]}"
    first = Container(image, volume)
    second: Container | None = None
    try:
        first.start()
        secret = first.create_token("keeper")
        with first.client(secret) as api:
            language = api.get("/api/runtimes").json()["runtime"][0]["aliases"][0]
            done = execute(api, language, "", runTimeout=3000)
            r = api.post("/api/jobs", json={"language": language, "code": "", "runTimeout": 3000})
            assert r.status_code == 202, r.text
            queued = r.json()["id"]
            deadline = time.monotonic() + 60
            while api.get(f"/api/jobs/{queued}").json()["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.2)

        # `podman restart`: same container, same volume.
        t0 = time.monotonic()
        podman("restart", "-t", "15", first.name, timeout=90)
        assert time.monotonic() - t0 < 14, "the server did not stop on SIGTERM (is tini forwarding it?)"
        first.wait_healthy()
        with first.client(secret) as api:
            assert api.get(f"/api/jobs/{done['id']}").status_code == 200

        # Replace the container, keep the volume: an upgrade.
        stopped = first.stop()
        assert stopped.returncode == 0, stopped.stderr
        code = podman("inspect", "--format", "{{.State.ExitCode}}", first.name).stdout.strip()
        assert code != "137", "SIGTERM did not stop the server; podman had to SIGKILL it"
        first.remove()
        second = Container(image, volume).start()
        with second.client(secret) as api:
            for job_id in (done["id"], queued):
                r = api.get(f"/api/jobs/{job_id}")
                assert r.status_code == 200, f"job {job_id} lost: {r.status_code} {r.text}"
                body = r.json()
                assert body["status"] == "completed", json.dumps(body)[:2000]
                assert body["result"]["runtime"]["status"] == done["runtime"]["status"]
            again = execute(api, language, "", runTimeout=3000)
            assert again["runtime"]["status"] == done["runtime"]["status"]
        listing = second.exec("pesto", "token", "list").stdout
        assert "keeper" in listing
    finally:
        first.remove()
        if second is not None:
            second.remove()
        podman("volume", "rm", "-f", volume, check=False)
