"""`pipeline import`: guest-side text recordings -> one trace-format-v1 Parquet file; and the
host-side reader of `kvm-stat` (`kvm_exits.py`: KVM exits and entries paired per vCPU thread,
reason names in `exit_reasons.py`), which reads files the same way (`prefixes.py`).

Formats (the registry `FORMATS`, name -> `formats.Format`; detection tries them in order):
perf script, ftrace text (atrace too), trace-cmd report (default, -N, -R). A format is data:
a detection test and one payload regex per event (`formats.py` documents the contract);
the mapping to guest events is shared (`mapping.py`, rules in its docstring), and so is the
working-set estimate (`working_set.py`). Files are opened only through `pipeline.tracefile.textlines`
and read once, in chunks of whole lines (`CHUNK_BYTES`) parsed by `chunk.ChunkParser`
(compiled, `linescan.py`). Reading counts what the report lists, learns the tasks (pid ->
tgid, kernel threads: a switch-in may come before the line that tells its process) and the
time span, the recording-wide evidence the rules need (`facts.Facts`: see `plan.py`) and each
idle entry's length (`facts.IdleWakes`), and spools the fields of the lines the mapping reads
(`chunk.SPOOLED`, 34 bytes a line) to a temporary file; then each spooled chunk is mapped
(`mapping.py`, with the timer armings of `timers.py` and the MMIO of the device rules,
`devices.py` and configs/devices/*.toml) and written to the Parquet file as row groups
(`format.TraceWriter`). Memory is bounded by a chunk and a row group,
whatever the size of the input; the metadata is written last.

The first pass's chunks come from a `ChunkSource`: read here in order, or (`split.py`,
`--split`) parsed in byte ranges on Dask and renumbered here; `batch.py` (`--out-dir`) runs
whole imports, one recording each, as Dask tasks.

Timestamps printed as seconds become ns; integer counts of the trace clock are taken as ns
(metadata `source.timestamps` = "counts" says so). t_ns is relative to the first event.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from pipeline.atomic import write_atomic
from pipeline.config.devices import load_devices
from pipeline.config.errors import ConfigError
from pipeline.tracefile.importers import ftrace, perf, tracecmd
from pipeline.tracefile.importers import chunk as ck
from pipeline.tracefile.importers.devices import device_rules
from pipeline.tracefile.importers.facts import Facts, IdleWakes
from pipeline.tracefile.importers.formats import Format, read_head
from pipeline.tracefile.importers.linescan import COUNT_UNIT
from pipeline.tracefile.importers.mapping import GuestMapper, Tasks
from pipeline.tracefile.importers.plan import Options, make_plan
from pipeline.tracefile.importers.timers import TimerArmings
from pipeline.tracefile.importers.working_set import WorkingSet
from pipeline.tracefile.format import TraceMeta, TraceWriter
from pipeline.tracefile.textlines import TraceFileError, open_lines, read_chunks
from replay.mode import Guest

FORMATS: dict[str, Format] = {f.name: f for f in (perf.FORMAT, ftrace.FORMAT, *tracecmd.FORMATS)}
MAX_EXAMPLES = 5
CHUNK_BYTES = 4 << 20           # text read, parsed and mapped at a time


class ImportFailed(Exception):
    """An input that cannot be imported; str() is one line (naming file:line where known)."""


@dataclass
class ImportReport:
    """What an import wrote and what it could not use."""
    out: Path
    formats: dict[str, str] = field(default_factory=dict)     # file -> format detected/given
    kinds: Counter[str] = field(default_factory=Counter)       # rows written per kind
    unmapped: Counter[str] = field(default_factory=Counter)    # event name -> lines not mapped
    consumed: Counter[str] = field(default_factory=Counter)    # events read for state only
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)  # first 5, "file:line: problem"
    cpus: tuple[int, ...] = ()
    switches: int = 0
    processes: int = 0
    timestamps: str = "ns"
    notes: list[str] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=dict)         # estimate rule -> rows it wrote

    @property
    def rows(self) -> int:
        return sum(self.kinds.values())


def detect(path: Path) -> Format:
    """The format of a text trace, from its first lines; ImportFailed if none fits."""
    head = read_head(open_lines(path))
    if not head.events:
        raise ImportFailed(f"{path}: no trace events found (expected perf script, ftrace or trace-cmd report text)")
    for fmt in FORMATS.values():
        if fmt.detect(head):
            return fmt
    raise ImportFailed(f"{path}: format not recognised")   # pragma: no cover - trace-cmd matches all


# Where the first pass gets its chunks: (the parser of the chunk's file, the chunk ordered
# by it, the input bytes behind it), in file order, the files' parsers sharing `names`.
ChunkSource = Callable[[list[Path], list[Format], ck.Names], Iterator[tuple[ck.ChunkParser, ck.Chunk, int]]]


def read_chunks_in_order(paths: list[Path], fmts: list[Format], names: ck.Names
                         ) -> Iterator[tuple[ck.ChunkParser, ck.Chunk, int]]:
    """The default ChunkSource: each file read and parsed here, chunk by chunk."""
    clock: dict[int, int] = {}
    for path, fmt in zip(paths, fmts):
        yield from _file_chunks(ck.ChunkParser(fmt, str(path), clock, names), path)


def _file_chunks(parser: ck.ChunkParser, path: Path) -> Iterator[tuple[ck.ChunkParser, ck.Chunk, int]]:
    told = [0]     # read_chunks tells the bytes of a piece before yielding it

    def tell(n: int) -> None:
        told[0] += n

    for data in read_chunks(path, CHUNK_BYTES, tell):
        yield parser, parser.parse(data), told[0]
        told[0] = 0


@dataclass
class _Reading:
    """What reading the files learns before any row can be written."""
    tasks: Tasks = field(default_factory=Tasks)
    t0: int | None = None
    t1: int | None = None
    units: set[int] = field(default_factory=set)
    no_cpu: int = 0
    sizes: list[int] = field(default_factory=list)   # input bytes behind each spooled chunk
    names: ck.Names = field(default_factory=ck.Names)
    facts: Facts = field(default_factory=Facts)

    def see(self, chunk: ck.Chunk) -> None:
        valid = chunk.event_lines()
        if valid.any():
            ts, cpu = chunk.ts[valid], chunk.cpu[valid]
            self.t0 = int(ts.min()) if self.t0 is None else min(self.t0, int(ts.min()))
            self.t1 = int(ts.max()) if self.t1 is None else max(self.t1, int(ts.max()))
            self.units.update(np.unique(chunk.unit[valid]).tolist())
            self.no_cpu += int((cpu < 0).sum())
        self.tasks.learn(chunk)
        self.facts.learn(chunk, self.names)


def _read(chunks: Iterator[tuple[ck.ChunkParser, ck.Chunk, int]], reading: _Reading, strict: bool,
          report: ImportReport, spool: BinaryIO, progress) -> None:
    """The first pass: what `reading` learns, the report's counts, the spool."""
    wakes = IdleWakes(spool)
    for parser, chunk, size in chunks:
        if progress is not None:
            progress(size)
        if strict and chunk.problems:
            raise ImportFailed(chunk.problems[0][1])
        _tally(parser, chunk, report)
        reading.see(chunk)
        wakes.resolve(chunk, reading.names.irqs)
        lines = chunk.spooled()
        np.save(spool, lines)
        wakes.spooled(chunk, spool.tell() - lines.nbytes)
        reading.sizes.append(size)
    wakes.finish()
    if len(reading.units) > 1:
        raise ImportFailed("files mix second timestamps and clock counts; import them separately")
    report.timestamps = "counts" if reading.units == {COUNT_UNIT} else "ns"
    if reading.no_cpu:
        report.notes.append(f"{reading.no_cpu} event lines had no CPU column: put on cpu 0 "
                            "(switches of several CPUs then look like one CPU's)")


