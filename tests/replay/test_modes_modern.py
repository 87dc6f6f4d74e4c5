"""The modes after 2007 as loaded from configs/modes: kvm-shadow-prevroots, kvm-ept,
kvm-ept-vpid and kvm-pv-modern. Every count is worked out by hand in the comments;
the properties at the end compare each mode with the seed mode it refines.
"""
from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.counts import DRIVERS, Counts
from replay.kinds import Kind
from replay.mode import Paging
from tests.replay.conftest import K
from tests.replay.test_modes_seed import COMMON, QUANTUM_TRACE
from tests.replay.strategies import KERNEL, USER, examples, span_of, trace_rows

MODERN = ["kvm-shadow-prevroots", "kvm-ept", "kvm-ept-vpid", "kvm-pv-modern"]
TDP = ["kvm-ept", "kvm-ept-vpid", "kvm-pv-modern"]
SETTINGS = examples(300)
traces = trace_rows(USER + KERNEL, max_size=80)


# --- the mode files, as read by hand ----------------------------------------------------

def test_modern_modes_follow_the_seed_in_report_order(modes):
    # order keys 60, 70, 80, 90 after the seed's 10..50 (then today's KVM, 100..130)
    assert list(modes)[5:9] == MODERN


def test_modern_mode_state(modes):
    trunk, prev = modes["kvm-trunk"], modes["kvm-shadow-prevroots"]
    # prevroots = trunk + an LRU of 3 previous roots, nothing else.
    assert dataclasses.replace(trunk, name=prev.name, prev_roots=3) == prev
    ept, vpid, pv = (modes[n] for n in TDP)
    assert ept.paging is vpid.paging is pv.paging is Paging.TDP
    # EPT no longer traps CR3 writes, guest page faults or invlpg; the rest still exit.
    assert ept.on_event == {k: d for k, d in trunk.on_event.items()
                            if k not in (Kind.CR3_WRITE, Kind.PAGE_FAULT)}
    assert Kind.INVLPG not in ept.on_event
    assert (ept.tlb_flush_on_exit, vpid.tlb_flush_on_exit, pv.tlb_flush_on_exit) == (True, False, False)
    assert dataclasses.replace(ept, name=vpid.name, tlb_flush_on_exit=False) == vpid
    assert pv.on_event == vpid.on_event and pv.cr3_cache_size == 0
    assert pv.dropped_io_ports == frozenset({0x80})
    assert pv.dropped_io_reads == frozenset({0x40, 0x41, 0x42})
    assert pv.dropped_io_writes == frozenset({0x43, 0x20, 0xA0})
    assert pv.dropped_mmio_reads == frozenset({0xFED000F0, 0xFED000F4})
    assert pv.dropped_mmio_writes == frozenset({0xFEE000B0})


# --- one event of each kind, alone ----------------------------------------------------

# kind -> (value, arg), the driver under kvm-shadow-prevroots (as trunk) and under the TDP modes.
ONE_EVENT = {
    "page_fault": ((0x08048, 1), "exit_guest_pf", None),
    "pte_write":  ((0x08048, 0), None, None),        # no shadowed table yet: no trap either way
    "invlpg":     ((0x08048, 0), None, None),
    "io":         ((0x60, 0), "exit_io", "exit_io"),  # keyboard port: no PV feature drops it
    "mmio":       ((0xFEC00000, 1), "exit_mmio", "exit_mmio"),
    "irq":        ((0x20, 0), "exit_irq", "exit_irq"),
    "hlt":        ((500, 0), "exit_hlt", "exit_hlt"),
    "cpuid":      ((1, 0), "exit_cpuid", "exit_cpuid"),
    "msr":        ((0x10, 0), "exit_msr", "exit_msr"),
    "hypercall":  ((0, 0), "exit_hypercall", "exit_hypercall"),
    "syscall":    ((3, 0), None, None),
}


@pytest.mark.parametrize("kind", list(ONE_EVENT))
@pytest.mark.parametrize("mode", MODERN)
def test_one_event_causes_exactly_its_driver(run, mode, kind):
    (value, arg), shadow, tdp = ONE_EVENT[kind]
    expected = shadow if mode == "kvm-shadow-prevroots" else tdp
    c = run(mode, [(kind, value, arg)])
    priced = {n: v for n, v in c.values.items() if n in DRIVERS and v}
    assert priced == ({expected: 1} if expected else {})


@pytest.mark.parametrize("mode", TDP)
def test_a_cr3_write_alone_costs_nothing_under_tdp(run, mode):
    assert run(mode, [("cr3", 1)]) == Counts({"events": 1, "cr3_writes": 1})


