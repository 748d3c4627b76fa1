"""The one pure function that names how a stage ended.

"The sandbox failed" never reaches here (that is a SandboxError); this
only classifies what the program did or what the engine did to it.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """How a stage ended: the one type for it, from the supervisor to the wire."""
    OK = "ok"
    ERROR = "error"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    OUTPUT = "output"
    SKIPPED = "skipped"        # the stage did not run (no compile step, or an earlier stop)

# reason: why the engine stopped the program itself, or None.
#   "timeout" - wall-clock limit; "output" - output cap;
#   "memory" - the engine's memory watch (memory.py), where no cgroup is.
# oom: the memory cgroup's OOM killer acted during the stage.


def decide_status(*, exit_code: int, signal_no: int | None, reason: str | None,
                  oom: bool) -> Status:
    """Returns how the stage ended (never SKIPPED: that stage did not run).

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
        return Status(reason)
    if oom and (signal_no is not None or exit_code != 0):
        return Status.MEMORY
    if signal_no is not None:
        return Status.SIGNAL
    return Status.OK if exit_code == 0 else Status.ERROR
