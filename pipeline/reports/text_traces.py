"""What the two readers of text traces print: `pipeline import` (guest side: what was
written, what was not, its progress bar) and `pipeline kvm-stat` (host side: perf kvm stat
report's tables of exits by reason, MMIO or port accesses; each file's problems).

Both print to the console they are given (the command's stdout), errors included, so a
report and the errors about its files come out in one stream, in order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from pipeline.analysis.kvm_stat import Stats
from pipeline.text import markup_safe, printable, say
from pipeline.tracefile.importers import ImportReport

PROGRESS_MIN_BYTES = 32 << 20   # inputs smaller than this import without a progress bar
# time unit -> how it is shown: (divisor, label, decimals); µs to 0.01 as perf prints them
_DISPLAY = {"ns": (1e3, "µs", 2), "cycles": (1.0, "cycles", 0)}


def print_error(console: Console, line: str) -> None:
    say(console, line, "[red]error:[/red]")


# ---------------------------------------------------------------- pipeline import
@contextmanager
def import_progress(total: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar of `total` bytes on stderr, for inputs of at least PROGRESS_MIN_BYTES
    unless stderr is not a terminal or `quiet`; yields what to tell the bytes done."""
    stderr = Console(stderr=True)
    bar = Progress("importing", BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=stderr,
                   transient=True, disable=quiet or total < PROGRESS_MIN_BYTES or not stderr.is_terminal)
    with bar:
        task = bar.add_task("import", total=total)
        yield lambda n: bar.advance(task, n)


def print_import(report: ImportReport, console: Console) -> None:
    """The import's one-line summary, rows written beside lines not written, malformed lines."""
    formats = ", ".join(sorted(set(report.formats.values())))
    console.print(f"{markup_safe(str(report.out))}: {report.rows} rows, format {formats}, cpus {list(report.cpus)}, "
                  f"{report.switches} context switches, {report.processes} address spaces, "
                  f"timestamps {report.timestamps}", highlight=False)
    table = Table("written", "rows", "not written", "lines")
    left = [(k, n) for k, n in sorted(report.kinds.items())]
    right = [(f"{k} (unmapped)", n) for k, n in report.unmapped.most_common()] + \
            [(f"{k} (read, no row)", n) for k, n in report.consumed.most_common()]
    for i in range(max(len(left), len(right))):
        a, b = (left[i] if i < len(left) else ("", "")), (right[i] if i < len(right) else ("", ""))
        table.add_row(markup_safe(a[0]), str(a[1]), markup_safe(b[0]), str(b[1]))
    console.print(table)
    if report.malformed:
        console.print(f"[yellow]{report.malformed} malformed lines skipped[/], first:", highlight=False)
        for example in report.malformed_examples:
            console.print(f"  {printable(example)}", highlight=False, markup=False)
    for rule, n in report.rules.items():
        console.print(f"rule: {markup_safe(rule)}: {n} rows", highlight=False)
    for note in report.notes:
        console.print(f"note: {markup_safe(note)}", highlight=False)


def batch_table(reports: list[ImportReport]) -> Table:
    """One row per recording of `import --out-dir`: what print_import says first, compactly
    (hundreds of recordings would not fit its full tables)."""
    table = Table("recording", "format", "rows", "switches", "malformed", "trace")
    for r in reports:
        table.add_row(*(markup_safe(cell) for cell in (", ".join(r.formats), ", ".join(sorted(set(r.formats.values()))),
                                                       str(r.rows), str(r.switches), str(r.malformed), str(r.out))))
    return table


# ---------------------------------------------------------------- pipeline kvm-stat
# perf kvm stat report's title of each --event report (tools/perf/arch/x86/util/kvm-stat.c)
_TITLES = {"vmexit": "VM-EXIT", "mmio": "MMIO Access", "ioport": "IO Port Access"}
_TIMES = {"vmexit": "kvm_exit → next kvm_entry of the vCPU thread",
          "mmio": "of the exit each access happened in", "ioport": "of the exit each access happened in"}


def time_caption(stats: Stats) -> str:
    """The unit of the times and why: µs from seconds (or from counts with --tsc-hz);
    cycles only where raw clock counts had no --tsc-hz to convert them."""
    if stats.time_unit == "cycles":
        return "times in cycles: the timestamps are raw clock counts, and no --tsc-hz converts them"
    return "times in µs: " + ("raw clock counts ÷ --tsc-hz" if stats.converted else "the timestamps are seconds")


