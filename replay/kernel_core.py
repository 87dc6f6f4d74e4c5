"""The compiled state machines: replay.reference's Machine, event for event, over dense ids.

Layout. Every piece of state is one int64 array with a row per mode (TLBs: two rows per
mode, native's at 2m and the mode's own at 2m+1), so a handler takes a few arrays:
- P[m]: the mode as data (kernel_mode.py): flags and sizes P_*, then its event -> driver
  table, the acc column of each kernel count, which columns are exits, and the lists of
  dropped ports and MMIO addresses (each: its length, then its items), at the offsets P[m, O_*].
- tlb[r], pool[m]: an LRU each (below); the pool's rows also hold each shadow page's PTE
  bitmap.
- soft[m]: flush epoch, then the softmmu tags, then the epoch each tag was filled in.
- misc[m]: an exit flush pending on the mode's own TLB, the CR3 cache's next slot, how many
  shadow roots KVM holds; then the CR3 cache's slots, and right after them the held roots
  (space ids, the current root first: reference.PrevRoots).
- acc[m, source, column]: counts per source; column = ALL_COUNTS position.
Keys come from keys.py: pages[page] = (vpn id, table id, vpn, global), tables[table] =
(space id, guest table + 1 or 0 for a root).

An LRU row is an intrusive doubly linked list over slots with a key -> slot map and an
unordered set of the entries a flush may drop (non-global translations, pages of
non-global address spaces), so every operation is O(1) and a flush costs only what it
removes. Row layout: L_* header, then key_slot, slot_key, prev, next, free, set_pos,
set_list and per-slot extra words, at the offsets in the header.

Numba notes. The acc columns and the mode's numbers arrive as data, never as Python
globals, because numba's cache would not notice a change in replay/counts.py; for the
same reason every numba function called here is defined here. `_nrt=False`: no reference
counting of arrays (without it each call costs atomic increments). Only the per-event hot
path is inlined into the loop (`inline="always"`); rarer handlers are plain calls, which
keeps the first (uncached) compile short.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from replay.kinds import Kind

# Kind codes are fixed by trace format v1, so they may be compiled in.
CR3_WRITE, TOUCH, PTE_WRITE, INVLPG, IO, MMIO, HLT, SYSCALL = (int(k) for k in (
    Kind.CR3_WRITE, Kind.TOUCH, Kind.PTE_WRITE, Kind.INVLPG, Kind.IO, Kind.MMIO, Kind.HLT, Kind.SYSCALL))
N_KINDS = 16  # room in P for the event -> driver table

# P[m, P_*]: a mode's flags and sizes; P[m, O_*]: where its tables start in the row.
(P_SOFTMMU,        # touches go through the softmmu TLB (and nothing else)
 P_SHADOW,         # the shadow pool is replayed (with the CR3 cache and the held roots)
 P_OWN_TLB,        # the mode's own TLB is replayed: exits flush it, its misses are counted
 P_WALKS_2D,       # every miss of the own TLB is a 2-D walk (derived per source: kernel.py)
 P_FLUSH_ON_EXIT,  # every exit flushes the mode's own TLB (no VPID)
 P_SOFT_MASK,      # softmmu entries - 1 (direct mapped, a power of two)
 P_CR3_CACHE,      # CR3 target cache slots (0 = none)
 P_ROOTS,          # shadow roots KVM holds, the current one included (0 = no such LRU)
 P_KEEP_ON_CR3,    # 0 = drop every non-global shadow page on a CR3 exit (upstream)
 P_UPDATE_ON_PTE,  # a trapped PTE write fills the shadow PTE (else drops it)
 P_INVLPG_ZAPS,    # a trapped invlpg drops the shadow PTE
 P_PTE_MASK,       # PTEs per guest table - 1 (vpn & mask: the PTE's index)
 O_ON_EVENT,       # N_KINDS entries: acc column of the kind's driver, or -1
 O_COLS,           # acc column of each KERNEL_COUNTS entry
 O_IS_EXIT,        # per acc column: 1 if it is a VM exit
 O_DROP_PORTS,     # ports the guest no longer accesses at all,
 O_DROP_READS,     # ... no longer reads,
 O_DROP_WRITES,    # ... no longer writes;
 O_DROP_MMIO_READS,   # MMIO addresses it no longer reads,
 O_DROP_MMIO_WRITES,  # ... no longer writes (each list: its length, then its items)
 N_PARAMS) = range(21)

# The counts the state machines produce themselves, in O_COLS order.
KERNEL_COUNTS = (
    "cr3_writes", "softmmu_flush", "softmmu_fill", "cr3_cache_lookup", "cr3_cache_hit",
    "cr3_cache_miss", "shadow_root_hit", "shadow_root_alloc", "shadow_page_alloc",
    "shadow_page_zap", "tlb_miss", "tlb_miss_native", "native_io_avoided", "idle_ns",
    "syscalls", "exit_shadow_fault", "exit_pte_write", "exit_cr3_fast", "native_mmio_avoided",
)
(K_CR3_WRITES, K_SOFT_FLUSH, K_SOFT_FILL, K_LOOKUP, K_CACHE_HIT, K_CACHE_MISS, K_ROOT_HIT,
 K_ROOT_ALLOC, K_PAGE_ALLOC, K_ZAP, K_TLB_MISS, K_TLB_MISS_NATIVE, K_IO_AVOIDED, K_IDLE,
 K_SYSCALLS, K_SHADOW_FAULT, K_PTE_WRITE, K_CR3_FAST, K_MMIO_AVOIDED) = range(len(KERNEL_COUNTS))

# LRU row header.
(L_HEAD, L_TAIL, L_SIZE, L_FRESH, L_NFREE, L_NSET, L_CAP,
 L_KEY_SLOT, L_SLOT_KEY, L_PREV, L_NEXT, L_FREE, L_SET_POS, L_SET_LIST, L_EXTRA, L_EXTRA_WORDS,
 L_HEADER) = range(17)
LRU_SLOT_ARRAYS = (L_SLOT_KEY, L_PREV, L_NEXT, L_FREE, L_SET_POS, L_SET_LIST)

# soft[m] and misc[m] headers.
S_EPOCH, S_TAGS = 0, 1              # tags: S_TAGS..+n, their epochs right after
M_PENDING, M_CR3_NEXT, M_ROOTS_HELD, M_CR3_SLOTS = 0, 1, 2, 3  # the held roots follow the slots
NONE = -1


# --- LRU --------------------------------------------------------------------------------------

@njit(cache=True, inline="always", _nrt=False)
def lru_unlink(A, r, s):
    p = A[r, A[r, L_PREV] + s]
    q = A[r, A[r, L_NEXT] + s]
    if p >= 0:
        A[r, A[r, L_NEXT] + p] = q
    else:
        A[r, L_HEAD] = q
    if q >= 0:
        A[r, A[r, L_PREV] + q] = p
    else:
        A[r, L_TAIL] = p


@njit(cache=True, inline="always", _nrt=False)
def lru_push_front(A, r, s):
    h = A[r, L_HEAD]
    A[r, A[r, L_PREV] + s] = NONE
    A[r, A[r, L_NEXT] + s] = h
    if h >= 0:
        A[r, A[r, L_PREV] + h] = s
    else:
        A[r, L_TAIL] = s
    A[r, L_HEAD] = s


@njit(cache=True, _nrt=False)
def lru_remove(A, r, s):
    """Free slot s: unlink it, forget its key, leave the flushable set; returns its key."""
    key = A[r, A[r, L_SLOT_KEY] + s]
    A[r, A[r, L_KEY_SLOT] + key] = NONE
    lru_unlink(A, r, s)
    A[r, L_SIZE] -= 1
    A[r, A[r, L_FREE] + A[r, L_NFREE]] = s
    A[r, L_NFREE] += 1
    pos = A[r, A[r, L_SET_POS] + s]
    if pos >= 0:
        last = A[r, A[r, L_SET_LIST] + A[r, L_NSET] - 1]
        A[r, A[r, L_SET_LIST] + pos] = last
        A[r, A[r, L_SET_POS] + last] = pos
        A[r, A[r, L_SET_POS] + s] = NONE
        A[r, L_NSET] -= 1
    return key


@njit(cache=True, inline="always", _nrt=False)
def lru_use(A, r, key, flushable):
    """Make `key` most recently used, inserting it if absent (evicting the oldest when full).

    Returns (slot, was present, evicted key or NONE)."""
    s = A[r, A[r, L_KEY_SLOT] + key]
    present = s >= 0
    evicted = NONE
    if present:
        if A[r, L_HEAD] == s:
            return s, True, NONE
        lru_unlink(A, r, s)
    else:
        if A[r, L_SIZE] >= A[r, L_CAP]:
            evicted = lru_remove(A, r, A[r, L_TAIL])
        if A[r, L_NFREE] > 0:
            A[r, L_NFREE] -= 1
            s = A[r, A[r, L_FREE] + A[r, L_NFREE]]
        else:
            s = A[r, L_FRESH]
            A[r, L_FRESH] += 1
        A[r, A[r, L_SLOT_KEY] + s] = key
        A[r, A[r, L_KEY_SLOT] + key] = s
        A[r, L_SIZE] += 1
        if flushable:
            A[r, A[r, L_SET_POS] + s] = A[r, L_NSET]
            A[r, A[r, L_SET_LIST] + A[r, L_NSET]] = s
            A[r, L_NSET] += 1
        else:
            A[r, A[r, L_SET_POS] + s] = NONE
    lru_push_front(A, r, s)
    return s, present, evicted


@njit(cache=True, inline="always", _nrt=False)
def lru_slot(A, r, key):
    return A[r, A[r, L_KEY_SLOT] + key]


@njit(cache=True, inline="always", _nrt=False)
def lru_forget(A, r, key):
    s = lru_slot(A, r, key)
    if s >= 0:
        lru_remove(A, r, s)


@njit(cache=True, _nrt=False)
def lru_flush_set(A, r):
    """Drop every flushable entry (mov cr3 keeps global translations)."""
    while A[r, L_NSET] > 0:
        lru_remove(A, r, A[r, A[r, L_SET_LIST] + A[r, L_NSET] - 1])


@njit(cache=True, _nrt=False)
def lru_clear(A, r):
    """Drop everything; costs the entries dropped (each was inserted once)."""
    s = A[r, L_HEAD]
    while s >= 0:
        A[r, A[r, L_KEY_SLOT] + A[r, A[r, L_SLOT_KEY] + s]] = NONE
        s = A[r, A[r, L_NEXT] + s]
    A[r, L_HEAD] = NONE
    A[r, L_TAIL] = NONE
    A[r, L_SIZE] = 0
    A[r, L_FRESH] = 0
    A[r, L_NFREE] = 0
    A[r, L_NSET] = 0


# --- counting ---------------------------------------------------------------------------------

@njit(cache=True, inline="always", _nrt=False)
def count(m, src, k, P, acc):
    acc[m, src, P[m, P[m, O_COLS] + k]] += 1


@njit(cache=True, inline="always", _nrt=False)
def cause(m, src, col, P, misc, acc):
    """Count a driver. An exit without VPID flushes the mode's whole TLB: marked pending
    here, carried out by sync_tlb before that TLB is next used."""
    acc[m, src, col] += 1
    if P[m, P[m, O_IS_EXIT] + col] and P[m, P_FLUSH_ON_EXIT]:
        misc[m, M_PENDING] = 1


@njit(cache=True, inline="always", _nrt=False)
def on_event(m, src, kind, P, misc, acc):
    col = P[m, P[m, O_ON_EVENT] + kind]
    if col >= 0:
        cause(m, src, col, P, misc, acc)


@njit(cache=True, inline="always", _nrt=False)
def sync_tlb(m, tlb, misc):
    """Carry out a pending exit flush of mode m's own TLB."""
    if misc[m, M_PENDING]:
        lru_clear(tlb, 2 * m + 1)
        misc[m, M_PENDING] = 0


