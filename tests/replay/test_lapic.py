"""Today's KVM (issue 14): the local APIC model of replay/lapic.py and its modes, kvm-apicv,
kvm-noapicv, kvm-apicv-haltpoll and kvm-apicv-nopt, as loaded from configs/modes.

One small trace per rule; every expected count is worked out by hand in the comment beside it
and holds for the oracle and for the compiled kernel (the `run` and `by_source` fixtures).
kvm-apicv runs on EPT + VPID (no TLB flush on exit) with a 250 Hz host tick, so the default
1 ms span adds no tick exits (250 x 1 ms / 1 s = 0.25, rounded down) unless a test says so.
"""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.config.errors import ConfigError
from pipeline.config.modes import load_modes, with_overrides
from replay.counts import Counts
from replay.kinds import IRQ_EDGE, IRQ_IPI, IRQ_LEVEL, IRQ_TIMER, TIMER_HPET, TIMER_LAPIC, TIMER_PIT, TIMER_TSC_DEADLINE, Kind
from replay.mode import Mode, ModeError, Paging
from replay.reference import BUSY
from tests.replay.conftest import GUEST, K, X2APIC, make_events

TODAY = ["kvm-apicv", "kvm-noapicv", "kvm-apicv-haltpoll", "kvm-apicv-nopt"]
APICV, NOAPICV = "kvm-apicv", "kvm-noapicv"
LONG, SHORT = 100_000, 1_000   # timer delays: beyond and within kvm-apicv's 1500 ns threshold
TIMER_IRQ = ("irq", 236, IRQ_TIMER)   # LOCAL_TIMER_VECTOR
ONE = {"events": 1}


# --- the mode files -----------------------------------------------------------------------

def test_todays_modes_follow_the_others_in_report_order(modes):
    # order keys 100, 110, 120, 130 after kvm-pv-modern's 90
    assert list(modes)[9:] == TODAY


def test_todays_mode_state(modes):
    vpid, apicv = modes["kvm-ept-vpid"], modes[APICV]
    # kvm-ept-vpid with the APIC model: its irq and msr entries give way to the APIC rules.
    assert dataclasses.replace(
        vpid, name=APICV, on_event={k: d for k, d in vpid.on_event.items() if k not in (Kind.IRQ, Kind.MSR)},
        lapic="apicv", preemption_timer=True, timer_expired_at_entry_ns=1500, msr_passthrough=apicv.msr_passthrough,
        host_halt_poll_ns=200_000, host_tick_hz=250) == apicv
    # FS/GS/KERNEL_GS base, SYSENTER_*, TSC, SPEC_CTRL, PRED_CMD, FLUSH_CMD; x2APIC TPR, EOI, SELF_IPI
    assert set(apicv.msr_passthrough) == {0xC0000100, 0xC0000101, 0xC0000102, 0x174, 0x175, 0x176, 0x10,
                                          0x48, 0x49, 0x10B, 0x808, 0x80B, 0x83F}
    # Without APICv only the x2APIC TPR stays passed through of the APIC's MSRs.
    assert modes[NOAPICV] == dataclasses.replace(
        apicv, name=NOAPICV, lapic="emulated",
        msr_passthrough=tuple(i for i in apicv.msr_passthrough if i not in (0x80B, 0x83F)))
    assert modes["kvm-apicv-haltpoll"] == dataclasses.replace(apicv, name="kvm-apicv-haltpoll", guest_halt_poll_ns=200_000)
    assert modes["kvm-apicv-nopt"] == dataclasses.replace(apicv, name="kvm-apicv-nopt", preemption_timer=False)


def test_the_older_modes_have_no_apic_model(modes):
    for name, mode in modes.items():
        if name not in TODAY:
            assert (mode.lapic, mode.msr_passthrough, mode.guest_halt_poll_ns, mode.host_halt_poll_ns,
                    mode.host_tick_hz) == ("", (), 0, 0, 0), name


