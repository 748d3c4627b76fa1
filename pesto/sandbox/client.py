"""The server's side of the sandbox: the spawner process, uid leases, job sessions.

Everything here runs in the (multi-threaded) server and never forks: the
spawner is started by exec, and jobs reach it as file descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import subprocess
import sys
from typing import Any, AsyncIterator

from pesto.errors import PestoError, SandboxError
from pesto.sandbox import protocol


class NoFreeUid(PestoError):
    status_code = 503
    code = "QUEUE_FULL"


class UidPool:
    """Leases uids with flock()ed lock files, so several Pesto processes on one
    host never share a uid. The lock travels to the job's supervisor and is
    released by its exit, i.e. only after the uid's processes and files are gone."""

    def __init__(self, lock_dir: str, base: int, count: int) -> None:
        self.lock_dir = lock_dir
        self.base = base
        self.count = count
        self._next = 0

    def lease(self) -> tuple[int, int]:
        """(uid, locked fd). Raises NoFreeUid when every uid is busy."""
        for _ in range(self.count):
            uid = self.base + self._next
            self._next = (self._next + 1) % self.count
            try:
                return uid, self.lease_exact(uid)
            except BlockingIOError:
                continue
        raise NoFreeUid("every sandbox uid is busy; try again shortly", retry_after=1)

    def lease_exact(self, uid: int) -> int:
        """Lock one given uid; raises BlockingIOError while someone holds it."""
        fd = os.open(os.path.join(self.lock_dir, str(uid)),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd


class Session:
    """One job's conversation with its supervisor."""

    def __init__(self, uid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.uid = uid
        self._reader = reader
        self._writer = writer
        self.supervisor_died = False

    async def _call(self, msg: dict[str, Any]) -> dict[str, Any]:
        self._writer.write(protocol.encode(msg))
        await self._writer.drain()
        reply = await protocol.recv_async(self._reader)
        if reply is None:
            self.supervisor_died = True
            raise SandboxError("the job's supervisor died")
        if not reply.get("ok"):
            raise SandboxError(f"sandbox failure: {reply.get('error')}")
        return reply

    async def prepare(self, files: list[tuple[str, str]], disk_limit: int) -> str:
        reply = await self._call({"op": "prepare", "uid": self.uid, "disk_limit": disk_limit,
                                  "files": [{"name": n, "content": c} for n, c in files]})
        return reply["workdir"]

    async def stage(self, spec: dict[str, Any]) -> dict[str, Any]:
        reply = await self._call({"op": "stage", **spec})
        return reply["result"]

    async def close(self) -> bool:
        """Ask for cleanup and wait for it; True if the supervisor says all is clean."""
        try:
            self._writer.write(protocol.encode({"op": "close"}))
            await self._writer.drain()
            reply = await protocol.recv_async(self._reader)
            return bool(reply and reply.get("ok"))
        except (ConnectionError, OSError):
            return False
        finally:
            self._writer.close()

    def abort(self) -> None:
        """Close without waiting: the supervisor kills the run and cleans up alone."""
        self._writer.close()


class Sandbox:
    def __init__(self, proc: subprocess.Popen, ctrl: socket.socket, pool: UidPool,
                 layers: dict[str, dict[str, Any]], work_root: str) -> None:
        self._proc = proc
        self._ctrl = ctrl
        self.pool = pool
        self.layers = layers
        self.work_root = work_root

    @classmethod
    def start(cls, *, uid_base: int, uid_count: int, sandbox_dir: str,
              disable: tuple[str, ...] = ()) -> "Sandbox":
        """Start the spawner (by exec) and read its probe of the host's layers."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cfg = json.dumps({"uid_base": uid_base, "uid_count": uid_count,
                          "sandbox_dir": str(sandbox_dir), "disable": list(disable)})
        proc = subprocess.Popen(
            [sys.executable, "-m", "pesto.sandbox.spawner", str(theirs.fileno()), cfg],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(sys.path)})
        theirs.close()
        ours.settimeout(60)
        try:
            report = ours.recv(65536)
        except OSError as exc:
            proc.kill()
            raise SandboxError(f"the sandbox spawner did not start: {exc}") from None
        if not report:
            proc.wait()
            raise SandboxError(f"the sandbox spawner exited ({proc.returncode}) while probing")
        ours.settimeout(None)
        pool = UidPool(os.path.join(sandbox_dir, "locks"), uid_base, uid_count)
        return cls(proc, ours, pool, json.loads(report), os.path.join(sandbox_dir, "work"))

    async def _open(self, uid: int, lock_fd: int) -> Session:
        """Hand a job socket and the uid's lock to the spawner, which forks a supervisor."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            socket.send_fds(self._ctrl, [b"J"], [theirs.fileno(), lock_fd])
        except OSError as exc:
            ours.close()
            raise SandboxError(f"the sandbox spawner is gone: {exc}") from None
        finally:
            theirs.close()
            os.close(lock_fd)   # from now on only the supervisor holds the lock
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        return Session(uid, reader, writer)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Session]:
        """A supervisor for one job. Leaving the block cleans up; cancelling it
        (or an exception) aborts the run, and the supervisor still cleans up."""
        session = await self._open(*self.pool.lease())
        try:
            yield session
        except BaseException:
            session.abort()
            raise
        finally:
            if session.supervisor_died:
                await self._sweep(session.uid)
        if not await session.close():
            await self._sweep(session.uid)
            raise SandboxError(f"cleanup of uid {session.uid} failed; it was swept again")

    async def _sweep(self, uid: int) -> None:
        """A supervisor died with its run possibly alive: a fresh supervisor for
        the same uid sweeps it now (prepare sweeps a dirty uid), not at its next lease."""
        for _ in range(50):   # the dead supervisor's lock is released at its exit
            try:
                lock_fd = self.pool.lease_exact(uid)
                break
            except BlockingIOError:
                await asyncio.sleep(0.02)
        else:
            return
        try:
            sweeper = await self._open(uid, lock_fd)
            await sweeper.prepare([], 1 << 20)
            await sweeper.close()
        except SandboxError:
            pass

    def close(self) -> None:
        self._ctrl.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