# --- shadow pool --------------------------------------------------------------------------------

@njit(cache=True, _nrt=False)
def freed(m, src, table, P, tables, misc, acc):
    """A shadow page zapped; a freed root leaves the CR3 cache and the held roots."""
    count(m, src, K_ZAP, P, acc)
    if tables[table, 1] == 0:
        root_freed(m, np.int64(tables[table, 0]), P, misc)


@njit(cache=True, _nrt=False)
def root_freed(m, space, P, misc):
    """A call of its own: kept out of freed, which upstream's CR3 exits run per page, it
    keeps that loop as fast as before the held roots (measured: 4% of kvm-upstream)."""
    for j in range(M_CR3_SLOTS, M_CR3_SLOTS + P[m, P_CR3_CACHE]):
        if misc[m, j] == space:
            misc[m, j] = NONE
    roots_forget(m, space, P, misc)


# --- KVM's held roots (reference.PrevRoots: current first, then the previous ones) ------------

@njit(cache=True, _nrt=False)
def roots_forget(m, space, P, misc):
    """Let go of `space`'s root, keeping the others' order; True if it was held."""
    at = M_CR3_SLOTS + P[m, P_CR3_CACHE]
    n = misc[m, M_ROOTS_HELD]
    for i in range(at, at + n):
        if misc[m, i] == space:
            for j in range(i, at + n - 1):
                misc[m, j] = misc[m, j + 1]
            misc[m, at + n - 1] = NONE
            misc[m, M_ROOTS_HELD] = n - 1
            return True
    return False


