"""`kvm-stat`: summarise host-side KVM exit traces, like `perf kvm stat report` and xenalyze.

Input: text traces of the host (ftrace, `trace-cmd report` with or without -N/-R, perf
script) holding `kvm_exit` and `kvm_entry`. An exit's handling time is the time from the
`kvm_exit` to the next `kvm_entry` of the same vCPU thread (exit and entry both run in the
vCPU's thread, so pairing by thread also works for renderings that omit the vcpu id;
the vcpu id, where any event of the thread prints it, labels the rows).

Tables (polars), each a `df`-style frame whose columns are listed where it is built:
  by_vcpu   one row per (vcpu, pid, reason): count, share, total/mean/min/max/p50/p95 time
  by_reason one row per reason over all vCPUs (the `perf kvm stat report` view)
  io        one row per (kind, address, direction, size) of kvm_pio / kvm_mmio, with the
            handling time of the exit each access happened in (the xenalyze view)
  events    one row per (vcpu, pid, event) for the other KVM events present

Reasons are normalised to one set of names across renderings, VMX and SVM (tables below).
Malformed KVM lines are skipped, counted and the first few reported as file:line. So is a
kvm_entry stamped before the exit it would close (a file not in time order): that exit is
counted but not timed, so no time is negative. Both are warnings; --strict makes them errors.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import polars as pl
from rich.table import Table

from pipeline.atomic import write_atomic
from pipeline.tracefile.textlines import TraceFileError, open_lines, parse_line

# ---------------------------------------------------------------- exit reason names
# kvm_exit prints its reason by name from the kernel's tables (`HLT`, `EPT_VIOLATION`;
# SVM `hlt`, `npf`, `PF excp`), by name from trace-cmd's kvm plugin (VMX alike, SVM
# `EXIT_HLT`, `EXIT_NPF`), or as a number beside the ISA (-R: `exit_reason=12 … isa=1`).
# Canonical names: VMX as in the kernel's VMX_EXIT_REASONS; SVM as the SVM_EXIT_* macros
# without prefix (`NPF`, `IOIO`, `VMMCALL`, `EXCP_PF`). Instruction exits both ISAs have
# share a name (`HLT`, `CPUID`, `RDTSC`, …).
ISA_VMX, ISA_SVM = 1, 2

# VMX basic exit reason (low 16 bits of exit_reason) -> name, as in VMX_EXIT_REASONS.
VMX = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL",
    4: "SIPI_SIGNAL", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH", 10: "CPUID",
    12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL",
    19: "VMCLEAR", 20: "VMLAUNCH", 21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD",
    24: "VMRESUME", 25: "VMWRITE", 26: "VMOFF", 27: "VMON", 28: "CR_ACCESS", 29: "DR_ACCESS",
    30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE", 33: "INVALID_STATE",
    34: "MSR_LOAD_FAIL", 36: "MWAIT_INSTRUCTION", 37: "MONITOR_TRAP_FLAG",
    39: "MONITOR_INSTRUCTION", 40: "PAUSE_INSTRUCTION", 41: "MCE_DURING_VMENTRY",
    43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS", 45: "EOI_INDUCED", 46: "GDTR_IDTR",
    47: "LDTR_TR", 48: "EPT_VIOLATION", 49: "EPT_MISCONFIG", 50: "INVEPT", 51: "RDTSCP",
    52: "PREEMPTION_TIMER", 53: "INVVPID", 54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE",
    57: "RDRAND", 58: "INVPCID", 59: "VMFUNC", 60: "ENCLS", 61: "RDSEED", 62: "PML_FULL",
    63: "XSAVES", 64: "XRSTORS", 67: "UMWAIT", 68: "TPAUSE", 74: "BUS_LOCK", 75: "NOTIFY",
}
# Older kernels and trace-cmd's plugin name reason 7 differently.
VMX_ALIASES = {"PENDING_INTERRUPT": "INTERRUPT_WINDOW"}
# Kernel print flags that may follow a VMX reason (`EPT_VIOLATION FAILED_VMENTRY`).
VMX_FLAGS = ("FAILED_VMENTRY", "SGX_ENCLAVE_MODE")

# SVM exit code -> (canonical name, the kernel's SVM_EXIT_REASONS string).
# trace-cmd's plugin prints "EXIT_" + canonical.
_EXCP = {0: "DE", 1: "DB", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM", 8: "DF", 10: "TS",
         11: "NP", 12: "SS", 13: "GP", 14: "PF", 16: "MF", 17: "AC", 18: "MC", 19: "XF"}
SVM: dict[int, tuple[str, str]] = {
    **{c: (f"READ_CR{c}", f"read_cr{c}") for c in (0, 2, 3, 4, 8)},
    **{0x10 + c: (f"WRITE_CR{c}", f"write_cr{c}") for c in (0, 2, 3, 4, 8)},
    **{0x20 + d: (f"READ_DR{d}", f"read_dr{d}") for d in range(8)},
    **{0x30 + d: (f"WRITE_DR{d}", f"write_dr{d}") for d in range(8)},
    **{0x40 + v: (f"EXCP_{n}", f"{n} excp") for v, n in _EXCP.items()},
    0x60: ("INTR", "interrupt"), 0x61: ("NMI", "nmi"), 0x62: ("SMI", "smi"),
    0x63: ("INIT", "init"), 0x64: ("VINTR", "vintr"), 0x65: ("CR0_SEL_WRITE", "cr0_sel_write"),
    0x66: ("IDTR_READ", "read_idtr"), 0x67: ("GDTR_READ", "read_gdtr"),
    0x68: ("LDTR_READ", "read_ldtr"), 0x69: ("TR_READ", "read_rt"),
    0x6a: ("IDTR_WRITE", "write_idtr"), 0x6b: ("GDTR_WRITE", "write_gdtr"),
    0x6c: ("LDTR_WRITE", "write_ldtr"), 0x6d: ("TR_WRITE", "write_rt"),
    0x6e: ("RDTSC", "rdtsc"), 0x6f: ("RDPMC", "rdpmc"), 0x70: ("PUSHF", "pushf"),
    0x71: ("POPF", "popf"), 0x72: ("CPUID", "cpuid"), 0x73: ("RSM", "rsm"),
    0x74: ("IRET", "iret"), 0x75: ("SWINT", "swint"), 0x76: ("INVD", "invd"),
    0x77: ("PAUSE", "pause"), 0x78: ("HLT", "hlt"), 0x79: ("INVLPG", "invlpg"),
    0x7a: ("INVLPGA", "invlpga"), 0x7b: ("IOIO", "io"), 0x7c: ("MSR", "msr"),
    0x7d: ("TASK_SWITCH", "task_switch"), 0x7e: ("FERR_FREEZE", "ferr_freeze"),
    0x7f: ("SHUTDOWN", "shutdown"), 0x80: ("VMRUN", "vmrun"), 0x81: ("VMMCALL", "hypercall"),
    0x82: ("VMLOAD", "vmload"), 0x83: ("VMSAVE", "vmsave"), 0x84: ("STGI", "stgi"),
    0x85: ("CLGI", "clgi"), 0x86: ("SKINIT", "skinit"), 0x87: ("RDTSCP", "rdtscp"),
    0x88: ("ICEBP", "icebp"), 0x89: ("WBINVD", "wbinvd"), 0x8a: ("MONITOR", "monitor"),
    0x8b: ("MWAIT", "mwait"), 0x8c: ("MWAIT_COND", "mwait_cond"), 0x8d: ("XSETBV", "xsetbv"),
    0x8e: ("RDPRU", "rdpru"), 0x8f: ("EFER_WRITE_TRAP", "write_efer_trap"),
    0x90: ("CR0_WRITE_TRAP", "write_cr0_trap"), 0x94: ("CR4_WRITE_TRAP", "write_cr4_trap"),
    0x98: ("CR8_WRITE_TRAP", "write_cr8_trap"), 0xa2: ("INVPCID", "invpcid"),
    0xa5: ("BUS_LOCK", "buslock"), 0xa6: ("IDLE_HLT", "idle-halt"), 0x400: ("NPF", "npf"),
    0x401: ("AVIC_INCOMPLETE_IPI", "avic_incomplete_ipi"),
    0x402: ("AVIC_UNACCELERATED_ACCESS", "avic_unaccelerated_access"),
    0x403: ("VMGEXIT", "vmgexit"), 0xFFFFFFFF: ("ERR", "invalid_guest_state"),
}


def _by_printed_name() -> dict[str, tuple[str, int]]:
    """Every printed name (kernel or plugin, VMX or SVM) -> (canonical, isa)."""
    names: dict[str, tuple[str, int]] = {n: (n, ISA_VMX) for n in VMX.values()}
    names.update({alias: (n, ISA_VMX) for alias, n in VMX_ALIASES.items()})
    for canonical, kernel in SVM.values():
        names[kernel] = (canonical, ISA_SVM)
        names[f"EXIT_{canonical}"] = (canonical, ISA_SVM)
    return names


BY_NAME = _by_printed_name()


def from_number(code: int, isa: int) -> str:
    """Canonical name of a numeric exit reason; unknown codes keep their number."""
    if isa == ISA_VMX:
        basic = code & 0xFFFF
        return VMX.get(basic, f"VMX_{basic}")
    if isa == ISA_SVM:
        code &= 0xFFFFFFFF   # EXIT_ERR is -1
        return SVM[code][0] if code in SVM else f"SVM_{code:#x}"
    return f"ISA{isa}_{code}"


def from_name(printed: str) -> str | None:
    """Canonical name of a printed reason, None if it is not one.

    Handles VMX flags after the name, the plugin's `UNKNOWN (n)` and the kernel's hex
    fallback for values missing from its table (then VMX is assumed: it has no ISA)."""
    words = [w for w in printed.split() if w not in VMX_FLAGS]
    text = " ".join(words)
    if text in BY_NAME:
        return BY_NAME[text][0]
    if text.startswith("UNKNOWN (") and text.endswith(")") and text[9:-1].isdigit():
        return from_number(int(text[9:-1]), ISA_VMX)
    if text.startswith("0x"):
        try:
            return from_number(int(text, 16), ISA_VMX)
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------- payloads, per rendering
# Named renderings (plugin / kernel print format) as regexes; the raw rendering (-R) is
# `key=value` fields, read by KV_RE. A payload none of them fits is malformed.
EXIT_NAMED_RE = re.compile(r"^(?:vcpu (?P<vcpu>\d+) )?reason (?P<reason>.+?) rip (?:0x)?[0-9a-fA-F]+\b")
ENTRY_NAMED_RE = re.compile(r"^vcpu (?P<vcpu>\d+),? rip\b")
PIO_NAMED_RE = re.compile(r"^pio_(?P<dir>read|write) at 0x(?P<addr>[0-9a-fA-F]+) size (?P<size>\d+)")
MMIO_NAMED_RE = re.compile(r"^mmio (?P<dir>unsatisfied-read|read|write) len (?P<size>\d+) gpa 0x(?P<addr>[0-9a-fA-F]+)")
KV_RE = re.compile(r"(\w+)=(\S+)")
MMIO_TYPES = {0: "unsatisfied-read", 1: "read", 2: "write"}   # kvm_mmio's raw `type`

# Events counted per vCPU besides exits and entries (MODEL.md §5).
COUNTED = ("kvm_cr", "kvm_pio", "kvm_mmio", "kvm_msr", "kvm_inj_virq", "kvm_hypercall",
           "kvm_page_fault", "kvm_userspace_exit")
KVM_EVENTS = frozenset(("kvm_exit", "kvm_entry", *COUNTED))
MAX_EXAMPLES = 5


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
    kv = dict(KV_RE.findall(payload))
    reason = from_number(_int(kv["exit_reason"]), _int(kv.get("isa", "1")))
    return reason, _int(kv["vcpu_id"]) if "vcpu_id" in kv else None


@_none_if_malformed
def parse_entry(payload: str) -> tuple[int | None] | None:
    """(vcpu or None,) of a kvm_entry payload, None if malformed."""
    m = ENTRY_NAMED_RE.match(payload)
    if m:
        return (_int(m["vcpu"], 10),)
    kv = dict(KV_RE.findall(payload))
    if "vcpu_id" in kv:
        return (_int(kv["vcpu_id"], 10),)
    return None if payload.strip() else (None,)


@_none_if_malformed
def parse_io(event: str, payload: str) -> tuple[int, str, int] | None:
    """(address, direction, size) of a kvm_pio / kvm_mmio payload, None if malformed."""
    m = (PIO_NAMED_RE if event == "kvm_pio" else MMIO_NAMED_RE).match(payload)
    if m:
        return _int(m["addr"], 16, UINT64), m["dir"], _int(m["size"], 10)
    kv = dict(KV_RE.findall(payload))
    if event == "kvm_pio":
        return _int(kv["port"], 0, UINT64), "write" if _int(kv["rw"]) else "read", _int(kv["size"])
    return _int(kv["gpa"], 0, UINT64), MMIO_TYPES.get(_int(kv["type"]), kv["type"]), _int(kv["len"])


# ---------------------------------------------------------------- one file
@dataclass
class _Pending:
    """An exit waiting for its kvm_entry; io rows seen meanwhile get its time."""
    row: dict
    lineno: int
    io: list[dict] = field(default_factory=list)


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
    exits: list[dict] = field(default_factory=list)
    io: list[dict] = field(default_factory=list)
    counted: list[dict] = field(default_factory=list)
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


class _Scanner:
    """Pairs exits with entries per thread while reading one file's lines."""

    def __init__(self, scan: FileScan) -> None:
        self.scan = scan
        self.pending: dict[int, _Pending] = {}
        self.vcpu_of: dict[int, int] = {}

    def exit(self, rec, lineno: int, vcpu: int | None, reason: str) -> None:
        self._learn(rec.pid, vcpu)
        if rec.pid in self.pending:
            self.scan.unpaired += 1
        row = {"pid": rec.pid, "vcpu": vcpu, "reason": reason, "ts": rec.ts, "time": None}
        self.scan.exits.append(row)
        self.pending[rec.pid] = _Pending(row, lineno)

    def entry(self, rec, lineno: int, line: str, vcpu: int | None) -> None:
        """Close the thread's pending exit: its time, unless this entry is stamped before it."""
        self._learn(rec.pid, vcpu)
        p = self.pending.pop(rec.pid, None)
        if p is None:
            return
        if rec.ts < p.row["ts"]:
            return self.scan.backwards.add(f"{self.scan.source}:{lineno}",
                                           f"kvm_entry earlier than the kvm_exit it follows (line {p.lineno})", line)
        p.row["time"] = rec.ts - p.row["ts"]
        for r in p.io:
            r["time"] = p.row["time"]

    def io(self, rec, kind: str, addr: int, direction: str, size: int) -> None:
        row = {"kind": kind, "address": addr, "direction": direction, "size": size, "time": None}
        self.scan.io.append(row)
        if rec.pid in self.pending:
            self.pending[rec.pid].io.append(row)

    def _learn(self, pid: int, vcpu: int | None) -> None:
        if vcpu is not None:
            self.vcpu_of[pid] = vcpu

    def finish(self) -> None:
        self.scan.unpaired += len(self.pending)
        for rows in (self.scan.exits, self.scan.counted):
            for r in rows:
                if r["vcpu"] is None:
                    r["vcpu"] = self.vcpu_of.get(r["pid"])


