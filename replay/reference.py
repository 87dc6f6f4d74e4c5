"""The readable per-event replay: one guest event at a time through a mode's state.

This is the model's definition and the oracle for any faster kernel. Each handler
says what the mode does to one event kind (MODEL.md §2); the state it keeps lives
in the small types of tlb.py, softmmu.py, cr3_cache.py, shadow.py and prev_roots.py.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import reduce
from operator import add

from replay.counts import EXITS, Counts
from replay.cr3_cache import Cr3TargetCache
from replay.events import Events
from replay.kinds import IRQ_LEVEL, IRQ_TIMER, Kind
from replay.lapic import APIC_EOI, APIC_OFFSET_MASK, APIC_PAGE_FIRST, APIC_PAGE_LAST, APIC_TPR, NEVER_ARMED, apic_drivers, timer_device
from replay.mode import Guest, Mode
from replay.prev_roots import PrevRoots
from replay.shadow import GLOBAL_SPACE, ROOT, Key, ShadowPool, table_of
from replay.softmmu import SoftTlb
from replay.tlb import Tlb


# What caused a count: (event kind code, address space, device: the port of an I/O event,
# the address of an MMIO one, else -1). Counts that no single event causes (QEMU's
# translated busy time) belong to BUSY.
Source = tuple[int, int, int]
BUSY: Source = (-1, -1, -1)
DEVICE_KINDS = frozenset({Kind.IO, Kind.MMIO})


def source_of(kind: int, asid: int, value: int) -> Source:
    return (kind, asid, value if kind in DEVICE_KINDS else -1)


class Machine:
    """One vCPU's virtualization state under one mode.

    Every count is kept per source (the event being replayed when it was caused), so
    attribution is the same replay as the totals, not a second model."""

    def __init__(self, mode: Mode, guest: Guest) -> None:
        self.mode = mode
        self.kernel_vpn_min = guest.kernel_vpn_min
        self.c: Counter[tuple[Source, str]] = Counter()
        self.source: Source = BUSY
        # What the paging scheme replays (mode.PAGING); shadow and two-dimensional paging:
        # the guest's TLB is the hardware's, so exits flush it and its misses are counted
        # beside native's.
        self.paging = mode.features
        self.tlb = Tlb(mode.tlb_entries)
        self.tlb_native = Tlb(mode.tlb_entries)
        self.soft = SoftTlb(mode.softmmu_tlb_entries) if self.paging.softmmu else None
        self.pool = ShadowPool(mode.shadow_pool_pages) if self.paging.shadow else None
        self.cr3_cache = Cr3TargetCache(mode.cr3_cache_size)
        self.roots = PrevRoots(mode.prev_roots) if self.pool is not None and mode.prev_roots else None
        # The vCPU as KVM's LAPIC sees it (mode.lapic): blocked in the host after an hlt exit
        # (until the next event, which `woken` then marks), and the last timer arming's delay.
        self.apic = apic_drivers(mode.lapic, mode.preemption_timer, guest.x2apic)
        self.halted = self.woken = False
        self.timer_delay = NEVER_ARMED
        handlers: dict[Kind, Callable[[int, int, int], None]] = {
            Kind.CR3_WRITE: self.cr3_write, Kind.TOUCH: self.touch,
            Kind.PTE_WRITE: self.pte_write, Kind.INVLPG: self.invlpg,
            Kind.IO: self.io, Kind.MMIO: self.mmio, Kind.HLT: self.hlt, Kind.SYSCALL: self.syscall,
        }
        if mode.lapic:  # else these four cause their on_event drivers, as in the 2007 modes
            handlers.update({Kind.IRQ: self.irq, Kind.MSR: self.msr, Kind.TIMER_ARM: self.timer_arm,
                             Kind.IPI_SEND: self.ipi_send})
        # Indexed by kind code: kinds without state of their own just cause their driver.
        self.dispatch = [handlers.get(k, self.plain(k)) for k in Kind]

    # --- helpers -----------------------------------------------------------------
    def add(self, name: str, n: int = 1) -> None:
        """Count `n` of `name` against the event being replayed."""
        self.c[(self.source, name)] += n

    def cause(self, driver: str, n: int = 1) -> None:
        """Count a driver n times ("" = none); a VM exit without VPID also flushes the whole TLB."""
        if not driver:
            return
        self.add(driver, n)
        if driver in EXITS and self.mode.tlb_flush_on_exit:
            self.tlb.flush(keep_global=False)

    def on_event(self, kind: Kind) -> bool:
        """Cause the mode's driver for `kind`, if any; whether there was one."""
        driver = self.mode.on_event.get(kind, "")
        self.cause(driver)
        return bool(driver)

    def plain(self, kind: Kind):
        """Handler for a kind with no state: the mode's driver for it, if any."""
        return lambda asid, value, arg: self.on_event(kind)

    def freed(self, keys: list[Key]) -> None:
        """Shadow pages zapped; a freed root leaves the CR3 cache and the previous roots."""
        self.add("shadow_page_zap", len(keys))
        for space, table in keys:
            if table == ROOT:
                self.cr3_cache.invalidate(space)
                if self.roots is not None:
                    self.roots.invalidate(space)

    def table_for(self, vpn: int, asid: int) -> Key:
        """The guest page table (shadow page key) that maps `vpn` in `asid`."""
        return table_of(self.space_of(vpn, asid)[0], vpn)

    def space_of(self, vpn: int, asid: int) -> tuple[int, bool]:
        is_global = vpn >= self.kernel_vpn_min
        return (GLOBAL_SPACE if is_global else asid), is_global

    # --- event kinds ---------------------------------------------------------------
    def cr3_write(self, asid: int, value: int, arg: int) -> None:
        self.add("cr3_writes")
        # mov cr3 drops non-global translations in every mode, exit or no exit
        # (an untagged TLB must not carry the old space's entries into the new one).
        self.tlb_native.flush(keep_global=True)
        self.tlb.flush(keep_global=True)
        if self.soft is not None:
            self.soft.flush()
            self.add("softmmu_flush")
        if self.pool is None:
            self.on_event(Kind.CR3_WRITE)
            return
        if self.mode.cr3_cache_size and self.cr3_cache_hit(value):
            return
        if self.roots is not None and self.roots.lookup(value):
            # KVM's fast_pgd_switch: the root is still held; no free, no reload.
            self.cause("exit_cr3_fast")
            self.pool.use((value, ROOT))
            return
        self.on_event(Kind.CR3_WRITE)
        if not self.mode.shadow_keep_on_cr3:
            self.freed(self.pool.drop_spaces_except(GLOBAL_SPACE))
        present, evicted = self.pool.use((value, ROOT))
        self.freed(evicted)
        self.add("shadow_root_hit" if present else "shadow_root_alloc")
        self.cr3_cache.fill(value)
        if self.roots is not None:
            self.roots.load(value)

    @property
    def shadow(self) -> ShadowPool:
        """The shadow pool, for the handlers that run only under shadow paging (a CR3 cache
        exists only there)."""
        assert self.pool is not None
        return self.pool

    def cr3_cache_hit(self, asid: int) -> bool:
        """The paravirt guest's lookup: a hit loads the cached root without exiting."""
        self.add("cr3_cache_lookup")
        if not self.cr3_cache.lookup(asid):
            self.add("cr3_cache_miss")
            return False
        self.add("cr3_cache_hit")
        self.shadow.use((asid, ROOT))
        return True

    def touch(self, asid: int, vpn: int, arg: int) -> None:
        space, is_global = self.space_of(vpn, asid)
        if self.soft is not None:
            self.add("softmmu_fill", not self.soft.access(vpn))
            return
        if self.pool is not None:
            self.shadow_map(space, vpn)
        native_miss = not self.tlb_native.access(vpn, is_global)
        self.add("tlb_miss_native", native_miss)
        if self.paging.own_tlb:
            # Per touch, so that extra refills and walks are attributed to the pages refilled.
            miss = not self.tlb.access(vpn, is_global)
            self.add("tlb_miss", miss)
            self.add("tlb_refill_extra", miss - native_miss)
            if self.paging.walks_2d:
                self.add("tdp_walk_extra", miss)  # every miss walks both dimensions

    def shadow_map(self, space: int, vpn: int) -> None:
        """Walk the shadow tables for a touch: allocate the table, fill the PTE."""
        key = table_of(space, vpn)
        present, evicted = self.shadow.use(key)
        self.freed(evicted)
        if not present:
            self.add("shadow_page_alloc")
        if self.shadow.fill_pte(key, vpn):
            self.cause("exit_shadow_fault")

    def pte_write(self, asid: int, vpn: int, arg: int) -> None:
        """Writes to a shadowed (write-protected) guest table trap and are emulated."""
        if self.pool is None:
            return
        key = self.table_for(vpn, asid)
        if not self.pool.is_shadowed(key):
            return
        self.cause("exit_pte_write")
        if self.mode.shadow_update_on_pte_write:
            self.pool.fill_pte(key, vpn)
        else:
            self.pool.drop_pte(key, vpn)

    def invlpg(self, asid: int, vpn: int, arg: int) -> None:
        """A trapped invlpg also removes the shadow PTE (2.6.20's paging_inval_page);
        once guest tables were write-protected, KVM stopped trapping it at all."""
        self.tlb_native.invalidate(vpn)
        self.tlb.invalidate(vpn)
        if self.soft is not None:
            self.soft.invalidate(vpn)
        if self.pool is not None and Kind.INVLPG in self.mode.on_event:
            key = self.table_for(vpn, asid)
            if self.pool.is_shadowed(key):
                self.pool.drop_pte(key, vpn)
        self.on_event(Kind.INVLPG)

    def io(self, asid: int, port: int, arg: int) -> None:
        """arg 0 = in, 1 = out; the paravirt guest no longer makes some accesses at all."""
        dropped_one_way = self.mode.dropped_io_writes if arg else self.mode.dropped_io_reads
        if port in self.mode.dropped_io_ports or port in dropped_one_way:
            self.add("native_io_avoided")
        else:
            self.on_event(Kind.IO)

    def mmio(self, asid: int, address: int, arg: int) -> None:
        """arg 0 = read, 1 = write; as for ports, a paravirt guest may not make the access. An
        xAPIC guest's access to the APIC page is the mode's APIC's (lapic.ApicDrivers.page)."""
        if address in (self.mode.dropped_mmio_writes if arg else self.mode.dropped_mmio_reads):
            self.add("native_mmio_avoided")
        elif self.apic.page and APIC_PAGE_FIRST <= address <= APIC_PAGE_LAST:
            self.apic_page(address & APIC_OFFSET_MASK, arg)
        else:
            self.on_event(Kind.MMIO)

    def apic_page(self, offset: int, write: int) -> None:
        """APICv reads the virtual-APIC page and completes EOI and TPR writes itself (SDM
        29.4.2, 29.4.3.1); other writes trap after the fact (APIC-write exit, SDM 29.4.3.2).
        The emulated LAPIC traps every access (APIC-access exit, SDM 29.4.1)."""
        if not write:
            self.cause(self.apic.page_read)
        elif offset in (APIC_EOI, APIC_TPR):
            self.cause(self.apic.page_quiet)
        else:
            self.cause(self.apic.page_write)

    def hlt(self, asid: int, idle_ns: int, arg: int) -> None:
        """A guest with cpuidle-haltpoll polls instead of executing hlt when the idle period is
        shorter than its window (drivers/cpuidle/cpuidle-haltpoll.c, governors/haltpoll.c
        guest_halt_poll_ns). An hlt that exits leaves the vCPU halted, and KVM polls it before
        blocking it: min(idle, halt_poll_ns) of host CPU (virt/kvm/kvm_main.c kvm_vcpu_halt)."""
        self.add("idle_ns", idle_ns)
        if idle_ns < self.mode.guest_halt_poll_ns:
            self.add("guest_halt_polls")
        elif self.on_event(Kind.HLT):
            self.halted = True
            self.add("host_halt_poll_ns", min(idle_ns, self.mode.host_halt_poll_ns))

    # --- the local APIC (mode.lapic; the drivers: lapic.ApicDrivers) --------------------
    def irq(self, asid: int, vector: int, source: int) -> None:
        """An interrupt (arg: IRQ_EDGE, IRQ_LEVEL, IRQ_TIMER, IRQ_IPI; any other code is read
        as edge). One that wakes the halted vCPU costs no delivery exit: KVM injects it as it
        resumes the vCPU (x86.c vcpu_block, kvm_vcpu_has_events); its EOI costs as ever."""
        running = not self.woken
        if source == IRQ_TIMER:
            self.timer_fired(running)
            self.cause(self.apic.eoi)
            return
        if running:
            self.cause(self.apic.kick)
        self.cause(self.apic.level_eoi if source == IRQ_LEVEL else self.apic.eoi)

    def timer_fired(self, running: bool) -> None:
        """The APIC timer's interrupt exits only while the vCPU runs: while it is blocked KVM
        runs the timer as a host hrtimer that just wakes it (x86.c vcpu_block ->
        kvm_lapic_switch_to_sw_timer). Nor does one armed with a delay shorter than
        timer_expired_at_entry_ns: it expired during its arming exit and is injected at entry
        (lapic.c start_hv_timer: `expired`, from vmx_set_hv_timer)."""
        if running and self.timer_delay >= self.mode.timer_expired_at_entry_ns:
            self.cause(self.apic.timer)

    def timer_arm(self, asid: int, delay_ns: int, device: int) -> None:
        """The guest programs a timer (lapic.ApicDrivers.arm: its device's register accesses)."""
        self.timer_delay = delay_ns
        programming = self.apic.arm[timer_device(device)]
        self.cause(programming.driver, programming.n)

    def ipi_send(self, asid: int, destinations: int, arg: int) -> None:
        """One ICR write sends the IPI, whatever its destinations (lapic.ApicDrivers.ipi)."""
        self.cause(self.apic.ipi)

    def msr(self, asid: int, index: int, write: int) -> None:
        """rdmsr/wrmsr exit unless the MSR bitmap passes the index through (vmx.c
        vmx_disable_intercept_for_msr; SDM Vol. 3C 25.6.9, MSR-bitmap address)."""
        if index not in self.mode.msr_passthrough:
            self.cause("exit_msr_write" if write else "exit_msr_read")

    def syscall(self, asid: int, number: int, arg: int) -> None:
        self.add("syscalls")
        self.on_event(Kind.SYSCALL)

    def by_source(self, events: Events) -> dict[Source, Counts]:
        """The counts so far, per source; what no event causes (QEMU's busy time) goes to BUSY."""
        idle = sum(n for (_, name), n in self.c.items() if name == "idle_ns")
        rows: dict[Source, dict[str, int]] = {}
        for (source, name), n in self.c.items():
            if n:
                rows.setdefault(source, {})[name] = int(n)
        by = {source: Counts(values) for source, values in rows.items()}
        busy = self.mode.busy_counts(events.span_ns, idle)
        if busy.values:
            by[BUSY] = busy
        return by


def replay_by_source(events: Events, guest: Guest, mode: Mode) -> dict[Source, Counts]:
    """Replay one vCPU's events under `mode`; every count, split by the source that caused it."""
    m = Machine(mode, guest)
    cols = (events.kind.tolist(), events.asid.tolist(), events.value.tolist(), events.arg.tolist())
    dispatch = m.dispatch
    for kind, asid, value, arg in zip(*cols):
        m.source = source_of(kind, asid, value)
        m.add("events")
        m.woken, m.halted = m.halted, False  # any event ends a halt
        dispatch[kind](asid, value, arg)
    return m.by_source(events)


def total(by_source: dict[Source, Counts]) -> Counts:
    return reduce(add, by_source.values(), Counts())


def replay(events: Events, guest: Guest, mode: Mode) -> Counts:
    """Replay one vCPU's events under `mode`; the counts of every cost driver."""
    return total(replay_by_source(events, guest, mode))
