"""Hypothesis strategies shared by the property tests: small random traces whose state collides.

Few pages, ports and addresses, so that TLB slots, guest tables, shadow pools and CR3 caches
all fill and evict within a few dozen rows.
"""
from __future__ import annotations

import dataclasses
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.replay.conftest import K

# A few user pages over several guest tables (0x20, 0x20, 0x20, 0x21, 0x100, 0x2FF),
# 0x08048 / 0x08148 conflict in the softmmu TLB; kernel pages over two global tables.
USER = [0x08048, 0x08049, 0x08148, 0x08448, 0x40000, 0xBFFFF]
KERNEL = [K, K + 1, K + 0x400]
PORTS = [0x80, 0x21, 0xA1, 0x20, 0x60]
ADDRESSES = [0xFEC00000, 0xFEE000B0, 0xFED000F0]


def trace_rows(pages: list[int], max_size: int) -> st.SearchStrategy[list[tuple]]:
    """Lists of make_events rows; touches are drawn three times as often as any other kind."""
    touch = st.tuples(st.just("touch"), st.sampled_from(pages), st.integers(0, 1))
    row = st.one_of(
        st.tuples(st.just("cr3"), st.integers(1, 6)),
        touch, touch, touch,
        st.tuples(st.sampled_from(["pf", "pte", "invlpg"]), st.sampled_from(pages)),
        st.tuples(st.just("io"), st.sampled_from(PORTS), st.integers(0, 1)),
        st.tuples(st.just("mmio"), st.sampled_from(ADDRESSES), st.integers(0, 1)),
        st.tuples(st.just("hlt"), st.integers(0, 1000)),
        st.tuples(st.sampled_from(["irq", "syscall", "cpuid", "msr", "hypercall"]), st.integers(0, 3)),
    )
    return st.lists(row, max_size=max_size)


def examples(default: int) -> settings:
    """Settings for a property test: HVREPLAY_EXAMPLES=5000 for a longer search than `default`."""
    return settings(max_examples=int(os.environ.get("HVREPLAY_EXAMPLES", default)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def span_of(rows: list[tuple]) -> int:
    """A span that leaves 1 µs busy besides the rows' halts."""
    return 1000 + sum(r[1] for r in rows if r[0] == "hlt")


def varied_modes(modes: dict, bases: list[str], **fields: st.SearchStrategy) -> st.SearchStrategy:
    """One of `bases` with the given fields redrawn (tiny state, flags flipped), named after it."""
    return st.builds(
        lambda base, **kw: dataclasses.replace(modes[base], name=f"{base}-varied", **kw),
        st.sampled_from(bases), **fields)