def scan_lines(lines: Iterable[str], source: str) -> FileScan:
    """Read one trace's lines into a FileScan (the per-shard step; `merge` aggregates)."""
    scan = FileScan(source)
    sc = _Scanner(scan)
    for lineno, line in enumerate(lines, 1):
        rec = parse_line(line)
        if rec is None:
            continue
        scan.events += 1
        if scan.clock is None:
            scan.clock = rec.ts_unit
        _dispatch(sc, rec, lineno, line)
    sc.finish()
    return scan


def _dispatch(sc: _Scanner, rec, lineno: int, line: str) -> None:
    name = rec.name
    if name in KVM_EVENTS and not (rec.ts in INT64 and rec.pid in INT64):
        return sc.scan.bad(lineno, line, f"{name}: timestamp or pid does not fit a 64-bit column")
    if name == "kvm_exit":
        got = parse_exit(rec.payload)
        if got is None:
            return sc.scan.bad(lineno, line, "kvm_exit: unknown rendering or reason, or a number out of range")
        sc.exit(rec, lineno, got[1], got[0])
    elif name == "kvm_entry":
        got = parse_entry(rec.payload)
        if got is None:
            return sc.scan.bad(lineno, line, "kvm_entry: unknown rendering or a number out of range")
        sc.entry(rec, lineno, line, got[0])
    if name in COUNTED:
        sc.scan.counted.append({"pid": rec.pid, "vcpu": None, "event": name})
    if name in ("kvm_pio", "kvm_mmio"):
        got = parse_io(name, rec.payload)
        if got is None:
            return sc.scan.bad(lineno, line, f"{name}: unknown rendering or a number out of range")
        sc.io(rec, name[4:], *got)


