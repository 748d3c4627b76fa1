"""Peak memory and CPU time in results agree with an independent measurement."""

from __future__ import annotations

import statistics
import subprocess
import textwrap


PROGRAM = textwrap.dedent("""
    #include <stdlib.h>
    #include <string.h>
    #include <stdio.h>
    int main(void) {
        size_t n = 80u << 20;
        volatile char *p = malloc(n);          /* volatile: no folding the memory away */
        for (size_t i = 0; i < n; i += 4096) p[i] = 1;   /* 80 MiB resident */
        volatile unsigned long x = 0;
        for (unsigned long i = 0; i < 400000000ul; i++) x += i;   /* ~0.3-0.5 s of CPU */
        printf("%lu\\n", (unsigned long)p[12345] + (x & 1));
        return 0;
    }
""")


# ru_maxrss counts a process's RSS from before its exec too, so the program
# is started from a small interpreter, not from the (large) test process.
MEASURE = ("import os, sys; pid = os.posix_spawn(sys.argv[1], [sys.argv[1]], {}); "
           "_, st, ru = os.wait4(pid, 0); print(st, ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime)")


def bare_usage(tmp_path) -> tuple[int, float]:
    """(max rss bytes, cpu seconds) of the same program run bare, from wait4's rusage."""
    src = tmp_path / "m.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "m"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    out = subprocess.run(["/usr/bin/python3", "-c", MEASURE, str(exe)], check=True,
                         capture_output=True, text=True).stdout.splitlines()[-1].split()
    assert out[0] == "0", out
    return int(out[1]), float(out[2])


def test_peak_memory_and_cpu_agree_with_rusage(runner, tmp_path):
    # Medians of three on each side: CPU time itself varies on a busy machine.
    runs = [runner.run("c", PROGRAM, memory_limit=256 << 20) for _ in range(3)]
    assert all(r.runtime.status == "ok" for r in runs), runs
    mem = statistics.median(r.runtime.memory for r in runs)
    cpu_engine = statistics.median(r.runtime.cpu_time for r in runs) / 1000
    bare = [bare_usage(tmp_path) for _ in range(3)]
    rss = statistics.median(b[0] for b in bare)
    cpu = statistics.median(b[1] for b in bare)
    print(f"engine: {mem / 2**20:.1f} MiB {cpu_engine * 1000:.0f} ms; "
          f"bare: {rss / 2**20:.1f} MiB {cpu * 1000:.0f} ms")
    assert abs(mem - rss) <= 0.10 * rss, (mem, rss)
    assert abs(cpu_engine - cpu) <= 0.10 * cpu + 0.01, (cpu_engine, cpu)
