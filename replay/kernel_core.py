"""The compiled state machines: replay.reference's Machine, event for event, over dense ids.

Layout. The state is a few records (typing.NamedTuple) of arrays, one record per
mechanism, every array with a row per mode, so a handler names what it reads
(`st.pool.lru.head[m]`, `st.soft.tag[m, slot]`):
- Params: the mode as data (kernel_mode.py): flags and sizes, the event -> driver table,
  which counted columns flush the mode's own TLB, the dropped ports and MMIO addresses, the
  local APIC's drivers (Apic: replay/lapic.py's table for the mode and the guest) and the
  halt-polling windows.
- Tlb: native's TLB and the mode's own (an Lru each), and the exit flush pending on the own one.
- Pool: the shadow pool (an Lru keyed by table id) and each slot's shadow PTE bitmap.
- Soft: the softmmu TLB: flush epoch, tags, the epoch each tag was filled in.
- Cr3Cache: the CR3 target cache's slots and the next slot to fill.
- Roots: the shadow roots KVM holds (space ids, the current root first: reference.PrevRoots).
- Vcpu: the vCPU as KVM's local APIC sees it: halted after an hlt exit, the last timer delay.
- Tally: the counts, acc[m, source, column] in the kernel's own columns: KERNEL_COUNTS (K_*,
  what the state machines count), then the drivers only a mode's on_event causes
  (kernel_mode.COLUMNS); kernel.py maps them to ALL_COUNTS once, when counts are read.
- Track: while on, what the replay read of the shadow pool, the CR3 cache and the TLBs it
  started from before writing them (replay/reads.py: the proof that a chunk's warmed-up start state was as good as the
  sequential one); off, and empty, otherwise.
State bundles the records; Keys and Batch hold keys.py's tables and the events.
Keys come from keys.py: pages[page] = (vpn id, table id, vpn, global), tables[table] =
(space id, guest table + 1 or 0 for a root).

An Lru is an intrusive doubly linked list over slots with a key -> slot map and an
unordered set of the entries a flush may drop (non-global translations, pages of
non-global address spaces), so every operation is O(1) and a flush costs only what it
removes.

Numba notes. The counts' columns and the modes' numbers arrive as data, never as Python
globals, because numba's cache would not notice a change in replay/counts.py; for the
same reason every numba function called here, and every record type, is defined here.
Every array is C-contiguous and keeps its dtype (kernel.py), so each record has one numba
type and the kernel compiles (and caches) once. `_nrt=False`: no reference counting of
arrays (without it each call costs atomic increments). numba passes a record to a call as
every field of every array in it (pointers, shape, strides: some 600 words for a State),
so a call that stays a call is slow: every function here is inlined into replay_events by
LLVM (`forceinline`). Not `inline="always"`, which inlines numba IR by copying it once per
call site and made the first (uncached) compile twice as long. Numeric constants are
np.int64, not int: numba would compile count() once per int literal it is called with.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from replay.kinds import IRQ_LEVEL, IRQ_TIMER, TIMER_HPET, TIMER_LAPIC, Kind
from replay.lapic import APIC_EOI, APIC_OFFSET_MASK, APIC_PAGE_FIRST, APIC_PAGE_LAST, APIC_TPR

# Every function but the entry point: compiled once (cached), without reference counting,
# without Python or C entry points (only replay_events is called from Python), and inlined
# into its caller by LLVM (see the Numba notes above).
inlined = njit(cache=True, forceinline=True, _nrt=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)

# Kind codes (and the codes of their args) are fixed by trace format v1, and the APIC page's
# layout by the architecture, so they may be compiled in.
CR3_WRITE, TOUCH, PTE_WRITE, INVLPG, IO, MMIO, IRQ, HLT, SYSCALL, MSR, TIMER_ARM, IPI_SEND = (np.int64(k) for k in (
    Kind.CR3_WRITE, Kind.TOUCH, Kind.PTE_WRITE, Kind.INVLPG, Kind.IO, Kind.MMIO, Kind.IRQ, Kind.HLT, Kind.SYSCALL,
    Kind.MSR, Kind.TIMER_ARM, Kind.IPI_SEND))
SRC_LEVEL, SRC_TIMER, DEV_LAPIC, DEV_LAST = (np.int64(c) for c in (IRQ_LEVEL, IRQ_TIMER, TIMER_LAPIC, TIMER_HPET))
PAGE_FIRST, PAGE_LAST, OFFSET_MASK = (np.uint64(a) for a in (APIC_PAGE_FIRST, APIC_PAGE_LAST, APIC_OFFSET_MASK))
REG_EOI, REG_TPR = np.uint64(APIC_EOI), np.uint64(APIC_TPR)
N_KINDS = 16  # width of Params.on_event

# The counts the state machines produce themselves: the first columns of Tally.acc.
KERNEL_COUNTS = (
    "cr3_writes", "softmmu_flush", "softmmu_fill", "cr3_cache_lookup", "cr3_cache_hit",
    "cr3_cache_miss", "shadow_root_hit", "shadow_root_alloc", "shadow_page_alloc",
    "shadow_page_zap", "tlb_miss", "tlb_miss_native", "native_io_avoided", "idle_ns",
    "syscalls", "exit_shadow_fault", "exit_pte_write", "exit_cr3_fast", "native_mmio_avoided",
    "guest_halt_polls", "host_halt_poll_ns",
)
(K_CR3_WRITES, K_SOFT_FLUSH, K_SOFT_FILL, K_LOOKUP, K_CACHE_HIT, K_CACHE_MISS, K_ROOT_HIT,
 K_ROOT_ALLOC, K_PAGE_ALLOC, K_ZAP, K_TLB_MISS, K_TLB_MISS_NATIVE, K_IO_AVOIDED, K_IDLE,
 K_SYSCALLS, K_SHADOW_FAULT, K_PTE_WRITE, K_CR3_FAST, K_MMIO_AVOIDED, K_HALT_POLLS,
 K_HOST_POLL_NS) = (np.int64(k) for k in range(len(KERNEL_COUNTS)))

# Columns of keys.py's tables: Keys.pages[page] and Keys.tables[table].
PAGE_VPN, PAGE_TABLE, PAGE_RAW, PAGE_GLOBAL = range(4)   # vpn id, table id, the vpn itself, global?
TABLE_SPACE, TABLE_INDEX = range(2)                      # space id, guest table + 1 (0: the root)
NONE = -1
# Track.table's flags and Track.whole's (replay/reads.py reads them).
T_READ, T_WROTE, T_MOVED = np.int64(1), np.int64(2), np.int64(4)
W_EVICTED, W_DROPPED, W_CR3_FILLED = np.int64(1), np.int64(2), np.int64(4)
W_TLB_CLEARED, W_TLB_FLUSHED = np.int64(1), np.int64(2)   # Track.tlb_whole's
# Track.vpn's flags, and its TLB rows: native's TLB, the mode's own.
V_READ, V_WROTE = np.int8(1), np.int8(2)
TLB_NATIVE, TLB_OWN = np.int64(0), np.int64(1)
ALL_BITS = np.int64(-1)


# --- the records ----------------------------------------------------------------------------

class Listed(NamedTuple):
    """One set of values per mode: values[m, :n[m]]."""

    n: np.ndarray        # (modes,) int64
    values: np.ndarray   # (modes, longest) uint64


class Dropped(NamedTuple):
    """The accesses a paravirt guest no longer makes (Mode.dropped_*)."""

    ports: Listed        # ports it no longer accesses at all,
    reads: Listed        # ... no longer reads,
    writes: Listed       # ... no longer writes;
    mmio_reads: Listed   # MMIO addresses it no longer reads,
    mmio_writes: Listed  # ... no longer writes


class Apic(NamedTuple):
    """The local APIC's drivers (lapic.ApicDrivers of the mode and guest) as Tally columns,
    NONE = none, one row per mode; the rules that pick one are the handlers below."""

    on: np.ndarray           # (modes,) bool: Mode.lapic is set (else irq, msr, timer_arm, ipi_send: on_event)
    kick: np.ndarray         # (modes,) int64: an interrupt arriving while the vCPU runs
    eoi: np.ndarray          # int64: the EOI of an edge, timer or IPI vector
    level_eoi: np.ndarray    # int64: the EOI of a level-triggered vector
    timer: np.ndarray        # int64: the APIC timer firing while the vCPU runs
    ipi: np.ndarray          # int64: an IPI sent
    page: np.ndarray         # bool: xAPIC: MMIO to the APIC page is the APIC's
    page_read: np.ndarray    # int64: a read of the APIC page
    page_quiet: np.ndarray   # int64: an EOI or TPR write to it
    page_write: np.ndarray   # int64: any other write to it
    arm: np.ndarray          # (modes, devices) int64: programming each timer device (TIMER_*) ...
    arm_n: np.ndarray        # (modes, devices) int64: ... that many times
    expired_at_entry: np.ndarray  # (modes,) uint64: Mode.timer_expired_at_entry_ns
    msr_read: np.ndarray     # (modes,) int64: exit_msr_read's column
    msr_write: np.ndarray    # (modes,) int64: exit_msr_write's column
    passthrough: Listed      # Mode.msr_passthrough


class Params(NamedTuple):
    """Every mode as data (kernel_mode.compile_modes), one row per mode; never written."""

    softmmu: np.ndarray      # (modes,) bool: touches go through the softmmu TLB (and nothing else)
    shadow: np.ndarray       # bool: the shadow pool is replayed (with the CR3 cache and the held roots)
    own_tlb: np.ndarray      # bool: the mode's own TLB is replayed: exits flush it, its misses count
    soft_mask: np.ndarray    # int64: softmmu entries - 1 (direct mapped, a power of two)
    cr3_cache: np.ndarray    # int64: CR3 target cache slots (0 = none)
    roots: np.ndarray        # int64: shadow roots KVM holds, the current one included (0 = no such LRU)
    keep_on_cr3: np.ndarray  # bool: False = drop every non-global shadow page on a CR3 exit (upstream)
    update_on_pte: np.ndarray  # bool: a trapped PTE write fills the shadow PTE (else drops it)
    invlpg_zaps: np.ndarray  # bool: a trapped invlpg drops the shadow PTE
    pte_mask: np.ndarray     # int64: PTEs per guest table - 1 (vpn & mask: the PTE's index)
    on_event: np.ndarray     # (modes, N_KINDS) int64: Tally column of the kind's driver, or NONE
    flushes: np.ndarray      # (modes, columns) bool: counting the column flushes the own TLB
    dropped: Dropped
    apic: Apic
    guest_poll: np.ndarray   # (modes,) uint64: Mode.guest_halt_poll_ns
    host_poll: np.ndarray    # (modes,) uint64: Mode.host_halt_poll_ns


class Lru(NamedTuple):
    """Least-recently-used sets, one per row (mode), of at most cap[r] keys; slots hold keys."""

    head: np.ndarray      # (rows,) int64: most recently used slot, NONE when empty
    tail: np.ndarray      # (rows,) least recently used slot, NONE when empty
    size: np.ndarray      # (rows,) keys held
    cap: np.ndarray       # (rows,) capacity
    fresh: np.ndarray     # (rows,) slots from here on were never used
    nfree: np.ndarray     # (rows,) freed slots, on the `free` stack
    nset: np.ndarray      # (rows,) slots in the flushable set
    key_slot: np.ndarray  # (rows, keys) a key's slot, NONE if absent
    slot_key: np.ndarray  # (rows, slots) a slot's key
    newer: np.ndarray     # (rows, slots) the slot used next after it, NONE for the head
    older: np.ndarray     # (rows, slots) the slot used last before it, NONE for the tail
    free: np.ndarray      # (rows, slots) the stack of freed slots
    set_pos: np.ndarray   # (rows, slots) position in set_list, NONE if not flushable
    set_list: np.ndarray  # (rows, slots) the flushable slots, in no order


class Tlb(NamedTuple):
    """The hardware TLB under native flushing, and under the mode's (shadow or 2-D paging)."""

    native: Lru           # keyed by vpn id; flushable = not global
    own: Lru
    pending: np.ndarray   # (modes,) int64: an exit flush of `own`, carried out before its next use


