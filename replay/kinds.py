"""Guest event kinds: the trace format's `kind` codes and what `value`/`arg` mean for each.

The codes are part of trace format v1 (traces/README.md) and never change meaning;
new kinds get new codes. Unknown codes are an error, never skipped, because a
silently ignored event is a silently wrong price.
"""
from __future__ import annotations

from enum import IntEnum


class Kind(IntEnum):
    """One guest event. `value` and `arg` are interpreted per kind (see KIND_FIELDS)."""

    CR3_WRITE = 0
    TOUCH = 1
    PAGE_FAULT = 2
    PTE_WRITE = 3
    INVLPG = 4
    IO = 5
    MMIO = 6
    IRQ = 7
    HLT = 8
    SYSCALL = 9
    CPUID = 10
    MSR = 11
    HYPERCALL = 12
    TIMER_ARM = 13
    IPI_SEND = 14


KIND_FIELDS: dict[Kind, tuple[str, str]] = {
    Kind.CR3_WRITE: ("address-space id loaded into CR3 (equals `asid`)", "unused (0)"),
    Kind.TOUCH: ("virtual page number first accessed in this scheduling quantum", "1 if a write"),
    Kind.PAGE_FAULT: ("faulting virtual page number (guest-visible #PF)", "1 if a write"),
    Kind.PTE_WRITE: ("virtual page number whose guest PTE is written", "unused (0)"),
    Kind.INVLPG: ("virtual page number invalidated", "unused (0)"),
    Kind.IO: ("I/O port", "0 = in, 1 = out"),
    Kind.MMIO: ("guest-physical address", "0 = read, 1 = write"),
    Kind.IRQ: ("interrupt vector (the guest IRQ number where the recording names no vector)",
               "source: 0 = edge-triggered device (MSI/MSI-X, edge I/O APIC pin), 1 = level-triggered I/O APIC pin, 2 = local APIC timer, 3 = IPI"),
    Kind.HLT: ("native idle time in ns until the vCPU wakes (its next interrupt, else its next event)", "unused (0)"),
    Kind.SYSCALL: ("system call number", "unused (0)"),
    Kind.CPUID: ("leaf (EAX)", "unused (0)"),
    Kind.MSR: ("MSR index", "0 = rdmsr, 1 = wrmsr"),
    Kind.HYPERCALL: ("hypercall number", "unused (0)"),
    Kind.TIMER_ARM: ("the programmed delay in ns (2^64-1 if not recorded)",
                     "timer device: 0 = local APIC one-shot (TMICT), 1 = TSC-deadline MSR, 2 = PIT (i8254), 3 = HPET comparator"),
    Kind.IPI_SEND: ("destination vCPUs of the IPI (0 if not recorded)", "unused (0)"),
}

# Kind.IRQ's arg: where the interrupt comes from (the model's APIC rules depend on it).
IRQ_EDGE, IRQ_LEVEL, IRQ_TIMER, IRQ_IPI = 0, 1, 2, 3
# Kind.TIMER_ARM's arg: which timer hardware the guest programs.
TIMER_LAPIC, TIMER_TSC_DEADLINE, TIMER_PIT, TIMER_HPET = 0, 1, 2, 3
# Kind.TIMER_ARM's value when the recording does not say the delay: larger than any threshold,
# so an arming of unknown delay never counts as expired on arrival (0 is a real delay: a shot
# that is due at once).
DELAY_UNKNOWN = 2**64 - 1

KIND_NAMES: dict[str, Kind] = {k.name.lower(): k for k in Kind}
MAX_KIND = max(Kind)
