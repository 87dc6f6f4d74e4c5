"""The compiled replay: reference.py's counts, exactly, at tens of millions of events per second.

    state = new_state(modes, guest)          # one vCPU, any number of modes at once
    for batch in row_groups:                 # bounded memory: state carries across batches
        replay_batch(state, kind, value, asid, arg)
    counts(state, span_ns)                   # one Counts per mode, == reference.replay
    attribution(state, m, span_ns)           # the same counts per (kind, asid, device) source
    reset_counts(state); states_equal(a, b)  # chunks: warm up, count from here, verify the warm-up
    restore(new_state(...), snapshot(s))     # chunks: start from another replay's state

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
from replay.kernel_mode import COLUMNS, TO_ALL, compile_modes
from replay.keys import TraceKeys
from replay.lapic import NEVER_ARMED
from replay.kinds import Kind
from replay.mode import Guest, Mode, Paging
from replay.shadow import TABLE_SHIFT

PTE_WORDS = max(1, (1 << TABLE_SHIFT) // 64)  # a shadow page's PTE bitmap, in u64 words
Snapshot = tuple[dict[str, Any], ...]  # snapshot's: one dict per mode, in the trace's own keys
POSITION = {name: i for i, name in enumerate(ALL_COUNTS)}
BUSY_KIND = "busy"  # the attribution table's kind for what no event causes (reference.BUSY)
# Initial value of an Lru's per-key and per-slot entries: NONE = no slot, no neighbour, not flushable.
LRU_FILL = {"key_slot": core.NONE, "slot_key": 0, "newer": core.NONE, "older": core.NONE, "free": 0,
            "set_pos": core.NONE, "set_list": 0}


@dataclass
class KernelState:
    """One vCPU's replay under several modes: keys, every mode's state and counts (kernel_core.State)."""

    modes: tuple[Mode, ...]
    guest: Guest
    keys: TraceKeys
    machine: core.State
    events: int = 0


def new_state(modes: Sequence[Mode], guest: Guest) -> KernelState:
    """Empty state for replaying one vCPU's events under each of `modes`."""
    params = compile_modes(modes, guest, TABLE_SHIFT)
    n = len(modes)
    tlb_entries = np.array([m.tlb_entries for m in modes], dtype=np.int64)
    pool_pages = np.array([m.shadow_pool_pages for m in modes], dtype=np.int64) * params.shadow
    soft_entries = max(1, int(((params.soft_mask + 1) * params.softmmu).max(initial=0)))
    machine = core.State(
        params=params,
        tlb=core.Tlb(native=_empty_lru(tlb_entries), own=_empty_lru(tlb_entries), pending=np.zeros(n, np.int64)),
        pool=core.Pool(lru=_empty_lru(pool_pages), ptes=np.zeros((n, 0, PTE_WORDS), dtype=np.int64)),
        soft=core.Soft(epoch=np.zeros(n, np.int64), tag=_nones(n, soft_entries), filled=_nones(n, soft_entries)),
        cr3=core.Cr3Cache(slots=_nones(n, int(params.cr3_cache.max(initial=1))), next=np.zeros(n, np.int64)),
        roots=core.Roots(held=_nones(n, int(params.roots.max(initial=1))), n=np.zeros(n, np.int64)),
        vcpu=core.Vcpu(halted=np.zeros(n, np.bool_), timer_delay=np.full(n, NEVER_ARMED, np.uint64)),
        tally=core.Tally(acc=np.zeros((n, 0, len(COLUMNS)), dtype=np.int64)),
        track=_track(n, 0, 0, 0, on=False),
    )
    state = KernelState(modes=tuple(modes), guest=guest, keys=TraceKeys(guest.kernel_vpn_min, TABLE_SHIFT),
                        machine=machine)
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
    keys = core.Keys(pages=state.keys.page_info, tables=state.keys.tables.pairs)
    core.replay_events(state.machine, keys, core.Batch(kind, value, arg, ref, source))
    state.events += len(kind)


def counts(state: KernelState, span_ns: int) -> list[Counts]:
    """Each mode's counts so far (what reference.replay returns); `span_ns` as in Events."""
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
        for column, extra in busy_rows(state.modes[m], span_ns, int(per[:, POSITION["idle_ns"]].sum())).items():
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
    state.machine.tally.acc[:] = 0
    state.keys.source_events[:] = 0
    state.events = 0


