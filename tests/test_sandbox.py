"""SANDBOX.md properties S1-S10, each proven by real programs under real uids.

Every hostile program here runs only through the sandbox under test, with
short limits; .ci/run additionally puts the whole test process in a pids
cgroup and under `timeout` in case the sandbox were broken.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time

import pytest

from pesto.models import ExecuteRequest
from tests.conftest import leftover_workdirs, run_uid_processes

C = "c"


def out(result):
    return result.runtime.stdout


def need(runner, lang):
    if not runner.has(lang):
        pytest.skip(f"language {lang!r} is not installed on this machine")


# --- S1 network ------------------------------------------------------------

@pytest.fixture
def tcp_listener():
    """A real TCP service on loopback, reachable from the test process itself."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    probe = socket.create_connection(("127.0.0.1", port), timeout=2)  # it is reachable
    probe.close()
    yield port
    srv.close()


def test_s1_python_tcp_udp_raw_dns_denied(runner, tcp_listener):
    code = textwrap.dedent(f"""
        import socket
        def attempt(name, fn):
            try:
                fn(); print(name, "ALLOWED")
            except OSError as e:
                print(name, "denied", e.errno)
        attempt("tcp4", lambda: socket.create_connection(("127.0.0.1", {tcp_listener}), timeout=1))
        attempt("tcp6", lambda: socket.create_connection(("::1", {tcp_listener}), timeout=1))
        attempt("udp4", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 53)))
        attempt("listen", lambda: socket.socket(socket.AF_INET).bind(("0.0.0.0", 8000)))
        attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, 1))
        attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
        attempt("netlink", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
        attempt("dns", lambda: socket.getaddrinfo("example.com", 80))
    """)
    r = runner.run("python", code)
    lines = out(r).splitlines()
    assert len(lines) == 8, r
    assert all("denied" in line for line in lines), lines


def test_s1_c_socket_denied(runner, tcp_listener):
    code = textwrap.dedent(f"""
        #include <stdio.h>
        #include <errno.h>
        #include <string.h>
        #include <sys/socket.h>
        #include <netinet/in.h>
        #include <arpa/inet.h>
        int main(void) {{
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0) {{ printf("socket denied %d\\n", errno); return 0; }}
            struct sockaddr_in a = {{0}};
            a.sin_family = AF_INET; a.sin_port = htons({tcp_listener});
            inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
            if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {{ puts("CONNECTED"); return 1; }}
            printf("connect denied %d\\n", errno);
            return 0;
        }}
    """)
    r = runner.run(C, code)
    assert r.compile.status == "ok", r.compile
    assert "denied" in out(r) and "CONNECTED" not in out(r), r


def test_s1_node_network_denied(runner, tcp_listener):
    need(runner, "javascript")
    code = textwrap.dedent(f"""
        const net = require('net');
        const s = net.connect({tcp_listener}, '127.0.0.1');
        s.on('connect', () => {{ console.log('CONNECTED'); process.exit(1); }});
        s.on('error', (e) => {{ console.log('denied ' + e.code); process.exit(0); }});
    """)
    r = runner.run("javascript", code)
    assert out(r).startswith("denied"), r


def test_s1_abstract_unix_socket_outside_run_unreachable(runner):
    name = f"pesto-test-{os.getpid()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind("\0" + name)
    srv.listen(1)
    try:
        code = textwrap.dedent(f"""
            import socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect("\\0{name}"); print("CONNECTED")
            except OSError as e:
                print("denied", e.errno)
        """)
        r = runner.run("python", code)
        assert out(r).startswith("denied"), r
    finally:
        srv.close()


# --- S2 identity -------------------------------------------------------------

