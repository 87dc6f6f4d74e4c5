"""KVM's local APIC as the model sees it: which VM exit each APIC event costs under a mode.

`Mode.lapic` picks the APIC a mode replays: "" (legacy: irq, msr, timer_arm and ipi_send
cause the drivers of `on_event`, as in the 2007 modes), "emulated" (KVM's in-kernel LAPIC
without APICv: every APIC access traps and is emulated) or "apicv" (APIC-register
virtualization, virtual-interrupt delivery and posted interrupts: Intel SDM Vol. 3C ch. 29).

This file is the table of *which* driver an APIC event causes under a mode and a guest (xAPIC
or x2APIC), read by both engines as they read mode.PAGING; *when* a rule applies (the vCPU
running or halted, the timer's last delay, the MSR bitmap, the APIC page) is each engine's
code, reference.Machine defining it. Sources are cited per rule; KVM (host) files are under
arch/x86/kvm/ of Linux 6.x, guest files are named by their path.
"""
from __future__ import annotations

from typing import NamedTuple

from replay.kinds import DELAY_UNKNOWN, TIMER_HPET, TIMER_LAPIC, TIMER_PIT, TIMER_TSC_DEADLINE

LAPICS = ("", "emulated", "apicv")
# The xAPIC's registers: a 4 KiB MMIO page at the default APIC base (IA32_APIC_BASE, SDM
# Vol. 3A 11.4.1), and the two registers APICv virtualizes for writes without an exit.
APIC_PAGE_FIRST, APIC_PAGE_LAST = 0xFEE00000, 0xFEE00FFF
APIC_EOI, APIC_TPR = 0xB0, 0x80
APIC_OFFSET_MASK = 0xFFF
# No timer_arm seen yet: the timer counts as armed long ago (it cannot have expired at entry).
NEVER_ARMED = DELAY_UNKNOWN


class TimerExit(NamedTuple):
    """What programming one timer device costs: `n` exits of `driver`."""

    driver: str
    n: int


class ApicDrivers(NamedTuple):
    """The driver ("" = none) each APIC event causes under one mode and guest."""

    kick: str        # a device interrupt or an IPI arriving while the vCPU runs
    eoi: str         # the guest's EOI of an edge-triggered, timer or IPI vector
    level_eoi: str   # the guest's EOI of a level-triggered I/O APIC vector
    timer: str       # the APIC timer firing while the vCPU runs
    arm: tuple[TimerExit, ...]  # programming each timer device, indexed by TIMER_*
    ipi: str         # sending an IPI: the ICR write
    page: bool       # xAPIC: MMIO to the APIC page is the APIC's (x2APIC disables the page)
    page_read: str   # a read of the APIC page
    page_quiet: str  # a write of EOI or TPR to the APIC page
    page_write: str  # any other write to the APIC page


LEGACY = ApicDrivers("", "", "", "", (TimerExit("", 0),) * 4, "", False, "", "", "")


