"""Regression tests, one per "known trap" of SANDBOX.md and per real escape class.

Each test names the trap it guards and fails for the layer it names.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

from pesto.engine import BASE_ENV
from pesto.models import ExecuteRequest
from pesto.sandbox.protocol import StageSpec
from pesto.config import load_settings
from tests.conftest import (UID_BASE, Runner, find_run_process, leftover_workdirs,
                            run_uid_processes)


def out(r):
    return r.runtime.stdout


def stage_spec(workdir: str, code_file: str, **kw) -> StageSpec:
    return StageSpec(argv=["/usr/bin/python3", "-I", code_file],
                     env={**BASE_ENV, "HOME": workdir, "TMPDIR": workdir},
                     wall_ms=3000, cpu_seconds=4, memory=128 << 20,
                     memory_mode="address-space", processes=64, open_files=256,
                     file_size=64 << 20, output_limit=65536, **kw)


@pytest.fixture
def root_target(tmp_path_factory):
    """A root-owned file and dir outside any run, which planted links will point at."""
    d = "/var/lib/pesto-test-target"
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)
    target = os.path.join(d, "precious")
    with open(target, "w") as f:
        f.write("PRECIOUS")
    os.chmod(target, 0o644)
    yield d, target
    import shutil
    shutil.rmtree(d)


def test_trap_judge0_symlinks_planted_in_compile_stage(runner, root_target):
    """CVE-2024-28185/28189 class: links planted by the compile stage must not
    make the root-owned engine write, chown or delete through them."""
    d, target = root_target
    plant = textwrap.dedent(f"""
        import os
        os.symlink({target!r}, "link-to-file")
        os.symlink({d!r}, "link-to-dir")
        os.symlink({target!r}, "run.py.out")
        os.symlink({d!r}, "tmp")
        print("planted")
    """)
    use = "import os; print(sorted(os.listdir('.')))"

    async def scenario():
        sb = runner.engine.sandbox
        async with sb.session() as s:
            wd = await s.prepare([("compile.py", plant), ("run.py", use)])
            r1 = await s.stage(stage_spec(wd, "compile.py", more=True))
            r2 = await s.stage(stage_spec(wd, "run.py"))
        return r1, r2
    r1, r2 = runner.loop.run_until_complete(scenario())
    runner.settle()
    assert r1.stdout == "planted\n", r1
    assert "link-to-file" in r2.stdout
    st = os.stat(target)
    assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (0, 0, "0o644")
    with open(target) as f:
        assert f.read() == "PRECIOUS"
    assert os.path.isdir(d) and os.stat(d).st_uid == 0
    assert leftover_workdirs(runner) == []


def test_trap_files_api_cannot_escape_workdir(runner):
    bad = ["../escape.py", "/etc/evil", "a/../../b", "a\x00b", "./x", "a//b", ""]
    from pesto.errors import InvalidRequest
    from pesto.models import SourceFile
    from pesto.validation import validate_request
    for name in bad:
        body = {"language": "python", "files": [{"name": name, "code": "print(1)"}]}
        with pytest.raises(InvalidRequest):
            validate_request(body, runner.settings, runner.engine.registry)
    ok = ExecuteRequest(language="python", files=[
        SourceFile(name="pkg/helper.py", code="X = 42"),
        SourceFile(name="main.py", code="import pkg.helper as h; print(h.X)", entrypoint=True)])
    r = runner.loop.run_until_complete(runner.engine.execute(ok, "multi"))
    assert out(r) == "42\n", r


def test_trap_io_uring_cannot_create_sockets(runner):
    """IORING_OP_SOCKET makes sockets without socket(): io_uring_setup is denied."""
    code = textwrap.dedent("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        params = ctypes.create_string_buffer(120)
        fd = libc.syscall(425, 8, params)   # io_uring_setup
        print("io_uring_setup", fd, ctypes.get_errno())
    """)
    r = runner.run("python", code)
    assert out(r).strip() == "io_uring_setup -1 1", r   # EPERM from seccomp


@pytest.mark.parametrize("syscall_nr,name", [(272, "unshare"), (308, "setns"), (165, "mount"),
                                              (321, "bpf"), (298, "perf_event_open"),
                                              (323, "userfaultfd"), (250, "keyctl"),
                                              (304, "open_by_handle_at")])
