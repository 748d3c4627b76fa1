"""The server <-> supervisor messages: declared types, framed, decoded strictly."""

from __future__ import annotations

import asyncio
import socket
import struct

import msgspec
import pytest

from pesto.engine import stage_result
from pesto.sandbox import protocol as p
from pesto.sandbox.status import Status


def spec(**kw) -> p.StageSpec:
    base = dict(argv=["/usr/bin/python3", "main.py"], env={"PATH": "/usr/bin"}, wall_ms=3000,
                cpu_seconds=4, memory=128 << 20, processes=64, open_files=256,
                file_size=64 << 20, output_limit=65536)
    return p.StageSpec(**{**base, **kw})


OUTCOME = p.StageOutcome(stdout="hi\n", stderr="", output="hi\n", exit_code=0, signal=None,
                         status=Status.OK, wall_time=12, cpu_time=9, memory=8 << 20,
                         truncated=False)

REQUESTS = [
    p.Prepare(files=[p.File("main.py", b"print(1)\n"), p.File("bin/x", b"\x00\xff\xfe")],
              artifact="abc", uid=66001),
    p.Stage(spec=spec(stdin="in\n", more=True, snapshot="k", read_paths=["/opt/x"],
                      memory_mode="watch", memory_reserve=1 << 20, spread_cpus=True)),
    p.Stage(spec=spec(), prepare=p.Prepare(files=[p.File("a", b"")], uid=5)),
    p.Close(), p.Abort(), p.Sync(), p.Sweep(66002),
]

REPLIES = [
    p.Prepared(uid=1, workdir="/w/1"),
    p.StageDone(outcome=OUTCOME, next_uid=7),
    p.StageDone(outcome=OUTCOME, snapshot_error="too many files"),
    p.Closed(next_uid=-1), p.Aborted(), p.Synced(standby_uid=3, ahead_uid=4), p.Swept(),
    p.Failed(error="stage: boom"),
    p.Failed(error="x", setup=p.SetupError("landlock", 1, "landlock_restrict_self: EPERM")),
]


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_request_round_trip(msg):
    frame = p.encode(msg)
    (size,) = struct.unpack("!I", frame[:4])
    assert size == len(frame) - 4
    assert p.decode_request(frame[4:]) == msg


@pytest.mark.parametrize("msg", REPLIES, ids=lambda m: type(m).__name__)
def test_reply_round_trip(msg):
    assert p.decode_reply(p.encode(msg)[4:]) == msg


def test_outcome_is_snake_case_and_carries_the_status_type():
    raw = msgspec.json.decode(p.encode(p.StageDone(outcome=OUTCOME))[4:])
    assert set(raw["outcome"]) == {"stdout", "stderr", "output", "exit_code", "signal", "status",
                                   "wall_time", "cpu_time", "memory", "truncated"}
    back = p.decode_reply(p.encode(p.StageDone(outcome=OUTCOME))[4:])
    assert back.outcome.status is Status.OK


def test_file_bytes_survive_json():
    data = bytes(range(256))
    back = p.decode_request(p.encode(p.Prepare(files=[p.File("b", data)]))[4:])
    assert back.files[0].data == data


@pytest.mark.parametrize("body, needle", [
    (b'{"op": "sweep"}', "missing required field `uid`"),
    (b'{"op": "sweep", "uid": "5"}', "Expected `int`"),
    (b'{"op": "sweep", "uid": 5, "extra": 1}', "unknown field `extra`"),
    (b'{"op": "launch"}', "Invalid value 'launch'"),
    (b'{"uid": 5}', "missing required field `op`"),
    (b'[1, 2]', "Expected `object`"),
    (b'{"op": "close"', "truncated"),
    (b'{"op": "stage", "spec": {"argv": ["a"]}}', "missing required field"),
    (b'{"op": "stage", "spec": ' + msgspec.json.encode(spec()).replace(
        b'"address-space"', b'"swap"') + b'}', "Invalid enum value 'swap'"),
])
def test_malformed_request_is_an_error_where_it_is_read(body, needle):
    with pytest.raises(p.BadMessage) as info:
        p.decode_request(body)
    assert needle in str(info.value)


@pytest.mark.parametrize("body", [
    b'{"reply": "stage", "outcome": {"stdout": ""}}',
    msgspec.json.encode(p.StageDone(outcome=OUTCOME)).replace(b'"ok"', b'"fine"'),
    b'{"reply": "prepared", "uid": 1}',
    b'{"op": "close"}',
])
def test_malformed_reply_is_an_error(body):
    with pytest.raises(p.BadMessage):
        p.decode_reply(body)


def test_frames_over_a_socket():
    a, b = socket.socketpair()
    with a, b:
        for msg in REQUESTS:
            p.send_blocking(a, msg)
        assert [p.decode_request(p.recv_frame(b)) for _ in REQUESTS] == REQUESTS
        a.sendall(struct.pack("!I", p.MAX_MESSAGE + 1))
        with pytest.raises(p.BadMessage, match="too large"):
            p.recv_frame(b)
        a.sendall(struct.pack("!I", 10) + b"{}")   # cut short: the peer went away
        a.shutdown(socket.SHUT_WR)
        assert p.recv_frame(b) is None


def test_recv_reply_async():
    async def scenario():
        reader = asyncio.StreamReader()
        for msg in REPLIES:
            reader.feed_data(p.encode(msg))
        reader.feed_data(p.encode(p.Close()))   # a request where a reply belongs
        reader.feed_eof()
        got = [await p.recv_reply(reader) for _ in REPLIES]
        with pytest.raises(p.BadMessage):
            await p.recv_reply(reader)
        return got, await p.recv_reply(reader)
    got, at_eof = asyncio.run(scenario())
    assert got == REPLIES
    assert at_eof is None


def test_engine_turns_the_outcome_into_its_stage_result():
    r = stage_result(OUTCOME)
    assert (r.stdout, r.exit_code, r.status, r.wall_time, r.cpu_time, r.memory, r.truncated) == (
        "hi\n", 0, Status.OK, 12, 9, 8 << 20, False)


def test_spawner_start_messages():
    from pesto.sandbox.reach import Need
    cfg = p.SpawnerConfig(uid_base=66000, uid_count=400, sandbox_dir="/var/lib/pesto/sandbox",
                          disable=["cgroups"], disk_limit=64 << 20, slots=2, pin_cpus=True)
    paths = p.StartPaths([Need("/usr/lib/jvm", "dir", "java")], [("/var/lib/pesto/data", "data")])
    report = p.StartReport(layers={"seccomp": p.LayerReport(True, False, "disabled")})
    for msg in (cfg, paths, report, p.StartReport(error="x", unreachable=["a", "b"])):
        assert p.decode_start(msgspec.json.encode(msg), type(msg)) == msg
    assert p.decode_start(msgspec.json.encode(cfg).decode(), p.SpawnerConfig) == cfg   # argv
    with pytest.raises(p.BadMessage, match="malformed StartReport"):
        p.decode_start(b'{"layers": {"seccomp": {"enabled": true}}}', p.StartReport)
    with pytest.raises(p.BadMessage, match="malformed SpawnerConfig"):
        p.decode_start(b'{"uid_base": 1}', p.SpawnerConfig)
