"""Host-side KVM traces read for `kvm-stat`: every kvm_exit, the time to its kvm_entry, I/O.

Input: text traces of the host (ftrace, `trace-cmd report` with or without -N/-R, perf
script) holding `kvm_exit` and `kvm_entry`. An exit's handling time is the time from the
`kvm_exit` to the next `kvm_entry` of the same vCPU thread (exit and entry both run in the
vCPU's thread, so pairing by thread also works for renderings that omit the vcpu id;
the vcpu id, where any event of the thread prints it, labels the rows).

A file is read as `pipeline import` reads one: in chunks of whole lines, the line prefixes
by the compiled scanner (`prefixes.scan_prefixes`). Only the KVM event lines (`KVM_EVENTS`)
go on to Python, in file order: their payloads are parsed by the regexes below (one per
rendering; reason names in `exit_reasons.py`) and exits paired with entries. What a file
yields is a `FileScan` of typed rows; `pipeline.analysis.kvm_stat` makes the tables.

Malformed KVM lines are skipped, counted and the first few reported as file:line. So is a
kvm_entry stamped before the exit it would close (a file not in time order): that exit is
counted but not timed, so no time is negative. A number that does not fit its 64-bit table
column makes its line malformed (polars would refuse the whole table over one garbled line).
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.tracefile.importers import MAX_EXAMPLES
from pipeline.tracefile.importers import linescan as ls
from pipeline.tracefile.importers.exit_reasons import from_name, from_number
from pipeline.tracefile.importers.prefixes import EventIndex, Prefixes, scan_prefixes
from pipeline.tracefile.textlines import TraceFileError, read_chunks

CHUNK_BYTES = 4 << 20   # text read and scanned at a time

# ---------------------------------------------------------------- payloads, per rendering
# Named renderings (plugin / kernel print format) as regexes; the raw rendering (-R) is
# `key=value` fields, read by KV_RE. A payload none of them fits is malformed.
EXIT_NAMED_RE = re.compile(r"^(?:vcpu (?P<vcpu>\d+) )?reason (?P<reason>.+?) rip (?:0x)?[0-9a-fA-F]+\b")
ENTRY_NAMED_RE = re.compile(r"^vcpu (?P<vcpu>\d+),? rip\b")
PIO_NAMED_RE = re.compile(r"^pio_(?P<dir>read|write) at 0x(?P<addr>[0-9a-fA-F]+) size (?P<size>\d+)")
MMIO_NAMED_RE = re.compile(r"^mmio (?P<dir>unsatisfied-read|read|write) len (?P<size>\d+) gpa 0x(?P<addr>[0-9a-fA-F]+)")
KV_RE = re.compile(r"(\w+)=(\S+)")
MMIO_TYPES: dict[int, str] = {0: "unsatisfied-read", 1: "read", 2: "write"}   # kvm_mmio's raw `type`

# Events counted per vCPU besides exits and entries (MODEL.md §5).
COUNTED = ("kvm_cr", "kvm_pio", "kvm_mmio", "kvm_msr", "kvm_inj_virq", "kvm_hypercall",
           "kvm_page_fault", "kvm_userspace_exit")
KVM_EVENTS = frozenset(("kvm_exit", "kvm_entry", *COUNTED))


INT64, UINT64 = range(-(1 << 63), 1 << 63), range(1 << 64)   # the tables' integer columns


def _int(text: str, base: int = 0, column: range = INT64) -> int:
    """The number `text` prints, if it fits the table column it goes to; else ValueError
    (polars would refuse the whole table over one garbled line)."""
    value = int(text, base)
    if value not in column:
        raise ValueError(f"{text} does not fit a 64-bit column")
    return value


def _none_if_malformed(parse: Callable[..., tuple | None]) -> Callable[..., tuple | None]:
    """`parse`, returning None (a malformed payload) where a field is missing or not a number."""
    @functools.wraps(parse)
    def checked(*args: str) -> tuple | None:
        try:
            return parse(*args)
        except (KeyError, ValueError):
            return None
    return checked


@_none_if_malformed
def parse_exit(payload: str) -> tuple[str, int | None] | None:
    """(canonical reason, vcpu or None) of a kvm_exit payload, None if malformed."""
    m = EXIT_NAMED_RE.match(payload)
    if m:
        reason = from_name(m["reason"])
        return (reason, _int(m["vcpu"], 10) if m["vcpu"] else None) if reason else None
    kv: dict[str, str] = dict(KV_RE.findall(payload))
    reason = from_number(_int(kv["exit_reason"]), _int(kv.get("isa", "1")))
    return reason, _int(kv["vcpu_id"]) if "vcpu_id" in kv else None


@_none_if_malformed
def parse_entry(payload: str) -> tuple[int | None] | None:
    """(vcpu or None,) of a kvm_entry payload, None if malformed."""
    m = ENTRY_NAMED_RE.match(payload)
    if m:
        return (_int(m["vcpu"], 10),)
    kv: dict[str, str] = dict(KV_RE.findall(payload))
    if "vcpu_id" in kv:
        return (_int(kv["vcpu_id"], 10),)
    return None if payload.strip() else (None,)


@_none_if_malformed
def parse_io(event: str, payload: str) -> tuple[int, str, int] | None:
    """(address, direction, size) of a kvm_pio / kvm_mmio payload, None if malformed."""
    m = (PIO_NAMED_RE if event == "kvm_pio" else MMIO_NAMED_RE).match(payload)
    if m:
        return _int(m["addr"], 16, UINT64), str(m["dir"]), _int(m["size"], 10)
    kv: dict[str, str] = dict(KV_RE.findall(payload))
    if event == "kvm_pio":
        return _int(kv["port"], 0, UINT64), "write" if _int(kv["rw"]) else "read", _int(kv["size"])
    return _int(kv["gpa"], 0, UINT64), MMIO_TYPES.get(_int(kv["type"]), kv["type"]), _int(kv["len"])


# ---------------------------------------------------------------- what a file yields
def thread_name(comm: str, pid: int) -> str:
    """A host thread as the trace prints it (`CPU 0/KVM-453724`), the name users pass as
    --vcpu-thread; the pid alone where the rendering printed no task name."""
    return f"{comm}-{pid}" if comm else str(pid)


@dataclass(slots=True)
class ExitRow:
    """One kvm_exit. `vcpu` is None until some event of the thread prints it; `time` (to
    the thread's next kvm_entry, in the file's clock) None while or if it is not timed."""
    pid: int
    vcpu: int | None
    reason: str
    ts: int
    time: int | None = None


@dataclass(slots=True)
class IoRow:
    """One kvm_pio / kvm_mmio access of thread `pid`; `time` is that of the exit it happened
    in, `vcpu` the thread's (None until some event prints it), for --vcpu / --vcpu-thread."""
    pid: int
    kind: str             # "pio" or "mmio"
    address: int
    direction: str
    size: int
    vcpu: int | None = None
    time: int | None = None


