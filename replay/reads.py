"""What a replay read of the TLBs and shadow pool it started from, and the proof built on it: a chunk
replayed from a warmed-up start state counts exactly what the sequential replay counts,
even where the two start states differ, when the chunk never looked at the difference.

Why: a shadow pool that never fills keeps every shadow page a guest ever had, with every
PTE ever filled (kvm-trunk, kvm-paravirt; even kvm-upstream's global kernel tables), so no
warm-up shorter than the trace reproduces it and an equality check of the whole state
(kernel.states_equal) fails for every chunk. But a chunk's counts depend on the start
state only through what it reads before writing it (kernel_core.Track records that):
- the presence of each shadow page it looks up (a touch, a CR3 load, a trapped PTE write
  or invlpg), and each shadow PTE a touch finds filled or not;
- the whole pool, when it evicts (the LRU order and the size) or drops every non-global
  page on a CR3 exit (how many it frees).
The CR3 target cache (kvm-paravirt) is the same kind of state: its 4 entries may hold
spaces from any time ago. A chunk that never refills it only asks whether a space is in it.
So the chunk is exact when, besides everything outside the pool and the CR3 cache being
equal: both start states hold the same of the spaces it asked the cache for, unless it
refilled the cache (then the caches must be equal); both start
states agree on every page and PTE it read first; it evicted nothing, and the sequential
pool, larger, would not have evicted either (its size plus the chunk's allocations fits);
and, if it dropped the non-global pages, both held the same ones. The chunk then did
exactly what it would have done sequentially, and the sequential end state follows:
the pool pages it did not allocate, free or move keep their sequential order and PTEs
(but for PTEs it wrote), older than all it moved, which end as the chunk ended them.

TLBs are LRUs that a mov cr3 empties of all but global entries, so a global kernel page
touched long ago may stay for the whole trace where no warm-up saw it (native on
hackbench: the sequential TLB holds some 150 entries the warmed-up one lacks). The same
reasoning holds there (_tlb_follows): a TLB that starts as the sequential one less its
oldest entries answers every lookup the same unless the chunk looks one of those up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from replay import kernel_core as core
from replay.kernel import KernelState, Snapshot
from replay.mode import Mode
from replay.shadow import TABLE_SHIFT

TableKey = tuple[Any, Any]   # (asid or None for global, guest table or None for a root): snapshot's


@dataclass(frozen=True)
class TlbReads:
    """One TLB's part of a Track, vpns in the trace's own keys."""

    read: frozenset[int]       # looked up before the replay filled or dropped them (and before any emptying)
    touched: frozenset[int]    # looked up, filled or dropped
    peak: int                  # the most entries it held, its start included
    entries: int               # its capacity (Mode.tlb_entries)
    cleared: bool              # emptied (an exit without VPID): its start no longer matters
    flushed: bool              # its non-global entries dropped (mov cr3)


@dataclass(frozen=True)
class Reads:
    """One mode's Track in the trace's own keys; PTEs as vpns, as kernel.snapshot's pool."""

    read: frozenset[TableKey]                   # presence read before the replay wrote it
    changed: frozenset[TableKey]                # allocated, freed or moved to the LRU's front
    rewritten: frozenset[TableKey]              # allocated or freed: every PTE is the replay's own
    pte_read: dict[TableKey, frozenset[int]]    # PTEs read before written
    pte_wrote: dict[TableKey, frozenset[int]]   # PTEs written (tables not rewritten)
    evicted: bool
    dropped: bool
    allocs: int
    looked_up: frozenset[Any]                   # spaces the CR3 cache was asked for (None: global)
    cr3_filled: bool                            # a miss refilled a CR3 cache slot
    tlbs: dict[str, TlbReads]                   # by snapshot key: "tlb_native", "tlb"
    global_vpn_min: int                         # vpns from here are global (the guest's kernel)


def reads(state: KernelState) -> tuple[Reads, ...]:
    """Each mode's Reads since kernel.track_reads."""
    return tuple(_mode_reads(state, m) for m in range(len(state.modes)))


def follows(start: Snapshot, sequential: Snapshot, read: Sequence[Reads], modes: Sequence[Mode]) -> bool:
    """Whether a chunk that started in `start` and read `read` counts what it would have
    counted starting in `sequential` (the state the chunk before it ended in)."""
    return all(_mode_follows(s, q, r, mode) for s, q, r, mode in zip(start, sequential, read, modes))