def apic_drivers(lapic: str, preemption_timer: bool, x2apic: int) -> ApicDrivers:
    """The drivers of a mode's APIC (Mode.lapic, Mode.preemption_timer) for a guest whose
    APIC is in x2APIC mode (Guest.x2apic) or not; LEGACY when the mode has no APIC model."""
    if not lapic:
        return LEGACY
    apicv = lapic == "apicv"
    # The register access an APIC write is: x2APIC registers are MSRs 0x800-0x8FF and KVM
    # intercepts the writes it must act on (vmx.c vmx_update_msr_bitmap_x2apic); an xAPIC
    # write to the APIC-access page is a trap-like APIC-write exit under APIC-register
    # virtualization (SDM 29.4.3.2; vmx.c handle_apic_write) and, without it, a fault-like
    # APIC-access exit that KVM decodes and emulates (SDM 29.4.1; vmx.c handle_apic_access).
    write = "exit_msr_write" if x2apic else "exit_apic_write" if apicv else "exit_apic_access"
    # Without APICv the guest's EOI is such a write (lapic.c apic_set_eoi); with virtual-
    # interrupt delivery the CPU completes it (SDM 29.1.2), except for a vector in the
    # EOI-exit bitmap: KVM puts the level-triggered I/O APIC vectors there, whose EOI must reach
    # the I/O APIC (ioapic.c kvm_ioapic_scan_entry, x86.c vcpu_load_eoi_exitmap; SDM 29.1.3).
    eoi = "" if apicv else write
    return ApicDrivers(
        # A device interrupt (or IPI) for a running vCPU: APICv posts it, the CPU delivers it
        # without an exit (SDM 29.6; vmx.c vmx_deliver_posted_interrupt); without APICv KVM
        # kicks the vCPU out with a host IPI to inject it (lapic.c __apic_accept_irq ->
        # kvm_vcpu_kick): an external-interrupt exit.
        kick="" if apicv else "exit_external_interrupt",
        eoi=eoi,
        level_eoi="exit_eoi_induced" if apicv else eoi,
        # KVM runs the guest's APIC timer on the VMX-preemption timer while the vCPU runs
        # (vmx.c handle_preemption_timer, lapic.c kvm_lapic_expired_hv_timer); with
        # kvm_intel.preemption_timer=0 it is a host hrtimer, whose interrupt on the vCPU's CPU
        # is an external-interrupt exit (lapic.c apic_timer_fn).
        timer="exit_preemption_timer" if preemption_timer else "exit_external_interrupt",
        arm=_timer_exits(write),
        # The ICR write sends it: an APIC write (lapic.c kvm_lapic_reg_write APIC_ICR; x2APIC:
        # x86.c handle_fastpath_set_x2apic_icr_irqoff, still a WRMSR exit without IPIv).
        ipi=write,
        page=not x2apic,
        # APIC-register virtualization reads the virtual-APIC page (SDM 29.4.2) and virtualizes
        # EOI and TPR writes (SDM 29.4.3.1, with virtual-interrupt delivery); without it every
        # access to the page is an APIC-access exit (vmx.c handle_apic_access).
        page_read="" if apicv else write,
        page_quiet="" if apicv else write,
        page_write=write,
    )


def _timer_exits(lapic_write: str) -> tuple[TimerExit, ...]:
    """Programming each timer device (indexed by TIMER_*): what the guest's clockevent
    driver's set_next_event does and which exits it takes."""
    exits = {
        # Guest arch/x86/kernel/apic/apic.c lapic_next_event: one write of TMICT (xAPIC MMIO
        # 0x380; x2APIC MSR 0x838, intercepted: vmx.c vmx_update_msr_bitmap_x2apic passes no
        # timer register through).
        TIMER_LAPIC: TimerExit(lapic_write, 1),
        # apic.c lapic_next_deadline: wrmsr IA32_TSC_DEADLINE (0x6E0), intercepted (x86.c
        # kvm_set_msr_common MSR_IA32_TSC_DEADLINE -> lapic.c kvm_set_lapic_tscdeadline_msr).
        TIMER_TSC_DEADLINE: TimerExit("exit_msr_write", 1),
        # Guest drivers/clocksource/i8253.c pit_next_event: the count's low and high byte, two
        # outb to channel 0 (port 0x40).
        TIMER_PIT: TimerExit("exit_io", 2),
        # Guest arch/x86/kernel/hpet.c hpet_clkevt_set_next_event: counter read, comparator
        # write, counter read.
        TIMER_HPET: TimerExit("exit_mmio", 3),
    }
    return tuple(exits[d] for d in sorted(exits))


def timer_device(arg: int) -> int:
    """timer_arm's device (Kind.TIMER_ARM arg); a code beyond TIMER_HPET is read as the local
    APIC's one-shot timer, the clockevent device of every x86 guest without TSC-deadline."""
    return arg if arg <= TIMER_HPET else TIMER_LAPIC
