"""The compiled state machines: replay.reference's Machine, event for event, over dense ids.

Everything here is numba and works on flat arrays, one row per mode (TLBs: two rows per
mode, native's at 2m and the mode's own at 2m+1). A mode arrives as data (kernel_mode.py):
flags and sizes in `params[m, P_*]`, its event -> driver table in `on_event[m, kind]`,
its dropped ports in `drops[m]`. Counts go to `acc[m, source, column]`; the column of each
count the state machines produce is `cols[K_*]`, passed in rather than baked in, because
numba's cache would not notice a change to replay/counts.py. For the same reason every
numba function this file calls is defined in this file, and helpers are inlined
(`inline="always"`): a call that passes arrays costs reference counting per call.

An LRU (TLB, shadow pool) is an intrusive doubly linked list over slots with a key -> slot
array, plus an unordered set of the entries a flush may drop (non-global translations,
pages of non-global address spaces), so every operation is O(1) and a flush costs only the
entries it removes.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from replay.kinds import Kind

# Kind codes are fixed by trace format v1, so they may be compiled in.
CR3_WRITE, TOUCH, PTE_WRITE, INVLPG, IO, HLT, SYSCALL = (int(k) for k in (
    Kind.CR3_WRITE, Kind.TOUCH, Kind.PTE_WRITE, Kind.INVLPG, Kind.IO, Kind.HLT, Kind.SYSCALL))

# params[m, P_*]: a mode's flags and sizes (kernel_mode.py fills them).
P_SOFTMMU = 0          # touches go through the softmmu TLB (and nothing else)
P_SHADOW = 1           # shadow pool and the mode's own (virtualised) TLB are replayed
P_FLUSH_ON_EXIT = 2    # every exit flushes the mode's own TLB (no VPID)
P_SOFT_MASK = 3        # softmmu entries - 1 (direct mapped, a power of two)
P_CR3_CACHE = 4        # CR3 target cache slots (0 = none)
P_KEEP_ON_CR3 = 5      # 0 = drop every non-global shadow page on a CR3 exit (upstream)
P_UPDATE_ON_PTE = 6    # a trapped PTE write fills the shadow PTE (else drops it)
P_INVLPG_ZAPS = 7      # a trapped invlpg drops the shadow PTE
P_N_DROP_PORTS = 8     # drops[m, :n] ports the guest no longer accesses ...
P_N_DROP_READS = 9     # ... then drops[m, n:n+r] ports it no longer reads
P_PTE_MASK = 10        # PTEs per guest table - 1 (vpn & mask: the PTE's index)
N_PARAMS = 11

# cols[K_*]: the acc column of each count the state machines produce themselves.
KERNEL_COUNTS = (
    "cr3_writes", "softmmu_flush", "softmmu_fill", "cr3_cache_lookup", "cr3_cache_hit",
    "cr3_cache_miss", "shadow_root_hit", "shadow_root_alloc", "shadow_page_alloc",
    "shadow_page_zap", "tlb_miss", "tlb_miss_native", "native_io_avoided", "idle_ns",
    "syscalls", "exit_shadow_fault", "exit_pte_write",
)
(K_CR3_WRITES, K_SOFT_FLUSH, K_SOFT_FILL, K_LOOKUP, K_CACHE_HIT, K_CACHE_MISS, K_ROOT_HIT,
 K_ROOT_ALLOC, K_PAGE_ALLOC, K_ZAP, K_TLB_MISS, K_TLB_MISS_NATIVE, K_IO_AVOIDED, K_IDLE,
 K_SYSCALLS, K_SHADOW_FAULT, K_PTE_WRITE) = range(len(KERNEL_COUNTS))

# LRU meta[r, *] columns.
HEAD, TAIL, SIZE, FRESH, NFREE, NSET, CAP = range(7)
N_META = 7
NONE = -1


# --- LRU: (key_slot, slot_key, prev, nxt, free, set_pos, set_list, meta), row r -----------

@njit(cache=True, inline="always", _nrt=False)
def lru_unlink(L, r, s):
    prev, nxt, meta = L[2], L[3], L[7]
    p = prev[r, s]
    q = nxt[r, s]
    if p >= 0:
        nxt[r, p] = q
    else:
        meta[r, HEAD] = q
    if q >= 0:
        prev[r, q] = p
    else:
        meta[r, TAIL] = p


@njit(cache=True, inline="always", _nrt=False)
def lru_push_front(L, r, s):
    prev, nxt, meta = L[2], L[3], L[7]
    h = meta[r, HEAD]
    prev[r, s] = NONE
    nxt[r, s] = h
    if h >= 0:
        prev[r, h] = s
    else:
        meta[r, TAIL] = s
    meta[r, HEAD] = s


@njit(cache=True, inline="always", _nrt=False)
def lru_remove(L, r, s):
    """Free slot s: unlink it, forget its key, leave the flushable set."""
    key_slot, slot_key, free, set_pos, set_list, meta = L[0], L[1], L[4], L[5], L[6], L[7]
    key_slot[r, slot_key[r, s]] = NONE
    lru_unlink(L, r, s)
    meta[r, SIZE] -= 1
    free[r, meta[r, NFREE]] = s
    meta[r, NFREE] += 1
    p = set_pos[r, s]
    if p >= 0:
        last = set_list[r, meta[r, NSET] - 1]
        set_list[r, p] = last
        set_pos[r, last] = p
        set_pos[r, s] = NONE
        meta[r, NSET] -= 1


@njit(cache=True, inline="always", _nrt=False)
def lru_use(L, r, key, flushable):
    """Make `key` most recently used, inserting it if absent (evicting the oldest when full).

    Returns (slot, was present, evicted key or NONE)."""
    key_slot, slot_key, free, set_pos, set_list, meta = L[0], L[1], L[4], L[5], L[6], L[7]
    s = key_slot[r, key]
    if s >= 0:
        if meta[r, HEAD] != s:
            lru_unlink(L, r, s)
            lru_push_front(L, r, s)
        return s, True, NONE
    evicted = NONE
    if meta[r, SIZE] >= meta[r, CAP]:
        t = meta[r, TAIL]
        evicted = slot_key[r, t]
        lru_remove(L, r, t)
    if meta[r, NFREE] > 0:
        meta[r, NFREE] -= 1
        s = free[r, meta[r, NFREE]]
    else:
        s = meta[r, FRESH]
        meta[r, FRESH] += 1
    slot_key[r, s] = key
    key_slot[r, key] = s
    lru_push_front(L, r, s)
    meta[r, SIZE] += 1
    if flushable:
        set_pos[r, s] = meta[r, NSET]
        set_list[r, meta[r, NSET]] = s
        meta[r, NSET] += 1
    else:
        set_pos[r, s] = NONE
    return s, False, evicted


@njit(cache=True, inline="always", _nrt=False)
def lru_forget(L, r, key):
    s = L[0][r, key]
    if s >= 0:
        lru_remove(L, r, s)


@njit(cache=True, inline="always", _nrt=False)
def lru_flush_set(L, r):
    """Drop every flushable entry (mov cr3 keeps global translations)."""
    set_list, meta = L[6], L[7]
    while meta[r, NSET] > 0:
        lru_remove(L, r, set_list[r, meta[r, NSET] - 1])


@njit(cache=True, inline="always", _nrt=False)
def lru_clear(L, r):
    """Drop everything; costs the entries dropped (each was inserted once)."""
    key_slot, slot_key, nxt, meta = L[0], L[1], L[3], L[7]
    s = meta[r, HEAD]
    while s >= 0:
        key_slot[r, slot_key[r, s]] = NONE
        s = nxt[r, s]
    meta[r, HEAD] = NONE
    meta[r, TAIL] = NONE
    meta[r, SIZE] = 0
    meta[r, FRESH] = 0
    meta[r, NFREE] = 0
    meta[r, NSET] = 0


# --- the mode's event handlers ------------------------------------------------------------

@njit(cache=True, inline="always", _nrt=False)
def cause(m, src, col, P, is_exit, tlb, acc):
    """Count a driver; an exit without VPID also flushes the mode's whole TLB."""
    acc[m, src, col] += 1
    if is_exit[col] and P[m, P_FLUSH_ON_EXIT] and P[m, P_SHADOW]:
        lru_clear(tlb, 2 * m + 1)