class Pool(NamedTuple):
    """KVM's shadow pool: shadow pages keyed by table id, each with its filled PTEs."""

    lru: Lru              # flushable = a page of a non-global address space
    ptes: np.ndarray      # (modes, slots, words) int64: bit i of a slot's page = PTE i filled


class Soft(NamedTuple):
    """QEMU's softmmu TLB, direct mapped; a flush starts a new epoch instead of clearing tags."""

    epoch: np.ndarray     # (modes,) int64: flushes so far
    tag: np.ndarray       # (modes, entries) vpn id held, NONE
    filled: np.ndarray    # (modes, entries) the epoch the tag was filled in: older = empty


class Cr3Cache(NamedTuple):
    """The paravirt CR3 target cache (reference.Cr3TargetCache): round-robin refill."""

    slots: np.ndarray     # (modes, size) space ids, NONE = empty
    next: np.ndarray      # (modes,) the slot the next miss fills


class Roots(NamedTuple):
    """The shadow roots KVM holds (reference.PrevRoots), most recently used first."""

    held: np.ndarray      # (modes, size) space ids
    n: np.ndarray         # (modes,) how many are held


class Vcpu(NamedTuple):
    """The vCPU as KVM's local APIC sees it (reference.Machine.halted, .timer_delay)."""

    halted: np.ndarray       # (modes,) bool: blocked in the host after an hlt exit, until the next event
    timer_delay: np.ndarray  # (modes,) uint64: the last timer arming's delay (lapic.NEVER_ARMED)


