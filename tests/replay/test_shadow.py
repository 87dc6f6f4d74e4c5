"""Shadow paging: upstream (dropped on every switch) vs trunk (kept, bounded LRU pool),
and the guest page fault sequence (3 exits upstream, 2 in trunk).

Pages used: user 0x08048, 0x08049, 0x0804A (one guest table, index 0x20) and kernel
K, K+1 (global table (GLOBAL, 0x300)). 0x40000 is the first page of table 0x100.
"""
from __future__ import annotations

import pytest

from replay.shadow import GLOBAL_SPACE, ROOT, ShadowPool, table_of
from tests.replay.conftest import K

USER = (0x08048, 0x08049, 0x0804A)   # k = 3 user pages, one table
KERNEL = (K, K + 1)                  # g = 2 kernel pages, one global table


# --- the pool on its own ----------------------------------------------------------

def test_table_of():
    assert table_of(1, 0x08048) == (1, 0x20)      # 0x08048 >> 10 = 0x20
    assert table_of(GLOBAL_SPACE, K) == (GLOBAL_SPACE, 0x300)
    assert table_of(1, 0x003FF) == table_of(1, 0x00000) != table_of(1, 0x00400)


def test_pool_lru_eviction_and_ptes():
    p = ShadowPool(2)
    assert p.use((1, ROOT)) == (False, [])           # [1R]
    assert p.use((1, 0x20)) == (False, [])           # [1R, 1T]
    assert p.fill_pte((1, 0x20), 0x08048) is True    # missing: a shadow fault
    assert p.fill_pte((1, 0x20), 0x08048) is False   # now present
    assert p.use((1, ROOT)) == (True, [])            # [1T, 1R]
    assert p.use((2, ROOT)) == (False, [(1, 0x20)])  # full: evict LRU 1T -> [1R, 2R]
    assert not p.is_shadowed((1, 0x20))
    assert p.use((1, 0x20)) == (False, [(1, ROOT)])  # re-created empty, evicts 1R
    assert p.fill_pte((1, 0x20), 0x08048) is True    # its PTEs went with it
    p.drop_pte((1, 0x20), 0x08048)
    assert p.fill_pte((1, 0x20), 0x08048) is True
    assert len(p) == 2


def test_drop_spaces_except_keeps_global():
    p = ShadowPool(8)
    for key in [(1, ROOT), (1, 0x20), (GLOBAL_SPACE, 0x300), (2, ROOT)]:
        p.use(key)
    assert sorted(p.drop_spaces_except(GLOBAL_SPACE)) == sorted([(1, ROOT), (1, 0x20), (2, ROOT)])
    assert len(p) == 1 and p.is_shadowed((GLOBAL_SPACE, 0x300))


@pytest.mark.parametrize("capacity", [0, 1])
def test_pool_needs_two_pages(capacity):
    with pytest.raises(ValueError, match="at least 2"):
        ShadowPool(capacity)


# --- upstream vs trunk across context switches --------------------------------------

def two_tasks(quanta: int) -> list[tuple]:
    """Tasks 1 and 2 alternate; each quantum: cr3, touch the 3 user pages, the 2 kernel pages."""
    rows: list[tuple] = []
    for q in range(quanta):
        rows.append(("cr3", 1 + q % 2))
        rows += [("touch", v) for v in USER + KERNEL]
    return rows


def test_upstream_refaults_every_user_page_after_each_switch(run):
    # N = 6 quanta, k = 3 user pages, g = 2 kernel pages.
    # Every cr3 write drops all non-global shadow pages (root + the user table), so each
    # quantum re-faults its 3 user pages; the global table survives: kernel faults once.
    # exit_shadow_fault = N*k + g = 18 + 2 = 20
    # shadow_root_alloc = 6 (one per switch), shadow_page_alloc = 6 user tables + 1 global = 7
    # shadow_page_zap: the first cr3 finds nothing; each of the other 5 drops root + table: 10
    c = run("kvm-upstream", two_tasks(6))
    assert c["exit_cr3"] == 6
    assert c["exit_shadow_fault"] == 20
    assert c["shadow_root_alloc"] == 6
    assert c["shadow_root_hit"] == 0
    assert c["shadow_page_alloc"] == 7
    assert c["shadow_page_zap"] == 10


