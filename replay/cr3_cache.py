"""Molnar's CR3 target cache (kvm-paravirt, Jan 2007).

The guest shares a table of {guest_cr3, host_cr3} pairs (KVM_CR3_CACHE_SIZE = 4)
with the host. On a switch the guest looks its new CR3 up: a hit loads the cached
host CR3, which is in the VMCS CR3-target list, so it does not exit. A miss exits;
the host loads the shadow root and fills the next slot round-robin. The host
invalidates an entry when it frees that shadow root.
"""
from __future__ import annotations


class Cr3TargetCache:
    def __init__(self, size: int) -> None:
        self._slots: list[int | None] = [None] * size
        self._next = 0

    def lookup(self, asid: int) -> bool:
        return asid in self._slots

    def fill(self, asid: int) -> None:
        """Round-robin refill, as the patch's host side does on a miss."""
        if not self._slots:
            return
        self._slots[self._next] = asid
        self._next = (self._next + 1) % len(self._slots)

    def invalidate(self, asid: int) -> None:
        self._slots = [None if s == asid else s for s in self._slots]