def event_table(stats: Stats, event: str) -> Table:
    """perf kvm stat report's table of one --event, its columns: per row Samples, Samples%,
    Time%, Min/Max/Avg time and the relative stddev of the mean (quantiles are in --out's
    tables: one more column would not fit 100 columns)."""
    unit = stats.time_unit
    table = Table(title=f"{_TITLES[event]}  ·  time {_TIMES[event]}, {_DISPLAY[unit][1]}")
    for name in (_TITLES[event], "Samples", "Samples%", "Time%", "Min", "Max", "Avg", "±"):
        table.add_column(name, justify="left" if name == _TITLES[event] else "right")
    for r in stats.views[event].iter_rows(named=True):
        table.add_row(markup_safe(r["label"]), str(r["count"]), _pct(r["share"]), _pct(r["time_share"]),
                      *[_time(r[f"{k}_{unit}"], unit) for k in ("min", "max", "mean")],
                      "—" if r["stddev_pct"] is None else f"±{r['stddev_pct']:.2f}%")
    return table


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.2f}%"


def totals_line(stats: Stats, event: str) -> str:
    """perf's line under its table: the samples and their handling time in all."""
    view, unit = stats.views[event], stats.time_unit
    return f"Total samples: {view['count'].sum()}, total handling time: {_time(float(view[f'total_{unit}'].sum()), unit)} " \
           f"{_DISPLAY[unit][1]}"


def thread_table(stats: Stats) -> Table:
    """Per host thread with exits: its name and pid (what `--vcpu-thread` of kvm-stat,
    compare and host-costs take), its vCPU id where printed, its exits and their share."""
    per = (stats.by_vcpu.group_by(["pid", "vcpu"]).agg(pl.col("count").sum(), pl.col("share").sum())
           .sort(["count", "pid"], descending=[True, False]))
    table = Table(title="KVM exits by vCPU thread", caption="--vcpu-thread takes a thread or its pid")
    for name in ("thread", "pid", "vcpu", "exits", "%"):
        table.add_column(name, justify="left" if name == "thread" else "right")
    for r in per.iter_rows(named=True):
        table.add_row(markup_safe(stats.threads.get(r["pid"], "")), str(r["pid"]),
                      "—" if r["vcpu"] is None else str(r["vcpu"]), str(r["count"]), f"{100 * r['share']:.2f}")
    return table


def _time(value: float | None, unit: str) -> str:
    div, _, decimals = _DISPLAY[unit]
    return "—" if value is None else f"{value / div:.{decimals}f}"


def print_files(stats: Stats, console: Console) -> None:
    """Per file: its error, or its warnings (count and first examples) and untimed exits."""
    for s in stats.files:
        if s.error:
            print_error(console, s.error)
            continue
        for p in (p for p in s.problems if p.count):
            console.print(f"[yellow]warning:[/yellow] {markup_safe(s.source)}: {p.count} {p.what}", highlight=False,
                          soft_wrap=True)
            for e in p.examples:
                console.print(f"  {printable(e)}", highlight=False, soft_wrap=True, markup=False)
        if s.unpaired:
            console.print(f"{markup_safe(s.source)}: {len(s.exits)} exits, {s.unpaired} without a following kvm_entry (untimed)",
                          highlight=False, soft_wrap=True)


def print_tables(stats: Stats, event: str, console: Console) -> None:
    """As perf kvm stat report: what was analysed, then the report of `event`, its unit, totals;
    for vmexit also the exits per vCPU thread (which thread to select in a host of many)."""
    files = ", ".join(Path(s.source).name for s in stats.files if s.error is None)
    console.print(f"Analyze events of {markup_safe(files)}: {markup_safe(stats.selection.describe())}",
                  highlight=False, soft_wrap=True)
    if stats.views[event].is_empty():
        console.print(f"no {_TITLES[event]} events in the selection", highlight=False)
        return
    console.print(event_table(stats, event))
    console.print(time_caption(stats), highlight=False)     # a line of its own: a caption would wrap at the table's width
    console.print(totals_line(stats, event), highlight=False)
    if event == "vmexit":
        console.print(thread_table(stats))
