"""KVM's current root and its LRU of previous roots, on its own.

Orders are written most recently used first: [current, prev0, prev1, prev2]. KVM's own
comment in cached_root_find_and_keep_current() gives the expected rotations: looking for
prev1 from (C, 0, 1, 2) leaves (1, C, 0, 2); a miss leaves (new, C, 0, 1), prev2 let go.
"""
from __future__ import annotations

from replay.prev_roots import PrevRoots


def filled(*asids: int) -> PrevRoots:
    """An LRU of 3 previous roots loaded with `asids` in turn (the last one current)."""
    roots = PrevRoots(3)
    for a in asids:
        roots.load(a)
    return roots


def test_loads_keep_the_four_most_recent():
    roots = filled(1, 2, 3, 4)
    # [4, 3, 2, 1]: every one held.
    assert roots.held == [4, 3, 2, 1]
    roots.load(5)
    # [5, 4, 3, 2]: 1, the least recently used, let go.
    assert roots.held == [5, 4, 3, 2]


def test_a_hit_becomes_current_as_in_kvm():
    # C=4, prev (3, 2, 1); a switch to 2 (prev1) leaves (2, C, prev0, prev2) = [2, 4, 3, 1].
    roots = filled(1, 2, 3, 4)
    assert roots.lookup(2)
    assert roots.held == [2, 4, 3, 1]


def test_a_miss_changes_nothing_until_the_slow_load():
    roots = filled(1, 2, 3, 4)
    assert not roots.lookup(9)
    assert roots.held == [4, 3, 2, 1]
    roots.load(9)
    assert roots.held == [9, 4, 3, 2]


def test_invalidate_frees_a_slot():
    roots = filled(1, 2, 3, 4)
    roots.invalidate(3)
    assert roots.held == [4, 2, 1] and not roots.lookup(3)
    roots.load(5)
    # Room for 5 without letting 1 go: [5, 4, 2, 1].
    assert roots.held == [5, 4, 2, 1]
    roots.invalidate(42)  # not held: nothing happens
    assert len(roots) == 4


def test_zero_previous_roots_keeps_only_the_current():
    roots = PrevRoots(0)
    roots.load(1)
    assert roots.lookup(1)
    roots.load(2)
    assert roots.held == [2] and not roots.lookup(1)