def _count(counter: Counter[str], parser: ck.ChunkParser, events: np.ndarray, key: Callable[[ck.EventName], str]) -> None:
    for e, n in zip(*np.unique(events, return_counts=True)):
        counter[key(parser.names[int(e)])] += int(n)


def _tally(parser: ck.ChunkParser, chunk: ck.Chunk, report: ImportReport) -> None:
    """The report's counts for lines that write no row (or not only rows)."""
    report.malformed += len(chunk.problems)
    report.malformed_examples += [p for _, p in chunk.problems[:MAX_EXAMPLES - len(report.malformed_examples)]]
    role, event = chunk.role, chunk.event
    _count(report.unmapped, parser, event[role == ck.R_UNMAPPED], lambda nm: nm.event)
    idle = (ck.R_IDLE_EXIT, ck.R_IDLE_POLL)          # cpu_idle lines without a row, counted by kind below
    _count(report.consumed, parser, event[np.isin(role, ck.STATE_ONLY) & ~np.isin(role, idle)], lambda nm: nm.name)
    for key, n in (("cpu_idle (exit)", int((role == ck.R_IDLE_EXIT).sum())),
                   ("cpu_idle (poll state 0)", int((role == ck.R_IDLE_POLL).sum()))):
        if n:
            report.consumed[key] += n
    exits = int((role == ck.R_SYS_EXIT).sum())
    tlb = role == ck.R_TLB
    for key, n in (("sys_* (exit)", exits), ("tlb_flush (task switch)", int((chunk.a[tlb] == 1).sum())),
                   ("tlb_flush (other)", int((chunk.a[tlb] != 1).sum()))):
        if n:
            report.consumed[key] += n