def scan_file(path: Path, strict: bool = False) -> FileScan:
    """scan_lines on a file; a file that cannot be read or holds no exits gets `error`, and
    so, if `strict`, does one with a malformed line or an out-of-order pair (its first one)."""
    try:
        scan = scan_lines(open_lines(path), str(path))
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


# ---------------------------------------------------------------- merge and aggregate
@dataclass
class Stats:
    """The summary of one or more files; frames are empty when nothing was read."""
    by_vcpu: pl.DataFrame
    by_reason: pl.DataFrame
    io: pl.DataFrame
    events: pl.DataFrame
    files: list[FileScan]
    time_unit: str               # "ns" or "cycles"


def time_unit(clock: str | None, tsc_hz: float | None) -> str:
    """Seconds and converted counts are reported in ns; counts without tsc_hz in cycles."""
    return "cycles" if clock == "count" and not tsc_hz else "ns"


def _frame(scan: FileScan, rows: list[dict], tsc_hz: float | None, schema: dict) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=schema, orient="row").with_columns(file=pl.lit(Path(scan.source).name))
    if "time" in df.columns:
        scale = 1e9 / tsc_hz if scan.clock == "count" and tsc_hz else 1.0
        df = df.with_columns(pl.col("time").cast(pl.Float64) * scale)
    return df


