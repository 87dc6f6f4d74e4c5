"""Guest events from recorded events: the mapping rules every format shares.

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
  by a kernel thread, or its comm starts with one of `KTHREAD_PREFIXES`.
* **sched_switch** → `cr3_write` (value = asid) when the next task is a user task whose
  process differs from the one loaded on that CPU (a switch between threads of one process
  or to a kernel thread emits none; the first user task of each CPU emits one). Each
  switch-in is followed by the `WorkingSet` touches. Rows before any user task has run on
  a CPU carry asid 0.
* **tlb_flush** with reason "flush on task switch" (code 0) is corroboration only: counted.
* **page_fault_user/kernel** → `page_fault` (value = address >> 12, arg = 1 if error_code
  has the write bit 0x2).
* **irq_vectors:*_entry** → `irq` (value = vector); **irq:irq_handler_entry** → `irq`
  (value = the irq number as printed: Linux irq numbers are not vectors).
* **raw_syscalls:sys_enter**, **syscalls:sys_enter_*** and the ftrace syscall tracer's
  `sys_x(…)` → `syscall` (value = the number where printed, else 0).
* Everything else is unmapped: counted per event name and listed, never dropped silently.
"""
from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pipeline.importers.events import Record
from pipeline.importers.working_set import WorkingSet
from replay.kinds import Kind

KTHREAD_PREFIXES = ("swapper", "<idle>", "kworker/", "ksoftirqd/", "migration/", "rcu_", "rcuo",
                    "kthreadd", "watchdog/", "kswapd", "khugepaged", "irq/", "cpuhp/", "jbd2/",
                    "kauditd", "kblockd", "kcompactd", "oom_reaper", "writeback", "khungtaskd",
                    "idle_inject/", "ksmd", "kdevtmpfs", "scsi_", "ext4-", "xfs")
KTHREADD = 2
COLUMNS = {"t_ns": "q", "cpu": "H", "kind": "B", "value": "Q", "asid": "I", "pid": "i", "arg": "I"}


@dataclass
class Tasks:
    """What the first pass learns about tasks: pid -> tgid, and kernel threads."""
    tgid: dict[int, int] = field(default_factory=dict)
    kthreads: set[int] = field(default_factory=lambda: {0, KTHREADD})

    def see(self, rec: Record) -> None:
        line = rec.line
        if line.tgid is not None:
            self.tgid[line.pid] = line.tgid
        if line.name == "sched_process_fork":
            parent, child = rec.fields["parent_pid"], rec.fields["child_pid"]
            self.tgid.setdefault(child, child)
            if parent in self.kthreads:
                self.kthreads.add(child)

    def is_kthread(self, pid: int, comm: str) -> bool:
        return pid in self.kthreads or comm.startswith(KTHREAD_PREFIXES)


class Columns:
    """Typed, growable column buffers (array module): bounded by the output, not the input."""

    def __init__(self) -> None:
        self.cols = {name: array(code) for name, code in COLUMNS.items()}

    def add(self, t: int, cpu: int, kind: Kind, value: int, asid: int, pid: int, arg: int = 0) -> None:
        for name, v in zip(COLUMNS, (t, cpu, int(kind), value, asid, pid, arg)):
            self.cols[name].append(v)

    def arrays(self) -> dict[str, np.ndarray]:
        """Columns as numpy, rows stably ordered by t_ns (files may interleave CPUs)."""
        out = {n: np.frombuffer(a, dtype=np.dtype(a.typecode)) if len(a) else
               np.zeros(0, np.dtype(a.typecode)) for n, a in self.cols.items()}
        order = np.argsort(out["t_ns"], kind="stable")
        return {n: a[order] for n, a in out.items()}

    def __len__(self) -> int:
        return len(self.cols["t_ns"])