@njit(cache=True, _nrt=False)
def roots_push(m, space, P, misc):
    """`space`'s root (not held) becomes current; when full, the least recently used goes."""
    at = M_CR3_SLOTS + P[m, P_CR3_CACHE]
    n = min(misc[m, M_ROOTS_HELD] + 1, P[m, P_ROOTS])
    for j in range(at + n - 1, at, -1):
        misc[m, j] = misc[m, j - 1]
    misc[m, at] = space
    misc[m, M_ROOTS_HELD] = n


@njit(cache=True, inline="always", _nrt=False)
def pool_use(m, src, table, P, tables, pool, misc, acc):
    """Shadow page for `table`, most recently used; returns (slot, was present)."""
    s, present, evicted = lru_use(pool, m, table, tables[table, 0] != 0)
    if evicted >= 0:
        freed(m, src, evicted, P, tables, misc, acc)
    if not present:
        base = pool[m, L_EXTRA] + s * pool[m, L_EXTRA_WORDS]
        pool[m, base: base + pool[m, L_EXTRA_WORDS]] = 0
    return s, present


@njit(cache=True, inline="always", _nrt=False)
def pte_word(pool, m, s, idx):
    """Where PTE `idx` of pool slot s is: (word's column, bit)."""
    return pool[m, L_EXTRA] + s * pool[m, L_EXTRA_WORDS] + (idx >> 6), np.int64(1) << (idx & 63)