# --- interrupts ---------------------------------------------------------------------------

@pytest.mark.parametrize("source", [IRQ_EDGE, IRQ_IPI, 7])   # 7: an unknown source, read as edge
@pytest.mark.parametrize("mode, guest, expected", [
    (APICV, GUEST, {}),        # posted interrupt: no exit, and the CPU completes the EOI
    (APICV, X2APIC, {}),
    # emulated: the kick out of the running guest, then the EOI (APIC page write / EOI MSR write)
    (NOAPICV, GUEST, {"exit_external_interrupt": 1, "exit_apic_access": 1}),
    (NOAPICV, X2APIC, {"exit_external_interrupt": 1, "exit_msr_write": 1}),
])
def test_an_edge_interrupt_or_ipi(run, mode, guest, source, expected):
    assert run(mode, [("irq", 33, source)], guest=guest) == Counts({**ONE, **expected})


@pytest.mark.parametrize("mode, guest, expected", [
    (APICV, GUEST, {"exit_eoi_induced": 1}),   # its vector is in the EOI-exit bitmap
    (APICV, X2APIC, {"exit_eoi_induced": 1}),
    (NOAPICV, GUEST, {"exit_external_interrupt": 1, "exit_apic_access": 1}),   # as edge
    (NOAPICV, X2APIC, {"exit_external_interrupt": 1, "exit_msr_write": 1}),
])
def test_a_level_triggered_interrupt(run, mode, guest, expected):
    assert run(mode, [("irq", 11, IRQ_LEVEL)], guest=guest) == Counts({**ONE, **expected})


@pytest.mark.parametrize("mode, delay, expected", [
    # the arming exit (APIC write), then the timer fires while the vCPU runs: a preemption-timer exit
    (APICV, LONG, {"exit_apic_write": 1, "exit_preemption_timer": 1}),
    (APICV, 1500, {"exit_apic_write": 1, "exit_preemption_timer": 1}),   # the threshold itself: fires late enough
    # shorter than 1500 ns: expired during the arming exit, injected at entry
    (APICV, SHORT, {"exit_apic_write": 1}),
    (APICV, 1499, {"exit_apic_write": 1}),
    # no preemption timer: the host hrtimer's interrupt on the vCPU's CPU
    ("kvm-apicv-nopt", LONG, {"exit_apic_write": 1, "exit_external_interrupt": 1}),
    ("kvm-apicv-nopt", SHORT, {"exit_apic_write": 1}),
    # emulated: the arming write is an APIC access, and the timer's EOI is another
    (NOAPICV, LONG, {"exit_apic_access": 2, "exit_preemption_timer": 1}),
    (NOAPICV, SHORT, {"exit_apic_access": 2}),
])
def test_a_timer_interrupt_after_its_arming(run, mode, delay, expected):
    rows = [("timer_arm", delay, TIMER_LAPIC), TIMER_IRQ]
    assert run(mode, rows) == Counts({"events": 2, **expected})


def test_a_timer_never_armed_fires_as_one_armed_long_ago(run):
    assert run(APICV, [TIMER_IRQ]) == Counts({**ONE, "exit_preemption_timer": 1})


def test_the_last_arming_decides(run):
    # long, short, then the interrupt: the short one was last (no timer exit); short, long: exit
    assert run(APICV, [("timer_arm", LONG, 0), ("timer_arm", SHORT, 0), TIMER_IRQ]) == Counts(
        {"events": 3, "exit_apic_write": 2})
    assert run(APICV, [("timer_arm", SHORT, 0), ("timer_arm", LONG, 0), TIMER_IRQ]) == Counts(
        {"events": 3, "exit_apic_write": 2, "exit_preemption_timer": 1})


# --- the halted vCPU ----------------------------------------------------------------------