def test_trap_seccomp_denies_kernel_attack_surface(runner, syscall_nr, name):
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"print(libc.syscall({syscall_nr}, 0, 0, 0, 0, 0), ctypes.get_errno())")
    r = runner.run("python", code)
    assert out(r).strip() == "-1 1", (name, r)


def test_trap_x32_and_clone_namespace_flags_denied(runner):
    code = textwrap.dedent("""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print("x32", libc.syscall(0x40000000 | 39), ctypes.get_errno())     # x32 getpid
        print("clone", libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0), ctypes.get_errno())  # CLONE_NEWUSER
        print("personality", libc.personality(0x0040000), ctypes.get_errno())  # ADDR_NO_RANDOMIZE
    """)
    r = runner.run("python", code)
    assert out(r).splitlines() == ["x32 -1 1", "clone -1 1", "personality -1 1"], r


def test_trap_zombie_flood_counts_and_is_reaped(runner):
    """Zombies count against RLIMIT_NPROC; a uid is free only when none is left."""
    code = textwrap.dedent("""
        import os, time
        made = 0
        try:
            for _ in range(500):
                if os.fork() == 0:
                    os._exit(0)
                made += 1
        except OSError as e:
            print("fork refused after", made, "errno", e.errno)
        time.sleep(0.2)
    """)
    r = runner.run("python", code)
    assert "fork refused after" in out(r), r
    assert int(out(r).split()[3]) < 64
    assert run_uid_processes(runner) == []


def test_trap_deeply_nested_work_dir_is_still_cleaned_up(runner):
    """A run that nests directories deeper than any recursion (or descriptor
    budget) of the clean-up cannot make it fail, and so cannot leave its
    files, its uid dirty or its slot broken for the next job."""
    code = textwrap.dedent("""
        import os
        depth = 0
        for i in range(1500):   # beyond Python's recursion limit (1000)
            os.mkdir("d")
            os.chdir("d")
            depth += 1
            if i % 300 == 0:
                os.symlink("/etc", "link")
                open("f", "w").write("x")
        os.mkdir("locked")
        os.chmod("locked", 0)
        print("depth", depth)
    """)
    r = runner.run("python", code)
    assert out(r).strip() == "depth 1500", r
    # Every slot serves a few more jobs, the deep one's slot among them.
    for _ in range(runner.settings.workers + 1):
        r2 = runner.run("python", "import os; print(sorted(os.listdir('.')))")
        assert out(r2).strip() == "['main.py']", r2
    assert leftover_workdirs(runner) == []
    assert run_uid_processes(runner) == []


def test_runs_are_niced_below_the_service_and_cannot_raise_themselves(runner):
    """A CPU-bound run must not delay the server and the supervisors (their
    clocks, the next job's start): programs run at nice 10 and cannot undo it."""
    code = textwrap.dedent("""
        import os
        print("nice", os.nice(0))
        try:
            os.nice(-1); print("raised")
        except PermissionError:
            print("refused")
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 0); print("reset")
        except PermissionError:
            print("refused")
    """)
    r = runner.run("python", code)
    assert out(r).split() == ["nice", "10", "refused", "refused"], r
    # The spawner and its slot supervisors keep the server's priority.
    spawner = runner.engine.sandbox._proc.pid
    with open(f"/proc/{spawner}/task/{spawner}/children") as f:
        service = [spawner, *map(int, f.read().split())]
    assert len(service) > 1, service
    for pid in service:
        with open(f"/proc/{pid}/stat") as f:
            nice = int(f.read().rsplit(")", 1)[1].split()[16])
        assert nice == os.nice(0), (pid, nice)


def test_trap_memory_spread_over_many_processes(runner):
    if not runner.engine.layers["cgroups"]["enabled"]:
        pytest.skip("no memory cgroup here: per-process rlimits cannot cap the total")
    code = textwrap.dedent("""
        import os, time
        for _ in range(8):
            if os.fork() == 0:
                b = bytearray(24 << 20)
                for i in range(0, len(b), 4096): b[i] = 1
                time.sleep(5); os._exit(0)
        time.sleep(3)
        print("survived")
    """)
    r = runner.run("python", code, memory_limit=64 << 20, run_timeout=4000)
    assert r.runtime.memory <= (64 << 20) + (1 << 20), r.runtime
    # the children were OOM-killed one by one; the main process survives or dies
    assert r.runtime.status in ("ok", "memory"), r


