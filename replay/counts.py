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
    "exit_apic_write": "VM exit (APICv, trap-like APIC write) after a write to a virtualized APIC register that KVM must act on (TMICT, ICR, LVT, …)",
    "exit_apic_access": "VM exit on an access to the APIC-access page without APICv register virtualization: the instruction is decoded and emulated",
    "exit_eoi_induced": "VM exit (APICv, EOI-induced) for a vector in the EOI-exit bitmap (a level-triggered I/O APIC interrupt)",
    "exit_preemption_timer": "VM exit on VMX-preemption timer expiry while the guest runs: KVM's hv timer for the guest's APIC timer",
    "exit_external_interrupt": "VM exit for a host interrupt arriving while the guest runs (host tick, IPI kick); any injection follows at entry",
    "exit_msr_read": "VM exit on rdmsr of an MSR the MSR bitmap intercepts",
    "exit_msr_write": "VM exit on wrmsr of an MSR the MSR bitmap intercepts",
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
    "guest_halt_polls": "idle periods the guest's cpuidle-haltpoll spent polling instead of executing hlt (no exit)",
    "host_halt_poll_ns": "host CPU time KVM's halt polling spends spinning for a halted vCPU (sum of min(idle, halt_poll_ns))",
}

ALL_COUNTS: tuple[str, ...] = tuple(DRIVERS) + tuple(INFO)

# The drivers that are VM exits: each leaves the guest, so without VPID it flushes the whole
# TLB (reference.Machine.cause, kernel_mode's flush table). Named here, once, rather than
# read off a name's prefix.
EXITS: frozenset[str] = frozenset({
    "exit_cr3", "exit_shadow_fault", "exit_guest_pf", "exit_pte_write", "exit_invlpg", "exit_io",
    "exit_mmio", "exit_irq", "exit_hlt", "exit_cpuid", "exit_msr", "exit_hypercall", "exit_cr3_fast",
    "exit_apic_write", "exit_apic_access", "exit_eoi_induced", "exit_preemption_timer",
    "exit_external_interrupt", "exit_msr_read", "exit_msr_write",
})

# Each exit driver as the host names it: (VMX basic exit reason, SVM exit code), in the
# normalised names of pipeline kvm-stat (pipeline/tracefile/importers/exit_reasons.py), so
# modelled and measured exits meet in one table. None: that ISA has no such exit (AMD has no
# preemption timer, no EOI-exit bitmap; its AVIC traps differ). Sources: Intel SDM Vol. 3C
# appendix C (basic exit reasons) and ch. 29 (APIC virtualization); AMD APM Vol. 2 §15 and
# appendix C (SVM exit codes); KVM vmx.c kvm_vmx_exit_handlers, svm.c svm_exit_handlers.
EXIT_REASONS: dict[str, tuple[str, str | None]] = {
    "exit_cr3": ("CR_ACCESS", "WRITE_CR3"),
    "exit_cr3_fast": ("CR_ACCESS", "WRITE_CR3"),
    "exit_shadow_fault": ("EXCEPTION_NMI", "EXCP_PF"),   # #PF intercepted under shadow paging
    "exit_guest_pf": ("EXCEPTION_NMI", "EXCP_PF"),
    "exit_pte_write": ("EXCEPTION_NMI", "EXCP_PF"),      # write-protection #PF, then emulation
    "exit_invlpg": ("INVLPG", "INVLPG"),
    "exit_io": ("IO_INSTRUCTION", "IOIO"),
    "exit_mmio": ("EPT_MISCONFIG", "NPF"),               # KVM's cached MMIO SPTEs (SDM 29.3.3.1)
    "exit_irq": ("EXTERNAL_INTERRUPT", "INTR"),
    "exit_external_interrupt": ("EXTERNAL_INTERRUPT", "INTR"),
    "exit_hlt": ("HLT", "HLT"),
    "exit_cpuid": ("CPUID", "CPUID"),
    "exit_msr_read": ("MSR_READ", "MSR"),
    "exit_msr_write": ("MSR_WRITE", "MSR"),
    "exit_hypercall": ("VMCALL", "VMMCALL"),
    "exit_apic_write": ("APIC_WRITE", "AVIC_UNACCELERATED_ACCESS"),
    "exit_apic_access": ("APIC_ACCESS", "NPF"),          # without AVIC the APIC page is MMIO
    "exit_eoi_induced": ("EOI_INDUCED", None),
    "exit_preemption_timer": ("PREEMPTION_TIMER", None),
}
# exit_msr (the 2007 modes' one MSR driver) has no single reason: MSR_READ or MSR_WRITE.


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
