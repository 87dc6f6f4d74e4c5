"""The compiled replay: reference.py's counts, exactly, at tens of millions of events per second.

    state = new_state(modes, guest)          # one vCPU, any number of modes at once
    for batch in row_groups:                 # bounded memory: state carries across batches
        replay_batch(state, kind, value, asid, arg)
    counts(state, span_ns)                   # one Counts per mode, == reference.replay
    attribution(state, m, span_ns)           # the same counts per (kind, asid, device) source
    reset_counts(state); states_equal(a, b)  # chunks: warm up, count from here, verify the warm-up

Keys are made dense as batches arrive (keys.py), so any split of a trace into batches
gives the same state and counts as one call; `states_equal` compares the model state of
two replays (TLBs, softmmu TLB, CR3 cache, held roots, shadow pool with its PTEs) by the trace's own
keys, for chunked replays that must prove their warm-up reached the sequential state.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from replay import kernel_core as core
from replay.counts import ALL_COUNTS, Counts
from replay.events import Events, check_columns
from replay.kernel_mode import COLUMN, ModeTables, compile_modes
from replay.keys import TraceKeys
from replay.kinds import Kind
from replay.mode import Guest, Mode
from replay.shadow import TABLE_SHIFT

PTE_WORDS = max(1, (1 << TABLE_SHIFT) // 64)  # a shadow page's PTE bitmap, in u64 words
BUSY_KIND = "busy"  # the attribution table's kind for what no event causes (reference.BUSY)


@dataclass
class Lru:
    """LRUs in kernel_core's row layout, one per row; regions grow with the keys seen."""

    A: np.ndarray          # (rows, L_HEADER + keys + 6 slots + extra_words x slots) int64
    keys: int = 0
    slots: int = 0
    extra_words: int = 0

    @classmethod
    def empty(cls, capacity: np.ndarray, extra_words: int = 0) -> Lru:
        A = np.zeros((len(capacity), core.L_HEADER), dtype=np.int64)
        A[:, [core.L_HEAD, core.L_TAIL]] = core.NONE
        A[:, core.L_CAP] = capacity
        A[:, core.L_EXTRA_WORDS] = extra_words
        lru = cls(A, extra_words=extra_words)
        lru._layout()
        return lru

    def fit(self, keys: int) -> None:
        """Room for `keys` keys; slots: never more than the capacity or the keys seen."""
        slots = int(np.minimum(self.A[:, core.L_CAP], keys).max(initial=0))
        if keys <= self.keys and slots <= self.slots:
            return
        old = Lru(self.A, self.keys, self.slots, self.extra_words)
        self.keys, self.slots = max(keys, self.keys), max(slots, self.slots)
        self.A = np.zeros((len(old.A), self._width()), dtype=np.int64)
        self.A[:, : core.L_HEADER] = old.A[:, : core.L_HEADER]
        self._layout()
        for field, fill in LRU_FILL.items():
            n_old, n_new = old._length(field), self._length(field)
            self.region(field)[:, n_old:n_new] = fill
            self.region(field)[:, :n_old] = old.region(field)

    def region(self, field: int) -> np.ndarray:
        """The (rows, n) view of one array of the layout (an L_* offset field)."""
        start = int(self.A[0, field]) if len(self.A) else 0
        return self.A[:, start: start + self._length(field)]

    def order(self, r: int) -> list[int]:
        """Keys of row r, least recently used first."""
        out, s = [], int(self.A[r, core.L_TAIL])
        slot_key, prev = self.region(core.L_SLOT_KEY)[r], self.region(core.L_PREV)[r]
        while s >= 0:
            out.append(int(slot_key[s]))
            s = int(prev[s])
        return out

    def slot_of(self, r: int, key: int) -> int:
        return int(self.region(core.L_KEY_SLOT)[r, key])

    def _length(self, field: int) -> int:
        if field == core.L_KEY_SLOT:
            return self.keys
        return self.slots * (self.extra_words if field == core.L_EXTRA else 1)

    def _width(self) -> int:
        return core.L_HEADER + self.keys + self.slots * (len(core.LRU_SLOT_ARRAYS) + self.extra_words)

    def _layout(self) -> None:
        at = core.L_HEADER
        for field in (core.L_KEY_SLOT, *core.LRU_SLOT_ARRAYS, core.L_EXTRA):
            self.A[:, field] = at
            at += self._length(field)


# Initial value of each LRU array: -1 = no slot / no neighbour / not in the flushable set.
LRU_FILL = {core.L_KEY_SLOT: core.NONE, core.L_SLOT_KEY: 0, core.L_PREV: core.NONE, core.L_NEXT: core.NONE,
            core.L_FREE: 0, core.L_SET_POS: core.NONE, core.L_SET_LIST: 0, core.L_EXTRA: 0}


