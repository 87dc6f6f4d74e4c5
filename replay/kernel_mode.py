"""Modes as the kernel's data: flags, sizes and tables, one row per mode.

The kernel (kernel_core.py) has no notion of a named mode: it reads what each event does
from these arrays, so a new mode built from existing features is a new row, not new
code. A new *feature* (a paging scheme, a cache) is a new flag here plus its handler in
kernel_core.py, mirroring its handler in reference.py.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from replay import kernel_core as core
from replay.counts import ALL_COUNTS, DRIVERS
from replay.kinds import Kind
from replay.mode import Mode, Paging

# Which state machines a paging scheme replays: (softmmu TLB, shadow pool + own TLB).
PAGING_FEATURES: dict[Paging, tuple[bool, bool]] = {
    Paging.NATIVE: (False, False),
    Paging.SOFTMMU: (True, False),
    Paging.SHADOW: (False, True),
}
COLUMN = {name: i for i, name in enumerate(ALL_COUNTS)}


@dataclass(frozen=True)
class ModeTables:
    """Every mode of a replay, compiled; row m is modes[m]."""

    params: np.ndarray        # (modes, N_PARAMS) int64, kernel_core.P_*
    on_event: np.ndarray      # (modes, kinds) int64: acc column of the kind's driver, or -1
    drops: np.ndarray         # (modes, n) uint64: dropped ports, then dropped read ports
    cols: np.ndarray          # (len(KERNEL_COUNTS),) int64: acc column of each kernel count
    is_exit: np.ndarray       # (len(ALL_COUNTS),) bool: the column is a VM exit
    tlb_entries: np.ndarray   # (modes,) int64
    pool_pages: np.ndarray    # (modes,) int64 (0 without shadow paging)
    soft_entries: np.ndarray  # (modes,) int64 (0 without softmmu)

    def __len__(self) -> int:
        return len(self.params)

    def softmmu(self, m: int) -> bool:
        return bool(self.params[m, core.P_SOFTMMU])

    def shadow(self, m: int) -> bool:
        return bool(self.params[m, core.P_SHADOW])


def compile_modes(modes: Sequence[Mode], table_shift: int) -> ModeTables:
    """The kernel's arrays for `modes`; raises ValueError for sizes the reference rejects."""
    rows = [_params(m, table_shift) for m in modes]
    n_drops = max([len(m.dropped_io_ports) + len(m.dropped_io_reads) for m in modes] + [1])
    drops = np.zeros((len(modes), n_drops), dtype=np.uint64)
    for i, m in enumerate(modes):
        ports = sorted(m.dropped_io_ports) + sorted(m.dropped_io_reads)
        drops[i, : len(ports)] = ports
    return ModeTables(
        params=np.array(rows, dtype=np.int64).reshape(len(modes), core.N_PARAMS),
        on_event=np.array([_on_event(m) for m in modes], dtype=np.int64).reshape(len(modes), len(Kind)),
        drops=drops,
        cols=np.array([COLUMN[n] for n in core.KERNEL_COUNTS], dtype=np.int64),
        is_exit=np.array([n.startswith("exit_") for n in ALL_COUNTS]),
        tlb_entries=np.array([m.tlb_entries for m in modes], dtype=np.int64),
        pool_pages=np.array([m.shadow_pool_pages if PAGING_FEATURES[m.paging][1] else 0 for m in modes],
                            dtype=np.int64),
        soft_entries=np.array([m.softmmu_tlb_entries if PAGING_FEATURES[m.paging][0] else 0 for m in modes],
                              dtype=np.int64),
    )


def _params(mode: Mode, table_shift: int) -> list[int]:
    softmmu, shadow = PAGING_FEATURES[mode.paging]
    if mode.tlb_entries < 1:
        raise ValueError(f"mode {mode.name}: tlb_entries must be >= 1, got {mode.tlb_entries}")
    if softmmu and (mode.softmmu_tlb_entries <= 0 or mode.softmmu_tlb_entries & (mode.softmmu_tlb_entries - 1)):
        raise ValueError(f"softmmu TLB size must be a power of two, got {mode.softmmu_tlb_entries}")
    if shadow and mode.shadow_pool_pages < 2:
        raise ValueError(f"shadow pool needs at least 2 pages, got {mode.shadow_pool_pages}")
    p = [0] * core.N_PARAMS
    p[core.P_SOFTMMU] = softmmu
    p[core.P_SHADOW] = shadow
    p[core.P_FLUSH_ON_EXIT] = mode.tlb_flush_on_exit
    p[core.P_SOFT_MASK] = mode.softmmu_tlb_entries - 1
    p[core.P_CR3_CACHE] = mode.cr3_cache_size
    p[core.P_KEEP_ON_CR3] = mode.shadow_keep_on_cr3
    p[core.P_UPDATE_ON_PTE] = mode.shadow_update_on_pte_write
    # reference.invlpg: the PTE is dropped when invlpg is trapped at all (a key in on_event).
    p[core.P_INVLPG_ZAPS] = Kind.INVLPG in mode.on_event
    p[core.P_N_DROP_PORTS] = len(mode.dropped_io_ports)
    p[core.P_N_DROP_READS] = len(mode.dropped_io_reads)
    p[core.P_PTE_MASK] = (1 << table_shift) - 1
    return [int(x) for x in p]


def _on_event(mode: Mode) -> list[int]:
    """reference.Machine.on_event: a kind's driver is caused only when the name is non-empty."""
    row = [-1] * len(Kind)
    for kind, driver in mode.on_event.items():
        if driver:
            if driver not in DRIVERS:
                raise ValueError(f"mode {mode.name}: unknown driver {driver!r} for {kind.name.lower()}")
            row[int(kind)] = COLUMN[driver]
    return row