@dataclass(slots=True)
class EventRow:
    """One of the other KVM events counted per vCPU (`COUNTED`)."""
    pid: int
    vcpu: int | None
    event: str


@dataclass
class Problems:
    """Lines that went wrong in one way: how many, and the first few as `file:line: why: text`
    (the importer's malformed-lines report). `what` says what became of them, for the warning."""
    what: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, why: str, line: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {why}: {line.strip()[:160]}")


@dataclass
class FileScan:
    """What one file yielded: rows for the tables, and what went wrong."""
    source: str
    events: int = 0              # event lines (any event)
    clock: str | None = None     # "ns" (printed seconds) or "count" (integer clock counts)
    exits: list[ExitRow] = field(default_factory=list)
    io: list[IoRow] = field(default_factory=list)
    counted: list[EventRow] = field(default_factory=list)
    comms: dict[int, str] = field(default_factory=dict)   # pid -> its task name, as first printed
    malformed: Problems = field(default_factory=lambda: Problems("malformed KVM line(s) skipped"))
    # A kvm_entry stamped earlier than the exit it would close (a file not in time order):
    # that exit is counted but never timed, so no time is negative.
    backwards: Problems = field(default_factory=lambda: Problems(
        "kvm_entry line(s) earlier than the kvm_exit they follow: those exits counted, not timed "
        "(is the file in time order?)"))
    unpaired: int = 0            # exits without a following kvm_entry on their thread
    error: str | None = None

    @property
    def problems(self) -> tuple[Problems, Problems]:
        return self.malformed, self.backwards

    def bad(self, lineno: int, line: str, why: str) -> None:
        self.malformed.add(f"{self.source}:{lineno}", why, line)