def test_trunk_faults_once_per_task_while_the_pool_holds(run):
    # Same trace; trunk keeps shadow pages (2048-page pool, 5 in use).
    # Faults: task 1's 3 user pages + 2 kernel pages in quantum 1, task 2's 3 user pages
    # in quantum 2, none after: 2k + g = 8.
    # Roots: 2 allocated, the other 4 switches find theirs (shadow_root_hit 4).
    # Tables: (1,0x20), (2,0x20), (GLOBAL,0x300) = 3; nothing zapped.
    c = run("kvm-trunk", two_tasks(6))
    assert c["exit_cr3"] == 6
    assert c["exit_shadow_fault"] == 8
    assert c["shadow_root_alloc"] == 2
    assert c["shadow_root_hit"] == 4
    assert c["shadow_page_alloc"] == 3
    assert c["shadow_page_zap"] == 0


SMALL_WS = [row for q in range(4)
            for row in (("cr3", 1 + q % 2), ("touch", 0x08048), ("touch", K))]


def test_trunk_pool_smaller_than_working_set_faults_again(run, vary):
    # Working set: 1R, 1T=(1,0x20), 2R, 2T=(2,0x20), G=(GLOBAL,0x300): 5 pages; pool 4.
    # Quantum = cr3 n, touch 0x08048, touch K. LRU order, oldest first:
    # Q1 cr3 1: 1R alloc                      [1R]
    #    touch: 1T alloc, fault               [1R,1T]
    #    touch K: G alloc, fault              [1R,1T,G]
    # Q2 cr3 2: 2R alloc                      [1R,1T,G,2R]
    #    touch: 2T alloc, evict 1R, fault     [1T,G,2R,2T]
    #    touch K: G hit, no fault             [1T,2R,2T,G]
    # Q3 cr3 1: 1R alloc, evict 1T            [2R,2T,G,1R]
    #    touch: 1T alloc, evict 2R, fault     [2T,G,1R,1T]
    #    touch K: G hit                       [2T,1R,1T,G]
    # Q4 cr3 2: 2R alloc, evict 2T            [1R,1T,G,2R]
    #    touch: 2T alloc, evict 1R, fault     [1T,G,2R,2T]
    #    touch K: G hit                       [1T,2R,2T,G]
    # faults 2+1+1+1 = 5, zaps 0+1+2+2 = 5, root allocs 4 (no root hit),
    # table allocs 2+1+1+1 = 5.
    c = run(vary("kvm-trunk", shadow_pool_pages=4), SMALL_WS)
    assert c["exit_cr3"] == 4
    assert c["exit_shadow_fault"] == 5
    assert c["shadow_page_zap"] == 5
    assert c["shadow_root_alloc"] == 4
    assert c["shadow_root_hit"] == 0
    assert c["shadow_page_alloc"] == 5


def test_trunk_pool_that_fits_the_working_set(run, vary):
    # Pool 5 = the working set: Q1 2 faults, Q2 1 fault, then none.
    # Roots: Q1, Q2 alloc; Q3, Q4 hit. No zaps.
    c = run(vary("kvm-trunk", shadow_pool_pages=5), SMALL_WS)
    assert c["exit_shadow_fault"] == 3
    assert c["shadow_page_zap"] == 0
    assert c["shadow_root_alloc"] == 2
    assert c["shadow_root_hit"] == 2


def test_upstream_with_a_tiny_pool_still_keeps_kernel_pages(run, vary):
    # Upstream, pool 4, SMALL_WS: each cr3 drops everything non-global, so the pool holds
    # at most nR, nT, G = 3 pages: never full. Faults: Q1 2 (user + kernel), Q2..Q4 1 each
    # = 5; zaps: Q2..Q4 drop 2 each = 6.
    c = run(vary("kvm-upstream", shadow_pool_pages=4), SMALL_WS)
    assert c["exit_shadow_fault"] == 5
    assert c["shadow_page_zap"] == 6
    assert c["shadow_root_alloc"] == 4


