"""The compiled replay: reference.py's counts, exactly, at tens of millions of events per second.

    state = new_state(modes, guest)          # one vCPU, any number of modes at once
    for batch in row_groups:                 # bounded memory: state carries across batches
        replay_batch(state, kind, value, asid, arg)
    counts(state, span_ns)                   # one Counts per mode, == reference.replay
    attribution(state, m, span_ns)           # the same counts per (kind, asid, device) source

Keys are made dense as batches arrive (keys.py), so any split of a trace into batches
gives the same state and counts as one call; `states_equal` compares the model state of
two replays (TLBs, softmmu TLB, CR3 cache, shadow pool with its PTEs) by the trace's own
keys, for chunked replays that must prove their warm-up reached the sequential state.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from replay import kernel_core as core
from replay.counts import ALL_COUNTS, Counts
from replay.events import Events
from replay.kernel_mode import COLUMN, ModeTables, compile_modes
from replay.keys import TraceKeys
from replay.kinds import MAX_KIND, Kind
from replay.mode import Guest, Mode
from replay.shadow import TABLE_SHIFT

PTE_WORDS = max(1, (1 << TABLE_SHIFT) // 64)  # a shadow page's PTE bitmap, in u64 words


@dataclass
class Lru:
    """One LRU per row (kernel_core's layout); slot arrays grow with the keys seen."""

    key_slot: np.ndarray  # (rows, keys) slot of each key, -1 if absent
    slot_key: np.ndarray  # (rows, slots)
    prev: np.ndarray
    nxt: np.ndarray
    free: np.ndarray
    set_pos: np.ndarray   # position in set_list, -1 if not flushable
    set_list: np.ndarray
    meta: np.ndarray      # (rows, N_META): head, tail, size, fresh, nfree, nset, capacity

    @classmethod
    def empty(cls, capacity: np.ndarray) -> Lru:
        rows = len(capacity)
        meta = np.zeros((rows, core.N_META), dtype=np.int64)
        meta[:, [core.HEAD, core.TAIL]] = core.NONE
        meta[:, core.CAP] = capacity
        slots = lambda fill: np.full((rows, 0), fill, dtype=np.int64)  # noqa: E731
        return cls(slots(-1), slots(0), slots(-1), slots(-1), slots(0), slots(-1), slots(0), meta)

    def fit(self, keys: int) -> None:
        """Room for `keys` keys; slots: never more than the capacity or the keys seen."""
        slots = int(np.minimum(self.meta[:, core.CAP], keys).max(initial=0))
        self.key_slot = _widen(self.key_slot, keys, -1)
        for name, fill in (("slot_key", 0), ("prev", -1), ("nxt", -1), ("free", 0), ("set_pos", -1),
                           ("set_list", 0)):
            setattr(self, name, _widen(getattr(self, name), slots, fill))

    def as_tuple(self) -> tuple:
        return (self.key_slot, self.slot_key, self.prev, self.nxt, self.free, self.set_pos, self.set_list,
                self.meta)

    def order(self, r: int) -> list[int]:
        """Keys of row r, least recently used first."""
        out, s = [], int(self.meta[r, core.TAIL])
        while s >= 0:
            out.append(int(self.slot_key[r, s]))
            s = int(self.prev[r, s])
        return out


@dataclass
class KernelState:
    """One vCPU's replay under several modes: keys, every mode's state, counts per source."""

    modes: tuple[Mode, ...]
    guest: Guest
    tables: ModeTables
    keys: TraceKeys
    tlb: Lru               # rows 2m (native's TLB) and 2m+1 (the mode's own)
    pool: Lru              # row m: shadow pages, keyed by table id
    bits: np.ndarray       # (modes, pool slots, PTE_WORDS) uint64: filled shadow PTEs
    soft_tag: np.ndarray   # (modes, softmmu entries) vpn id per slot
    soft_stamp: np.ndarray  # flush epoch the tag was filled in
    soft_epoch: np.ndarray  # (modes,)
    cr3_slots: np.ndarray  # (modes, cache size) space id per slot, -1 empty
    cr3_next: np.ndarray   # (modes,) round-robin refill position
    acc: np.ndarray        # (modes, sources, ALL_COUNTS) int64
    events: int = 0


def new_state(modes: Sequence[Mode], guest: Guest) -> KernelState:
    """Empty state for replaying one vCPU's events under each of `modes`."""
    tables = compile_modes(modes, TABLE_SHIFT)
    n = len(modes)
    soft = max(1, int(tables.soft_entries.max(initial=0)))
    state = KernelState(
        modes=tuple(modes), guest=guest, tables=tables,
        keys=TraceKeys(guest.kernel_vpn_min, TABLE_SHIFT),
        tlb=Lru.empty(np.repeat(tables.tlb_entries, 2)),
        pool=Lru.empty(tables.pool_pages),
        bits=np.zeros((n, 0, PTE_WORDS), dtype=np.uint64),
        soft_tag=np.full((n, soft), -1, dtype=np.int64),
        soft_stamp=np.zeros((n, soft), dtype=np.int64),
        soft_epoch=np.zeros(n, dtype=np.int64),
        cr3_slots=np.full((n, max(1, max(m.cr3_cache_size for m in modes))), -1, dtype=np.int64),
        cr3_next=np.zeros(n, dtype=np.int64),
        acc=np.zeros((n, 0, len(ALL_COUNTS)), dtype=np.int64),
    )
    _fit(state)
    return state


def replay_batch(state: KernelState, kind: np.ndarray, value: np.ndarray, asid: np.ndarray,
                 arg: np.ndarray) -> None:
    """Replay the next events of the vCPU (Events' columns) under every mode of `state`."""
    kind = np.ascontiguousarray(kind, dtype=np.uint8)
    if not len(kind) == len(value) == len(asid) == len(arg):
        raise ValueError("event columns differ in length")
    bad = np.flatnonzero(kind > MAX_KIND)
    if bad.size:
        raise ValueError(f"row {state.events + int(bad[0])}: unknown event kind {int(kind[bad[0]])}")
    value = np.ascontiguousarray(value, dtype=np.uint64)
    arg = np.ascontiguousarray(arg, dtype=np.uint32)
    ref, source = state.keys.remap(kind, value, np.ascontiguousarray(asid, dtype=np.uint32))
    _fit(state)
    t = state.tables
    core.replay_events(
        kind, value, arg, ref, source,
        (t.params, t.on_event, t.cols, t.is_exit, t.drops),
        (state.keys.page_info, state.keys.tables.pairs),
        (state.tlb.as_tuple(), state.pool.as_tuple(), state.bits, state.soft_tag, state.soft_stamp,
         state.soft_epoch, state.cr3_slots, state.cr3_next, state.acc))
    state.events += len(kind)


def counts(state: KernelState, span_ns: int) -> list[Counts]:
    """Each mode's counts so far (reference.Machine.counts); `span_ns` as in Events."""
    return [_totals(state, m, span_ns) for m in range(len(state.modes))]


def attribution(state: KernelState, m: int, span_ns: int) -> dict[str, np.ndarray]:
    """Mode m's counts per source (kind, asid, device) and driver, nonzero rows only.

    Columns kind (str), asid, device, driver (str), count; summed over sources they are
    `counts(state, span_ns)[m]`. QEMU's emulated_ns is caused by no one event: kind "busy"."""
    per = _per_source(state, m)
    src, col = np.nonzero(per)
    keys = [state.keys.source_key(int(s)) for s in src]
    kind = [Kind(k).name.lower() for k, _, _ in keys]
    asid = [a for _, a, _ in keys]
    device = [d for _, _, d in keys]
    driver = [ALL_COUNTS[c] for c in col]
    count = list(per[src, col])
    busy = _emulated_ns(state, m, span_ns, int(per[:, COLUMN["idle_ns"]].sum()))
    if busy:
        kind, asid, device, driver, count = (kind + ["busy"], asid + [-1], device + [-1],
                                             driver + ["emulated_ns"], count + [busy])
    return {"kind": np.array(kind, dtype=object), "asid": np.array(asid, dtype=np.int64),
            "device": np.array(device, dtype=np.int64), "driver": np.array(driver, dtype=object),
            "count": np.array(count, dtype=np.int64)}


def replay(events: Events, guest: Guest, mode: Mode) -> Counts:
    """Drop-in for reference.replay."""
    return replay_modes(events, guest, [mode])[0]


def replay_modes(events: Events, guest: Guest, modes: Sequence[Mode]) -> list[Counts]:
    """One vCPU's events under every mode in one pass."""
    state = new_state(modes, guest)
    replay_batch(state, events.kind, events.value, events.asid, events.arg)
    return counts(state, events.span_ns)


def snapshot(state: KernelState) -> tuple[dict[str, Any], ...]:
    """Each mode's model state in the trace's own keys (vpns, asids), LRU order kept.

    Independent of how ids were assigned, so a state warmed up from any point compares
    equal to the sequential one exactly when the model would behave the same from here."""
    return tuple(_mode_snapshot(state, m) for m in range(len(state.modes)))


def states_equal(a: KernelState, b: KernelState) -> bool:
    """Same modes and the same model state (counts are not state: they are not compared)."""
    return a.modes == b.modes and a.guest == b.guest and snapshot(a) == snapshot(b)


# --- internals ------------------------------------------------------------------------------

def _fit(state: KernelState) -> None:
    """Grow the key-indexed arrays to the keys seen so far (after each remap)."""
    k = state.keys
    state.tlb.fit(k.vpns.limit)
    state.pool.fit(k.tables.limit)
    state.bits = _widen(state.bits, state.pool.slot_key.shape[1], 0)
    state.acc = _widen(state.acc, k.sources.limit, 0)


def _widen(a: np.ndarray, n: int, fill: int) -> np.ndarray:
    """`a` with axis 1 at least n long, new cells = fill."""
    if a.shape[1] >= n:
        return a
    out = np.full((a.shape[0], n) + a.shape[2:], fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _per_source(state: KernelState, m: int) -> np.ndarray:
    """acc[m] with the counts derived per source: events, and tlb_refill_extra."""
    n = len(state.keys.sources)
    per = state.acc[m, :n].copy()
    per[:, COLUMN["events"]] = state.keys.source_events[:n]
    if state.tables.shadow(m):
        per[:, COLUMN["tlb_refill_extra"]] = per[:, COLUMN["tlb_miss"]] - per[:, COLUMN["tlb_miss_native"]]
    return per


def _emulated_ns(state: KernelState, m: int, span_ns: int, idle_ns: int) -> int:
    return span_ns - idle_ns if state.tables.softmmu(m) else 0


def _totals(state: KernelState, m: int, span_ns: int) -> Counts:
    total = _per_source(state, m).sum(axis=0)
    total[COLUMN["emulated_ns"]] = _emulated_ns(state, m, span_ns, int(total[COLUMN["idle_ns"]]))
    return Counts({name: int(v) for name, v in zip(ALL_COUNTS, total) if v})


def _mode_snapshot(state: KernelState, m: int) -> dict[str, Any]:
    k, t = state.keys, state.tables
    snap: dict[str, Any] = {"tlb_native": [k.vpn_key(v) for v in state.tlb.order(2 * m)]}
    if t.softmmu(m):
        tags = zip(state.soft_tag[m, : t.soft_entries[m]], state.soft_stamp[m])
        snap["softmmu"] = [k.vpn_key(int(v)) if v >= 0 and s == state.soft_epoch[m] else None for v, s in tags]
    if t.shadow(m):
        snap["tlb"] = [k.vpn_key(v) for v in state.tlb.order(2 * m + 1)]
        snap["pool"] = [_page(state, m, table) for table in state.pool.order(m)]
        size = state.modes[m].cr3_cache_size
        snap["cr3_cache"] = ([None if s < 0 else k.space_key(int(s)) for s in state.cr3_slots[m, :size]],
                             int(state.cr3_next[m]) if size else 0)
    return snap


def _page(state: KernelState, m: int, table: int) -> tuple[Any, ...]:
    """A shadow page: (asid or None for global, guest table or None for root, filled PTE vpns)."""
    space, index = state.keys.table_key(table)
    words = state.bits[m, state.pool.key_slot[m, table]]
    bits = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))
    base = 0 if index is None else index << TABLE_SHIFT
    return space, index, tuple(base + int(b) for b in bits)