# An hlt of 5 us that exits: exit_hlt, its idle time, and KVM's halt polling for all of it
# (5000 < halt_poll_ns = 200000).
HLT_5US = {"exit_hlt": 1, "idle_ns": 5000, "host_halt_poll_ns": 5000}


@pytest.mark.parametrize("mode, irq, expected", [
    # the timer of a halted vCPU is a host hrtimer that just wakes it: no timer exit
    (APICV, TIMER_IRQ, {}),
    (NOAPICV, TIMER_IRQ, {"exit_apic_access": 1}),   # only its EOI
    # a device interrupt wakes it: no kick (it is injected as the vCPU resumes), the EOI still exits
    (NOAPICV, ("irq", 33, IRQ_EDGE), {"exit_apic_access": 1}),
    (APICV, ("irq", 11, IRQ_LEVEL), {"exit_eoi_induced": 1}),
])
def test_the_interrupt_that_wakes_a_halted_vcpu(run, mode, irq, expected):
    assert run(mode, [("hlt", 5000), irq]) == Counts({"events": 2, **HLT_5US, **expected})


def test_only_the_first_event_after_hlt_is_the_wake_up(run):
    # emulated: the first interrupt wakes the vCPU (EOI only); the second finds it running (kick + EOI)
    rows = [("hlt", 5000), ("irq", 33, IRQ_EDGE), ("irq", 34, IRQ_EDGE)]
    assert run(NOAPICV, rows) == Counts({"events": 3, **HLT_5US, "exit_external_interrupt": 1, "exit_apic_access": 2})
    # any other event between hlt and the interrupt ends the halt: the interrupt kicks; the touch
    # misses once in both TLBs, one 2-D walk
    rows = [("hlt", 5000), ("touch", K), ("irq", 33, IRQ_EDGE)]
    assert run(NOAPICV, rows) == Counts({"events": 3, **HLT_5US, "exit_external_interrupt": 1, "exit_apic_access": 1,
                                         "tlb_miss": 1, "tlb_miss_native": 1, "tdp_walk_extra": 1})


def test_only_an_hlt_that_exits_halts(run, vary):
    # polled by the guest (5000 < 200000): no exit, the vCPU never left; the interrupt kicks it
    rows = [("hlt", 5000), ("irq", 33, IRQ_EDGE)]
    polled = vary(NOAPICV, guest_halt_poll_ns=200_000)
    assert run(polled, rows) == Counts({"events": 2, "idle_ns": 5000, "guest_halt_polls": 1,
                                        "exit_external_interrupt": 1, "exit_apic_access": 1})
    # hlt not intercepted at all (an on_event without hlt): it runs in the guest, nothing halts
    # in the host, and no halt polling either
    passthrough = vary(NOAPICV, on_event={k: d for k, d in polled.on_event.items() if k is not Kind.HLT})
    assert run(passthrough, rows) == Counts({"events": 2, "idle_ns": 5000,
                                             "exit_external_interrupt": 1, "exit_apic_access": 1})


# --- halt polling ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode, idle, expected", [
    ("kvm-apicv-haltpoll", 199_999, {"guest_halt_polls": 1}),   # shorter than the guest's window: polled
    # as long as the window: hlt exits; KVM polls for min(idle, 200000)
    ("kvm-apicv-haltpoll", 200_000, {"exit_hlt": 1, "host_halt_poll_ns": 200_000}),
    ("kvm-apicv-haltpoll", 500_000, {"exit_hlt": 1, "host_halt_poll_ns": 200_000}),
    (APICV, 300, {"exit_hlt": 1, "host_halt_poll_ns": 300}),    # no guest polling at all
    ("kvm-ept-vpid", 300, {"exit_hlt": 1}),                     # no halt polling modelled before
])
def test_halt_polling(run, mode, idle, expected):
    assert run(mode, [("hlt", idle)]) == Counts({**ONE, "idle_ns": idle, **expected})


# --- timer devices, IPIs, MSRs ------------------------------------------------------------

