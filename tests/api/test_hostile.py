"""S11 (hostile requests) and S12 (100 concurrent mixed requests)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import (PY, S12_UIDS, Api, Server, add_token, assert_error,
                                wait_uids_free)

HELLO = {**PY, "code": "print(1)"}


def _canaries() -> list[Path]:
    tag = uuid.uuid4().hex
    return [Path(f"/tmp/pesto-s11-{tag}"), Path(f"/var/lib/pesto-sandbox/pesto-s11-{tag}"),
            Path(f"/var/lib/pesto-sandbox/work/pesto-s11-{tag}")]


def test_s11_hostile_file_names_are_400_and_write_nothing(api: Api) -> None:
    canaries = _canaries()
    tmp, sandbox, work = canaries
    names = [
        f"../../../../..{tmp}", f"../{tmp.name}", f"a/../../{tmp.name}", str(tmp), str(sandbox),
        f"..\\..\\{tmp.name}", f"{tmp.name}\x00.py", "\x00", "", ".", "./x.py", "a//b.py",
        "x" * 300, "bad\nname.py", f"../work/{work.name}",
    ]
    for name in names:
        for path in ("/api/execute", "/api/jobs"):
            files = [{"name": name, "code": "print('pwned')", "entrypoint": True}]
            err = assert_error(api.post(path, {**PY, "files": files}), 400, "INVALID_REQUEST")
            # Refused for its name, not for some other part of the files.
            assert any(d.startswith("$.files[0].name: ") for d in err.get("details", [])), err
    # The server still answers after all of them.
    assert api.get("/api/ping", token=None).status_code == 200
    for canary in canaries:
        assert not canary.exists()
    # Nothing was persisted for the rejected requests.
    assert api.services.scheduler.stats()["tracked"] == 0


def test_s11_programs_cannot_write_outside_their_work_dir(api: Api) -> None:
    canaries = _canaries()
    code = "\n".join(
        ["import os"]
        + [f"try:\n    open({str(c)!r}, 'w').write('x')\nexcept OSError as e:\n    print('denied')"
           for c in canaries]
        + ["try:\n    open('../../escape-" + canaries[0].name + "', 'w').write('x')\n"
           "except OSError:\n    print('denied')",
           "open('inside.txt', 'w').write('ok'); print(open('inside.txt').read())"])
    response = api.post("/api/execute", {**PY, "code": code})
    assert response.status_code == 200, response.text
    assert response.json()["runtime"]["stdout"].split() == ["denied"] * 4 + ["ok"]
    for canary in canaries:
        assert not canary.exists()


def test_s11_deep_json_is_400_not_500(api: Api) -> None:
    depth = 100_000
    bodies = [
        b"[" * depth + b"]" * depth,
        b'{"a":' * depth + b"1" + b"}" * depth,
        b'{"language":"python","code":"x","args":' + b"[" * depth + b"]" * depth + b"}",
        b'{"language":"python","code":"x","args":' + b"[" * 200 + b"]" * 200 + b"}",
        b'{"language":"python","files":[' + b'{"name":' * 300 + b'"x"' + b"}" * 300 + b"]}",
    ]
    for body in bodies:
        response = api.client.post("/api/execute", content=body,
                                   headers={**api.headers, "Content-Type": "application/json"})
        assert_error(response, 400, "INVALID_REQUEST")
    assert api.post("/api/execute", HELLO).status_code == 200


@pytest.mark.parametrize("raw", [
    b'{"language":"python","code":"print(1)","runTimeout":100000000000000000000000000000}',
    b'{"language":"python","code":"print(1)","runTimeout":1e3}',
    b'{"language":"python","code":"print(1)","runTimeout":NaN}',
    b'{"language":"python","code":"print(1)","memoryLimit":-1}',
    b'{"language":["python"],"code":"print(1)"}',
    b'{"language":"python","code":{"a":1}}',
    b'{"language":"python","files":[{"name":"a.py","code":"x","entrypoint":"yes"}]}',
    b'{"language":"python","files":[{"name":"a.py","code":"x"}, 5]}',
    b'{"language":"python","code":"x","language":"python","files":[]}',
    b'{"language":"\\u0000","code":"x"}',
    b'{"language":"python","files":[{"name":"\\u0000","code":"x"}]}',
    b'{"language":"python","files":[{"name":"\\ud800.py","code":"x"}]}',
])
def test_s11_wrong_values_are_4xx(api: Api, raw: bytes) -> None:
    response = api.client.post("/api/execute", content=raw,
                               headers={**api.headers, "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert set(body) >= {"code", "message"}


def test_s11_odd_but_valid_text_is_not_a_server_error(api: Api) -> None:
    for code in ("print('\\ud800')", "print('\u00e9\u4e2d')", "import sys; sys.stdout.buffer.write(b'\\xff\\xfe')"):
        response = api.post("/api/execute", {**PY, "code": code})
        assert response.status_code == 200, response.text
    response = api.client.post(
        "/api/execute", content=b'{"language":"python","code":"print(1) # \\ud800"}',
        headers={**api.headers, "Content-Type": "application/json"})
    assert response.status_code in (200, 400), response.text


def test_s11_huge_bodies(api: Api) -> None:
    assert_error(api.post("/api/execute", {**PY, "code": "x" * (2 << 20)}), 413, "REQUEST_TOO_LARGE")
    assert_error(api.post("/api/jobs", {**PY, "files": [{"name": f"{i}.py", "code": "#" * 60000}
                                                        for i in range(20)]}),
                 413, "REQUEST_TOO_LARGE")
    assert api.post("/api/execute", HELLO).status_code == 200


# --- S12 ------------------------------------------------------------------------



def _hostile_requests(token: str) -> list[tuple[str, dict, bytes, int | tuple[int, ...]]]:
    """(path, headers, body, acceptable statuses)."""
    js = {"Content-Type": "application/json", "X-Pesto-Token": token}
    dump = lambda obj: json.dumps(obj).encode()  # noqa: E731
    short = {"runTimeout": 1000, "memoryLimit": 64 << 20}
    return [
        ("/api/execute", js, dump({**PY, "files": [{"name": "../../etc/x", "code": "x"}]}), 400),
        ("/api/execute", js, dump({**PY, "files": [{"name": "/etc/passwd", "code": "x"}]}), 400),
        ("/api/jobs", js, dump({**PY, "files": [{"name": "a\x00b", "code": "x"}]}), 400),
        ("/api/execute", js, b"[" * 50000 + b"]" * 50000, 400),
        ("/api/execute", js, dump({**PY, "code": "#" * (1 << 21)}), 413),
        ("/api/execute", js, b"{not json", 400),
        ("/api/execute", js, dump({**PY, "code": 5}), 400),
        ("/api/execute", {"X-Pesto-Token": token}, dump(HELLO), 415),
        ("/api/execute", {"Content-Type": "application/json"}, dump(HELLO), 401),
        ("/api/execute", {**js, "X-Pesto-Token": "pesto_wrong"}, dump(HELLO), 401),
        ("/api/execute", js, dump({"language": "nolang", "code": "x"}), 400),
        # Hostile programs, with short limits, through the real sandbox.
        ("/api/execute", js, dump({**PY, **short, "code": "import os\nwhile True:\n    os.fork()"}), 200),
        ("/api/execute", js, dump({**PY, **short, "code": "while True: pass"}), 200),
        ("/api/execute", js, dump({**PY, **short, "code": "x = bytearray(1 << 30)"}), 200),
        ("/api/execute", js, dump({**PY, **short, "code": "while True: print('y' * 4096)"}), 200),
    ]


def test_s12_hundred_concurrent_mixed_requests(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    token = add_token(data_dir, "s12")
    server = Server(data_dir, "--workers", "4", "--log-level", "warning", uids=S12_UIDS)
    try:
        hostile = _hostile_requests(token)
        plan: list[tuple[str, dict, bytes, object]] = []
        for i in range(100):
            if i % 3 == 1:
                plan.append(hostile[i % len(hostile)])
            else:
                code = f"import sys; print({i}); print('err{i}', file=sys.stderr)"
                plan.append(("/api/execute", {"Content-Type": "application/json",
                                              "X-Pesto-Token": token},
                             json.dumps({**PY, "code": code}).encode(), i))

        async def one(client: httpx.AsyncClient, item) -> tuple[object, httpx.Response]:
            path, headers, body, expect = item
            return expect, await client.post(path, content=body, headers=headers)

        async def run_all():
            limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
            async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as c:
                return await asyncio.gather(*(one(c, item) for item in plan))

        results = asyncio.run(run_all())
        normal = 0
        for (path, headers, body, expect), (_, response) in zip(plan, results):
            if isinstance(expect, int) and expect >= 400:
                assert response.status_code == expect, (body[:100], response.text)
                assert set(response.json()) >= {"code", "message"}
            elif isinstance(expect, int) and expect == 200 and "pesto_wrong" not in str(headers) \
                    and b"print(" not in body:
                assert response.status_code == 200, response.text
                assert response.json()["runtime"]["status"] in ("error", "signal", "timeout",
                                                               "memory", "output"), response.text
            else:
                i = expect
                assert response.status_code == 200, response.text
                run = response.json()["runtime"]
                assert run["status"] == "ok" and run["stdout"] == f"{i}\n", run
                assert run["stderr"] == f"err{i}\n"
                normal += 1
        assert normal >= 60
        health = httpx.get(server.url + "/healthz")
        assert health.json() == {"status": "ok"}
        # No slot leak: as many jobs as workers run at once, straight away.
        async def burst():
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
                return await asyncio.gather(*(c.post("/api/execute", json=HELLO,
                                                     headers={"X-Pesto-Token": token})
                                              for _ in range(8)))
        assert all(r.json()["runtime"]["stdout"] == "1\n" for r in asyncio.run(burst()))
    finally:
        server.stop()
    # No uid leak: every lease of our range is released and its work dir gone.
    assert wait_uids_free(Path("/var/lib/pesto-sandbox"), *S12_UIDS) == []