def test_s2_unique_uid_no_groups_no_caps_in_parallel(runner):
    code = textwrap.dedent("""
        import os, time
        caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff", "CapPrm", "CapBnd"))]
        print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), caps[:2])
        time.sleep(0.3)
    """)
    results = runner.gather(*[ExecuteRequest(language="python", code=code) for _ in range(4)])
    uids = set()
    for r in results:
        uid, euid, gid, groups, caps = out(r).split(" ", 4)
        assert uid == euid == gid and int(uid) >= runner.settings.uid_base
        assert groups == "[]"
        assert caps.strip() == "['0000000000000000', '0000000000000000']"
        uids.add(uid)
    assert len(uids) == 4, "concurrent runs shared a uid"


def test_s2_c_setuid_root_fails(runner):
    code = textwrap.dedent("""
        #include <stdio.h>
        #include <unistd.h>
        #include <errno.h>
        int main(void) {
            if (setuid(0) == 0 || geteuid() == 0) { puts("ROOT"); return 1; }
            printf("setuid denied %d uid %d\\n", errno, getuid());
            return 0;
        }
    """)
    r = runner.run(C, code)
    assert out(r).startswith("setuid denied"), r


@pytest.fixture
def setuid_root_binary():
    """A setuid-root program printing its euid, in a root-owned dir runs may read."""
    d = "/usr/local/lib/pesto-test-suid"
    os.makedirs(d, exist_ok=True)
    src = os.path.join(d, "euid.c")
    with open(src, "w") as f:
        f.write('#include <stdio.h>\n#include <unistd.h>\n'
                'int main(void){printf("euid=%d\\n", geteuid()); return 0;}\n')
    exe = os.path.join(d, "euid")
    subprocess.run(["gcc", "-o", exe, src], check=True)
    os.chown(exe, 0, 0)
    os.chmod(exe, 0o4755)
    assert subprocess.run([exe], capture_output=True, text=True,
                          user=65534).stdout.strip() == "euid=0"  # it does elevate outside
    yield exe
    shutil.rmtree(d)


def test_s2_trap_setuid_binaries_do_not_elevate(runner, setuid_root_binary):
    code = f"import subprocess; print(subprocess.run([{setuid_root_binary!r}], capture_output=True, text=True).stdout)"
    r = runner.run("python", code)
    assert out(r).startswith("euid=") and "euid=0" not in out(r), r


# --- S3 confidentiality ------------------------------------------------------

def test_s3_cannot_read_data_dir_config_or_server_environ(runner, tmp_path):
    secret_dir = runner.settings.data_dir
    os.makedirs(secret_dir, exist_ok=True)
    os.chmod(secret_dir, 0o700)
    secret = os.path.join(secret_dir, "pesto.sqlite3")
    with open(secret, "w") as f:
        f.write("TOKENHASH")
    cfg = tmp_path / "pesto.toml"
    cfg.write_text("admin_token = 'SECRET'\n")
    cfg.chmod(0o644)   # even a world-readable config file outside the allowed paths
    code = textwrap.dedent(f"""
        import os
        for p in [{secret!r}, {str(cfg)!r}, "/proc/{os.getpid()}/environ", "/proc/1/environ",
                  "/etc/shadow", "/root/.bash_history"]:
            try:
                open(p, "rb").read(); print("READ", p)
            except OSError as e:
                print("denied", e.errno)
        try:
            os.listdir({runner.settings.sandbox_dir.as_posix() + "/work"!r}); print("LISTED work root")
        except OSError as e:
            print("denied", e.errno)
    """)
    r = runner.run("python", code)
    assert "READ" not in out(r) and "LISTED" not in out(r), r
    assert out(r).count("denied") == 7, r


