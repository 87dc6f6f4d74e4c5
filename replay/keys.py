"""Dense ids for a trace's keys, stable across batches: what lets the kernel keep flat arrays.

The kernel's state is indexed by small integers, but a trace names pages by u64 virtual
page numbers and address spaces by u32 ids. `TraceKeys` turns them into dense ids as
batches stream in, through open-addressing hash maps of key pairs kept in numpy arrays
(one probe per event, inside numba). Ids are handed out in first-seen order and never
change, so a trace streamed row group by row group gets the same ids, and the same
state, as one call over the whole trace; no first pass over the file is needed.

Maps (each key a pair of u64):
- spaces:  (asid or CR3 value, 0) -> space id; (0, 1) is GLOBAL_SPACE, id 0.
- tables:  (space id, guest table + 1, or 0 for the root) -> table id: a shadow page.
- vpns:    (vpn, 0) -> vpn id: a TLB / softmmu key (both are untagged: vpn alone).
- pages:   (space id, vpn) -> page id; `page_info[id]` = (vpn id, table id, vpn, global),
           everything a touch, PTE write or invlpg needs, looked up once per event.
- sources: (kind << 32 | asid, device + 1, or 0 for none) -> source id (attribution).

The numba functions take records (typing.NamedTuple) of arrays: a Map per IdMap, Maps for
all five, Columns for the events, Found for what they fill in, Rules for the numbers. Only
this file's numba functions call each other (numba's cache does not notice changes in
other files), and all sizes arrive as arguments.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from replay.kinds import MAX_KIND, Kind

CR3_WRITE, TOUCH, PTE_WRITE, INVLPG, IO, MMIO = (int(k) for k in (
    Kind.CR3_WRITE, Kind.TOUCH, Kind.PTE_WRITE, Kind.INVLPG, Kind.IO, Kind.MMIO))
GLOBAL_KEY = (0, 1)   # the spaces key of GLOBAL_SPACE, which no asid or CR3 value can take
INITIAL_SLOTS = 1 << 10
MAX_NEW_PER_EVENT = 2  # an event adds at most 2 keys to a map (a CR3 write: its asid and its value)
ZERO = np.uint64(0)
# The functions only numba code calls: no Python or C entry points, inlined by LLVM (see
# kernel_core's Numba notes: a call that stayed a call would pass every field of every record).
inner = njit(cache=True, forceinline=True, _nrt=False, no_cpython_wrapper=True, no_cfunc_wrapper=True)


class Map(NamedTuple):
    """An IdMap's arrays."""

    slots: np.ndarray   # (capacity, 3) uint64: k1, k2, id + 1 (0 = an empty slot)
    pairs: np.ndarray   # (limit, 2) uint64: the key of each id
    issued: np.ndarray  # (1,) int64: ids handed out (not `count`: that is tuple's own method)


class Maps(NamedTuple):
    """The five maps of a trace (the module docstring's)."""

    spaces: Map
    tables: Map
    vpns: Map
    pages: Map
    sources: Map


class Columns(NamedTuple):
    """The events' columns that name keys (Events'), read only."""

    kind: np.ndarray    # uint8
    value: np.ndarray   # uint64
    asid: np.ndarray    # uint32


class Found(NamedTuple):
    """What _remap fills in: per page, per source and per event."""

    page_info: np.ndarray      # (pages, 4) int64: vpn id, table id, vpn, global
    source_events: np.ndarray  # (sources,) int64: events per source
    ref: np.ndarray            # (events,) int64: TraceKeys.remap's ref
    source: np.ndarray         # (events,) int64: source id
    plain_source: np.ndarray   # (MAX_KIND + 1,) int64 scratch: the current asid's source id per kind


class Rules(NamedTuple):
    """The numbers _remap keys by."""

    kernel_vpn_min: np.uint64  # Guest.kernel_vpn_min: pages from here on are global
    table_shift: np.uint64     # vpn >> table_shift: the guest table that maps it
    max_new: np.int64          # MAX_NEW_PER_EVENT


