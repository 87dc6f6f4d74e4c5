"""QEMU's softmmu TLB: direct mapped by virtual page number, flushed whole on CR3 writes.

QEMU of 2007 (dyngen) indexed a CPU_TLB_SIZE = 256 entry table by (vaddr >> 12) & 255;
a miss runs the emulated page walk and refills (hundreds of host instructions).
"""
from __future__ import annotations


class SoftTlb:
    def __init__(self, entries: int) -> None:
        if entries <= 0 or entries & (entries - 1):
            raise ValueError(f"softmmu TLB size must be a power of two, got {entries}")
        self._mask = entries - 1
        self._tags = [-1] * entries

    def access(self, vpn: int) -> bool:
        """True on a hit; a miss fills the slot."""
        slot = vpn & self._mask
        if self._tags[slot] == vpn:
            return True
        self._tags[slot] = vpn
        return False

    def flush(self) -> None:
        self._tags = [-1] * len(self._tags)

    def invalidate(self, vpn: int) -> None:
        slot = vpn & self._mask
        if self._tags[slot] == vpn:
            self._tags[slot] = -1