@njit(cache=True, inline="always", _nrt=False)
def pte_fill(pool, m, s, idx):
    """Fill the shadow PTE `idx` of pool slot s; True if it was missing."""
    w, b = pte_word(pool, m, s, idx)
    missing = (pool[m, w] & b) == 0
    pool[m, w] |= b
    return missing


@njit(cache=True, inline="always", _nrt=False)
def pte_drop(pool, m, s, idx):
    w, b = pte_word(pool, m, s, idx)
    pool[m, w] &= ~b


# --- the event kinds --------------------------------------------------------------------------

@njit(cache=True, inline="always", _nrt=False)
def own_tlb_use(m, src, vpn, is_global, P, tlb, misc, acc):
    """The mode's own TLB (shadow or 2-D paging): pending exit flush first, then the lookup."""
    sync_tlb(m, tlb, misc)
    if not lru_use(tlb, 2 * m + 1, vpn, not is_global)[1]:
        count(m, src, K_TLB_MISS, P, acc)


@njit(cache=True, inline="always", _nrt=False)
def touch(m, src, page, P, pages, tables, tlb, pool, soft, misc, acc):
    vpn = pages[page, 0]
    raw = pages[page, 2]
    is_global = pages[page, 3] != 0
    if P[m, P_SOFTMMU]:
        n = P[m, P_SOFT_MASK] + 1
        slot = S_TAGS + (raw & P[m, P_SOFT_MASK])
        if soft[m, slot] != vpn or soft[m, slot + n] != soft[m, S_EPOCH]:
            soft[m, slot] = vpn
            soft[m, slot + n] = soft[m, S_EPOCH]
            count(m, src, K_SOFT_FILL, P, acc)
        return
    if P[m, P_SHADOW]:
        # Walk the shadow tables: the table's page (allocated if absent), then its PTE.
        s, present = pool_use(m, src, pages[page, 1], P, tables, pool, misc, acc)
        if not present:
            count(m, src, K_PAGE_ALLOC, P, acc)
        if pte_fill(pool, m, s, raw & P[m, P_PTE_MASK]):
            cause(m, src, P[m, P[m, O_COLS] + K_SHADOW_FAULT], P, misc, acc)
        own_tlb_use(m, src, vpn, is_global, P, tlb, misc, acc)  # shadow paging always has its own TLB
    elif P[m, P_OWN_TLB]:
        own_tlb_use(m, src, vpn, is_global, P, tlb, misc, acc)
    if not lru_use(tlb, 2 * m, vpn, not is_global)[1]:
        count(m, src, K_TLB_MISS_NATIVE, P, acc)


