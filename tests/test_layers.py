"""Each optional layer proven on its own: the other layers that would also
stop the attempt are turned off, so a pass means *this* layer held."""

from __future__ import annotations

import os
import socket
import textwrap

import pytest

from pesto.config import load_settings
from pesto.errors import ConfigError
from tests.conftest import UID_BASE, Runner


def _runner_without(tmp_path_factory, disable: tuple[str, ...], uid_offset: int,
                    uid_count: int, unusable) -> Runner:
    """A Runner with the `disable` layers off, in its own uid range; skipped
    (and closed) where `unusable(layers)` names a reason."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    settings = load_settings(env={}, data_dir=str(tmp_path_factory.mktemp("layers")),
                             uid_base=UID_BASE + uid_offset, uid_count=uid_count,
                             disable=disable)
    r = Runner(settings)
    reason = unusable(r.engine.layers)
    if reason:
        r.close()
        pytest.skip(reason)
    return r


@pytest.fixture(scope="module")
def bare_ns(tmp_path_factory):
    """An engine with namespaces on but seccomp and Landlock off."""
    r = _runner_without(tmp_path_factory, ("seccomp", "landlock"), 400, 50, lambda layers: (
        None if layers["namespaces"]["enabled"]
        else f"namespaces unavailable here: {layers['namespaces']['reason']}"))
    yield r
    r.close()


def test_netns_alone_makes_loopback_services_unreachable(bare_ns):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    try:
        code = textwrap.dedent(f"""
            import socket, os
            s = socket.socket()          # allowed: seccomp is off in this engine
            try:
                s.connect(("127.0.0.1", {port})); print("CONNECTED")
            except OSError as e:
                print("unreachable", e.errno)
            print(sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else "-")
        """)
        r = bare_ns.run("python", code)
        assert r.runtime.stdout.startswith("unreachable 101"), r   # ENETUNREACH: no route, no lo
    finally:
        srv.close()


def test_mountns_alone_gives_private_tmp_and_a_readonly_tree(bare_ns):
    ww = "/var/lib/pesto-test-world-writable"
    os.makedirs(ww, exist_ok=True)
    os.chmod(ww, 0o1777)   # writable by anyone on the host: only the read-only view stops a run
    try:
        code = textwrap.dedent(f"""
            import os
            open("/tmp/private-marker", "w").write("x")
            print("tmp", sorted(os.listdir("/tmp")))
            try:
                open("{ww}/f", "w").write("x"); print("WROTE")
            except OSError as e:
                print("readonly", e.errno)
            open("in-workdir", "w").write("ok"); print("workdir ok")
        """)
        r = bare_ns.run("python", code)
        lines = r.runtime.stdout.splitlines()
        assert lines[0] == "tmp ['private-marker']", r     # a fresh, empty /tmp of its own
        assert lines[1] == "readonly 30", r                  # EROFS
        assert lines[2] == "workdir ok"
        assert not os.path.exists("/tmp/private-marker")
        assert os.listdir(ww) == []
    finally:
        os.rmdir(ww)


@pytest.fixture
def host_shm_segment():
    """A System V shared memory segment in the host's IPC namespace."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    shmid = libc.shmget(0, 4096, 0o1000 | 0o600)   # IPC_PRIVATE, IPC_CREAT
    assert shmid >= 0, ctypes.get_errno()
    with open("/proc/sysvipc/shm") as f:
        assert any(line.split()[1] == str(shmid) for line in f.readlines()[1:])
    yield shmid
    libc.shmctl(shmid, 0, None)   # IPC_RMID


NAMESPACES = ("uts", "ipc", "mnt", "pid", "user", "net")


def test_run_has_its_own_namespaces_and_sees_nothing_of_the_host(bare_ns, host_shm_segment):
    code = textwrap.dedent(f"""
        import os
        print(" ".join(os.readlink(f"/proc/self/ns/{{n}}") for n in {NAMESPACES!r}))
        print(sum(1 for line in open("/proc/sysvipc/shm")) - 1)
        print(os.getpid(), os.readlink("/proc/self"))
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
    """)
    r = bare_ns.run("python", code)
    ns_line, shm_line, pid_line, proc_line = r.runtime.stdout.splitlines()
    for name, theirs in zip(NAMESPACES, ns_line.split(), strict=True):
        assert theirs != os.readlink(f"/proc/self/ns/{name}"), (name, theirs)
    assert shm_line == "0", r                   # the host's segment is invisible (IPC)
    pid, proc_self = pid_line.split()
    assert pid == "2", r                        # PID 2 under its init
    if proc_self == "2":
        # Its own /proc (mountable on a host; podman masks the container's
        # /proc, and then the kernel refuses a new one): it sees only itself.
        assert proc_line == "[1, 2]", r


