"""The hardware TLB: LRU capacity, global entries across mov cr3, whole flushes on VM exits.

K is the first kernel (global) page, 0xC0000. User page 0x08048 lives in shadow table
(space, 0x20), kernel pages K, K+1 in the global table (GLOBAL, 0x300).
"""
from __future__ import annotations

from replay.tlb import Tlb
from tests.replay.conftest import K


# --- the TLB on its own -------------------------------------------------------------

def test_lru_capacity_eviction():
    t = Tlb(2)
    assert not t.access(1, False)   # miss, [1]
    assert not t.access(2, False)   # miss, [1, 2]
    assert t.access(1, False)       # hit,  [2, 1] (1 now most recent)
    assert not t.access(3, False)   # miss, full: evict LRU 2 -> [1, 3]
    assert t.access(1, False)       # hit,  [3, 1]
    assert not t.access(2, False)   # miss, evict 3 -> [1, 2]
    assert not t.access(3, False)   # miss, evict 1 -> [2, 3]
    assert t.access(2, False)       # hit


def test_flush_keep_global_and_full_flush():
    t = Tlb(8)
    t.access(0x100, False)
    t.access(K, True)
    t.flush(keep_global=True)       # mov cr3: the global K stays, 0x100 goes
    assert t.access(K, True)
    assert not t.access(0x100, False)
    t.flush(keep_global=False)      # VM exit without VPID: everything goes
    assert not t.access(K, True)


def test_invalidate_one_page():
    t = Tlb(8)
    t.access(1, False)
    t.access(2, False)
    t.invalidate(1)                  # invlpg 1
    assert not t.access(1, False)
    assert t.access(2, False)
    t.invalidate(99)                 # not present: no effect, no error


# --- native -------------------------------------------------------------------------

def test_native_keeps_global_entries_across_cr3_writes(run):
    # cr3 1; touch K: miss; touch 0x100: miss           -> TLB {K, 0x100}
    # cr3 2: flush non-global                            -> TLB {K}
    # touch K: hit; touch 0x100: miss                    -> 3 misses in all
    c = run("native", [("cr3", 1), ("touch", K), ("touch", 0x100),
                       ("cr3", 2), ("touch", K), ("touch", 0x100)])
    assert c["tlb_miss_native"] == 3
    assert c["tlb_miss"] == 0            # only shadow modes keep a second TLB
    assert c["tlb_refill_extra"] == 0


def test_native_lru_capacity_on_a_tiny_tlb(run):
    # 2-entry TLB, one address space: 1 2 1 3 1 2 (as the Tlb unit test above)
    # misses: 1, 2, 3, 2 = 4.
    from replay.mode import Mode, Paging
    mode = Mode(name="native-2", paging=Paging.NATIVE, tlb_entries=2)
    c = run(mode, [("cr3", 1)] + [("touch", v) for v in (1, 2, 1, 3, 1, 2)])
    assert c["tlb_miss_native"] == 4


# --- shadow modes: exits flush the TLB --------------------------------------------

KERNEL_TWICE = [
    ("cr3", 1),
    ("touch", K), ("touch", K + 1),
    ("io", 0x70, 1),                 # CMOS index port: exit_io in every KVM mode
    ("touch", K), ("touch", K + 1),
]


def test_any_exit_flushes_global_entries_without_vpid(run):
    # kvm-trunk. Native TLB: K miss, K+1 miss, (io: nothing), K hit, K+1 hit = 2 misses.
    # Trunk TLB:
    #   cr3 1: exit_cr3 (flush; empty anyway)
    #   touch K: global table alloc, shadow PTE missing -> exit_shadow_fault (flush); miss
    #   touch K+1: same table, PTE missing -> exit_shadow_fault (flush drops K); miss
    #   io 0x70: exit_io (flush drops K+1)
    #   touch K: shadow PTE present, no exit; TLB miss
    #   touch K+1: likewise; miss
    # tlb_miss = 4, tlb_miss_native = 2, tlb_refill_extra = 2.
    c = run("kvm-trunk", KERNEL_TWICE)
    assert c["exit_shadow_fault"] == 2
    assert c["exit_io"] == 1
    assert c["tlb_miss"] == 4
    assert c["tlb_miss_native"] == 2
    assert c["tlb_refill_extra"] == 2


def test_no_flush_on_exit_means_no_extra_refills(run, vary):
    # Same trace, tlb_flush_on_exit = false (VPID): the exits leave the TLB alone.
    # Trunk TLB: K miss, K+1 miss, K hit, K+1 hit = 2 = native's 2.
    c = run(vary("kvm-trunk", tlb_flush_on_exit=False), KERNEL_TWICE)
    assert c["exit_shadow_fault"] == 2      # the exits still happen
    assert c["tlb_miss"] == 2
    assert c["tlb_refill_extra"] == 0


