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
    # SUPPRESS: not given here, `pesto --config FILE serve` (the main parser's) still counts.
    parser.add_argument("--config", default=argparse.SUPPRESS,
                        help="a pesto.toml file (default: $PESTO_CONFIG)")


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(config_file=getattr(args, "config", None), data_dir=args.data_dir,
                         **overrides)


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
    token_sub = token.add_subparsers(dest="token_command", metavar="{create,list,revoke}")
    token_sub.required = True
    create = token_sub.add_parser("create", help="create a token and print it once (last line)")
    _common(create)
    create.add_argument("--name", required=True, help="unique name of the token")
    create.add_argument("--rate-limit", type=_positive, metavar="PER_MINUTE",
                        help="requests per minute")
    create.add_argument("--monthly-limit", type=_positive, metavar="N",
                        help="executions per calendar month (UTC)")
    create.add_argument("--max-concurrency", type=_positive, metavar="N",
                        help="jobs queued or running at once")
    create.set_defaults(func=cmd_token_create)
    listing = token_sub.add_parser("list", help="list tokens with limits and usage")
    _common(listing)
    listing.set_defaults(func=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token (effective immediately)")
    _common(revoke)
    revoke.add_argument("name")
    revoke.set_defaults(func=cmd_token_revoke)


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
    except (PestoError, OSError, RuntimeError) as exc:
        print(f"pesto serve: {getattr(exc, 'message', exc)}", file=sys.stderr)
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
    from pesto.store import Store

    store = await Store.open(settings.data_dir)
    try:
        return await action(store)
    finally:
        await store.close()


def cmd_token_create(args: argparse.Namespace) -> int:
    from pesto.api.auth import hash_token, new_token

    settings = _settings(args)
    secret = new_token()

    async def create(store: Any) -> Any:
        return await store.create_token(args.name, hash_token(secret),
                                        rate_limit=args.rate_limit,
                                        monthly_limit=args.monthly_limit,
                                        max_concurrency=args.max_concurrency)

    token = asyncio.run(_with_store(settings, create))
    if token is None:
        print(f"pesto token create: a token named {args.name!r} already exists "
              "(revoke it first or pick another name)", file=sys.stderr)
        return 1
    print(f"Created token {token.name!r} (rate limit: {_limit(token.rate_limit, '/min')}, "
          f"monthly limit: {_limit(token.monthly_limit)}, "
          f"max concurrency: {_limit(token.max_concurrency)}).")
    print("Store it now: it is shown only once. Send it as the X-Pesto-Token header.")
    print(secret)
    return 0


def _limit(value: int | None, unit: str = "") -> str:
    return "none" if value is None else f"{value}{unit}"


def cmd_token_list(args: argparse.Namespace) -> int:
    from pesto.store import utcnow

    settings = _settings(args)
    tokens = asyncio.run(_with_store(settings, lambda s: s.list_tokens(utcnow()[:7])))
    header = ("NAME", "CREATED", "LAST USED", "RATE/MIN", "MONTHLY", "CONCURRENCY",
              "USED THIS MONTH", "REVOKED")
    rows = [(t.name, t.created_at, t.last_used_at or "-", _limit(t.rate_limit),
             _limit(t.monthly_limit), _limit(t.max_concurrency), str(t.month_executions),
             t.revoked_at or "no") for t in tokens]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    settings = _settings(args)
    done = asyncio.run(_with_store(settings, lambda s: s.revoke_token(args.name)))
    if not done:
        print(f"pesto token revoke: no live token named {args.name!r}", file=sys.stderr)
        return 1
    print(f"Revoked token {args.name!r}.")
    return 0