class Tally(NamedTuple):
    """The counts, per mode, source (keys.py's source id) and kernel column."""

    acc: np.ndarray       # (modes, sources, columns) int64


class Track(NamedTuple):
    """What the replay has done to the shadow pool since tracking began, per mode and table id:
    which tables' presence and which PTEs it read before writing them (the parts of its start
    state it depended on), which it wrote or moved in the LRU order, and whether it did
    what depends on the whole pool (an eviction, a drop of every non-global page). For each
    TLB: which vpns it looked up before filling or dropping them, the most entries it held
    (its evictions follow from that), and whether it was emptied (after which nothing of
    its start matters) or flushed of its non-global entries."""

    on: np.ndarray          # (1,) bool
    table: np.ndarray       # (modes, tables) int64: T_READ | T_WROTE | T_MOVED
    bits_read: np.ndarray   # (modes, tables, words) int64: PTEs read before written
    bits_wrote: np.ndarray  # (modes, tables, words) int64: PTEs written (all, when allocated or freed)
    whole: np.ndarray       # (modes,) int64: W_EVICTED | W_DROPPED | W_CR3_FILLED
    allocs: np.ndarray      # (modes,) int64: shadow pages allocated
    looked_up: np.ndarray   # (modes, spaces) bool: the CR3 cache was asked for the space
    vpn: np.ndarray         # (modes, vpns, 2) int8, per TLB: V_READ (looked up first) | V_WROTE
    tlb_peak: np.ndarray    # (modes, 2) int64: the most entries each TLB held
    tlb_whole: np.ndarray   # (modes, 2) int64: W_TLB_CLEARED | W_TLB_FLUSHED