def _frames(scans: list[FileScan], rows: str, schema: dict, tsc_hz: float | None) -> pl.DataFrame:
    """One table of every scan's `rows` (an empty one with the schema if there are none)."""
    return pl.concat([_frame(s, getattr(s, rows), tsc_hz, schema) for s in scans]
                     or [_frame(FileScan(""), [], None, schema)])


_EXIT_SCHEMA = {"pid": pl.Int64, "vcpu": pl.Int64, "reason": pl.String, "ts": pl.Int64, "time": pl.Int64}
_IO_SCHEMA = {"kind": pl.String, "address": pl.UInt64, "direction": pl.String, "size": pl.Int64, "time": pl.Int64}
_EVENT_SCHEMA = {"pid": pl.Int64, "vcpu": pl.Int64, "event": pl.String}


def _time_columns(unit: str) -> list[pl.Expr]:
    """The statistics of the timed exits; all null (not a total of 0) where none is timed."""
    t = pl.col("time")
    return [t.count().alias("timed"), pl.when(t.count() > 0).then(t.sum()).alias(f"total_{unit}"),
            t.mean().alias(f"mean_{unit}"), t.min().alias(f"min_{unit}"), t.max().alias(f"max_{unit}"),
            t.quantile(0.5, "nearest").alias(f"p50_{unit}"), t.quantile(0.95, "nearest").alias(f"p95_{unit}")]