@dataclass
class KernelState:
    """One vCPU's replay under several modes: keys, every mode's state, counts per source."""

    modes: tuple[Mode, ...]
    guest: Guest
    tables: ModeTables
    keys: TraceKeys
    tlb: Lru               # rows 2m (native's TLB) and 2m+1 (the mode's own), keyed by vpn id
    pool: Lru              # row m: shadow pages keyed by table id, a PTE bitmap per slot
    soft: np.ndarray       # (modes, 1 + 2 entries): epoch, tags (vpn id), epochs of the tags
    misc: np.ndarray       # (modes, 3 + cache + roots): kernel_core.M_*, CR3 cache slots, held roots
    acc: np.ndarray        # (modes, sources, ALL_COUNTS) int64
    events: int = 0


def new_state(modes: Sequence[Mode], guest: Guest) -> KernelState:
    """Empty state for replaying one vCPU's events under each of `modes`."""
    tables = compile_modes(modes, TABLE_SHIFT)
    n = len(modes)
    soft = np.full((n, 1 + 2 * max(1, int(tables.soft_entries.max(initial=0)))), core.NONE, dtype=np.int64)
    soft[:, core.S_EPOCH] = 0
    misc = np.full((n, core.M_CR3_SLOTS + max(1, int((tables.cr3_cache + tables.roots).max(initial=0)))),
                   core.NONE, dtype=np.int64)
    misc[:, [core.M_PENDING, core.M_CR3_NEXT, core.M_ROOTS_HELD]] = 0
    state = KernelState(
        modes=tuple(modes), guest=guest, tables=tables,
        keys=TraceKeys(guest.kernel_vpn_min, TABLE_SHIFT),
        tlb=Lru.empty(np.repeat(tables.tlb_entries, 2)),
        pool=Lru.empty(tables.pool_pages, extra_words=PTE_WORDS),
        soft=soft, misc=misc,
        acc=np.zeros((n, 0, len(ALL_COUNTS)), dtype=np.int64),
    )
    _fit(state)
    return state


def replay_batch(state: KernelState, kind: np.ndarray, value: np.ndarray, asid: np.ndarray,
                 arg: np.ndarray) -> None:
    """Replay the next events of the vCPU (Events' columns) under every mode of `state`."""
    kind = _column(kind, np.uint8)
    check_columns(kind, value, asid, arg, first_row=state.events)
    value, arg = _column(value, np.uint64), _column(arg, np.uint32)
    ref, source = state.keys.remap(kind, value, _column(asid, np.uint32))
    _fit(state)
    core.replay_events(kind, value, arg, ref, source, state.tables.params, state.keys.page_info,
                       state.keys.tables.pairs, state.tlb.A, state.pool.A, state.soft, state.misc, state.acc)
    state.events += len(kind)


def counts(state: KernelState, span_ns: int) -> list[Counts]:
    """Each mode's counts so far (reference.Machine.counts); `span_ns` as in Events."""
    return [_totals(state, m, span_ns) for m in range(len(state.modes))]


def attribution(state: KernelState, m: int, span_ns: int | None = None) -> dict[str, np.ndarray]:
    """Mode m's counts per source (kind, asid, device) and driver, nonzero rows only.

    Columns kind (str), asid, device, driver (str), count; summed over sources they are
    `counts(state, span_ns)[m]`. What no one event causes (QEMU's busy time) has kind "busy"
    (busy_rows), left out when span_ns is None (a chunk of a shard, whose merge adds it once)."""
    per = _per_source(state, m)
    src, col = np.nonzero(per)
    keys = [state.keys.source_key(int(s)) for s in src]
    rows: dict[str, list[Any]] = {"kind": [Kind(k).name.lower() for k, _, _ in keys], "asid": [a for _, a, _ in keys],
            "device": [d for _, _, d in keys], "driver": [ALL_COUNTS[c] for c in col], "count": list(per[src, col])}
    if span_ns is not None:
        for column, extra in busy_rows(state.modes[m], span_ns, int(per[:, COLUMN["idle_ns"]].sum())).items():
            rows[column] += extra
    return {"kind": np.array(rows["kind"], dtype=object), "asid": np.array(rows["asid"], dtype=np.int64),
            "device": np.array(rows["device"], dtype=np.int64), "driver": np.array(rows["driver"], dtype=object),
            "count": np.array(rows["count"], dtype=np.int64)}


def busy_rows(mode: Mode, span_ns: int, idle_ns: int) -> dict[str, list]:
    """Mode.busy_counts as attribution rows (kind "busy", no asid or device): for `attribution`
    and for the merge of a shard's chunks (pipeline/run/chunked.py), which adds them once."""
    values = mode.busy_counts(span_ns, idle_ns).values
    return {"kind": [BUSY_KIND] * len(values), "asid": [-1] * len(values), "device": [-1] * len(values),
            "driver": list(values), "count": list(values.values())}


def replay(events: Events, guest: Guest, mode: Mode) -> Counts:
    """Drop-in for reference.replay."""
    return replay_modes(events, guest, [mode])[0]


def replay_modes(events: Events, guest: Guest, modes: Sequence[Mode]) -> list[Counts]:
    """One vCPU's events under every mode in one pass."""
    state = new_state(modes, guest)
    replay_batch(state, events.kind, events.value, events.asid, events.arg)
    return counts(state, events.span_ns)


