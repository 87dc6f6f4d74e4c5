"""One chunk of a text trace as columns: what every line is, and the fields the mapping reads.

`ChunkParser(fmt, file)` turns the byte chunks of one file (`textlines.read_chunks`) into
`Chunk`s, in order (it carries the line number and the continuation state of wrapped
payloads across chunks). The compiled scanner (`linescan`) does the work, the prefixes as
every reader reads them (`prefixes.scan_prefixes`); the lines it hands back, and payloads it
is unsure of, go through the Python specification (`parse_line`, the `Format`'s regexes,
`events.fields_of`), so both paths give the same columns.

Each line gets a role (`R_*`): not an event (`R_NONE`), malformed (`R_PROBLEM`, with its
"file:line: problem" message), an event without a pattern (`R_UNMAPPED`, or `R_SYS_EXIT` for a
syscall tracer's `sys_x -> ret`), or a mapped event (`R_SWITCH` … `R_CONSUMED`) with its
fields in `a`/`b`:

  R_SWITCH   a = next_pid, kthread = next_comm has a kernel-thread prefix
  R_EXEC     kthread = the line's task name has one
  R_FORK     a = parent_pid, b = child_pid
  R_TLB      a = 1 if a task-switch flush
  R_FAULT    a = address >> 12 (unsigned), b = 1 if error_code has the write bit
  R_IRQ      a = vector (irq_vectors:*_entry), b = the event name's symbol; ipi_entry: a = 0
  R_IRQ_HANDLER, R_IRQ_EXIT, R_IRQ_PIPELINE   a = irq number (irq_handler_entry/_exit,
             Dovetail's irq_pipeline_entry); the first irq_handler_entry of each irq number
             names it in `Names.irqs`
  R_TIMER_EXIT  local_timer_exit (a = vector)
  R_IDLE     a = cpu_idle state >= 1 (an idle entry; pass 1 replaces a by the idle ns);
             R_IDLE_EXIT state -1 (4294967295), R_IDLE_POLL state 0 (cpuidle's poll state)
  R_MSR      a = MSR index, b = 1 write_msr / 0 read_msr
  R_TICK     a = cobalt_tick_shot's delta (ns)
  R_IPI_SEND a = destination CPUs (ipi_raise's target_mask bits, ipi_send_cpu 1, ipi_send_cpumask's list)
  R_COBALT   a = next_pid (0: cobalt's ROOT, the Linux task), kthread as R_SWITCH
  R_HRTIMER_START a = hrtimer, b = expires; R_HRTIMER_CANCEL a = hrtimer;
             R_HRTIMER_EXPIRE a = hrtimer, b = now
  R_WORK_QUEUE, R_WORK_START  a = the work function's symbol
  R_NAPI     a = the device name's symbol, b = work done
  R_MARK     a = the event name's symbol (events read by name only, `formats.MARKED`)
  R_SYSCALL  a = syscall number: as printed (raw_syscalls' NR, -R's __syscall_nr), else that of
             the syscall's name (sys_enter_NAME, ftrace's sys_NAME(…)) in the x86_64 table
             `syscalls_x86_64.tsv`, else 0
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.tracefile.importers import linescan as ls
from pipeline.tracefile.importers.formats import (FREE_TEXT, HEADER_RE, IRQ_VECTOR_ENTRIES, KERNEL, MARKED, SYSCALL_ENTER,
                                                  Format, fields_of)
from pipeline.tracefile.importers.prefixes import EventIndex, Prefixes, scan_prefixes
from pipeline.tracefile.importers.tracecmd import COMPACT_SWITCH

KTHREAD_PREFIXES = ("swapper", "<idle>", "kworker/", "ksoftirqd/", "migration/", "rcu_", "rcuo",
                    "kthreadd", "watchdog/", "kswapd", "khugepaged", "irq/", "cpuhp/", "jbd2/",
                    "kauditd", "kblockd", "kcompactd", "oom_reaper", "writeback", "khungtaskd",
                    "idle_inject/", "ksmd", "kdevtmpfs", "scsi_", "ext4-", "xfs")
_PREFIX_TABLE = np.frombuffer("".join(KTHREAD_PREFIXES).encode(), np.uint8)
_PREFIX_OFFSETS = np.cumsum([0] + [len(p.encode()) for p in KTHREAD_PREFIXES]).astype(np.int64)

(R_NONE, R_PROBLEM, R_UNMAPPED, R_SYS_EXIT, R_SWITCH, R_EXEC, R_FORK, R_TLB, R_FAULT, R_IRQ,
 R_SYSCALL, R_CONSUMED, R_IRQ_HANDLER, R_IRQ_EXIT, R_IRQ_PIPELINE, R_TIMER_EXIT, R_IDLE, R_IDLE_EXIT,
 R_IDLE_POLL, R_MSR, R_TICK, R_IPI_SEND, R_COBALT, R_HRTIMER_START, R_HRTIMER_CANCEL, R_HRTIMER_EXPIRE,
 R_WORK_QUEUE, R_WORK_START, R_NAPI, R_MARK) = range(30)
RECORDS = tuple(range(R_SWITCH, R_MARK + 1))
# The roles the mapping reads (pass 2): they make rows or drive the rules that do.
ROWS = (R_SWITCH, R_EXEC, R_TLB, R_FAULT, R_IRQ, R_SYSCALL, R_IRQ_HANDLER, R_IRQ_PIPELINE, R_TIMER_EXIT,
        R_IDLE, R_MSR, R_TICK, R_IPI_SEND, R_COBALT, R_HRTIMER_START, R_HRTIMER_CANCEL, R_HRTIMER_EXPIRE,
        R_WORK_START, R_NAPI, R_MARK)
# Read for state only: counted as "read, no row" in the report.
STATE_ONLY = (R_FORK, R_CONSUMED, R_EXEC, R_IRQ_EXIT, R_TIMER_EXIT, R_IDLE_EXIT, R_IDLE_POLL, R_HRTIMER_START,
              R_HRTIMER_CANCEL, R_HRTIMER_EXPIRE, R_WORK_QUEUE, R_WORK_START, R_NAPI, R_MARK)
# What the mapping reads of a line, packed: spooled between reading and writing.
SPOOLED = np.dtype([("role", np.int8), ("kthread", np.bool_), ("cpu", np.int32), ("pid", np.int32),
                    ("a", np.int64), ("b", np.int64), ("ts", np.int64)])
IDLE_EXIT_STATE = 2**32 - 1      # cpu_idle's PWR_EVENT_EXIT, (u32)-1
_BY_NAME = {"sched_switch": R_SWITCH, "sched_process_exec": R_EXEC, "sched_process_fork": R_FORK,
            "tlb_flush": R_TLB, "page_fault_user": R_FAULT, "page_fault_kernel": R_FAULT,
            "irq_handler_entry": R_IRQ_HANDLER, "irq_handler_exit": R_IRQ_EXIT,
            "irq_pipeline_entry": R_IRQ_PIPELINE, "local_timer_exit": R_TIMER_EXIT, "ipi_entry": R_IRQ,
            "cpu_idle": R_IDLE, "write_msr": R_MSR, "read_msr": R_MSR, "cobalt_tick_shot": R_TICK,
            "ipi_raise": R_IPI_SEND, "ipi_send_cpu": R_IPI_SEND, "ipi_send_cpumask": R_IPI_SEND,
            "cobalt_switch_context": R_COBALT, "hrtimer_start": R_HRTIMER_START,
            "hrtimer_cancel": R_HRTIMER_CANCEL, "hrtimer_expire_entry": R_HRTIMER_EXPIRE,
            "workqueue_queue_work": R_WORK_QUEUE, "workqueue_execute_start": R_WORK_START,
            "napi_poll": R_NAPI, **{n: R_MARK for n in MARKED}}
_NAMED_BY_SYMBOL = (R_IRQ, R_MARK)      # roles whose line carries its event name's symbol
_IRQ_NAME = re.compile(r"\bname=(?P<name>.*)$")
# Payload patterns the compiled scanner knows (others, e.g. fork and exec, go through Python).
_FAST = {KERNEL["sched_switch"]: ls.P_SWITCH, COMPACT_SWITCH: ls.P_SWITCH_COMPACT, KERNEL["tlb_flush"]: ls.P_TLB,
         KERNEL["page_fault_user"]: ls.P_FAULT, KERNEL["page_fault_kernel"]: ls.P_FAULT,
         KERNEL["irq_handler_entry"]: ls.P_IRQ, KERNEL["sys_enter"]: ls.P_SYS_NR, SYSCALL_ENTER: ls.P_SYS_ENTER,
         KERNEL["irq_pipeline_entry"]: ls.P_IRQ, KERNEL["irq_handler_exit"]: ls.P_IRQ,
         KERNEL["cpu_idle"]: ls.P_STATE, KERNEL["cobalt_tick_shot"]: ls.P_DELTA,
         **{KERNEL[n]: ls.P_VECTOR for n in (*IRQ_VECTOR_ENTRIES, "local_timer_exit")}}
_MASK64 = 2**64 - 1
SYSCALL_TABLE = "x86_64 (Linux arch/x86/entry/syscalls/syscall_64.tbl)"
SYSCALL_NUMBERS = {name: int(nr) for nr, name in (
    line.split("\t") for line in (Path(__file__).with_name("syscalls_x86_64.tsv")).read_text().splitlines()
    if line and not line.startswith("#"))}


def syscall_number(name: str) -> int:
    """The x86_64 number of a syscall event's name (`sys_enter_read`, `sys_read`), 0 if unknown."""
    return SYSCALL_NUMBERS.get(name.removeprefix("sys_enter_") if name.startswith("sys_enter_")
                               else name.removeprefix("sys_"), 0)