def _summary(df: pl.DataFrame, keys: list[str], unit: str, extra: list[pl.Expr] = ()) -> pl.DataFrame:
    """Group df by keys: count, share of all rows, the time statistics, files, time_unit.
    Columns: *keys, count, share, timed (exits with a time), total_/mean_/min_/max_/p50_/
    p95_<unit>, files, time_unit."""
    total = max(len(df), 1)
    out = df.group_by(keys).agg(pl.len().alias("count"), *_time_columns(unit), *extra,
                                pl.col("file").unique().sort().str.join(", ").alias("files"))
    out = out.with_columns((pl.col("count") / total).alias("share"), pl.lit(unit).alias("time_unit"))
    order = [*keys, "count", "share", *[c for c in out.columns if c not in (*keys, "count", "share")]]
    return out.select(order).sort(["count", *keys], descending=[True, *[False] * len(keys)])


def merge(scans: list[FileScan], tsc_hz: float | None) -> Stats:
    """Aggregate the files that were read. A file whose time unit differs from the first
    read file's (seconds vs raw counts without tsc_hz) cannot be added and gets an error."""
    good = [s for s in scans if s.error is None]
    unit = time_unit(good[0].clock, tsc_hz) if good else "ns"
    for s in good:
        if time_unit(s.clock, tsc_hz) != unit:
            s.error = (f"{s.source}: timestamps are {'raw clock counts' if s.clock == 'count' else 'seconds'}, "
                       f"unlike the other files; pass --tsc-hz to combine them")
    good = [s for s in good if s.error is None]
    exits, io = _frames(good, "exits", _EXIT_SCHEMA, tsc_hz), _frames(good, "io", _IO_SCHEMA, tsc_hz)
    events = _frames(good, "counted", _EVENT_SCHEMA, tsc_hz)
    return Stats(by_vcpu=_summary(exits, ["vcpu", "pid", "reason"], unit),
                 by_reason=_summary(exits, ["reason"], unit),
                 io=_io_summary(io, unit),
                 events=events.group_by(["vcpu", "pid", "event"]).agg(pl.len().alias("count"))
                 .sort(["vcpu", "pid", "count"], descending=[False, False, True]),
                 files=scans, time_unit=unit)