# --- one small trace, every count, every modern mode ---------------------------------

# QUANTUM_TRACE (test_modes_seed.py): 4 quanta alternating tasks 1 and 2; each: cr3 n, touch
# user 0x08048, touch kernel K, port 0x80 out, a syscall. Then hlt 1000 ns.
EXPECTED = {
    # As trunk, but CR3 writes 3 and 4 find roots 1 and 2 among the held roots:
    # Q1 cr3 1: miss, exit, root 1 built; held [1]. Q2 cr3 2: miss, exit, root 2 built;
    # held [2, 1]. Q3 cr3 1, Q4 cr3 2: fast switches (no shadow_root_hit: no lookup in the pool).
    # Tables, faults and the TLB as trunk: 3 tables, 3 faults; every quantum has a CR3 exit
    # (fast or not) and a port exit, so both touches always miss: 8; native 5: extra 3.
    "kvm-shadow-prevroots": {"exit_cr3": 2, "exit_cr3_fast": 2, "exit_io": 4, "exit_hlt": 1,
                             "shadow_root_alloc": 2, "shadow_page_alloc": 3, "exit_shadow_fault": 3,
                             "tlb_miss": 8, "tlb_miss_native": 5, "tlb_refill_extra": 3},
    # EPT: no CR3 exits, no shadow state. Port 0x80 still exits (4) and flushes the TLB (no
    # VPID), so in every quantum the user page (non-global, gone at the CR3 write anyway) and
    # the kernel page (global, but flushed by the previous quantum's port exit) miss: 8;
    # native 5: extra 3. Every miss is a 2-D walk: 8. hlt exits once.
    "kvm-ept": {"exit_io": 4, "exit_hlt": 1,
                "tlb_miss": 8, "tlb_miss_native": 5, "tlb_refill_extra": 3, "tdp_walk_extra": 8},
    # VPID: the port exits keep the TLB, so it misses exactly as native's: 5, extra 0; 5 walks.
    "kvm-ept-vpid": {"exit_io": 4, "exit_hlt": 1,
                     "tlb_miss": 5, "tlb_miss_native": 5, "tdp_walk_extra": 5},
    # PV: the 4 port-0x80 delays are not made at all; the TLB as with VPID.
    "kvm-pv-modern": {"native_io_avoided": 4, "exit_hlt": 1,
                      "tlb_miss": 5, "tlb_miss_native": 5, "tdp_walk_extra": 5},
}


@pytest.mark.parametrize("mode", MODERN)
def test_quantum_trace_every_count(run, mode):
    c = run(mode, QUANTUM_TRACE, span_ns=10_000)
    assert c == Counts({**COMMON, **EXPECTED[mode]})


# --- EPT and VPID -----------------------------------------------------------------------

def test_ept_switch_does_not_exit_and_the_misses_after_it_walk_2d(run):
    rows = [("cr3", 1), ("touch", 0x08048), ("touch", K), ("cr3", 2), ("touch", 0x08048), ("touch", K)]
    c = run("kvm-ept", rows)
    # No exit at all, so the TLB is native's: Q1 user and kernel miss (2); the switch to 2
    # drops the non-global user page: it misses again, the global kernel page hits (1). 3
    # misses, each a 2-D walk.
    assert c == Counts({"events": 6, "cr3_writes": 2, "tlb_miss": 3, "tlb_miss_native": 3,
                        "tdp_walk_extra": 3})
    # Trunk, for contrast: 2 CR3 exits (2 roots built), 3 shadow tables, 3 shadow faults;
    # each exit flushes the TLB, so both touches of quantum 2 miss: 4; native 3: extra 1.
    assert run("kvm-trunk", rows) == Counts({
        "events": 6, "cr3_writes": 2, "exit_cr3": 2, "shadow_root_alloc": 2, "shadow_page_alloc": 3,
        "exit_shadow_fault": 3, "tlb_miss": 4, "tlb_miss_native": 3, "tlb_refill_extra": 1})


def test_ept_guest_faults_pte_writes_and_invlpg_do_not_exit(run):
    rows = [("cr3", 1), ("touch", 0x08048), ("pf", 0x08048, 1), ("pte", 0x08048),
            ("invlpg", 0x08048), ("touch", 0x08048, 1)]
    c = run("kvm-ept", rows)
    # The guest handles its fault and writes its PTE itself; invlpg drops the page from the
    # TLB (both), so the second touch misses again: 2 misses, 2 walks, no exit.
    assert c == Counts({"events": 6, "cr3_writes": 1, "tlb_miss": 2, "tlb_miss_native": 2,
                        "tdp_walk_extra": 2})
    # Under trunk the same rows exit 4 times: cr3, the shadow fault of the first touch, the
    # guest #PF, and the PTE write (its table is shadowed by then, and updated on the write,
    # so the second touch finds its shadow PTE).
    t = run("kvm-trunk", rows)
    assert (t["exit_cr3"], t["exit_shadow_fault"], t["exit_guest_pf"], t["exit_pte_write"]) == (1, 1, 1, 1)


