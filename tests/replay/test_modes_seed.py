"""The five seed modes as loaded from configs/modes: what each does to each event kind,
the paravirt I/O transforms, and one small trace priced in full under every mode.
"""
from __future__ import annotations

import pytest

from replay.counts import DRIVERS, Counts
from replay.kinds import Kind
from replay.mode import Paging
from tests.replay.conftest import K

SEED = ["native", "qemu", "kvm-upstream", "kvm-trunk", "kvm-paravirt"]
KVM = ["kvm-upstream", "kvm-trunk", "kvm-paravirt"]


# --- the mode files, as read by hand ----------------------------------------------------

def test_seed_modes_load_in_report_order(modes):
    # order keys 10, 20, 30, 40, 50; the modes after 2007 follow (test_modes_modern.py)
    assert list(modes)[:5] == SEED


def test_seed_mode_state(modes):
    assert modes["native"].paging is Paging.NATIVE
    assert modes["qemu"].paging is Paging.SOFTMMU
    assert modes["qemu"].softmmu_tlb_entries == 256
    for name in KVM:
        m = modes[name]
        assert m.paging is Paging.SHADOW
        assert m.tlb_flush_on_exit is True
        assert m.shadow_pool_pages == 2048
    up, trunk, pv = (modes[n] for n in KVM)
    assert (up.shadow_keep_on_cr3, up.shadow_update_on_pte_write) == (False, False)
    assert (trunk.shadow_keep_on_cr3, trunk.shadow_update_on_pte_write) == (True, True)
    assert (pv.shadow_keep_on_cr3, pv.shadow_update_on_pte_write) == (True, True)
    assert (up.cr3_cache_size, trunk.cr3_cache_size, pv.cr3_cache_size) == (0, 0, 4)
    assert pv.dropped_io_ports == frozenset({0x80})
    assert pv.dropped_io_reads == frozenset({0x21, 0xA1})
    assert trunk.dropped_io_ports == trunk.dropped_io_reads == frozenset()
    # trunk and paravirt inherit upstream's event table, less the invlpg trap that
    # write-protected guest tables made unnecessary
    assert trunk.on_event == pv.on_event == {k: d for k, d in up.on_event.items() if k is not Kind.INVLPG}
    assert up.on_event[Kind.INVLPG] == "exit_invlpg"
    assert modes["native"].on_event == {}


# --- one event of each kind, alone ----------------------------------------------------

# kind -> (value, arg) and the driver it causes in qemu / every KVM mode (None = none).
ONE_EVENT = {
    "page_fault": ((0x08048, 1), "emul_exception", "exit_guest_pf"),
    "io":         ((0x60, 0), "emul_io", "exit_io"),
    "mmio":       ((0xFEC00000, 1), "emul_io", "exit_mmio"),
    "irq":        ((0x20, 0), "emul_irq", "exit_irq"),
    "hlt":        ((500, 0), None, "exit_hlt"),
    "invlpg":     ((0x08048, 0), None, {"kvm-upstream": "exit_invlpg"}),
    "cpuid":      ((1, 0), None, "exit_cpuid"),
    "msr":        ((0x10, 0), None, "exit_msr"),
    "hypercall":  ((0, 0), None, "exit_hypercall"),
    "syscall":    ((3, 0), None, None),
}


@pytest.mark.parametrize("kind", list(ONE_EVENT))
@pytest.mark.parametrize("mode", SEED)
def test_one_event_causes_exactly_its_driver(run, mode, kind):
    (value, arg), in_qemu, in_kvm = ONE_EVENT[kind]
    expected = {"native": None, "qemu": in_qemu}.get(mode, in_kvm)
    if isinstance(expected, dict):  # differs between the KVM modes
        expected = expected.get(mode)
    c = run(mode, [(kind, value, arg)], span_ns=1000)
    priced = {n: v for n, v in c.values.items() if n in DRIVERS and v and n != "emulated_ns"}
    assert priced == ({expected: 1} if expected else {})


def test_syscall_is_counted_not_priced(run):
    c = run("kvm-trunk", [("syscall", 3), ("syscall", 4)])
    assert c["syscalls"] == 2


# --- port I/O and the paravirt guest ------------------------------------------------------

# (port, 0 = in / 1 = out): the 2.6.20 i8259A ack reads the IMR (dummy), writes it, EOIs.
PORTS = [(0x80, 1), (0x80, 0), (0x21, 0), (0xA1, 0), (0x21, 1), (0xA1, 1), (0x20, 1), (0xA0, 1), (0x60, 0)]


def io_rows():
    return [("io", p, d) for p, d in PORTS]


def test_trunk_exits_on_every_port(run):
    # 9 port accesses, 9 exits to userspace QEMU.
    c = run("kvm-trunk", io_rows())
    assert c["exit_io"] == 9
    assert c["native_io_avoided"] == 0


def test_paravirt_drops_port_0x80_and_the_dummy_imr_reads(run):
    # Removed: 0x80 out and in (I/O delay), the IMR reads of 0x21 and 0xA1: 4, no exit.
    # Still exit: the IMR writes (0x21, 0xA1 out), both EOIs (0x20, 0xA0), 0x60 in: 5.
    c = run("kvm-paravirt", io_rows())
    assert c["native_io_avoided"] == 4
    assert c["exit_io"] == 5