def _io_summary(io: pl.DataFrame, unit: str) -> pl.DataFrame:
    """Per (kind, address, direction, size): count, share within its kind, time of the
    exits the accesses happened in; address_hex for reading."""
    out = _summary(io, ["kind", "address", "direction", "size"], unit)
    per_kind = pl.col("count").sum().over("kind")
    return out.with_columns((pl.col("count") / per_kind).alias("share"),
                            pl.col("address").map_elements(hex, return_dtype=pl.String).alias("address_hex"))


def summarise(paths: list[Path], tsc_hz: float | None, strict: bool = False) -> Stats:
    """Scan each file (errors are recorded per file, never raised) and merge them."""
    return merge([scan_file(Path(p), strict) for p in paths], tsc_hz)


def stats_paths(out: Path) -> dict[str, Path]:
    """STATS.parquet (per vcpu and reason) and its siblings; `out` is the file or a folder."""
    main = out if out.suffix == ".parquet" else out / "STATS.parquet"
    return {"by_vcpu": main, "by_reason": main.with_suffix(".reasons.parquet"),
            "io": main.with_suffix(".io.parquet"), "events": main.with_suffix(".events.parquet")}


def write_stats(stats: Stats, out: Path) -> list[Path]:
    """Write every table atomically; the io/events files only when they have rows."""
    written = []
    for name, path in stats_paths(out).items():
        frame = getattr(stats, name)
        if name in ("io", "events") and frame.is_empty():
            continue
        write_atomic(path, frame.write_parquet)
        written.append(path)
    return written


# ---------------------------------------------------------------- terminal report and command
_DISPLAY = {"ns": (1e3, "µs"), "cycles": (1.0, "cycles")}   # unit -> (divisor, label)


