"""Fixtures for the model tests: tiny hand-made traces and the real seed modes.

A trace is written as a list of rows `(kind, value)` or `(kind, value, arg)`, e.g.

    [("cr3", 1), ("touch", 0x08048, 1), ("io", 0x80, 1)]

`kind` is a name of replay.kinds.KIND_NAMES or one of the short aliases below. The
`asid` column is filled in the way a recorder would: the value of the last `cr3` row
(0 before the first one). Every count asserted in these tests is worked out by hand
in a comment beside the assertion, never taken from a run of the code under test.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Union

import numpy as np
import pytest

from pipeline.config.modes import load_modes
from replay.counts import Counts
from replay.events import Events
from replay.kinds import KIND_NAMES, Kind
from replay.mode import Guest, Mode
from replay import kernel, reference

ALIASES: dict[str, Kind] = {
    "cr3": Kind.CR3_WRITE,
    "pf": Kind.PAGE_FAULT,
    "pte": Kind.PTE_WRITE,
}

Row = tuple
Spec = Iterable[Row]
ModeLike = Union[str, Mode]

# The guest of every test: 32-bit 3G/1G split, kernel pages (global) from vpn 0xC0000, xAPIC;
# X2APIC is the same guest with its local APIC in x2APIC mode.
GUEST = Guest()
X2APIC = Guest(x2apic=1)
K = GUEST.kernel_vpn_min


def kind_of(name: str) -> Kind:
    if name in ALIASES:
        return ALIASES[name]
    return KIND_NAMES[name]  # KeyError on a typo in a test


def make_events(spec: Spec, span_ns: int = 1_000_000, start_asid: int = 0) -> Events:
    """Events from rows (kind, value[, arg]); asid = the last CR3 value written."""
    kinds, values, asids, args = [], [], [], []
    asid = start_asid
    for row in spec:
        name, value, *rest = row
        kind = kind_of(name)
        if kind is Kind.CR3_WRITE:
            asid = value
        kinds.append(int(kind))
        values.append(value)
        asids.append(asid)
        args.append(rest[0] if rest else 0)
    return Events(
        kind=np.array(kinds, dtype=np.uint8),
        value=np.array(values, dtype=np.uint64),
        asid=np.array(asids, dtype=np.uint32),
        arg=np.array(args, dtype=np.uint32),
        span_ns=span_ns,
    )


@pytest.fixture(scope="session")
def modes() -> dict[str, Mode]:
    """The five seed modes exactly as users load them (configs/modes/*.toml)."""
    return load_modes()


@pytest.fixture(scope="session")
def ev() -> Callable[..., Events]:
    return make_events


@pytest.fixture(scope="session")
def vary(modes) -> Callable[..., Mode]:
    """vary("kvm-trunk", shadow_pool_pages=4): a seed mode with some fields changed."""

    def _vary(name: str, **changes) -> Mode:
        return dataclasses.replace(modes[name], **changes)

    return _vary


def kernel_by_source(events: Events, guest: Guest, mode: Mode) -> dict[reference.Source, Counts]:
    """reference.replay_by_source's dict, read back from the kernel's attribution table."""
    state = kernel.new_state([mode], guest)
    kernel.replay_batch(state, events.kind, events.value, events.asid, events.arg)
    table = kernel.attribution(state, 0, events.span_ns)
    rows: dict[reference.Source, dict[str, int]] = {}
    names = ("kind", "asid", "device", "driver", "count")
    for kind, asid, device, driver, n in zip(*(table[c].tolist() for c in names)):
        source = reference.BUSY if kind == "busy" else (int(KIND_NAMES[kind]), asid, device)
        rows.setdefault(source, {})[driver] = n
    return {source: Counts(values) for source, values in rows.items()}


@pytest.fixture(scope="session", params=["reference", "kernel"])
def by_source(request) -> Callable[[Events, Guest, Mode], dict[reference.Source, Counts]]:
    """replay_by_source(events, guest, mode) of the oracle, and again of the compiled kernel."""
    return {"reference": reference.replay_by_source, "kernel": kernel_by_source}[request.param]


@pytest.fixture(scope="session", params=["reference", "kernel"])
def run(modes, request) -> Callable[..., Counts]:
    """run(mode, rows, span_ns=..., guest=...): replay hand-made rows under a mode (name or Mode),
    with the oracle and again with the compiled kernel: every hand-worked count holds for both."""
    replay = {"reference": reference.replay, "kernel": kernel.replay}[request.param]

    def _run(mode: ModeLike, spec: Spec | Events, span_ns: int = 1_000_000, guest: Guest = GUEST) -> Counts:
        m = modes[mode] if isinstance(mode, str) else mode
        events = spec if isinstance(spec, Events) else make_events(spec, span_ns=span_ns)
        return replay(events, guest, m)

    return _run
