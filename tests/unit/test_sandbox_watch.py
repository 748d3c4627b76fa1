"""The watch of a stage (watch.py) against real processes of the current
user: the output cap, the deadline, stdin, an abort; and how an end becomes
an outcome. Killing is by the process's pidfd here, not by uid (that needs
root), and reaping only of the program itself: the test process has other
children (a test session's sandbox spawner) that are not the stage's."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from pesto.sandbox import protocol, watch
from pesto.sandbox.cleanup import Reaper
from pesto.sandbox.standby import Standby
from pesto.sandbox.status import Status


class ProgramOnly(Reaper):
    """The watch reaps the program by its pid; nothing else here is the run's."""

    def reap_exited(self) -> bool:
        return False

    def kill_and_reap(self) -> None:
        pass


def start(argv: list[str]) -> Standby:
    """A process of ours wired like a standby without a PID namespace."""
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.posix_spawn(argv[0], argv, {"PATH": "/usr/bin:/bin"}, file_actions=[
        (os.POSIX_SPAWN_DUP2, stdin_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2)])
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)
    return Standby(pid, -1, stdin_w, out_r, err_r, -1, -1, os.pidfd_open(pid))


def run(argv: list[str], *, stdin: bytes = b"", wall_ms: int = 5000, cap: int = 65536,
        sock: socket.socket | None = None) -> watch.Ended:
    sb = start(argv)
    kills = []

    def kill() -> None:
        kills.append(time.monotonic())
        signal.pidfd_send_signal(sb.pidfd, signal.SIGKILL)
    a, b = socket.socketpair()
    try:
        return watch.watch(sb, stdin=stdin, start=time.monotonic(), wall_ms=wall_ms,
                           output_limit=cap, sock=sock or a, kill=kill,
                           reaper=ProgramOnly(os.getuid()))
    finally:
        sb.close()
        try:   # killed by an abort: not reaped by the watch
            os.waitpid(sb.pid, 0)
        except ChildProcessError:
            pass
        os.close(sb.pidfd)
        a.close()
        b.close()


def outcome(ended: watch.Ended) -> protocol.StageOutcome:
    return watch.ended_outcome(ended, peak=None, oom=False)


def test_exit_code_output_and_usage():
    ended = run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    o = outcome(ended)
    assert (o.stdout, o.stderr, o.exit_code, o.signal, o.status) == (
        "out\n", "err\n", 3, None, Status.ERROR)
    assert sorted(o.output.splitlines()) == ["err", "out"]
    assert o.memory > 0 and o.wall_time < 5000


def test_stdin_is_fed_and_closed():
    data = b"x" * 300_000 + b"\n"   # more than a pipe holds: written as the program reads
    o = outcome(run(["/bin/cat"], stdin=data, cap=1 << 20))
    assert o.status == Status.OK and o.stdout == data.decode()


def test_no_stdin_is_eof_at_once():
    assert outcome(run(["/bin/cat"], wall_ms=2000)).status == Status.OK


def test_deadline_kills_a_sleeper():
    t = time.monotonic()
    ended = run(["/bin/sleep", "10"], wall_ms=200)
    o = outcome(ended)
    assert (o.status, o.signal, ended.reason) == (Status.TIMEOUT, "SIGKILL", "timeout")
    assert 0.2 <= ended.wall < 1.0 and time.monotonic() - t < 2


def test_output_cap_stops_a_flood():
    ended = run(["/usr/bin/yes"], cap=1000)
    o = outcome(ended)
    assert (o.status, o.truncated, len(o.stdout), ended.reason) == (
        Status.OUTPUT, True, 1000, "output")


def test_a_message_from_the_server_aborts_the_stage():
    a, b = socket.socketpair()
    with a, b:
        b.sendall(protocol.encode(protocol.Abort()))
        with pytest.raises(watch.AbortRequested):
            run(["/bin/sleep", "10"], sock=a)
        b.close()
        with pytest.raises(watch.ServerGone):
            run(["/bin/sleep", "10"], sock=a)


def test_capture_keeps_each_stream_to_the_cap():
    c = watch.Capture(5)
    assert not c.add(c.stdout, b"abc")
    assert not c.add(c.stderr, b"12345")
    assert c.add(c.stdout, b"defg")          # 2 of 4 fit
    assert c.add(c.stdout, b"h")             # none fits
    assert (bytes(c.stdout), bytes(c.stderr), bytes(c.output), c.truncated) == (
        b"abcde", b"12345", b"abc12345de", True)


@pytest.mark.parametrize("wait_status, reason, oom, peak, expected", [
    (0, None, False, None, (0, None, Status.OK)),
    (1 << 8, None, False, None, (1, None, Status.ERROR)),
    (signal.SIGSEGV, None, False, None, (128 + signal.SIGSEGV, "SIGSEGV", Status.SIGNAL)),
    (signal.SIGKILL, "timeout", False, None, (128 + 9, "SIGKILL", Status.TIMEOUT)),
    (signal.SIGKILL, "output", False, None, (137, "SIGKILL", Status.OUTPUT)),
    (signal.SIGKILL, "memory", False, None, (137, "SIGKILL", Status.MEMORY)),
    (signal.SIGKILL, None, True, 1 << 30, (137, "SIGKILL", Status.MEMORY)),
    (0, None, True, None, (0, None, Status.OK)),   # an OOM kill of a child; main succeeded
])
def test_how_an_end_is_told(wait_status, reason, oom, peak, expected):
    ended = watch.Ended(wait_status, reason, 0.0125, 0.004, 1234, watch.Capture(10))
    o = watch.ended_outcome(ended, peak=peak, oom=oom)
    assert (o.exit_code, o.signal, o.status) == expected
    assert (o.wall_time, o.cpu_time, o.memory) == (12, 4, peak if peak is not None else 1234)


def test_outcome_text_is_utf8_with_replacement():
    o = watch.outcome(stdout=b"a\xffb\x00", stderr=b"e", output=None, exit_code=0,
                      signal_no=None, reason=None, oom=False, wall=0, cpu=0, peak=0,
                      truncated=False)
    assert (o.stdout, o.output) == ("a\ufffdb\x00", "a\ufffdb\x00e")


def test_init_report(tmp_path):
    def report(data: bytes):
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        try:
            return watch.read_init_report(r)
        finally:
            os.close(r)
    assert report(b"256 0.250000 0.125000 2048") == (256, (0.375, 2048 * 1024))
    assert report(b"") == (signal.SIGKILL, (0.0, 0))     # init killed before it reported
    assert report(b"garbage") == (signal.SIGKILL, (0.0, 0))
