"""A slot's supervisor: readies each job's uid and work dir, runs stages, cleans up.

One long-lived supervisor per slot, forked by the spawner: root,
single-threaded, and a child subreaper, so every process a run leaves
behind is reparented to it and can be killed and reaped (and its CPU time
counted). It serves one job at a time over its socket to the server
(protocol.py); an abort message kills the current run, and if the server
closes the socket (shutdown, crash) the run is killed and everything
cleaned before the process exits. A job's uid lock is released only after
its cleanup.

The loop is here; the parts it drives are modules of their own: leasing.py
(uids), workdir.py (work dirs), standby.py (the exec helper started ahead),
watch.py (a running stage), cleanup.py (kill, reap, remove).
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import time

import msgspec

from pesto.errors import SetupFailed
from pesto.sandbox import (artifacts, cleanup, helper, kernel, memory as memory_policy,
                           namespaces, protocol, standby, watch, workdir)
from pesto.sandbox.cleanup import Reaper, kill_uid
from pesto.sandbox.context import Context
from pesto.sandbox.leasing import Leases
from pesto.sandbox.protocol import (Abort, Close, Prepare, Reply, Stage, StageOutcome,
                                    StageSpec, Sweep, Sync)
from pesto.sandbox.status import Status


class Supervisor:
    """One slot: serves jobs one after another, each under a freshly leased uid.

    Whatever does not depend on the request is done while the slot is idle,
    after the previous reply: the next job's uid is leased, its work dir
    made, and a standby started (the exec helper, pesto-exec.c) that has
    already dropped to the uid, entered its namespaces and installed seccomp.
    A request then pays only for writing its files, the last setup steps and
    exec.
    """

    def __init__(self, sock: socket.socket, ctx: Context, slot: int) -> None:
        self.sock = sock
        self.ctx = ctx
        self.leases = Leases(ctx, slot)
        self.uid = -1
        self.lock_fd = -1
        self.workdir: str | None = None
        self.used = False               # the current job has been given to a request
        self.standby: standby.Standby | None = None
        self.aborted = False
        # pidfds of stage processes whose namespaces are being torn down
        self.exiting: list[int] = []
        # The slot's namespaces: its reusable network namespace and its
        # private tmpfs for work dirs, where the host allows them.
        self.slot_ns = namespaces.slot_namespaces(
            ctx.work_root, ctx.disk_limit, user=ctx.userns, net=ctx.namespaces, mnt=ctx.tmpfs)
        # Work dirs are made and removed through this descriptor only.
        self.private_work = self.slot_ns is not None and self.slot_ns.mnt_fd >= 0
        self.leftovers = False   # a failed clean-up left something in the slot's tmpfs
        self.work_fd = self.slot_ns.work_fd if self.slot_ns else \
            os.open(ctx.work_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        # The CPUs the spawner may use, when this slot is pinned to fewer
        # (pesto/sandbox/cpus.py): for runtimes with `spread_cpus`.
        wide = os.sched_getaffinity(os.getppid())
        self.wide_cpus = wide if wide != os.sched_getaffinity(0) else None
        # The seccomp program, as a file the exec helper reads.
        self.seccomp_fd = -1
        if ctx.seccomp is not None:
            self.seccomp_fd = os.memfd_create("pesto-seccomp", os.MFD_CLOEXEC)
            workdir.write_all(self.seccomp_fd, ctx.seccomp.code)

    # -- the loop -----------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the server goes away; a job never outlives it."""
        try:
            self.ready_next()
            while True:
                body = protocol.recv_frame(self.sock)
                if body is None:
                    return
                try:
                    msg = protocol.decode_request(body)
                except protocol.BadMessage as exc:   # framing intact: say so, go on
                    protocol.send_blocking(self.sock, protocol.Failed(error=str(exc)))
                    continue
                reply = self.handle(msg)
                # A stage without `more` is the job's last: it ends the job
                # as a close would, saving the server a round trip.
                stage = msg.spec if isinstance(msg, Stage) else None
                ending = isinstance(msg, (Close, Abort)) or self.aborted or \
                    (stage is not None and not stage.more)
                if ending:
                    # The next job's uid (leased ahead while idle), so that
                    # the server knows its work dir in advance and sends its
                    # files with its first stage.
                    reply = msgspec.structs.replace(reply, next_uid=self.leases.lease_ahead())
                protocol.send_blocking(self.sock, reply)
                # After the reply, off the request's path:
                if stage is not None:
                    self.ctx.cgroups.relax()
                if ending:
                    self.aborted = False
                    # Cleaned up after the reply: the result need not wait for
                    # the namespaces' teardown. The uid stays locked until this
                    # is done; if it fails, the lock file stays dirty and the
                    # uid's next holder sweeps it.
                    self.finish()
                    self.ready_next()
                elif stage is not None and self.uid >= 0 and self.standby is None:
                    self.standby = self._spawn_standby(wide=stage.spread_cpus)
        except (watch.ServerGone, OSError):
            return
        finally:
            self.finish()
            self.leases.release_ahead()   # leased, never used: clean as it is

    def handle(self, msg: protocol.AnyRequest) -> Reply:
        """The reply to one request; a failure of the sandbox is a Failed reply."""
        op = msg.__struct_config__.tag
        try:
            match msg:
                case Prepare():
                    return self.prepare(msg)
                case Stage(spec=spec):
                    if msg.prepare is not None:   # the job's first stage brings its files
                        self.prepare(msg.prepare)
                    outcome = self.stage(spec)
                    snapshot_error = None
                    if spec.snapshot:
                        # A compile whose output seeds later runs: kept only if it succeeded.
                        snapshot_error = (self._snapshot(spec.snapshot)
                                          if outcome.status == Status.OK else "not kept")
                    return protocol.StageDone(outcome=outcome, snapshot_error=snapshot_error)
                case Close():
                    return protocol.Closed()
                case Abort():
                    return protocol.Aborted()
                case Sync():   # answered once everything before it is done
                    return protocol.Synced(standby_uid=self.uid if not self.used else -1,
                                           ahead_uid=self.leases.ahead_uid)
                case Sweep(uid=uid):
                    self.leases.sweep(uid)
                    return protocol.Swept()
        except SetupFailed as exc:   # the host's fault: said so, with the step
            return protocol.Failed(error=f"{op}: {exc}", setup=protocol.SetupError(
                exc.step, exc.errno, exc.text))
        except watch.AbortRequested:   # mid-stage: the job ends, after the reply
            self.aborted = True
            return protocol.Aborted()
        except watch.ServerGone:
            raise
        except Exception as exc:  # a sandbox failure: reported, never hidden
            return protocol.Failed(error=f"{op}: {exc!r}")
        raise AssertionError(f"unhandled request {msg!r}")   # the union is matched in full

    # -- a job's life: leased and readied, used, cleaned ----------------------

    def ready_next(self) -> None:
        """Lease the next uid, make its work dir and its first standby."""
        try:
            self._lease()
            self.standby = self._spawn_standby()
        except Exception:
            self.finish()   # prepare() will try again, and report what fails
        # And the uid of the job after it, so that announcing it at the end
        # of the next job costs nothing on that job's path.
        self.leases.lease_ahead()

    def _lease(self) -> None:
        """Take the uid leased ahead (or a fresh one) and make its work dir."""
        self.uid, self.lock_fd = self.leases.take()
        if self.private_work and self.leftovers:
            workdir.clear(self.work_fd)
            self.leftovers = False
        workdir.make(self.work_fd, self.uid)
        self.workdir = os.path.join(self.ctx.work_root, str(self.uid))

    def finish(self) -> bool:
        """End the current job: kill what is left of its uid, remove every
        trace, release the uid. True if all went well (or there was no job)."""
        if self.uid < 0:
            return True
        clean = False
        try:
            if self.standby is not None:
                self.standby.close()   # EOF on its control pipe: it exits
                self.standby = None
            # As subreaper, every process of the uid is our descendant: when
            # none is left, none of the uid is (no unconditional kill needed).
            # The stages' outer processes exit by themselves once their
            # namespaces are gone: wait for that rather than fork a killer.
            self._wait_exiting()
            Reaper(self.uid).kill_and_reap()
            if self.workdir:
                workdir.remove(self.work_fd, self.uid)
            if not self.ctx.landlock_abi:
                cleanup.scrub_shared_tmp(self.uid)
            clean = True
        except Exception:
            self.leftovers = True   # the lock file stays "dirty": the next holder sweeps
        try:
            Leases.release(self.lock_fd, clean=clean)
        except OSError:
            self.leftovers = True
        self.uid, self.lock_fd, self.workdir, self.used = -1, -1, None, False
        return clean

    def prepare(self, msg: Prepare) -> protocol.Prepared:
        if self.used:
            self.finish()   # defensive: a previous job the server forgot to close
        if self.uid < 0:
            self._lease()
        uid = self.uid
        if msg.uid not in (-1, uid):
            # The server expected the uid announced ahead; this one differs
            # (readying it failed): the stage's paths would be wrong, so the
            # job fails with a sandbox error instead of running.
            raise RuntimeError(f"work dir of uid {msg.uid} expected, slot holds {uid}")
        self.used = True
        artifact = (artifacts.artifact_path(self.ctx.work_root, msg.artifact)
                    if msg.artifact else None)
        workdir.fill(self.work_fd, uid, msg.files, artifact)
        assert self.workdir is not None
        return protocol.Prepared(uid=uid, workdir=self.workdir)

    # -- one stage -------------------------------------------------------

    def _spawn_standby(self, wide: bool = False) -> standby.Standby:
        """The next stage's standby; `wide`: on every CPU the server may use."""
        assert self.workdir is not None
        return standby.spawn(self.ctx, uid=self.uid, workdir=self.workdir,
                             seccomp_fd=self.seccomp_fd, slot_ns=self.slot_ns,
                             wide_cpus=self.wide_cpus if wide else None)

    def _discard(self, sb: standby.Standby) -> None:
        """Let an unused standby exit (EOF on its control pipe); finish() reaps it."""
        sb.close()
        self.exiting.append(sb.pidfd)

    def _rlimits(self, spec: StageSpec, in_cgroup: bool) -> list[tuple[int, int]]:
        """The stage's rlimits (the memory one only where no cgroup holds the limit)."""
        rlimits = [
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_CPU, spec.cpu_seconds),
            (resource.RLIMIT_NPROC, spec.processes),
            (resource.RLIMIT_FSIZE, spec.file_size),
            (resource.RLIMIT_NOFILE, spec.open_files),
            # glibc sizes every new thread's stack from this: 8 MiB, Linux's
            # usual default (64 MiB kept BEAM and Node from starting threads
            # under a data limit).
            (resource.RLIMIT_STACK, min(spec.memory, 8 << 20)),
            (resource.RLIMIT_MEMLOCK, 0),
            (resource.RLIMIT_MSGQUEUE, 0),
        ]
        if not in_cgroup:
            rlimits.append(memory_policy.rlimit(spec.memory_mode, spec.memory,
                                                spec.memory_reserve))
        return rlimits

    def stage(self, spec: StageSpec) -> StageOutcome:
        if self.workdir is None or not self.used:
            raise ValueError("stage before prepare")
        # A previous stage's namespaces may still be exiting: their memory
        # must be gone before this stage's baseline is taken.
        self._wait_exiting()
        sb = self.standby
        if sb is not None and spec.spread_cpus and self.wide_cpus is not None and not sb.wide:
            # Readied on the slot's CPUs: this stage's runtime wants them all.
            self._discard(sb)
            sb = None
        sb = sb or self._spawn_standby(wide=spec.spread_cpus)
        self.standby = None
        # The task limit's headroom: the supervisor's own kill forks run in
        # the slot's cgroup too and must never fail for a fork bomb's sake.
        in_cgroup = self.ctx.cgroups.start_stage(spec.memory, spec.processes + 8)
        rss_watch = None
        if not in_cgroup and spec.memory_mode == "watch":
            rss_watch = memory_policy.RssWatch(self.uid, spec.memory)
        raw = helper.encode_spec(argv=spec.argv, env=spec.env,
                                 rlimits=self._rlimits(spec, in_cgroup),
                                 read_paths=spec.read_paths)
        uid = self.uid
        start = time.monotonic()
        try:
            workdir.write_all(sb.ctl_w, raw)
        except OSError:
            pass   # the standby died: its report (or its status) says why
        os.close(sb.ctl_w)
        sb.ctl_w = -1
        try:
            ended = watch.watch(sb, stdin=spec.stdin.encode(), start=start, wall_ms=spec.wall_ms,
                                output_limit=spec.output_limit, sock=self.sock,
                                kill=lambda: kill_uid(uid), reaper=Reaper(uid),
                                rss_watch=rss_watch)
            peak, oom = self.ctx.cgroups.finish_stage()
            # The report pipe is close-on-exec: empty means the exec happened.
            # It is read only now that the stage is over (every end of it is
            # closed by then), not waited for before: one wake-up less a stage.
            report = helper.read_all(sb.report_r)
        finally:
            sb.close()
            if self.ctx.namespaces:
                # Its init has ended the program; the namespaces are being
                # torn down as its outer process exits. Its pidfd tells when
                # that is done; reaping is finish()'s.
                self.exiting.append(sb.pidfd)
            else:
                os.close(sb.pidfd)
        if not report:
            return watch.ended_outcome(ended, peak=peak, oom=oom)
        Reaper(uid).kill_and_reap()
        step, err, text = report.decode(errors="replace").split(":", 2)
        if step == "exec" and int(err) in (errno.ENOENT, errno.EACCES, errno.ENOEXEC):
            # The program (e.g. a compile artefact) could not be executed:
            # the program's failure, not the sandbox's.
            return watch.outcome(stdout=b"", stderr=f"pesto: cannot execute {spec.argv[0]}: "
                                 f"{os.strerror(int(err))}\n".encode(), output=None,
                                 exit_code=127, signal_no=None, reason=None, oom=False,
                                 wall=time.monotonic() - start, cpu=0.0, peak=0,
                                 truncated=False)
        raise SetupFailed(step, int(err), text)

    def _snapshot(self, name: str) -> str | None:
        """Keep the work dir of the stage just ended as artifact `name`;
        None, or why it could not be kept.

        Only once no process of the uid is left (the kernel tears a PID
        namespace down as its init exits; we kill and reap the rest), so
        the tree no longer changes while it is read.
        """
        self._wait_exiting()
        Reaper(self.uid).kill_and_reap()
        try:
            artifacts.snapshot(self.work_fd, str(self.uid),
                               artifacts.artifact_path(self.ctx.work_root, name))
        except artifacts.ArtifactError as exc:
            return str(exc)
        return None

    def _wait_exiting(self) -> None:
        """Wait until the outer processes of earlier stages have exited."""
        for pidfd in self.exiting:
            select.select([pidfd], [], [], 5)
            os.close(pidfd)
        self.exiting.clear()


def run(sock_fd: int, slot: int, ctx: Context) -> None:
    """Entry point of a slot supervisor, freshly forked by the spawner."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # the spawner ignores it; we wait
    kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
    sock = socket.socket(fileno=sock_fd)
    sock.set_inheritable(False)
    # Joined once, here: programs forked later are born in the slot's cgroup.
    ctx.cgroups.join(f"{os.getppid()}-{slot}")
    Supervisor(sock, ctx, slot).serve()