# ---------------------------------------------------------------- pairing, line by line
class KvmLine(NamedTuple):
    """One KVM event line, as the pairing reads it."""
    lineno: int
    name: str        # the event without subsystem, one of KVM_EVENTS
    pid: int         # the thread (perf's pid/tid: the tid)
    comm: str        # its task name, as printed (`CPU 0/KVM`, `qemu-system-x86`)
    ts: int
    payload: str
    text: str        # the whole line, for the problem reports


@dataclass
class _Pending:
    """An exit waiting for its kvm_entry; io rows seen meanwhile get its time."""
    row: ExitRow
    lineno: int
    io: list[IoRow] = field(default_factory=list)


class _Pairing:
    """Pairs exits with entries per thread while reading one file's KVM lines in order."""

    def __init__(self, scan: FileScan) -> None:
        self.scan = scan
        self.pending: dict[int, _Pending] = {}
        self.vcpu_of: dict[int, int] = {}

    def exit(self, line: KvmLine, vcpu: int | None, reason: str) -> None:
        self._learn(line.pid, vcpu)
        if line.pid in self.pending:
            self.scan.unpaired += 1
        row = ExitRow(line.pid, vcpu, reason, line.ts)
        self.scan.exits.append(row)
        self.pending[line.pid] = _Pending(row, line.lineno)

    def entry(self, line: KvmLine, vcpu: int | None) -> None:
        """Close the thread's pending exit: its time, unless this entry is stamped before it."""
        self._learn(line.pid, vcpu)
        p = self.pending.pop(line.pid, None)
        if p is None:
            return
        if line.ts < p.row.ts:
            return self.scan.backwards.add(f"{self.scan.source}:{line.lineno}",
                                           f"kvm_entry earlier than the kvm_exit it follows (line {p.lineno})", line.text)
        p.row.time = line.ts - p.row.ts
        for r in p.io:
            r.time = p.row.time

    def io(self, line: KvmLine, kind: str, addr: int, direction: str, size: int) -> None:
        """One access. An MMIO read KVM cannot satisfy in the kernel is traced twice in one
        exit: `unsatisfied-read` when it goes to userspace, `read` when the value comes back
        (before the kvm_entry); that is one read (as perf's mmio view counts it), so the
        `read` completes the exit's pending `unsatisfied-read` of its address, not a new row."""
        pending = self.pending.get(line.pid)
        if direction == "read" and pending and pending.io and pending.io[-1].direction == "unsatisfied-read" \
                and (pending.io[-1].kind, pending.io[-1].address) == (kind, addr):
            pending.io[-1].direction = "read"
            return
        row = IoRow(line.pid, kind, addr, direction, size)
        self.scan.io.append(row)
        if pending:
            pending.io.append(row)

    def _learn(self, pid: int, vcpu: int | None) -> None:
        if vcpu is not None:
            self.vcpu_of[pid] = vcpu

    def finish(self) -> None:
        self.scan.unpaired += len(self.pending)
        for rows in (self.scan.exits, self.scan.counted, self.scan.io):
            for r in rows:
                if r.vcpu is None:
                    r.vcpu = self.vcpu_of.get(r.pid)


