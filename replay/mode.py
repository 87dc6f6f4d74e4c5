"""A virtualization mode as the model sees it: typed, frozen, no file or CLI knowledge.

pipeline/ turns configs/modes/*.toml into Mode records; the field defaults here are
the only defaults (a TOML file states what differs). See configs/modes/README.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from replay.kinds import Kind


class Paging(str, Enum):
    """How guest virtual memory is translated, which decides the paging state machine."""

    NATIVE = "native"    # hardware page tables, hardware TLB
    SOFTMMU = "softmmu"  # QEMU's software TLB in front of an emulated page walk
    SHADOW = "shadow"    # hypervisor-maintained shadow page tables, guest tables write-protected
    # Two-dimensional paging (KVM's "TDP": Intel EPT, AMD NPT): the hardware walks the guest's
    # tables and the host's; no shadow state, and every TLB miss is a 2-D walk.
    TDP = "tdp"


@dataclass(frozen=True)
class Mode:
    """What a virtualization mode does to each guest event, and how big its state is."""

    name: str
    paging: Paging
    # Guest event kind -> priced driver it causes. Paging state adds its own drivers.
    on_event: dict[Kind, str] = field(default_factory=dict)
    # Guest-side paravirt transforms: accesses to these ports are removed from the guest ...
    dropped_io_ports: frozenset[int] = frozenset()
    # ... and reads (`in`) of these ports (e.g. the i8259A's dummy IMR read) ...
    dropped_io_reads: frozenset[int] = frozenset()
    # ... and writes (`out`) to these ports (e.g. the EOI that PV EOI makes unnecessary) ...
    dropped_io_writes: frozenset[int] = frozenset()
    # ... and MMIO reads / writes of these guest-physical addresses (e.g. the HPET counter).
    dropped_mmio_reads: frozenset[int] = frozenset()
    dropped_mmio_writes: frozenset[int] = frozenset()
    # Hardware TLB entries (fully associative LRU, untagged: no VPID/PCID in 2007).
    tlb_entries: int = 256
    # Without VPID every VM entry/exit flushes the whole TLB, global entries included.
    tlb_flush_on_exit: bool = True
    # QEMU softmmu TLB entries (direct mapped, flushed on every CR3 write).
    softmmu_tlb_entries: int = 256
    # Paravirt CR3 target cache slots shared with the host; 0 = no cache.
    cr3_cache_size: int = 0
    # Shadow pages the hypervisor may hold before evicting (KVM_NUM_MMU_PAGES).
    shadow_pool_pages: int = 2048
    # False = 2.6.20 upstream: every CR3 write drops all non-global shadow pages.
    shadow_keep_on_cr3: bool = True
    # True = the trapped guest PTE write also updates the shadow PTE (no re-fault).
    shadow_update_on_pte_write: bool = True
    # Shadow roots KVM keeps besides the current one (KVM_MMU_NUM_PREV_ROOTS = 3 since 2018);
    # a CR3 write to one of them is a fast switch. 0 = no such LRU (2007).
    prev_roots: int = 0

    def translated_ns(self, span_ns: int, idle_ns: int) -> int:
        """Guest time run as translated code: QEMU runs the busy part of the span (span less
        idle) through its translator; every other mode runs guest code natively."""
        return span_ns - idle_ns if self.paging is Paging.SOFTMMU else 0


@dataclass(frozen=True)
class Guest:
    """Facts about the recorded guest that the model needs."""

    # Pages at or above this virtual page number are kernel mappings with the
    # global bit set, shared by every address space (32-bit 3G/1G split: 0xC0000).
    kernel_vpn_min: int = 0xC0000