class State(NamedTuple):
    """One vCPU's model state under every mode, and its counts."""

    params: Params
    tlb: Tlb
    pool: Pool
    soft: Soft
    cr3: Cr3Cache
    roots: Roots
    vcpu: Vcpu
    tally: Tally
    track: Track


class Keys(NamedTuple):
    """keys.py's tables of what each page and each shadow table is (read only here)."""

    pages: np.ndarray     # keys.py's page_info: PAGE_* columns, int64
    tables: np.ndarray    # keys.py's tables.pairs: TABLE_* columns, uint64


class Batch(NamedTuple):
    """Events: Events' columns, read only, and keys.py's ids for them."""

    kind: np.ndarray      # uint8
    value: np.ndarray     # uint64
    arg: np.ndarray       # uint32
    ref: np.ndarray       # int64: page id (touch, pte_write, invlpg), root table id (cr3_write)
    source: np.ndarray    # int64: source id


# --- LRU --------------------------------------------------------------------------------------

@inlined
def lru_unlink(lru, r, s):
    newer, older = lru.newer[r, s], lru.older[r, s]
    if newer >= 0:
        lru.older[r, newer] = older
    else:
        lru.head[r] = older
    if older >= 0:
        lru.newer[r, older] = newer
    else:
        lru.tail[r] = newer


@inlined
def lru_push_front(lru, r, s):
    h = lru.head[r]
    lru.newer[r, s] = NONE
    lru.older[r, s] = h
    if h >= 0:
        lru.newer[r, h] = s
    else:
        lru.tail[r] = s
    lru.head[r] = s


@inlined
def lru_remove(lru, r, s):
    """Free slot s: unlink it, forget its key, leave the flushable set; returns its key."""
    key = lru.slot_key[r, s]
    lru.key_slot[r, key] = NONE
    lru_unlink(lru, r, s)
    lru.size[r] -= 1
    lru.free[r, lru.nfree[r]] = s
    lru.nfree[r] += 1
    pos = lru.set_pos[r, s]
    if pos >= 0:
        last = lru.set_list[r, lru.nset[r] - 1]
        lru.set_list[r, pos] = last
        lru.set_pos[r, last] = pos
        lru.set_pos[r, s] = NONE
        lru.nset[r] -= 1
    return key


@inlined
def lru_take_slot(lru, r, key, flushable):
    """A free slot for `key` (absent, and there is room): reused if one was freed."""
    if lru.nfree[r] > 0:
        lru.nfree[r] -= 1
        s = lru.free[r, lru.nfree[r]]
    else:
        s = lru.fresh[r]
        lru.fresh[r] += 1
    lru.slot_key[r, s] = key
    lru.key_slot[r, key] = s
    lru.size[r] += 1
    if flushable:
        lru.set_pos[r, s] = lru.nset[r]
        lru.set_list[r, lru.nset[r]] = s
        lru.nset[r] += 1
    else:
        lru.set_pos[r, s] = NONE
    return s


@inlined
def lru_use(lru, r, key, flushable):
    """Make `key` most recently used, inserting it if absent (evicting the oldest when full).

    Returns (slot, was present, evicted key or NONE)."""
    s = lru.key_slot[r, key]
    present = s >= 0
    evicted = NONE
    if present:
        if lru.head[r] == s:
            return s, True, NONE
        lru_unlink(lru, r, s)
    else:
        if lru.size[r] >= lru.cap[r]:
            evicted = lru_remove(lru, r, lru.tail[r])
        s = lru_take_slot(lru, r, key, flushable)
    lru_push_front(lru, r, s)
    return s, present, evicted


@inlined
def lru_forget(lru, r, key):
    """Drop `key` if present (invlpg)."""
    s = lru.key_slot[r, key]
    if s >= 0:
        lru_remove(lru, r, s)


@inlined
def lru_flush_set(lru, r):
    """Drop every flushable entry (mov cr3 keeps global translations)."""
    while lru.nset[r] > 0:
        lru_remove(lru, r, lru.set_list[r, lru.nset[r] - 1])


@inlined
def lru_clear(lru, r):
    """Drop everything; costs the entries dropped (each was inserted once)."""
    s = lru.head[r]
    while s >= 0:
        lru.key_slot[r, lru.slot_key[r, s]] = NONE
        s = lru.older[r, s]
    lru.head[r] = NONE
    lru.tail[r] = NONE
    lru.size[r] = 0
    lru.fresh[r] = 0
    lru.nfree[r] = 0
    lru.nset[r] = 0