def is_kthread_name(comm: str) -> bool:
    return comm.startswith(KTHREAD_PREFIXES)


@dataclass(frozen=True)
class EventName:
    """What a format does with one event name (as printed, subsystem included)."""
    event: str
    name: str                          # without subsystem
    pattern: re.Pattern[str] | None    # None: unmapped, unless a `sys_` name with a `(` payload
    role: int
    code: int                          # linescan P_* code of the pattern
    paren_syscall: bool                # `sys_x(…)` lines map, `sys_x -> r` lines do not
    free_text: bool
    syscall: int                       # the number of the name, for syscall lines that print none


def event_name(fmt: Format, event: str) -> EventName:
    """The mapping of one event name under fmt: its pattern by name, syscall entries by prefix."""
    name = event.rsplit(":", 1)[-1]
    pattern = fmt.patterns.get(name)
    if pattern is None and name.startswith("sys_enter_"):
        pattern = SYSCALL_ENTER
    paren = pattern is None and name.startswith("sys_")
    if pattern is None and not paren:
        role = R_UNMAPPED
    else:
        pat = pattern or SYSCALL_ENTER
        role = _BY_NAME.get(name, R_IRQ if "vector" in pat.groupindex else R_SYSCALL if name.startswith("sys_")
                            else R_CONSUMED)
    code = ls.P_NONE if role == R_UNMAPPED else _FAST.get(pattern or SYSCALL_ENTER, ls.P_PYTHON)
    return EventName(event, name, pattern, role, code, paren, name in FREE_TEXT, syscall_number(name))


