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


@pytest.fixture(scope="module")
def bare_ns(tmp_path_factory):
    """An engine with namespaces on but seccomp and Landlock off."""
    if os.geteuid() != 0:
        pytest.skip("the sandbox needs root")
    settings = load_settings(env={}, data_dir=str(tmp_path_factory.mktemp("d")),
                             uid_base=UID_BASE + 400, uid_count=50, disable=("seccomp", "landlock"))
    r = Runner(settings)
    if not r.engine.layers["namespaces"]["enabled"]:
        r.close()
        pytest.skip(f"namespaces unavailable here: {r.engine.layers['namespaces']['reason']}")
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


def test_uts_and_ipc_namespaces(bare_ns):
    code = textwrap.dedent("""
        import socket, os
        print(socket.gethostname() != os.uname().nodename or "same")
        print(open("/proc/sysvipc/shm").read().count("\\n") - 1)
    """)
    r = bare_ns.run("python", code)
    assert r.runtime.stdout.splitlines()[1] == "0", r


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