# --- counting ---------------------------------------------------------------------------------

@inlined
def count(st, m, src, k):
    st.tally.acc[m, src, k] += 1


@inlined
def cause(st, m, src, col):
    """Count a driver. An exit without VPID flushes the mode's whole TLB: marked pending
    here, carried out by sync_tlb before that TLB is next used."""
    st.tally.acc[m, src, col] += 1
    if st.params.flushes[m, col]:
        st.tlb.pending[m] = 1


@inlined
def cause_if(st, m, src, col):
    """cause, for a column that may be NONE (no driver)."""
    if col >= 0:
        cause(st, m, src, col)


@inlined
def on_event(st, m, src, kind):
    cause_if(st, m, src, st.params.on_event[m, kind])


@inlined
def sync_tlb(st, m):
    """Carry out a pending exit flush of mode m's own TLB."""
    if st.tlb.pending[m]:
        lru_clear(st.tlb.own, m)
        st.tlb.pending[m] = 0
        if st.track.on[0]:
            st.track.tlb_whole[m, TLB_OWN] |= W_TLB_CLEARED


# --- shadow pool --------------------------------------------------------------------------------

@inlined
def freed(st, tables, m, src, table):
    """A shadow page zapped; a freed root leaves the CR3 cache and the held roots."""
    count(st, m, src, K_ZAP)
    if st.track.on[0]:
        tracked_write(st.track, m, table)
    if tables[table, TABLE_INDEX] == 0:
        root_freed(st.cr3, st.roots, st.params.cr3_cache[m], m, np.int64(tables[table, TABLE_SPACE]))


@inlined
def root_freed(cr3, roots, cache_size, m, space):
    """A freed root leaves the CR3 cache (its entries are emptied) and the held roots."""
    for j in range(cache_size):
        if cr3.slots[m, j] == space:
            cr3.slots[m, j] = NONE
    roots_forget(roots, m, space)


@inlined
def pool_use(st, tables, m, src, table):
    """Shadow page for `table`, most recently used; returns (slot, was present)."""
    s, present, evicted = lru_use(st.pool.lru, m, table, tables[table, TABLE_SPACE] != 0)
    if st.track.on[0]:
        tracked_use(st.track, m, table, present, evicted)
    if evicted >= 0:
        freed(st, tables, m, src, evicted)
    if not present:
        st.pool.ptes[m, s, :] = 0
    return s, present


# --- tracking what a replay read of its start state (Track) -----------------------------------

@inlined
def tracked_presence(tr, m, table):
    """The table's presence in the pool was read: before any write, it came from the start state."""
    if tr.table[m, table] & T_WROTE == 0:
        tr.table[m, table] |= T_READ


@inlined
def tracked_write(tr, m, table):
    """The table was allocated or freed: its presence and every PTE are the replay's own now."""
    tr.table[m, table] |= T_WROTE
    tr.bits_wrote[m, table, :] = ALL_BITS


@inlined
def tracked_use(tr, m, table, present, evicted):
    """pool_use's (or a kept root's) lookup: presence read, moved to the LRU's front; an
    allocation writes the table, an eviction depends on the whole pool."""
    tracked_presence(tr, m, table)
    tr.table[m, table] |= T_MOVED
    if not present:
        tracked_write(tr, m, table)
        tr.allocs[m] += 1
    if evicted >= 0:
        tr.whole[m] |= W_EVICTED


@inlined
def tracked_pte(tr, m, table, idx, read):
    """A shadow PTE written, and first read if `read` (a touch's fill reads whether it is there)."""
    w, b = pte_bit(idx)
    if read and tr.bits_wrote[m, table, w] & b == 0:
        tr.bits_read[m, table, w] |= b
    tr.bits_wrote[m, table, w] |= b


@inlined
def tracked_lookup(tr, m, w, vpn):
    """TLB w is asked for `vpn`: unless it was filled or dropped since tracking began (or the
    TLB emptied), the answer came from the start state; either way it is the replay's now."""
    if tr.vpn[m, vpn, w] & V_WROTE == 0 and tr.tlb_whole[m, w] & W_TLB_CLEARED == 0:
        tr.vpn[m, vpn, w] |= V_READ
    tr.vpn[m, vpn, w] |= V_WROTE


@inlined
def tracked_size(tr, m, w, size):
    if size > tr.tlb_peak[m, w]:
        tr.tlb_peak[m, w] = size


@inlined
def pte_bit(idx):
    """Where PTE `idx` of a shadow page is in its bitmap: (word, bit)."""
    return idx >> 6, np.int64(1) << (idx & 63)


@inlined
def pte_fill(pool, m, s, idx):
    """Fill the shadow PTE `idx` of pool slot s; True if it was missing."""
    w, b = pte_bit(idx)
    missing = (pool.ptes[m, s, w] & b) == 0
    pool.ptes[m, s, w] |= b
    return missing


@inlined
def pte_drop(pool, m, s, idx):
    w, b = pte_bit(idx)
    pool.ptes[m, s, w] &= ~b


