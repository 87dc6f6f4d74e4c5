"""The hardware TLB: fully associative, LRU, untagged (no VPID/PCID), with global entries."""
from __future__ import annotations


class Tlb:
    """Translations currently cached; a dict keeps LRU order (oldest first)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._lru: dict[int, bool] = {}  # vpn -> global

    def access(self, vpn: int, is_global: bool) -> bool:
        """Look `vpn` up, filling it on a miss; True on a hit."""
        hit = self._lru.pop(vpn, None) is not None
        if not hit and len(self._lru) >= self.entries:
            del self._lru[next(iter(self._lru))]
        self._lru[vpn] = is_global
        return hit

    def flush(self, keep_global: bool) -> None:
        """mov cr3 keeps global entries; a VM exit without VPID drops everything."""
        if keep_global:
            self._lru = {v: g for v, g in self._lru.items() if g}
        else:
            self._lru.clear()

    def invalidate(self, vpn: int) -> None:
        self._lru.pop(vpn, None)
