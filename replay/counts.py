"""Counts of cost drivers: what a replay produces, what pricing consumes.

A Counts record adds (shards merge by `+`) and compares (serial == sharded), so the
serial run is simply the sharded run with one shard. Driver names are documented
in DRIVERS; pricing looks their unit costs up in a hardware profile by the same name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Priced drivers: each needs a unit cost (ns) in every hardware profile.
DRIVERS: dict[str, str] = {
    "exit_cr3": "VM exit on a guest CR3 write (mov cr3)",
    "exit_shadow_fault": "VM exit for a hidden (shadow) page fault: guest PTE valid, shadow PTE missing",
    "exit_guest_pf": "VM exit for a guest-visible page fault, reflected into the guest",
    "exit_pte_write": "VM exit for a write to a write-protected (shadowed) guest page table, emulated",
    "exit_invlpg": "VM exit on invlpg",
    "exit_io": "VM exit for port I/O, handled in userspace QEMU",
    "exit_mmio": "VM exit for MMIO, handled in userspace QEMU",
    "exit_irq": "VM exit for an external interrupt, plus virtual interrupt injection",
    "exit_hlt": "VM exit on hlt",
    "exit_cpuid": "VM exit on cpuid",
    "exit_msr": "VM exit on rdmsr/wrmsr",
    "exit_hypercall": "VM exit on a hypercall (vmcall)",
    "shadow_root_alloc": "a shadow page directory (root) built for an address space",
    "shadow_page_alloc": "a shadow page table allocated (and later filled) in the pool",
    "shadow_page_zap": "a shadow page freed: evicted from a full pool or dropped on CR3 write",
    "tlb_refill_extra": "hardware TLB refills beyond native's, caused by flushes on VM exit",
    "cr3_cache_lookup": "paravirt guest's CR3 target cache lookup on a context switch",
    "softmmu_fill": "QEMU softmmu TLB miss: page walk and TLB fill in the emulator",
    "softmmu_flush": "QEMU softmmu TLB flush (CR3 write)",
    "emul_exception": "QEMU: a guest exception (page fault) delivered by the emulator",
    "emul_io": "QEMU: a port or MMIO access emulated in process",
    "emul_irq": "QEMU: an external interrupt delivered between translated blocks",
    "emulated_ns": "QEMU: native busy time run as translated code (unit cost = slowdown - 1)",
    "native_io_avoided": "port I/O the paravirt guest no longer makes (its native time is saved)",
    "tdp_walk_extra": "a TLB miss under two-dimensional paging (EPT/NPT): the 2-D walk's cost beyond a native walk",
    "exit_cr3_fast": "VM exit on a guest CR3 write whose shadow root KVM still holds among its previous roots",
    "native_mmio_avoided": "MMIO the paravirt guest no longer makes (its native time is saved)",
}

# Informational counts: reported, never priced.
INFO: dict[str, str] = {
    "events": "events replayed",
    "idle_ns": "native idle time (sum of hlt values)",
    "cr3_writes": "guest CR3 writes",
    "cr3_cache_hit": "CR3 target cache hits (no exit)",
    "cr3_cache_miss": "CR3 target cache misses (exit, slot refill)",
    "shadow_root_hit": "CR3 writes whose shadow root was still cached",
    "tlb_miss_native": "hardware TLB misses under native flushing",
    "tlb_miss": "hardware TLB misses under this mode",
    "syscalls": "guest system calls",
}

ALL_COUNTS: tuple[str, ...] = tuple(DRIVERS) + tuple(INFO)

# The drivers that are VM exits: each leaves the guest, so without VPID it flushes the whole
# TLB (reference.Machine.cause, kernel_mode's flush table). Named here, once, rather than
# read off a name's prefix.
EXITS: frozenset[str] = frozenset({
    "exit_cr3", "exit_shadow_fault", "exit_guest_pf", "exit_pte_write", "exit_invlpg", "exit_io",
    "exit_mmio", "exit_irq", "exit_hlt", "exit_cpuid", "exit_msr", "exit_hypercall", "exit_cr3_fast",
})


@dataclass(frozen=True)
class Counts:
    """Per-driver integer counts; missing names are zero."""

    values: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.values) - set(ALL_COUNTS)
        if unknown:
            raise ValueError(f"unknown count names: {sorted(unknown)}")

    def __getitem__(self, name: str) -> int:
        return self.values.get(name, 0)

    def __add__(self, other: Counts) -> Counts:
        names = set(self.values) | set(other.values)
        return Counts({n: self[n] + other[n] for n in names})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Counts):
            return NotImplemented
        return all(self[n] == other[n] for n in ALL_COUNTS)

    def __hash__(self) -> int:
        return hash(tuple(self[n] for n in ALL_COUNTS))

    def as_row(self) -> dict[str, int]:
        """Every known count, zeros included, in a fixed order (a results row)."""
        return {n: self[n] for n in ALL_COUNTS}