@pytest.mark.parametrize("port, direction, dropped", [
    (0x80, 1, True), (0x80, 0, True), (0x21, 0, True), (0xA1, 0, True),
    (0x21, 1, False), (0xA1, 1, False), (0x20, 1, False), (0x20, 0, False)])
def test_each_port_alone(run, port, direction, dropped):
    assert run("kvm-trunk", [("io", port, direction)])["exit_io"] == 1
    c = run("kvm-paravirt", [("io", port, direction)])
    assert (c["exit_io"], c["native_io_avoided"]) == ((0, 1) if dropped else (1, 0))


def test_eoi_still_exits_in_paravirt(run):
    c = run("kvm-paravirt", [("io", 0x20, 1)])
    assert (c["exit_io"], c["native_io_avoided"]) == (1, 0)


def test_io_in_native_and_qemu(run):
    # Native: device access at native speed, nothing counted. QEMU: 9 emulated accesses.
    assert run("native", io_rows()) == Counts({"events": 9})
    c = run("qemu", io_rows())
    assert c["emul_io"] == 9
    assert c["native_io_avoided"] == 0


# --- one small trace, every count, every mode ---------------------------------------------

# 4 quanta alternating tasks 1 and 2; each: cr3 n, touch user 0x08048, touch kernel K,
# port 0x80 delay, a syscall. Then hlt 1000 ns. 21 events, span 10,000 ns.
QUANTUM_TRACE = [row for q in range(4) for row in (
    ("cr3", 1 + q % 2), ("touch", 0x08048), ("touch", K), ("io", 0x80, 1), ("syscall", 3),
)] + [("hlt", 1000)]
COMMON = {"events": 21, "cr3_writes": 4, "syscalls": 4, "idle_ns": 1000}

EXPECTED = {
    # Native TLB: Q1 user miss, kernel miss; Q2-Q4 user miss (flushed), kernel hit (global): 5.
    "native": {"tlb_miss_native": 5},
    # Softmmu flushed by every cr3 write: 2 fills per quantum = 8; 4 flushes; 4 emulated
    # port writes; translated time = 10,000 - 1,000 idle = 9,000 ns.
    "qemu": {"softmmu_flush": 4, "softmmu_fill": 8, "emul_io": 4, "emulated_ns": 9000},
    # Upstream: exits cr3 4, io 4, hlt 1. Each cr3 drops root + user table (zaps 2 x 3 = 6),
    # so 4 roots and 4 user tables are built, plus the global table once (page_alloc 5).
    # Shadow faults: user page every quantum (4) + kernel once (1) = 5.
    # TLB: the user touch always faults (exit flush), so the kernel touch after it always
    # misses: 2 misses per quantum = 8; native 5: extra 3.
    "kvm-upstream": {"exit_cr3": 4, "exit_io": 4, "exit_hlt": 1,
                     "shadow_root_alloc": 4, "shadow_page_alloc": 5, "shadow_page_zap": 6,
                     "exit_shadow_fault": 5,
                     "tlb_miss": 8, "tlb_miss_native": 5, "tlb_refill_extra": 3},
    # Trunk: same exits for cr3/io/hlt. Roots: 2 built, 2 found. Tables (1,0x20), (2,0x20),
    # global: 3. Faults: Q1 user + kernel, Q2 user = 3. TLB: every cr3 and io exits, so
    # both touches miss in every quantum: 8; extra 3.
    "kvm-trunk": {"exit_cr3": 4, "exit_io": 4, "exit_hlt": 1,
                  "shadow_root_alloc": 2, "shadow_root_hit": 2, "shadow_page_alloc": 3,
                  "exit_shadow_fault": 3,
                  "tlb_miss": 8, "tlb_miss_native": 5, "tlb_refill_extra": 3},
    # Paravirt: cr3 1, 2 miss (exit, fill); Q3, Q4 hit. Port 0x80 removed (4 avoided).
    # Shadow as trunk: 2 roots, 3 tables, 3 faults. TLB: Q1 2 misses (faults), Q2 2 (cr3
    # exit + user fault flush K), Q3 user miss + K hit (hit keeps globals, no exits),
    # Q4 likewise: 6; native 5: extra 1.
    "kvm-paravirt": {"cr3_cache_lookup": 4, "cr3_cache_miss": 2, "cr3_cache_hit": 2,
                     "exit_cr3": 2, "exit_hlt": 1, "native_io_avoided": 4,
                     "shadow_root_alloc": 2, "shadow_page_alloc": 3,
                     "exit_shadow_fault": 3,
                     "tlb_miss": 6, "tlb_miss_native": 5, "tlb_refill_extra": 1},
}


@pytest.mark.parametrize("mode", SEED)
def test_quantum_trace_every_count(run, mode):
    c = run(mode, QUANTUM_TRACE, span_ns=10_000)
    assert c == Counts({**COMMON, **EXPECTED[mode]})


def test_native_has_no_exit_drivers(run):
    c = run("native", QUANTUM_TRACE, span_ns=10_000)
    assert not any(c[n] for n in DRIVERS)


def test_kind_codes_are_fixed():
    # Codes are part of trace format v1 and never change (traces/README.md).
    assert [int(k) for k in Kind] == list(range(15))
    assert [k.name.lower() for k in Kind] == [
        "cr3_write", "touch", "page_fault", "pte_write", "invlpg", "io", "mmio",
        "irq", "hlt", "syscall", "cpuid", "msr", "hypercall", "timer_arm", "ipi_send"]
