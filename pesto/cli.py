"""`pesto` command line: run, languages, doctor (+ serve/token from pesto.api.cli).

Thin: parse flags → Settings → call into the engine or the app.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

import msgspec

from pesto.config import load_settings
from pesto.errors import PestoError
from pesto.sandbox.status import Status
from pesto.validation import validate_request


def _settings(args: argparse.Namespace, **extra):
    return load_settings(config_file=getattr(args, "config", None),
                         data_dir=getattr(args, "data_dir", None),
                         store_url=getattr(args, "store", None), **extra)


def cmd_run(args: argparse.Namespace) -> int:
    from pesto.engine import Engine

    settings = _settings(args)
    code = Path(args.file).read_text() if args.file != "-" else sys.stdin.read()
    # The body a client would send, validated as the API validates it.
    body = {"language": args.language, "version": args.version, "code": code,
            "stdin": args.stdin or "", "args": args.arg or [], "runTimeout": args.run_timeout,
            "compileTimeout": args.compile_timeout, "memoryLimit": args.memory_limit}

    async def go():
        engine = await Engine.start(settings)
        try:
            request = validate_request(body, settings, engine.registry)
            return await engine.execute(request, uuid.uuid4().hex)
        finally:
            await engine.close()

    result = asyncio.run(go())
    if args.json:
        print(json.dumps(msgspec.to_builtins(result), indent=2))
    else:
        for name, stage in (("compile", result.compile), ("run", result.runtime)):
            if stage.status == Status.SKIPPED:
                continue
            sys.stdout.write(stage.stdout)
            sys.stderr.write(stage.stderr)
            print(f"[{name}: {stage.status.value}, exit {stage.exit_code}, "
                  f"{stage.wall_time} ms wall, {stage.cpu_time} ms cpu, "
                  f"{stage.memory // 1024} KiB{', truncated' if stage.truncated else ''}]",
                  file=sys.stderr)
    final = result.runtime if result.runtime.status != Status.SKIPPED else result.compile
    return 0 if final.status == Status.OK else 1


def cmd_languages(args: argparse.Namespace) -> int:
    from pesto.runtimes import load_registry

    registry = load_registry(_settings(args).languages_dir)
    rows = registry.all if args.all else registry.installed
    if args.json:
        print(json.dumps([{"id": r.id, "language": r.language, "version": r.version,
                           "aliases": r.spec.aliases, "compiled": r.compiled,
                           "installed": r.installed} for r in rows], indent=2))
        return 0
    for r in rows:
        mark = "" if r.installed else "  (not installed)"
        print(f"{r.id:<12} {r.language:<14} {r.version:<10} {', '.join(r.spec.aliases)}{mark}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from pesto.sandbox.context import probe
    from pesto.sandbox.helper import HelperMissing

    settings = _settings(args)
    try:
        ctx = probe(uid_base=settings.uid_base, uid_count=settings.uid_count,
                    sandbox_dir=str(settings.sandbox_dir), disable=settings.disable)
    except HelperMissing as exc:
        print(f"pesto doctor: no sandbox: {exc}", file=sys.stderr)
        return 1
    report = ctx.report()
    missing = [name for name in settings.require if not report[name]["enabled"]]
    paths = doctor_paths(settings, ctx)
    memory = doctor_memory(settings, ctx)
    if args.json:
        print(json.dumps({**report, "paths": paths, "memory": memory}, indent=2))
    else:
        for name, layer in report.items():
            state = "on " if layer["enabled"] else ("off" if layer["available"] else "n/a")
            print(f"{name:<11} {state}  {layer['reason']}")
        print(f"{'paths':<11} {'ok ' if paths['ok'] else 'BAD'}  "
              + ("\n                 ".join(paths["problems"]) or paths["reason"]))
        print(f"{'memory':<11} {'on ' if memory['cgroup'] else 'rl '}  "
              + "\n                 ".join(memory["how"]))
        safe = {k: v for k, v in (("data_dir", settings.data_dir),
                                  ("sandbox_dir", settings.sandbox_dir),
                                  ("languages_dir", settings.languages_dir),
                                  ("workers", settings.workers),
                                  ("pin_cpus", settings.pin_cpus),
                                  ("admin_token", "***" if settings.admin_token else None),
                                  ("metrics_token", "***" if settings.metrics_token else None))}
        print("config:", ", ".join(f"{k}={v}" for k, v in safe.items()))
        _print_store(settings)
        if missing:
            print(f"required layers missing: {', '.join(missing)}", file=sys.stderr)
        if not paths["ok"]:
            print("runs cannot work on this host as laid out (see paths above); "
                  "`pesto serve` refuses to start", file=sys.stderr)
    return 1 if missing or not paths["ok"] else 0


def doctor_memory(settings, ctx) -> dict:
    """Which mechanism holds memoryLimit here (pesto/sandbox/memory.py)."""
    from pesto.runtimes import load_registry
    from pesto.sandbox import memory

    cgroup = ctx.layers["cgroups"].enabled
    return {"cgroup": cgroup, "how": memory.host_report(
        cgroup, load_registry(settings.languages_dir).installed)}


def doctor_paths(settings, ctx) -> dict:
    """The start-up path check (pesto/sandbox/reach.py), as doctor shows it."""
    from pesto.sandbox import reach

    problems, count = reach.check_settings(settings, private_tmp=ctx.namespaces)
    return {"ok": not problems, "problems": problems,
            "reason": f"a run's uid reaches the work root and the files of "
                      f"{count} installed language(s), not the data dir"}


def _print_store(settings) -> None:
    """The store, this host's node name and, on PostgreSQL, the live nodes."""
    from pesto.stores import is_postgres

    if not is_postgres(settings.store_url):
        print(f"store: sqlite in {settings.store_url or settings.data_dir} (single node)")
        return
    import socket

    from pesto.pgstore import PgStore, safe_url

    name = settings.node_name or f"{socket.gethostname()}:<pid>"
    print(f"store: {safe_url(settings.store_url)} (cluster; this node is named {name}; "
          f"a node's id is chosen when `pesto serve` starts)")

    async def live():
        store = await PgStore.open(settings.store_url)
        try:
            return await store.schema_version(), await store.nodes(settings.node_lease)
        finally:
            await store.close()

    try:
        version, nodes = asyncio.run(live())
    except Exception as exc:
        print(f"store: cannot reach the database: {exc}", file=sys.stderr)
        return
    print(f"store: schema version {version}, {len(nodes)} live node(s)"
          f" (heartbeat within {settings.node_lease:g} s)")
    for node in nodes:
        print(f"  node {node['id']}  {node['name']}  workers={node['workers']}"
              f" running={node['running']}  heartbeat {node['heartbeatAge']:.1f} s ago"
              f"  up since {node['startedAt']}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pesto", description="Pesto remote code execution engine")
    p.add_argument("--config", help="pesto.toml (default: $PESTO_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="compile and run one program in the sandbox")
    run.add_argument("language")
    run.add_argument("file", help="source file, or - for standard input")
    run.add_argument("--version", default="latest")
    run.add_argument("--stdin")
    run.add_argument("--arg", action="append", help="a program argument (repeatable)")
    run.add_argument("--run-timeout", type=int, metavar="MS")
    run.add_argument("--compile-timeout", type=int, metavar="MS")
    run.add_argument("--memory-limit", type=int, metavar="BYTES")
    run.add_argument("--json", action="store_true", help="print the full result as JSON")
    run.set_defaults(func=cmd_run)

    langs = sub.add_parser("languages", help="list installed languages")
    langs.add_argument("--all", action="store_true", help="include folders whose runtime is missing")
    langs.add_argument("--json", action="store_true")
    langs.set_defaults(func=cmd_languages)

    doc = sub.add_parser("doctor", help="report which sandbox layers this host offers")
    doc.add_argument("--json", action="store_true")
    doc.add_argument("--data-dir", help="the data dir `pesto serve` would use (checked private)")
    doc.add_argument("--store", metavar="URL", help="the store to report on (default: $PESTO_STORE_URL)")
    doc.set_defaults(func=cmd_doctor)

    from pesto.api.cli import add_commands     # serve and token
    add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PestoError as exc:
        print(f"pesto: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