class IdMap:
    """Key pair -> dense id, in first-seen order; `pairs[id]` is the key of an id."""

    def __init__(self, slots: int = INITIAL_SLOTS) -> None:
        self.slots = np.zeros((slots, 3), dtype=np.uint64)  # (k1, k2, id + 1), 0 = empty
        self.pairs = np.zeros((slots // 2, 2), dtype=np.uint64)
        self.count = np.zeros(1, dtype=np.int64)

    @property
    def limit(self) -> int:
        """Ids this map can hold before it must grow (load factor 1/2)."""
        return len(self.pairs)

    def __len__(self) -> int:
        return int(self.count[0])

    def room(self) -> int:
        return self.limit - len(self)

    def grow(self) -> None:
        slots = 2 * len(self.slots)
        n = len(self)
        pairs = np.zeros((slots // 2, 2), dtype=np.uint64)
        pairs[:n] = self.pairs[:n]
        self.slots = np.zeros((slots, 3), dtype=np.uint64)
        self.pairs = pairs
        _rehash(self.slots, pairs, n)

    def arrays(self) -> Map:
        return Map(self.slots, self.pairs, self.count)


class TraceKeys:
    """Every key map of one trace (one vCPU), shared by all modes replayed over it."""

    def __init__(self, kernel_vpn_min: int, table_shift: int) -> None:
        self.kernel_vpn_min = kernel_vpn_min
        self.table_shift = table_shift
        self.spaces, self.tables, self.vpns, self.pages, self.sources = (IdMap() for _ in range(5))
        self.page_info = np.zeros((self.pages.limit, 4), dtype=np.int64)
        self.source_events = np.zeros(self.sources.limit, dtype=np.int64)
        self._ref, self._source = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        _insert(self.spaces.arrays(), np.uint64(GLOBAL_KEY[0]), np.uint64(GLOBAL_KEY[1]))

    def maps(self) -> tuple[IdMap, ...]:
        return self.spaces, self.tables, self.vpns, self.pages, self.sources

    def remap(self, kind: np.ndarray, value: np.ndarray, asid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per event: `ref` (page id for touch/pte_write/invlpg, root table id for cr3_write,
        else 0) and `source` id; new keys are added, maps grown as needed.

        Both are views of buffers that the next call overwrites: allocating 16 MB per million
        events cost page faults (up to a fifth of a fast mode's replay) whenever the
        allocator had handed the previous batch's pages back to the OS."""
        n = len(kind)
        if len(self._ref) < n:
            self._ref, self._source = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        ref, source = self._ref[:n], self._source[:n]
        rules = Rules(np.uint64(self.kernel_vpn_min), np.uint64(self.table_shift), np.int64(MAX_NEW_PER_EVENT))
        done = 0
        while done < n:
            maps = Maps(*(m.arrays() for m in self.maps()))
            found = Found(self.page_info, self.source_events, ref, source, np.full(MAX_KIND + 1, -1, dtype=np.int64))
            done = _remap(Columns(kind, value, asid), done, maps, found, rules)
            for m in self.maps():
                if m.room() < 64 * MAX_NEW_PER_EVENT:
                    m.grow()
            self.page_info = _resized(self.page_info, self.pages.limit)
            self.source_events = _resized(self.source_events, self.sources.limit)
        return ref, source

    # --- encoding the trace's own keys as ids (kernel.restore), added if new ------------
    def space_id(self, key: int | None) -> int:
        """The id of an asid / CR3 value; GLOBAL_SPACE's (0) for None: space_key's inverse."""
        return 0 if key is None else _id(self.spaces, key, 0)

    def table_id(self, space: int | None, index: int | None) -> int:
        """The id of table_key's (space key, guest table index or None for the root)."""
        return _id(self.tables, self.space_id(space), 0 if index is None else index + 1)

    def vpn_id(self, vpn: int) -> int:
        return _id(self.vpns, vpn, 0)

    # --- decoding ids back into the trace's own keys (snapshots, attribution) ----------
    def space_key(self, space: int) -> int | None:
        """The asid / CR3 value of a space id; None for GLOBAL_SPACE."""
        return None if space == 0 else int(self.spaces.pairs[space, 0])

    def table_key(self, table: int) -> tuple[int | None, int | None]:
        """(space key, guest table index or None for the root) of a table id."""
        space, t = (int(x) for x in self.tables.pairs[table])
        return self.space_key(space), (None if t == 0 else t - 1)

    def vpn_key(self, vpn: int) -> int:
        return int(self.vpns.pairs[vpn, 0])

    def source_key(self, source: int) -> tuple[int, int, int]:
        """(kind code, asid, device or -1) of a source id."""
        k1, k2 = (int(x) for x in self.sources.pairs[source])
        return k1 >> 32, k1 & 0xFFFFFFFF, k2 - 1


def _id(m: IdMap, k1: int, k2: int) -> int:
    """The id of (k1, k2) in `m`, added if new (the map grown first when full)."""
    if m.room() < 1:
        m.grow()
    return int(_insert(m.arrays(), np.uint64(k1), np.uint64(k2))[0])


def _resized(a: np.ndarray, rows: int) -> np.ndarray:
    if len(a) >= rows:
        return a
    out = np.zeros((rows,) + a.shape[1:], dtype=a.dtype)
    out[: len(a)] = a
    return out


@inner
def _slot_of(slots, k1, k2):
    """The hash slot holding (k1, k2), or the empty slot where it belongs (linear probing)."""
    mask = np.uint64(len(slots) - 1)
    h = k1 + k2 * np.uint64(0x9E3779B97F4A7C15)  # splitmix64's finaliser mixes every bit
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    s = np.int64(h & mask)
    while slots[s, 2] != 0 and (slots[s, 0] != k1 or slots[s, 1] != k2):
        s = (s + 1) & (len(slots) - 1)
    return s


@njit(cache=True, forceinline=True, _nrt=False)  # also called from Python (TraceKeys)
def _insert(m, k1, k2):
    """The id of (k1, k2) in map `m`, added if new; returns (id, was new). The caller ensures room."""
    s = _slot_of(m.slots, k1, k2)
    if m.slots[s, 2] != 0:
        return np.int64(m.slots[s, 2]) - 1, False
    i = m.issued[0]
    m.issued[0] = i + 1
    m.slots[s, 0] = k1
    m.slots[s, 1] = k2
    m.slots[s, 2] = i + 1
    m.pairs[i, 0] = k1
    m.pairs[i, 1] = k2
    return i, True


@njit(cache=True, _nrt=False)
def _rehash(slots, pairs, n):
    for i in range(n):
        s = _slot_of(slots, pairs[i, 0], pairs[i, 1])
        slots[s, 0] = pairs[i, 0]
        slots[s, 1] = pairs[i, 1]
        slots[s, 2] = i + 1


@inner
def _room(m):
    return len(m.pairs) - m.issued[0]


@njit(cache=True, _nrt=False)
def _remap(cols, start, maps, found, rules):
    """Fill found.ref and found.source from row `start` while every map has room; returns
    the next row to do."""
    kind, value, asid = cols
    ref, source, plain_source = found.ref, found.source, found.plain_source
    n = len(kind)
    last_asid = np.int64(-1)
    space = np.int64(0)
    i = start
    while i < n:
        budget = _budget(maps, rules.max_new)
        if budget < 1:
            return i
        end = min(n, i + budget)
        for j in range(i, end):
            k = np.int64(kind[j])
            a = np.int64(asid[j])
            if a != last_asid:  # another address space: its id, and its sources afresh
                space = _insert(maps.spaces, np.uint64(a), ZERO)[0]
                last_asid = a
                plain_source[:] = -1
            v = value[j]
            if k == TOUCH or k == PTE_WRITE or k == INVLPG:
                ref[j] = _page(maps, found, rules, space, v)
            elif k == CR3_WRITE:
                root_space = _insert(maps.spaces, v, ZERO)[0]
                ref[j] = _insert(maps.tables, np.uint64(root_space), ZERO)[0]
            else:
                ref[j] = 0
            # The source: (kind, asid, device: an I/O or MMIO event's port or address); the
            # others' ids are cached per kind for the current asid.
            if k == IO or k == MMIO:
                s = _insert(maps.sources, (np.uint64(k) << np.uint64(32)) | np.uint64(a), v + np.uint64(1))[0]
            else:
                s = plain_source[k]
                if s < 0:
                    s = _insert(maps.sources, (np.uint64(k) << np.uint64(32)) | np.uint64(a), ZERO)[0]
                    plain_source[k] = s
            source[j] = s
            found.source_events[s] += 1
        i = end
    return n


@inner
def _budget(maps, max_new):
    """Events that surely fit: each adds at most max_new keys to a map."""
    rooms = (_room(maps.spaces), _room(maps.tables), _room(maps.vpns), _room(maps.pages), _room(maps.sources))
    return min(rooms) // max_new


@inner
def _page(maps, found, rules, space, v):
    """The page id of vpn `v` in `space` (a global page's in GLOBAL_SPACE); a new page gets
    its page_info: vpn id, table id, vpn, global."""
    is_global = v >= rules.kernel_vpn_min
    sp = np.int64(0) if is_global else space
    page, new = _insert(maps.pages, np.uint64(sp), v)
    if new:
        found.page_info[page, 0] = _insert(maps.vpns, v, ZERO)[0]
        found.page_info[page, 1] = _insert(maps.tables, np.uint64(sp), (v >> rules.table_shift) + np.uint64(1))[0]
        found.page_info[page, 2] = np.int64(v)
        found.page_info[page, 3] = np.int64(is_global)
    return page
