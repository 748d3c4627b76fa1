"""One job: work dir → compile stage → run stage → result.

The engine runs a request that `pesto.validation` has checked, driving one
sandbox session for it. It knows nothing about HTTP or SQL.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from pesto import judging
from pesto.config import Settings
from pesto.errors import ConfigError
from pesto.models import (NO_COMPILE, SKIPPED, ExecuteRequest, ExecuteResult, JudgeResult,
                          StageResult, Status, file_content)
from pesto.runtimes import Registry, Runtime, load_registry
from pesto.sandbox import artifacts, reach
from pesto.sandbox.client import Sandbox
from pesto.sandbox.cpus import slot_cpus
from pesto.sandbox.protocol import StageOutcome, StageSpec

log = logging.getLogger("pesto.engine")

BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class Engine:
    def __init__(self, settings: Settings, registry: Registry, sandbox: Sandbox) -> None:
        self.settings = settings
        self.registry = registry
        self.sandbox = sandbox

    @classmethod
    async def start(cls, settings: Settings) -> "Engine":
        """Load the languages, probe the host, start the spawner."""
        registry = load_registry(settings.languages_dir)
        need, deny = reach.layout(sandbox_dir=str(settings.sandbox_dir),
                                  data_dir=str(settings.data_dir), runtimes=registry.installed)
        sandbox = await Sandbox.start(uid_base=settings.uid_base, uid_count=settings.uid_count,
                                      sandbox_dir=str(settings.sandbox_dir),
                                      slots=settings.workers, disk_limit=settings.disk_limit,
                                      disable=settings.disable, pin_cpus=settings.pin_cpus,
                                      need=need, deny=deny)
        missing = [f"{name} ({sandbox.layers[name]['reason']})" for name in settings.require
                   if not sandbox.layers.get(name, {}).get("enabled")]
        if missing:
            await sandbox.close()
            raise ConfigError("required sandbox layers are not available: " + "; ".join(missing))
        for name, layer in sandbox.layers.items():
            log.info("sandbox layer %s: %s (%s)", name,
                     "on" if layer["enabled"] else "off", layer["reason"])
        artifacts.sweep_old(sandbox.work_root)
        allowed = os.sched_getaffinity(0)
        shares = [slot_cpus(allowed, settings.workers, i) for i in range(settings.workers)]
        if settings.pin_cpus and shares[0] is not None:
            log.info("slot CPUs: %s", "; ".join(
                f"slot {i}: {','.join(map(str, sorted(s)))}" for i, s in enumerate(shares)
                if s is not None))
        else:
            log.info("slots not pinned to CPUs (%s)", "pin_cpus is off" if not settings.pin_cpus
                     else f"{settings.workers} slots for {len(allowed)} CPUs")
        return cls(settings, registry, sandbox)

    @property
    def layers(self) -> dict[str, dict[str, Any]]:
        return self.sandbox.layers

    async def close(self) -> None:
        await self.sandbox.close()

    # -- execution ----------------------------------------------------------

    async def execute(self, request: ExecuteRequest, job_id: str,
                      lender: "judging.Lender | None" = None) -> ExecuteResult | JudgeResult:
        """Compile (if the language does) and run, each stage sandboxed; with
        test cases, compile once and run every case (pesto.judging), using
        extra slots when `lender` grants them.

        `request` was validated when it was submitted (pesto.validation).
        Cancelling the awaiting task kills the run; the uid is cleaned either way.
        Raises RuntimeNotFound when its language is gone since (a job queued
        before a restart), SandboxError when the sandbox itself failed.
        """
        runtime = self.registry.resolve(request.language, request.version)
        if request.test_cases is not None:
            return await judging.judge(self, runtime, request, job_id, lender)
        files, entry = self.sources(request.code, request.files, runtime)
        compile_result = NO_COMPILE
        async with self.sandbox.session() as session:
            workdir = await session.prepare(files)
            ctx = self.context(runtime, entry, workdir)
            if runtime.compiled:
                compile_result = await self.compile(session, runtime, request, workdir, ctx,
                                                    more=True)
                if compile_result.status != Status.OK:
                    return ExecuteResult(job_id, request.language, runtime.version,
                                         compile_result, SKIPPED)
            run_result = await self.run(session, runtime, workdir, ctx, args=request.args,
                                        stdin=request.stdin, timeout=request.run_timeout,
                                        memory=request.memory_limit)
        # `language` as the client sent it: the original service answers so.
        return ExecuteResult(job_id, request.language, runtime.version, compile_result, run_result)

    @staticmethod
    def sources(code: str | None, files: list | None,
                runtime: Runtime) -> tuple[list[tuple[str, str | bytes]], str]:
        """The (name, content) pairs to write and the entry point's name."""
        if code is not None:
            return [(runtime.file_name, code)], runtime.file_name
        assert files is not None
        return ([(f.name, file_content(f)) for f in files],
                next((f.name for f in files if f.entrypoint), files[0].name))

    @staticmethod
    def context(runtime: Runtime, entry: str, workdir: str) -> dict[str, str]:
        """The values a language's argv and environment may name."""
        return {"file": entry, "dir": workdir, "stem": entry.rsplit("/", 1)[-1].rsplit(".", 1)[0]}

    async def compile(self, session, runtime: Runtime, request: ExecuteRequest, workdir: str,
                      ctx: dict[str, str], *, more: bool,
                      snapshot: str | None = None) -> StageResult:
        """The compile stage; with `snapshot`, its work dir is kept as that artifact."""
        limits = runtime.spec.limits
        memory = request.memory_limit or self.settings.memory_default
        return await self._stage(
            session, runtime, runtime.spec.compile, [], "", workdir, ctx,
            timeout=request.compile_timeout or limits.compile_timeout
            or self.settings.compile_timeout_default,
            memory=request.compile_memory_limit or max(memory, limits.compile_memory or 0),
            processes=limits.compile_processes or max(limits.processes, 64), more=more,
            snapshot=snapshot)

    async def run(self, session, runtime: Runtime, workdir: str, ctx: dict[str, str], *,
                  args: list[str], stdin: str, timeout: int | None,
                  memory: int | None) -> StageResult:
        """The run stage, the job's last on this session."""
        limits = runtime.spec.limits
        return await self._stage(
            session, runtime, runtime.spec.run, args, stdin, workdir, ctx,
            timeout=timeout or limits.run_timeout or self.settings.run_timeout_default,
            memory=memory or self.settings.memory_default, processes=limits.processes)

    async def _stage(self, session, runtime: Runtime, argv: list[str], args: list[str],
                     stdin: str, workdir: str, ctx: dict[str, str], *, timeout: int,
                     memory: int, processes: int, more: bool = False,
                     snapshot: str | None = None) -> StageResult:
        values = {**ctx, "memory_mb": str(max(1, memory // (1024 * 1024)))}
        full = [a.format_map(values) for a in argv] + list(args)
        env = {**BASE_ENV, "HOME": workdir, "TMPDIR": workdir,
               **{k: v.format_map(values) for k, v in runtime.spec.environment.items()}}
        spec = StageSpec(
            argv=full, env=env, stdin=stdin,
            wall_ms=timeout,
            # CPU seconds are only a backstop behind the wall-clock watchdog.
            cpu_seconds=math.ceil(timeout / 1000) + 1,
            memory=memory, memory_mode=runtime.spec.limits.memory,
            memory_reserve=runtime.spec.limits.memory_reserve,
            processes=processes,
            open_files=runtime.spec.limits.open_files,
            file_size=self.settings.disk_limit,
            output_limit=self.settings.output_limit,
            # Never the language's folder in the checkout: a run's uid may not
            # be able to traverse to it (a clone in root's 0700 home). What a
            # run executes or reads lives in system paths or in the
            # language's install dir (/opt/pesto/runtimes/<id>, world-readable);
            # `pesto doctor` and start-up check that (pesto/sandbox/reach.py).
            read_paths=[p.format_map(values) for p in runtime.spec.read_paths],
            more=more,   # another stage follows: the slot readies its child meanwhile
            spread_cpus=runtime.spec.spread_cpus,
            snapshot=snapshot,
        )
        return stage_result(await session.stage(spec))


def stage_result(o: StageOutcome) -> StageResult:
    """The engine's record of a stage the sandbox ran."""
    return StageResult(stdout=o.stdout, stderr=o.stderr, output=o.output, exit_code=o.exit_code,
                       signal=o.signal, status=o.status, wall_time=o.wall_time,
                       cpu_time=o.cpu_time, memory=o.memory, truncated=o.truncated)