def _write(spool: BinaryIO, reading: _Reading, mapper: GuestMapper, writer: TraceWriter, progress) -> set[int]:
    """Map the spooled chunks to rows and write them; returns the CPUs that got rows (a CPU
    whose lines all went unmapped has no events, and a trace may only list CPUs with events)."""
    spool.seek(0)
    cpus: set[int] = set()
    for size in reading.sizes:
        rows = mapper.map(np.load(spool), reading.t0 or 0)
        cpus.update(np.unique(rows["cpu"]).tolist())
        writer.write(rows)
        if progress is not None:
            progress(size)
    rest = mapper.finish(reading.t0 or 0)
    cpus.update(np.unique(rest["cpu"]).tolist())
    writer.write(rest)
    return cpus


def _nothing_to_replay(paths: list[Path], report: ImportReport) -> ImportFailed:
    """No line became a row: say what the files held instead (a host-side recording is the usual case)."""
    seen = ", ".join(f"{e} {n}" for e, n in report.unmapped.most_common(3))
    host = any(e.rsplit(":", 1)[-1].startswith("kvm_") for e in report.unmapped)
    return ImportFailed(f"{', '.join(map(str, paths))}: no guest events to import"
                        + (f" (unmapped: {seen})" if seen else "")
                        + ("; a host-side KVM recording is summarised by `pipeline kvm-stat`" if host else ""))


def check_format(fmt: str | None) -> None:
    """ImportFailed unless `fmt` is None (detect) or a known format's name: checked once,
    before a batch of imports starts, not once per recording."""
    if fmt is not None and fmt not in FORMATS:
        raise ImportFailed(f"unknown format {fmt!r} (known: "
                           f"{'; '.join(f'{n}: {f.description}' for n, f in FORMATS.items())})")


def import_files(paths: list[Path], out: Path, fmt: str | None = None, strict: bool = False,
                 working_set: WorkingSet = WorkingSet(), workload: str | None = None,
                 progress: Callable[[int], None] | None = None, options: Options = Options(),
                 chunks: ChunkSource = read_chunks_in_order) -> ImportReport:
    """Import text recordings into one trace file at `out` (written atomically, only on success).

    `progress`, if given, is told the input bytes done, twice over: as they are read, then as
    their rows are written. `chunks` reads and parses the files (`split.py`'s reads byte
    ranges of them in parallel on Dask); the rest is the same either way."""
    check_format(fmt)
    try:
        fmts = [FORMATS[fmt] if fmt else detect(p) for p in paths]
        report = ImportReport(out=out, formats={str(p): f.name for p, f in zip(paths, fmts)})
        with tempfile.TemporaryFile(prefix="hvreplay-import-") as spool:
            reading = _Reading()
            _read(chunks(paths, fmts, reading.names), reading, strict, report, spool, progress)
            mapper = _mapper(reading, working_set, options)

            def write(tmp: str) -> None:
                writer = TraceWriter(tmp)
                cpus = _write(spool, reading, mapper, writer, progress)
                if not cpus:
                    raise _nothing_to_replay(paths, report)
                report.kinds, report.switches = mapper.kinds, mapper.switches
                report.cpus, report.processes = tuple(sorted(cpus)), len(mapper.asids)
                _rules_and_notes(mapper, report)
                writer.close(_meta(paths, out, report, working_set, workload, reading, mapper))

            write_atomic(out, write)
    except (TraceFileError, ConfigError) as e:
        raise ImportFailed(str(e)) from None
    except OSError as e:      # writing the spool or the trace: reading errors are TraceFileErrors
        raise ImportFailed(f"-o {out}: the trace cannot be written ({e.strerror or e})") from None
    return report