def carried(start: Snapshot, sequential: Snapshot, end: Snapshot, read: Sequence[Reads]) -> Snapshot:
    """The state the sequential replay ends the chunk in, given that `follows` held for the
    chunk that started in `start` and ended in `end`: its own end state, with the pool pages
    and TLB entries it never touched as `sequential` has them."""
    return tuple(_mode_carried(s, q, e, r) for s, q, e, r in zip(start, sequential, end, read))


# --- internals ------------------------------------------------------------------------------

def _mode_reads(state: KernelState, m: int) -> Reads:
    tr, keys = state.machine.track, state.keys
    flags = tr.table[m]
    tables = np.flatnonzero(flags)
    key = {int(t): keys.table_key(int(t)) for t in tables}

    def having(flag: np.int64) -> frozenset[TableKey]:
        return frozenset(key[int(t)] for t in tables if flags[t] & flag)

    rewritten = having(core.T_WROTE)
    pte_wrote = {key[int(t)]: _vpns(key[int(t)], tr.bits_wrote[m, t]) for t in tables
                 if key[int(t)] not in rewritten and tr.bits_wrote[m, t].any()}
    pte_read = {key[int(t)]: _vpns(key[int(t)], tr.bits_read[m, t]) for t in tables if tr.bits_read[m, t].any()}
    return Reads(read=having(core.T_READ), changed=having(core.T_WROTE | core.T_MOVED), rewritten=rewritten,
                 pte_read=pte_read, pte_wrote=pte_wrote, evicted=bool(tr.whole[m] & core.W_EVICTED),
                 dropped=bool(tr.whole[m] & core.W_DROPPED), allocs=int(tr.allocs[m]),
                 looked_up=frozenset(keys.space_key(int(s)) for s in np.flatnonzero(tr.looked_up[m])),
                 cr3_filled=bool(tr.whole[m] & core.W_CR3_FILLED),
                 tlbs={name: _tlb_reads(state, m, w) for name, w in TLBS.items()}, global_vpn_min=int(keys.kernel_vpn_min))


TLBS = {"tlb_native": int(core.TLB_NATIVE), "tlb": int(core.TLB_OWN)}   # snapshot key -> Track row


def _tlb_reads(state: KernelState, m: int, w: int) -> TlbReads:
    tr, keys = state.machine.track, state.keys
    flags = tr.vpn[m, :, w]

    def having(flag: np.int8) -> frozenset[int]:
        return frozenset(keys.vpn_key(int(v)) for v in np.flatnonzero(flags & flag))

    whole = int(tr.tlb_whole[m, w])
    return TlbReads(read=having(core.V_READ), touched=having(core.V_READ | core.V_WROTE), peak=int(tr.tlb_peak[m, w]),
                    entries=state.modes[m].tlb_entries,
                    cleared=bool(whole & core.W_TLB_CLEARED), flushed=bool(whole & core.W_TLB_FLUSHED))