def test_s3_cannot_read_another_concurrent_runs_files(runner):
    writer = textwrap.dedent("""
        import os, time
        open("secret.txt", "w").write("S3CRET")
        print(os.getcwd(), flush=True)
        time.sleep(1.5)
    """)
    reader = textwrap.dedent(f"""
        import os, time, glob
        time.sleep(0.5)
        root = {runner.settings.sandbox_dir.as_posix() + "/work"!r}
        mine = os.getcwd()
        found = 0
        for uid in range({runner.settings.uid_base}, {runner.settings.uid_base + 40}):
            p = f"{{root}}/{{uid}}/secret.txt"
            if p.startswith(mine):
                continue
            try:
                print("READ", open(p).read()); found += 1
            except OSError:
                pass
        print("done", found)
    """)
    w, rd = runner.gather(ExecuteRequest(language="python", code=writer),
                          ExecuteRequest(language="python", code=reader))
    assert w.runtime.status == "ok", w
    assert out(rd).strip() == "done 0", rd


# --- S4 integrity ---------------------------------------------------------------

def test_s4_writes_outside_workdir_fail_and_nothing_survives(runner):
    marker = f"pesto-marker-{os.getpid()}"
    code = textwrap.dedent(f"""
        import os, subprocess
        for d in ["/tmp", "/var/tmp", "/dev/shm", "/etc", "/usr/local", "/"]:
            try:
                open(os.path.join(d, "{marker}"), "w").write("x"); print("WROTE", d)
            except OSError as e:
                print("denied", d)
        rc = subprocess.run(["/bin/sh", "-c", "echo x > /tmp/{marker}-sh"]).returncode
        print("shell", rc)
        open("{marker}", "w").write("in workdir")
        os.mkdir("sub"); open("sub/f", "w").write("y")
        print("cwd ok")
    """)
    r = runner.run("python", code)
    assert "WROTE" not in out(r), r
    assert "shell 0" not in out(r) and "cwd ok" in out(r), r
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        assert not any(n.startswith(marker) for n in os.listdir(d))
    # A later run (any uid) sees none of it in its own work dir.
    r2 = runner.run("python", "import os; print(sorted(os.listdir('.')))")
    assert out(r2).strip() == "['main.py']", r2
    assert leftover_workdirs(runner) == []


# --- S5 processes -----------------------------------------------------------------

def test_s5_trap_orphans_setsid_double_fork_nohup_daemon_all_killed(runner):
    code = textwrap.dedent("""
        import os, subprocess, time
        # double fork + setsid (a classic daemon)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60); os._exit(0)
            os._exit(0)
        # nohup in the background via the shell
        subprocess.Popen(["/bin/sh", "-c", "nohup sleep 60 >/dev/null 2>&1 &"])
        # a plain orphan in its own process group
        subprocess.Popen(["sleep", "60"], start_new_session=True)
        time.sleep(0.3)
        print("parent exits")
    """)
    r = runner.run("python", code)
    assert out(r) == "parent exits\n", r
    assert run_uid_processes(runner) == []


def test_s5_cannot_signal_or_ptrace_server_or_others(runner):
    code = textwrap.dedent(f"""
        import os, signal, ctypes
        for pid in ({os.getpid()}, 1):
            try:
                os.kill(pid, signal.SIGTERM); print("SIGNALLED", pid)
            except OSError as e:
                print("kill denied", e.errno)
        libc = ctypes.CDLL(None, use_errno=True)
        r = libc.ptrace(16, {os.getpid()}, 0, 0)   # PTRACE_ATTACH
        print("ptrace", r, ctypes.get_errno())
    """)
    r = runner.run("python", code)
    assert "SIGNALLED" not in out(r), r
    assert out(r).count("kill denied") == 2
    assert "ptrace -1 1" in out(r), r   # EPERM from seccomp


def test_s5_c_cannot_kill_other_processes(runner):
    code = textwrap.dedent(f"""
        #include <stdio.h>
        #include <signal.h>
        #include <errno.h>
        int main(void) {{
            int r = kill({os.getpid()}, SIGKILL);
            printf("kill %d %d\\n", r, errno);
            return 0;
        }}
    """)
    r = runner.run(C, code)
    # EPERM (another uid), or ESRCH where a PID namespace hides the server entirely
    assert out(r).strip() in ("kill -1 1", "kill -1 3"), r