# --- KVM's held roots (reference.PrevRoots: current first, then the previous ones) ------------

@inlined
def roots_forget(roots, m, space):
    """Let go of `space`'s root, keeping the others' order; True if it was held."""
    n = roots.n[m]
    for i in range(n):
        if roots.held[m, i] == space:
            for j in range(i, n - 1):
                roots.held[m, j] = roots.held[m, j + 1]
            roots.held[m, n - 1] = NONE
            roots.n[m] = n - 1
            return True
    return False


@inlined
def roots_push(roots, m, space, size):
    """`space`'s root (not held) becomes current; when all `size` are held, the least
    recently used goes."""
    n = min(roots.n[m] + 1, size)
    for j in range(n - 1, 0, -1):
        roots.held[m, j] = roots.held[m, j - 1]
    roots.held[m, 0] = space
    roots.n[m] = n


# --- the CR3 target cache --------------------------------------------------------------------

@inlined
def cr3_cache_hit(st, m, src, space):
    """The paravirt guest's lookup (reference.Machine.cr3_cache_hit), counted."""
    count(st, m, src, K_LOOKUP)
    if st.track.on[0]:
        st.track.looked_up[m, space] = True
    for j in range(st.params.cr3_cache[m]):
        if st.cr3.slots[m, j] == space:
            count(st, m, src, K_CACHE_HIT)
            return True
    count(st, m, src, K_CACHE_MISS)
    return False


@inlined
def cr3_cache_fill(cr3, m, space, size):
    """Round-robin refill after a miss."""
    cr3.slots[m, cr3.next[m]] = space
    cr3.next[m] = (cr3.next[m] + 1) % size


# --- the event kinds --------------------------------------------------------------------------

@inlined
def own_tlb_use(st, m, src, vpn, is_global):
    """The mode's own TLB (shadow or 2-D paging): pending exit flush first, then the lookup."""
    sync_tlb(st, m)
    if st.track.on[0]:
        tracked_lookup(st.track, m, TLB_OWN, vpn)
    if not lru_use(st.tlb.own, m, vpn, not is_global)[1]:
        count(st, m, src, K_TLB_MISS)
    if st.track.on[0]:
        tracked_size(st.track, m, TLB_OWN, st.tlb.own.size[m])


@inlined
def soft_touch(st, m, src, vpn, raw):
    """A touch under softmmu: the page's direct-mapped entry, filled unless it holds the page
    since the last flush (reference.SoftTlb.access)."""
    slot = raw & st.params.soft_mask[m]
    soft = st.soft
    if soft.tag[m, slot] != vpn or soft.filled[m, slot] != soft.epoch[m]:
        soft.tag[m, slot] = vpn
        soft.filled[m, slot] = soft.epoch[m]
        count(st, m, src, K_SOFT_FILL)


@inlined
def shadow_map(st, keys, m, src, page):
    """Walk the shadow tables for a touch: the table's page (allocated if absent), then its PTE."""
    table = keys.pages[page, PAGE_TABLE]
    s, present = pool_use(st, keys.tables, m, src, table)
    if not present:
        count(st, m, src, K_PAGE_ALLOC)
    idx = keys.pages[page, PAGE_RAW] & st.params.pte_mask[m]
    if st.track.on[0]:
        tracked_pte(st.track, m, table, idx, True)
    if pte_fill(st.pool, m, s, idx):
        cause(st, m, src, K_SHADOW_FAULT)


@inlined
def touch(st, keys, m, src, page):
    vpn = keys.pages[page, PAGE_VPN]
    is_global = keys.pages[page, PAGE_GLOBAL] != 0
    p = st.params
    if p.softmmu[m]:
        soft_touch(st, m, src, vpn, keys.pages[page, PAGE_RAW])
        return
    if p.shadow[m]:
        shadow_map(st, keys, m, src, page)
    if p.own_tlb[m]:
        own_tlb_use(st, m, src, vpn, is_global)
    if st.track.on[0]:
        tracked_lookup(st.track, m, TLB_NATIVE, vpn)
    if not lru_use(st.tlb.native, m, vpn, not is_global)[1]:
        count(st, m, src, K_TLB_MISS_NATIVE)
    if st.track.on[0]:
        tracked_size(st.track, m, TLB_NATIVE, st.tlb.native.size[m])


@inlined
def drop_spaces(st, tables, m, src):
    """Upstream's CR3 exit: every shadow page of a non-global address space is freed."""
    pool = st.pool.lru
    if st.track.on[0]:
        st.track.whole[m] |= W_DROPPED
    while pool.nset[m] > 0:
        dropped = lru_remove(pool, m, pool.set_list[m, pool.nset[m] - 1])
        freed(st, tables, m, src, dropped)


