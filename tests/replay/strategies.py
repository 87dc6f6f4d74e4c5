"""Hypothesis strategies shared by the property tests: small random traces whose state collides.

Few pages, ports and addresses, so that TLB slots, guest tables, shadow pools and CR3 caches
all fill and evict within a few dozen rows; the local APIC's events (replay/lapic.py) with every
source and device code (and one unknown), delays on both sides of the thresholds drawn for
modes, MSRs of the passthrough lists and addresses on and off the xAPIC page.
"""
from __future__ import annotations

import dataclasses
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from replay.lapic import LAPICS
from replay.mode import Guest
from tests.replay.conftest import K

# A few user pages over several guest tables (0x20, 0x20, 0x20, 0x21, 0x100, 0x2FF),
# 0x08048 / 0x08148 conflict in the softmmu TLB; kernel pages over two global tables.
USER = [0x08048, 0x08049, 0x08148, 0x08448, 0x40000, 0xBFFFF]
KERNEL = [K, K + 1, K + 0x400]
PORTS = [0x80, 0x21, 0xA1, 0x20, 0x60]
# I/O APIC, xAPIC EOI, HPET counter; the xAPIC page's registers (EOI, TPR, TMICT, its last byte).
APIC_PAGE = [0xFEE000B0, 0xFEE00080, 0xFEE00380, 0xFEE00FFF]
ADDRESSES = [0xFEC00000, 0xFED000F0] + APIC_PAGE
# TSC, APIC_BASE, SPEC_CTRL, x2APIC EOI, x2APIC TMICT, FS_BASE
MSRS = [0x10, 0x1B, 0x48, 0x80B, 0x838, 0xC0000100]
THRESHOLDS = st.sampled_from([0, 1000, 1500, 3000])   # modes' timer_expired_at_entry_ns
DELAYS = st.one_of(THRESHOLDS, st.integers(0, 3000))  # timer delays: at the thresholds and around them
POLLS = st.sampled_from([0, 300, 1000])   # modes' halt poll windows ...
IDLE = st.one_of(POLLS, st.integers(0, 1000))   # ... and hlt values: at the windows and around them


def trace_rows(pages: list[int], max_size: int) -> st.SearchStrategy[list[tuple]]:
    """Lists of make_events rows; touches are drawn three times as often as any other kind, and
    an hlt right before an interrupt (the wake-up of a halted vCPU) as often as one row."""
    touch = st.tuples(st.just("touch"), st.sampled_from(pages), st.integers(0, 1))
    irq = st.tuples(st.just("irq"), st.integers(0, 3), st.integers(0, 4))   # sources IRQ_*, and 4: unknown
    row = st.one_of(
        st.tuples(st.just("cr3"), st.integers(1, 6)),
        touch, touch, touch,
        st.tuples(st.sampled_from(["pf", "pte", "invlpg"]), st.sampled_from(pages)),
        st.tuples(st.just("io"), st.sampled_from(PORTS), st.integers(0, 1)),
        st.tuples(st.just("mmio"), st.sampled_from(ADDRESSES), st.integers(0, 1)),
        st.tuples(st.just("mmio"), st.sampled_from(APIC_PAGE), st.integers(0, 1)),
        st.tuples(st.just("hlt"), IDLE),
        st.tuples(st.sampled_from(["syscall", "cpuid", "hypercall"]), st.integers(0, 3)),
        irq,
        st.tuples(st.just("irq"), st.just(236), st.just(2)),               # the APIC timer, more often
        st.tuples(st.just("msr"), st.sampled_from(MSRS), st.integers(0, 1)),
        st.tuples(st.just("timer_arm"), DELAYS, st.integers(0, 4)),        # devices TIMER_*, and 4: unknown
        st.tuples(st.just("ipi_send"), st.integers(0, 3)),
    )
    wake = st.tuples(st.tuples(st.just("hlt"), IDLE), irq).map(list)
    groups = st.lists(st.one_of(row.map(lambda r: [r]), wake), max_size=max_size)
    return groups.map(lambda gs: [r for g in gs for r in g][:max_size])


def examples(default: int) -> settings:
    """Settings for a property test: HVREPLAY_EXAMPLES=5000 for a longer search than `default`."""
    return settings(max_examples=int(os.environ.get("HVREPLAY_EXAMPLES", default)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def span_of(rows: list[tuple]) -> int:
    """A span that leaves 1 µs busy besides the rows' halts."""
    return 1000 + sum(r[1] for r in rows if r[0] == "hlt")


def spans(rows: list[tuple]) -> st.SearchStrategy[int]:
    """span_of(rows), or up to 10 ms more busy time: host ticks (host_tick_hz) then exit."""
    return st.integers(0, 10**7).map(lambda extra: span_of(rows) + extra)


# Guests in xAPIC and x2APIC mode (kernel pages from the default vpn, as GUEST's).
GUESTS = st.builds(Guest, x2apic=st.integers(0, 1))

# Mode fields of the local APIC model, drawn small (varied_modes' keywords).
APIC_FIELDS = {
    "lapic": st.sampled_from(LAPICS),
    "preemption_timer": st.booleans(),
    "timer_expired_at_entry_ns": THRESHOLDS,
    "msr_passthrough": st.lists(st.sampled_from(MSRS), max_size=3, unique=True).map(tuple),
    "guest_halt_poll_ns": POLLS,
    "host_halt_poll_ns": POLLS,
    "host_tick_hz": st.sampled_from([0, 250, 10**5]),
}


def varied_modes(modes: dict, bases: list[str], **fields: st.SearchStrategy) -> st.SearchStrategy:
    """One of `bases` with the given fields redrawn (tiny state, flags flipped), named after it."""
    return st.builds(
        lambda base, **kw: dataclasses.replace(modes[base], name=f"{base}-varied", **kw),
        st.sampled_from(bases), **fields)