def test_trap_secrets_never_on_command_lines(runner):
    """Any uid can read /proc/<pid>/cmdline: the spawner's must hold no secret."""
    pid = runner.engine.sandbox.spawner_pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().decode()
    assert "token" not in cmdline.lower() and "data_dir" not in cmdline
    r = runner.run("python", f"print(open('/proc/{pid}/environ').read())")
    # Permission denied, or no such process where a PID namespace hides it
    assert r.runtime.status == "error", r
    assert "PermissionError" in r.runtime.stderr or "FileNotFoundError" in r.runtime.stderr


def test_trap_run_environment_is_allowlisted(runner, monkeypatch):
    r = runner.run("python", "import os; print(sorted(os.environ))")
    names = eval(out(r))
    assert set(names) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR",
                          "PYTHONDONTWRITEBYTECODE", "LC_CTYPE"}, names


def test_trap_supervisor_death_does_not_leak_the_run(runner):
    """If a job's supervisor dies, its run is swept at once, not left alive."""
    import asyncio

    async def scenario():
        req = ExecuteRequest(language="python",
                             code="import time, os\nprint(os.getuid(), flush=True)\ntime.sleep(30)",
                             run_timeout=20000)
        task = asyncio.ensure_future(runner.engine.execute(req, "doomed"))
        for _ in range(100):
            await asyncio.sleep(0.05)
            program = find_run_process(runner.settings, "main.py")
            if program:
                break
        assert program, "the run never started"
        # Walk up from the run (through a PID namespace's init, if any) to
        # the slot supervisor, the spawner's child.
        spawner = runner.engine.sandbox.spawner_pid
        supervisor = program
        while _ppid(supervisor) != spawner:
            supervisor = _ppid(supervisor)
            assert supervisor > 1, "the run is not below the spawner"
        os.kill(supervisor, signal.SIGKILL)
        try:
            await task
        except Exception as exc:
            return exc
    exc = runner.loop.run_until_complete(scenario())
    assert exc is not None and "slot died" in str(exc)
    runner.settle()
    deadline = time.monotonic() + 3
    while run_uid_processes(runner) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run_uid_processes(runner) == []
    assert leftover_workdirs(runner) == []
    assert out(runner.run("python", "print('next')")) == "next\n"


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def test_cancelling_a_job_kills_its_run(runner):
    import asyncio

    async def scenario():
        req = ExecuteRequest(language="python", code="import time; time.sleep(30)",
                             run_timeout=20000)
        task = asyncio.ensure_future(runner.engine.execute(req, "cancel-me"))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if find_run_process(runner.settings, "main.py"):
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    runner.loop.run_until_complete(scenario())
    # The run dies on the abort, not when its slot gets round to cleaning up
    # (the slot's standby for its next job is the only process of the range
    # that may appear meanwhile).
    deadline = time.monotonic() + 3
    while find_run_process(runner.settings, "main.py") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert find_run_process(runner.settings, "main.py") is None
    runner.settle()
    assert run_uid_processes(runner) == []
    assert leftover_workdirs(runner) == []


def test_trap_a_dirty_uid_left_by_a_crash_is_swept_at_start(tmp_path):
    """A supervisor killed with its run alive leaves the uid's lock file
    "dirty": the next spawner sweeps it (process and work dir) before any job."""
    import subprocess
    from pesto.config import load_settings
    from tests.conftest import UID_BASE, Runner
    uid = UID_BASE + 495   # +470..+489 is the no-cgroup runner's (test_languages)
    settings = load_settings(env={}, data_dir=str(tmp_path), uid_base=uid, uid_count=5)
    locks, work = settings.sandbox_dir / "locks", settings.sandbox_dir / "work"
    os.makedirs(locks, exist_ok=True)
    (locks / str(uid)).write_bytes(b"dirty")
    (work / str(uid)).mkdir(parents=True, exist_ok=True)
    (work / str(uid) / "left-over").write_text("x")
    survivor = subprocess.Popen(["sleep", "60"], user=uid, group=uid, start_new_session=True)
    try:
        r = Runner(settings)
        r.close()
        assert survivor.wait(timeout=5) == -9
        assert not (work / str(uid)).exists()
        assert (locks / str(uid)).read_bytes() == b""
    finally:
        survivor.kill()
        survivor.wait()