def _dispatch(pairing: _Pairing, line: KvmLine) -> None:
    scan, name = pairing.scan, line.name
    if not (line.ts in INT64 and line.pid in INT64):
        return scan.bad(line.lineno, line.text, f"{name}: timestamp or pid does not fit a 64-bit column")
    scan.comms.setdefault(line.pid, line.comm)
    if name == "kvm_exit":
        got = parse_exit(line.payload)
        if got is None:
            return scan.bad(line.lineno, line.text, "kvm_exit: unknown rendering or reason, or a number out of range")
        pairing.exit(line, got[1], got[0])
    elif name == "kvm_entry":
        got = parse_entry(line.payload)
        if got is None:
            return scan.bad(line.lineno, line.text, "kvm_entry: unknown rendering or a number out of range")
        pairing.entry(line, got[0])
    if name in COUNTED:
        scan.counted.append(EventRow(line.pid, None, name))
    if name in ("kvm_pio", "kvm_mmio"):
        got = parse_io(name, line.payload)
        if got is None:
            return scan.bad(line.lineno, line.text, f"{name}: unknown rendering or a number out of range")
        pairing.io(line, name[4:], *got)


# ---------------------------------------------------------------- chunks and files
def _kvm_name(event: str) -> str | None:
    """What kvm-stat reads of an event name: the name without subsystem if it is a KVM
    event it reads (`kvm:kvm_exit` -> `kvm_exit`), else None."""
    name = event.rsplit(":", 1)[-1]
    return name if name in KVM_EVENTS else None


def _count_events(scan: FileScan, p: Prefixes) -> None:
    """Every event line counts; how the first one prints its timestamp says the file's clock."""
    rows = np.flatnonzero(p.status == ls.EVENT)
    if scan.clock is None and (len(rows) or p.parsed):
        first = min([*rows[:1].tolist(), *p.parsed])
        tl = p.parsed.get(first)
        scan.clock = tl.ts_unit if tl else "ns" if p.unit[first] == ls.NS_UNIT else "count"
    scan.events += len(rows) + len(p.parsed)


def _kvm_lines(p: Prefixes, events: EventIndex[str | None], first_line: int) -> list[KvmLine]:
    """The chunk's KVM event lines, in order: those the scanner read, and those parse_line did."""
    index = events.of_lines(p)
    names = events.names
    rows = np.flatnonzero(np.array([n is not None for n in names] + [False])[index]).tolist()
    spans = p.spans[rows].tolist()
    lines = [KvmLine(first_line + row, names[e], pid, p.data[s[0]:s[1]].decode("utf-8", "replace").strip(), ts,
                     p.data[s[4]:s[5]].decode(), p.text(row))
             for row, e, pid, ts, s in zip(rows, index[rows].tolist(), p.pid[rows].tolist(), p.ts[rows].tolist(), spans)]
    parsed = ((row, tl, _kvm_name(tl.event)) for row, tl in p.parsed.items())
    slow = [KvmLine(first_line + row, name, tl.pid, tl.comm, tl.ts, tl.payload, p.text(row))
            for row, tl, name in parsed if name]
    return sorted(lines + slow) if slow else lines


def scan_chunks(chunks: Iterable[bytes], source: str) -> FileScan:
    """Read one trace, as chunks of whole lines, into a FileScan (the per-file step;
    `pipeline.analysis.kvm_stat.merge` aggregates)."""
    scan = FileScan(source)
    pairing, events = _Pairing(scan), EventIndex(_kvm_name)
    first_line = 1
    for data in chunks:
        p = scan_prefixes(data)
        _count_events(scan, p)
        for line in _kvm_lines(p, events, first_line):
            _dispatch(pairing, line)
        first_line += p.lines
    pairing.finish()
    return scan


def scan_file(path: Path, strict: bool = False) -> FileScan:
    """scan_chunks on a file; a file that cannot be read or holds no exits gets `error`, and
    so, if `strict`, does one with a malformed line or an out-of-order pair (its first one)."""
    try:
        scan = scan_chunks(read_chunks(path, CHUNK_BYTES), str(path))
    except TraceFileError as e:
        return FileScan(str(path), error=str(e))
    found = [e for p in scan.problems for e in p.examples]
    if scan.events == 0:
        scan.error = f"{path}: no trace event lines (expected ftrace, trace-cmd report or perf script text)"
    elif not scan.exits:
        scan.error = f"{path}: no kvm_exit events in {scan.events} event lines (not a host-side KVM trace?)"
    elif strict and found:
        scan.error = f"{found[0]} (--strict)"
    return scan