# --- S6 time ------------------------------------------------------------------------

@pytest.mark.parametrize("lang,code", [
    ("python", "while True: pass"),
    ("python", "import time; time.sleep(30)"),
    (C, "int main(void){ volatile unsigned long i = 0; for(;;) i++; }"),
    (C, "#include <unistd.h>\nint main(void){ sleep(30); return 0; }"),
], ids=["py-busy", "py-sleep", "c-busy", "c-sleep"])
def test_s6_trap_wall_clock_stops_busy_loops_and_sleepers(runner, lang, code):
    limit = 500
    t = time.monotonic()
    r = runner.run(lang, code, run_timeout=limit)
    elapsed = (time.monotonic() - t) * 1000
    assert r.runtime.status == "timeout", r
    assert limit <= r.runtime.wall_time <= limit + 200, r.runtime
    assert r.runtime.exit_code != 0
    assert elapsed < limit + 2000 + (5000 if lang == C else 0)   # compile stage for C


# --- S7 memory ------------------------------------------------------------------------

def test_s7_python_memory_bomb_stopped(runner):
    r = runner.run("python", "a = []\nwhile True: a.append(bytearray(8 << 20))",
                   memory_limit=64 << 20)
    assert r.runtime.status in ("memory", "error"), r
    assert r.runtime.exit_code != 0
    if runner.engine.layers["cgroups"]["enabled"]:
        assert r.runtime.status == "memory", r.runtime
    assert runner.run("python", "print('alive')").runtime.stdout == "alive\n"


def test_s7_c_memory_bomb_stopped(runner):
    code = textwrap.dedent("""
        #include <stdlib.h>
        #include <string.h>
        #include <stdio.h>
        int main(void) {
            for (;;) { char *p = malloc(16 << 20); if (!p) { puts("malloc failed"); return 3; } memset(p, 1, 16 << 20); }
        }
    """)
    r = runner.run(C, code, memory_limit=64 << 20)
    assert r.runtime.status in ("memory", "error"), r
    if runner.engine.layers["cgroups"]["enabled"]:
        assert r.runtime.status == "memory", r.runtime
        assert r.runtime.memory <= (64 << 20) + (1 << 20)


def test_s7_java_hello_under_default_limit(runner):
    need(runner, "java")
    code = 'public class Main { public static void main(String[] a) { System.out.println("Hello world!"); } }'
    r = runner.run("java", code)
    assert out(r) == "Hello world!\n", r


# --- S8 process count -------------------------------------------------------------------

FORK_BOMBS = {
    "py-fork": ("python", "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"),
    "py-threads": ("python", "import threading, time\nwhile True:\n    try: threading.Thread(target=time.sleep, args=(60,)).start()\n    except RuntimeError: pass"),
    "c-fork": (C, "#include <unistd.h>\nint main(void){ for(;;) fork(); }"),
    "shell": ("python", "import subprocess, sys; sys.exit(subprocess.run(['/bin/sh', '-c', 'b(){ b|b& }; b; wait']).returncode or 9)"),
}


@pytest.mark.parametrize("name", FORK_BOMBS)
def test_s8_fork_and_thread_bombs_contained(runner, name):
    lang, code = FORK_BOMBS[name]
    r = runner.run(lang, code, run_timeout=1000)
    assert r.runtime.status in ("timeout", "error", "signal"), r
    assert run_uid_processes(runner) == []
    # The server and other runs keep working.
    assert out(runner.run("python", "print('ok')")) == "ok\n"