@njit(cache=True, inline="always", _nrt=False)
def on_event(m, src, kind, P, on_ev, is_exit, tlb, acc):
    col = on_ev[m, kind]
    if col >= 0:
        cause(m, src, col, P, is_exit, tlb, acc)


@njit(cache=True, inline="always", _nrt=False)
def cr3_cache_invalidate(m, space, cr3_slots, P):
    for j in range(P[m, P_CR3_CACHE]):
        if cr3_slots[m, j] == space:
            cr3_slots[m, j] = NONE


@njit(cache=True, inline="always", _nrt=False)
def freed(m, src, table, tables, cr3_slots, P, cols, acc):
    """A shadow page zapped; a freed root invalidates its CR3 cache entry."""
    acc[m, src, cols[K_ZAP]] += 1
    if tables[table, 1] == 0:
        cr3_cache_invalidate(m, np.int64(tables[table, 0]), cr3_slots, P)


@njit(cache=True, inline="always", _nrt=False)
def pool_use(m, src, table, tables, pool, bits, cr3_slots, P, cols, acc):
    """Shadow page for `table`, most recently used; returns (slot, was present)."""
    s, present, evicted = lru_use(pool, m, table, tables[table, 0] != 0)
    if evicted >= 0:
        freed(m, src, evicted, tables, cr3_slots, P, cols, acc)
    if not present:
        bits[m, s, :] = 0
    return s, present


