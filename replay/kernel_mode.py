"""Modes as the kernel's data: kernel_core.Params, one row per mode in each of its arrays.

The kernel (kernel_core.py) has no notion of a named mode: it reads what each event does
from these arrays, so a new mode built from existing features is a new row, not new
code. A new *feature* (a paging scheme, a cache) is a field of Params set here plus its
handler in kernel_core.py, mirroring its handler in reference.py. The modes arrive
checked (Mode.__post_init__), and what a paging scheme replays is replay.mode.PAGING,
the table the reference reads too.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from replay import kernel_core as core
from replay.counts import ALL_COUNTS, DRIVERS, EXITS
from replay.kinds import Kind
from replay.lapic import ApicDrivers, apic_drivers
from replay.mode import Guest, Mode

# The kernel's count columns (kernel_core.Tally): its own counts, then every other driver,
# which only a mode's on_event causes; TO_ALL maps them to their ALL_COUNTS positions.
COLUMNS: tuple[str, ...] = core.KERNEL_COUNTS + tuple(n for n in DRIVERS if n not in core.KERNEL_COUNTS)
COLUMN = {name: i for i, name in enumerate(COLUMNS)}
TO_ALL = np.array([ALL_COUNTS.index(n) for n in COLUMNS], dtype=np.int64)
IS_EXIT = np.array([n in EXITS for n in COLUMNS], dtype=np.bool_)
# kernel_core.Dropped's fields: the Mode field each is read from.
DROPPED = {"ports": "dropped_io_ports", "reads": "dropped_io_reads", "writes": "dropped_io_writes",
           "mmio_reads": "dropped_mmio_reads", "mmio_writes": "dropped_mmio_writes"}


def compile_modes(modes: Sequence[Mode], guest: Guest, table_shift: int) -> core.Params:
    """The kernel's Params for `modes` (row m: modes[m]) replaying `guest`'s events."""
    def each(value: Callable[[Mode], Any], dtype: type = np.int64) -> np.ndarray:
        return np.array([value(m) for m in modes], dtype=dtype)
    flag = np.bool_
    return core.Params(
        softmmu=each(lambda m: m.features.softmmu, flag),
        shadow=each(lambda m: m.features.shadow, flag),
        own_tlb=each(lambda m: m.features.own_tlb, flag),
        soft_mask=each(lambda m: m.softmmu_tlb_entries - 1),
        cr3_cache=each(lambda m: m.cr3_cache_size),
        roots=each(_held_roots),
        keep_on_cr3=each(lambda m: m.shadow_keep_on_cr3, flag),
        update_on_pte=each(lambda m: m.shadow_update_on_pte_write, flag),
        # reference.invlpg: the PTE is dropped when invlpg is trapped at all (a key in on_event).
        invlpg_zaps=each(lambda m: Kind.INVLPG in m.on_event, flag),
        pte_mask=each(lambda m: (1 << table_shift) - 1),
        on_event=np.array([_on_event(m) for m in modes], dtype=np.int64).reshape(len(modes), core.N_KINDS),
        # An exit flushes the mode's own TLB when the mode has no VPID (reference.Machine.cause).
        flushes=np.array([IS_EXIT & m.tlb_flush_on_exit for m in modes], dtype=np.bool_).reshape(len(modes), -1),
        dropped=core.Dropped(**{f: _listed([getattr(m, key) for m in modes]) for f, key in DROPPED.items()}),
        apic=_apic(modes, guest),
        guest_poll=each(lambda m: m.guest_halt_poll_ns, np.uint64),
        host_poll=each(lambda m: m.host_halt_poll_ns, np.uint64),
    )


def _apic(modes: Sequence[Mode], guest: Guest) -> core.Apic:
    """kernel_core.Apic: each mode's lapic.ApicDrivers for the guest, as columns."""
    drivers = [apic_drivers(m.lapic, m.preemption_timer, guest.x2apic) for m in modes]

    def col(name: str) -> np.ndarray:
        return np.array([_column(getattr(d, name)) for d in drivers], dtype=np.int64)

    def table(value: Callable[[ApicDrivers], list[int]]) -> np.ndarray:
        return np.array([value(d) for d in drivers], dtype=np.int64).reshape(len(modes), -1)
    return core.Apic(
        on=np.array([bool(m.lapic) for m in modes], dtype=np.bool_),
        **{name: col(name) for name in ("kick", "eoi", "level_eoi", "timer", "ipi", "page_read", "page_quiet", "page_write")},
        page=np.array([d.page for d in drivers], dtype=np.bool_),
        arm=table(lambda d: [_column(t.driver) for t in d.arm]),
        arm_n=table(lambda d: [t.n for t in d.arm]),
        expired_at_entry=np.array([m.timer_expired_at_entry_ns for m in modes], dtype=np.uint64),
        msr_read=np.full(len(modes), COLUMN["exit_msr_read"], dtype=np.int64),
        msr_write=np.full(len(modes), COLUMN["exit_msr_write"], dtype=np.int64),
        passthrough=_listed([frozenset(m.msr_passthrough) for m in modes]),
    )


def _column(driver: str) -> int:
    """A driver's Tally column, NONE for "" (no driver)."""
    return COLUMN[driver] if driver else core.NONE


def _held_roots(mode: Mode) -> int:
    """reference.Machine.roots: the current root and prev_roots earlier ones, shadow paging only."""
    return mode.prev_roots + 1 if mode.features.shadow and mode.prev_roots else 0


def _on_event(mode: Mode) -> list[int]:
    """reference.Machine.on_event: a kind's driver is caused only when the name is non-empty."""
    row = [core.NONE] * core.N_KINDS
    for kind, driver in mode.on_event.items():
        row[int(kind)] = _column(driver)
    return row


def _listed(sets: list[frozenset[int]]) -> core.Listed:
    """kernel_core.listed's table: each mode's values, sorted, padded to the longest."""
    values = np.zeros((len(sets), max([1] + [len(s) for s in sets])), dtype=np.uint64)
    for m, s in enumerate(sets):
        values[m, : len(s)] = sorted(s)
    return core.Listed(n=np.array([len(s) for s in sets], dtype=np.int64), values=values)