def test_s8_stage_runs_under_a_pids_cgroup_limit(runner):
    """Where the pids controller is writable, the stage's tasks (threads
    included, whatever their uid) are capped by the slot's cgroup as well as
    by RLIMIT_NPROC: seen from inside the run, its cgroup has a finite
    pids.max a little above what the run may still start."""
    if "pids controller at" not in runner.engine.layers["cgroups"]["reason"]:
        pytest.skip(f"no writable pids cgroup here: {runner.engine.layers['cgroups']['reason']}")
    code = textwrap.dedent("""
        import resource
        path = [l.split(":", 2)[2].strip() for l in open("/proc/self/cgroup") if ":pids:" in l][0]
        base = "/sys/fs/cgroup/pids" + path
        print(open(base + "/pids.max").read().strip(), open(base + "/pids.current").read().strip(),
              resource.getrlimit(resource.RLIMIT_NPROC)[0])
    """)
    r = runner.run("python", code)
    assert r.runtime.status == "ok", r
    limit, current, nproc = r.runtime.stdout.split()
    assert limit != "max", r.runtime.stdout
    # The slot's supervisor and this stage's processes, plus the stage's
    # budget and the supervisor's few forks of headroom: no more.
    assert int(current) < int(limit) <= int(current) + int(nproc) + 8, r.runtime.stdout


# --- S9 output ------------------------------------------------------------------------------

def test_s9_trap_output_flood_is_cut_while_reading(runner):
    cap = runner.settings.output_limit
    t = time.monotonic()
    r = runner.run("python", "import sys\nwhile True: sys.stdout.write('x' * 65536)")
    assert time.monotonic() - t < 4, "the flood was not stopped early"
    assert r.runtime.status == "output" and r.runtime.truncated, r.runtime
    assert len(r.runtime.stdout) == cap


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def test_s9_flood_without_newline_does_not_grow_server_memory(runner):
    # The server's processes: the engine (this one), the spawner and the slot
    # supervisors it forked (they read the runs' pipes). Their peak RSS is
    # reset here (clear_refs 5), so the peak read after is this test's alone,
    # not a high-water mark some earlier test left higher.
    spawner = runner.engine.sandbox.spawner_pid
    server = [os.getpid(), spawner]
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and _status_kib(int(p), "PPid") == spawner:
                server.append(int(p))
        except OSError:
            continue   # gone meanwhile
    assert len(server) > 2, "no slot supervisor found"
    before = {}
    for pid in server:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        before[pid] = _status_kib(pid, "VmHWM")
    for _ in range(3):
        r = runner.run("python", "import os\nbuf = b'y' * (1 << 20)\nfor _ in range(100): os.write(1, buf)")
        assert r.runtime.truncated
    grew = {pid: _status_kib(pid, "VmHWM") - before[pid] for pid in server}
    assert max(grew.values()) < 20 * 1024, f"peak RSS grew (KiB by pid): {grew}"


def test_s9_nul_and_invalid_utf8_come_back_safely(runner):
    r = runner.run("python", "import sys; sys.stdout.buffer.write(b'a\\x00b\\xff\\xfec\\n'); sys.stderr.buffer.write(b'\\xc3')")
    assert r.runtime.stdout == "a\x00b\ufffd\ufffdc\n"
    assert r.runtime.stderr == "\ufffd"
    assert r.runtime.status == "ok"


def test_s9_interleaved_output_keeps_order(runner):
    # Order is the order the bytes reach the engine: writes that are apart in
    # time keep their order (two pipes cannot order simultaneous writes).
    r = runner.run("python", "import sys, time\nfor i in range(3):\n    print(i, flush=True); time.sleep(0.02); print('e', i, file=sys.stderr, flush=True); time.sleep(0.02)")
    assert r.runtime.output == "0\ne 0\n1\ne 1\n2\ne 2\n"


# --- S10 disk ------------------------------------------------------------------------------

def test_s10_one_file_over_file_size_limit_fails(runner):
    r = runner.run("python", "f = open('big', 'wb')\nfor _ in range(80): f.write(b'z' * (1 << 20))\nf.close()\nprint('WROTE')")
    assert "WROTE" not in out(r) and r.runtime.status in ("signal", "error"), r
    # Stopped by a limit, not by any failure: EFBIG (RLIMIT_FSIZE; Python
    # ignores SIGXFSZ), ENOSPC (the run's own tmpfs) or killed by SIGXFSZ.
    assert (r.runtime.signal == "SIGXFSZ" or "[Errno 27] File too large" in r.runtime.stderr
            or "[Errno 28] No space left on device" in r.runtime.stderr), r