def test_no_flush_on_exit_still_flushes_user_entries_on_cr3(run, vary):
    # Untagged TLB: a mov cr3 that exits must still drop the old space's entries.
    # cr3 1; touch 0x100 (space 1): miss (both TLBs)
    # cr3 2 (exits, but tlb_flush_on_exit = false): non-global entries dropped anyway
    # touch 0x100 (space 2): miss in both TLBs -> tlb_miss 2, native 2, extra 0.
    # (A model that skipped this flush would hit on space 1's stale translation and
    # report tlb_refill_extra = -1.)
    c = run(vary("kvm-trunk", tlb_flush_on_exit=False),
            [("cr3", 1), ("touch", 0x100), ("cr3", 2), ("touch", 0x100)])
    assert c["tlb_miss"] == 2
    assert c["tlb_miss_native"] == 2
    assert c["tlb_refill_extra"] == 0


CACHE_HIT_KEEPS_KERNEL = [
    ("cr3", 1), ("cr3", 2), ("cr3", 1),
    ("touch", 0x100), ("touch", K),
    ("cr3", 2),
    ("touch", K), ("touch", 0x200),
]


def test_paravirt_cache_hit_keeps_global_entries_like_native(run):
    # Native TLB: 0x100 miss, K miss; cr3 2 keeps K; K hit, 0x200 miss -> 3 misses.
    # kvm-paravirt:
    #   cr3 1, cr3 2: misses, exits (flush); cache [1, 2]
    #   cr3 1: hit, no exit; non-global flush only
    #   touch 0x100: table (1,0) new -> shadow fault exit (flush); miss; TLB {0x100}
    #   touch K: global table new -> shadow fault exit (flush); miss; TLB {K}
    #   cr3 2: hit, no exit: TLB keeps the global K
    #   touch K: shadow PTE present, no exit; TLB hit
    #   touch 0x200: table (2,0) new -> fault exit; miss
    # tlb_miss = 3 = native's 3: extra 0.
    c = run("kvm-paravirt", CACHE_HIT_KEEPS_KERNEL)
    assert c["cr3_cache_hit"] == 2
    assert c["exit_cr3"] == 2
    assert c["exit_shadow_fault"] == 3
    assert c["tlb_miss"] == 3
    assert c["tlb_miss_native"] == 3
    assert c["tlb_refill_extra"] == 0


def test_trunk_cr3_exit_loses_global_entries(run):
    # Same trace in kvm-trunk: the second "cr3 2" exits and flushes K, so "touch K"
    # misses (native hits): tlb_miss 4, native 3, extra 1.
    c = run("kvm-trunk", CACHE_HIT_KEEPS_KERNEL)
    assert c["exit_cr3"] == 4
    assert c["exit_shadow_fault"] == 3
    assert c["tlb_miss"] == 4
    assert c["tlb_miss_native"] == 3
    assert c["tlb_refill_extra"] == 1


def test_invlpg_in_trunk_is_not_trapped(run):
    # kvm-trunk (write-protected guest tables, invlpg not intercepted): cr3 1; touch 0x100:
    # shadow fault, TLB miss, native miss; invlpg 0x100: no exit, both TLBs drop 0x100;
    # touch 0x100: shadow PTE still there (no fault), TLB miss, native miss.
    # exit_invlpg 0, shadow faults 1, tlb_miss 2, native 2, extra 0.
    c = run("kvm-trunk", [("cr3", 1), ("touch", 0x100), ("invlpg", 0x100), ("touch", 0x100)])
    assert c["exit_invlpg"] == 0
    assert c["exit_shadow_fault"] == 1
    assert (c["tlb_miss"], c["tlb_miss_native"], c["tlb_refill_extra"]) == (2, 2, 0)


def test_invlpg_in_upstream_exits_and_zaps_the_shadow_pte(run):
    # kvm-upstream (2.6.20 paging_inval_page): same trace; invlpg exits and clears the
    # shadow PTE of 0x100, so the second touch faults again: 2 shadow faults, 1 invlpg exit.
    c = run("kvm-upstream", [("cr3", 1), ("touch", 0x100), ("invlpg", 0x100), ("touch", 0x100)])
    assert c["exit_invlpg"] == 1
    assert c["exit_shadow_fault"] == 2
    assert (c["tlb_miss"], c["tlb_miss_native"], c["tlb_refill_extra"]) == (2, 2, 0)