@pytest.mark.parametrize("mode, guest, device, expected", [
    (APICV, GUEST, TIMER_LAPIC, {"exit_apic_write": 1}),        # TMICT write, trap-like
    (NOAPICV, GUEST, TIMER_LAPIC, {"exit_apic_access": 1}),     # TMICT write, emulated
    (APICV, X2APIC, TIMER_LAPIC, {"exit_msr_write": 1}),        # wrmsr 0x838
    (NOAPICV, X2APIC, TIMER_LAPIC, {"exit_msr_write": 1}),
    (APICV, GUEST, TIMER_TSC_DEADLINE, {"exit_msr_write": 1}),  # wrmsr IA32_TSC_DEADLINE
    (NOAPICV, X2APIC, TIMER_TSC_DEADLINE, {"exit_msr_write": 1}),
    (APICV, GUEST, TIMER_PIT, {"exit_io": 2}),                  # two outb to channel 0
    (APICV, GUEST, TIMER_HPET, {"exit_mmio": 3}),               # counter read, comparator write, counter read
    (APICV, GUEST, 9, {"exit_apic_write": 1}),                  # an unknown device: read as the local APIC's
])
def test_arming_a_timer(run, mode, guest, device, expected):
    assert run(mode, [("timer_arm", LONG, device)], guest=guest) == Counts({**ONE, **expected})


@pytest.mark.parametrize("mode, guest, expected", [
    (APICV, GUEST, "exit_apic_write"),    # the ICR write traps
    (NOAPICV, GUEST, "exit_apic_access"),
    (APICV, X2APIC, "exit_msr_write"),    # wrmsr 0x830
    (NOAPICV, X2APIC, "exit_msr_write"),
])
def test_sending_an_ipi(run, mode, guest, expected):
    # one exit whatever the destinations
    assert run(mode, [("ipi_send", 3)], guest=guest) == Counts({**ONE, expected: 1})


@pytest.mark.parametrize("mode, index, write, expected", [
    (APICV, 0xC0000100, 1, None),   # FS_BASE: passed through, either way
    (APICV, 0xC0000100, 0, None),
    (APICV, 0x10, 0, None),         # rdtsc's MSR
    (APICV, 0x1B, 0, "exit_msr_read"),    # IA32_APIC_BASE: intercepted
    (APICV, 0x1B, 1, "exit_msr_write"),
    (APICV, 0x80B, 1, None),        # x2APIC EOI: virtualized under APICv ...
    (NOAPICV, 0x80B, 1, "exit_msr_write"),   # ... not without it
    (NOAPICV, 0x808, 1, None),      # x2APIC TPR: virtualized either way
    ("kvm-ept-vpid", 0xC0000100, 1, "exit_msr"),   # no APIC model: the on_event driver, as in 2007
])
def test_an_msr_access(run, mode, index, write, expected):
    assert run(mode, [("msr", index, write)], guest=X2APIC) == Counts({**ONE, **({expected: 1} if expected else {})})


def test_the_older_modes_ignore_msr_passthrough(run, vary):
    mode = vary("kvm-ept-vpid", msr_passthrough=(0xC0000100,))
    assert run(mode, [("msr", 0xC0000100, 1)]) == Counts({**ONE, "exit_msr": 1})


# --- the xAPIC page -------------------------------------------------------------------------

