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
  by a kernel thread, or its comm starts with one of `chunk.KTHREAD_PREFIXES`.
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
  `sys_x(…)` → `syscall` (value = the number where printed, else the x86_64 number of the
  name, from the kernel's syscall_64.tbl (`syscalls_x86_64.tsv`), else 0; metadata
  `source.syscall_numbers` says so).
* Everything else is unmapped: counted per event name and listed, never dropped silently.

Streaming: the tasks are learned from the whole input first (`Tasks.learn`, chunk by chunk),
then `GuestMapper.map` turns the lines of each chunk that make rows (spooled meanwhile, see
`pipeline.tracefile.importers`) into rows; only the state between chunks (tasks, address spaces, the
asid loaded on each CPU) is kept, never the rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numba import njit, types
from numba.typed import Dict

from pipeline.tracefile.importers.chunk import R_EXEC, R_FAULT, R_FORK, R_IRQ, R_SWITCH, R_SYSCALL, RECORDS, Chunk
from pipeline.tracefile.importers.working_set import WorkingSet
from pipeline.tracefile.format import SCHEMA
from replay.kinds import Kind

KTHREADD = 2
_KIND_OF_ROLE = np.zeros(R_SYSCALL + 1, np.uint8)      # the kind of a one-row line, by role
_KIND_OF_ROLE[[R_FAULT, R_IRQ, R_SYSCALL]] = Kind.PAGE_FAULT, Kind.IRQ, Kind.SYSCALL
CR3_WRITE, TOUCH = int(Kind.CR3_WRITE), int(Kind.TOUCH)
COLUMNS = {f.name: f.type.to_pandas_dtype() for f in SCHEMA}    # name -> numpy dtype, in order


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
def _address_spaces(role, tgid, user, cpu, asids, loaded, next_asid, cr3, asid):
    """The state machine, line by line: a user task's switch-in loads its process's asid
    (allocated at its first switch-in), an exec allocates a fresh one and loads it. cr3[i] = 1
    where CR3 changes; asid[i] = the asid loaded on the line's CPU once the line is done (0
    before any). asids (tgid -> asid), loaded (per CPU, -1 before any) and next_asid[0] carry
    over between chunks."""
    for i in range(role.size):
        c = cpu[i]
        if user[i] and (role[i] == R_SWITCH or role[i] == R_EXEC):
            g = tgid[i]
            if role[i] == R_EXEC or g not in asids:
                next_asid[0] += 1
                asids[g] = next_asid[0]
            if loaded[c] != asids[g]:
                loaded[c] = asids[g]
                cr3[i] = 1
        asid[i] = max(loaded[c], 0)


@njit(cache=True)
def _rows(role, a, b, pid, ts, cpu, asid, cr3, user, kind_of_role, vpn, write, n_user, t0, out):
    """Each line's rows, in line order: a switch = CR3 write if any, then the working set's
    touches (a kernel thread's: the kernel pages only); an exec = CR3 write if any; a fault,
    irq or syscall = one row. out = t_ns, cpu, kind, value, asid, pid, arg columns."""
    t_ns, ocpu, kind, value, oasid, opid, arg = out
    r = 0
    for i in range(role.size):
        switch = role[i] == R_SWITCH
        first = r
        if switch or role[i] == R_EXEC:
            if cr3[i]:
                kind[r], value[r], arg[r] = CR3_WRITE, asid[i], 0
                r += 1
            if switch:
                for k in range(0 if user[i] else n_user, vpn.size):
                    kind[r], value[r], arg[r] = TOUCH, vpn[k], write[k]
                    r += 1
        else:
            kind[r], value[r], arg[r] = kind_of_role[role[i]], a[i], b[i] if role[i] == R_FAULT else 0
            r += 1
        for j in range(first, r):
            t_ns[j], ocpu[j], oasid[j], opid[j] = ts[i] - t0, cpu[i], asid[i], a[i] if switch else pid[i]


class GuestMapper:
    """Turns the mapped lines of chunks (in file order) into trace rows; see the module docstring."""

    def __init__(self, tasks: Tasks, working_set: WorkingSet) -> None:
        user, kernel = working_set.user(), working_set.kernel()
        pages = np.array(user + kernel, np.uint64).reshape(-1, 2)
        self.page_vpn, self.page_write = pages[:, 0], pages[:, 1].astype(np.uint32)
        self.n_user, self.n_kernel = len(user), len(kernel)
        self.kinds: Counter[str] = Counter()
        self.tgid_keys = np.array(sorted(tasks.tgid), np.int64)
        self.tgid_values = np.array([tasks.tgid[k] for k in self.tgid_keys.tolist()], np.int64)
        self.kthreads = np.array(sorted(tasks.kthreads), np.int64)
        self.asids = Dict.empty(types.int64, types.int64)     # tgid -> asid
        self.loaded = np.full(1 << 16, -1, np.int64)           # cpu -> asid in CR3 (-1: none yet)
        self.next_asid = np.zeros(1, np.int64)
        self.switches = 0

    def tgid_of(self, pid: np.ndarray) -> np.ndarray:
        """The process of each task (Tasks.tgid, else the task is its own process)."""
        at = np.minimum(np.searchsorted(self.tgid_keys, pid), max(len(self.tgid_keys) - 1, 0))
        known = (self.tgid_keys[at] == pid) if len(self.tgid_keys) else np.zeros(len(pid), bool)
        return np.where(known, self.tgid_values[at] if len(self.tgid_keys) else pid, pid)

    def map(self, lines: np.ndarray, t0: int) -> dict[str, np.ndarray]:
        """The rows of the lines of one chunk that make rows (chunk.SPOOLED records), in line
        order (each line's rows together)."""
        role, cpu = lines["role"], lines["cpu"].astype(np.int64)
        switch = role == R_SWITCH
        pid = np.where(switch, lines["a"], lines["pid"])
        user = ~(np.isin(pid, self.kthreads) | lines["kthread"])
        cr3, asid = np.zeros(len(lines), np.int8), np.zeros(len(lines), np.int64)
        _address_spaces(role, self.tgid_of(pid), user, cpu, self.asids, self.loaded, self.next_asid, cr3, asid)
        self.switches += int(switch.sum())
        touches = np.where(user, self.n_user + self.n_kernel, self.n_kernel)
        count = np.where(switch, cr3 + touches, np.where(role == R_EXEC, cr3, 1))
        n = int(count.sum())
        out = {name: np.empty(n, dtype) for name, dtype in COLUMNS.items()}
        _rows(role, lines["a"], lines["b"].astype(np.int64), lines["pid"], lines["ts"], cpu, asid, cr3, user,
              _KIND_OF_ROLE, self.page_vpn, self.page_write, self.n_user, t0, tuple(out.values()))
        for kd, k in enumerate(np.bincount(out["kind"]).tolist()):
            if k:
                self.kinds[Kind(kd).name.lower()] += k
        return out
