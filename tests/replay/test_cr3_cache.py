"""The paravirt CR3 target cache: 4 slots, round-robin refill, invalidated with its shadow root.

Notation in the comments: A..E are address spaces 1..5; a cache state is written
[slot0, slot1, slot2, slot3] with `next` the slot the next miss fills.
"""
from __future__ import annotations

import pytest

from replay.cr3_cache import Cr3TargetCache


def switches(spaces: int, rounds: int) -> list[tuple]:
    """cr3 writes only: round-robin 1, 2, ..., spaces, 1, 2, ... `rounds` times."""
    return [("cr3", 1 + i % spaces) for i in range(spaces * rounds)]


# --- the cache on its own ---------------------------------------------------------

def test_empty_cache_misses_and_fill_rotates():
    c = Cr3TargetCache(4)
    assert not c.lookup(1)
    for a in (1, 2, 3, 4):
        c.fill(a)
    # [1, 2, 3, 4], next = 0: all four present.
    assert all(c.lookup(a) for a in (1, 2, 3, 4))
    c.fill(5)
    # slot 0 (filled first) is overwritten: [5, 2, 3, 4], next = 1.
    assert not c.lookup(1)
    assert c.lookup(5) and c.lookup(2)


def test_refill_is_round_robin_not_lru():
    # Hits do not move anything: after 1 2 3 4, a hit on 1, then a fill of 5,
    # round-robin overwrites slot 0 = 1 (the oldest *filled*), although 2 is the
    # least recently *used*. An LRU cache would have evicted 2 and kept 1.
    c = Cr3TargetCache(4)
    for a in (1, 2, 3, 4):
        c.fill(a)
    assert c.lookup(1)        # hit: [1, 2, 3, 4], next still 0
    c.fill(5)                 # [5, 2, 3, 4], next = 1
    assert not c.lookup(1)    # round-robin answer (LRU would say hit)
    assert c.lookup(2)        # round-robin answer (LRU would say miss)


def test_invalidate_empties_the_slot_without_moving_next():
    c = Cr3TargetCache(4)
    for a in (1, 2, 3):
        c.fill(a)             # [1, 2, 3, -], next = 3
    c.invalidate(2)           # [1, -, 3, -], next = 3
    assert not c.lookup(2)
    c.fill(4)                 # slot 3: [1, -, 3, 4], next = 0
    c.fill(5)                 # slot 0 (not the empty slot 1): [5, -, 3, 4], next = 1
    assert not c.lookup(1)
    assert c.lookup(3) and c.lookup(4) and c.lookup(5)


def test_size_zero_cache_never_hits():
    c = Cr3TargetCache(0)
    c.fill(1)
    assert not c.lookup(1)


# --- round-robin address spaces through kvm-paravirt (4 slots) --------------------

def test_five_spaces_never_hit_four_slots(run):
    # 1 2 3 4 fill [1,2,3,4]; 5 overwrites slot 0 (1), then 1 overwrites slot 1 (2),
    # 2 overwrites slot 2 (3), ...: each miss evicts exactly the space needed next.
    # 5 spaces x 6 rounds = 30 switches, 30 misses, every one a mov-cr3 exit.
    c = run("kvm-paravirt", switches(5, 6))
    assert c["cr3_writes"] == 30
    assert c["cr3_cache_lookup"] == 30
    assert c["cr3_cache_hit"] == 0
    assert c["cr3_cache_miss"] == 30
    assert c["exit_cr3"] == 30
    # The shadow pool (2048 pages) keeps all 5 roots: 5 allocations, the other 25
    # exits find their root still cached.
    assert c["shadow_root_alloc"] == 5
    assert c["shadow_root_hit"] == 25


@pytest.mark.parametrize("spaces", [4, 3, 2])
def test_up_to_four_spaces_hit_after_warm_up(run, spaces):
    # The first round misses once per space (exit, fill); every later switch hits
    # and does not exit. 6 rounds: 6*spaces switches, `spaces` misses.
    c = run("kvm-paravirt", switches(spaces, 6))
    n = 6 * spaces
    assert c["cr3_writes"] == n
    assert c["cr3_cache_miss"] == spaces
    assert c["cr3_cache_hit"] == n - spaces
    assert c["exit_cr3"] == spaces
    assert c["shadow_root_alloc"] == spaces
    assert c["shadow_root_hit"] == 0      # no miss ever finds an old root


def test_paravirt_round_robin_differs_from_lru(run):
    # A B C D A E B A  (1 2 3 4 1 5 2 1)
    # 1,2,3,4: 4 misses, [1,2,3,4] next 0
    # 1: hit
    # 5: miss, slot 0 overwritten -> [5,2,3,4] next 1      (LRU would evict 2)
    # 2: hit (round-robin kept it)                         (LRU: miss)
    # 1: miss, slot 1 overwritten -> [5,1,3,4] next 2      (LRU: hit)
    # Round-robin: 6 misses, 2 hits. (LRU: 6 misses and 2 hits as well, but on different
    # switches: it hits the last 1 and misses the 2; the next test differs in total.)
    c = run("kvm-paravirt", [("cr3", a) for a in (1, 2, 3, 4, 1, 5, 2, 1)])
    assert c["cr3_cache_hit"] == 2
    assert c["cr3_cache_miss"] == 6
    assert c["exit_cr3"] == 6
    # Roots: 1,2,3,4,5 allocated once each; the final miss on 1 finds its root.
    assert c["shadow_root_alloc"] == 5
    assert c["shadow_root_hit"] == 1