def reset_counts(state: KernelState) -> None:
    """Zero the counts, keep the model state: a chunk's warm-up prefix is replayed, then
    reset, so the chunk counts only its own events."""
    state.acc[:] = 0
    state.keys.source_events[:] = 0
    state.events = 0


def snapshot(state: KernelState) -> tuple[dict[str, Any], ...]:
    """Each mode's model state in the trace's own keys (vpns, asids), LRU order kept.

    Independent of how ids were assigned, so a state warmed up from any point compares
    equal to the sequential one exactly when the model would behave the same from here."""
    return tuple(_mode_snapshot(state, m) for m in range(len(state.modes)))


def states_equal(a: KernelState, b: KernelState) -> bool:
    """Same modes and the same model state (counts are not state: they are not compared)."""
    return a.modes == b.modes and a.guest == b.guest and snapshot(a) == snapshot(b)


# --- internals ------------------------------------------------------------------------------

def _column(a: np.ndarray, dtype: type) -> np.ndarray:
    """A read-only C-contiguous view (copy only if the dtype differs): Arrow's zero-copy
    columns are read-only, and numba compiles (and caches) read-only and writable
    arguments separately, so every input is made read-only to need one compile."""
    view: np.ndarray = np.ascontiguousarray(a, dtype=dtype).view()
    view.flags.writeable = False
    return view


def _fit(state: KernelState) -> None:
    """Grow the key-indexed arrays to the keys seen so far (after each remap)."""
    k = state.keys
    state.tlb.fit(k.vpns.limit)
    state.pool.fit(k.tables.limit)
    if state.acc.shape[1] < k.sources.limit:
        acc = np.zeros((len(state.modes), k.sources.limit, len(ALL_COUNTS)), dtype=np.int64)
        acc[:, : state.acc.shape[1]] = state.acc
        state.acc = acc


def _per_source(state: KernelState, m: int) -> np.ndarray:
    """acc[m] with the counts derived per source: events, tlb_refill_extra, tdp_walk_extra.

    The oracle counts the last two per touch; only touches count TLB misses, so a source's
    sums are the same (and its own TLB never misses where native's hits: it only loses
    entries more often)."""
    n = len(state.keys.sources)
    per = state.acc[m, :n].copy()
    per[:, COLUMN["events"]] = state.keys.source_events[:n]
    if state.tables.own_tlb(m):
        per[:, COLUMN["tlb_refill_extra"]] = per[:, COLUMN["tlb_miss"]] - per[:, COLUMN["tlb_miss_native"]]
    if state.tables.walks_2d(m):
        per[:, COLUMN["tdp_walk_extra"]] = per[:, COLUMN["tlb_miss"]]
    return per


def _totals(state: KernelState, m: int, span_ns: int) -> Counts:
    total = _per_source(state, m).sum(axis=0)
    caused = Counts({name: int(v) for name, v in zip(ALL_COUNTS, total) if v})
    return caused + state.modes[m].busy_counts(span_ns, int(total[COLUMN["idle_ns"]]))


def _mode_snapshot(state: KernelState, m: int) -> dict[str, Any]:
    k, t = state.keys, state.tables
    snap: dict[str, Any] = {"tlb_native": [k.vpn_key(v) for v in state.tlb.order(2 * m)]}
    if t.softmmu(m):
        n = int(t.soft_entries[m])
        row = state.soft[m]
        tags, epochs = row[core.S_TAGS: core.S_TAGS + n], row[core.S_TAGS + n: core.S_TAGS + 2 * n]
        snap["softmmu"] = [k.vpn_key(int(v)) if v >= 0 and e == row[core.S_EPOCH] else None
                           for v, e in zip(tags, epochs)]
    if t.own_tlb(m):
        snap["tlb"] = [k.vpn_key(v) for v in state.tlb.order(2 * m + 1)]
    if t.shadow(m):
        snap["pool"] = [_page(state, m, table) for table in state.pool.order(m)]
        size = int(t.cr3_cache[m])
        slots = state.misc[m, core.M_CR3_SLOTS: core.M_CR3_SLOTS + size]
        # Round-robin refill: the slots from the next one to fill on, oldest fill first. Two
        # caches that list the same this way behave the same whatever slot they started at.
        first = int(state.misc[m, core.M_CR3_NEXT]) if size else 0
        snap["cr3_cache"] = [None if s < 0 else k.space_key(int(s)) for s in np.roll(slots, -first)]
        held = core.M_CR3_SLOTS + size + np.arange(state.misc[m, core.M_ROOTS_HELD])
        snap["roots"] = [k.space_key(int(s)) for s in state.misc[m, held]]
    return snap


def _page(state: KernelState, m: int, table: int) -> tuple[Any, ...]:
    """A shadow page: (asid or None for global, guest table or None for root, filled PTE vpns)."""
    space, index = state.keys.table_key(table)
    slot = state.pool.slot_of(m, table)
    words = state.pool.region(core.L_EXTRA)[m, slot * PTE_WORDS: (slot + 1) * PTE_WORDS]
    bits = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))
    base = 0 if index is None else index << TABLE_SHIFT
    return space, index, tuple(base + int(b) for b in bits)
