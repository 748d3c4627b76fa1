"""The one pure function that names how a stage ended.

"The sandbox failed" never reaches here (that is a SandboxError); this
only classifies what the program did or what the engine did to it.
"""

from __future__ import annotations

# reason: why the engine stopped the program itself, or None.
#   "timeout" - wall-clock limit; "output" - output cap;
#   "memory" - the engine's memory watch (memory.py), where no cgroup is.
# oom: the memory cgroup's OOM killer acted during the stage.


def decide_status(*, exit_code: int, signal_no: int | None, reason: str | None,
                  oom: bool) -> str:
    """Returns one of ok, error, signal, timeout, memory, output.

    | engine reason | oom | ended by          | status  |
    |---------------|-----|-------------------|---------|
    | timeout       |  -  | anything          | timeout |
    | output        |  -  | anything          | output  |
    | memory        |  -  | anything          | memory  |
    | None          | yes | anything but 0    | memory  |
    | None          |  -  | a signal          | signal  |
    | None          |  -  | exit 0            | ok      |
    | None          |  -  | exit non-zero     | error   |
    """
    if reason in ("timeout", "output", "memory"):
        return reason
    if oom and (signal_no is not None or exit_code != 0):
        return "memory"
    if signal_no is not None:
        return "signal"
    return "ok" if exit_code == 0 else "error"