def snapshot(state: KernelState) -> Snapshot:
    """Each mode's model state in the trace's own keys (vpns, asids), LRU order kept.

    Independent of how ids were assigned, so a state warmed up from any point compares
    equal to the sequential one exactly when the model would behave the same from here."""
    return tuple(_mode_snapshot(state, m) for m in range(len(state.modes)))


def restore(state: KernelState, snap: Snapshot) -> None:
    """Put `snap` (snapshot's, of the same modes and guest) into `state`, new_state's:
    snapshot's inverse, so that a chunk can start from the state the chunk before it ended
    in without replaying anything before it (pipeline/run/chunked.py's repair)."""
    if len(state.keys.sources) or len(snap) != len(state.modes):
        raise ValueError(f"restore needs a new state of {len(snap)} modes")
    dense = [_dense(state.keys, s) for s in snap]   # every key gets its id first ...
    _fit(state)                                     # ... so the arrays have room for them
    for m, d in enumerate(dense):
        _restore_mode(state, m, d)


def track_reads(state: KernelState) -> None:
    """From here on, record what the replay reads of the shadow pool, CR3 cache and TLBs it
    starts from before writing them (kernel_core.Track): a chunk replayed after a warm-up is proved
    exact with it (replay/reads.py) even where they differ from the sequential replay's in
    what the chunk never looks at."""
    k, mc = state.keys, state.machine
    track = _track(len(state.modes), k.tables.limit, k.spaces.limit, k.vpns.limit, on=True)
    track.tlb_peak[:, core.TLB_NATIVE], track.tlb_peak[:, core.TLB_OWN] = mc.tlb.native.size, mc.tlb.own.size
    state.machine = mc._replace(track=track)


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
    k, mc = state.keys, state.machine
    state.machine = mc._replace(
        tlb=mc.tlb._replace(native=_grown_lru(mc.tlb.native, k.vpns.limit), own=_grown_lru(mc.tlb.own, k.vpns.limit)),
        pool=_grown_pool(mc.pool, k.tables.limit),
        tally=core.Tally(acc=_widened(mc.tally.acc, k.sources.limit, 0)),
        track=_grown_track(mc.track, k.tables.limit, k.spaces.limit, k.vpns.limit),
    )


def _track(modes: int, tables: int, spaces: int, vpns: int, on: bool) -> core.Track:
    """Tracking arrays for `tables` table ids, `spaces` space ids and `vpns` vpn ids; off,
    they stay empty (nothing reads them)."""
    return core.Track(on=np.full(1, on), table=np.zeros((modes, tables), np.int64),
                      bits_read=np.zeros((modes, tables, PTE_WORDS), np.int64),
                      bits_wrote=np.zeros((modes, tables, PTE_WORDS), np.int64),
                      whole=np.zeros(modes, np.int64), allocs=np.zeros(modes, np.int64),
                      looked_up=np.zeros((modes, spaces), np.bool_), vpn=np.zeros((modes, vpns, 2), np.int8),
                      tlb_peak=np.zeros((modes, 2), np.int64), tlb_whole=np.zeros((modes, 2), np.int64))


def _grown_track(track: core.Track, tables: int, spaces: int, vpns: int) -> core.Track:
    if not track.on[0]:
        return track
    return track._replace(table=_widened(track.table, tables, 0), bits_read=_widened(track.bits_read, tables, 0),
                          bits_wrote=_widened(track.bits_wrote, tables, 0),
                          looked_up=_widened(track.looked_up, spaces, False), vpn=_widened(track.vpn, vpns, 0))


def _nones(rows: int, width: int) -> np.ndarray:
    return np.full((rows, width), core.NONE, dtype=np.int64)


def _empty_lru(capacity: np.ndarray) -> core.Lru:
    rows = len(capacity)
    scalar = {"head": core.NONE, "tail": core.NONE, "size": 0, "fresh": 0, "nfree": 0, "nset": 0}
    return core.Lru(cap=capacity.astype(np.int64), **{f: np.full(rows, v, dtype=np.int64) for f, v in scalar.items()},
                    **{f: np.full((rows, 0), v, dtype=np.int64) for f, v in LRU_FILL.items()})


def _slots(lru: core.Lru, keys: int) -> int:
    """Slots an Lru needs for `keys` keys: never more than its capacity or the keys seen."""
    return int(np.minimum(lru.cap, keys).max(initial=0))


def _grown_lru(lru: core.Lru, keys: int) -> core.Lru:
    """`lru` with room for `keys` keys (the same arrays if it has it)."""
    slots = _slots(lru, keys)
    return lru._replace(**{f: _widened(getattr(lru, f), keys if f == "key_slot" else slots, fill)
                           for f, fill in LRU_FILL.items()})


