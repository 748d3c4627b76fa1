"""500 runs in a row, hostile ones mixed in: nothing leaks."""

from __future__ import annotations

import os

from tests.conftest import leftover_workdirs, run_uid_processes

MIX = [
    ("print(1)", {}),
    ("import os\nif os.fork() == 0:\n    os.setsid()\n    import time; time.sleep(60)\nprint(2)", {}),
    ("while True: pass", {"run_timeout": 100}),
    ("import time; time.sleep(60)", {"run_timeout": 100}),
    ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", {"run_timeout": 300}),
    ("print('x' * 200000)", {}),
    ("import sys; sys.exit(4)", {}),
    ("open('f', 'w').write('x' * 100000); print(3)", {}),
    ("print(input())", {"stdin": "echo\n"}),
    ("print(1)", {}),
]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_500_runs_leave_no_process_uid_workdir_or_memory(runner):
    # Warm up allocator and caches before measuring growth.
    for _ in range(10):
        runner.run("python", "print(1)")
    before = rss_kib()
    statuses: dict[str, int] = {}
    for i in range(500):
        code, kw = MIX[i % len(MIX)]
        r = runner.run("python", code, **kw)
        statuses[r.runtime.status] = statuses.get(r.runtime.status, 0) + 1
        if i % len(MIX) == 0:
            assert r.runtime.stdout == "1\n", r
    grown = rss_kib() - before
    print("statuses:", statuses, "RSS growth KiB:", grown)
    assert statuses.get("timeout", 0) >= 150 and statuses.get("ok", 0) >= 200
    assert run_uid_processes(runner) == []
    assert leftover_workdirs(runner) == []
    # Every uid lock is free again (but the ones idle slots hold for their
    # next job): nothing is held by a lingering job.
    import fcntl
    lock_dir = runner.settings.sandbox_dir / "locks"
    lo, hi = runner.settings.uid_base, runner.settings.uid_base + runner.settings.uid_count
    for name in os.listdir(lock_dir):
        if not (name.isdigit() and lo <= int(name) < hi) or int(name) in runner.ready_uids:
            continue   # another Pesto's, or held ready for the next job by an idle slot
        fd = os.open(lock_dir / name, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # raises if still held
            assert os.pread(fd, 5, 0) == b"", f"uid {name} left dirty"
        finally:
            os.close(fd)
    assert grown < 20 * 1024, f"engine memory grew by {grown} KiB"
