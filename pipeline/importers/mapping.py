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
  `sys_x(…)` → `syscall` (value = the number where printed, else the x86_64 number of the
  name, from the kernel's syscall_64.tbl (`syscalls_x86_64.tsv`), else 0; metadata
  `source.syscall_numbers` says so).
* Everything else is unmapped: counted per event name and listed, never dropped silently.

Streaming: the tasks are learned from the whole input first (`Tasks.learn`, chunk by chunk),
then `GuestMapper.map` turns the lines of each chunk that make rows (spooled meanwhile, see
`pipeline.importers`) into rows; only the state between chunks (tasks, address spaces, the
asid loaded on each CPU) is kept, never the rows.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numba import types
from numba.typed import Dict

from pipeline.importers.chunk import R_EXEC, R_FAULT, R_FORK, R_IRQ, R_SWITCH, R_SYSCALL, RECORDS, Chunk
from pipeline.importers.linescan import address_spaces
from pipeline.importers.working_set import WorkingSet
from replay.kinds import Kind

KTHREADD = 2
_KIND_OF_ROLE = np.zeros(R_SYSCALL + 1, np.uint8)      # the kind of a one-row line, by role
_KIND_OF_ROLE[[R_FAULT, R_IRQ, R_SYSCALL]] = Kind.PAGE_FAULT, Kind.IRQ, Kind.SYSCALL


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


class GuestMapper:
    """Turns the mapped lines of chunks (in file order) into trace rows; see the module docstring."""

    def __init__(self, tasks: Tasks, working_set: WorkingSet) -> None:
        self.tasks = tasks
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

    def _address_spaces(self, lines: np.ndarray, cpu: np.ndarray) -> tuple[np.ndarray, ...]:
        """The stateful part (linescan.address_spaces): (CR3 written, user task, asid after)."""
        switch = lines["role"] == R_SWITCH
        pid = np.where(switch, lines["a"], lines["pid"])
        user = ~(np.isin(pid, self.kthreads) | lines["kthread"])
        cr3, after = np.zeros(len(lines), np.int64), np.zeros(len(lines), np.int64)
        address_spaces(switch, self.tgid_of(pid), user, cpu, self.asids, self.loaded, self.next_asid, cr3, after)
        self.switches += int(switch.sum())
        return cr3, user, after

    def _current_asid(self, cpu: np.ndarray, state_at: np.ndarray, after: np.ndarray, before: np.ndarray) -> np.ndarray:
        """Per mapped line, the asid loaded on its CPU once the line is done (forward fill per CPU)."""
        out = np.zeros(len(cpu), np.int64)
        for c in np.unique(cpu).tolist():
            mine = np.flatnonzero(cpu == c)
            has = state_at[mine] >= 0
            last = np.maximum.accumulate(np.where(has, np.arange(len(mine)), -1))
            after_last = np.append(after, max(int(before[c]), 0))  # index -1: the asid before the chunk
            out[mine] = after_last[np.where(last >= 0, state_at[mine][np.maximum(last, 0)], -1)]
        return out

    def map(self, lines: np.ndarray, t0: int) -> dict[str, np.ndarray]:
        """The rows of the lines of one chunk that make rows (chunk.SPOOLED records), in line
        order (each line's rows together)."""
        role, cpu = lines["role"], lines["cpu"].astype(np.int64)
        stateful = np.flatnonzero((role == R_SWITCH) | (role == R_EXEC))
        before = self.loaded.copy()
        cr3, user, after = self._address_spaces(lines[stateful], cpu[stateful])
        state_at = np.full(len(lines), -1, np.int64)
        state_at[stateful] = np.arange(len(stateful))
        asid = self._current_asid(cpu, state_at, after, before)
        # rows per line: switch = CR3? + touches (user + kernel pages; kernel only for kernel
        # threads), exec = CR3?, fault/irq/syscall = one row
        n_cr3, line_user = np.zeros(len(lines), np.int64), np.zeros(len(lines), bool)
        n_cr3[stateful], line_user[stateful] = cr3, user
        switch = role == R_SWITCH
        n_touch = np.where(switch, np.where(line_user, self.n_user + self.n_kernel, self.n_kernel), 0)
        single = ~switch & (role != R_EXEC)
        count = n_cr3 + n_touch + single
        line = np.repeat(np.arange(len(lines)), count)
        k = np.arange(len(line)) - np.repeat(np.cumsum(count) - count, count)
        is_cr3 = k < n_cr3[line]
        is_touch = ~is_cr3 & ~single[line]
        page = np.where(is_touch, np.where(line_user[line], 0, self.n_user) + k - n_cr3[line], 0)
        vpn = self.page_vpn[page] if is_touch.any() else np.zeros(len(line), np.uint64)
        write = self.page_write[page] if is_touch.any() else np.zeros(len(line), np.uint32)
        kind = np.where(is_cr3, np.uint8(Kind.CR3_WRITE), np.where(is_touch, np.uint8(Kind.TOUCH),
                                                                   _KIND_OF_ROLE[role[line]]))
        src = lines[line]
        value = np.where(is_cr3, asid[line].astype(np.uint64), np.where(is_touch, vpn, src["a"].astype(np.uint64)))
        arg = np.where(is_touch, write, np.where(role[line] == R_FAULT, src["b"], 0))
        pid = np.where(switch[line], src["a"], src["pid"])
        for kd, n in enumerate(np.bincount(kind).tolist()):
            if n:
                self.kinds[Kind(kd).name.lower()] += n
        return {"t_ns": (src["ts"] - t0).astype(np.int64), "cpu": cpu[line].astype(np.uint16),
                "kind": kind.astype(np.uint8), "value": value.astype(np.uint64), "asid": asid[line].astype(np.uint32),
                "pid": pid.astype(np.int32), "arg": arg.astype(np.uint32)}
