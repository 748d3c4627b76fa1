"""The watch of one running stage, and how its end is told.

`watch()` feeds the program's stdin, reads its output under the cap,
enforces the wall-clock deadline (and, where no memory cgroup holds the
limit, the memory watch), notices the program's end or an abort from the
server, and measures what it used. `outcome()` turns that into the stage's
StageOutcome, its status decided by status.decide_status.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from typing import Callable

import attrs

from pesto.errors import AbortRequested, ServerGone
from pesto.sandbox import helper, memory as memory_policy, protocol
from pesto.sandbox.cleanup import Reaper
from pesto.sandbox.standby import Standby
from pesto.sandbox.status import decide_status

READ_CHUNK = 65536


@attrs.define
class Capture:
    """The program's output: each stream kept up to `cap` bytes, and both
    interleaved as read (`output`). Past the cap the rest is dropped."""
    cap: int
    stdout: bytearray = attrs.Factory(bytearray)
    stderr: bytearray = attrs.Factory(bytearray)
    output: bytearray = attrs.Factory(bytearray)
    truncated: bool = False

    def add(self, buf: bytearray, data: bytes) -> bool:
        """Keep what fits of `data` in `buf` (self.stdout or self.stderr).
        True if some of it did not fit: the run is to be stopped."""
        room = self.cap - len(buf)
        over = len(data) > room
        if over:
            data = data[:max(room, 0)]
            self.truncated = True
        buf += data
        self.output += data
        return over


@attrs.define
class Ended:
    """What the watch saw of a stage's end."""
    wait_status: int
    reason: str | None   # "timeout", "output" or "memory": why the engine stopped it
    wall: float          # seconds from the spec's write to the end
    cpu: float           # seconds, user + system, of every process of the run
    rss: int             # peak resident bytes, as rusage (or the memory watch) saw it
    capture: Capture