class GuestMapper:
    """Turns Records (in time order per CPU) into trace rows; see the module docstring."""

    def __init__(self, tasks: Tasks, working_set: WorkingSet) -> None:
        self.tasks = tasks
        self.user_pages, self.kernel_pages = working_set.user(), working_set.kernel()
        self.out = Columns()
        self.kinds: Counter[str] = Counter()
        self.consumed: Counter[str] = Counter()
        self.loaded: dict[int, int] = {}     # cpu -> asid in CR3
        self.asids: dict[int, int] = {}      # tgid -> asid
        self.switches = 0
        self.next_asid = 0
        self.handlers = {"sched_switch": self.switch, "sched_process_exec": self.exec,
                         "tlb_flush": self.tlb_flush, "irq_handler_entry": self.irq,
                         "page_fault_user": self.fault, "page_fault_kernel": self.fault}

    def feed(self, rec: Record, t: int, cpu: int) -> None:
        name = rec.line.name
        handler = self.handlers.get(name)
        if handler is not None:
            handler(rec, t, cpu)
        elif "vector" in rec.fields:
            self.irq(rec, t, cpu)
        elif name.startswith("sys_"):
            self.emit(t, cpu, Kind.SYSCALL, int(rec.fields.get("id", 0)), rec.line.pid)
        else:
            self.consumed[name] += 1   # read for state only (sched_process_fork)

    def emit(self, t: int, cpu: int, kind: Kind, value: int, pid: int, arg: int = 0, asid: int | None = None) -> None:
        self.out.add(t, cpu, kind, value, self.loaded.get(cpu, 0) if asid is None else asid, pid, arg)
        self.kinds[kind.name.lower()] += 1

    def asid_of(self, pid: int, fresh: bool = False) -> int:
        tgid = self.tasks.tgid.get(pid, pid)
        if fresh or tgid not in self.asids:
            self.next_asid += 1
            self.asids[tgid] = self.next_asid
        return self.asids[tgid]

    def switch(self, rec: Record, t: int, cpu: int) -> None:
        self.switches += 1
        pid, comm = int(rec.fields["next_pid"]), str(rec.fields["next_comm"])
        if not self.tasks.is_kthread(pid, comm):
            self.load(t, cpu, self.asid_of(pid), pid)
            self.touch(t, cpu, pid, self.user_pages)
        self.touch(t, cpu, pid, self.kernel_pages)

    def load(self, t: int, cpu: int, asid: int, pid: int) -> None:
        if self.loaded.get(cpu) != asid:
            self.loaded[cpu] = asid
            self.emit(t, cpu, Kind.CR3_WRITE, asid, pid)

    def touch(self, t: int, cpu: int, pid: int, pages: tuple[tuple[int, int], ...]) -> None:
        for vpn, write in pages:
            self.emit(t, cpu, Kind.TOUCH, vpn, pid, write)

    def exec(self, rec: Record, t: int, cpu: int) -> None:
        self.consumed["sched_process_exec"] += 1
        pid = rec.line.pid
        if not self.tasks.is_kthread(pid, rec.line.comm):
            self.load(t, cpu, self.asid_of(pid, fresh=True), pid)

    def tlb_flush(self, rec: Record, t: int, cpu: int) -> None:
        on_switch = rec.fields.get("code") == 0 or "task switch" in str(rec.fields.get("reason", "")) \
            or str(rec.fields.get("reason")) == "0"
        self.consumed["tlb_flush (task switch)" if on_switch else "tlb_flush (other)"] += 1

    def fault(self, rec: Record, t: int, cpu: int) -> None:
        address, error = int(rec.fields["address"]), int(rec.fields["error_code"])
        self.emit(t, cpu, Kind.PAGE_FAULT, (address & (2**64 - 1)) >> 12, rec.line.pid, int(bool(error & 0x2)))

    def irq(self, rec: Record, t: int, cpu: int) -> None:
        self.emit(t, cpu, Kind.IRQ, int(rec.fields["vector"]), rec.line.pid)
