"""A virtualization mode as the model sees it: typed, frozen, checked, no file or CLI knowledge.

pipeline/ turns configs/modes/*.toml into Mode records; the field defaults here are
the only defaults (a TOML file states what differs), and `Mode.__post_init__` is the only
check of a mode's values, whoever builds it (a file, a sweep's --set, a test): it raises
ModeError naming the field, which the loader reports with its file. See configs/modes/README.md.
The rules both engines (reference.py, the kernel) read off a mode are defined here too:
what each paging scheme replays (PAGING), and the busy time no event causes (busy_counts).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import NamedTuple

from replay.counts import DRIVERS, Counts
from replay.kinds import Kind
from replay.lapic import LAPICS


class Paging(str, Enum):
    """How guest virtual memory is translated, which decides the paging state machine."""

    NATIVE = "native"    # hardware page tables, hardware TLB
    SOFTMMU = "softmmu"  # QEMU's software TLB in front of an emulated page walk
    SHADOW = "shadow"    # hypervisor-maintained shadow page tables, guest tables write-protected
    # Two-dimensional paging (KVM's "TDP": Intel EPT, AMD NPT): the hardware walks the guest's
    # tables and the host's; no shadow state, and every TLB miss is a 2-D walk.
    TDP = "tdp"


class PagingFeatures(NamedTuple):
    """Which state machines a paging scheme replays."""

    softmmu: bool = False   # touches go through QEMU's softmmu TLB, and nothing else; guest code
    #                         runs as translated code (busy_counts)
    shadow: bool = False    # shadow pool, CR3 cache, held roots
    own_tlb: bool = False   # the guest's TLB is the hardware's: exits flush it, its misses are
    #                         counted beside native's (tlb_miss, tlb_refill_extra)
    walks_2d: bool = False  # every miss of that TLB is a 2-D walk (tdp_walk_extra)


# Read by reference.Machine and kernel_mode.compile_modes alike.
PAGING: dict[Paging, PagingFeatures] = {
    Paging.NATIVE: PagingFeatures(),
    Paging.SOFTMMU: PagingFeatures(softmmu=True),
    Paging.SHADOW: PagingFeatures(shadow=True, own_tlb=True),
    Paging.TDP: PagingFeatures(own_tlb=True, walks_2d=True),
}


class ModeError(ValueError):
    """A Mode field the model cannot replay; `key` names it as a mode file does (on_event.io)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


# A mode's name names its result folders (OUT/counts/mode=<name>/) and its columns in
# reports: letters, digits, '.', '_', '-' and '~' (sweep points join their settings with
# '~'), never a separator, a leading dot or a NUL, so it cannot lead outside --out; at most
# 200 characters, so that "mode=<name>" fits a file name (NAME_MAX = 255 bytes).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,199}")


NS_PER_S = 10**9


class Size(NamedTuple):
    """The bounds of a state size, and why nothing smaller works (said when a value is below)."""

    least: int
    most: int
    floor: str


