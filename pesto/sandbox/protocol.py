"""The messages between the server and the sandbox's processes, and their framing.

To a slot's supervisor: each message is a 4-byte big-endian length, then
the message as JSON (msgspec). The server sends a `Request` (a tagged union
on "op"), the supervisor answers each with one `Reply` (a tagged union on
"reply"). At the spawner's start: a `SpawnerConfig` on its command line,
`StartPaths` and a `StartReport` as one datagram each on its control
socket. Decoding is typed, so a malformed message is a `BadMessage` where it
is read, never a KeyError later.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Union

import msgspec

from pesto.errors import BadMessage
from pesto.sandbox.memory import MemoryMode
from pesto.sandbox.reach import Need
from pesto.sandbox.status import Status

MAX_MESSAGE = 64 * 1024 * 1024
_HEADER = struct.Struct("!I")


# -- what a job runs ----------------------------------------------------------

class File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file of the job, written into its work dir (`data` is base64 in JSON)."""
    name: str
    data: bytes


class StageSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One stage: what to run and within which limits (sizes in bytes)."""
    argv: list[str]
    env: dict[str, str]
    stdin: str = ""
    wall_ms: int
    cpu_seconds: int               # RLIMIT_CPU: a backstop behind wall_ms
    memory: int
    memory_mode: MemoryMode = "address-space"   # without a memory cgroup (memory.py)
    memory_reserve: int = 0
    processes: int
    open_files: int
    file_size: int
    output_limit: int              # per stream
    read_paths: list[str] = []     # Landlock read rules of the language
    more: bool = False             # another stage of the job follows
    spread_cpus: bool = False      # run on every CPU the server may use
    snapshot: str | None = None    # keep the work dir as this artifact if the stage is ok


class StageOutcome(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How one stage ended, as the supervisor measured it (times in ms)."""
    stdout: str
    stderr: str
    output: str                    # stdout and stderr interleaved as read
    exit_code: int
    signal: str | None             # e.g. "SIGKILL"
    status: Status
    wall_time: int
    cpu_time: int
    memory: int                    # peak bytes
    truncated: bool


# -- requests: server -> supervisor -------------------------------------------

class Request(msgspec.Struct, frozen=True, tag_field="op", forbid_unknown_fields=True):
    """Base of every request; the subclass's tag names the op."""


class Prepare(Request, frozen=True, tag="prepare", kw_only=True):
    """Lease (or take the readied) uid and write the job's files.

    `uid`: the uid the server expects (announced by `next_uid`), -1 for any;
    a different one is an error, not a run with wrong paths.
    """
    files: list[File]
    artifact: str | None = None    # a kept compile output to copy in first
    uid: int = -1


class Stage(Request, frozen=True, tag="stage", kw_only=True):
    """Run one stage; `prepare` goes with a job's first stage (one round trip less).
    A stage without `spec.more` ends the job as a close would."""
    spec: StageSpec
    prepare: Prepare | None = None


class Close(Request, frozen=True, tag="close"):
    """End the job: its uid's processes and files go, after the reply."""


class Abort(Request, frozen=True, tag="abort"):
    """Kill the current stage (if any) and end the job."""


class Sync(Request, frozen=True, tag="sync"):
    """Answered once everything before it is done: says which uids are readied."""


class Sweep(Request, frozen=True, tag="sweep"):
    """Remove every trace of a uid a dead supervisor held."""
    uid: int


AnyRequest = Union[Prepare, Stage, Close, Abort, Sync, Sweep]


# -- replies: supervisor -> server --------------------------------------------

class Reply(msgspec.Struct, frozen=True, tag_field="reply", kw_only=True,
            forbid_unknown_fields=True):
    """Base of every reply. `next_uid`: set on the reply that ends a job, the
    uid leased for the next one (-1: none), whose files then go with its
    first stage."""
    next_uid: int | None = None


class Prepared(Reply, frozen=True, tag="prepared", kw_only=True):
    uid: int
    workdir: str


class StageDone(Reply, frozen=True, tag="stage", kw_only=True):
    outcome: StageOutcome
    snapshot_error: str | None = None   # why a requested snapshot was not kept


class Closed(Reply, frozen=True, tag="closed"):
    pass


class Aborted(Reply, frozen=True, tag="aborted"):
    pass


class Synced(Reply, frozen=True, tag="synced", kw_only=True):
    standby_uid: int = -1   # readied for the next job: work dir made, standby waiting
    ahead_uid: int = -1     # leased for the job after


class Swept(Reply, frozen=True, tag="swept"):
    pass


class SetupError(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The exec helper's failed step ("step:errno:message")."""
    step: str
    errno: int
    text: str


class Failed(Reply, frozen=True, tag="failed", kw_only=True):
    """The sandbox failed (never the program: that is a StageOutcome)."""
    error: str
    setup: SetupError | None = None


AnyReply = Union[Prepared, StageDone, Closed, Aborted, Synced, Swept, Failed]


# -- the spawner's start --------------------------------------------------------

class SpawnerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The spawner's settings: on its command line, so nothing secret (any
    uid can read a process's cmdline)."""
    uid_base: int
    uid_count: int
    sandbox_dir: str
    disable: list[str]
    disk_limit: int
    slots: int
    pin_cpus: bool


class StartPaths(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a run uid must and must not reach (reach.layout); over the socket,
    not the command line: the data dir is among them."""
    need: list[Need]
    deny: list[tuple[str, str]]


class LayerReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    available: bool
    enabled: bool
    reason: str


class StartReport(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The spawner's probe of the host (each layer: available, enabled, why),
    or why it cannot start; `unreachable`: paths a run uid could not (or
    could) reach, each a line saying what to do."""
    layers: dict[str, LayerReport] = {}
    error: str | None = None
    unreachable: list[str] = []


def decode_start(body: bytes | str, kind: type[msgspec.Struct]):
    """One start-up message of the given type. Raises BadMessage."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.DecodeError as exc:
        raise BadMessage(f"malformed {kind.__name__}: {exc}") from None


# -- framing ------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_decode_request = msgspec.json.Decoder(AnyRequest).decode
_decode_reply = msgspec.json.Decoder(AnyReply).decode


def encode(msg: Request | Reply) -> bytes:
    """One frame: length, then the message as JSON."""
    body = _encode(msg)
    return _HEADER.pack(len(body)) + body


def decode_request(body: bytes) -> AnyRequest:
    """Raises BadMessage."""
    try:
        return _decode_request(body)
    except msgspec.DecodeError as exc:   # ValidationError included
        raise BadMessage(f"malformed request: {exc}") from None


def decode_reply(body: bytes) -> AnyReply:
    """Raises BadMessage."""
    try:
        return _decode_reply(body)
    except msgspec.DecodeError as exc:
        raise BadMessage(f"malformed reply: {exc}") from None


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> bytes | None:
    """The next frame's body, or None at EOF (the server went away or closed).
    Raises BadMessage for a frame over MAX_MESSAGE."""
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_MESSAGE:
        raise BadMessage("message too large")
    return _recv_exact(sock, size)


def send_blocking(sock: socket.socket, msg: Request | Reply) -> None:
    sock.sendall(encode(msg))


async def recv_reply(reader: asyncio.StreamReader) -> AnyReply | None:
    """The next reply, or None at EOF. Raises BadMessage."""
    try:
        head = await reader.readexactly(_HEADER.size)
        (size,) = _HEADER.unpack(head)
        if size > MAX_MESSAGE:
            raise BadMessage("message too large")
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return decode_reply(body)
