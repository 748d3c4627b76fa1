"""The spawner: a single-threaded root process that forks the slot supervisors.

Started by exec (never by fork of the threaded server), so the forks it
and its children make are safe to run Python in before exec. It reads
nothing but "slot N" + a socket from the server, forks a supervisor for
that slot and forgets it. Supervisors are long-lived: forking one per job
would cost a Python fork and a cgroup move (docs/benchmarks.md) on every run.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys

import msgspec

from pesto.sandbox import cleanup, context, cpus, helper, kernel, protocol, reach, supervisor


def main(argv: list[str]) -> int:
    ctrl = socket.socket(fileno=int(argv[0]))
    cfg = protocol.decode_start(argv[1], protocol.SpawnerConfig)
    # The start-up path check's lists (reach.py), sent first by the server.
    paths = protocol.decode_start(ctrl.recv(1 << 20), protocol.StartPaths)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C is the server's to handle
    try:
        ctx = context.probe(uid_base=cfg.uid_base, uid_count=cfg.uid_count,
                            sandbox_dir=cfg.sandbox_dir, disable=tuple(cfg.disable),
                            disk_limit=cfg.disk_limit)
    except helper.HelperMissing as exc:
        ctrl.send(msgspec.json.encode(protocol.StartReport(error=str(exc))))
        return 1
    # Before any slot: a run uid that cannot reach its language (or a data
    # dir it could read) would fail (or leak) on every job.
    problems = reach.check(paths.need, paths.deny, private_tmp=ctx.namespaces)
    if problems:
        ctrl.send(msgspec.json.encode(protocol.StartReport(error="; ".join(problems),
                                                           unreachable=problems)))
        return 1
    allowed = os.sched_getaffinity(0)
    # Whatever a crashed predecessor left behind goes before the first job.
    cleanup.sweep_stale(ctx)
    # Supervisors are never waited for: let the kernel reap them. As a
    # subreaper the spawner also inherits (and so reaps) whatever a dead
    # supervisor leaves behind, instead of leaving zombies to a PID 1 that
    # may not reap.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
    # Everything allocated so far is shared with every fork: keep the
    # collector from touching (and so copying) those pages in the children.
    gc.collect()
    gc.freeze()
    ctrl.send(msgspec.json.encode(protocol.StartReport(layers={
        name: protocol.LayerReport(layer.available, layer.enabled, layer.reason)
        for name, layer in ctx.layers.items()})))
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ctrl, 64, 1)
        except InterruptedError:
            continue
        if not msg:
            return 0          # the server closed the control socket (or died)
        if len(fds) != 1 or not msg.startswith(b"slot "):
            for fd in fds:
                os.close(fd)
            continue
        slot = int(msg.split()[1])
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                ctrl.close()
                pinned = cpus.slot_cpus(allowed, cfg.slots, slot) if cfg.pin_cpus else None
                if pinned is not None:
                    try:   # inherited by everything the slot starts
                        os.sched_setaffinity(0, pinned)
                    except OSError:
                        pass   # a host that refuses: the slot runs where the kernel puts it
                supervisor.run(fds[0], slot, ctx)
            except BaseException:  # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(fds[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