def test_require_refuses_to_start_without_a_layer(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    settings = load_settings(env={}, data_dir=str(tmp_path), uid_base=UID_BASE + 450, uid_count=10,
                             disable=("landlock",), require=("landlock",))
    with pytest.raises(ConfigError, match="landlock"):
        Runner(settings)


def test_doctor_json_reports_every_layer():
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "pesto.cli", "doctor", "--json"],
                         capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    for layer in ("users", "rlimits", "seccomp", "landlock", "namespaces", "cgroups"):
        assert set(report[layer]) == {"available", "enabled", "reason"}, report[layer]


@pytest.fixture(scope="module")
def landlock_only(tmp_path_factory):
    """An engine with namespaces and seccomp off: Landlock is what is left to stop sockets."""
    r = _runner_without(tmp_path_factory, ("seccomp", "namespaces"), 460, 10, lambda layers: (
        None if layers["landlock"]["enabled"] and int(layers["landlock"]["reason"].split()[1]) >= 6
        else f"needs Landlock ABI >= 6: {layers['landlock']['reason']}"))
    yield r
    r.close()


def test_landlock_alone_blocks_tcp_and_abstract_unix_sockets(landlock_only):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    name = f"pesto-ll-{os.getpid()}"
    unix = socket.socket(socket.AF_UNIX)
    unix.bind("\0" + name)
    unix.listen(1)
    try:
        code = textwrap.dedent(f"""
            import socket
            for fam, addr in ((socket.AF_INET, ("127.0.0.1", {srv.getsockname()[1]})),
                              (socket.AF_UNIX, "\\0{name}")):
                s = socket.socket(fam)     # allowed: seccomp is off
                try:
                    s.connect(addr); print("CONNECTED")
                except OSError as e:
                    print("denied", e.errno)
        """)
        r = landlock_only.run("python", code)
        # EACCES from Landlock's TCP rule, EPERM from its abstract-socket scope
        assert r.runtime.stdout.splitlines() == ["denied 13", "denied 1"], r
    finally:
        srv.close()
        unix.close()


def test_cgroup_backend_is_the_hosts(runner):
    """The memory cgroup in use is the host's kind: v2 on a unified host, v1
    where memory is a v1 hierarchy (as here), never silently none."""
    root = "/sys/fs/cgroup"
    if os.path.exists(f"{root}/cgroup.controllers"):
        with open(f"{root}/cgroup.controllers") as f:
            controllers = f.read().split()
        if "memory" not in controllers:
            pytest.skip("cgroup v2 here has no memory controller")
        expected, where = "cgroup v2 memory controller", root
    elif os.path.exists(f"{root}/memory/memory.limit_in_bytes"):
        with open("/proc/self/cgroup") as f:
            own = [line.split(":", 2)[2].strip() for line in f
                   if "memory" in line.split(":")[1].split(",")][0]
        expected, where = "cgroup v1 memory controller", f"{root}/memory{own}"
    else:
        pytest.skip("no memory cgroup hierarchy on this host")
    if not os.access(where, os.W_OK):   # EROFS too, e.g. podman's read-only cgroup mount
        pytest.skip(f"{where} is not writable here (not delegated)")
    layer = runner.engine.layers["cgroups"]
    assert layer["enabled"] and layer["reason"].startswith(expected), layer


def test_pin_cpus_off_leaves_every_cpu_to_every_run(tmp_path):
    """The setting turns the slots' CPU placement off (tests/test_sandbox.py
    proves it on): two runs held at once both see all the CPUs."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one CPU: pinned or not, a run sees the same")
    from pesto.models import ExecuteRequest
    from tests.test_sandbox import AFFINITY
    settings = load_settings(env={}, data_dir=str(tmp_path), uid_base=UID_BASE + 490,
                             uid_count=5, workers=2, pin_cpus=False)
    r = Runner(settings)
    try:
        results = r.gather(*(ExecuteRequest(language="python", code=AFFINITY) for _ in range(2)))
    finally:
        r.close()
    assert [res.runtime.stdout.strip() for res in results] == [str(allowed)] * 2, results
