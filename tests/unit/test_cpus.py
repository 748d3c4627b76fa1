"""The CPU dealing of pesto/sandbox/cpus.py: which CPUs each slot's processes run on."""

from __future__ import annotations

import itertools

import pytest

from pesto.sandbox.cpus import slot_cpus


@pytest.mark.parametrize("allowed, slots, expected", [
    ([0, 1], 2, [{0}, {1}]),                  # one CPU each
    ([0, 1, 2, 3], 2, [{0, 2}, {1, 3}]),      # dealt out
    ([2, 5, 7], 3, [{2}, {5}, {7}]),          # the CPUs a cpuset allows, not 0..n
    ([7, 2, 5], 3, [{2}, {5}, {7}]),          # dealt by rank, whatever order they come in
    ([0, 1, 2, 3], 1, [{0, 1, 2, 3}]),        # one slot: every CPU
    ([0, 1, 2, 3, 4], 2, [{0, 2, 4}, {1, 3}]),  # uneven: the first slots get one more
    ([0, 1], 3, [None, None, None]),          # more slots than CPUs: not pinned
    ([], 1, [None]),                          # no CPU known: not pinned
])
def test_slot_cpus(allowed, slots, expected):
    assert [slot_cpus(allowed, slots, i) for i in range(slots)] == expected


def test_no_slots_pins_nothing():
    assert slot_cpus([0, 1], 0, 0) is None


@pytest.mark.parametrize("ncpus, slots", [
    (n, s) for n, s in itertools.product(range(1, 13), range(1, 13)) if s <= n])
def test_the_shares_split_the_allowed_cpus_evenly(ncpus, slots):
    # A sparse cpuset, as a container may be given: every other CPU from 3.
    allowed = range(3, 3 + 2 * ncpus, 2)
    shares = [slot_cpus(iter(allowed), slots, i) for i in range(slots)]
    # Every allowed CPU goes to exactly one slot, and no other CPU to any.
    assert sorted(cpu for share in shares for cpu in share) == list(allowed)
    # Fair: shares differ by one CPU at most, and none is empty.
    sizes = [len(share) for share in shares]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    # A slot index past the count wraps around (slot i and i + slots share CPUs).
    assert slot_cpus(allowed, slots, slots) == shares[0]