def test_work_dir_announced_ahead_is_checked_and_prepare_still_works(runner):
    """A slot announces the uid it readied so a job skips the `prepare` round
    trip. A job that expects a uid the slot does not hold fails as a sandbox
    error (it never runs with another job's paths); without an announcement
    the explicit `prepare` is used; both leave the slot usable."""
    from pesto.errors import SandboxError
    sb = runner.engine.sandbox
    slots = [sb._idle.get_nowait() for _ in range(sb._idle.qsize())]
    try:
        assert all(s.next_uid >= 0 for s in slots), [s.next_uid for s in slots]
        for s in slots:
            s.next_uid = s.next_uid + 1 if s.next_uid + 1 < runner.settings.uid_base \
                + runner.settings.uid_count else s.next_uid - 1   # a uid it does not hold
    finally:
        for s in slots:
            sb._idle.put_nowait(s)
    with pytest.raises(SandboxError, match="expected"):
        runner.run("python", "print('never')")
    for s in [sb._idle.get_nowait() for _ in range(sb._idle.qsize())]:
        s.next_uid = -1   # unknown: the job must prepare explicitly
        sb._idle.put_nowait(s)
    assert out(runner.run("python", "import os; print(os.listdir('.'))")) == "['main.py']\n"
    assert out(runner.run("python", "print('again')")) == "again\n"
    assert run_uid_processes(runner) == []
    assert leftover_workdirs(runner) == []


FILL_TMPFS_C = r"""
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
static char buf[1 << 16];
int main(void) {
    memset(buf, 'x', sizeof buf);
    int fd = open("fill", O_CREAT | O_WRONLY, 0600);
    for (int i = 0; i < 1024; i++)          /* 64 MiB, in the work dir's tmpfs */
        if (write(fd, buf, sizeof buf) < 0) { perror("write"); return 1; }
    puts("WROTE");
    return 0;
}
"""


def test_trap_small_limit_oom_never_picks_the_supervisor(runner, tmp_path):
    """A run with a tiny RSS that fills its tmpfs (charged to the slot's memory
    cgroup) under the smallest allowed limit: the OOM killer must pick the run.

    With a 1-16 MiB minimum and no CAP_SYS_RESOURCE (so the supervisor keeps
    oom_score_adj 0), the kernel weighed the supervisor's ~17 MiB RSS above the
    run's +1000 (scaled to the cgroup's limit) and killed the supervisor: the
    job failed with "the sandbox slot died".
    """
    if not runner.engine.layers["cgroups"]["enabled"]:
        pytest.skip("no memory cgroup here: tmpfs pages are capped by the disk limit instead")
    # Fresh slots, and the compiler's files read into the page cache here first: file
    # pages a slot's earlier stages read cold stay charged to its cgroup, and the
    # kernel reclaims them to make room for the run's tmpfs pages, lending the run up
    # to their size beyond its limit (docs/memory.md, "A cold page cache"). It then
    # fills the 64 MiB tmpfs and ends ok, and this trap is not met.
    compiler = shutil.which("gcc")
    if compiler is not None:
        (tmp_path / "fill.c").write_text(FILL_TMPFS_C)
        subprocess.run([compiler, "-std=gnu17", "-O2", "-pipe", "-o", str(tmp_path / "fill"),
                        str(tmp_path / "fill.c"), "-lm"], check=True, capture_output=True)
    fresh = Runner(load_settings(env={}, data_dir=str(tmp_path / "data"),
                                 uid_base=UID_BASE + 400, uid_count=40))
    try:
        smallest = fresh.settings.memory_min
        for _ in range(3):
            r = fresh.run("c", FILL_TMPFS_C, memory_limit=smallest)
            assert r.runtime.status == "memory", r.runtime
            hog = fresh.run("python", "x = bytearray(200 << 20)", memory_limit=smallest)
            assert hog.runtime.status == "memory", hog.runtime
        assert fresh.run("python", "print('alive')").runtime.stdout == "alive\n"
    finally:
        fresh.close()