@pytest.mark.parametrize("address, write, apicv", [
    (0xFEE000B0, 1, None),               # EOI write: virtualized
    (0xFEE00080, 1, None),               # TPR write: virtualized
    (0xFEE00380, 0, None),               # any read: from the virtual-APIC page
    (0xFEE00FFF, 0, None),               # the page's last byte
    (0xFEE00380, 1, "exit_apic_write"),  # TMICT write: KVM must start the timer
    (0xFEE00300, 1, "exit_apic_write"),  # ICR write
    (0xFEE00000, 1, "exit_apic_write"),  # the page's first byte
    (0xFEE000B4, 1, "exit_apic_write"),  # not the EOI register's offset itself
])
def test_an_xapic_page_access(run, address, write, apicv):
    assert run(APICV, [("mmio", address, write)]) == Counts({**ONE, **({apicv: 1} if apicv else {})})
    # without APICv every access to the page is an APIC-access exit
    assert run(NOAPICV, [("mmio", address, write)]) == Counts({**ONE, "exit_apic_access": 1})
    # in x2APIC mode the page is not the APIC: an MMIO exit, as any other address
    assert run(APICV, [("mmio", address, write)], guest=X2APIC) == Counts({**ONE, "exit_mmio": 1})


@pytest.mark.parametrize("address", [0xFEDFFFFF, 0xFEE01000, 0xFEC00000])
def test_mmio_beside_the_apic_page_exits_as_before(run, address):
    assert run(APICV, [("mmio", address, 1)]) == Counts({**ONE, "exit_mmio": 1})


def test_a_dropped_apic_page_write_is_not_made_at_all(run, vary):
    # a paravirt guest's transform acts before the hypervisor sees the access
    mode = vary(NOAPICV, dropped_mmio_writes=frozenset({0xFEE000B0}))
    assert run(mode, [("mmio", 0xFEE000B0, 1)]) == Counts({**ONE, "native_mmio_avoided": 1})
    assert run(mode, [("mmio", 0xFEE000B0, 0)]) == Counts({**ONE, "exit_apic_access": 1})


# --- exits, TLB and busy time -------------------------------------------------------------

@pytest.mark.parametrize("between, exits", [
    (("ipi_send", 1), {"exit_apic_write": 1}),
    (("msr", 0x1B, 0), {"exit_msr_read": 1}),
    (("irq", 11, IRQ_LEVEL), {"exit_eoi_induced": 1}),
    (("irq", 33, IRQ_EDGE), {}),     # posted: no exit, no flush
    (("msr", 0x10, 0), {}),          # passed through: no exit, no flush
])
def test_apic_exits_flush_the_tlb_without_vpid(run, vary, between, exits):
    # touch K, the event, touch K again: natively one miss. An exit without VPID flushes the
    # whole TLB: the second touch misses too (2, extra 1); each miss a 2-D walk.
    mode = vary(APICV, tlb_flush_on_exit=True)
    misses = 2 if exits else 1
    assert run(mode, [("touch", K), between, ("touch", K)]) == Counts(
        {"events": 3, **exits, "tlb_miss": misses, "tlb_miss_native": 1, "tlb_refill_extra": misses - 1,
         "tdp_walk_extra": misses})


@pytest.mark.parametrize("span, idle, ticks", [
    (1_000_000_000, 200_000_000, 200),   # 0.8 s busy x 250 Hz
    (1_000_000_000 + 3_999_999, 1_000_000_000, 0),   # just under 4 ms busy: 0.99... ticks, rounded down
    (1_000_000_000 + 4_000_000, 1_000_000_000, 1),   # 4 ms busy: one tick
])
def test_host_ticks_interrupt_the_busy_guest(by_source, modes, span, idle, ticks):
    by = by_source(make_events([("hlt", idle)], span_ns=span), GUEST, modes[APICV])
    # the hlt's own exit and KVM's halt polling (the 200 us maximum), on the hlt's source
    assert by[(int(Kind.HLT), 0, -1)] == Counts({**ONE, "exit_hlt": 1, "idle_ns": idle, "host_halt_poll_ns": 200_000})
    assert by.get(BUSY, Counts()) == Counts({"exit_external_interrupt": ticks})
    # kvm-ept-vpid has no host tick modelled
    assert BUSY not in by_source(make_events([("hlt", idle)], span_ns=span), GUEST, modes["kvm-ept-vpid"])


