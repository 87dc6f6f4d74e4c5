"""`pipeline import`: guest-side text recordings -> one trace-format-v1 Parquet file.

Formats (the registry `FORMATS`, name -> `events.Format`; detection tries them in order):
perf script, ftrace text (atrace too), trace-cmd report (default, -N, -R). A format is data:
a detection test and one payload regex per event (`events.py` documents the contract);
the mapping to guest events is shared (`mapping.py`, rules in its docstring), and so is the
working-set estimate (`working_set.py`). Files are opened only through
`pipeline.tracetext.open_lines` and read twice, lazily: a first pass learns the tasks
(pid -> tgid, kernel threads) and the time span, the second emits rows.

Timestamps printed as seconds become ns; integer counts of the trace clock are taken as ns
(metadata `source.timestamps` = "counts" says so). t_ns is relative to the first event.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.table import Table

from pipeline.importers import ftrace, perf, tracecmd
from pipeline.importers.events import Format, Problem, Record, Skip, read_head, scan
from pipeline.importers.mapping import GuestMapper, Tasks
from pipeline.importers.working_set import WorkingSet
from pipeline.trace_format import TraceMeta, write_trace
from pipeline.tracetext import NotText, open_lines

FORMATS: dict[str, Format] = {f.name: f for f in (perf.FORMAT, ftrace.FORMAT, *tracecmd.FORMATS)}
MAX_EXAMPLES = 5


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


def _records(paths: list[Path], fmts: list[Format]) -> Iterator[tuple[Path, Record | Skip | Problem]]:
    for path, fmt in zip(paths, fmts):
        for item in scan(open_lines(path), fmt, str(path)):
            yield path, item


def _first_pass(paths: list[Path], fmts: list[Format], report: ImportReport) -> tuple[Tasks, int, int]:
    tasks, t0, t1, units = Tasks(), None, None, set()
    for _, item in _records(paths, fmts):
        if isinstance(item, Problem):
            continue
        line = item.line
        units.add(line.ts_unit)
        t0 = line.ts if t0 is None else min(t0, line.ts)
        t1 = line.ts if t1 is None else max(t1, line.ts)
        if isinstance(item, Record):
            tasks.see(item)
    if len(units) > 1:
        raise ImportFailed("files mix second timestamps and clock counts; import them separately")
    report.timestamps = "counts" if units == {"count"} else "ns"
    return tasks, t0 or 0, t1 or 0


def _second_pass(paths, fmts, mapper: GuestMapper, t0: int, strict: bool, report: ImportReport) -> set[int]:
    cpus, no_cpu = set(), 0
    for _, item in _records(paths, fmts):
        if isinstance(item, Problem):
            if strict:
                raise ImportFailed(str(item))
            report.malformed += 1
            if len(report.malformed_examples) < MAX_EXAMPLES:
                report.malformed_examples.append(str(item))
            continue
        line = item.line
        cpu = line.cpu if line.cpu is not None else 0
        no_cpu += line.cpu is None
        cpus.add(cpu)
        if isinstance(item, Skip):
            exit_ = line.name.startswith("sys_") and line.payload.startswith("->")
            (report.consumed if exit_ else report.unmapped)["sys_* (exit)" if exit_ else line.event] += 1
        else:
            mapper.feed(item, line.ts - t0, cpu)
    if no_cpu:
        report.notes.append(f"{no_cpu} event lines had no CPU column: put on cpu 0 "
                            "(switches of several CPUs then look like one CPU's)")
    return cpus


def import_files(paths: list[Path], out: Path, fmt: str | None = None, strict: bool = False,
                 working_set: WorkingSet = WorkingSet(), workload: str | None = None) -> ImportReport:
    """Import text recordings into one trace file at `out` (written atomically, only on success)."""
    if fmt is not None and fmt not in FORMATS:
        raise ImportFailed(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    try:
        fmts = [FORMATS[fmt] if fmt else detect(p) for p in paths]
        report = ImportReport(out=out, formats={str(p): f.name for p, f in zip(paths, fmts)})
        tasks, t0, t1 = _first_pass(paths, fmts, report)
        mapper = GuestMapper(tasks, working_set)
        cpus = _second_pass(paths, fmts, mapper, t0, strict, report)
    except (NotText, OSError) as e:
        raise ImportFailed(str(e)) from None
    report.kinds, report.switches = mapper.kinds, mapper.switches
    report.consumed.update(mapper.consumed)
    report.cpus, report.processes = tuple(sorted(cpus)) or (0,), len(mapper.asids)
    write_trace(out, mapper.out.arrays(), _meta(paths, out, report, working_set, workload, t1 - t0 + 1))
    return report


def _meta(paths, out: Path, report: ImportReport, ws: WorkingSet, workload: str | None, span: int) -> TraceMeta:
    source = {"tool": "pipeline import", "format": sorted(set(report.formats.values())),
              "files": [str(p) for p in paths], "working_set": ws.describe(),
              "timestamps": report.timestamps}
    per_switch = report.switches > 0
    return TraceMeta(workload=workload or out.stem, native_ns=max(span, 1),
                     ops=report.switches if per_switch else 1,
                     op_unit="context switch" if per_switch else "recording",
                     headline="per_op" if per_switch else "total", source=source, cpus=report.cpus)


def import_command(files: list[Path], out: Path, fmt: str | None, strict: bool, console: Console) -> int:
    """The CLI command: import, print a summary; exit code 0 ok, 2 nothing written."""
    try:
        report = import_files(files, out, fmt=fmt, strict=strict)
    except ImportFailed as e:
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2
    print_report(report, console)
    return 0


def print_report(report: ImportReport, console: Console) -> None:
    formats = ", ".join(sorted(set(report.formats.values())))
    console.print(f"{report.out}: {report.rows} rows, format {formats}, cpus {list(report.cpus)}, "
                  f"{report.switches} context switches, {report.processes} address spaces, "
                  f"timestamps {report.timestamps}", highlight=False)
    table = Table("written", "rows", "not written", "lines")
    left = [(k, n) for k, n in sorted(report.kinds.items())]
    right = [(f"{k} (unmapped)", n) for k, n in report.unmapped.most_common()] + \
            [(f"{k} (read, no row)", n) for k, n in report.consumed.most_common()]
    for i in range(max(len(left), len(right))):
        a, b = (left[i] if i < len(left) else ("", "")), (right[i] if i < len(right) else ("", ""))
        table.add_row(a[0], str(a[1]), b[0], str(b[1]))
    console.print(table)
    if report.malformed:
        console.print(f"[yellow]{report.malformed} malformed lines skipped[/], first:", highlight=False)
        for example in report.malformed_examples:
            console.print(f"  {example}", highlight=False, markup=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
