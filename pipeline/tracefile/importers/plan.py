"""The recording-wide decisions the mapping applies, from what reading learned (`facts.Facts`)
and the command's options; each is written into the trace metadata's `assumptions` with its
evidence, so a result derived from the trace says what was estimated and why.

* **Interrupts.** With Dovetail's `irq_pipeline_entry` recorded, each one is one hardware
  interrupt (kernel/irq/pipeline.c handle_irq_pipelined traces every interrupt the CPU takes)
  and irq_handler_entry / irq_vectors entries make no rows: they would count the same
  interrupt twice. Otherwise irq_handler_entry (not of a synthetic IRQ), the irq_vectors
  entries and ipi_entry make the rows. The source (`arg`): the LAPIC timer (vector 236, an IRQ
  named "…LAPIC timer…" or followed by local_timer_entry) is IRQ_TIMER with value 236; IPI
  vectors and IRQs named "…IPI…" are IRQ_IPI; a device IRQ is IRQ_LEVEL if it is an I/O APIC
  PCI INTx pin (`--level-irqs`, default QEMU's: i440fx PCI link IRQs 5/9/10/11 (9 also the ACPI
  SCI), q35 PIRQ A-H = GSI 16-23; PCI INTx is level-triggered active-low), else IRQ_EDGE
  (MSI/MSI-X and edge pins).
* **CR3.** With `tlb_flush` "flush on task switch" recorded (arch/x86/mm/tlb.c
  switch_mm_irqs_off traces every CR3 load of a switch), each is one cr3_write; else
  sched_switch and cobalt_switch_context decide (`mapping`).
* **x2APIC.** 1 if any write_msr to 0x800-0x8FF (the x2APIC MSR range) is recorded, else 0;
  `--x2apic/--xapic` override.
* **Timer device.** TSC deadline if write_msr to 0x6E0 (IA32_TSC_DEADLINE) is recorded (those
  writes are the armings), else the local APIC one-shot timer when write_msr is recorded but
  none to 0x6E0, else `--timer-device` (default lapic); an explicit `--timer-device` wins.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline.tracefile.importers import chunk as ck
from pipeline.tracefile.importers.facts import SYNTHETIC_IRQS, Facts
from replay.kinds import IRQ_EDGE, IRQ_IPI, IRQ_LEVEL, IRQ_TIMER, TIMER_HPET, TIMER_LAPIC, TIMER_PIT, TIMER_TSC_DEADLINE

TIMER_DEVICES = {"lapic": TIMER_LAPIC, "tsc-deadline": TIMER_TSC_DEADLINE, "pit": TIMER_PIT, "hpet": TIMER_HPET}
DEFAULT_LEVEL_IRQS = frozenset({5, 9, 10, 11, *range(16, 24)})
LEVEL_IRQS_SOURCE = ("QEMU: i440fx PCI link IRQs 5/9/10/11 and the ACPI SCI 9, q35 PIRQ A-H = GSI 16-23; "
                     "PCI INTx is level-triggered active-low")
LOCAL_TIMER_VECTOR = 236          # arch/x86/include/asm/irq_vectors.h LOCAL_TIMER_VECTOR
MSR_TSC_DEADLINE, MSR_X2APIC_EOI = 0x6E0, 0x80B
MSR_X2APIC_ICR, MSR_X2APIC_TMICT = 0x830, 0x838
X2APIC_MSRS = range(0x800, 0x900)
# irq_vectors entries of IPIs (arch/x86/include/asm/trace/irq_vectors.h), and ipi:ipi_entry.
IPI_ENTRIES = frozenset({"reschedule_entry", "call_function_entry", "call_function_single_entry",
                         "irq_work_entry", "x86_platform_ipi_entry", "ipi_entry"})


@dataclass(frozen=True)
class Options:
    """What the command line may say instead of the evidence (None: decide from the recording)."""
    x2apic: bool | None = None
    timer_device: str | None = None
    level_irqs: frozenset[int] | None = None
    device_rules: bool = True
    no_devices: frozenset[str] = frozenset()
    devices: dict[str, str] = field(default_factory=dict)     # netdev -> device config (`--device eth0=e1000`)


class IrqClass(NamedTuple):
    """What one interrupt line becomes: no row, or value and source."""
    row: bool
    value: int
    source: int


@dataclass
class Plan:
    pipeline: bool
    cr3_from_tlb: bool
    x2apic: int
    timer_device: int
    tsc_deadline_msr: bool           # 0x6E0 writes are recorded and are the armings
    tick_shots: bool                  # cobalt_tick_shot recorded
    level_irqs: frozenset[int]
    irq_names: dict[int, str]
    timer_irqs: frozenset[int]
    # write_msr indices that make no msr row, because other rows stand for those writes (each
    # would otherwise be counted twice): index -> why
    dropped_msr_writes: dict[int, str] = field(default_factory=dict)
    assumptions: dict[str, Any] = field(default_factory=dict)

    def irq(self, irq: int) -> IrqClass:
        """An irq_handler_entry / irq_pipeline_entry of `irq`."""
        name = self.irq_names.get(irq, "")
        if name in SYNTHETIC_IRQS:
            return IrqClass(False, irq, IRQ_EDGE)
        if irq in self.timer_irqs or "LAPIC timer" in name:
            return IrqClass(True, LOCAL_TIMER_VECTOR, IRQ_TIMER)
        if "IPI" in name.split():
            return IrqClass(True, irq, IRQ_IPI)
        return IrqClass(True, irq, IRQ_LEVEL if irq in self.level_irqs else IRQ_EDGE)

    @staticmethod
    def vector(event: str) -> int:
        """The source of an irq_vectors / ipi entry event."""
        if event == "local_timer_entry":
            return IRQ_TIMER
        return IRQ_IPI if event in IPI_ENTRIES else IRQ_EDGE


def parse_irqs(text: str) -> frozenset[int]:
    """`5,9-11,16-23` -> those IRQ numbers; ValueError naming the bad part."""
    irqs: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        low, _, high = part.partition("-")
        if not (low.isdigit() and (not high or high.isdigit())) or int(high or low) < int(low):
            raise ValueError(f"{part!r} is not an IRQ number or range (e.g. 5,9-11)")
        irqs.update(range(int(low), int(high or low) + 1))
    return frozenset(irqs)


def make_plan(facts: Facts, names: ck.Names, options: Options) -> Plan:
    pipeline = facts.roles[ck.R_IRQ_PIPELINE] > 0
    x2_writes = sum(n for m, n in facts.msr_writes.items() if m in X2APIC_MSRS)
    x2apic = int(options.x2apic) if options.x2apic is not None else int(x2_writes > 0)
    device, device_why = _timer_device(facts, options)
    level = options.level_irqs if options.level_irqs is not None else DEFAULT_LEVEL_IRQS
    plan = Plan(pipeline, facts.tlb_switches > 0, x2apic, TIMER_DEVICES[device],
                facts.msr_writes[MSR_TSC_DEADLINE] > 0 and device == "tsc-deadline",
                facts.roles[ck.R_TICK] > 0, level, dict(names.irqs), facts.timer_irqs)
    plan.assumptions.update({
        "interrupts": ("one per irq_pipeline_entry (Dovetail's interrupt pipeline: every hardware interrupt; "
                       "irq_handler_entry and irq_vectors entries make no rows)" if pipeline else
                       "one per irq_handler_entry (not Dovetail's synthetic IRQs), irq_vectors entry and ipi_entry"),
        "level_irqs": {"irqs": sorted(level), "source": "--level-irqs" if options.level_irqs is not None
                       else LEVEL_IRQS_SOURCE},
        "cr3": (f"one per tlb_flush 'flush on task switch' ({facts.tlb_switches} recorded; arch/x86/mm/tlb.c "
                "switch_mm_irqs_off traces every CR3 load of a switch)" if plan.cr3_from_tlb else
                "sched_switch and cobalt_switch_context to a user task of another process"),
        "x2apic": {"value": x2apic, "evidence": "--x2apic/--xapic" if options.x2apic is not None
                   else f"{x2_writes} write_msr to 0x800-0x8FF recorded"},
        "timer_device": {"device": device, "evidence": device_why},
    })
    plan.dropped_msr_writes = _dropped_msr_writes(plan, facts)
    if plan.dropped_msr_writes:
        plan.assumptions["msr_writes_without_rows"] = {f"{m:#x}": why for m, why in plan.dropped_msr_writes.items()}
    return plan


def _dropped_msr_writes(plan: Plan, facts: Facts) -> dict[int, str]:
    """The MSR writes other rows already stand for: the x2APIC EOI (the model derives EOIs from
    the irq rows), IA32_TSC_DEADLINE when its writes are the armings, the x2APIC TMICT when the
    armings come from the local APIC timer's other evidence (tick shots or the estimate), and
    the x2APIC ICR when ipi_send rows are made (ipi_raise / ipi_send_*)."""
    dropped = {MSR_X2APIC_EOI: "the x2APIC EOI: the model derives EOIs from the irq rows"}
    if plan.tsc_deadline_msr:
        dropped[MSR_TSC_DEADLINE] = "IA32_TSC_DEADLINE: these writes are the timer_arm rows"
    if plan.timer_device == TIMER_LAPIC:
        dropped[MSR_X2APIC_TMICT] = "the x2APIC TMICT: each arming of the local APIC timer is a timer_arm row"
    if facts.roles[ck.R_IPI_SEND]:
        dropped[MSR_X2APIC_ICR] = "the x2APIC ICR: each IPI sent is an ipi_send row"
    return dropped


def _timer_device(facts: Facts, options: Options) -> tuple[str, str]:
    if options.timer_device is not None:
        return options.timer_device, "--timer-device"
    if facts.msr_writes[MSR_TSC_DEADLINE]:
        return "tsc-deadline", f"{facts.msr_writes[MSR_TSC_DEADLINE]} write_msr to 0x6E0 (IA32_TSC_DEADLINE)"
    writes = sum(facts.msr_writes.values())
    if writes:
        return "lapic", (f"{writes} write_msr recorded, none to 0x6E0 (IA32_TSC_DEADLINE): "
                         "the local APIC one-shot timer (TMICT)")
    return "lapic", "no write_msr recorded: the default (--timer-device)"