@inlined
def cr3_write(st, keys, m, src, table):
    count(st, m, src, K_CR3_WRITES)
    # mov cr3 drops non-global translations in every mode, exit or no exit.
    lru_flush_set(st.tlb.native, m)
    sync_tlb(st, m)
    lru_flush_set(st.tlb.own, m)
    if st.track.on[0]:
        st.track.tlb_whole[m, TLB_NATIVE] |= W_TLB_FLUSHED
        st.track.tlb_whole[m, TLB_OWN] |= W_TLB_FLUSHED
    if st.params.softmmu[m]:
        st.soft.epoch[m] += 1
        count(st, m, src, K_SOFT_FLUSH)
    if st.params.shadow[m]:
        shadow_switch(st, keys.tables, m, src, table)
    else:
        on_event(st, m, src, CR3_WRITE)


@inlined
def shadow_switch(st, tables, m, src, table):
    """Shadow paging's CR3 write: the new address space's root, found or built in the pool."""
    space = np.int64(tables[table, TABLE_SPACE])
    if root_kept(st, m, src, space):
        # Kept roots are in the pool (freeing a root drops it from the CR3 cache and the
        # held roots), so nothing is evicted.
        s, present, evicted = lru_use(st.pool.lru, m, table, space != 0)
        if st.track.on[0]:
            tracked_use(st.track, m, table, present, evicted)
        return
    on_event(st, m, src, CR3_WRITE)
    if not st.params.keep_on_cr3[m]:
        drop_spaces(st, tables, m, src)
    present = pool_use(st, tables, m, src, table)[1]
    count(st, m, src, K_ROOT_HIT if present else K_ROOT_ALLOC)
    root_loaded(st, m, space)


@inlined
def root_kept(st, m, src, space):
    """A switch without a reload: a CR3 cache hit loads the cached root without exiting;
    KVM's fast_pgd_switch finds it among the held roots (an exit, but no free, no reload)."""
    p = st.params
    if p.cr3_cache[m] and cr3_cache_hit(st, m, src, space):
        return True
    if p.roots[m] and roots_forget(st.roots, m, space):
        roots_push(st.roots, m, space, p.roots[m])
        cause(st, m, src, K_CR3_FAST)
        return True
    return False


@inlined
def root_loaded(st, m, space):
    """After a slow switch the root fills the next CR3 cache slot and becomes the current
    held root (it was not held: root_kept checked, and frees only drop roots)."""
    p = st.params
    if p.cr3_cache[m]:
        cr3_cache_fill(st.cr3, m, space, p.cr3_cache[m])
        if st.track.on[0]:
            st.track.whole[m] |= W_CR3_FILLED
    if p.roots[m]:
        roots_push(st.roots, m, space, p.roots[m])


@inlined
def pte_write(st, keys, m, src, page):
    """Writes to a shadowed (write-protected) guest table trap and are emulated."""
    p = st.params
    if not p.shadow[m]:
        return
    table = keys.pages[page, PAGE_TABLE]
    s = st.pool.lru.key_slot[m, table]
    if st.track.on[0]:
        tracked_presence(st.track, m, table)
    if s < 0:
        return
    cause(st, m, src, K_PTE_WRITE)
    idx = keys.pages[page, PAGE_RAW] & p.pte_mask[m]
    if st.track.on[0]:
        tracked_pte(st.track, m, table, idx, False)
    if p.update_on_pte[m]:
        pte_fill(st.pool, m, s, idx)
    else:
        pte_drop(st.pool, m, s, idx)


@inlined
def invlpg(st, keys, m, src, page):
    """A trapped invlpg also drops the shadow PTE (2.6.20's paging_inval_page)."""
    p = st.params
    vpn = keys.pages[page, PAGE_VPN]
    raw = keys.pages[page, PAGE_RAW]
    lru_forget(st.tlb.native, m, vpn)
    sync_tlb(st, m)
    lru_forget(st.tlb.own, m, vpn)
    if st.track.on[0]:
        st.track.vpn[m, vpn, TLB_NATIVE] |= V_WROTE
        st.track.vpn[m, vpn, TLB_OWN] |= V_WROTE
    if p.softmmu[m]:
        slot = raw & p.soft_mask[m]
        if st.soft.tag[m, slot] == vpn:
            st.soft.tag[m, slot] = NONE
    if p.shadow[m] and p.invlpg_zaps[m]:
        table = keys.pages[page, PAGE_TABLE]
        s = st.pool.lru.key_slot[m, table]
        if st.track.on[0]:
            tracked_presence(st.track, m, table)
        if s >= 0:
            if st.track.on[0]:
                tracked_pte(st.track, m, table, raw & p.pte_mask[m], False)
            pte_drop(st.pool, m, s, raw & p.pte_mask[m])
    on_event(st, m, src, INVLPG)


@inlined
def listed(lst, m, value):
    """Whether `value` is in mode m's set."""
    found = False
    for j in range(lst.n[m]):
        found |= lst.values[m, j] == value
    return found


@inlined
def io(st, m, src, port, direction):
    """The paravirt guest no longer makes some accesses (any, or in one direction) at all."""
    d = st.params.dropped
    if listed(d.ports, m, port) or listed(d.writes if direction else d.reads, m, port):
        count(st, m, src, K_IO_AVOIDED)
    else:
        on_event(st, m, src, IO)