# --- guest page faults: page_fault, pte_write, touch ------------------------------------

# The table (1, 0x20) is already shadowed (0x08048 touched first), so the guest's write
# of 0x08049's PTE traps.
FAULT_IN_SHADOWED_TABLE = [
    ("cr3", 1), ("touch", 0x08048, 1),
    ("pf", 0x08049, 1), ("pte", 0x08049), ("touch", 0x08049, 1),
]


def test_upstream_guest_fault_costs_three_exits(run):
    # Warm-up: exit_cr3 1, shadow fault 1 (0x08048).
    # Fault: exit_guest_pf 1; pte_write on a shadowed table: exit_pte_write 1 (the shadow
    # PTE is not updated); touch 0x08049: shadow PTE missing -> shadow fault: 3 exits.
    c = run("kvm-upstream", FAULT_IN_SHADOWED_TABLE)
    assert c["exit_guest_pf"] == 1
    assert c["exit_pte_write"] == 1
    assert c["exit_shadow_fault"] == 1 + 1


def test_trunk_guest_fault_costs_two_exits(run):
    # Fault: exit_guest_pf 1; exit_pte_write 1, and the emulated write fills the shadow
    # PTE; touch 0x08049: present, no exit: 2 exits. Only the warm-up shadow fault.
    c = run("kvm-trunk", FAULT_IN_SHADOWED_TABLE)
    assert c["exit_guest_pf"] == 1
    assert c["exit_pte_write"] == 1
    assert c["exit_shadow_fault"] == 1


# Fresh 4 MiB region: table (1, 0x100) has never been shadowed, so it is not
# write-protected and the guest's PTE write does not trap.
FAULT_IN_UNSHADOWED_TABLE = [
    ("cr3", 1), ("pf", 0x40000, 1), ("pte", 0x40000), ("touch", 0x40000, 1),
]


@pytest.mark.parametrize("mode", ["kvm-upstream", "kvm-trunk", "kvm-paravirt"])
def test_pte_write_to_unshadowed_table_does_not_trap(run, mode):
    # exit_guest_pf 1; pte_write: no exit; touch: table allocated, PTE missing ->
    # shadow fault 1. 2 exits in every shadow mode (plus the cr3 exit).
    c = run(mode, FAULT_IN_UNSHADOWED_TABLE)
    assert c["exit_guest_pf"] == 1
    assert c["exit_pte_write"] == 0
    assert c["exit_shadow_fault"] == 1
    assert c["shadow_page_alloc"] == 1
    assert c["exit_cr3"] == 1


def test_upstream_pte_write_after_a_switch_does_not_trap(run):
    # Upstream drops (1, 0x20) on the switch to 2 and back, so the table is no longer
    # write-protected when task 1 writes the PTE:
    # cr3 1; touch 0x08048: fault (table shadowed); cr3 2 (drop); cr3 1 (drop);
    # pte 0x08049: table not shadowed -> no exit. Trunk kept the table: 1 exit.
    rows = [("cr3", 1), ("touch", 0x08048), ("cr3", 2), ("cr3", 1), ("pte", 0x08049)]
    assert run("kvm-upstream", rows)["exit_pte_write"] == 0
    assert run("kvm-trunk", rows)["exit_pte_write"] == 1


@pytest.mark.parametrize("mode", ["native", "qemu"])
def test_no_shadow_state_outside_shadow_paging(run, mode):
    # Native and qemu keep no shadow pool: no shadow drivers, no pte_write exits.
    c = run(mode, FAULT_IN_SHADOWED_TABLE)
    for name in ("exit_shadow_fault", "exit_pte_write", "exit_guest_pf",
                 "shadow_root_alloc", "shadow_page_alloc", "shadow_page_zap"):
        assert c[name] == 0, name