@dataclass
class Chunk:
    """Columns of the lines of one chunk (see the module docstring)."""
    first_line: int               # file line number of row 0
    role: np.ndarray              # int8, R_*
    pid: np.ndarray               # int64 (thread id)
    tgid: np.ndarray              # int64, -1 where not printed
    cpu: np.ndarray               # int64, -1 where not printed
    ts: np.ndarray                # int64, in `unit`
    unit: np.ndarray              # int8, linescan.NS_UNIT / COUNT_UNIT
    event: np.ndarray             # int32 index into the parser's `names`, -1 for non-events
    a: np.ndarray                 # int64 fields, per role
    b: np.ndarray
    kthread: np.ndarray           # bool, per role
    problems: list[tuple[int, str]] = field(default_factory=list)  # (row, "file:line: problem"), in order

    def event_lines(self) -> np.ndarray:
        """Mask of the well-formed event lines, mapped or not."""
        return (self.role != R_NONE) & (self.role != R_PROBLEM)

    def spooled(self) -> np.ndarray:
        """The lines the mapping reads, as SPOOLED records (a cpu of -1 becomes 0)."""
        rows = np.flatnonzero(np.isin(self.role, ROWS))
        out = np.empty(len(rows), SPOOLED)
        out["role"], out["kthread"], out["b"] = self.role[rows], self.kthread[rows], self.b[rows]
        out["cpu"], out["pid"] = np.maximum(self.cpu[rows], 0), self.pid[rows]
        out["a"], out["ts"] = self.a[rows], self.ts[rows]
        return out