@njit(cache=True, inline="always", _nrt=False)
def pte_fill(m, s, idx, bits):
    """Fill the shadow PTE `idx` of pool slot s; True if it was missing."""
    w = idx >> 6
    b = np.uint64(1) << np.uint64(idx & 63)
    missing = (bits[m, s, w] & b) == 0
    bits[m, s, w] |= b
    return missing


@njit(cache=True, inline="always", _nrt=False)
def pte_drop(m, s, idx, bits):
    bits[m, s, idx >> 6] &= ~(np.uint64(1) << np.uint64(idx & 63))


@njit(cache=True, inline="always", _nrt=False)
def cr3_write(m, src, table, P, on_ev, cols, is_exit, tables, tlb, pool, bits, soft_epoch, cr3_slots, cr3_next, acc):
    acc[m, src, cols[K_CR3_WRITES]] += 1
    lru_flush_set(tlb, 2 * m)
    if P[m, P_SHADOW]:
        lru_flush_set(tlb, 2 * m + 1)
    if P[m, P_SOFTMMU]:
        soft_epoch[m] += 1
        acc[m, src, cols[K_SOFT_FLUSH]] += 1
    if not P[m, P_SHADOW]:
        on_event(m, src, CR3_WRITE, P, on_ev, is_exit, tlb, acc)
        return
    space = np.int64(tables[table, 0])
    size = P[m, P_CR3_CACHE]
    if size:
        acc[m, src, cols[K_LOOKUP]] += 1
        for j in range(size):
            if cr3_slots[m, j] == space:
                # Cached roots are always in the pool (freeing one invalidates its entry).
                acc[m, src, cols[K_CACHE_HIT]] += 1
                lru_use(pool, m, table, True)
                return
        acc[m, src, cols[K_CACHE_MISS]] += 1
    on_event(m, src, CR3_WRITE, P, on_ev, is_exit, tlb, acc)
    if not P[m, P_KEEP_ON_CR3]:
        set_list, meta = pool[6], pool[7]
        while meta[m, NSET] > 0:
            s = set_list[m, meta[m, NSET] - 1]
            dropped = pool[1][m, s]
            lru_remove(pool, m, s)
            freed(m, src, dropped, tables, cr3_slots, P, cols, acc)
    present = pool_use(m, src, table, tables, pool, bits, cr3_slots, P, cols, acc)[1]
    acc[m, src, cols[K_ROOT_HIT] if present else cols[K_ROOT_ALLOC]] += 1
    if size:
        cr3_slots[m, cr3_next[m]] = space
        cr3_next[m] = (cr3_next[m] + 1) % size


@njit(cache=True, inline="always", _nrt=False)
def touch(m, src, page, P, cols, is_exit, pages, tables, tlb, pool, bits, soft_tag, soft_stamp, soft_epoch,
          cr3_slots, acc):
    vpn = pages[page, 0]
    raw = pages[page, 2]
    is_global = pages[page, 3] != 0
    if P[m, P_SOFTMMU]:
        slot = raw & P[m, P_SOFT_MASK]
        if soft_tag[m, slot] != vpn or soft_stamp[m, slot] != soft_epoch[m]:
            soft_tag[m, slot] = vpn
            soft_stamp[m, slot] = soft_epoch[m]
            acc[m, src, cols[K_SOFT_FILL]] += 1
        return
    if P[m, P_SHADOW]:
        # Walk the shadow tables: the table's page (allocated if absent), then its PTE.
        s, present = pool_use(m, src, pages[page, 1], tables, pool, bits, cr3_slots, P, cols, acc)
        if not present:
            acc[m, src, cols[K_PAGE_ALLOC]] += 1
        if pte_fill(m, s, raw & P[m, P_PTE_MASK], bits):
            cause(m, src, cols[K_SHADOW_FAULT], P, is_exit, tlb, acc)
        if not lru_use(tlb, 2 * m + 1, vpn, not is_global)[1]:
            acc[m, src, cols[K_TLB_MISS]] += 1
    if not lru_use(tlb, 2 * m, vpn, not is_global)[1]:
        acc[m, src, cols[K_TLB_MISS_NATIVE]] += 1