# The upper bounds are far beyond real hardware, so that what-if sweeps fit, yet keep the
# replay's memory sane: the engines allocate the softmmu TLB and the CR3 cache and held roots
# up front (per mode: 16 B per softmmu entry in replay/kernel.py, a list slot in
# replay/softmmu.py and cr3_cache.py); the TLB and the shadow pool grow with the pages and
# tables a trace touches, so for them the bound is about meaning (and keeps the capacities
# well inside the kernel's int64).
SIZES: dict[str, Size] = {
    # Largest second-level TLBs today hold 2048-3072 entries (Zen 4's L2 DTLB: 3072);
    # 2**20 is ~340x that and maps 4 GiB in 4 KiB pages, a whole 32-bit address space.
    "tlb_entries": Size(1, 2**20, "a TLB holds at least one entry"),
    # QEMU's own ceiling: dynamic TLB sizing grows to 2**CPU_TLB_DYN_MAX_BITS = 2**22 entries
    # (include/exec/cpu-defs.h; 256 = 2**8 in 2007); 64 MiB per mode in the kernel's arrays.
    "softmmu_tlb_entries": Size(1, 2**22, "a TLB holds at least one entry"),
    # The VMCS holds 4 CR3-target values; IA32_VMX_MISC can report at most 256 (Intel SDM
    # Vol. 3D, A.6). 256 is 64x today's 4 and more than the address spaces of any shipped
    # trace (hackbench-5: 201, recorded 204); the slots are scanned on every CR3 write.
    "cr3_cache_size": Size(0, 256, "0 = no cache"),
    # KVM_NUM_MMU_PAGES was 256 (2048 in the seed's runs); today's default is 20 per mille of
    # guest pages (KVM_PERMILLE_MMU_PAGES). 2**22 pages is that default for a 800 GiB guest.
    "shadow_pool_pages": Size(2, 2**22, "a shadow pool needs at least 2 pages, as replay/shadow.py's"),
    # KVM holds 3 previous roots (KVM_MMU_NUM_PREV_ROOTS); 256 is 85x that, again more than
    # any shipped trace's address spaces; the held roots are scanned on every CR3 write.
    "prev_roots": Size(0, 256, "0 = no held roots, as in 2007"),
    # The times and rates below are only compared and multiplied (never allocated), so their
    # bounds are about meaning: far beyond any real setting, for sweeps, and well inside int64.
    # A timer shorter than the arming exit's round trip (~1-1.5 us) has expired by VM entry;
    # 1 ms is ~700x that.
    "timer_expired_at_entry_ns": Size(0, 10**6, "0 = no timer expires during its arming exit"),
    # cpuidle-haltpoll's guest_halt_poll_ns (default 200000, drivers/cpuidle/governors/
    # haltpoll.c) and KVM's halt_poll_ns (default 200000 on x86, KVM_HALT_POLL_NS_DEFAULT):
    # 1 s is 5000x either default and longer than any idle period worth polling.
    "guest_halt_poll_ns": Size(0, 10**9, "0 = the guest never polls before hlt"),
    "host_halt_poll_ns": Size(0, 10**9, "0 = KVM blocks the halted vCPU at once"),
    # Host CONFIG_HZ is 100, 250 (Debian), 300 or 1000; 10**5 is 100x the largest.
    "host_tick_hz": Size(0, 10**5, "0 = no host tick while the guest runs (nohz_full)"),
}
# The accesses a paravirt guest no longer makes (sets of ports or addresses): each set's top value.
MAX_PORT, MAX_ADDRESS, MAX_MSR = 0xFFFF, 2**64 - 1, 2**32 - 1  # rdmsr/wrmsr take the index in ECX
DROPPED: dict[str, int] = {
    "dropped_io_ports": MAX_PORT, "dropped_io_reads": MAX_PORT, "dropped_io_writes": MAX_PORT,
    "dropped_mmio_reads": MAX_ADDRESS, "dropped_mmio_writes": MAX_ADDRESS,
}