@pytest.mark.parametrize("mode, misses", [("kvm-ept", 4), ("kvm-ept-vpid", 2)])
def test_vpid_exits_keep_the_tlb(run, mode, misses):
    rows = [("cr3", 1), ("touch", K), ("touch", K + 1), ("cpuid", 1), ("touch", K), ("touch", K + 1)]
    c = run(mode, rows)
    # Native: K and K+1 miss once (2). Without VPID the cpuid exit flushes both, global or
    # not: 2 more misses (4, extra 2). With VPID they stay: 2, extra 0.
    assert c == Counts({"events": 6, "cr3_writes": 1, "exit_cpuid": 1, "tlb_miss": misses,
                        "tlb_miss_native": 2, "tlb_refill_extra": misses - 2, "tdp_walk_extra": misses})


# --- KVM's previous roots ---------------------------------------------------------------

def round_robin(spaces: int, rounds: int) -> list[tuple]:
    return [("cr3", 1 + i % spaces) for i in range(spaces * rounds)]


@pytest.mark.parametrize("spaces, slow, fast", [
    (3, 3, 6),    # 3 cold misses, then all 6 switches find their root among the 4 held
    (4, 4, 8),    # the current root and 3 previous ones: 4 spaces still fit
    (5, 15, 0),   # round robin over 5: the root wanted is always the one just let go
])
def test_prev_roots_round_robin(run, spaces, slow, fast):
    c = run("kvm-shadow-prevroots", round_robin(spaces, 3))
    # Every switch exits. A slow one finds its root in the shadow pool (2048 pages keep
    # all of them) after the first round: roots built = spaces, found = slow - spaces.
    assert c == Counts({"events": 3 * spaces, "cr3_writes": 3 * spaces, "exit_cr3": slow,
                        "exit_cr3_fast": fast, "shadow_root_alloc": spaces,
                        "shadow_root_hit": slow - spaces})


def test_a_root_the_pool_frees_leaves_the_held_roots(run, vary):
    mode = vary("kvm-shadow-prevroots", shadow_pool_pages=2)
    rows = [("cr3", 1), ("cr3", 2), ("cr3", 3), ("cr3", 1), ("cr3", 3)]
    # cr3 1, cr3 2: slow, roots built; pool [R1, R2], held [2, 1].
    # cr3 3: slow; building R3 evicts R1 (zap 1), which leaves the held roots: [3, 2].
    # cr3 1: not held (a stale entry would have hit): slow, R1 rebuilt evicting R2 (zap 2),
    #        held [1, 3].
    # cr3 3: held: fast.
    assert run(mode, rows) == Counts({"events": 5, "cr3_writes": 5, "exit_cr3": 4, "exit_cr3_fast": 1,
                                      "shadow_root_alloc": 4, "shadow_page_zap": 2})


# --- the modern paravirt guest's I/O --------------------------------------------------------

# One 2.6.20 timer tick (pipeline/generate/simulated_kernel.py): the interrupt, the i8259A ack (IMR read,
# IMR write, EOI, IMR write) and pit_read() (latch, two counter reads, each with a 0x80 delay).
TICK = [("irq", 0x20), ("io", 0x21, 0), ("io", 0x21, 1), ("io", 0x20, 1), ("io", 0x21, 1),
        ("io", 0x43, 1), ("io", 0x80, 1), ("io", 0x40, 0), ("io", 0x80, 1), ("io", 0x40, 0), ("io", 0x80, 1)]


@pytest.mark.parametrize("mode, exits, avoided", [
    ("kvm-ept-vpid", 10, 0),   # every port access exits
    ("kvm-paravirt", 6, 4),    # 2007: the three 0x80 delays and the dummy IMR read go
    # modern PV: the EOI (PV EOI), the latch and both counter reads (kvmclock) and the three
    # delays (NOP I/O delay) go: 7; the three i8259A mask accesses still exit.
    ("kvm-pv-modern", 3, 7),
])
def test_a_timer_tick(run, mode, exits, avoided):
    c = run(mode, TICK)
    assert (c["exit_irq"], c["exit_io"], c["native_io_avoided"]) == (1, exits, avoided)