@njit(cache=True, inline="always", _nrt=False)
def pte_write(m, src, page, P, cols, is_exit, pages, tlb, pool, bits, acc):
    """Writes to a shadowed (write-protected) guest table trap and are emulated."""
    if not P[m, P_SHADOW]:
        return
    s = pool[0][m, pages[page, 1]]
    if s < 0:
        return
    cause(m, src, cols[K_PTE_WRITE], P, is_exit, tlb, acc)
    idx = pages[page, 2] & P[m, P_PTE_MASK]
    if P[m, P_UPDATE_ON_PTE]:
        pte_fill(m, s, idx, bits)
    else:
        pte_drop(m, s, idx, bits)


@njit(cache=True, inline="always", _nrt=False)
def invlpg(m, src, page, P, on_ev, is_exit, pages, tlb, pool, bits, soft_tag, soft_stamp, soft_epoch, acc):
    vpn = pages[page, 0]
    lru_forget(tlb, 2 * m, vpn)
    if P[m, P_SHADOW]:
        lru_forget(tlb, 2 * m + 1, vpn)
    if P[m, P_SOFTMMU]:
        slot = pages[page, 2] & P[m, P_SOFT_MASK]
        if soft_tag[m, slot] == vpn:
            soft_tag[m, slot] = NONE
    if P[m, P_SHADOW] and P[m, P_INVLPG_ZAPS]:
        s = pool[0][m, pages[page, 1]]
        if s >= 0:
            pte_drop(m, s, pages[page, 2] & P[m, P_PTE_MASK], bits)
    on_event(m, src, INVLPG, P, on_ev, is_exit, tlb, acc)


@njit(cache=True, inline="always", _nrt=False)
def io(m, src, port, direction, P, on_ev, cols, is_exit, drops, tlb, acc):
    """The paravirt guest no longer makes some accesses (any, or reads only) at all."""
    n_ports = P[m, P_N_DROP_PORTS]
    dropped = False
    for j in range(n_ports):
        dropped |= drops[m, j] == port
    if direction == 0:
        for j in range(n_ports, n_ports + P[m, P_N_DROP_READS]):
            dropped |= drops[m, j] == port
    if dropped:
        acc[m, src, cols[K_IO_AVOIDED]] += 1
    else:
        on_event(m, src, IO, P, on_ev, is_exit, tlb, acc)


@njit(cache=True, inline="always", _nrt=False)
def step(m, kind, value, arg, ref, src, P, on_ev, cols, is_exit, drops, pages, tables, tlb, pool, bits,
         soft_tag, soft_stamp, soft_epoch, cr3_slots, cr3_next, acc):
    """One event under mode m (reference.Machine's dispatch)."""
    if kind == TOUCH:
        touch(m, src, ref, P, cols, is_exit, pages, tables, tlb, pool, bits, soft_tag, soft_stamp, soft_epoch,
              cr3_slots, acc)
    elif kind == CR3_WRITE:
        cr3_write(m, src, ref, P, on_ev, cols, is_exit, tables, tlb, pool, bits, soft_epoch, cr3_slots, cr3_next,
                  acc)
    elif kind == PTE_WRITE:
        pte_write(m, src, ref, P, cols, is_exit, pages, tlb, pool, bits, acc)
    elif kind == INVLPG:
        invlpg(m, src, ref, P, on_ev, is_exit, pages, tlb, pool, bits, soft_tag, soft_stamp, soft_epoch, acc)
    elif kind == IO:
        io(m, src, value, arg, P, on_ev, cols, is_exit, drops, tlb, acc)
    elif kind == HLT:
        acc[m, src, cols[K_IDLE]] += np.int64(value)
        on_event(m, src, HLT, P, on_ev, is_exit, tlb, acc)
    elif kind == SYSCALL:
        acc[m, src, cols[K_SYSCALLS]] += 1
        on_event(m, src, SYSCALL, P, on_ev, is_exit, tlb, acc)
    else:
        on_event(m, src, kind, P, on_ev, is_exit, tlb, acc)


@njit(cache=True, _nrt=False)
def replay_events(kind, value, arg, ref, source, modes, keys, state):
    """Replay a batch under every mode; modes outer, events inner (see benchmarks)."""
    P, on_ev, cols, is_exit, drops = modes
    pages, tables = keys
    tlb, pool, bits, soft_tag, soft_stamp, soft_epoch, cr3_slots, cr3_next, acc = state
    for m in range(P.shape[0]):
        for i in range(len(kind)):
            step(m, np.int64(kind[i]), value[i], arg[i], ref[i], source[i], P, on_ev, cols, is_exit, drops,
                 pages, tables, tlb, pool, bits, soft_tag, soft_stamp, soft_epoch, cr3_slots, cr3_next, acc)
