"""The server's side of the sandbox: the spawner, the slot supervisors, job sessions.

Everything here runs in the (multi-threaded) server and never forks: the
spawner is started by exec, and it forks the slot supervisors. Each slot
runs one job at a time; taking a slot is taking a concurrency slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from typing import Any, AsyncIterator, TypeVar

import msgspec

from pesto.errors import ConfigError, SandboxError, SandboxSetupFailed
from pesto.sandbox import protocol

log = logging.getLogger("pesto.sandbox")

R = TypeVar("R", bound=protocol.Reply)


class Slot:
    """The server's end of one slot supervisor's socket."""

    def __init__(self, index: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader = reader
        self.writer = writer
        self.dead = False
        # The uid the supervisor has readied for its next job (-1: unknown),
        # from its last reply: a job then needs no `prepare` round trip.
        self.next_uid = -1

    async def _recv(self) -> protocol.AnyReply | None:
        """The next reply; None (and the slot dead) at EOF or for a malformed one."""
        try:
            reply = await protocol.recv_reply(self.reader)
        except protocol.BadMessage:
            log.exception("sandbox slot %d sent a malformed reply", self.index)
            reply = None
        if reply is None:
            self.dead = True
        return reply

    async def call(self, msg: protocol.Request) -> protocol.AnyReply:
        """Send one request and return its reply. Raises SandboxError."""
        if self.dead:
            raise SandboxError("the sandbox slot died")
        try:
            self.writer.write(protocol.encode(msg))
            await self.writer.drain()
        except (ConnectionError, OSError):
            self.dead = True
            raise SandboxError("the sandbox slot died") from None
        reply = await self._recv()
        if reply is None:
            raise SandboxError("the sandbox slot died")
        if reply.next_uid is not None:
            self.next_uid = reply.next_uid
        return reply

    async def abort(self) -> None:
        """Kill the slot's current job (if any) and wait until it is cleaned up."""
        if self.dead:
            return
        try:
            self.writer.write(protocol.encode(protocol.Abort()))
            await self.writer.drain()
            while True:   # skip the reply of a stage that ended meanwhile
                reply = await self._recv()
                if reply is None:
                    return
                if isinstance(reply, protocol.Aborted):
                    self.next_uid = -1 if reply.next_uid is None else reply.next_uid
                    return
        except (ConnectionError, OSError):
            self.dead = True


class Session:
    """One job on one slot."""

    def __init__(self, slot: Slot, work_root: str) -> None:
        self.slot = slot
        self.work_root = work_root
        self.uid = -1
        self.closed = False
        self.pending: protocol.Prepare | None = None   # to go with the first stage
        self.snapshot_error: str | None = None   # why a stage's `snapshot` was not kept

    async def _call(self, msg: protocol.Request, expect: type[R]) -> R:
        """The reply to msg, of type `expect`. Raises SandboxSetupFailed,
        SandboxError (a Failed reply, or one of another type)."""
        reply = await self.slot.call(msg)
        if isinstance(reply, protocol.Failed):
            if reply.setup is not None:
                setup = reply.setup
                # The operator's log gets the helper's own words (paths
                # included); the client, the failed step and what to do.
                log.error("sandbox set-up failed at %s: %s", setup.step, setup.text)
                raise SandboxSetupFailed(
                    f"the sandbox could not be set up for this run (step {setup.step}: "
                    f"{os.strerror(setup.errno)}); the server's operator should run "
                    "`pesto doctor`")
            raise SandboxError(f"sandbox failure: {reply.error}")
        if not isinstance(reply, expect):
            raise SandboxError(f"sandbox failure: {type(reply).__name__} in reply to "
                               f"{type(msg).__name__}")
        return reply

    async def prepare(self, files: list[tuple[str, str | bytes]],
                      artifact: str | None = None) -> str:
        """The job's work dir, holding `files` and a copy of the artifact (if
        any: see pesto.sandbox.artifacts). Where the slot has announced the
        uid it readied, the files go with the first stage (one round trip
        less per job). Text content is written as UTF-8, bytes as they are."""
        msg = protocol.Prepare(
            files=[protocol.File(n, c.encode() if isinstance(c, str) else c) for n, c in files],
            artifact=artifact, uid=self.slot.next_uid)
        if self.slot.next_uid >= 0:
            self.uid, self.slot.next_uid = self.slot.next_uid, -1
            self.pending = msg
            return os.path.join(self.work_root, str(self.uid))
        reply = await self._call(msg, protocol.Prepared)
        self.uid = reply.uid
        return reply.workdir

    async def stage(self, spec: protocol.StageSpec) -> protocol.StageOutcome:
        """Run one stage; a stage without `more` ends the job (no close needed).

        With `snapshot` in spec, the work dir is kept as that artifact after
        the stage; if it could not be, `snapshot_error` says why.
        """
        # The supervisor checks the prepare's uid is the one it readied.
        msg = protocol.Stage(spec=spec, prepare=self.pending)
        self.pending = None
        reply = await self._call(msg, protocol.StageDone)
        if spec.snapshot and reply.snapshot_error is not None:
            self.snapshot_error = reply.snapshot_error
        if not spec.more:
            self.closed = True
        return reply.outcome

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._call(protocol.Close(), protocol.Closed)


