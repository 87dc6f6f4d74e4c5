"""What the two readers of text traces print: `pipeline import` (guest side: what was
written, what was not, its progress bar) and `pipeline kvm-stat` (host side: exits by reason,
I/O accesses, each file's problems).

Both print to the console they are given (the command's stdout), errors included, so a
report and the errors about its files come out in one stream, in order.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from pipeline.analysis.kvm_stat import Stats
from pipeline.text import markup_safe, printable, say
from pipeline.tracefile.importers import ImportReport

PROGRESS_MIN_BYTES = 32 << 20   # inputs smaller than this import without a progress bar
_DISPLAY = {"ns": (1e3, "µs"), "cycles": (1.0, "cycles")}   # time unit -> (divisor, label)


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


# ---------------------------------------------------------------- pipeline kvm-stat
def reason_table(stats: Stats) -> Table:
    """Per reason over all vCPUs: count, %, and the handling-time statistics."""
    unit = stats.time_unit
    div, label = _DISPLAY[unit]
    table = Table(title=f"KVM exits by reason  ·  time = kvm_exit → next kvm_entry of the vCPU thread, {label}",
                  caption="cycles: raw clock counts (pass --tsc-hz to convert)" if unit == "cycles" else None)
    for name in ("reason", "count", "%", f"total ({label})", f"mean ({label})", f"min ({label})",
                 f"max ({label})", f"p50 ({label})", f"p95 ({label})", "file(s)"):
        table.add_column(name, justify="left" if name in ("reason", "file(s)") else "right")
    for r in stats.by_reason.iter_rows(named=True):
        table.add_row(markup_safe(r["reason"]), str(r["count"]), f"{100 * r['share']:.2f}",
                      *[_time(r[f"{k}_{unit}"], div) for k in ("total", "mean", "min", "max", "p50", "p95")],
                      markup_safe(r["files"]))
    return table


def thread_table(stats: Stats) -> Table:
    """Per host thread with exits: its pid (what `compare` and `host-costs --vcpu-thread`
    take), its vCPU id where printed, its exits and their share."""
    per = (stats.by_vcpu.group_by(["pid", "vcpu"]).agg(pl.col("count").sum(), pl.col("share").sum())
           .sort(["count", "pid"], descending=[True, False]))
    table = Table(title="KVM exits by vCPU thread", caption="pid: --vcpu-thread of compare, host-costs")
    for name in ("pid", "vcpu", "exits", "%"):
        table.add_column(name, justify="right")
    for r in per.iter_rows(named=True):
        table.add_row(str(r["pid"]), "—" if r["vcpu"] is None else str(r["vcpu"]), str(r["count"]), f"{100 * r['share']:.2f}")
    return table


def io_table(stats: Stats) -> Table:
    """Per port (kvm_pio) / MMIO address (kvm_mmio): count and the enclosing exits' time."""
    unit = stats.time_unit
    div, label = _DISPLAY[unit]
    table = Table(title=f"I/O accesses by port / MMIO address  ·  time of the exit they occurred in, {label}")
    for name in ("kind", "address", "access", "size", "count", "%", f"mean ({label})", f"p95 ({label})"):
        table.add_column(name, justify="left" if name in ("kind", "address", "access") else "right")
    for r in stats.io.iter_rows(named=True):
        table.add_row(r["kind"], r["address_hex"], r["direction"], str(r["size"]), str(r["count"]),
                      f"{100 * r['share']:.1f}", _time(r[f"mean_{unit}"], div), _time(r[f"p95_{unit}"], div))
    return table


def _time(value: float | None, div: float) -> str:
    return "—" if value is None else f"{value / div:.4g}"


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


def print_tables(stats: Stats, console: Console) -> None:
    """The per-reason and per-thread tables, and the I/O table when there were accesses."""
    console.print(reason_table(stats))
    console.print(thread_table(stats))
    if not stats.io.is_empty():
        console.print(io_table(stats))