@pytest.mark.parametrize("port, direction, dropped", [
    (0x80, 1, True), (0x80, 0, True),     # NOP I/O delay, either direction
    (0x20, 1, True), (0xA0, 1, True),     # EOI writes (PV EOI)
    (0x20, 0, False), (0xA0, 0, False),   # IRR/ISR reads are not EOIs
    (0x43, 1, True),                      # PIT latch command (kvmclock)
    (0x40, 0, True), (0x41, 0, True), (0x42, 0, True),   # PIT counter reads (kvmclock)
    (0x40, 1, False),                     # PIT reload: programming the timer stays
    (0x21, 0, False), (0x21, 1, False), (0xA1, 1, False),   # i8259A masks: no PV counterpart
])
def test_each_port_alone(run, port, direction, dropped):
    c = run("kvm-pv-modern", [("io", port, direction)])
    assert (c["exit_io"], c["native_io_avoided"]) == ((0, 1) if dropped else (1, 0))


@pytest.mark.parametrize("address, direction, dropped", [
    (0xFED000F0, 0, True), (0xFED000F4, 0, True),   # HPET main counter reads (kvmclock)
    (0xFED000F0, 1, False),                         # writing the counter is not a clock read
    (0xFED00100, 1, False),                         # HPET timer 0 configuration
    (0xFEE000B0, 1, True),                          # local APIC EOI write (PV EOI)
    (0xFEE000B0, 0, False),
    (0xFEC00000, 1, False),                         # I/O APIC
])
def test_each_mmio_access_alone(run, address, direction, dropped):
    c = run("kvm-pv-modern", [("mmio", address, direction)])
    assert (c["exit_mmio"], c["native_mmio_avoided"]) == ((0, 1) if dropped else (1, 0))
    # Under every other mode the same access is an exit (or QEMU's emulation) as before.
    assert run("kvm-ept-vpid", [("mmio", address, direction)])["exit_mmio"] == 1


# --- properties: each modern mode against the mode it refines ---------------------------------

@SETTINGS
@given(data=st.data(), rows=traces)
def test_prev_roots_only_split_trunks_cr3_exits(run, modes, data, rows):
    # The held roots change which CR3 exits are fast, nothing else: same pool operations,
    # same exits (so the same TLB flushes), same shadow faults.
    pool = data.draw(st.sampled_from([2, 3, 2048]))
    trunk = dataclasses.replace(modes["kvm-trunk"], shadow_pool_pages=pool)
    prev = dataclasses.replace(trunk, name="p", prev_roots=data.draw(st.integers(0, 4)))
    t, p = run(trunk, rows, span_ns=span_of(rows)), run(prev, rows, span_ns=span_of(rows))
    assert p["exit_cr3"] + p["exit_cr3_fast"] == t["exit_cr3"]
    assert p["shadow_root_alloc"] + p["shadow_root_hit"] == p["exit_cr3"]
    for name in ("shadow_root_alloc", "shadow_page_alloc", "shadow_page_zap", "exit_shadow_fault",
                 "exit_pte_write", "tlb_miss", "tlb_miss_native", "exit_io"):
        assert p[name] == t[name], name
    if prev.prev_roots == 0:
        assert p == t


@SETTINGS
@given(data=st.data(), rows=traces)
def test_tdp_counts(run, modes, data, rows):
    mode = dataclasses.replace(modes[data.draw(st.sampled_from(TDP))],
                               tlb_entries=data.draw(st.integers(1, 8)))
    c = run(mode, rows, span_ns=span_of(rows))
    # No shadow state and none of the paging exits shadow paging needs.
    for name in ("exit_cr3", "exit_cr3_fast", "exit_shadow_fault", "exit_guest_pf", "exit_pte_write",
                 "exit_invlpg", "shadow_root_alloc", "shadow_page_alloc", "shadow_page_zap"):
        assert c[name] == 0, name
    assert c["tdp_walk_extra"] == c["tlb_miss"] == c["tlb_miss_native"] + c["tlb_refill_extra"]
    assert c["tlb_refill_extra"] >= 0
    if not mode.tlb_flush_on_exit:
        assert c["tlb_refill_extra"] == 0
    # The PV guest's exits plus what it no longer does are the port and MMIO exits of EPT+VPID.
    base = run(modes["kvm-ept-vpid"], rows, span_ns=span_of(rows))
    assert c["exit_io"] + c["native_io_avoided"] == base["exit_io"]
    assert c["exit_mmio"] + c["native_mmio_avoided"] == base["exit_mmio"]
