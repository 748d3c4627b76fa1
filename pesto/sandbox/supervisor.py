"""A slot's supervisor: readies each job's uid and work dir, runs stages, cleans up.

One long-lived supervisor per slot, forked by the spawner: root,
single-threaded, and a child subreaper, so every process a run leaves
behind is reparented to it and can be killed and reaped (and its CPU time
counted). It serves one job at a time over its socket to the server; an
abort message kills the current run, and if the server closes the socket
(shutdown, crash) the run is killed and everything cleaned before the
process exits. A job's uid lock is released only after its cleanup.
"""

from __future__ import annotations

import base64
import errno
import os
import resource
import select
import shutil
import signal
import socket
import time
from typing import Any

import attrs

from pesto.sandbox import (artifacts, helper, kernel, landlock, memory as memory_policy, namespaces,
                           protocol)
from pesto.sandbox.context import Context
from pesto.sandbox.uids import UidLeases

READ_CHUNK = 65536


def kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid`, orphans and setsid'd daemons included.

    kill(-1) executed as the run's uid reaches exactly the processes that
    uid owns. A few rounds catch what a fork bomb forked during the first;
    zombies also count as signalled, so the caller reaps and calls again
    rather than this looping until ESRCH.
    """
    pid = os.fork()
    if pid == 0:
        try:
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(3):
                os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass  # ESRCH: nothing of this uid is left
        except BaseException:
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)


class Reaper:
    """Reaps descendants and adds up their CPU time and peak RSS for one stage.

    As subreaper, "no child left" means no process of this run exists any more.
    """

    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.cpu = 0.0
        self.rss = 0

    def _count(self, ru: resource.struct_rusage) -> None:
        self.cpu += ru.ru_utime + ru.ru_stime
        self.rss = max(self.rss, ru.ru_maxrss * 1024)

    def reap_exited(self) -> bool:
        """Reap what has exited; True if descendants are still alive."""
        while True:
            try:
                pid, _status, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            self._count(ru)

    def kill_and_reap(self) -> None:
        """Kill every process of the uid and reap all of them."""
        while self.reap_exited():
            kill_uid(self.uid)
            try:   # wait for one to die, then reap the rest that did
                _pid, _status, ru = os.wait4(-1, 0)
            except ChildProcessError:
                return
            self._count(ru)


def _remove_tree(name: str, dir_fd: int) -> None:
    """Remove `name` (in dir_fd) and everything under it, never following a link.

    Every directory is opened with O_NOFOLLOW relative to a descriptor, so a
    link planted anywhere is removed as a link, never walked through (and no
    process of the run is alive by now to race this). Depth costs neither
    recursion nor descriptors: the subdirectories of a nested directory are
    first renamed up into the top one, so a run that nested thousands of
    directories cannot make its clean-up fail. Raises OSError for what could
    not be removed.
    """
    try:
        top = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(name, dir_fd=dir_fd)   # a file or a link: removed itself
        return
    try:
        pending = [_emptied(top)]
        taken = set(pending[0])   # names in `top` that a move must not reuse
        while pending:
            for sub in pending.pop():
                fd = os.open(sub, _DIR_FLAGS, dir_fd=top)
                try:
                    moved = []
                    for d in _emptied(fd):   # up into `top`, under a fresh name
                        new = f".pesto-rm-{len(taken)}"
                        while new in taken:
                            new += "_"
                        taken.add(new)
                        os.rename(d, new, src_dir_fd=fd, dst_dir_fd=top)
                        moved.append(new)
                finally:
                    os.close(fd)
                os.rmdir(sub, dir_fd=top)
                pending.append(moved)
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=dir_fd)


def _emptied(fd: int) -> list[str]:
    """Unlink every non-directory in directory fd; return its subdirectories' names."""
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return subdirs


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _scrub_shared_tmp(uid: int) -> None:
    """Without Landlock a run can write the world-writable dirs: remove what it left."""
    for top in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for e in entries:
            try:
                if e.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if e.is_dir(follow_symlinks=False):
                    shutil.rmtree(e.path, ignore_errors=True)
                else:
                    os.unlink(e.path)
            except OSError:
                pass


def sweep(uid: int, ctx: Context) -> None:
    """Remove every trace of a uid whose previous holder died before cleaning."""
    kill_uid(uid)
    # A work dir in the shared work root (no private tmpfs); one in a dead
    # slot's tmpfs vanished with the slot.
    if os.path.lexists(os.path.join(ctx.work_root, str(uid))):
        fd = os.open(ctx.work_root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _remove_tree(str(uid), fd)
        finally:
            os.close(fd)
    if not ctx.landlock_abi:
        _scrub_shared_tmp(uid)


def sweep_if_dirty(uid: int, lock_fd: int, ctx: Context) -> bool:
    """Sweep a uid just locked if its previous holder died before cleaning
    (lock file left "dirty", or a work dir left behind). True if it swept."""
    if os.pread(lock_fd, 5, 0) == b"dirty" or os.path.lexists(os.path.join(ctx.work_root, str(uid))):
        sweep(uid, ctx)
        return True
    return False


def sweep_stale(ctx: Context) -> list[int]:
    """At start-up: sweep every uid left dirty by a crashed server or supervisor.

    Only uids whose lock is free are touched (another live Pesto may hold the rest).
    """
    leases = UidLeases(ctx, 0)
    swept = []
    for name in os.listdir(leases.lock_dir):
        if not name.isdigit():
            continue
        try:
            fd = leases.lock_exact(int(name))
        except BlockingIOError:
            continue
        try:
            if sweep_if_dirty(int(name), fd, ctx):
                os.ftruncate(fd, 0)
                swept.append(int(name))
        finally:
            os.close(fd)
    return swept


class SetupFailed(Exception):
    """The exec helper reported a failed set-up step ("step:errno:message")."""

    def __init__(self, step: str, err: int, text: str) -> None:
        super().__init__(f"sandbox setup failed at {step}: {text}")
        self.step, self.errno, self.text = step, err, text


class Aborted(Exception):
    """The server asked to abort the job (a cancelled request)."""


class ServerGone(Exception):
    """The server closed the slot's socket (shutdown or crash)."""


@attrs.define
class Standby:
    """An exec helper started ahead of a stage, waiting on ctl_w for its spec."""
    pid: int
    ctl_w: int
    stdin_w: int
    out_r: int
    err_r: int
    report_r: int
    status_r: int   # -1 without a PID namespace
    pidfd: int      # of pid, opened at spawn: immune to pid reuse; its owner closes it
    wide: bool = False   # placed on every CPU the server may use (spread_cpus)

    def close(self) -> None:
        for fd in (self.ctl_w, self.stdin_w, self.out_r, self.err_r, self.report_r, self.status_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.ctl_w = self.stdin_w = self.out_r = self.err_r = self.report_r = self.status_r = -1


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
        self.slot = slot
        self.uids = UidLeases(ctx, slot)
        self.uid = -1
        self.lock_fd = -1
        self.workdir: str | None = None
        self.used = False               # the current job has been given to a request
        self.standby: Standby | None = None
        self.aborted = False
        self.ahead: tuple[int, int] | None = None   # (uid, lock fd) of the next job
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
            _write_all(self.seccomp_fd, ctx.seccomp.code)

    # -- lifecycle --------------------------------------------------------

    def serve(self) -> None:
        """Answer requests until the server goes away; a job never outlives it."""
        try:
            self.ready_next()
            while True:
                msg = protocol.recv_blocking(self.sock)
                if msg is None:
                    return
                reply = self.handle(msg)
                op = msg.get("op")
                # A stage without `more` is the job's last: it ends the job
                # as a close would, saving the server a round trip.
                last_stage = op == "stage" and not msg.get("more")
                ending = op in ("close", "abort") or last_stage or self.aborted
                if ending:
                    # The next job's uid (leased ahead while idle), so that
                    # the server knows its work dir in advance and sends its
                    # files with its first stage.
                    reply["next_uid"] = self._lease_ahead()
                protocol.send_blocking(self.sock, reply)
                # After the reply, off the request's path:
                if op == "stage":
                    self.ctx.cgroups.relax()
                if ending:
                    self.aborted = False
                    # Cleaned up after the reply: the result need not wait for
                    # the namespaces' teardown. The uid stays locked until this
                    # is done; if it fails, the lock file stays dirty and the
                    # uid's next holder sweeps it.
                    self.finish()
                    self.ready_next()
                elif op == "stage" and msg.get("more") and self.uid >= 0 and self.standby is None:
                    self.standby = self._spawn_standby(wide=bool(msg.get("spread_cpus")))
        except (ServerGone, OSError):
            return
        finally:
            self.finish()
            if self.ahead is not None:   # leased, never used: clean as it is
                os.ftruncate(self.ahead[1], 0)
                os.close(self.ahead[1])

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = msg.get("op")
        try:
            if op == "prepare":
                return self.prepare(msg)
            if op == "stage":
                if "files" in msg:   # the job's first stage brings its files
                    self.prepare(msg)
                result = self.stage(msg)
                # A compile whose output seeds later runs (kept only if it succeeded).
                if msg.get("snapshot") and result["status"] == "ok":
                    return {"ok": True, "result": result, **self._snapshot(msg["snapshot"])}
                return {"ok": True, "result": result}
            if op == "close":
                return {"ok": True, "close": True}
            if op == "abort":
                return {"ok": True, "abort": True}
            if op == "sync":   # answered once everything before it is done
                # The work root as this slot sees it, for the tests' checks.
                return {"ok": True, "standby_uid": self.uid if not self.used else -1,
                        "ahead_uid": self.ahead[0] if self.ahead else -1,
                        "work_view": f"/proc/{os.getpid()}/fd/{self.work_fd}"}
            if op == "sweep":
                self.sweep_uid(int(msg["uid"]))
                return {"ok": True}
            return {"ok": False, "error": f"unknown op {op!r}"}
        except SetupFailed as exc:   # the host's fault: said so, with the step
            return {"ok": False, "error": f"{op}: {exc}",
                    "setup": {"step": exc.step, "errno": exc.errno, "text": exc.text}}
        except Aborted:   # mid-stage: the job ends, after the reply
            self.aborted = True
            return {"ok": True, "abort": True}
        except ServerGone:
            raise
        except Exception as exc:  # a sandbox failure: reported, never hidden
            return {"ok": False, "error": f"{op}: {exc!r}"}

    def ready_next(self) -> None:
        """Lease the next uid, make its work dir and its first standby."""
        try:
            self._lease()
            self.standby = self._spawn_standby()
        except Exception:
            self.finish()   # prepare() will try again, and report what fails
        # And the uid of the job after it, so that announcing it at the end
        # of the next job costs nothing on that job's path.
        self._lease_ahead()

    def finish(self) -> bool:
        """End the current job: kill what is left of its uid, remove every
        trace, release the uid. True if all went well (or there was no job)."""
        if self.uid < 0:
            return True
        ok = True
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
                _remove_tree(str(self.uid), self.work_fd)
            if not self.ctx.landlock_abi:
                _scrub_shared_tmp(self.uid)
            os.ftruncate(self.lock_fd, 0)   # clean: the next holder need not sweep
        except Exception:
            ok = False   # the lock file stays "dirty": the next holder sweeps
            self.leftovers = True
        os.close(self.lock_fd)              # releases the uid
        self.uid, self.lock_fd, self.workdir, self.used = -1, -1, None, False
        return ok

    def sweep_uid(self, uid: int) -> None:
        """Sweep a uid another (dead) supervisor held, once its lock is free."""
        fd = self.uids.lock_exact(uid, wait=True)
        try:
            sweep(uid, self.ctx)
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    # -- the job's uid and work dir ------------------------------------------

    def _lease_uid(self) -> tuple[int, int]:
        """(uid, lock fd) of a free uid, swept if a dead holder left it dirty."""
        uid, lock_fd = self.uids.lease()
        try:
            sweep_if_dirty(uid, lock_fd, self.ctx)
            os.pwrite(lock_fd, b"dirty", 0)   # until finish() has cleaned up
        except BaseException:
            os.close(lock_fd)
            raise
        return uid, lock_fd

    def _lease_ahead(self) -> int:
        """Lease the next job's uid while this job still holds its own; -1 if none."""
        if self.ahead is None:
            try:
                self.ahead = self._lease_uid()
            except Exception:
                return -1
        return self.ahead[0]

    def _lease(self) -> None:
        """Take the uid leased ahead (or a fresh one) and make its work dir."""
        uid, lock_fd = self.ahead or self._lease_uid()
        self.ahead = None
        self.uid, self.lock_fd = uid, lock_fd
        if self.private_work and self.leftovers:
            # The slot's tmpfs holds one job at a time: anything in it is
            # left from an earlier job whose clean-up failed.
            for name in os.listdir(self.work_fd):
                _remove_tree(name, self.work_fd)
            self.leftovers = False
        # Made and chowned before any process of the uid exists.
        os.mkdir(str(uid), 0o700, dir_fd=self.work_fd)
        os.chown(str(uid), uid, uid, dir_fd=self.work_fd, follow_symlinks=False)
        self.workdir = os.path.join(self.ctx.work_root, str(uid))

    def prepare(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.used:
            self.finish()   # defensive: a previous job the server forgot to close
        if self.uid < 0:
            self._lease()
        uid = self.uid
        if msg.get("uid", uid) != uid:
            # The server expected the uid announced ahead; this one differs
            # (readying it failed): the stage's paths would be wrong, so the
            # job fails with a sandbox error instead of running.
            raise RuntimeError(f"work dir of uid {msg['uid']} expected, slot holds {uid}")
        self.used = True
        # Written as root into a directory in which no untrusted process has
        # run (the standby waiting there runs only our code), so no
        # planted link can redirect us.
        dfd = os.open(str(uid), os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=self.work_fd)
        try:
            if msg.get("artifact"):   # a compile stage's output (root's own copy)
                artifacts.copy_in(artifacts.artifact_path(self.ctx.work_root, msg["artifact"]),
                                  dfd, uid)
            for f in msg["files"]:
                data = (base64.b64decode(f["base64"]) if "base64" in f
                        else f["content"].encode())
                self._write_file(dfd, f["name"], data, uid)
        finally:
            os.close(dfd)
        return {"ok": True, "uid": uid, "workdir": self.workdir}

    @staticmethod
    def _write_file(dfd: int, name: str, data: bytes, uid: int) -> None:
        parts = name.split("/")
        fds = [dfd]
        try:
            for part in parts[:-1]:
                if part in ("", ".", ".."):
                    raise ValueError(f"bad file name {name!r}")
                try:
                    os.mkdir(part, 0o700, dir_fd=fds[-1])
                    os.chown(part, uid, uid, dir_fd=fds[-1], follow_symlinks=False)
                except FileExistsError:
                    pass
                fds.append(os.open(part, os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
            leaf = parts[-1]
            if leaf in ("", ".", ".."):
                raise ValueError(f"bad file name {name!r}")
            fd = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600, dir_fd=fds[-1])
            try:
                _write_all(fd, data)
                os.fchown(fd, uid, uid)
            finally:
                os.close(fd)
        finally:
            for fd in fds[1:]:
                os.close(fd)

    # -- one stage -------------------------------------------------------

    def _discard(self, sb: Standby) -> None:
        """Let an unused standby exit (EOF on its control pipe); finish() reaps it."""
        sb.close()
        self.exiting.append(sb.pidfd)

    def _spawn_standby(self, wide: bool = False) -> Standby:
        """Start the exec helper that will become the next stage's program;
        `wide`: on every CPU the server may use rather than the slot's."""
        if wide and self.wide_cpus is not None:
            # Affinity is inherited at spawn: widened for that moment only.
            pinned = os.sched_getaffinity(0)
            os.sched_setaffinity(0, self.wide_cpus)
            try:
                sb = self._spawn_standby()
            finally:
                os.sched_setaffinity(0, pinned)
            sb.wide = True
            return sb
        assert self.workdir is not None
        stdin_r, stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        rep_r, rep_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        # With a PID namespace the program is a grandchild: its init reports
        # how it ended (and its rusage) over this pipe, so that the stage ends
        # when the program does, not when the namespaces are torn down.
        st_r, st_w = os.pipe() if self.ctx.namespaces else (-1, -1)
        abi = self.ctx.landlock_abi
        try:
            pid = helper.spawn(
                uid=self.uid, gid=self.uid, workdir=self.workdir, tmp_size=self.ctx.disk_limit,
                namespaces=self.ctx.namespaces, stdin=stdin_r, stdout=out_w, stderr=err_w,
                ctl=ctl_r, report=rep_w, status=st_w, seccomp=self.seccomp_fd,
                slot_ns=self.slot_ns.child_fds() if self.slot_ns else (-1, -1, -1),
                landlock_abi=abi,
                landlock_handled=landlock.handled(abi) if abi else (0, 0, 0),
                landlock_rules=landlock.rules(abi, [self.workdir]) if abi else ())
        finally:
            for fd in (stdin_r, out_w, err_w, rep_w, ctl_r, st_w):
                if fd >= 0:
                    os.close(fd)
        return Standby(pid, ctl_w, stdin_w, out_r, err_r, rep_r, st_r, os.pidfd_open(pid))

    def stage(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.workdir is None or not self.used:
            raise ValueError("stage before prepare")
        # A previous stage's namespaces may still be exiting: their memory
        # must be gone before this stage's baseline is taken.
        self._wait_exiting()
        sb = self.standby
        if sb is not None and msg.get("spread_cpus") and self.wide_cpus is not None \
                and not sb.wide:
            # Readied on the slot's CPUs: this stage's runtime wants them all.
            self._discard(sb)
            sb = None
        sb = sb or self._spawn_standby(wide=bool(msg.get("spread_cpus")))
        self.standby = None
        memory = int(msg["memory"])
        # The task limit's headroom: the supervisor's own kill forks run in
        # the slot's cgroup too and must never fail for a fork bomb's sake.
        in_cgroup = self.ctx.cgroups.start_stage(memory, int(msg["processes"]) + 8)
        rlimits = [
            (resource.RLIMIT_CORE, 0),
            (resource.RLIMIT_CPU, int(msg["cpu_seconds"])),
            (resource.RLIMIT_NPROC, int(msg["processes"])),
            (resource.RLIMIT_FSIZE, int(msg["file_size"])),
            (resource.RLIMIT_NOFILE, int(msg["open_files"])),
            # glibc sizes every new thread's stack from this: 8 MiB, Linux's
            # usual default (64 MiB kept BEAM and Node from starting threads
            # under a data limit).
            (resource.RLIMIT_STACK, min(memory, 8 << 20)),
            (resource.RLIMIT_MEMLOCK, 0),
            (resource.RLIMIT_MSGQUEUE, 0),
        ]
        watch = None
        if not in_cgroup:
            rlimits.append(memory_policy.rlimit(msg["memory_mode"], memory,
                                                int(msg.get("memory_reserve", 0))))
            if msg["memory_mode"] == "watch":
                watch = memory_policy.RssWatch(self.uid, memory)
        spec = helper.encode_spec(msg["argv"], msg["env"], rlimits, msg.get("read_paths", []))
        start = time.monotonic()
        try:
            _write_all(sb.ctl_w, spec)
        except OSError:
            pass   # the standby died: its report (or its status) says why
        os.close(sb.ctl_w)
        sb.ctl_w = -1
        try:
            result = self._watch(sb, start, msg, watch)
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
            return result
        Reaper(self.uid).kill_and_reap()
        step, err, text = report.decode(errors="replace").split(":", 2)
        if step == "exec" and int(err) in (errno.ENOENT, errno.EACCES, errno.ENOEXEC):
            # The program (e.g. a compile artefact) could not be executed:
            # the program's failure, not the sandbox's.
            return _result(stdout=b"", stderr=f"pesto: cannot execute {msg['argv'][0]}: "
                           f"{os.strerror(int(err))}\n".encode(), output=None,
                           exit_code=127, signal_no=None, reason=None, oom=False,
                           wall=time.monotonic() - start, cpu=0.0, peak=0, truncated=False)
        raise SetupFailed(step, int(err), text)

    def _snapshot(self, name: str) -> dict[str, Any]:
        """Keep the work dir of the stage just ended as artifact `name`.

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
            return {"snapshot": False, "snapshot_error": str(exc)}
        return {"snapshot": True}

    def _wait_exiting(self) -> None:
        """Wait until the outer processes of earlier stages have exited."""
        for pidfd in self.exiting:
            select.select([pidfd], [], [], 5)
            os.close(pidfd)
        self.exiting.clear()


    def _watch(self, sb: Standby, start: float, msg: dict[str, Any],
               watch: memory_policy.RssWatch | None = None) -> dict[str, Any]:
        """Feed stdin, collect output under the cap, enforce the deadline
        (and, given a watch, the memory limit), notice the program's end (or
        an abort), and build the stage result.
        sb's descriptors are left for its owner to close."""
        uid = self.uid
        pid, out_r, err_r, st_r = sb.pid, sb.out_r, sb.err_r, sb.status_r
        deadline = start + int(msg["wall_ms"]) / 1000
        cap = int(msg["output_limit"])
        stdin = msg.get("stdin", "").encode()
        # How the program's end is seen: its init's report, or its pidfd.
        pidfd = st_r if st_r >= 0 else sb.pidfd
        usage = None   # (cpu seconds, max rss bytes) from the init's report
        reaper = Reaper(uid)
        bufs = {out_r: bytearray(), err_r: bytearray()}
        output = bytearray()
        truncated = False
        reason = None
        status = None
        ru = None
        poller = select.poll()
        poller.register(out_r, select.POLLIN)
        poller.register(err_r, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        poller.register(self.sock.fileno(), select.POLLIN)
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
                    if watch is not None and reason is None:
                        now = time.monotonic()
                        if watch.due(now) and watch.over(now):
                            reason, end = "memory", now
                            kill_uid(uid)
                            continue
                        timeout = memory_policy.remaining(watch, timeout)
                else:
                    timeout = 0.5   # main exited; descendants are being killed, pipes drain
                events = poller.poll(timeout * 1000)
                if not events and status is None and time.monotonic() < deadline:
                    continue   # the memory watch's next sample is due
                if not events and status is None:
                    reason = reason or "timeout"
                    end = time.monotonic()
                    kill_uid(uid)
                    continue
                if not events and status is not None:
                    kill_uid(uid)   # something still holds the pipes open
                    continue
                for fd, ev in events:
                    if fd == self.sock.fileno():
                        # The server speaks during a stage only to abort it.
                        msg_in = protocol.recv_blocking(self.sock)
                        if msg_in is None:
                            raise ServerGone()
                        raise Aborted()
                    if fd == pidfd:
                        if st_r >= 0:
                            status, usage = _read_init_report(st_r)
                        else:
                            _, status, ru = os.wait4(pid, 0)
                        end = end or time.monotonic()
                        poller.unregister(pidfd)
                        # The stage ends with its main process: nothing else
                        # survives it. In a PID namespace the kernel sees to
                        # that (init has exited); otherwise we do.
                        if st_r < 0 and reaper.reap_exited():
                            kill_uid(uid)
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
                    buf = bufs[fd]
                    room = cap - len(buf)
                    if len(data) > room:
                        data = data[:max(room, 0)]
                        truncated = True
                        if reason is None:
                            reason = "output"
                            end = time.monotonic()
                            kill_uid(uid)
                    buf += data
                    output += data
        except BaseException:
            # Aborted (or the server went away): the run ends now, so that
            # finish() does not wait on a stage that is still running.
            kill_uid(uid)
            raise
        wall = (end or time.monotonic()) - start
        if usage is None:
            reaper.kill_and_reap()
            reaper._count(ru)
            cpu, rss = reaper.cpu, reaper.rss
        else:
            # The namespace's processes are dead or dying (the kernel kills
            # all of a PID namespace when its init exits); reaping them, and
            # waiting for the namespaces' teardown, is left to the job's end.
            cpu, rss = usage
        if watch is not None:   # a run it stopped has no report of its own
            rss = max(rss, watch.peak)
        peak, oom = self.ctx.cgroups.finish_stage()
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + (sig or 0)
        return _result(stdout=bytes(bufs[out_r]), stderr=bytes(bufs[err_r]), output=bytes(output),
                       exit_code=code, signal_no=sig, reason=reason, oom=oom, wall=wall,
                       cpu=cpu, peak=peak if peak is not None else rss, truncated=truncated)


def _read_init_report(fd: int) -> tuple[int, tuple[float, int] | None]:
    """(wait status, (cpu s, max rss bytes)) from a PID namespace's init.

    No report (the init was killed, e.g. by the timeout's kill) reads as SIGKILL.
    """
    raw = helper.read_all(fd)
    try:
        status, utime, stime, maxrss = raw.split()
        return int(status), (float(utime) + float(stime), int(maxrss) * 1024)
    except ValueError:
        return signal.SIGKILL, (0.0, 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _result(*, stdout: bytes, stderr: bytes, output: bytes | None, exit_code: int,
            signal_no: int | None, reason: str | None, oom: bool, wall: float, cpu: float,
            peak: int, truncated: bool) -> dict[str, Any]:
    from pesto.sandbox.status import decide_status
    status = decide_status(exit_code=exit_code, signal_no=signal_no, reason=reason, oom=oom)
    return {
        "stdout": stdout.decode("utf-8", errors="replace"),
        "stderr": stderr.decode("utf-8", errors="replace"),
        "output": (output if output is not None else stdout + stderr).decode(
            "utf-8", errors="replace"),
        "exitCode": exit_code,
        "signal": signal.Signals(signal_no).name if signal_no else None,
        "status": status,
        "wallTime": round(wall * 1000),
        "cpuTime": round(cpu * 1000),
        "memory": peak,
        "truncated": truncated,
    }


def run(sock_fd: int, slot: int, ctx: Context) -> None:
    """Entry point of a slot supervisor, freshly forked by the spawner."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # the spawner ignores it; we wait
    kernel.prctl(kernel.PR_SET_CHILD_SUBREAPER, 1)
    sock = socket.socket(fileno=sock_fd)
    sock.set_inheritable(False)
    # Joined once, here: programs forked later are born in the slot's cgroup.
    ctx.cgroups.join(f"{os.getppid()}-{slot}")
    Supervisor(sock, ctx, slot).serve()
