"""Guest events from recorded events: the mapping rules every format shares (traces/README.md,
"Imported traces", says the same with each rule's source).

Rules (a recording shows tasks, the model wants address spaces):

* **Processes.** The address space of a task is that of its process (tgid). The tgid is
  taken from the line where the format prints it (atrace's TGID column, perf's `pid/tid`);
  else from `sched_process_fork`: without clone flags a fork cannot tell a thread from a
  process, so **every fork child is its own process** (tgid = child pid; this over-counts
  address spaces of multi-threaded programs whose tgid is not printed); else tgid = pid.
  Each process gets a small asid (1, 2, 3, … in order of first switch-in);
  `sched_process_exec` gives the process a fresh asid (a new mm) and loads it at once.
* **Kernel threads** run in the borrowed address space of the previous task (lazy TLB):
  a task is a kernel thread if its pid is 0 (idle/swapper) or 2 (kthreadd), it was forked
  by a kernel thread, or its comm starts with one of `chunk.KTHREAD_PREFIXES`.
* **CR3.** With `tlb_flush` "flush on task switch" recorded (arch/x86/mm/tlb.c
  switch_mm_irqs_off traces every CR3 load of a switch: pages=-1 with a flush, 0 without),
  each one is a `cr3_write` (value = the asid of the task switched to) and switches write
  none. Else **sched_switch** and Xenomai's **cobalt_switch_context** (next_pid 0 = ROOT: back
  to the Linux task current at the last sched_switch of that CPU) → `cr3_write` when the next
  task is a user task whose process differs from the one loaded on that CPU (a switch between
  threads of one process or to a kernel thread emits none; the first user task of each CPU
  emits one). The report says what the other sources would have given. Rows before any user
  task has run on a CPU carry asid 0.
* **Touches.** Each switch-in (sched_switch or cobalt_switch_context) is followed by the
  `WorkingSet` touches; with CR3 from tlb_flush they follow the CR3 write that starts the
  quantum (the flush comes after the switch), or come before the CPU's next rows if none does.
* **page_fault_user/kernel** → `page_fault` (value = address >> 12, arg = 1 if error_code
  has the write bit 0x2).
* **Interrupts** → `irq`, one per hardware interrupt, value = vector (236 for the LAPIC
  timer) or IRQ number, arg = its source (`plan.py`: Dovetail's irq_pipeline_entry when
  recorded, else irq_handler_entry of non-synthetic IRQs, irq_vectors entries, ipi_entry).
* **cpu_idle** (power:cpu_idle) with state ≥ 1 → `hlt` (kernel/sched/idle.c default_idle_call:
  trace_cpu_idle(1) then hlt; include/trace/events/power.h), value = ns from the idle entry to
  the first hardware interrupt after it, else the idle exit, else the next event
  (`facts.IdleWakes`); the row stays at the entry. State 4294967295 (-1) is the exit and
  state 0 cpuidle's poll_idle (no hlt): no row, counted.
* **write_msr / read_msr** (arch/x86/lib/msr.c do_trace_write_msr / do_trace_read_msr) →
  `msr` (value = index, arg 1/0), except the writes other rows stand for (`plan`: the x2APIC
  EOI 0x80B, as the model derives EOIs from the irq rows; IA32_TSC_DEADLINE 0x6E0 when those
  writes are the timer armings; the x2APIC TMICT 0x838 when the armings come from the local APIC
  timer's other evidence; the x2APIC ICR 0x830 when ipi_send rows are made): counted, listed.
* **Timer armings** → `timer_arm` (`timers.py`: TSC-deadline writes, cobalt_tick_shot, else an
  estimate from local timer interrupts and hrtimer_start).
* **ipi:ipi_raise / ipi_send_cpu / ipi_send_cpumask** → `ipi_send` (value = destinations).
* **Device MMIO** → `mmio` estimated by the device rules (`devices.py`, configs/devices/*.toml).
* **raw_syscalls:sys_enter**, **syscalls:sys_enter_*** and the ftrace syscall tracer's
  `sys_x(…)` → `syscall` (value = the number where printed, else the x86_64 number of the
  name, from the kernel's syscall_64.tbl (`syscalls_x86_64.tsv`), else 0; metadata
  `source.syscall_numbers` says so).
* Everything else is unmapped: counted per event name and listed, never dropped silently.

Streaming: the tasks and the recording-wide evidence are learned from the whole input first
(`Tasks.learn`, `facts.Facts`, chunk by chunk), then `GuestMapper.map` turns the spooled lines
of each chunk (see `pipeline.tracefile.importers`) into rows; only the state between chunks
(tasks, address spaces, the asid loaded on each CPU, touches waiting for their CR3 write, the
rules' state) is kept, never the rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numba import njit, types
from numba.typed import Dict

from pipeline.tracefile.importers import chunk as ck
from pipeline.tracefile.importers.chunk import R_COBALT, R_EXEC, R_FORK, R_SWITCH, R_TLB, RECORDS, Chunk
from pipeline.tracefile.importers.devices import DeviceRules
from pipeline.tracefile.importers.plan import IrqClass, Plan
from pipeline.tracefile.importers.timers import TimerArmings
from pipeline.tracefile.importers.working_set import WorkingSet
from pipeline.tracefile.format import SCHEMA
from replay.kinds import IRQ_TIMER, Kind

KTHREADD = 2
CR3_WRITE, TOUCH = int(Kind.CR3_WRITE), int(Kind.TOUCH)
COLUMNS = {f.name: f.type.to_pandas_dtype() for f in SCHEMA}    # name -> numpy dtype, in order
# One-row lines: role -> kind (value = a; arg = b for faults and MSRs, else 0 or the irq source)
_ONE_ROW = {ck.R_FAULT: Kind.PAGE_FAULT, ck.R_SYSCALL: Kind.SYSCALL, ck.R_IDLE: Kind.HLT, ck.R_MSR: Kind.MSR,
            ck.R_IPI_SEND: Kind.IPI_SEND}
_ARG_FROM_B = (ck.R_FAULT, ck.R_MSR)
ROLE_EVENTS = {ck.R_IRQ_PIPELINE: "irq_pipeline_entry", ck.R_IRQ_HANDLER: "irq_handler_entry"}


@dataclass
class Tasks:
    """What the first pass learns about tasks: pid -> tgid, and kernel threads."""
    tgid: dict[int, int] = field(default_factory=dict)
    kthreads: set[int] = field(default_factory=lambda: {0, KTHREADD})

    def learn(self, chunk: Chunk) -> None:
        """Tgids printed on mapped event lines (the last one printed wins), then forks in order:
        a fork child is its own process unless a tgid is printed for it, and a child of a
        kernel thread is a kernel thread."""
        rec = np.isin(chunk.role, RECORDS) & (chunk.tgid >= 0)
        pid, tgid = chunk.pid[rec][::-1], chunk.tgid[rec][::-1]
        last, at = np.unique(pid, return_index=True)
        self.tgid.update(zip(last.tolist(), tgid[at].tolist()))
        forks = np.flatnonzero(chunk.role == R_FORK)
        for parent, child in zip(chunk.a[forks].tolist(), chunk.b[forks].tolist()):
            self.tgid.setdefault(child, child)
            if parent in self.kthreads:
                self.kthreads.add(child)


@njit(cache=True)
def _address_spaces(role, a, tgid, user, cpu, tlb_mode, cobalt, asids, loaded, next_asid, cr3, asid):
    """The state machine, line by line: a user task's switch-in (sched_switch, and
    cobalt_switch_context if `cobalt`) loads its process's asid (allocated at its first
    switch-in), an exec allocates a fresh one and loads it. cr3[i] = 1 where CR3 is written:
    there, or with `tlb_mode` at each task-switch tlb_flush instead (the switch then only
    says which asid the flush loads). asid[i] = the asid loaded on the line's CPU once the
    line is done (0 before any). asids (tgid -> asid), loaded (per CPU, -1 before any) and
    next_asid[0] carry over between chunks."""
    for i in range(role.size):
        c, r = cpu[i], role[i]
        if user[i] and (r == R_SWITCH or r == R_EXEC or (r == R_COBALT and cobalt)):
            g = tgid[i]
            if r == R_EXEC or g not in asids:
                next_asid[0] += 1
                asids[g] = next_asid[0]
            if loaded[c] != asids[g]:
                loaded[c] = asids[g]
                cr3[i] = 0 if tlb_mode else 1
        elif r == R_TLB and tlb_mode and a[i] == 1:
            cr3[i] = 1
        asid[i] = max(loaded[c], 0)


@njit(cache=True)
def _touches(kind, value, arg, r, vpn, write, first):
    for k in range(first, vpn.size):
        kind[r], value[r], arg[r] = TOUCH, vpn[k], write[k]
        r += 1
    return r


@njit(cache=True)
def _rows(role, a, pid, ts, cpu, asid, cr3, user, switch, one_kind, one_value, one_arg, one, extra, extra_at,
          vpn, write, n_user, t0, defer, pending, pending_pid, out):
    """Each line's rows, in line order: a switch = CR3 write if any, then the working set's
    touches (a kernel thread's: the kernel pages only); an exec or tlb_flush = CR3 write if
    any; other lines their one row if any; then the rules' rows of the line (extra[k] = kind,
    value, arg; line i's are extra[extra_at[i]:extra_at[i + 1]]). With `defer` (CR3 from
    tlb_flush, which comes after the switch) a switch's touches wait for the CR3 write that
    starts its quantum: they follow the next task-switch tlb_flush of that CPU, or come before
    the next rows of that CPU otherwise (pending[cpu]: -1 none, 1 a user task's, 0 a kernel
    thread's; pending_pid[cpu] its pid; both carry over between chunks). out = t_ns, cpu,
    kind, value, asid, pid, arg columns (sized for the most rows); returns the rows written."""
    t_ns, ocpu, kind, value, oasid, opid, arg = out
    r = 0
    for i in range(role.size):
        c, first = cpu[i], r
        tlb_cr3 = role[i] == R_TLB and cr3[i] == 1
        own = one[i] or cr3[i] == 1 or switch[i] or extra_at[i + 1] > extra_at[i]
        d0 = d1 = r
        dpid = pending_pid[c]
        if defer and pending[c] >= 0 and own and not tlb_cr3:
            r = _touches(kind, value, arg, r, vpn, write, 0 if pending[c] == 1 else n_user)
            d1, pending[c] = r, -1
        if switch[i] or role[i] == R_EXEC or role[i] == R_TLB:
            if cr3[i]:
                kind[r], value[r], arg[r] = CR3_WRITE, asid[i], 0
                r += 1
            if switch[i] and defer:
                pending[c], pending_pid[c] = 1 if user[i] else 0, a[i]
            elif switch[i]:
                r = _touches(kind, value, arg, r, vpn, write, 0 if user[i] else n_user)
            elif tlb_cr3 and pending[c] >= 0:
                d0 = r
                r = _touches(kind, value, arg, r, vpn, write, 0 if pending[c] == 1 else n_user)
                d1, pending[c] = r, -1
        elif one[i]:
            kind[r], value[r], arg[r] = one_kind[i], one_value[i], one_arg[i]
            r += 1
        for k in range(extra_at[i], extra_at[i + 1]):
            kind[r], value[r], arg[r] = extra[k, 0], extra[k, 1], extra[k, 2]
            r += 1
        for j in range(first, r):
            t_ns[j], ocpu[j], oasid[j] = ts[i] - t0, cpu[i], asid[i]
            opid[j] = dpid if d0 <= j < d1 else (a[i] if switch[i] else pid[i])
    return r


class _Spaces:
    """One run of the address-space state machine (its own asids) with one CR3 source."""

    def __init__(self, tlb_mode: bool, cobalt: bool) -> None:
        self.tlb_mode, self.cobalt = tlb_mode, cobalt
        self.asids = Dict.empty(types.int64, types.int64)     # tgid -> asid
        self.loaded = np.full(1 << 16, -1, np.int64)           # cpu -> asid in CR3 (-1: none yet)
        self.next_asid = np.zeros(1, np.int64)
        self.cr3_writes = 0

    def run(self, role, a, tgid, user, cpu) -> tuple[np.ndarray, np.ndarray]:
        cr3, asid = np.zeros(len(role), np.int8), np.zeros(len(role), np.int64)
        _address_spaces(role, a, tgid, user, cpu, self.tlb_mode, self.cobalt, self.asids, self.loaded,
                        self.next_asid, cr3, asid)
        self.cr3_writes += int(cr3.sum())
        return cr3, asid


class GuestMapper:
    """Turns the spooled lines of chunks (in file order) into trace rows; see the module docstring."""

    def __init__(self, tasks: Tasks, working_set: WorkingSet, plan: Plan, timers: TimerArmings,
                 devices: DeviceRules, symbols: list[str]) -> None:
        user, kernel = working_set.user(), working_set.kernel()
        pages = np.array(user + kernel, np.uint64).reshape(-1, 2)
        self.page_vpn, self.page_write = pages[:, 0], pages[:, 1].astype(np.uint32)
        self.n_user, self.n_kernel = len(user), len(kernel)
        self.plan, self.timers, self.devices, self.symbols = plan, timers, devices, symbols
        self.kinds: Counter[str] = Counter()
        self.tgid_keys = np.array(sorted(tasks.tgid), np.int64)
        self.tgid_values = np.array([tasks.tgid[k] for k in self.tgid_keys.tolist()], np.int64)
        self.kthreads = np.array(sorted(tasks.kthreads), np.int64)
        self.spaces = _Spaces(plan.cr3_from_tlb, True)
        # With tlb_flush as the source, what the switches alone would have said (the report compares).
        self.alternatives = {"sched_switch alone": _Spaces(False, False),
                             "sched_switch + cobalt_switch_context": _Spaces(False, True)} if plan.cr3_from_tlb else {}
        self.linux_task = np.zeros((1 << 16, 2), np.int64)    # cpu -> (pid, kthread) of the last sched_switch
        self.pending_touches = np.full(1 << 16, -1, np.int64)  # see _rows' defer
        self.pending_pid = np.zeros(1 << 16, np.int64)
        self.last_ts = np.zeros(1 << 16, np.int64)
        self.switches = self.cobalt_switches = 0
        self.irq_rows: Counter[str] = Counter()              # irq rows per event source
        self.irq_skipped: Counter[str] = Counter()           # interrupt lines without a row (synthetic, Dovetail)
        self.msr_dropped = 0                                  # write_msr lines other rows stand for (plan.dropped_msr_writes)

    @property
    def asids(self):
        return self.spaces.asids

    def tgid_of(self, pid: np.ndarray) -> np.ndarray:
        """The process of each task (Tasks.tgid, else the task is its own process)."""
        at = np.minimum(np.searchsorted(self.tgid_keys, pid), max(len(self.tgid_keys) - 1, 0))
        known = (self.tgid_keys[at] == pid) if len(self.tgid_keys) else np.zeros(len(pid), bool)
        return np.where(known, self.tgid_values[at] if len(self.tgid_keys) else pid, pid)

    def map(self, lines: np.ndarray, t0: int) -> dict[str, np.ndarray]:
        """The rows of one chunk's spooled lines (chunk.SPOOLED records), in line order (each
        line's rows together)."""
        role, cpu = lines["role"], lines["cpu"].astype(np.int64)
        self._root_tasks(lines)
        switch = (role == R_SWITCH) | (role == R_COBALT)
        pid = np.where(switch, lines["a"], lines["pid"])
        user = ~(np.isin(pid, self.kthreads) | lines["kthread"])
        tgid = self.tgid_of(pid)
        cr3, asid = self.spaces.run(role, lines["a"], tgid, user, cpu)
        for alt in self.alternatives.values():
            alt.run(role, lines["a"], tgid, user, cpu)
        self.switches += int((role == R_SWITCH).sum())
        self.cobalt_switches += int((role == R_COBALT).sum())
        one_kind, one_value, one_arg, one = self._one_rows(lines)
        irq_row = one & (one_kind == Kind.IRQ)
        extra, extra_at = self._extras(lines, irq_row, irq_row & (one_arg == IRQ_TIMER))
        touches = np.where(user, self.n_user + self.n_kernel, self.n_kernel)
        count = np.where(switch, cr3 + touches, np.where((role == R_EXEC) | (role == R_TLB), cr3, one)) + np.diff(extra_at)
        waiting = self.pending_touches[self.pending_touches >= 0]      # touches carried in from the last chunk
        most = int(count.sum()) + int(np.where(waiting == 1, self.n_user + self.n_kernel, self.n_kernel).sum())
        out = {name: np.empty(most, dtype) for name, dtype in COLUMNS.items()}
        n = _rows(role, lines["a"], lines["pid"], lines["ts"], cpu, asid, cr3, user, switch, one_kind, one_value, one_arg,
                  one, extra, extra_at, self.page_vpn, self.page_write, self.n_user, t0, self.plan.cr3_from_tlb,
                  self.pending_touches, self.pending_pid, tuple(out.values()))
        out = {name: column[:n] for name, column in out.items()}
        self.last_ts[cpu] = lines["ts"]          # the last line's, per CPU (fancy assignment: last wins)
        for kd, k in enumerate(np.bincount(out["kind"]).tolist()):
            if k:
                self.kinds[Kind(kd).name.lower()] += k
        return out

    def finish(self, t0: int) -> dict[str, np.ndarray]:
        """The touches still waiting for their quantum's CR3 write when the input ended: at the
        last event of their CPU."""
        cpus = np.flatnonzero(self.pending_touches >= 0)
        sets = [(c, self.page_vpn[0 if self.pending_touches[c] == 1 else self.n_user:],
                 self.page_write[0 if self.pending_touches[c] == 1 else self.n_user:]) for c in cpus.tolist()]
        self.pending_touches[cpus] = -1
        columns = {"t_ns": [np.full(len(v), self.last_ts[c] - t0) for c, v, _ in sets],
                   "cpu": [np.full(len(v), c) for c, v, _ in sets], "kind": [np.full(len(v), TOUCH) for _, v, _ in sets],
                   "value": [v for _, v, _ in sets], "asid": [np.full(len(v), max(self.spaces.loaded[c], 0)) for c, v, _ in sets],
                   "pid": [np.full(len(v), self.pending_pid[c]) for c, v, _ in sets], "arg": [w for _, _, w in sets]}
        out = {name: np.concatenate([np.zeros(0, dtype), *columns[name]]).astype(dtype) for name, dtype in COLUMNS.items()}
        if len(out["kind"]):
            self.kinds["touch"] += len(out["kind"])
        return out

    def _root_tasks(self, lines: np.ndarray) -> None:
        """cobalt_switch_context to ROOT (next_pid 0) returns to the Linux task current at the
        last sched_switch on that CPU: its pid and kernel-thread flag replace the line's."""
        role = lines["role"]
        rows = np.flatnonzero((role == R_SWITCH) | (role == R_COBALT))
        if not (role[rows] == R_COBALT).any():
            sw = rows[::-1]
            cpus, last = np.unique(lines["cpu"][sw], return_index=True)
            self.linux_task[cpus] = np.stack([lines["a"][sw[last]], lines["kthread"][sw[last]]], axis=1)
            return
        for i in rows.tolist():
            c = lines["cpu"][i]
            if role[i] == R_SWITCH:
                self.linux_task[c] = lines["a"][i], lines["kthread"][i]
            elif lines["a"][i] == 0:
                lines["a"][i], lines["kthread"][i] = self.linux_task[c]

    def _one_rows(self, lines: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per line its one row, if any: kind, value, arg, whether."""
        role, a, b = lines["role"], lines["a"], lines["b"]
        kind = np.zeros(len(lines), np.uint8)
        for r, k in _ONE_ROW.items():
            kind[role == r] = k
        one = kind > 0
        dropped = (role == ck.R_MSR) & (b == 1) & np.isin(a, list(self.plan.dropped_msr_writes))
        one &= ~dropped
        self.msr_dropped += int(dropped.sum())
        value, arg = a.copy(), np.where(np.isin(role, _ARG_FROM_B), b, 0)
        irq_roles = (ck.R_IRQ_PIPELINE,) if self.plan.pipeline else (ck.R_IRQ_HANDLER, ck.R_IRQ)
        for r in irq_roles:
            rows = np.flatnonzero(role == r)
            self._irq_lines(rows, lines, one, kind, value, arg)
        skipped = np.isin(role, (ck.R_IRQ_PIPELINE, ck.R_IRQ_HANDLER, ck.R_IRQ)) & ~one
        keys, n = np.unique(np.where(role == ck.R_IRQ, b, -role.astype(np.int64))[skipped], return_counts=True)
        for key, count in zip(keys.tolist(), n.tolist()):
            self.irq_skipped[self.symbols[key] if key >= 0 else ROLE_EVENTS[-key]] += count
        return kind, value, arg, one

    def _irq_lines(self, rows: np.ndarray, lines: np.ndarray, one, kind, value, arg) -> None:
        """The irq rows of one role's lines (rows), decided once per distinct irq number or
        vector event: irq_vectors/ipi entries keep their vector, handler and pipeline entries
        get the value `Plan.irq` gives."""
        if not len(rows):
            return
        role = int(lines["role"][rows[0]])
        vectors = role == ck.R_IRQ
        keys, inverse = np.unique(lines["b" if vectors else "a"][rows], return_inverse=True)
        names = [self.symbols[k] for k in keys.tolist()] if vectors else [ROLE_EVENTS[role]] * len(keys)
        table = [IrqClass(True, -1, self.plan.vector(n)) if vectors else self.plan.irq(k)
                 for k, n in zip(keys.tolist(), names)]
        made = np.array([t.row for t in table], bool)[inverse]
        mine = rows[made]
        one[mine], kind[mine] = True, Kind.IRQ
        arg[mine] = np.array([t.source for t in table], np.int64)[inverse][made]
        if not vectors:
            value[mine] = np.array([t.value for t in table], np.int64)[inverse][made]
        for name, n in zip(names, np.bincount(inverse[made], minlength=len(keys)).tolist()):
            if n:
                self.irq_rows[name] += n

    def _extras(self, lines: np.ndarray, irq_row: np.ndarray, timer_irq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The timer and device rules' rows: (kind, value, arg) per row, grouped by line, and
        where each line's start (len(lines) + 1 offsets)."""
        rows = [(i, int(Kind.TIMER_ARM), v, g) for i, v, g in self.timers.rows(lines, timer_irq)]
        rows += [(i, int(Kind.MMIO), address, w) for i, address, w in self.devices.rows(lines, irq_row)]
        rows.sort(key=lambda row: row[0])
        extra = np.array([row[1:] for row in rows], np.uint64).reshape(-1, 3)   # values up to DELAY_UNKNOWN (2^64 - 1)
        line = np.array([row[0] for row in rows], np.int64)
        return extra, np.searchsorted(line, np.arange(len(lines) + 1)).astype(np.int64)
