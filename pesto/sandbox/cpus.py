"""Which CPUs each slot's processes run on.

With no more slots than CPUs, the CPUs this process may use are dealt out
among the slots (slot i gets every CPU whose rank k has k % slots == i: one
each when there are as many slots as CPUs). A slot's supervisor, its
standbys and its programs then share their slot's CPUs:

- a wake-up along a job's chain (supervisor → standby → program → its init
  → supervisor) lands on the CPU the waker is leaving, never in the run
  queue of a CPU busy with another slot's program while this one idles;
- one slot's program does not slow another's down (steadier timings).

Under a full load each job has about one CPU either way; a multi-threaded
program gets only its slot's CPUs. With more slots than CPUs nothing is
pinned: the slots could not share the CPUs evenly. This is placement, not a
limit: a run may widen its own affinity within what the host allows. Two
instances on one host deal the same CPUs the same way unless each is given
its own (a cpuset), so `pin_cpus = false` is there for hosts shared so.
"""

from __future__ import annotations

from collections.abc import Iterable


def slot_cpus(allowed: Iterable[int], slots: int, index: int) -> set[int] | None:
    """The CPUs for slot `index` of `slots`, or None to leave its affinity alone."""
    cpus = sorted(allowed)
    if slots < 1 or slots > len(cpus):
        return None
    return {cpu for rank, cpu in enumerate(cpus) if rank % slots == index % slots}