def test_apic_exits_land_on_their_events(by_source, modes):
    rows = [("cr3", 1), ("timer_arm", LONG, TIMER_LAPIC), TIMER_IRQ, ("mmio", 0xFEE000B0, 1), ("ipi_send", 1)]
    by = by_source(make_events(rows), GUEST, modes[NOAPICV])
    # the arming's APIC access; the timer's exit and its EOI's; the EOI write's; the ICR write's
    assert by[(int(Kind.TIMER_ARM), 1, -1)] == Counts({**ONE, "exit_apic_access": 1})
    assert by[(int(Kind.IRQ), 1, -1)] == Counts({**ONE, "exit_preemption_timer": 1, "exit_apic_access": 1})
    assert by[(int(Kind.MMIO), 1, 0xFEE000B0)] == Counts({**ONE, "exit_apic_access": 1})
    assert by[(int(Kind.IPI_SEND), 1, -1)] == Counts({**ONE, "exit_apic_access": 1})


@pytest.mark.parametrize("mode", ["kvm-ept-vpid", "kvm-pv-modern", "kvm-trunk"])
def test_the_older_modes_price_the_new_kinds_as_before(run, mode):
    # timer_arm and ipi_send have no driver there; every irq is exit_irq, whatever its source
    rows = [("timer_arm", SHORT, TIMER_PIT), ("ipi_send", 1), ("irq", 11, IRQ_LEVEL), TIMER_IRQ, ("hlt", 5000),
            ("irq", 33, IRQ_EDGE)]
    assert run(mode, rows) == Counts({"events": 6, "exit_irq": 3, "exit_hlt": 1, "idle_ns": 5000})


# --- checking and loading the new keys -----------------------------------------------------

@pytest.mark.parametrize("change, key, problem", [
    ({"lapic": "x2apic"}, "lapic", "must be one of ['', 'emulated', 'apicv'], got 'x2apic'"),
    ({"preemption_timer": 1}, "preemption_timer", "must be true or false, got 1"),
    ({"msr_passthrough": [0x10]}, "msr_passthrough", "must be a list of integers"),
    ({"msr_passthrough": (0x10, 2**32)}, "msr_passthrough", "0x100000000 is outside 0..0xffffffff"),
    ({"msr_passthrough": (-1,)}, "msr_passthrough", "-0x1 is outside"),
    ({"timer_expired_at_entry_ns": -1}, "timer_expired_at_entry_ns", "in 0..1000000, got -1"),
    ({"guest_halt_poll_ns": 10**9 + 1}, "guest_halt_poll_ns", "in 0..1000000000, got 1000000001"),
    ({"host_halt_poll_ns": 1.5}, "host_halt_poll_ns", "must be an integer"),
    ({"host_tick_hz": 10**5 + 1}, "host_tick_hz", "in 0..100000, got 100001"),
])
def test_a_bad_apic_key_is_refused_naming_it(modes, change, key, problem):
    with pytest.raises(ModeError) as e:
        dataclasses.replace(modes[APICV], **change)
    assert e.value.key == key and problem in e.value.problem


def test_mode_files_give_msr_lists_as_tuples(tmp_path):
    (tmp_path / "m.toml").write_text('name = "m"\npaging = "tdp"\nlapic = "emulated"\nmsr_passthrough = [0x48, 0x10]\n')
    mode = load_modes(tmp_path)["m"]
    assert mode == Mode("m", Paging.TDP, lapic="emulated", msr_passthrough=(0x48, 0x10))
    # a sweep's --set replaces the list, checked as a file's
    assert with_overrides(mode, {"msr_passthrough": [1]}).msr_passthrough == (1,)
    with pytest.raises(ConfigError, match="msr_passthrough"):
        with_overrides(mode, {"msr_passthrough": ["0x10"]})
    (tmp_path / "m.toml").write_text('name = "m"\npaging = "tdp"\nlapic = "apic"\n')
    with pytest.raises(ConfigError, match="lapic"):
        load_modes(tmp_path)
