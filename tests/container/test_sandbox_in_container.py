"""SANDBOX.md's properties, proven over HTTP against the image run without
--privileged: hello world (every language in the image), S1 network, S3
confidentiality, S4 persistence, S5 orphans, S8 fork bombs."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from tests.container.helpers import LANGUAGES, REPO, Container, execute, run_json, run_uid_processes

pytestmark = pytest.mark.container


def _requested_languages() -> list[str]:
    if LANGUAGES == "all":
        return sorted(p.parent.name for p in (REPO / "languages").glob("*/language.toml"))
    if LANGUAGES == "none":
        return []
    return sorted(x for x in LANGUAGES.split(",") if x)


def _wait_no_run_processes(ctr: Container, uids: range | None = None,
                           timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = run_uid_processes(ctr, uids)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = run_uid_processes(ctr, uids)
    return left


def _zombies(ctr: Container) -> list[str]:
    out = ctr.exec("ps", "-eo", "stat=,pid=,ppid=,args=").stdout
    return [line for line in out.splitlines() if line.strip().startswith("Z")]


# --- hello world ----------------------------------------------------------

@pytest.mark.parametrize("language", _requested_languages())
def test_hello_world(language: str, container: Container, api: httpx.Client,
                     image_languages: list[str]) -> None:
    if language not in image_languages:
        pytest.skip(f"{language} is not in the image (its install failed at build time)")
    source = container.exec("sh", "-c", f"cat /opt/pesto/languages/{language}/test.*").stdout
    result = execute(api, language, source)
    assert result["runtime"]["stdout"] == "Hello world!\n", json.dumps(result)[:3000]
    assert result["runtime"]["status"] == "ok"


def test_every_runtime_in_the_image_answers(api: httpx.Client, image_languages: list[str]) -> None:
    """Each folder id resolves through the API (the id is always an alias)."""
    for language in image_languages:
        r = api.post("/api/execute", json={"language": language, "code": "", "runTimeout": 3000})
        assert r.status_code == 200, f"{language}: {r.status_code} {r.text[:500]}"


# --- S1 network -----------------------------------------------------------

NETWORK_PROBE = r'''
import ctypes, json, socket
res = {}
def attempt(name, fn):
    try:
        fn()
        res[name] = "ok"
    except Exception as exc:
        res[name] = f"{type(exc).__name__}:{getattr(exc, 'errno', '')}"
def connect(family, kind, addr):
    def go():
        s = socket.socket(family, kind)
        s.settimeout(2)
        s.connect(addr)
        if kind == socket.SOCK_DGRAM:
            s.send(b"x")
    return go
def listen():
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
def io_uring():
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    if libc.syscall(425, 4, params) < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")
attempt("tcp4_api", connect(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 8080)))
attempt("tcp6_api", connect(socket.AF_INET6, socket.SOCK_STREAM, ("::1", 8080)))
attempt("tcp4_out", connect(socket.AF_INET, socket.SOCK_STREAM, ("1.1.1.1", 443)))
attempt("udp4_out", connect(socket.AF_INET, socket.SOCK_DGRAM, ("1.1.1.1", 53)))
attempt("udp6_out", connect(socket.AF_INET6, socket.SOCK_DGRAM, ("2606:4700:4700::1111", 53)))
attempt("dns", lambda: socket.getaddrinfo("deb.debian.org", 80))
attempt("listen4", listen)
attempt("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt("io_uring", io_uring)
try:
    res["interfaces"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
except OSError as exc:
    res["interfaces"] = f"unreadable:{exc.errno}"
print(json.dumps(res))
'''

C_NETWORK_PROBE = r'''
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
int main(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) { printf("{\"socket\": \"%s\", \"connect\": \"no socket\"}\n", strerror(errno)); return 0; }
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(8080);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    printf("{\"socket\": \"ok\", \"connect\": \"%s\"}\n", r == 0 ? "ok" : strerror(errno));
    return 0;
}
'''


def test_network_control_api_reachable_outside_the_sandbox(container: Container) -> None:
    """The API listens on the container's loopback: a probe that fails in the
    sandbox fails because of the sandbox, not because nothing is there."""
    r = container.exec("/opt/pesto/.venv/bin/python", "-c",
                       "import socket; socket.create_connection(('127.0.0.1', 8080), 2); print('ok')")
    assert r.stdout.strip() == "ok"


def test_network_python(api: httpx.Client, image_languages: list[str],
                        doctor: dict[str, str]) -> None:
    if "python" not in image_languages:
        pytest.skip("python is not in the image")
    res = run_json(api, "python", NETWORK_PROBE)
    interfaces = res.pop("interfaces")
    reached = {name: v for name, v in res.items() if v == "ok"}
    assert not reached, f"network reachable from a run: {res}"
    if doctor.get("namespaces", "").startswith("on"):
        # A fresh network namespace has only a loopback, and it is down.
        assert interfaces in (["lo"], []) or str(interfaces).startswith("unreadable"), interfaces


def test_network_c(api: httpx.Client, image_languages: list[str]) -> None:
    if "c" not in image_languages:
        pytest.skip("c is not in the image")
    res = run_json(api, "c", C_NETWORK_PROBE)
    assert res["connect"] != "ok", res


# --- S3 confidentiality ---------------------------------------------------

SNOOP_PROBE = r'''
import json, os
me = os.getpid()
out = {"environ": {}, "cmdline": {}}
for pid in os.listdir("/proc"):
    if not pid.isdigit() or int(pid) == me:
        continue
    for kind in ("environ", "cmdline"):
        try:
            with open(f"/proc/{pid}/{kind}", "rb") as f:
                out[kind][pid] = f.read(8000).decode("latin-1")
        except Exception as exc:
            out[kind][pid] = "!" + type(exc).__name__
def attempt(name, fn):
    try:
        out[name] = fn()
    except Exception as exc:
        out[name] = "!" + type(exc).__name__
attempt("datadir", lambda: os.listdir("/var/lib/pesto"))
for name in ("pesto.sqlite3", "pesto.sqlite3-wal", "pesto.db"):
    attempt("db:" + name, lambda: open("/var/lib/pesto/" + name, "rb").read(200).decode("latin-1"))
attempt("pid1_environ", lambda: open("/proc/1/environ", "rb").read().decode("latin-1"))
attempt("sandbox_locks", lambda: os.listdir("/var/lib/pesto-sandbox/locks"))
attempt("root_home", lambda: os.listdir("/root"))
attempt("shadow", lambda: open("/etc/shadow").read(50))
print(json.dumps(out))
'''


def test_confidentiality_python(container: Container, api: httpx.Client, token: str,
                                admin_secret: str, image_languages: list[str]) -> None:
    if "python" not in image_languages:
        pytest.skip("python is not in the image")
    result = execute(api, "python", SNOOP_PROBE)
    raw = result["runtime"]["stdout"]
    # The server's secrets are nowhere a run can read.
    assert admin_secret not in raw and token not in raw
    out = json.loads(raw.strip().splitlines()[-1])
    assert str(out["datadir"]).startswith("!"), out["datadir"]
    for key in [k for k in out if k.startswith("db:")]:
        assert str(out[key]).startswith("!"), (key, out[key])
    assert str(out["pid1_environ"]).startswith("!")
    assert str(out["shadow"]).startswith("!")
    readable_env = {pid: v for pid, v in out["environ"].items() if not v.startswith("!")}
    assert not any("PESTO_" in v for v in readable_env.values()), readable_env


def test_confidentiality_between_concurrent_runs(api: httpx.Client,
                                                 image_languages: list[str]) -> None:
    if "python" not in image_languages:
        pytest.skip("python is not in the image")
    tag = uuid.uuid4().hex
    writer = (f"import os, time\nopen('secret-{tag}.txt', 'w').write('{tag}')\n"
              f"os.chmod('secret-{tag}.txt', 0o644)\nprint(os.getcwd(), flush=True)\ntime.sleep(5)\n")
    r = api.post("/api/jobs", json={"language": "python", "code": writer, "runTimeout": 10000})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    deadline = time.monotonic() + 20
    while api.get(f"/api/jobs/{job}").json()["status"] == "queued":
        assert time.monotonic() < deadline, "writer never started"
        time.sleep(0.1)
    time.sleep(1.0)
    reader = (
        "import glob, json, os\n"
        f"name = 'secret-{tag}.txt'\n"
        "found = {}\n"
        "cands = set(glob.glob('/var/lib/pesto-sandbox/**/' + name, recursive=True))\n"
        "for root in ('/tmp', '/var/tmp', '/dev/shm', '/var/lib/pesto-sandbox'):\n"
        "    for d, _, files in os.walk(root):\n"
        "        if name in files: cands.add(os.path.join(d, name))\n"
        "for uid in range(61000, 61064):\n"
        "    for base in ('/var/lib/pesto-sandbox/work', '/var/lib/pesto-sandbox/run', '/tmp'):\n"
        "        cands.add(f'{base}/{uid}/{name}')\n"
        "for p in sorted(cands):\n"
        "    try:\n"
        "        found[p] = open(p).read()\n"
        "    except OSError:\n"
        "        pass\n"
        "print(json.dumps(found))\n"
    )
    stolen = run_json(api, "python", reader)
    assert stolen == {}, f"another run's file was readable: {stolen}"
    deadline = time.monotonic() + 30
    while (body := api.get(f"/api/jobs/{job}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert body["status"] == "completed", body
    assert body["result"]["runtime"]["stdout"].strip(), "the writer did not run"


# --- S4 persistence -------------------------------------------------------

def test_nothing_written_survives_a_run(container: Container, api: httpx.Client,
                                        image_languages: list[str]) -> None:
    if "python" not in image_languages:
        pytest.skip("python is not in the image")
    tag = "persist-" + uuid.uuid4().hex
    writer = (
        "import json, os, subprocess\n"
        f"tag = {tag!r}\n"
        "inside = ['/tmp/' + tag, '/var/tmp/' + tag, '/dev/shm/' + tag, os.path.join(os.getcwd(), tag)]\n"
        "outside = ['/opt/pesto/' + tag, '/var/lib/pesto/' + tag, '/var/lib/pesto-sandbox/' + tag,\n"
        "           '/etc/' + tag, '/' + tag, '/usr/local/bin/' + tag, '/root/' + tag]\n"
        "res = {}\n"
        "for p in inside + outside:\n"
        "    try:\n"
        "        with open(p, 'w') as f: f.write('x')\n"
        "        res[p] = 'ok'\n"
        "    except OSError as exc:\n"
        "        res[p] = 'error %d' % exc.errno\n"
        "try:\n"
        "    subprocess.run(['/bin/sh', '-c', 'echo x > /tmp/' + tag + '.sh'], timeout=5)\n"
        "except Exception as exc:\n"
        "    res['shell'] = type(exc).__name__\n"
        "print(json.dumps({'outside': {p: res[p] for p in outside}, 'inside': {p: res[p] for p in inside}}))\n"
    )
    first = run_json(api, "python", writer)
    wrote_outside = {p: v for p, v in first["outside"].items() if v == "ok"}
    assert not wrote_outside, f"a run wrote outside its dirs: {wrote_outside}"
    # As root in the container: no trace anywhere, /dev/shm and tmpfs mounts included.
    found = container.exec("sh", "-c", "find / \\( -path /proc -o -path /sys \\) -prune "
                           f"-o -name '{tag}*' -print 2>/dev/null; true").stdout.split()
    assert found == [], f"files left behind by a finished run: {found}"
    # And a later run sees none of it either.
    checker = ("import json, os\n"
               f"paths = {list(first['inside'])!r} + ['/tmp/{tag}.sh']\n"
               "print(json.dumps([p for p in paths if os.path.exists(p)]))\n")
    assert run_json(api, "python", checker) == []


# --- S5 orphans -----------------------------------------------------------

PY_ORPHANS = r'''
import os, signal, time
print("uid", os.getuid(), flush=True)
# double fork + setsid, stdio closed: a classic daemon
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(60)
    os._exit(0)
# a nohup-style child that ignores SIGHUP and keeps stdout open
if os.fork() == 0:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.close(1)
    time.sleep(60)
    os._exit(0)
time.sleep(0.2)
print("parent done", flush=True)
'''

C_ORPHANS = r'''
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    printf("uid %d\n", (int)getuid());
    puts("parent done");
    fflush(stdout);
    if (daemon(0, 0) == 0)
        for (;;) pause();
    return 0;
}
'''


@pytest.mark.parametrize("language,code", [("python", PY_ORPHANS), ("c", C_ORPHANS)])
def test_no_process_survives_a_run(language: str, code: str, container: Container,
                                   api: httpx.Client, image_languages: list[str]) -> None:
    if language not in image_languages:
        pytest.skip(f"{language} is not in the image")
    result = execute(api, language, code, runTimeout=5000)
    stdout = result["runtime"]["stdout"]
    assert "parent done" in stdout, json.dumps(result)[:2000]
    uid = int(stdout.split("uid ", 1)[1].split()[0])
    # Nothing of the run's uid is left, zombies included (those re-parented to
    # PID 1 are tini's to reap; a uid is free only when it has no process).
    left = _wait_no_run_processes(container, range(uid, uid + 1))
    assert left == [], f"processes of the run (uid {uid}) outlived it: {left}"
    deadline = time.monotonic() + 5
    while (zombies := [z for z in _zombies(container) if z.split()[2] == "1"]) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert zombies == [], f"orphan zombies PID 1 did not reap: {zombies}"


# --- S8 fork and thread bombs ---------------------------------------------

BOMBS = [
    ("python", "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"),
    ("c", "#include <unistd.h>\nint main(void) { for (;;) fork(); }\n"),
    ("python", "import threading, time\nwhile True:\n"
               "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"),
]


@pytest.mark.parametrize("language,code", BOMBS, ids=["python-fork", "c-fork", "python-threads"])
def test_bomb_is_contained(language: str, code: str, container: Container, api: httpx.Client,
                           image_languages: list[str]) -> None:
    if language not in image_languages:
        pytest.skip(f"{language} is not in the image")
    r = api.post("/api/jobs", json={"language": language, "code": code, "runTimeout": 3000})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    time.sleep(1.0)
    # Other runs and the server keep working while the bomb goes off.
    if "python" in image_languages:
        ok = execute(api, "python", "print('still here')")
        assert ok["runtime"]["stdout"] == "still here\n", ok
    with container.client() as anon:
        assert anon.get("/healthz").status_code == 200
    deadline = time.monotonic() + 60
    while (body := api.get(f"/api/jobs/{job}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the bomb's job never finished"
        time.sleep(0.2)
    assert body["status"] == "completed", body
    runtime = body["result"]["runtime"]
    assert runtime["status"] != "ok", runtime
    assert runtime["wallTime"] < 3000 + 1500, runtime
    assert _wait_no_run_processes(container) == []
    assert container.exec("pesto", "--help", check=False).returncode == 0


# --- S5 signals, PID namespace --------------------------------------------

SIGNAL_PROBE = r'''
import json, os
me = os.getpid()
pids = sorted({int(p) for p in os.listdir("/proc") if p.isdigit()} | set(range(1, 40)))
reachable = []
for pid in pids:
    if pid == me:
        continue
    try:
        os.kill(pid, 0)          # permission check only: nothing is sent
        reachable.append(pid)
    except OSError:
        pass
print(json.dumps({"pid": me, "reachable": reachable}))
'''


def test_runs_cannot_signal_the_server(container: Container, api: httpx.Client,
                                       image_languages: list[str]) -> None:
    if "python" not in image_languages:
        pytest.skip("python is not in the image")
    res = run_json(api, "python", SIGNAL_PROBE)
    assert res["reachable"] == [], f"a run could signal other processes: {res}"


def test_runs_get_their_own_pid_namespace(api: httpx.Client, image_languages: list[str],
                                          doctor: dict[str, str]) -> None:
    if "python" not in image_languages:
        pytest.skip("python is not in the image")
    if not doctor.get("namespaces", "").startswith("on"):
        pytest.fail(f"namespaces are off in the container: {doctor.get('namespaces')}")
    res = run_json(api, "python", "import json, os; print(json.dumps({'pid': os.getpid()}))")
    # In the container the server and its helpers already hold the low pids;
    # only a fresh PID namespace gives the program one this small.
    assert res["pid"] <= 3, res


# --- S10 disk ---------------------------------------------------------------

DISK_FILLER = '''
import errno, json, os
total, err = 0, None
chunk = b"x" * (1 << 20)
try:
    for i in range(40):                    # 40 files of 8 MiB: 320 MiB asked
        with open(f"f{i}", "wb") as f:
            for _ in range(8):
                f.write(chunk)
                total += 1
except OSError as exc:
    err = exc.errno
print(json.dumps({"mib": total, "errno": err}))
'''


def test_disk_cap_is_the_kernels_inside_the_container(container: Container, api: httpx.Client,
                                                      image_languages: list[str]) -> None:
    """Without CAP_SYS_ADMIN the slot's tmpfs is mounted in a user namespace
    of its own: the total a run writes is bounded by the kernel (ENOSPC),
    not only each file by RLIMIT_FSIZE."""
    if "python" not in image_languages:
        pytest.skip("python is not in the image")
    doctor = json.loads(container.exec("pesto", "doctor", "--json").stdout)
    assert doctor["disk"]["enabled"], doctor["disk"]
    out = run_json(api, "python", DISK_FILLER)
    assert out["errno"] == 28, out            # ENOSPC: the tmpfs is full
    assert out["mib"] <= 64, out              # the default disk limit