@inlined
def mmio(st, m, src, address, direction):
    """As for ports: a paravirt guest may no longer read or write some addresses. An xAPIC
    guest's access to the APIC page is the APIC's (reference.Machine.mmio)."""
    p = st.params
    d = p.dropped
    if listed(d.mmio_writes if direction else d.mmio_reads, m, address):
        count(st, m, src, K_MMIO_AVOIDED)
    elif p.apic.page[m] and PAGE_FIRST <= address and address <= PAGE_LAST:
        apic_page(st, m, src, address & OFFSET_MASK, direction)
    else:
        on_event(st, m, src, MMIO)


@inlined
def apic_page(st, m, src, offset, write):
    """reference.Machine.apic_page: reads, EOI and TPR writes, other writes."""
    a = st.params.apic
    if not write:
        col = a.page_read[m]
    elif offset == REG_EOI or offset == REG_TPR:
        col = a.page_quiet[m]
    else:
        col = a.page_write[m]
    cause_if(st, m, src, col)


@inlined
def hlt(st, m, src, idle):
    """reference.Machine.hlt: the guest polls a short idle period; an hlt that exits halts the
    vCPU, which KVM polls for up to host_poll ns."""
    p = st.params
    st.tally.acc[m, src, K_IDLE] += np.int64(idle)
    if idle < p.guest_poll[m]:
        count(st, m, src, K_HALT_POLLS)
    elif p.on_event[m, HLT] >= 0:
        cause(st, m, src, p.on_event[m, HLT])
        st.vcpu.halted[m] = True
        st.tally.acc[m, src, K_HOST_POLL_NS] += np.int64(min(idle, p.host_poll[m]))


# --- the local APIC (Params.apic; reference.Machine's irq, timer_arm, msr) -------------------

@inlined
def irq(st, m, src, source, woken):
    """An interrupt: a delivery exit only while the vCPU runs (not for the one that wakes
    it), the timer's only if armed long enough before; then its EOI's exit."""
    a = st.params.apic
    kind = np.int64(source)
    if kind == SRC_TIMER:
        if not woken and st.vcpu.timer_delay[m] >= a.expired_at_entry[m]:
            cause_if(st, m, src, a.timer[m])
        cause_if(st, m, src, a.eoi[m])
        return
    if not woken:
        cause_if(st, m, src, a.kick[m])
    cause_if(st, m, src, a.level_eoi[m] if kind == SRC_LEVEL else a.eoi[m])


@inlined
def timer_arm(st, m, src, delay, device):
    """The timer's delay is kept; its device's register accesses exit (lapic.timer_device)."""
    a = st.params.apic
    st.vcpu.timer_delay[m] = delay
    d = np.int64(device)
    if d > DEV_LAST:
        d = DEV_LAPIC
    for _ in range(a.arm_n[m, d]):
        cause(st, m, src, a.arm[m, d])


@inlined
def msr(st, m, src, index, write):
    """rdmsr/wrmsr exit unless the MSR bitmap passes the index through."""
    a = st.params.apic
    if not listed(a.passthrough, m, index):
        cause(st, m, src, a.msr_write[m] if write else a.msr_read[m])


@njit(cache=True, _nrt=False)
def replay_events(st, keys, ev):
    """Replay a batch under every mode: reference.Machine's dispatch, modes outer, events
    inner (faster than the other way round: one mode's state stays in cache)."""
    apic = st.params.apic.on
    for m in range(len(st.tlb.pending)):
        for i in range(len(ev.kind)):
            k = np.int64(ev.kind[i])
            src = ev.source[i]
            woken = st.vcpu.halted[m]  # any event ends a halt
            st.vcpu.halted[m] = False
            if k == TOUCH:
                touch(st, keys, m, src, ev.ref[i])
            elif k == CR3_WRITE:
                cr3_write(st, keys, m, src, ev.ref[i])
            elif k == PTE_WRITE:
                pte_write(st, keys, m, src, ev.ref[i])
            elif k == INVLPG:
                invlpg(st, keys, m, src, ev.ref[i])
            elif k == IO:
                io(st, m, src, ev.value[i], ev.arg[i])
            elif k == MMIO:
                mmio(st, m, src, ev.value[i], ev.arg[i])
            elif k == HLT:
                hlt(st, m, src, ev.value[i])
            elif k == SYSCALL:
                count(st, m, src, K_SYSCALLS)
                on_event(st, m, src, SYSCALL)
            elif apic[m] and k == IRQ:
                irq(st, m, src, ev.arg[i], woken)
            elif apic[m] and k == TIMER_ARM:
                timer_arm(st, m, src, ev.value[i], ev.arg[i])
            elif apic[m] and k == MSR:
                msr(st, m, src, ev.value[i], ev.arg[i])
            elif apic[m] and k == IPI_SEND:
                cause_if(st, m, src, st.params.apic.ipi[m])
            else:
                on_event(st, m, src, k)
        sync_tlb(st, m)
