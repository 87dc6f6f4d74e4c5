"""Modes as the kernel's data: flags, sizes and tables, one row per mode.

The kernel (kernel_core.py) has no notion of a named mode: it reads what each event does
from these arrays, so a new mode built from existing features is a new row, not new
code. A new *feature* (a paging scheme, a cache) is a new flag here plus its handler in
kernel_core.py, mirroring its handler in reference.py. The modes arrive checked
(Mode.__post_init__); what a paging scheme replays is replay.mode.PAGING, which the
reference reads too.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from replay import kernel_core as core
from replay.counts import ALL_COUNTS, EXITS
from replay.kinds import Kind
from replay.mode import Mode


COLUMN = {name: i for i, name in enumerate(ALL_COUNTS)}


@dataclass(frozen=True)
class ModeTables:
    """Every mode of a replay, compiled: row m of `params` is modes[m] (kernel_core.P_*, O_*)."""

    params: np.ndarray        # (modes, width) int64
    tlb_entries: np.ndarray   # (modes,) int64
    pool_pages: np.ndarray    # (modes,) int64 (0 without shadow paging)
    soft_entries: np.ndarray  # (modes,) int64 (0 without softmmu)
    cr3_cache: np.ndarray     # (modes,) int64
    roots: np.ndarray         # (modes,) int64: shadow roots held, current included (0 = no LRU)

    def softmmu(self, m: int) -> bool:
        return bool(self.params[m, core.P_SOFTMMU])

    def shadow(self, m: int) -> bool:
        return bool(self.params[m, core.P_SHADOW])

    def own_tlb(self, m: int) -> bool:
        return bool(self.params[m, core.P_OWN_TLB])

    def walks_2d(self, m: int) -> bool:
        return bool(self.params[m, core.P_WALKS_2D])


def compile_modes(modes: Sequence[Mode], table_shift: int) -> ModeTables:
    """The kernel's arrays for `modes` (checked: Mode.__post_init__)."""
    rows = [_row(m, table_shift) for m in modes]
    width = max(len(r) for r in rows)
    params = np.zeros((len(modes), width), dtype=np.int64)
    for i, r in enumerate(rows):
        params[i, : len(r)] = r
    return ModeTables(
        params=params,
        tlb_entries=np.array([m.tlb_entries for m in modes], dtype=np.int64),
        pool_pages=np.array([m.shadow_pool_pages for m in modes], dtype=np.int64) * params[:, core.P_SHADOW],
        soft_entries=(params[:, core.P_SOFT_MASK] + 1) * params[:, core.P_SOFTMMU],
        cr3_cache=params[:, core.P_CR3_CACHE].copy(),
        roots=params[:, core.P_ROOTS].copy(),
    )


def _row(mode: Mode, table_shift: int) -> list[int]:
    """P_* flags and sizes, then the tables at their O_* offsets."""
    f = mode.features
    p = [0] * core.N_PARAMS
    p[core.P_SOFTMMU] = f.softmmu
    p[core.P_SHADOW] = f.shadow
    p[core.P_OWN_TLB] = f.own_tlb
    p[core.P_WALKS_2D] = f.walks_2d
    p[core.P_FLUSH_ON_EXIT] = mode.tlb_flush_on_exit
    p[core.P_SOFT_MASK] = mode.softmmu_tlb_entries - 1
    p[core.P_CR3_CACHE] = mode.cr3_cache_size
    # reference.Machine.roots: the current root and prev_roots earlier ones, shadow paging only.
    p[core.P_ROOTS] = mode.prev_roots + 1 if f.shadow and mode.prev_roots else 0
    p[core.P_KEEP_ON_CR3] = mode.shadow_keep_on_cr3
    p[core.P_UPDATE_ON_PTE] = mode.shadow_update_on_pte_write
    # reference.invlpg: the PTE is dropped when invlpg is trapped at all (a key in on_event).
    p[core.P_INVLPG_ZAPS] = Kind.INVLPG in mode.on_event
    p[core.P_PTE_MASK] = (1 << table_shift) - 1
    tables = {
        core.O_ON_EVENT: _on_event(mode),
        core.O_COLS: [COLUMN[n] for n in core.KERNEL_COUNTS],
        core.O_IS_EXIT: [int(n in EXITS) for n in ALL_COUNTS],
        core.O_DROP_PORTS: _listed(mode.dropped_io_ports),
        core.O_DROP_READS: _listed(mode.dropped_io_reads),
        core.O_DROP_WRITES: _listed(mode.dropped_io_writes),
        core.O_DROP_MMIO_READS: _listed(mode.dropped_mmio_reads),
        core.O_DROP_MMIO_WRITES: _listed(mode.dropped_mmio_writes),
    }
    for offset, table in tables.items():
        p[offset] = len(p)
        p += table
    return [int(x) for x in p]


def _listed(values: frozenset[int]) -> list[int]:
    """kernel_core.listed's table: the length, then the values as int64 (u64 addresses wrap,
    and the kernel compares them as u64 again)."""
    return [len(values)] + [v - (1 << 64) if v >= 1 << 63 else v for v in sorted(values)]


def _on_event(mode: Mode) -> list[int]:
    """reference.Machine.on_event: a kind's driver is caused only when the name is non-empty."""
    row = [-1] * core.N_KINDS
    for kind, driver in mode.on_event.items():
        if driver:
            row[int(kind)] = COLUMN[driver]
    return row