def reason_table(stats: Stats) -> Table:
    """Per reason over all vCPUs: count, %, and the handling-time statistics."""
    unit = stats.time_unit
    div, label = _DISPLAY[unit]
    table = Table(title=f"KVM exits by reason  ·  time = kvm_exit → next kvm_entry of the vCPU thread, {label}",
                  caption="cycles: raw clock counts (pass --tsc-hz to convert)" if unit == "cycles" else None)
    for name in ("reason", "count", "%", f"total ({label})", f"mean ({label})", f"min ({label})",
                 f"max ({label})", f"p50 ({label})", f"p95 ({label})", "file(s)"):
        table.add_column(name, justify="left" if name in ("reason", "file(s)") else "right")
    fmt = lambda v: "—" if v is None else f"{v / div:.4g}"
    for r in stats.by_reason.iter_rows(named=True):
        table.add_row(r["reason"], str(r["count"]), f"{100 * r['share']:.2f}",
                      *[fmt(r[f"{k}_{unit}"]) for k in ("total", "mean", "min", "max", "p50", "p95")],
                      r["files"])
    return table


def io_table(stats: Stats) -> Table:
    """Per port (kvm_pio) / MMIO address (kvm_mmio): count and the enclosing exits' time."""
    unit = stats.time_unit
    div, label = _DISPLAY[unit]
    table = Table(title=f"I/O accesses by port / MMIO address  ·  time of the exit they occurred in, {label}")
    for name in ("kind", "address", "access", "size", "count", "%", f"mean ({label})", f"p95 ({label})"):
        table.add_column(name, justify="left" if name in ("kind", "address", "access") else "right")
    fmt = lambda v: "—" if v is None else f"{v / div:.4g}"
    for r in stats.io.iter_rows(named=True):
        table.add_row(r["kind"], r["address_hex"], r["direction"], str(r["size"]), str(r["count"]),
                      f"{100 * r['share']:.1f}", fmt(r[f"mean_{unit}"]), fmt(r[f"p95_{unit}"]))
    return table


def _report_files(stats: Stats, console: Any) -> None:
    for s in stats.files:
        if s.error:
            _error(console, s.error)
            continue
        for p in (p for p in s.problems if p.count):
            console.print(f"[yellow]warning:[/yellow] {s.source}: {p.count} {p.what}", highlight=False, soft_wrap=True)
            for e in p.examples:
                console.print(f"  {e}", highlight=False, soft_wrap=True, markup=False)
        if s.unpaired:
            console.print(f"{s.source}: {len(s.exits)} exits, {s.unpaired} without a following kvm_entry (untimed)",
                          highlight=False, soft_wrap=True)


def kvm_stat_command(files: list[Path], out: Path | None, tsc_hz: float | None, console: Any,
                     strict: bool = False) -> int:
    """Summarise FILES, print the per-reason (and I/O) tables, write STATS.parquet under OUT.

    Malformed lines and out-of-order exit/entry pairs are warnings (as in `pipeline import`);
    `strict` makes either an error for its file. Exit code: 0 all files summarised, 1 some
    files failed but others were summarised, 2 nothing could be read, a bad --tsc-hz, or the
    tables could not be written."""
    if tsc_hz is not None and not (math.isfinite(tsc_hz) and tsc_hz > 0):
        return _error(console, f"--tsc-hz {tsc_hz}: must be the TSC frequency in Hz, a positive number")
    stats = summarise(files, tsc_hz, strict)
    _report_files(stats, console)
    read = [s for s in stats.files if s.error is None]
    if not read:
        return 2
    console.print(reason_table(stats))
    if not stats.io.is_empty():
        console.print(io_table(stats))
    if out is not None:
        try:
            written = write_stats(stats, out)
        except OSError as e:
            return _error(console, f"--out {out}: the tables cannot be written ({e.filename}: {e.strerror or e})")
        console.print(f"wrote {', '.join(map(str, written))}", highlight=False, soft_wrap=True)
    return 1 if len(read) < len(stats.files) else 0


def _error(console: Any, line: str) -> int:
    console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
    return 2
