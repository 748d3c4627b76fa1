"""`pesto serve` and `pesto token ...`, registered into the main CLI by `add_commands`.

Thin: flags → Settings → create_app → uvicorn; token commands → Store.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from typing import Any

from pesto.config import Settings, load_settings
from pesto.errors import PestoError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="directory of the SQLite file (default /var/lib/pesto)")
    parser.add_argument("--store", metavar="URL",
                        help="sqlite:///dir (default: the data dir) or postgresql://... "
                             "shared by many nodes (default: $PESTO_STORE_URL)")
    # SUPPRESS: not given here, `pesto --config FILE serve` (the main parser's) still counts.
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="a pesto.toml file (default: $PESTO_CONFIG)")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(config_file=getattr(args, "config", None), data_dir=args.data_dir,
                         store_url=args.store, **overrides)


def _limit_flags(parser: argparse.ArgumentParser, default: str = "") -> None:
    parser.add_argument("--rate-limit", type=_positive, metavar="PER_MINUTE",
                        help="requests per minute" + default)
    parser.add_argument("--monthly-limit", type=_positive, metavar="N",
                        help="executions per calendar month (UTC)" + default)
    parser.add_argument("--max-concurrency", type=_positive, metavar="N",
                        help="jobs queued or running at once" + default)


def add_commands(subparsers: Any) -> None:
    """Add `serve` and `token` to the main CLI's subparsers."""
    serve = subparsers.add_parser("serve", help="run the HTTP API server")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve.add_argument("--workers", type=_positive, help="jobs run at once (default: CPU count)")
    serve.add_argument("--queue-size", type=int, help="jobs waiting at most (default 500)")
    serve.add_argument("--log-level", default="info",
                       choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", default="text", choices=["text", "json"],
                       help="text lines (default) or one JSON object per line")
    serve.add_argument("--access-log", action="store_true", help="log every HTTP request")
    serve.set_defaults(func=cmd_serve)

    token = subparsers.add_parser("token", help="create, list and revoke API tokens")
    token_sub = token.add_subparsers(
        dest="token_command", metavar="{create,list,revoke,secret,requests,approve,reject}")
    token_sub.required = True
    create = token_sub.add_parser("create", help="create a token and print it once (last line)")
    _common(create)
    create.add_argument("--name", required=True, help="unique name of the token")
    _limit_flags(create)
    create.set_defaults(func=cmd_token_create)
    listing = token_sub.add_parser("list", help="list tokens with limits and usage")
    _common(listing)
    listing.set_defaults(func=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token (effective immediately)")
    _common(revoke)
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_token_revoke)
    _request_commands(token_sub)
    secret = token_sub.add_parser(
        "secret", help="give a token a new callback signing secret and print it once (last line)")
    _common(secret)
    secret.add_argument("name")
    secret.set_defaults(func=cmd_token_secret)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pesto.api import create_app

    try:
        settings = _settings(args, host=args.host, port=args.port, workers=args.workers,
                             queue_size=args.queue_size)
    except PestoError as exc:
        print(f"pesto serve: {exc.message}", file=sys.stderr)
        return 2
    try:
        # Open (create, migrate) the store once up front, so that a bad data dir
        # is one clear line here rather than a traceback from the lifespan.
        asyncio.run(_with_store(settings, lambda store: store.schema_version()))
    except Exception as exc:    # a bad data dir, an unreachable database, a newer schema
        print(f"pesto serve: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    # The same for paths a run's uid must (not) reach: one clear refusal here
    # (the spawner checks again, with the namespaces it found, as the
    # server starts). pesto/sandbox/reach.py
    from pesto.sandbox import reach
    problems, _ = reach.check_settings(settings,
                                       private_tmp="namespaces" not in settings.disable)
    if problems:
        print("pesto serve: runs could not work on this host as laid out:\n  "
              + "\n  ".join(problems) + "\n(`pesto doctor` shows the same)", file=sys.stderr)
        return 2
    from pesto.logs import configure

    configure(getattr(logging, args.log_level.upper()), args.log_format)
    # JSON: uvicorn's own loggers go through our handler too (no log config of its own).
    own_logging: dict[str, Any] = {"log_config": None} if args.log_format == "json" else {}
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=args.log_level, access_log=args.access_log, lifespan="on",
                **own_logging,
                # Both are dependencies (pyproject.toml); named so that a broken
                # install fails here instead of silently serving on h11/asyncio.
                loop="uvloop", http="httptools",
                # In-flight requests (a waiting /api/execute) get the same grace as jobs.
                timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_timeout)),
                server_header=False)
    return 0


async def _with_store(settings: Settings, action: Any) -> Any:
    from pesto.stores import open_store

    store = await open_store(settings)
    try:
        return await action(store)
    finally:
        await store.close()


def cmd_token_create(args: argparse.Namespace) -> int:
    from pesto.api.auth import hash_token, new_token

    settings = _settings(args)
    secret = new_token()

    async def create(store: Any) -> Any:
        made = await store.create_token(args.name, hash_token(secret),
                                        rate_limit=args.rate_limit,
                                        monthly_limit=args.monthly_limit,
                                        max_concurrency=args.max_concurrency)
        return made, made and await store.callback_secret(made.id)

    token, callback_secret = asyncio.run(_with_store(settings, create))
    if token is None:
        print(f"pesto token create: a token named {args.name!r} already exists "
              "(revoke it first or pick another name)", file=sys.stderr)
        return 1
    print(f"Created token {token.name!r} (rate limit: {_limit(token.rate_limit, '/min')}, "
          f"monthly limit: {_limit(token.monthly_limit)}, "
          f"max concurrency: {_limit(token.max_concurrency)}).")
    print(f"Callback signing secret (X-Pesto-Signature, docs/judging.md): {callback_secret}")
    print("Store both now: they are shown only once. Send the token as the X-Pesto-Token header.")
    print(secret)
    return 0


