"""KVM's current shadow root and its LRU of previous roots (shadow paging, Linux 4.19+).

kvm_mmu_new_pgd() tries fast_pgd_switch() first: if the new CR3's root is the current one
or among `mmu->prev_roots` (KVM_MMU_NUM_PREV_ROOTS = 3), the roots are swapped and the
old current root becomes the most recent previous one (cached_root_find_and_keep_current,
arch/x86/kvm/mmu/mmu.c). Otherwise the least recently used previous root is freed and
the new root is looked up or built at the next VM entry (kvm_mmu_reload). A root the
shadow pool frees leaves this LRU too.
"""
from __future__ import annotations


class PrevRoots:
    """Address spaces whose shadow root KVM holds, most recently used first."""

    def __init__(self, previous: int) -> None:
        self.size = previous + 1   # the current root and `previous` earlier ones
        self.held: list[int] = []  # address spaces, the current one first

    def lookup(self, asid: int) -> bool:
        """The fast switch: a held root becomes current (most recently used)."""
        if asid not in self.held:
            return False
        self.held.remove(asid)
        self.held.insert(0, asid)
        return True

    def load(self, asid: int) -> None:
        """The slow switch: the new root becomes current, the least recently used is let go."""
        self.invalidate(asid)
        self.held.insert(0, asid)
        del self.held[self.size:]

    def invalidate(self, asid: int) -> None:
        if asid in self.held:
            self.held.remove(asid)

    def __len__(self) -> int:
        return len(self.held)