def test_paravirt_round_robin_answer_where_lru_differs_in_total(run):
    # A B C D A E B C  (1 2 3 4 1 5 2 3)
    # 1,2,3,4 miss; 1 hit; 5 miss -> [5,2,3,4] next 1; 2 hit; 3 hit.
    # Round-robin: 5 misses, 3 hits.
    # LRU for comparison: 1 hit makes 2 the LRU; 5 evicts 2; 2 misses (evicts 3);
    # 3 misses -> 7 misses, 1 hit.
    c = run("kvm-paravirt", [("cr3", a) for a in (1, 2, 3, 4, 1, 5, 2, 3)])
    assert c["cr3_cache_miss"] == 5
    assert c["cr3_cache_hit"] == 3
    assert c["exit_cr3"] == 5


def test_trunk_has_no_cache_every_switch_exits(run):
    # cr3_cache_size = 0 in trunk: no lookup, 2 spaces x 5 rounds = 10 exits.
    c = run("kvm-trunk", switches(2, 5))
    assert c["cr3_cache_lookup"] == 0
    assert c["exit_cr3"] == 10
    assert c["shadow_root_alloc"] == 2
    assert c["shadow_root_hit"] == 8


# --- a freed shadow root takes its cache entry with it ----------------------------

def test_root_eviction_invalidates_cache_entry(run, vary):
    # Pool of 3 shadow pages, only roots in it (no touches). LRU order, oldest first.
    # cr3 1: miss, exit; pool [1R];        cache [1,-,-,-] next 1
    # cr3 2: miss, exit; pool [1R,2R];     cache [1,2,-,-] next 2
    # cr3 3: miss, exit; pool [1R,2R,3R];  cache [1,2,3,-] next 3
    # cr3 4: miss, exit; pool full: evict 1R (zap 1) -> invalidate 1
    #        pool [2R,3R,4R];              cache [-,2,3,4] next 0
    # cr3 1: miss (1 was invalidated), exit; evict 2R (zap 2) -> invalidate 2
    #        pool [3R,4R,1R];              cache [1,-,3,4] next 1
    # cr3 3: hit, no exit; pool [4R,1R,3R]
    # cr3 2: miss, exit; evict 4R (zap 3) -> invalidate 4
    #        pool [1R,3R,2R];              cache [1,2,3,-] next 2
    mode = vary("kvm-paravirt", shadow_pool_pages=3)
    c = run(mode, [("cr3", a) for a in (1, 2, 3, 4, 1, 3, 2)])
    assert c["cr3_cache_lookup"] == 7
    assert c["cr3_cache_hit"] == 1
    assert c["cr3_cache_miss"] == 6
    assert c["exit_cr3"] == 6
    assert c["shadow_root_alloc"] == 6
    assert c["shadow_root_hit"] == 0
    assert c["shadow_page_zap"] == 3


def test_same_switches_with_a_big_pool_hit_three_times(run):
    # Same sequence, 2048-page pool: 1 2 3 4 miss -> [1,2,3,4]; then 1, 3, 2 all hit.
    c = run("kvm-paravirt", [("cr3", a) for a in (1, 2, 3, 4, 1, 3, 2)])
    assert c["cr3_cache_miss"] == 4
    assert c["cr3_cache_hit"] == 3
    assert c["exit_cr3"] == 4
    assert c["shadow_page_zap"] == 0


def test_table_eviction_does_not_touch_the_cache(run, vary):
    # Pool of 3; only a freed root invalidates a cache entry, a freed page table does not.
    # Keys: nR = root of space n, nT = table (n, 0x20) (vpn 0x08048), 2U = table (2, 0x100).
    # cr3 1: miss, exit; pool [1R];                       cache [1,-,-,-] next 1
    # touch 0x08048: 1T alloc, shadow fault;              pool [1R,1T]
    # cr3 2: miss, exit;                                  pool [1R,1T,2R]; cache [1,2,-,-] next 2
    # touch 0x08048: 2T alloc, fault; evict 1R (zap 1)    pool [1T,2R,2T]; cache [-,2,-,-]
    # touch 0x40000: 2U alloc, fault; evict 1T (zap 2)    pool [2R,2T,2U]
    # cr3 2: hit, no exit; 2R used                        pool [2T,2U,2R]
    # cr3 1: miss, exit; 1R alloc, evict 2T (zap 3)       pool [2U,2R,1R]; cache [-,2,1,-] next 3
    # cr3 2: hit: space 2 lost a table, not its root, so its entry is still valid
    mode = vary("kvm-paravirt", shadow_pool_pages=3)
    c = run(mode, [
        ("cr3", 1), ("touch", 0x08048),
        ("cr3", 2), ("touch", 0x08048), ("touch", 0x40000),
        ("cr3", 2), ("cr3", 1), ("cr3", 2),
    ])
    assert c["cr3_cache_lookup"] == 5
    assert c["cr3_cache_hit"] == 2
    assert c["cr3_cache_miss"] == 3
    assert c["exit_cr3"] == 3
    assert c["shadow_page_zap"] == 3
    assert c["shadow_root_alloc"] == 3     # 1R, 2R, 1R again
    assert c["shadow_page_alloc"] == 3     # 1T, 2T, 2U
    assert c["exit_shadow_fault"] == 3     # one per touch, every table new