def _vpns(key: TableKey, words: np.ndarray) -> frozenset[int]:
    """A PTE bitmap as the vpns it maps (kernel._page's numbering)."""
    base = 0 if key[1] is None else key[1] << TABLE_SHIFT
    return frozenset(base + int(b) for b in np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little")))


def _pool(snap: dict[str, Any]) -> dict[TableKey, frozenset[int]]:
    """A snapshot's pool as page -> filled PTEs, in LRU order (least recently used first)."""
    return {(space, index): frozenset(ptes) for space, index, ptes in snap["pool"]}


def _mode_follows(start: dict[str, Any], sequential: dict[str, Any], r: Reads, mode: Mode) -> bool:
    differ = {k for k in start if start[k] != sequential[k]}
    if not differ <= PROVABLE:
        return False
    if any(not _tlb_follows(start[k], sequential[k], r.tlbs[k], r.global_vpn_min)
           for k in differ & TLBS.keys()):
        return False
    return not differ & {"pool", "cr3_cache"} or _pool_follows(start, sequential, r, mode)


PROVABLE = {"pool", "cr3_cache", *TLBS}   # the parts of a state a chunk may start with differing


def _tlb_follows(mine: list[int], theirs: list[int], r: TlbReads, global_vpn_min: int) -> bool:
    """An LRU TLB that starts as the sequential one less its d oldest entries (the "extras")
    answers every lookup the same when the chunk never looked an extra up: the sequential
    TLB then holds the extras behind all else and evicts them first, so while it has any,
    its other entries are the chunk's TLB's, and it has none left by the time the chunk's
    TLB fills. Which extras it still holds at the end (_tlb_carried) is known when it drops
    none but by eviction (a mov cr3 keeps the global ones), or when the TLB was emptied."""
    extras = theirs[: len(theirs) - len(mine)]
    if len(mine) > len(theirs) or theirs[len(extras):] != mine or not r.read.isdisjoint(extras):
        return False
    if r.cleared:
        return True
    if r.flushed and any(v < global_vpn_min for v in extras):
        return False
    return r.touched.isdisjoint(extras) or r.peak + len(extras) <= r.entries


def _pool_follows(start: dict[str, Any], sequential: dict[str, Any], r: Reads, mode: Mode) -> bool:
    if start["cr3_cache"] != sequential["cr3_cache"] and not _same_lookups(start, sequential, r):
        return False
    mine, theirs = _pool(start), _pool(sequential)
    if r.evicted or len(theirs) + r.allocs > mode.shadow_pool_pages:
        return False
    if any((t in mine) != (t in theirs) for t in r.read):
        return False
    if any(mine.get(t, frozenset()) & vpns != theirs.get(t, frozenset()) & vpns for t, vpns in r.pte_read.items()):
        return False
    return not r.dropped or _non_global(mine) == _non_global(theirs)


def _same_lookups(start: dict[str, Any], sequential: dict[str, Any], r: Reads) -> bool:
    """CR3 caches that differ give the same lookups when the chunk never changed its cache
    (no refill; no eviction or drop that frees a cached root) and each space it asked for is
    in both or in neither."""
    if r.cr3_filled or r.evicted or r.dropped:
        return False
    return all((s in start["cr3_cache"]) == (s in sequential["cr3_cache"]) for s in r.looked_up)


def _non_global(pool: dict[TableKey, frozenset[int]]) -> set[TableKey]:
    return {t for t in pool if t[0] is not None}


def _mode_carried(start: dict[str, Any], sequential: dict[str, Any], end: dict[str, Any], r: Reads) -> dict[str, Any]:
    out = dict(end, **{k: _tlb_carried(sequential[k], start[k], end[k], r.tlbs[k]) for k in TLBS if k in end})
    return out if "pool" not in end else dict(out, **_pool_carried(sequential, end, r))


def _tlb_carried(sequential: list[int], start: list[int], end: list[int], r: TlbReads) -> list[int]:
    """The sequential TLB at the chunk's end (_tlb_follows held): the chunk's, behind the
    extras it never touched that were neither emptied nor evicted; the sequential TLB
    evicts its oldest extra at each fill past its capacity, so `entries - peak` survive."""
    if r.cleared:
        return end
    kept = [v for v in sequential[: len(sequential) - len(start)] if v not in r.touched]
    return kept[len(kept) - max(0, min(len(kept), r.entries - r.peak)):] + end


def _pool_carried(sequential: dict[str, Any], end: dict[str, Any], r: Reads) -> dict[str, Any]:
    before, after = _pool(sequential), _pool(end)
    # A cache the chunk never changed is as the sequential replay had it (_same_lookups).
    cache = end["cr3_cache"] if r.cr3_filled or r.evicted or r.dropped else sequential["cr3_cache"]
    kept = [(t, _patched(ptes, after.get(t, frozenset()), r.pte_wrote.get(t, frozenset())))
            for t, ptes in before.items() if t not in r.changed]
    moved = [(t, ptes if t in r.rewritten else _patched(before.get(t, frozenset()), ptes, r.pte_wrote.get(t, frozenset())))
             for t, ptes in after.items() if t in r.changed]
    return {"cr3_cache": cache, "pool": [(space, index, tuple(sorted(ptes))) for (space, index), ptes in kept + moved]}


def _patched(old: frozenset[int], new: frozenset[int], written: frozenset[int]) -> frozenset[int]:
    """`old` PTEs, with those the chunk wrote as it left them in `new`."""
    return (old - written) | (new & written)