@njit(cache=True, _nrt=False)
def cr3_write(m, src, table, P, tables, tlb, pool, soft, misc, acc):
    count(m, src, K_CR3_WRITES, P, acc)
    # mov cr3 drops non-global translations in every mode, exit or no exit.
    lru_flush_set(tlb, 2 * m)
    sync_tlb(m, tlb, misc)
    lru_flush_set(tlb, 2 * m + 1)
    if P[m, P_SOFTMMU]:
        soft[m, S_EPOCH] += 1
        count(m, src, K_SOFT_FLUSH, P, acc)
    if not P[m, P_SHADOW]:
        on_event(m, src, CR3_WRITE, P, misc, acc)
        return
    space = np.int64(tables[table, 0])
    size = P[m, P_CR3_CACHE]
    if size:
        count(m, src, K_LOOKUP, P, acc)
        for j in range(M_CR3_SLOTS, M_CR3_SLOTS + size):
            if misc[m, j] == space:
                # A hit loads the cached root without exiting; cached roots are always in
                # the pool (freeing one invalidates its entry), so nothing is evicted.
                count(m, src, K_CACHE_HIT, P, acc)
                lru_use(pool, m, table, space != 0)
                return
        count(m, src, K_CACHE_MISS, P, acc)
    if P[m, P_ROOTS] and roots_forget(m, space, P, misc):
        # KVM's fast_pgd_switch: the root is still held (so in the pool); no free, no reload.
        roots_push(m, space, P, misc)
        cause(m, src, P[m, P[m, O_COLS] + K_CR3_FAST], P, misc, acc)
        lru_use(pool, m, table, space != 0)
        return
    on_event(m, src, CR3_WRITE, P, misc, acc)
    if not P[m, P_KEEP_ON_CR3]:
        while pool[m, L_NSET] > 0:
            dropped = lru_remove(pool, m, pool[m, pool[m, L_SET_LIST] + pool[m, L_NSET] - 1])
            freed(m, src, dropped, P, tables, misc, acc)
    present = pool_use(m, src, table, P, tables, pool, misc, acc)[1]
    count(m, src, K_ROOT_HIT if present else K_ROOT_ALLOC, P, acc)
    if size:
        misc[m, M_CR3_SLOTS + misc[m, M_CR3_NEXT]] = space
        misc[m, M_CR3_NEXT] = (misc[m, M_CR3_NEXT] + 1) % size
    if P[m, P_ROOTS]:   # not held (checked above; frees only drop roots): the new current root
        roots_push(m, space, P, misc)