class Sandbox:
    def __init__(self, proc: subprocess.Popen, ctrl: socket.socket,
                 layers: dict[str, dict[str, Any]], work_root: str, slots: int) -> None:
        self._proc = proc
        self._ctrl = ctrl
        self.layers = layers
        self.work_root = work_root
        self.slot_count = slots
        self._idle: asyncio.Queue[Slot] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    async def start(cls, *, uid_base: int, uid_count: int, sandbox_dir: str, slots: int,
                    disk_limit: int, disable: tuple[str, ...] = (),
                    pin_cpus: bool = True, need: list | None = None,
                    deny: list[tuple[str, str]] | None = None) -> "Sandbox":
        """Start the spawner (by exec), read its probe of the host, open the slots.

        need/deny: paths a run uid must / must not reach (reach.layout);
        ConfigError, saying what to do, if the host has it otherwise.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = msgspec.json.encode(protocol.SpawnerConfig(
            uid_base=uid_base, uid_count=uid_count, sandbox_dir=str(sandbox_dir),
            disable=list(disable), disk_limit=disk_limit, slots=slots, pin_cpus=pin_cpus))
        proc = subprocess.Popen(
            [sys.executable, "-m", "pesto.sandbox.spawner", str(theirs.fileno()), cfg.decode()],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)})
        theirs.close()
        # The paths to check go over the socket, not the command line: any
        # uid can read a process's cmdline, and the data dir is among them.
        ours.sendall(msgspec.json.encode(protocol.StartPaths(list(need or ()), list(deny or ()))))
        loop = asyncio.get_running_loop()
        ours.setblocking(False)
        try:
            raw = await asyncio.wait_for(loop.sock_recv(ours, 65536), 60)
        except (OSError, asyncio.TimeoutError) as exc:
            proc.kill()
            ours.close()
            raise SandboxError(f"the sandbox spawner did not start: {exc!r}") from None
        if not raw:
            proc.wait()
            ours.close()
            raise SandboxError(f"the sandbox spawner exited ({proc.returncode}) while probing")
        ours.setblocking(True)
        try:
            report = protocol.decode_start(raw, protocol.StartReport)
        except protocol.BadMessage as exc:
            proc.kill()
            proc.wait()
            ours.close()
            raise SandboxError(f"the sandbox spawner answered: {exc}") from None
        if report.unreachable:
            proc.wait()
            ours.close()
            raise ConfigError("runs could not work on this host as laid out:\n  "
                              + "\n  ".join(report.unreachable))
        if report.error is not None:
            proc.wait()
            ours.close()
            raise SandboxError(f"the sandbox cannot start: {report.error}")
        layers = {name: msgspec.structs.asdict(layer) for name, layer in report.layers.items()}
        sandbox = cls(proc, ours, layers, os.path.join(sandbox_dir, "work"), slots)
        for i in range(slots):
            sandbox._idle.put_nowait(await sandbox._new_slot(i))
        return sandbox

    async def _new_slot(self, index: int) -> Slot:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self._ctrl, [f"slot {index}".encode()], [theirs.fileno()])
        except OSError as exc:
            ours.close()
            raise SandboxError(f"the sandbox spawner is gone: {exc}") from None
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        slot = Slot(index, reader, writer)
        reply = await slot.call(protocol.Sync())
        slot.next_uid = reply.standby_uid if isinstance(reply, protocol.Synced) else -1
        return slot

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """Wait for a free slot and run one job on it.

        Leaving the block cleans the job up. Cancelling it (or an exception)
        aborts the run; the slot goes back to the pool once it is clean.
        """
        slot = await self._idle.get()
        if slot.reader.at_eof():   # its supervisor died while idle
            slot.dead = True
            self._spawn(self._recycle(slot, -1))
            slot = await self._idle.get()
        session = Session(slot, self.work_root)
        try:
            yield session
            await session.close()
        except BaseException:
            # Not awaited here: a cancelled task must not wait. The recycler
            # aborts the job, then returns (or replaces) the slot.
            self._spawn(self._recycle(slot, session.uid))
            raise
        else:
            self._idle.put_nowait(slot)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recycle(self, slot: Slot, uid: int) -> None:
        await slot.abort()
        if not slot.dead:
            self._idle.put_nowait(slot)
            return
        # The supervisor died, perhaps with its run alive: a new supervisor
        # takes the slot and sweeps the uid now, not at its next lease.
        log.error("sandbox slot %d died; replacing it", slot.index)
        slot.writer.close()
        try:
            fresh = await self._new_slot(slot.index)
            if uid >= 0:
                await fresh.call(protocol.Sweep(uid))
        except SandboxError:
            log.exception("could not replace sandbox slot %d", slot.index)
            return
        self._idle.put_nowait(fresh)

    async def settle(self) -> set[int]:
        """Wait until every idle slot has finished cleaning up its last job.

        Returns the uids the idle slots hold ready for their next jobs (each
        with an empty work dir and a waiting standby, no user code; or only
        leased, for the job after).
        """
        await self.wait_idle()
        slots = [self._idle.get_nowait() for _ in range(self._idle.qsize())]
        ready: set[int] = set()
        try:
            for slot in slots:
                if not slot.dead:
                    try:
                        reply = await slot.call(protocol.Sync())
                    except SandboxError:
                        continue
                    if isinstance(reply, protocol.Synced):
                        ready.update((reply.standby_uid, reply.ahead_uid))
        finally:
            for slot in slots:
                self._idle.put_nowait(slot)
        ready.discard(-1)
        return ready

    async def wait_idle(self) -> None:
        """Wait for background recycling (tests and shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Close every slot and wait (a few seconds at most) until each
        supervisor has cleaned up and exited: it closes its end only then."""
        await self.wait_idle()
        slots = []
        while not self._idle.empty():
            slot = self._idle.get_nowait()
            try:
                slot.writer.write_eof()   # half-close: the supervisor sees EOF
            except (ConnectionError, OSError):
                pass
            slots.append(slot)
        for slot in slots:
            try:
                await asyncio.wait_for(slot.reader.read(), 10)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                log.warning("sandbox slot %d did not finish cleaning up", slot.index)
            slot.writer.close()
        self._ctrl.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    @property
    def idle_slots(self) -> int:
        """Slots waiting for a job (a gauge of /metrics)."""
        return self._idle.qsize()

    @property
    def spawner_pid(self) -> int:
        return self._proc.pid