def _limit(value: int | None, unit: str = "") -> str:
    return "none" if value is None else f"{value}{unit}"


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def cmd_token_list(args: argparse.Namespace) -> int:
    from pesto.clock import month_of, utcnow

    settings = _settings(args)
    tokens = asyncio.run(_with_store(settings, lambda s: s.list_tokens(month_of(utcnow()))))
    header = ("NAME", "CREATED", "LAST USED", "RATE/MIN", "MONTHLY", "CONCURRENCY",
              "USED THIS MONTH", "REVOKED")
    rows = [(t.name, t.created_at, t.last_used_at or "-", _limit(t.rate_limit),
             _limit(t.monthly_limit), _limit(t.max_concurrency), str(t.month_executions),
             t.revoked_at or "no") for t in tokens]
    _print_table(header, rows)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    done = asyncio.run(_with_store(settings, lambda s: s.revoke_token(args.name)))
    if not done:
        print(f"pesto token revoke: no live token named {args.name!r}", file=sys.stderr)
        return 1
    print(f"Revoked token {args.name!r}.")
    return 0


# --- token requests (the form on the page at /; docs/front-door.md) -----------

def _request_commands(token_sub: Any) -> None:
    requests = token_sub.add_parser("requests", help="list token requests from the web page")
    _common(requests)
    requests.add_argument("--pending", action="store_true", help="only those waiting for review")
    requests.set_defaults(func=cmd_token_requests)
    approve = token_sub.add_parser(
        "approve", help="issue the token of a request (the visitor claims it on the page)")
    _common(approve)
    approve.add_argument("id", type=_positive, help="the request's ID (pesto token requests)")
    _limit_flags(approve, " (default: the trial_* setting)")
    approve.set_defaults(func=cmd_token_approve)
    reject = token_sub.add_parser("reject", help="decline a request")
    _common(reject)
    reject.add_argument("id", type=_positive)
    reject.add_argument("--reason", help="shown to the visitor when they claim")
    reject.set_defaults(func=cmd_token_reject)


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def cmd_token_requests(args: argparse.Namespace) -> int:
    settings = _settings(args)
    found = asyncio.run(_with_store(settings, lambda s: s.token_requests(args.pending)))
    header = ("ID", "STATUS", "CREATED", "NAME", "EMAIL", "ADDRESS", "PURPOSE")
    rows = [(str(r.id), r.status.value, r.created_at, _one_line(r.name, 30), r.email, r.address,
             _one_line(r.purpose + (f" [rejected: {r.reason}]" if r.reason else ""), 60))
            for r in found]
    _print_table(header, rows)
    return 0


def cmd_token_approve(args: argparse.Namespace) -> int:
    from pesto.api import claim
    from pesto.api.auth import hash_token, new_token
    from pesto.api.front import token_name, trial_limits
    from pesto.domain import RequestStatus
    from pesto.errors import RequestRefused

    settings = _settings(args)
    limits = trial_limits(settings)
    for key in limits:
        if getattr(args, key) is not None:
            limits[key] = getattr(args, key)
    secret = new_token()
    emails: list[str] = []

    async def approve(store: Any) -> Any:
        found = await store.token_request(args.id)
        if found is None:
            return "no token request with ID %d" % args.id
        request, public_key = found
        emails.append(request.email)
        if request.status is not RequestStatus.PENDING:
            return f"token request {args.id} is {request.status.value}, not pending"
        done = await store.approve_token_request(
            args.id, token_name(request.email), hash_token(secret),
            claim.seal(secret, public_key), limits)
        return request if done else f"token request {args.id} is no longer pending"

    try:
        request = asyncio.run(_with_store(settings, approve))
    except RequestRefused:
        print(f"pesto token approve: a live token is already called {token_name(emails[0])!r}; "
              "revoke it first", file=sys.stderr)
        return 1
    if isinstance(request, str):
        print(f"pesto token approve: {request}", file=sys.stderr)
        return 1
    print(f"Approved request {args.id} of {request.email}: token {token_name(request.email)!r} "
          f"(rate limit: {_limit(limits['rate_limit'], '/min')}, "
          f"monthly limit: {_limit(limits['monthly_limit'])}, "
          f"max concurrency: {_limit(limits['max_concurrency'])}).")
    print("The visitor sees it once, on the page, with the claim code.")
    if settings.smtp_url:
        try:
            claim.send_token_email(settings.smtp_url, settings.smtp_from, request.email,
                                   request.name, secret)
        except Exception as exc:
            print(f"pesto token approve: mailing {request.email} failed ({exc}); "
                  "the visitor can still claim the token on the page", file=sys.stderr)
            return 0
        print(f"Mailed to {request.email}.")
    return 0


def cmd_token_reject(args: argparse.Namespace) -> int:
    settings = _settings(args)
    done = asyncio.run(_with_store(settings, lambda s: s.reject_token_request(args.id, args.reason)))
    if not done:
        print(f"pesto token reject: no pending token request with ID {args.id}", file=sys.stderr)
        return 1
    print(f"Rejected request {args.id}.")
def cmd_token_secret(args: argparse.Namespace) -> int:
    import secrets

    settings = _settings(args)
    secret = secrets.token_hex(32)
    done = asyncio.run(_with_store(settings, lambda s: s.set_callback_secret(args.name, secret)))
    if not done:
        print(f"pesto token secret: no live token named {args.name!r}", file=sys.stderr)
        return 1
    print(f"New callback signing secret of token {args.name!r}; the old one no longer signs. "
          "Store it now: it is shown only once.")
    print(secret)
    return 0