def _grown_pool(pool: core.Pool, tables: int) -> core.Pool:
    return core.Pool(lru=_grown_lru(pool.lru, tables), ptes=_widened(pool.ptes, _slots(pool.lru, tables), 0))


def _widened(a: np.ndarray, n: int, fill: int) -> np.ndarray:
    """`a` with at least n columns (axis 1), the new ones `fill`; `a` itself if it has them."""
    if a.shape[1] >= n:
        return a
    out = np.full((a.shape[0], n) + a.shape[2:], fill, dtype=a.dtype)
    out[:, : a.shape[1]] = a
    return out


def _per_source(state: KernelState, m: int) -> np.ndarray:
    """Mode m's counts per source in ALL_COUNTS columns, with those derived per source:
    events, tlb_refill_extra, tdp_walk_extra.

    The oracle counts the last two per touch; only touches count TLB misses, so a source's
    sums are the same (and its own TLB never misses where native's hits: it only loses
    entries more often)."""
    n = len(state.keys.sources)
    per = np.zeros((n, len(ALL_COUNTS)), dtype=np.int64)
    per[:, TO_ALL] = state.machine.tally.acc[m, :n]
    per[:, POSITION["events"]] = state.keys.source_events[:n]
    paging = state.modes[m].features
    if paging.own_tlb:
        per[:, POSITION["tlb_refill_extra"]] = per[:, POSITION["tlb_miss"]] - per[:, POSITION["tlb_miss_native"]]
    if paging.walks_2d:
        per[:, POSITION["tdp_walk_extra"]] = per[:, POSITION["tlb_miss"]]
    return per


def _totals(state: KernelState, m: int, span_ns: int) -> Counts:
    total = _per_source(state, m).sum(axis=0)
    caused = Counts({name: int(v) for name, v in zip(ALL_COUNTS, total) if v})
    return caused + state.modes[m].busy_counts(span_ns, int(total[POSITION["idle_ns"]]))


def _order(lru: core.Lru, r: int) -> list[int]:
    """Keys of row r, least recently used first."""
    out, s = [], int(lru.tail[r])
    while s >= 0:
        out.append(int(lru.slot_key[r, s]))
        s = int(lru.newer[r, s])
    return out


def _mode_snapshot(state: KernelState, m: int) -> dict[str, Any]:
    k, mc, paging = state.keys, state.machine, state.modes[m].features
    snap: dict[str, Any] = {"tlb_native": [k.vpn_key(v) for v in _order(mc.tlb.native, m)]}
    if state.modes[m].lapic:  # only the APIC rules read the vCPU's state
        snap["halted"] = bool(mc.vcpu.halted[m])
        snap["timer_delay"] = int(mc.vcpu.timer_delay[m])
    if paging.softmmu:
        n = int(mc.params.soft_mask[m]) + 1
        epoch = mc.soft.epoch[m]
        snap["softmmu"] = [k.vpn_key(int(v)) if v >= 0 and e == epoch else None
                           for v, e in zip(mc.soft.tag[m, :n], mc.soft.filled[m, :n])]
    if paging.own_tlb:
        snap["tlb"] = [k.vpn_key(v) for v in _order(mc.tlb.own, m)]
    if paging.shadow:
        snap["pool"] = [_page(state, m, table) for table in _order(mc.pool.lru, m)]
        size = int(mc.params.cr3_cache[m])
        # Round-robin refill: the slots from the next one to fill on, oldest fill first. Two
        # caches that list the same this way behave the same whatever slot they started at.
        first = int(mc.cr3.next[m]) if size else 0
        snap["cr3_cache"] = [None if s < 0 else k.space_key(int(s)) for s in np.roll(mc.cr3.slots[m, :size], -first)]
        snap["roots"] = [k.space_key(int(s)) for s in mc.roots.held[m, : mc.roots.n[m]]]
    return snap


def _page(state: KernelState, m: int, table: int) -> tuple[Any, ...]:
    """A shadow page: (asid or None for global, guest table or None for root, filled PTE vpns)."""
    space, index = state.keys.table_key(table)
    pool = state.machine.pool
    words = pool.ptes[m, pool.lru.key_slot[m, table]]
    bits = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))
    base = 0 if index is None else index << TABLE_SHIFT
    return space, index, tuple(base + int(b) for b in bits)