def watch(sb: Standby, *, stdin: bytes, start: float, wall_ms: int, output_limit: int,
          sock: socket.socket, kill: Callable[[], None], reaper: Reaper,
          rss_watch: memory_policy.RssWatch | None = None) -> Ended:
    """Watch the stage whose program `sb` is, from `start` until it has
    ended and its output pipes are closed.

    `kill` kills every process of the run (cleanup.kill_uid); `reaper` reaps
    and counts them where there is no PID namespace (whose init reports
    instead). Any message on `sock` meanwhile aborts the stage: raises
    AbortRequested, or ServerGone at EOF, the run killed either way. sb's
    descriptors are left for its owner to close.
    """
    pid, out_r, err_r, st_r = sb.pid, sb.out_r, sb.err_r, sb.status_r
    deadline = start + wall_ms / 1000
    # How the program's end is seen: its init's report, or its pidfd.
    pidfd = st_r if st_r >= 0 else sb.pidfd
    usage = None   # (cpu seconds, max rss bytes) from the init's report
    capture = Capture(output_limit)
    bufs = {out_r: capture.stdout, err_r: capture.stderr}
    reason = None
    status = None
    ru = None
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    poller.register(err_r, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    poller.register(sock.fileno(), select.POLLIN)
    if stdin:
        os.set_blocking(sb.stdin_w, False)
        poller.register(sb.stdin_w, select.POLLOUT)
    else:
        os.close(sb.stdin_w)   # EOF at once for a program that reads
        sb.stdin_w = -1
    open_pipes = 2
    end = None
    try:
        while open_pipes or status is None:
            if status is None:
                timeout = max(0.0, deadline - time.monotonic())
                if rss_watch is not None and reason is None:
                    now = time.monotonic()
                    if rss_watch.due(now) and rss_watch.over(now):
                        reason, end = "memory", now
                        kill()
                        continue
                    timeout = memory_policy.remaining(rss_watch, timeout)
            else:
                timeout = 0.5   # main exited; descendants are being killed, pipes drain
            events = poller.poll(timeout * 1000)
            if not events and status is None and time.monotonic() < deadline:
                continue   # the memory watch's next sample is due
            if not events and status is None:
                reason = reason or "timeout"
                end = time.monotonic()
                kill()
                continue
            if not events and status is not None:
                kill()   # something still holds the pipes open
                continue
            for fd, _ev in events:
                if fd == sock.fileno():
                    # The server speaks during a stage only to abort it.
                    if protocol.recv_frame(sock) is None:
                        raise ServerGone()
                    raise AbortRequested()
                if fd == pidfd:
                    if st_r >= 0:
                        status, usage = read_init_report(st_r)
                    else:
                        _, status, ru = os.wait4(pid, 0)
                    end = end or time.monotonic()
                    poller.unregister(pidfd)
                    # The stage ends with its main process: nothing else
                    # survives it. In a PID namespace the kernel sees to
                    # that (init has exited); otherwise we do.
                    if st_r < 0 and reaper.reap_exited():
                        kill()
                    continue
                if fd == sb.stdin_w:
                    try:
                        n = os.write(sb.stdin_w, stdin[:65536])
                        stdin = stdin[n:]
                    except OSError:   # EPIPE: the program stopped reading
                        stdin = b""
                    if not stdin:
                        poller.unregister(sb.stdin_w)
                        os.close(sb.stdin_w)
                        sb.stdin_w = -1
                    continue
                data = os.read(fd, READ_CHUNK)
                if not data:
                    poller.unregister(fd)
                    open_pipes -= 1
                    continue
                if capture.add(bufs[fd], data) and reason is None:
                    reason = "output"
                    end = time.monotonic()
                    kill()
    except BaseException:
        # AbortRequested (or the server went away): the run ends now, so that the
        # job's end does not wait on a stage that is still running.
        kill()
        raise
    wall = (end or time.monotonic()) - start
    if usage is None:
        reaper.kill_and_reap()
        reaper.count(ru)
        cpu, rss = reaper.cpu, reaper.rss
    else:
        # The namespace's processes are dead or dying (the kernel kills
        # all of a PID namespace when its init exits); reaping them, and
        # waiting for the namespaces' teardown, is left to the job's end.
        cpu, rss = usage
    if rss_watch is not None:   # a run it stopped has no report of its own
        rss = max(rss, rss_watch.peak)
    return Ended(status, reason, wall, cpu, rss, capture)


def read_init_report(fd: int) -> tuple[int, tuple[float, int]]:
    """(wait status, (cpu s, max rss bytes)) from a PID namespace's init.

    No report (the init was killed, e.g. by the timeout's kill) reads as SIGKILL.
    """
    raw = helper.read_all(fd)
    try:
        status, utime, stime, maxrss = raw.split()
        return int(status), (float(utime) + float(stime), int(maxrss) * 1024)
    except ValueError:
        return signal.SIGKILL, (0.0, 0)


def ended_outcome(ended: Ended, *, peak: int | None, oom: bool) -> protocol.StageOutcome:
    """The outcome of a watched stage; `peak`, `oom`: the memory cgroup's
    figures where there is one (peak None: rusage's stands)."""
    st = ended.wait_status
    sig = os.WTERMSIG(st) if os.WIFSIGNALED(st) else None
    code = os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + (sig or 0)
    c = ended.capture
    return outcome(stdout=bytes(c.stdout), stderr=bytes(c.stderr), output=bytes(c.output),
                   exit_code=code, signal_no=sig, reason=ended.reason, oom=oom,
                   wall=ended.wall, cpu=ended.cpu,
                   peak=peak if peak is not None else ended.rss, truncated=c.truncated)


def outcome(*, stdout: bytes, stderr: bytes, output: bytes | None, exit_code: int,
            signal_no: int | None, reason: str | None, oom: bool, wall: float, cpu: float,
            peak: int, truncated: bool) -> protocol.StageOutcome:
    """A stage's outcome; text as UTF-8 with invalid bytes replaced;
    `output` None: stdout then stderr."""
    return protocol.StageOutcome(
        stdout=stdout.decode("utf-8", errors="replace"),
        stderr=stderr.decode("utf-8", errors="replace"),
        output=(output if output is not None else stdout + stderr).decode(
            "utf-8", errors="replace"),
        exit_code=exit_code,
        signal=signal.Signals(signal_no).name if signal_no else None,
        status=decide_status(exit_code=exit_code, signal_no=signal_no, reason=reason, oom=oom),
        wall_time=round(wall * 1000),
        cpu_time=round(cpu * 1000),
        memory=peak,
        truncated=truncated,
    )