@dataclass(frozen=True)
class Mode:
    """What a virtualization mode does to each guest event, and how big its state is."""

    name: str
    paging: Paging
    # Guest event kind -> priced driver it causes ("" = none). Paging state adds its own drivers.
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
    # The local APIC (replay/lapic.py): "" = legacy, irq, msr, timer_arm and ipi_send cause
    # their on_event drivers; "emulated" = KVM's in-kernel LAPIC without APICv; "apicv" = APIC-
    # register virtualization, virtual-interrupt delivery and posted interrupts.
    lapic: str = ""
    # The guest's APIC timer runs on the VMX-preemption timer while the vCPU runs (kvm_intel's
    # preemption_timer); False: on a host hrtimer, whose expiry is an external interrupt.
    preemption_timer: bool = False
    # A timer armed with a shorter delay has expired by the end of its arming exit and is
    # injected at VM entry, without an exit of its own (lapic.c start_hv_timer).
    timer_expired_at_entry_ns: int = 0
    # MSRs the MSR bitmap passes through (rdmsr and wrmsr of them do not exit); lapic modes only.
    msr_passthrough: tuple[int, ...] = ()
    # An idle period shorter than this is polled by the guest's cpuidle-haltpoll: no hlt.
    guest_halt_poll_ns: int = 0
    # KVM polls a halted vCPU for up to this long before blocking it (halt_poll_ns).
    host_halt_poll_ns: int = 0
    # Host timer interrupts per second while the vCPU's CPU runs guest code (CONFIG_HZ).
    host_tick_hz: int = 0

    def __post_init__(self) -> None:
        """Refuse a mode the model cannot replay (or whose name could leave --out), naming
        the field: the one check of a mode, so no engine or loader repeats it."""
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ModeError("name", f"{self.name!r}: a mode name is 1-200 letters, digits, '.', '_', '-' or "
                                    "'~', starting with a letter or digit (it names a folder under --out)")
        if not isinstance(self.paging, Paging):
            raise ModeError("paging", f"must be one of {[p.value for p in Paging]}")
        _check_on_event(self.on_event)
        for key, top in DROPPED.items():
            _check_values(key, getattr(self, key), top)
        for key, size in SIZES.items():
            _check_size(key, getattr(self, key), size)
        if self.lapic not in LAPICS:
            raise ModeError("lapic", f"must be one of {list(LAPICS)}, got {self.lapic!r}")
        _check_msrs(self.msr_passthrough)
        if self.softmmu_tlb_entries & (self.softmmu_tlb_entries - 1):
            raise ModeError("softmmu_tlb_entries",
                            f"must be a power of two (direct mapped), got {self.softmmu_tlb_entries}")
        for f in fields(self):
            if f.type == "bool" and not isinstance(getattr(self, f.name), bool):
                raise ModeError(f.name, f"must be true or false, got {getattr(self, f.name)!r}")

    @property
    def features(self) -> PagingFeatures:
        return PAGING[self.paging]

    def busy_counts(self, span_ns: int, idle_ns: int) -> Counts:
        """The counts no single event causes, given the span and its idle part: QEMU runs the
        busy part (span less idle) through its translator (emulated_ns); every other mode runs
        guest code natively, and the host's timer interrupts while it does exit (host_tick_hz
        per second of busy time: exit_external_interrupt). Not tied to an event, so these exits
        flush no replayed TLB. The oracle, the kernel and the merge of chunks all take it from here."""
        busy = span_ns - idle_ns
        values = {"emulated_ns": busy if self.features.softmmu else 0,
                  "exit_external_interrupt": self.host_tick_hz * max(busy, 0) // NS_PER_S}
        return Counts({name: n for name, n in values.items() if n})


def _check_on_event(on_event: dict[Kind, str]) -> None:
    for kind, driver in on_event.items():
        if not isinstance(kind, Kind):
            raise ModeError("on_event", f"{kind!r} is not an event kind")
        if driver != "" and driver not in DRIVERS:
            raise ModeError(f"on_event.{kind.name.lower()}", f"unknown driver {driver!r}; known: {sorted(DRIVERS)}")


def _check_values(key: str, values: frozenset[int], top: int) -> None:
    if not isinstance(values, frozenset) or not all(type(v) is int for v in values):
        raise ModeError(key, "must be a set of integers")
    bad = sorted(v for v in values if not 0 <= v <= top)
    if bad:
        raise ModeError(key, f"{bad[0]:#x} is outside 0..{top:#x}")


def _check_msrs(msrs: tuple[int, ...]) -> None:
    if not isinstance(msrs, tuple) or not all(type(v) is int for v in msrs):
        raise ModeError("msr_passthrough", "must be a list of integers (MSR indices)")
    bad = sorted(v for v in msrs if not 0 <= v <= MAX_MSR)
    if bad:
        raise ModeError("msr_passthrough", f"{bad[0]:#x} is outside 0..{MAX_MSR:#x}")


def _check_size(key: str, value: int, size: Size) -> None:
    if type(value) is not int or not size.least <= value <= size.most:
        below = f" ({size.floor})" if type(value) is int and value < size.least else ""
        raise ModeError(key, f"must be an integer in {size.least}..{size.most}, got {value!r}{below}")


@dataclass(frozen=True)
class Guest:
    """Facts about the recorded guest that the model needs."""

    # Pages at or above this virtual page number are kernel mappings with the
    # global bit set, shared by every address space (32-bit 3G/1G split: 0xC0000).
    kernel_vpn_min: int = 0xC0000
    # 1 if the guest runs its local APIC in x2APIC mode (APIC registers are MSRs 0x800-0x8FF),
    # 0 for xAPIC (registers are MMIO at 0xFEE00000): decides which exit an APIC access is.
    x2apic: int = 0