def _dense(keys: TraceKeys, snap: dict[str, Any]) -> dict[str, Any]:
    """A mode's snapshot with ids for the trace's keys (added as needed); a shadow page's
    PTEs as bit numbers. An empty softmmu entry or CR3 cache slot is NONE."""
    out = dict(snap, tlb_native=[keys.vpn_id(v) for v in snap["tlb_native"]])
    if "tlb" in snap:
        out["tlb"] = [keys.vpn_id(v) for v in snap["tlb"]]
    if "softmmu" in snap:
        out["softmmu"] = [core.NONE if v is None else keys.vpn_id(v) for v in snap["softmmu"]]
    if "pool" in snap:
        out["pool"] = [(keys.table_id(space, index), [v - (0 if index is None else index << TABLE_SHIFT) for v in ptes])
                       for space, index, ptes in snap["pool"]]
        out["cr3_cache"] = [core.NONE if s is None else keys.space_id(s) for s in snap["cr3_cache"]]
        out["roots"] = [keys.space_id(s) for s in snap["roots"]]
    return out


def _restore_mode(state: KernelState, m: int, d: dict[str, Any]) -> None:
    """Mode m's state from _dense's form. Only what snapshot shows is set: the rest (which
    slot holds what, the softmmu epoch, the CR3 cache's next slot) does not change what the
    model does, which is why snapshot leaves it out."""
    k, mc = state.keys, state.machine
    global_vpn = k.vpns.pairs[:, 0] >= np.uint64(k.kernel_vpn_min)
    _fill_lru(mc.tlb.native, m, d["tlb_native"], ~global_vpn)
    if "tlb" in d:
        _fill_lru(mc.tlb.own, m, d["tlb"], ~global_vpn)
    if "halted" in d:
        mc.vcpu.halted[m], mc.vcpu.timer_delay[m] = d["halted"], d["timer_delay"]
    if "softmmu" in d:
        tags = np.array(d["softmmu"], dtype=np.int64)
        mc.soft.tag[m, : len(tags)] = tags
        mc.soft.filled[m, : len(tags)] = np.where(tags >= 0, mc.soft.epoch[m], core.NONE)
    if "pool" in d:
        _fill_lru(mc.pool.lru, m, [t for t, _ in d["pool"]], k.tables.pairs[:, 0] != 0)
        for s, (_, bits) in enumerate(d["pool"]):
            mc.pool.ptes[m, s] = _pte_words(bits)
        mc.cr3.slots[m, : len(d["cr3_cache"])] = d["cr3_cache"]
        mc.roots.held[m, : len(d["roots"])] = d["roots"]
        mc.roots.n[m] = len(d["roots"])


def _fill_lru(lru: core.Lru, r: int, keys: list[int], flushable: np.ndarray) -> None:
    """Row r of an empty Lru holding `keys`, least recently used first, in slots 0, 1, ...;
    flushable[key]: whether a flush drops it."""
    n = len(keys)
    slots = np.arange(n, dtype=np.int64)
    lru.slot_key[r, :n] = keys
    lru.key_slot[r, keys] = slots
    lru.older[r, :n] = slots - 1                               # slot 0 is the tail: NONE
    lru.newer[r, :n] = np.where(slots + 1 < n, slots + 1, core.NONE)
    lru.head[r], lru.tail[r] = n - 1, (0 if n else core.NONE)  # n - 1 = NONE when empty
    lru.size[r] = lru.fresh[r] = n
    listed = slots[flushable[np.array(keys, dtype=np.int64)]]
    lru.set_list[r, : len(listed)] = listed
    lru.set_pos[r, listed] = np.arange(len(listed))
    lru.nset[r] = len(listed)


def _pte_words(bits: list[int]) -> np.ndarray:
    """A shadow page's PTE bitmap (_page's bits, packed)."""
    flags = np.zeros(PTE_WORDS * 64, dtype=np.uint8)
    flags[bits] = 1
    return np.packbits(flags, bitorder="little").view(np.int64)


def warm() -> None:
    """Load numba's compiled kernel now (cached, or compiled when the cache is stale):
    numba does it on the first call, and a Dask worker would otherwise pay it (about a
    second) on its first task. An empty batch types the call as every real batch does."""
    state = new_state([Mode("warm", Paging.NATIVE)], Guest())
    none = np.zeros(0, np.uint64)
    replay_batch(state, none.astype(np.uint8), none, none.astype(np.uint32), none.astype(np.uint32))
