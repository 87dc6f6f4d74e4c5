"""Attribution: every count lands on the event (kind, address space, device) that caused it.

Each expected split below is worked out by hand from the rows, as in test_modes_seed.py, and
holds for the oracle and for the compiled kernel's attribution (the `by_source` fixture).
"""
from __future__ import annotations

from replay.counts import Counts
from replay.kinds import Kind
from replay.reference import BUSY, replay
from tests.replay.conftest import GUEST, K, make_events

CR3, TOUCH, IO, MMIO, HLT = (int(k) for k in (Kind.CR3_WRITE, Kind.TOUCH, Kind.IO, Kind.MMIO, Kind.HLT))


def test_trunk_exits_land_on_their_events(by_source, modes):
    rows = [("cr3", 1), ("touch", 0x08048), ("io", 0x80, 1),
            ("cr3", 2), ("touch", 0x08048), ("io", 0x21, 0), ("hlt", 700)]
    by = by_source(make_events(rows), GUEST, modes["kvm-trunk"])
    # cr3 1 and cr3 2: each exits and allocates its root; the CR3 write is that space's.
    for space in (1, 2):
        c = by[(CR3, space, -1)]
        assert (c["exit_cr3"], c["shadow_root_alloc"], c["cr3_writes"], c["events"]) == (1, 1, 1, 1)
    # each space's first touch of 0x08048 allocates its page table and takes a hidden fault
    for space in (1, 2):
        c = by[(TOUCH, space, -1)]
        assert (c["shadow_page_alloc"], c["exit_shadow_fault"]) == (1, 1)
    # port I/O exits are split by port (and by the space the guest was in)
    assert by[(IO, 1, 0x80)]["exit_io"] == 1
    assert by[(IO, 2, 0x21)]["exit_io"] == 1
    # hlt: device -1, idle time on the same source
    assert by[(HLT, 2, -1)]["exit_hlt"] == 1 and by[(HLT, 2, -1)]["idle_ns"] == 700
    assert BUSY not in by  # KVM runs guest code natively: nothing is "busy time"


def test_paravirt_dropped_port_is_attributed_as_avoided(by_source, modes):
    rows = [("cr3", 1), ("io", 0x80, 1), ("io", 0x80, 0), ("io", 0x21, 0), ("io", 0x21, 1)]
    by = by_source(make_events(rows), GUEST, modes["kvm-paravirt"])
    # both 0x80 accesses vanish; the 0x21 read (dummy IMR read) vanishes, the write exits
    assert by[(IO, 1, 0x80)] == Counts({"native_io_avoided": 2, "events": 2})
    assert by[(IO, 1, 0x21)] == Counts({"native_io_avoided": 1, "exit_io": 1, "events": 2})


def test_eviction_is_charged_to_the_event_that_evicted(by_source, modes, vary):
    # A 2-page pool: cr3 1 allocates root (1,ROOT) [1 page]; touch in 1 allocates (1,0x08) [2];
    # cr3 2 must evict the LRU page (1,ROOT) to build root 2: that zap is cr3 2's.
    rows = [("cr3", 1), ("touch", 0x08048), ("cr3", 2)]
    by = by_source(make_events(rows), GUEST, vary("kvm-trunk", shadow_pool_pages=2))
    assert by[(CR3, 2, -1)]["shadow_page_zap"] == 1
    assert by[(CR3, 1, -1)]["shadow_page_zap"] == 0


def test_qemu_busy_time_is_its_own_source(by_source, modes):
    rows = [("cr3", 1), ("touch", 0x08048), ("hlt", 300)]
    by = by_source(make_events(rows, span_ns=1_000), GUEST, modes["qemu"])
    # translated code runs for the busy part of the span: 1000 - 300 idle ns
    assert by[BUSY] == Counts({"emulated_ns": 700})
    assert by[(TOUCH, 1, -1)]["softmmu_fill"] == 1


def test_extra_tlb_refills_land_on_the_touch_that_refills(by_source, modes):
    # kernel page K is global: natively it survives the CR3 write, under KVM the exit
    # on cr3 2 flushes the whole TLB (no VPID), so touching K again in space 2 refills.
    rows = [("cr3", 1), ("touch", K), ("cr3", 2), ("touch", K)]
    by = by_source(make_events(rows), GUEST, modes["kvm-trunk"])
    assert by[(TOUCH, 1, -1)]["tlb_refill_extra"] == 0  # cold in both TLBs
    assert by[(TOUCH, 2, -1)]["tlb_refill_extra"] == 1


def test_ept_walks_land_on_the_touches_that_miss(by_source, modes):
    rows = [("cr3", 1), ("touch", K), ("cpuid", 1), ("cr3", 2), ("touch", K), ("touch", 0x08048)]
    by = by_source(make_events(rows), GUEST, modes["kvm-ept"])
    # Space 1's touch of K: cold in both TLBs, one 2-D walk. The cpuid exit flushes the TLB
    # (no VPID); cr3 2 drops non-global entries. Space 2: K hits natively (global) but misses
    # after the flush (extra 1); 0x08048 misses in both. Every miss is a walk. No CR3 exits.
    assert by[(TOUCH, 1, -1)] == Counts({"events": 1, "tlb_miss": 1, "tlb_miss_native": 1, "tdp_walk_extra": 1})
    assert by[(TOUCH, 2, -1)] == Counts({"events": 2, "tlb_miss": 2, "tlb_miss_native": 1,
                                         "tlb_refill_extra": 1, "tdp_walk_extra": 2})
    assert by[(CR3, 2, -1)] == Counts({"events": 1, "cr3_writes": 1})


def test_fast_cr3_switches_land_on_their_space(by_source, modes):
    rows = [("cr3", 1), ("cr3", 2), ("cr3", 1), ("cr3", 2)]
    by = by_source(make_events(rows), GUEST, modes["kvm-shadow-prevroots"])
    # Each space's first switch builds its root (slow exit); the second finds it held (fast).
    for space in (1, 2):
        assert by[(CR3, space, -1)] == Counts({"events": 2, "cr3_writes": 2, "exit_cr3": 1,
                                               "exit_cr3_fast": 1, "shadow_root_alloc": 1})


def test_mmio_is_split_by_address(by_source, modes):
    rows = [("cr3", 1), ("mmio", 0xFED000F0, 0), ("mmio", 0xFED000F0, 0), ("mmio", 0xFED00100, 1)]
    by = by_source(make_events(rows), GUEST, modes["kvm-pv-modern"])
    # kvmclock: both HPET counter reads are no longer made; the timer's configuration write exits.
    assert by[(MMIO, 1, 0xFED000F0)] == Counts({"events": 2, "native_mmio_avoided": 2})
    assert by[(MMIO, 1, 0xFED00100)] == Counts({"events": 1, "exit_mmio": 1})


def test_sources_sum_to_the_totals(by_source, modes):
    rows = [("cr3", 1), ("touch", 0x08048, 1), ("pte", 0x08049), ("pf", 0x0804A, 1),
            ("io", 0x80, 1), ("irq", 0x20), ("cr3", 2), ("touch", K), ("mmio", 0xFEC00000, 1), ("hlt", 50)]
    events = make_events(rows)
    for name, mode in modes.items():
        by = by_source(events, GUEST, mode)
        assert sum(c["events"] for c in by.values()) == len(rows), name
        total = replay(events, GUEST, mode)
        for driver in ("exit_io", "exit_cr3", "shadow_page_alloc", "native_io_avoided"):
            assert sum(c[driver] for c in by.values()) == total[driver], (name, driver)