@dataclass
class Names:
    """The strings columns refer to by number, shared by the files of one import: symbols
    (work functions, device and event names) and the name of each irq number (as the first
    irq_handler_entry of it printed it)."""
    symbols: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    irqs: dict[int, str] = field(default_factory=dict)

    def intern(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.symbols)
            self.symbols.append(text)
        return self.index[text]

    def find(self, text: str) -> int:
        """The symbol of text, -1 if no line held it."""
        return self.index.get(text, -1)


class ChunkParser:
    """Parses the chunks of one file in order (line numbers and continuation carry over).

    `clock` (cpu -> latest timestamp, shared by the files of one import) enforces time order
    per CPU: rows are written as they come, so an event line earlier than one before it on
    the same CPU is malformed (a concatenation of recordings, say), not silently reordered."""

    def __init__(self, fmt: Format, file: str, clock: dict[int, int], names: Names | None = None) -> None:
        self.fmt, self.file, self.clock = fmt, file, clock
        self.strings = Names() if names is None else names
        self.events = EventIndex(partial(event_name, fmt))
        self.next_line = 1
        self.continuation = False

    @property
    def names(self) -> list[EventName]:
        """What the format does with each event name, by the index in `Chunk.event`."""
        return self.events.names

    def parse(self, data: bytes) -> Chunk:
        """The next chunk of the file: its lines (`parse_lines`), then their time order."""
        chunk = self.parse_lines(data)
        self.order(chunk)
        return chunk

    def parse_lines(self, data: bytes) -> Chunk:
        """The chunk's lines, each read alone: what does not depend on the lines before the
        chunk but for the line number and the continuation state, so a split import
        (`split.py`) parses byte ranges of a file apart and orders them here afterwards."""
        p = scan_prefixes(data)
        n = p.lines
        chunk = Chunk(self.next_line, np.zeros(n, np.int8), p.pid, p.tgid, p.cpu, p.ts, p.unit, self.events.of_lines(p),
                      np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, bool))
        slow, too_large = self._python_lines(p, chunk)
        self._payloads(p, chunk, slow)
        self._learn_names(p, chunk, slow)
        self._non_events(p, chunk, too_large)
        self.next_line += n
        return chunk

    def order(self, chunk: Chunk) -> None:
        """Lines earlier than one before them on their CPU (`clock`, carried over) become
        malformed; the chunk's problems then in line order."""
        self._time_order(chunk)
        chunk.problems.sort()

    def _time_order(self, chunk: Chunk) -> None:
        valid = np.flatnonzero(chunk.event_lines())
        cpu = np.maximum(chunk.cpu[valid], 0)
        for c in np.unique(cpu).tolist():
            rows = valid[cpu == c]
            ts = chunk.ts[rows]
            latest = np.maximum.accumulate(np.concatenate(([self.clock.get(c, ts[0])], ts)))
            for row, t, before in zip(rows[ts < latest[:-1]].tolist(), ts[ts < latest[:-1]].tolist(),
                                      latest[:-1][ts < latest[:-1]].tolist()):
                chunk.role[row] = R_PROBLEM
                chunk.problems.append((row, f"{self.file}:{chunk.first_line + row}: timestamp {t} is before "
                                            f"{before}, an earlier event's on cpu {c}"))
            self.clock[c] = int(latest[-1])

    def _python_lines(self, p: Prefixes, chunk: Chunk) -> tuple[dict[int, tuple[str, str]], set[int]]:
        """The event lines parse_line read (`p.parsed`) into the columns: row -> (comm, payload),
        and the rows left as non-events because a number in them is beyond int64."""
        slow: dict[int, tuple[str, str]] = {}
        too_large: set[int] = set()
        for row, tl in p.parsed.items():
            if max(tl.pid, tl.ts, tl.cpu or 0, tl.tgid or 0) >= 2**63:
                p.status[row] = ls.OTHER
                too_large.add(row)
                continue
            p.status[row] = ls.EVENT
            chunk.pid[row], chunk.cpu[row], chunk.ts[row] = tl.pid, -1 if tl.cpu is None else tl.cpu, tl.ts
            chunk.tgid[row] = -1 if tl.tgid is None else tl.tgid
            chunk.unit[row] = ls.NS_UNIT if tl.ts_unit == "ns" else ls.COUNT_UNIT
            chunk.event[row] = self.events.intern(tl.event)
            slow[row] = (tl.comm, tl.payload)
        return slow, too_large

    def _payloads(self, p: Prefixes, chunk: Chunk, slow: dict[int, tuple[str, str]]) -> None:
        """Roles and fields of the event lines."""
        buf, spans, status = p.buf, p.spans, p.status
        rows = np.flatnonzero(status == ls.EVENT)
        names = self.names
        table = np.array([(nm.role, nm.code, int(nm.paren_syscall)) for nm in names] or [(0, 0, 0)], np.int64)
        ev = chunk.event[rows]
        role, code = table[ev, 0], table[ev, 1]
        paren = table[ev, 2].astype(bool)
        if paren.any():                       # `sys_x(…)` maps, `sys_x -> r` is an exit, else unmapped
            pr = rows[paren]
            lead = np.zeros((len(pr), 2), np.uint8)
            for k in range(2):
                has = spans[pr, 5] > spans[pr, 4] + k
                lead[has, k] = buf[spans[pr[has], 4] + k]
            for i, r in enumerate(pr.tolist()):
                if r in slow:
                    lead[i] = np.frombuffer(slow[r][1][:2].encode("utf-8", "replace")[:2].ljust(2, b"\0"), np.uint8)
            sys_call, sys_exit = lead[:, 0] == ord("("), (lead[:, 0] == ord("-")) & (lead[:, 1] == ord(">"))
            role[paren] = np.where(sys_call, R_SYSCALL, np.where(sys_exit, R_SYS_EXIT, R_UNMAPPED))
            code[paren] = np.where(sys_call, ls.P_SYS_ENTER, ls.P_NONE)
        codes = np.zeros(len(status), np.int64)
        codes[rows] = code
        for row in slow:
            codes[row] = ls.P_PYTHON if codes[row] != ls.P_NONE else ls.P_NONE
        result, comm = np.full(len(status), ls.PYTHON, np.int8), np.zeros((len(status), 2), np.int64)
        ls.scan_payloads(buf, spans, codes, result, chunk.a, chunk.b, comm)
        unnumbered = np.flatnonzero((codes == ls.P_SYS_ENTER) & (result == ls.OK) & (chunk.b == 0))
        chunk.a[unnumbered] = np.array([nm.syscall for nm in names] + [0], np.int64)[chunk.event[unnumbered]]
        chunk.b[unnumbered] = 0
        chunk.role[rows] = role
        idle = rows[(role == R_IDLE) & (result[rows] == ls.OK)]
        chunk.role[idle] = idle_role(chunk.a[idle])
        chunk.b[idle] = 0
        tick = rows[(role == R_TICK) & (result[rows] == ls.OK)]
        chunk.b[tick] = 0
        for sel, spans_of in (((role == R_SWITCH) & (result[rows] == ls.OK), comm),
                              ((role == R_EXEC) & ~np.isin(rows, list(slow)), spans)):
            kflags = np.zeros(int(sel.sum()), bool)
            ls.starts_with_any(buf, spans_of[rows[sel]], _PREFIX_TABLE, _PREFIX_OFFSETS, kflags)
            chunk.kthread[rows[sel]] = kflags
        for row in rows[(codes[rows] != ls.P_NONE) & (result[rows] != ls.OK)].tolist():
            if result[row] == ls.FAIL:
                self._bad_payload(chunk, row, self._payload_text(p, slow, row))
            else:
                self._python_payload(chunk, row, p, slow)

    def _learn_names(self, p: Prefixes, chunk: Chunk, slow: dict[int, tuple[str, str]]) -> None:
        """Event-name symbols of the lines that carry them, and the names of irq numbers not yet
        named (one payload decoded per new irq number, not per line)."""
        named = np.isin(chunk.role, _NAMED_BY_SYMBOL)
        if named.any():
            symbol = np.array([self.strings.intern(nm.name) if nm.role in _NAMED_BY_SYMBOL else -1
                               for nm in self.names], np.int64)
            rows = np.flatnonzero(named)
            column = np.where(chunk.role[rows] == R_MARK, 0, 1)
            for col, arr in ((0, chunk.a), (1, chunk.b)):
                arr[rows[column == col]] = symbol[chunk.event[rows[column == col]]]
        handlers = np.flatnonzero(chunk.role == R_IRQ_HANDLER)
        irqs, first = np.unique(chunk.a[handlers], return_index=True)
        for irq, row in zip(irqs.tolist(), handlers[first].tolist()):
            if irq not in self.strings.irqs:
                m = _IRQ_NAME.search(self._payload_text(p, slow, row))
                self.strings.irqs[irq] = m["name"].strip() if m else ""

    def _payload_text(self, p: Prefixes, slow, row: int) -> str:
        return slow[row][1] if row in slow else p.data[p.spans[row, 4]:p.spans[row, 5]].decode()

    def _bad_payload(self, chunk: Chunk, row: int, payload: str, why: str = "payload not understood") -> None:
        chunk.role[row] = R_PROBLEM
        name = self.names[chunk.event[row]].name
        chunk.problems.append((row, f"{self.file}:{chunk.first_line + row}: {name}: {why}: {payload[:60]!r}"))

    def _python_payload(self, chunk: Chunk, row: int, p: Prefixes, slow) -> None:
        """The Format's own regex on one payload (events.fields_of conversions)."""
        nm = self.names[chunk.event[row]]
        payload = self._payload_text(p, slow, row)
        m = (nm.pattern or SYSCALL_ENTER).search(payload)
        try:
            f = fields_of(m) if m is not None else None
        except ValueError:       # int('028', 0)
            f = None
        if f is None:
            self._bad_payload(chunk, row, payload)
            return
        try:
            self._fields(chunk, row, f, nm, slow)
        except OverflowError:    # the columns are int64
            self._bad_payload(chunk, row, payload, "number too large")

    def _fields(self, chunk: Chunk, row: int, f: dict[str, int | str], nm: EventName,
                slow: dict[int, tuple[str, str]]) -> None:
        role = chunk.role[row]
        if role in (R_SWITCH, R_COBALT):
            chunk.a[row], chunk.kthread[row] = int(f["next_pid"]), is_kthread_name(str(f["next_comm"]))
        elif role == R_EXEC:
            comm = slow[row][0] if row in slow else None
            if comm is not None:
                chunk.kthread[row] = is_kthread_name(comm)
        elif role == R_FORK:
            chunk.a[row], chunk.b[row] = int(f["parent_pid"]), int(f["child_pid"])
        elif role == R_TLB:
            chunk.a[row] = f.get("code") == 0 or "task switch" in str(f.get("reason", "")) or str(f.get("reason")) == "0"
        elif role == R_FAULT:
            chunk.a[row] = np.int64(np.uint64((int(f["address"]) & _MASK64) >> 12))
            chunk.b[row] = int(bool(int(f["error_code"]) & 0x2))
        elif role in (R_IRQ, R_IRQ_HANDLER, R_IRQ_EXIT, R_IRQ_PIPELINE, R_TIMER_EXIT):
            chunk.a[row] = int(f.get("vector", 0))
        elif role == R_SYSCALL:
            chunk.a[row] = int(f.get("id", nm.syscall))
        else:
            self._event_fields(chunk, row, f, nm.name)

    def _event_fields(self, chunk: Chunk, row: int, f: dict[str, int | str], name: str) -> None:
        """The fields of the events behind the hlt, msr, timer, IPI and device rules."""
        role, sym = chunk.role[row], self.strings.intern
        if role == R_IDLE:
            chunk.a[row] = int(f["state"])
            chunk.role[row] = idle_role(chunk.a[row:row + 1])[0]
        elif role == R_MSR:
            chunk.a[row], chunk.b[row] = int(f["msr"]), int(name == "write_msr")
        elif role == R_TICK:
            chunk.a[row] = int(f["delta"])
        elif role == R_IPI_SEND:
            chunk.a[row] = _targets(f)
        elif role in (R_HRTIMER_START, R_HRTIMER_CANCEL, R_HRTIMER_EXPIRE):
            chunk.a[row], chunk.b[row] = int(f["hrtimer"]), int(f.get("expires", f.get("now", 0)))
        elif role in (R_WORK_QUEUE, R_WORK_START):
            chunk.a[row] = sym(str(f["function"]))
        elif role == R_NAPI:
            chunk.a[row], chunk.b[row] = sym(str(f["device"])), int(f["work"])


    def _non_events(self, p: Prefixes, chunk: Chunk, too_large: set[int]) -> None:
        """Malformed lines among the non-events: not `#`/tab/header lines nor the wrapped
        continuation of a free-text payload (bprint) before them."""
        status = p.status
        event_rows = np.flatnonzero(status == ls.EVENT)
        free = np.array([nm.free_text for nm in self.names] + [False], bool)[chunk.event[event_rows]]
        for row in np.flatnonzero(status == ls.OTHER).tolist():
            before = np.searchsorted(event_rows, row) - 1
            continuation = free[before] if before >= 0 else self.continuation
            text = p.text(row)
            if row in too_large:
                chunk.role[row] = R_PROBLEM
                chunk.problems.append((row, f"{self.file}:{chunk.first_line + row}: number too large: {text.strip()[:60]!r}"))
            elif not (continuation or HEADER_RE.match(text)):
                chunk.role[row] = R_PROBLEM
                chunk.problems.append((row, f"{self.file}:{chunk.first_line + row}: not an event line: {text.strip()[:60]!r}"))
        if len(event_rows):
            self.continuation = bool(free[-1])


def idle_role(state: np.ndarray) -> np.ndarray:
    """cpu_idle lines by state: an idle entry, the exit (-1 as u32), or cpuidle's poll state 0."""
    return np.where(state == IDLE_EXIT_STATE, R_IDLE_EXIT, np.where(state == 0, R_IDLE_POLL, R_IDLE)).astype(np.int8)


def _targets(f: dict[str, int | str]) -> int:
    """The destination count of an IPI event: bits of ipi_raise's `target_mask` (32-bit words
    joined by commas), 1 for ipi_send_cpu, the CPUs of ipi_send_cpumask's list (`0-3,5`)."""
    if "mask" in f:
        return sum(bin(int(word, 16)).count("1") for word in str(f["mask"]).split(",") if word)
    if "cpulist" in f:
        spans = [part.split("-") for part in str(f["cpulist"]).split(",") if part]
        return sum(int(s[-1]) - int(s[0]) + 1 for s in spans)
    return 1
