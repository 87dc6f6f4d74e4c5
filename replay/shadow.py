"""KVM's shadow page-table pool (Kivity's cache, 2.6.20-rc4 "trunk").

Shadow pages are kept per guest page table, keyed by (address space, table), in a
bounded pool (KVM_NUM_MMU_PAGES: 256 default, 2048 in the seed's runs). A table
holds the shadow PTEs filled so far, one per guest page touched through it; a
missing PTE is a hidden page fault. A full pool evicts its least recently used
page (KVM evicted in creation order; LRU is this model's documented choice, and
the two agree on the cyclic patterns that thrash). Kernel mappings live in tables
of the shared space GLOBAL_SPACE, as every process maps the same kernel tables.
"""
from __future__ import annotations

GLOBAL_SPACE = -1
ROOT = -1              # table index of an address space's root (page directory)
TABLE_SHIFT = 10       # 1024 PTEs per 32-bit page table: one table maps 4 MiB

Key = tuple[int, int]


def table_of(space: int, vpn: int) -> Key:
    """The guest page table (and so the shadow page) that maps `vpn`."""
    return (space, vpn >> TABLE_SHIFT)


class ShadowPool:
    def __init__(self, capacity: int) -> None:
        if capacity < 2:
            raise ValueError(f"shadow pool needs at least 2 pages, got {capacity}")
        self.capacity = capacity
        self._pages: dict[Key, set[int]] = {}  # LRU order, oldest first

    def __len__(self) -> int:
        return len(self._pages)

    def use(self, key: Key) -> tuple[bool, list[Key]]:
        """Mark `key` most recently used, allocating it if absent.

        Returns (was present, keys evicted to make room)."""
        ptes = self._pages.pop(key, None)
        evicted: list[Key] = []
        if ptes is None:
            while len(self._pages) >= self.capacity:
                victim = next(iter(self._pages))
                del self._pages[victim]
                evicted.append(victim)
        self._pages[key] = set() if ptes is None else ptes
        return ptes is not None, evicted

    def is_shadowed(self, key: Key) -> bool:
        """Shadowed guest tables are write-protected: writes to them trap."""
        return key in self._pages

    def fill_pte(self, key: Key, vpn: int) -> bool:
        """Fill the shadow PTE for `vpn` in a present table; True if it was missing."""
        ptes = self._pages[key]
        missing = vpn not in ptes
        ptes.add(vpn)
        return missing

    def drop_pte(self, key: Key, vpn: int) -> None:
        self._pages[key].discard(vpn)

    def drop_spaces_except(self, keep: int) -> list[Key]:
        """Free every page not of space `keep` (upstream's CR3 write); returns them."""
        dropped = [k for k in self._pages if k[0] != keep]
        for k in dropped:
            del self._pages[k]
        return dropped