def _mapper(reading: _Reading, working_set: WorkingSet, options: Options) -> GuestMapper:
    """The mapping with the decisions reading's evidence and the options make."""
    facts = reading.facts
    plan = make_plan(facts, reading.names, options)
    devices = device_rules(load_devices(), facts, reading.names, plan, options)
    timers = TimerArmings(plan, exits_recorded=facts.roles[ck.R_TIMER_EXIT] > 0)
    plan.assumptions["timer_arm"] = {"source": timers.source, "device": plan.assumptions.pop("timer_device")}
    plan.assumptions.update(devices.assumptions)
    return GuestMapper(reading.tasks, working_set, plan, timers, devices, reading.names.symbols)


def _rules_and_notes(mapper: GuestMapper, report: ImportReport) -> None:
    """The rows each estimate rule wrote, and where two sources of one kind disagree."""
    report.rules.update({f"irq from {event}": n for event, n in sorted(mapper.irq_rows.items())})
    report.consumed.update(mapper.irq_skipped)       # Dovetail's handler entries, synthetic IRQs
    if mapper.msr_dropped:
        report.consumed["write_msr (stood for by other rows)"] = mapper.msr_dropped
    report.rules[f"timer_arm from {mapper.timers.source}"] = report.kinds["timer_arm"]
    report.rules.update({f"mmio: {label}": n for label, n in mapper.devices.counts().items()})
    if mapper.cobalt_switches:
        report.notes.append(f"{mapper.cobalt_switches} cobalt_switch_context (Xenomai) switches besides "
                            f"{mapper.switches} sched_switch")
    if mapper.alternatives:
        others = "; ".join(f"{name} would give {alt.cr3_writes}" for name, alt in mapper.alternatives.items()
                           if alt.cr3_writes != mapper.spaces.cr3_writes)
        if others:
            report.notes.append(f"CR3 writes: {mapper.spaces.cr3_writes} from tlb_flush task switch; {others}")


def _meta(paths, out: Path, report: ImportReport, ws: WorkingSet, workload: str | None, reading: _Reading,
          mapper: GuestMapper) -> TraceMeta:
    t0 = reading.t0 or 0
    source = {"tool": "pipeline import", "format": sorted(set(report.formats.values())),
              "files": [str(p) for p in paths], "working_set": ws.describe(),
              "timestamps": report.timestamps, "syscall_numbers": ck.SYSCALL_TABLE,
              "clock_start_ns": t0}
    per_switch = report.switches > 0
    assumptions = {"working_set": ws.describe(), **mapper.plan.assumptions,
                   "hlt": "per cpu_idle entry with state >= 1 (kernel/sched/idle.c default_idle_call: "
                          "trace_cpu_idle(1) before hlt; cpuidle's state 0 is poll_idle): ns to the first "
                          "hardware interrupt after it, else the idle exit, else the next event"}
    return TraceMeta(workload=workload or out.stem, native_ns=max((reading.t1 or 0) - t0 + 1, 1),
                     ops=report.switches if per_switch else 1,
                     op_unit="context switch" if per_switch else "recording",
                     headline="per_op" if per_switch else "total", source=source, cpus=report.cpus,
                     guest=Guest(x2apic=mapper.plan.x2apic), assumptions=assumptions)
