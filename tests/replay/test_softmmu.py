"""QEMU's softmmu TLB: 256 direct-mapped entries (slot = vpn & 255), flushed on every CR3 write.

0x08048 and 0x08148 differ by 0x100, so both map to slot 0x48 and evict each other;
0x08048 and 0x08049 sit in neighbouring slots.
"""
from __future__ import annotations

import pytest

from replay.counts import EXITS
from replay.softmmu import SoftTlb
from tests.replay.conftest import K

A, A_CONFLICT, A_NEXT = 0x08048, 0x08148, 0x08049


# --- the softmmu TLB on its own ---------------------------------------------------------

def test_direct_mapped_conflict_thrashes():
    s = SoftTlb(256)
    # A, A', A, A', A, A': every access replaces the other in slot 0x48: 6 misses.
    hits = [s.access(v) for v in (A, A_CONFLICT) * 3]
    assert hits == [False] * 6


def test_distinct_slots_coexist():
    s = SoftTlb(256)
    # A, A+1, A, A+1, ...: 2 misses, then hits.
    hits = [s.access(v) for v in (A, A_NEXT) * 3]
    assert hits == [False, False, True, True, True, True]


def test_flush_and_invalidate():
    s = SoftTlb(256)
    s.access(A)
    s.access(A_NEXT)
    s.invalidate(A_CONFLICT)   # other tag in A's slot: nothing happens
    assert s.access(A)
    s.invalidate(A)
    assert not s.access(A)
    s.flush()
    assert not s.access(A_NEXT)


@pytest.mark.parametrize("entries", [0, 3, 100, -256])
def test_size_must_be_a_power_of_two(entries):
    with pytest.raises(ValueError, match="power of two"):
        SoftTlb(entries)


# --- the qemu mode ----------------------------------------------------------------------

def test_qemu_conflicting_pages_refill_every_time(run):
    # cr3 1, then A A' A A': 4 softmmu fills (conflict in slot 0x48).
    c = run("qemu", [("cr3", 1)] + [("touch", v) for v in (A, A_CONFLICT) * 2])
    assert c["softmmu_fill"] == 4
    assert c["softmmu_flush"] == 1


def test_qemu_non_conflicting_pages_fill_once(run):
    # cr3 1, then A A+1 A A+1: 2 fills.
    c = run("qemu", [("cr3", 1)] + [("touch", v) for v in (A, A_NEXT) * 2])
    assert c["softmmu_fill"] == 2


def test_qemu_flushes_on_every_cr3_write_globals_included(run):
    # cr3 1: flush; touch A, K: 2 fills
    # cr3 2: flush; touch A, K: 2 fills (kernel pages are not kept: whole flush)
    # cr3 1: flush; touch A: 1 fill
    # softmmu_flush 3, softmmu_fill 5; never a VM exit.
    c = run("qemu", [("cr3", 1), ("touch", A), ("touch", K),
                     ("cr3", 2), ("touch", A), ("touch", K),
                     ("cr3", 1), ("touch", A)])
    assert c["softmmu_flush"] == 3
    assert c["softmmu_fill"] == 5
    assert c["cr3_writes"] == 3
    assert not [n for n, v in c.values.items() if n in EXITS and v]


def test_qemu_invlpg_drops_the_entry(run):
    # cr3 1; touch A: fill; invlpg A; touch A: fill again -> 2 fills.
    c = run("qemu", [("cr3", 1), ("touch", A), ("invlpg", A), ("touch", A)])
    assert c["softmmu_fill"] == 2


def test_qemu_emulated_ns_is_span_minus_idle(run):
    # span 1,000,000 ns; hlt 300,000 + hlt 200,000 = 500,000 idle
    # emulated_ns = 1,000,000 - 500,000 = 500,000; hlt causes no driver in qemu.
    c = run("qemu", [("cr3", 1), ("hlt", 300_000), ("touch", A), ("hlt", 200_000)],
            span_ns=1_000_000)
    assert c["idle_ns"] == 500_000
    assert c["emulated_ns"] == 500_000
    assert c["exit_hlt"] == 0


def test_qemu_emulates_exceptions_io_and_irqs(run):
    # page fault -> emul_exception; io and mmio -> emul_io (2); irq -> emul_irq.
    # pte_write is a plain (emulated) store: nothing of its own.
    c = run("qemu", [("cr3", 1), ("pf", A, 1), ("pte", A), ("io", 0x80, 1),
                     ("mmio", 0xFEC00000, 0), ("irq", 0x20)])
    assert c["emul_exception"] == 1
    assert c["emul_io"] == 2
    assert c["emul_irq"] == 1
    assert c["exit_pte_write"] == 0


def test_qemu_keeps_no_hardware_tlb_counts(run):
    # Softmmu paging fills the software TLB only: no tlb_miss / tlb_miss_native.
    c = run("qemu", [("cr3", 1), ("touch", A)])
    assert c["tlb_miss"] == 0
    assert c["tlb_miss_native"] == 0
    assert c["tlb_refill_extra"] == 0


def test_native_has_no_emulated_time(run):
    # emulated_ns is QEMU's alone.
    c = run("native", [("hlt", 100)], span_ns=1000)
    assert c["emulated_ns"] == 0
    assert c["idle_ns"] == 100