def test_s10_total_disk_bounded_many_files_and_fallocate(runner):
    code = textwrap.dedent("""
        import os
        total = 0
        try:
            for i in range(1000):
                with open(f"f{i}", "wb") as f:
                    f.write(b"q" * (4 << 20))
                total += 4
        except OSError as e:
            print("stopped at", total, "MiB", e.errno)
        try:
            fd = os.open("alloc", os.O_CREAT | os.O_WRONLY)
            os.posix_fallocate(fd, 0, 200 << 20); print("FALLOCATED")
        except OSError as e:
            print("fallocate denied", e.errno)
    """)
    r = runner.run("python", code, memory_limit=256 << 20)
    if not runner.engine.layers["disk"]["enabled"]:
        pytest.skip("no per-run tmpfs on this host: the total disk cap is not kernel-enforced")
    assert "stopped at" in out(r) and "FALLOCATED" not in out(r), r
    stopped = int(out(r).split()[2])
    assert stopped <= runner.settings.disk_limit >> 20


# --- results ------------------------------------------------------------------------------

def test_killed_by_signal_never_reports_exit_zero(runner):
    r = runner.run("python", "import os, signal; print('x', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    assert r.runtime.status == "signal" and r.runtime.signal == "SIGKILL"
    assert r.runtime.exit_code == 128 + 9
    r = runner.run(C, "int main(void){ volatile int *p = 0; return *p; }")
    assert r.runtime.status == "signal" and r.runtime.signal == "SIGSEGV"
    assert r.runtime.exit_code == 139


def test_stdin_args_and_exit_code(runner):
    r = runner.run("python", "import sys; print(sys.stdin.read().upper(), sys.argv[1:]); sys.exit(3)",
                   stdin="hello", args=["a b", "--c"])
    assert out(r) == "HELLO ['a b', '--c']\n"
    assert r.runtime.status == "error" and r.runtime.exit_code == 3


def test_large_stdin_not_read_by_program(runner):
    r = runner.run("python", "print('ignored stdin')", stdin="z" * (900 * 1024))
    assert out(r) == "ignored stdin\n" and r.runtime.status == "ok"


def test_compile_error_skips_run(runner):
    r = runner.run(C, "int main(void) { return x; }")
    assert r.compile.status == "error" and "x" in r.compile.stderr
    assert r.runtime.status == "skipped" and r.runtime.exit_code == -1


def test_concurrent_runs_do_not_interfere(runner):
    reqs = [ExecuteRequest(language="python", code=f"import time; time.sleep(0.1); print({i})")
            for i in range(12)]
    results = runner.gather(*reqs)
    assert [out(r) for r in results] == [f"{i}\n" for i in range(12)]


AFFINITY = "import os, time; time.sleep(0.3); print(sorted(os.sched_getaffinity(0)))"


def test_each_slot_runs_on_its_own_cpus(runner):
    """pesto/sandbox/cpus.py: with no more slots than CPUs, runs held at once
    (one per slot) each see only their slot's share of the CPUs."""
    from pesto.sandbox.cpus import slot_cpus
    allowed = os.sched_getaffinity(0)
    slots = runner.settings.workers
    shares = [slot_cpus(allowed, slots, i) for i in range(slots)]
    if shares[0] is None:
        pytest.skip(f"{slots} slots for {len(allowed)} CPUs: slots are not pinned")
    results = runner.gather(*(ExecuteRequest(language="python", code=AFFINITY)
                              for _ in range(slots)))
    seen = sorted(out(r).strip() for r in results)
    assert seen == sorted(str(sorted(share)) for share in shares), seen
