"""The page at / and the token-request routes over the real app, a real SQLite file,
the real `pesto token` commands and a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from pesto.api import claim
from pesto.domain import RequestStatus
from pesto.store import DB_NAME, MIGRATIONS, Store
from tests.api.conftest import (Api, assert_error, free_port, pesto_cli,
                                running_app, sqlite_only, store_args, store_url, with_store)

FORM = {"name": "Ada", "email": "Ada@Example.org", "purpose": "a course on engines"}
WEB = Path(__file__).resolve().parents[2] / "pesto" / "web"


def _requests(data_dir: Path, pending_only: bool = False) -> list[Any]:
    return with_store(data_dir, lambda store: store.token_requests(pending_only))


def _database_bytes(data_dir: Path) -> bytes:
    """Everything the store holds: the SQLite files, or a dump of every PostgreSQL table."""
    url = store_url(data_dir)
    if url is None:
        return b"".join(p.read_bytes() for p in data_dir.iterdir() if p.name.startswith(DB_NAME))
    dump = subprocess.run(["pg_dump", "--data-only", url], capture_output=True, check=True)
    return dump.stdout


def _ask(api: Api, body: Any = FORM, **kw: Any) -> Any:
    return api.post("/api/token-requests", body, token=None, **kw)


def _claim(api: Api, code: str) -> Any:
    return api.post("/api/token-requests/claim", {"claimCode": code}, token=None)


def _approve(data_dir: Path, request_id: int, *extra: str) -> str:
    return pesto_cli("token", "approve", str(request_id), "--data-dir", str(data_dir),
                     *store_args(data_dir), *extra).stdout


# --- the page -------------------------------------------------------------------

def test_page_and_files_carry_security_headers(api: Api) -> None:
    for path in ("/", "/docs", "/web/api.js", "/web/app.js", "/web/style.css", "/web/favicon.svg", "/web/page.json"):
        r = api.get(path, token=None)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe" not in csp and "http" not in csp      # no inline code, no other origin
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert api.get("/", token=None).headers["content-type"].startswith("text/html")
    assert api.get("/web/app.js", token=None).headers["content-type"].startswith("text/javascript")
    for link in ("/docs", "/schema", "/schema/openapi.json"):  # the pages' links
        assert api.get(link, token=None).status_code == 200
    assert_error(api.get("/web/../pesto/store.py", token=None), 404, "NOT_FOUND")
    assert_error(api.get("/web/missing.js", token=None), 404, "NOT_FOUND")


def test_page_files_have_no_inline_code_and_no_other_origin() -> None:
    html = (WEB / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []      # every script is a file
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)    # no inline style or handler
    for path in WEB.iterdir():
        text = path.read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text.replace(
            'http://www.w3.org/2000/svg', "")), path                # nothing from elsewhere
        assert ".innerHTML" not in text and "insertAdjacentHTML" not in text, path


def test_samples_are_the_language_folders_test_programs(api: Api) -> None:
    data = api.get("/web/page.json", token=None).json()
    assert data["tokenRequests"] == "review"
    samples = data["samples"]
    installed = api.services.engine.registry.installed
    assert len(samples) == len(installed) > 0
    for sample, runtime in zip(samples, installed):
        assert (sample["language"], sample["version"]) == (runtime.language, runtime.version)
        assert sample["code"] == runtime.test_file.read_text()


# --- asking, approving, claiming ---------------------------------------------------

def test_request_approve_claim_once_and_run(api: Api) -> None:
    r = _ask(api)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    code = r.json()["claimCode"]
    assert r.json() == {"status": "pending", "claimCode": code}
    assert _claim(api, code).json() == {"status": "pending"}
    (request,) = _requests(api.data_dir, pending_only=True)
    assert (request.name, request.email, request.status) == ("Ada", "ada@example.org", RequestStatus.PENDING)

    out = _approve(api.data_dir, request.id, "--monthly-limit", "7", "--rate-limit", "30")
    assert "ada@example.org" in out
    answer = _claim(api, code)
    assert answer.status_code == 200
    token = answer.json()["token"]
    assert answer.json() == {"status": "claimed", "token": token}
    assert_error(_claim(api, code), 410, "ALREADY_CLAIMED")           # shown once

    listing = pesto_cli("token", "list", "--data-dir", str(api.data_dir),
                        *store_args(api.data_dir)).stdout
    row = next(line for line in listing.splitlines() if "request:ada@example.org" in line)
    assert row.split()[3:6] == ["30", "7", "2"]     # the flags, and trial_max_concurrency
    ran = api.post("/api/execute", {"language": "python", "code": "print(input()*2)",
                                    "stdin": "ab"}, token=token)
    assert ran.status_code == 200, ran.text
    assert ran.json()["runtime"]["stdout"] == "abab\n"

    # Neither the token nor the claim code is in the database, readable.
    assert token.encode() not in _database_bytes(api.data_dir)
    assert code.encode() not in _database_bytes(api.data_dir)


def test_reject_shows_the_reason_and_frees_the_email(api: Api, data_dir: Path) -> None:
    code = _ask(api).json()["claimCode"]
    (request,) = _requests(data_dir)
    pesto_cli("token", "reject", str(request.id), "--reason", "not a course", "--data-dir",
              str(data_dir), *store_args(data_dir))
    assert _claim(api, code).json() == {"status": "rejected", "reason": "not a course"}
    again = pesto_cli("token", "approve", str(request.id), "--data-dir", str(data_dir),
                      *store_args(data_dir), check=False)
    assert again.returncode == 1 and "rejected, not pending" in again.stderr
    assert _ask(api).status_code == 201          # a rejected email may ask again


def test_claim_routes_cannot_enumerate(api: Api) -> None:
    _ask(api)
    assert_error(_claim(api, "claim_" + "A" * 43), 404, "NOT_FOUND")
    assert_error(_claim(api, "1"), 404, "NOT_FOUND")
    assert_error(api.post("/api/token-requests/claim", {"id": 1}, token=None),
                 400, "INVALID_REQUEST")
    assert_error(api.get("/api/token-requests", token=None), 405, "METHOD_NOT_ALLOWED")
    assert_error(api.get("/api/token-requests/1", token=None), 404, "NOT_FOUND")


def test_duplicate_email_is_refused_clearly(api: Api, data_dir: Path) -> None:
    assert _ask(api).status_code == 201
    body = assert_error(_ask(api, {**FORM, "email": " ada@EXAMPLE.org "}), 409, "DUPLICATE_REQUEST")
    assert "already exists" in body["message"]
    assert len(_requests(data_dir)) == 1


@pytest.mark.parametrize("form, problem", [
    ({**FORM, "name": "x" * 101}, "$.name: at most 100 characters"),
    ({**FORM, "email": "a@" + "b" * 250 + ".org"}, "$.email: at most 254 characters"),
    ({**FORM, "purpose": "p" * 2001}, "$.purpose: at most 2000 characters"),
    ({**FORM, "name": "  "}, "$.name: required"),
    ({**FORM, "email": "not-an-address"}, "$.email: not an email address"),
    ({**FORM, "name": "Ada\nApproved: yes"}, "$.name: control characters are not allowed"),
    ({**FORM, "name": 5}, "$.name: required"),
    ({**FORM, "admin": True}, "$.admin: unknown field"),
    ({"name": "Ada"}, "$.email: required"),
])
def test_bad_forms_are_refused_and_nothing_is_stored(data_dir: Path, form: dict,
                                                     problem: str) -> None:
    with running_app(data_dir) as api:
        body = assert_error(_ask(api, form), 400, "INVALID_REQUEST")
        assert problem in body["details"], body
        assert problem in body["message"]
    assert _requests(data_dir) == []


def test_not_json_is_refused(api: Api) -> None:
    r = api.client.post("/api/token-requests", content=b"name=a&email=b",
                        headers={"content-type": "application/x-www-form-urlencoded"})
    assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    r = api.client.post("/api/token-requests", content=b"{nope",
                        headers={"content-type": "application/json"})
    assert_error(r, 400, "INVALID_REQUEST")
    assert_error(_ask(api, ["a list"]), 400, "INVALID_REQUEST")
    r = api.client.post("/api/token-requests", content=b'{"name":"' + b"x" * 20000 + b'"}',
                        headers={"content-type": "application/json"})
    assert_error(r, 413, "REQUEST_TOO_LARGE")


def test_per_address_rate_limit_counts_bad_forms_too(data_dir: Path) -> None:
    with running_app(data_dir, token_requests_per_hour=3) as api:
        assert _ask(api, {"bad": 1}).status_code == 400
        assert _ask(api).status_code == 201
        assert _ask(api, {**FORM, "email": "b@example.org"}).status_code == 201
        body = assert_error(_ask(api, {**FORM, "email": "c@example.org"}), 429, "RATE_LIMITED")
        assert "too many token requests" in body["message"]
    assert len(_requests(data_dir)) == 2


def test_pending_requests_are_bounded(data_dir: Path) -> None:
    with running_app(data_dir, token_requests_pending_max=2) as api:
        for n in range(2):
            assert _ask(api, {**FORM, "email": f"u{n}@example.org"}).status_code == 201
        assert_error(_ask(api, {**FORM, "email": "u9@example.org"}), 503, "TOO_MANY_PENDING")
        assert len(_requests(data_dir)) == 2
        pesto_cli("token", "reject", "1", "--data-dir", str(data_dir), *store_args(data_dir))
        assert _ask(api, {**FORM, "email": "u9@example.org"}).status_code == 201


def test_off_refuses_requests(data_dir: Path) -> None:
    with running_app(data_dir, token_requests="off") as api:
        assert_error(_ask(api), 403, "TOKEN_REQUESTS_OFF")
    assert _requests(data_dir) == []


def test_auto_issues_a_trial_token_at_once(data_dir: Path) -> None:
    with running_app(data_dir, token_requests="auto", trial_monthly_limit=1,
                     trial_rate_limit=None) as api:
        r = _ask(api)
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        assert r.json() == {"status": "claimed", "token": token}
        code = {"language": "python", "code": "print(1)"}
        assert api.post("/api/execute", code, token=token).status_code == 200
        assert_error(api.post("/api/execute", code, token=token), 429, "QUOTA_EXCEEDED")
        assert_error(_ask(api), 409, "DUPLICATE_REQUEST")
    (request,) = _requests(data_dir)
    assert request.status is RequestStatus.CLAIMED and request.token_id is not None


def test_auto_stores_nothing_when_the_token_cannot_be_made(data_dir: Path) -> None:
    # A live token already has the name the request's token would get: the
    # request must not be stored without its token.
    pesto_cli("token", "create", "--name", "request:ada@example.org", "--data-dir", str(data_dir),
              *store_args(data_dir))
    with running_app(data_dir, token_requests="auto") as api:
        assert_error(_ask(api), 409, "DUPLICATE_REQUEST")
    assert _requests(data_dir) == []


def test_racing_claims_get_the_token_once(tmp_path: Path) -> None:
    async def run() -> list[Any]:
        store = await Store.open(tmp_path / "data")
        try:
            code = claim.new_claim_code()
            await store.add_token_request(
                name="n", email="e@x.org", purpose="p", address="a",
                claim_hash=claim.claim_hash(code), public_key=claim.public_key(code),
                max_pending=5)
            (request,) = await store.token_requests()
            assert await store.approve_token_request(
                request.id, "t", "hash", claim.seal("pesto_secret", claim.public_key(code)), {})
            got = await asyncio.gather(*(store.take_sealed_token(claim.claim_hash(code))
                                         for _ in range(5)))
            return [claim.open_sealed(g, code) if g else None for g in got]
        finally:
            await store.close()
    got = asyncio.run(run())
    assert got.count("pesto_secret") == 1 and got.count(None) == 4


def test_sealed_token_opens_only_with_its_code() -> None:
    code, other = claim.new_claim_code(), claim.new_claim_code()
    sealed = claim.seal("pesto_x", claim.public_key(code))
    assert claim.open_sealed(sealed, code) == "pesto_x"
    from cryptography.exceptions import InvalidTag
    with pytest.raises(InvalidTag):
        claim.open_sealed(sealed, other)


def test_schema_2_migrates_to_token_requests(data_dir: Path) -> None:
    sqlite_only(data_dir, "a SQLite file of schema 2 (PostgreSQL: test_cluster's migrations)")
    data_dir.mkdir(mode=0o700)
    db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None)
    db.executescript("BEGIN;" + MIGRATIONS[0] + MIGRATIONS[1] + "PRAGMA user_version = 2; COMMIT;")
    db.execute("INSERT INTO tokens (name, hash, created_at) VALUES ('t', 'hash-t', 'x')")
    db.close()
    with running_app(data_dir) as api:
        assert _ask(api).status_code == 201
    assert len(_requests(data_dir)) == 1
    assert "t" in pesto_cli("token", "list", "--data-dir", str(data_dir)).stdout.split()


# --- email ----------------------------------------------------------------------

class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, inbox
    controller.stop()


def test_approval_is_mailed_when_smtp_is_configured(data_dir: Path, smtp: Any,
                                                    tmp_path: Path) -> None:
    port, inbox = smtp
    config = tmp_path / "pesto.toml"
    config.write_text(f'smtp_url = "smtp://127.0.0.1:{port}"\nsmtp_from = "ops@pesto.test"\n')
    with running_app(data_dir) as api:
        code = _ask(api).json()["claimCode"]
        (request,) = _requests(data_dir)
        out = pesto_cli("--config", str(config), "token", "approve", str(request.id),
                        "--data-dir", str(data_dir), *store_args(data_dir)).stdout
        assert "Mailed to ada@example.org" in out
        token = _claim(api, code).json()["token"]
    ((to, message),) = inbox.messages
    assert to == ["ada@example.org"] and message["From"] == "ops@pesto.test"
    assert token in message.get_payload(decode=True).decode()


def test_auto_mode_mails_the_token(data_dir: Path, smtp: Any) -> None:
    port, inbox = smtp
    with running_app(data_dir, token_requests="auto",
                     smtp_url=f"smtp://127.0.0.1:{port}") as api:
        token = _ask(api).json()["token"]
        for _ in range(100):           # sent after the answer, from a thread
            if inbox.messages:
                break
            asyncio.run(asyncio.sleep(0.05))
    ((to, message),) = inbox.messages
    assert to == ["ada@example.org"]
    assert token in message.get_payload(decode=True).decode()


def test_approve_refuses_when_the_token_name_is_taken(api: Api, data_dir: Path) -> None:
    _ask(api)
    pesto_cli("token", "create", "--name", "request:ada@example.org", "--data-dir", str(data_dir),
              *store_args(data_dir))
    out = pesto_cli("token", "approve", "1", "--data-dir", str(data_dir), *store_args(data_dir),
                    check=False)
    assert out.returncode == 1 and "already called 'request:ada@example.org'" in out.stderr
    (request,) = _requests(data_dir)
    assert request.status is RequestStatus.PENDING and request.token_id is None   # nothing half-done


def test_limits_count_an_ipv6_client_by_its_64() -> None:
    from pesto.api.front import address_key

    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") \
        == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("testclient") == "testclient"


def test_form_posts_and_jobs_at_once_all_succeed(data_dir: Path) -> None:
    # A request's transaction must never hold the write lock across steps of
    # the loop, or a job insert on the loop's connection would wait for it.
    from concurrent.futures import ThreadPoolExecutor

    with running_app(data_dir, token_requests_per_hour=100) as api:
        def form(n: int) -> int:
            return _ask(api, {**FORM, "email": f"u{n}@example.org"}).status_code

        def job(n: int) -> int:
            return api.post("/api/execute", {"language": "python", "code": f"print({n})"}).status_code

        with ThreadPoolExecutor(16) as pool:
            forms = [pool.submit(form, n) for n in range(24)]
            jobs = [pool.submit(job, n) for n in range(24)]
            assert [f.result() for f in forms] == [201] * 24
            assert [j.result() for j in jobs] == [200] * 24
    assert len(_requests(data_dir)) == 24