@njit(cache=True, _nrt=False)
def pte_write(m, src, page, P, pages, pool, misc, acc):
    """Writes to a shadowed (write-protected) guest table trap and are emulated."""
    if not P[m, P_SHADOW]:
        return
    s = lru_slot(pool, m, pages[page, 1])
    if s < 0:
        return
    cause(m, src, P[m, P[m, O_COLS] + K_PTE_WRITE], P, misc, acc)
    idx = pages[page, 2] & P[m, P_PTE_MASK]
    if P[m, P_UPDATE_ON_PTE]:
        pte_fill(pool, m, s, idx)
    else:
        pte_drop(pool, m, s, idx)


@njit(cache=True, _nrt=False)
def invlpg(m, src, page, P, pages, tlb, pool, soft, misc, acc):
    """A trapped invlpg also drops the shadow PTE (2.6.20's paging_inval_page)."""
    vpn = pages[page, 0]
    lru_forget(tlb, 2 * m, vpn)
    sync_tlb(m, tlb, misc)
    lru_forget(tlb, 2 * m + 1, vpn)
    if P[m, P_SOFTMMU]:
        slot = S_TAGS + (pages[page, 2] & P[m, P_SOFT_MASK])
        if soft[m, slot] == vpn:
            soft[m, slot] = NONE
    if P[m, P_SHADOW] and P[m, P_INVLPG_ZAPS]:
        s = lru_slot(pool, m, pages[page, 1])
        if s >= 0:
            pte_drop(pool, m, s, pages[page, 2] & P[m, P_PTE_MASK])
    on_event(m, src, INVLPG, P, misc, acc)


@njit(cache=True, inline="always", _nrt=False)
def listed(m, at, value, P):
    """Whether `value` is in mode m's list at P[m, at] (its length, then its items)."""
    first = P[m, at] + 1
    found = False
    for j in range(first, first + P[m, first - 1]):
        found |= np.uint64(P[m, j]) == value
    return found


@njit(cache=True, _nrt=False)
def io(m, src, port, direction, P, misc, acc):
    """The paravirt guest no longer makes some accesses (any, or in one direction) at all."""
    if listed(m, O_DROP_PORTS, port, P) or listed(m, O_DROP_WRITES if direction else O_DROP_READS, port, P):
        count(m, src, K_IO_AVOIDED, P, acc)
    else:
        on_event(m, src, IO, P, misc, acc)


@njit(cache=True, _nrt=False)
def mmio(m, src, address, direction, P, misc, acc):
    """As for ports: a paravirt guest may no longer read or write some addresses."""
    if listed(m, O_DROP_MMIO_WRITES if direction else O_DROP_MMIO_READS, address, P):
        count(m, src, K_MMIO_AVOIDED, P, acc)
    else:
        on_event(m, src, MMIO, P, misc, acc)


@njit(cache=True, _nrt=False)
def replay_events(kind, value, arg, ref, source, P, pages, tables, tlb, pool, soft, misc, acc):
    """Replay a batch under every mode: reference.Machine's dispatch, modes outer, events
    inner (faster than the other way round: one mode's state stays in cache)."""
    for m in range(P.shape[0]):
        for i in range(len(kind)):
            k = np.int64(kind[i])
            src = source[i]
            if k == TOUCH:
                touch(m, src, ref[i], P, pages, tables, tlb, pool, soft, misc, acc)
            elif k == CR3_WRITE:
                cr3_write(m, src, ref[i], P, tables, tlb, pool, soft, misc, acc)
            elif k == PTE_WRITE:
                pte_write(m, src, ref[i], P, pages, pool, misc, acc)
            elif k == INVLPG:
                invlpg(m, src, ref[i], P, pages, tlb, pool, soft, misc, acc)
            elif k == IO:
                io(m, src, value[i], arg[i], P, misc, acc)
            elif k == MMIO:
                mmio(m, src, value[i], arg[i], P, misc, acc)
            elif k == HLT:
                acc[m, src, P[m, P[m, O_COLS] + K_IDLE]] += np.int64(value[i])
                on_event(m, src, HLT, P, misc, acc)
            elif k == SYSCALL:
                count(m, src, K_SYSCALLS, P, acc)
                on_event(m, src, SYSCALL, P, misc, acc)
            else:
                on_event(m, src, k, P, misc, acc)
        sync_tlb(m, tlb, misc)
