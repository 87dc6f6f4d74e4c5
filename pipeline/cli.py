"""The `pipeline` command: generate, validate, replay, report.

Options become typed records here and nowhere else; the layers below never read
the command line, the environment or config files on their own.
"""
from __future__ import annotations

import copy
import functools
import inspect
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Optional, get_type_hints

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from pipeline.config import CONFIGS
from pipeline.config.errors import ConfigError
from pipeline.config.modes import load_modes, select_modes
from pipeline.atomic import write_atomic
from pipeline.config.cost_profile import DEFAULT_PROFILE, MODERN_PROFILE, START_PROFILE, load_profile, write_profile
from pipeline.config.measurements import DEFAULT_REFERENCE, load_reference
from pipeline.generate.registry import GENERATORS, Generator
from pipeline.reports.fit import blocks, table_width
from pipeline.run.cluster import ClusterError, ClusterSpec, Tls, start_fork_server
from pipeline.text import count_of, say

# Each command imports what only it needs (Dask, numba, polars, scipy, pyarrow) in its own
# body: `pipeline --help` and the light commands start in a fraction of the time, and
# `replay` starts its workers' fork server before its own heavy imports (_replay).
if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.run.runner import Chunking
    from pipeline.run.shards import TraceFile
    from pipeline.tracefile.importers.batch import Settings

# Piped output gets room for every column instead of rich's 80-column fallback; tables are
# cut to $COLUMNS or the terminal by _show.
out_console = Console(width=None if sys.stdout.isatty() else 100_000)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 240)


def _in_repo(path: Path) -> str:
    """A default path as the help shows it: from the repository's root (the absolute path
    is long, and cut to fit the terminal)."""
    return str(path.relative_to(CONFIGS.parent))


class _ReadableHelp:
    """Help that shows each option once, by its first long name, and a flag without a type.

    A renamed option is declared with its name first and its old spelling after
    (`typer.Option("--start-profile", "--profile")`): both work, the help shows the first
    long name only. typer labels every flag `<bool>` though it takes no value."""

    # Any: recent typer passes its own vendored click's Context and HelpFormatter, older typer click's.
    def format_help(self, ctx: Any, formatter: Any) -> None:
        shown: Any = copy.copy(self)   # a TyperCommand or TyperGroup (the classes below)
        shown.params = [_as_shown(p) for p in shown.get_params(ctx)]
        shown.add_help_option = False   # --help is among those params already
        super(_ReadableHelp, shown).format_help(ctx, formatter)  # type: ignore[misc]  # the command class after this mixin


class ReadableCommand(_ReadableHelp, TyperCommand):
    """A command with the readable help (every `pipeline` command: Typer below)."""


class ReadableGroup(_ReadableHelp, TyperGroup):
    """A group (`pipeline`, `pipeline generate`) with the readable help."""


def _as_shown(param: Any) -> Any:
    """`param` (a click parameter) as the help shows it: without the long names after its
    first, and a flag without a value type (its metavar "" makes typer print none)."""
    shown = copy.copy(param)
    old = [o for o in param.opts if o.startswith("--")][1:]
    shown.opts = [o for o in param.opts if o not in old]
    if getattr(param, "is_flag", False):
        shown.metavar = ""
    return shown


class Typer(typer.Typer):
    """typer.Typer whose commands and groups show the readable help above."""

    def __init__(self, **options: Any) -> None:
        super().__init__(cls=ReadableGroup, **options)

    def command(self, name: Optional[str] = None, **options: Any) -> Any:  # type: ignore[override]
        return super().command(name, cls=ReadableCommand, **options)


app = Typer(add_completion=False, no_args_is_help=True,
            help="hvreplay: replay guest traces through hypervisor models and price each mode.")
generate_app = Typer(no_args_is_help=True, help="Generate traces of the seed's benchmarks.")
app.add_typer(generate_app, name="generate")


ProfileOpt = Annotated[Path, typer.Option("--profile", help="Hardware cost profile (TOML).", show_default=_in_repo(DEFAULT_PROFILE))]
NativeProfileOpt = Annotated[Path, typer.Option("--native-profile", "--profile", show_default=_in_repo(START_PROFILE),
                                                help="Hardware profile whose \\[native] table times the events.")]
ModesDirOpt = Annotated[Optional[list[Path]], typer.Option(
    "--modes-dir", metavar="DIR", help="Folder (or file) of your own mode TOMLs, loaded with the shipped ones (repeatable).")]
CLUSTER_PANEL = "Cluster (Dask)"
CHUNK_PANEL = "Chunking"
SHIPPED_MODES = ", ".join(load_modes())   # read from configs/modes, so the help never lists a stale set


class ClusterOptions(NamedTuple):
    """Where a command's Dask tasks run (`replay`, `sweep`, `import --out-dir/--split`),
    declared once here: `option_records` gives them to a command as this record."""

    workers: Annotated[int, typer.Option(min=1, help="Worker processes of the local Dask cluster.",
                                         rich_help_panel=CLUSTER_PANEL)] = 2
    scheduler_address: Annotated[Optional[str], typer.Option(
        help="Use this Dask scheduler (else $DASK_SCHEDULER_ADDRESS).", rich_help_panel=CLUSTER_PANEL)] = None
    scheduler_file: Annotated[Optional[Path], typer.Option(
        help="Use the Dask scheduler described in this file.", rich_help_panel=CLUSTER_PANEL)] = None
    tls_ca_file: Annotated[Optional[Path], typer.Option(
        help="TLS scheduler: CA certificate (PEM) that signed the cluster's certificates.", rich_help_panel=CLUSTER_PANEL)] = None
    tls_cert: Annotated[Optional[Path], typer.Option(
        help="TLS scheduler: this client's certificate (PEM).", rich_help_panel=CLUSTER_PANEL)] = None
    tls_key: Annotated[Optional[Path], typer.Option(
        help="TLS scheduler: this client's private key (PEM), unless it is in --tls-cert.", rich_help_panel=CLUSTER_PANEL)] = None

    def spec(self) -> ClusterSpec:
        """Where to run; TLS options that do not go together, or name a missing file, fail here."""
        return ClusterSpec(self.workers, self.scheduler_address, _opt(self.scheduler_file),
                           _tls(self.tls_ca_file, self.tls_cert, self.tls_key))


class ChunkOptions(NamedTuple):
    """How `replay` and `sweep` split a vCPU's events (an import has no such pieces, so it
    takes ClusterOptions alone)."""

    chunk_events: Annotated[Optional[int], typer.Option(
        min=0, help="Split each vCPU's events into chunks of N replayed in parallel, each proved equal to the sequential replay "
                    "(0: never; default: chosen per trace, for long traces on idle workers and modes without a shadow pool).",
        rich_help_panel=CHUNK_PANEL)] = None
    warmup_events: Annotated[Optional[int], typer.Option(
        min=0, help="Warm-up events before each chunk (default: a tenth of a chunk, at least 100000); too few only costs "
                    "replaying the chunk again from the previous one's end.",
        rich_help_panel=CHUNK_PANEL)] = None

    @property
    def chunking(self) -> Chunking:
        from pipeline.run.runner import Chunking

        return Chunking(self.chunk_events, self.warmup_events)


def option_records(**records: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """A decorator: the command, which takes each `name: Record` of `records` (NamedTuples of
    typer options), with the records' fields as its last options instead (typer reads a
    command's options from its signature), so commands share options without repeating them."""
    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        signature = inspect.signature(command, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name not in records]
        shared = [_parameter(name, get_type_hints(record, include_extras=True)[name], default)
                  for record in records.values() for name, default in record._field_defaults.items()]

        @functools.wraps(command)
        def with_records(**values: Any) -> None:
            given = {param: record(**{name: values.pop(name) for name in record._fields})
                     for param, record in records.items()}
            command(**values, **given)

        with_records.__signature__ = signature.replace(parameters=[*own, *shared])  # type: ignore[attr-defined]
        return with_records
    return decorate


cluster_options = option_records(cluster=ClusterOptions, chunks=ChunkOptions)   # replay's and sweep's


def _parameter(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _report_error(line: str) -> None:
    say(err_console, line, "[red]error:[/red]")


def _note(line: str) -> None:
    say(err_console, line, "[yellow]note:[/yellow]")


def _show(table: Table, keys: int = 1) -> None:
    """Print `table` on stdout in blocks that fit its width (pipeline/reports/fit.py), the
    first `keys` columns repeated in each."""
    width = table_width(out_console)
    for block in blocks(table, width, out_console, keys):
        out_console.print(block, width=width)


def _fail(message: str, code: int = 2) -> None:
    _report_error(message)
    raise typer.Exit(code)


@app.command()
@cluster_options
def replay(
    paths: Annotated[list[Path], typer.Argument(help="Trace files or folders (every *.parquet below).")],
    modes: Annotated[str, typer.Option(help=f"'all' or a comma-separated list of mode names; shipped: {SHIPPED_MODES}.")] = "all",
    out: Annotated[Path, typer.Option(help="Results folder (hive-partitioned counts + summary.parquet).")] = Path("results"),
    profile: ProfileOpt = DEFAULT_PROFILE,
    modes_dir: ModesDirOpt = None,
    *, cluster: ClusterOptions, chunks: ChunkOptions,
) -> None:
    """Replay every trace under every mode on Dask; write counts and summary.parquet under --out.

    Rerun with the same --out to resume: shards already done with the same inputs are kept."""
    try:
        chosen = select_modes(load_modes(extra=modes_dir or []), modes)
        cost_profile, ref = load_profile(profile), load_reference(DEFAULT_REFERENCE)
    except ConfigError as e:
        _fail(str(e))
    spec = _cluster(cluster)
    traces = _traces(paths, out)
    with _holding(out):
        summary, failed = _replay(traces, chosen, out, cost_profile, spec, chunks.chunking)
    from pipeline.reports.terminal import seed_table
    from pipeline.run.results import SUMMARY

    _show(seed_table(summary, ref))
    say(out_console, f"summary: {out / SUMMARY} ({len(summary)} rows)")
    _exit_if_failed(failed)


def _cluster(cluster: ClusterOptions) -> ClusterSpec:
    """Where to run; for a local cluster, its workers' fork server starts now, loading their
    modules and the compiled kernel while this process imports and reads its own
    (pipeline/run/cluster.py)."""
    spec = cluster.spec()
    if spec.local:
        start_fork_server()
    return spec


def _traces(paths: list[Path], out: Path) -> list[TraceFile]:
    """The traces under `paths` (not under `out`); a missing or non-regular path named
    explicitly fails here, before anything starts."""
    from pipeline.run.shards import find_traces

    _fail_if_missing(paths)
    found = find_traces(paths, exclude=out)
    for line in found.skipped:
        _note(line)
    if found.not_regular:
        _fail(found.not_regular[0])
    if not found.traces:
        _fail(f"{paths[0]}: no trace files (*.parquet) found")
    return found.traces


def _fail_if_missing(paths: list[Path]) -> None:
    """A path named on the command line that does not exist is a typo, not an empty folder."""
    missing = [p for p in paths if not p.exists()]
    if missing:
        _fail(f"{missing[0]}: does not exist")


@contextmanager
def _holding(out: Path) -> Iterator[None]:
    """Hold --out for this command (pipeline/run/outdir.py): one run at a time, checked before
    the cluster starts; any problem with it is one line, exit 2."""
    from pipeline.run.outdir import OutError, held

    try:
        with held(out, shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])):
            yield
    except OutError as e:
        _fail(str(e))


def _replay(traces: list[TraceFile], modes: list, out: Path, cost_profile, spec: ClusterSpec,
            chunking: Chunking) -> tuple:
    """Replay `traces` under `modes`, write and return the summary (and failures)."""
    from pipeline.run.results import summarise, write_summary
    from pipeline.run.runner import run

    try:
        output = run(traces, modes, out, spec, report=_report_error, note=lambda line: say(err_console, line),
                     chunking=chunking)
    except ClusterError as e:
        _fail(str(e))
    summary = summarise(output.rows, output.failures, cost_profile, [m.name for m in modes])
    write_summary(out, summary, output.done)
    return summary, output.failures


def _exit_if_failed(failed: list) -> None:
    if failed:
        _fail(f"{len({f.trace for f in failed})} trace(s) failed; the summary marks them status=failed", 1)


def _opt(path: Optional[Path]) -> Optional[str]:
    return str(path) if path else None


def _tls(ca_file: Optional[Path], cert: Optional[Path], key: Optional[Path]) -> Optional[Tls]:
    """TLS client settings: none, or a CA and a certificate (and a key unless it is in the cert)."""
    if not (ca_file or cert or key):
        return None
    if not (ca_file and cert):
        _fail("--tls-ca-file and --tls-cert go together (with --tls-key unless the key is in the cert file)")
    missing = [p for p in (ca_file, cert, key) if p and not p.is_file()]
    if missing:
        _fail(f"{missing[0]}: no such file")
    return Tls(str(ca_file), str(cert), _opt(key))


@app.command()
def report(
    results: Annotated[Path, typer.Argument(help="A results folder (or its summary.parquet).")],
    by: Annotated[Optional[str], typer.Option(help="'category': where the time goes, per trace and mode.")] = None,
    top: Annotated[Optional[int], typer.Option(help="Print each mode's N costliest sources by event kind, address space and I/O port / MMIO address.")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write a self-contained HTML report (figures, attribution with "
                                                       "--top N sources, default 5, calibration) here.")] = None,
    sweep: Annotated[Optional[list[Path]], typer.Option(help="A `pipeline sweep --out` folder to plot in the HTML report (repeatable).")] = None,
    calibration: Annotated[Optional[Path], typer.Option(help="Cells of a fit (`pipeline calibrate` writes FIT.cells.parquet) for "
                                                              "the HTML report; default: the reference beside these results.")] = None,
    reference: Annotated[Path, typer.Option(help="Reference measurements (TOML) shown beside the modelled cells and in the HTML report.",
                                            show_default=_in_repo(DEFAULT_REFERENCE))] = DEFAULT_REFERENCE,
    profile: Annotated[Optional[Path], typer.Option(help="Cost profile to price attribution with; default: the one named in "
                                                          "the summary, from configs/hardware.")] = None,
) -> None:
    """Print the seed-shaped table (or the cost breakdown, or the top cost sources) from a results folder."""
    from pipeline.reports import data as rd
    from pipeline.reports.html_page import ReportInputs, write_report
    from pipeline.reports.terminal import category_table, failures, seed_table
    from pipeline.run.results import StaleSummary, check_summary, read_summary

    try:
        summary = read_summary(results)
        check_summary(results, summary)
        ref = load_reference(reference)
    except (FileNotFoundError, StaleSummary, ConfigError) as e:
        _fail(str(e))
    if by not in (None, "category"):
        _fail(f"--by {by}: only 'category' is supported")
    if top is not None and top < 1:
        _fail(f"--top {top}: must be at least 1")
    _show(seed_table(summary, ref))
    if by == "category":
        for trace in summary.filter(summary["status"] == "ok")["trace"].unique().sort():
            _show(category_table(summary, trace))
    cost_profile = attribution = None
    if top or html:   # only attribution and calibration need the cost profile
        cost_profile, why = rd.summary_profile(summary, profile)
        attribution = rd.load_attribution(results, summary, cost_profile, why, top or 5)
    if top:
        _print_top(summary, attribution)
    if html:
        try:
            sweeps = [rd.load_sweep(s) for s in sweep or []]
            cal_table = rd.load_calibration(calibration, summary, ref, cost_profile)
        except (ConfigError, rd.ReportInputError) as e:
            _fail(str(e))
        write_report(html, ReportInputs(str(results), summary, ref, attribution, cal_table, sweeps))
        say(out_console, f"wrote {html}")
    for line in failures(summary):
        say(err_console, line, "[red]failed:[/red]")


def _print_top(summary, attribution) -> None:
    from pipeline.reports.terminal import top_table

    if attribution.top is None:
        say(err_console, attribution.note)
        return
    if attribution.note:
        say(err_console, attribution.note, "[yellow]warning:[/yellow]")
    for trace in summary.filter(summary["status"] == "ok")["trace"].unique().sort():
        for dimension, ranked in attribution.top.items():
            if len(ranked.filter(ranked["trace"] == trace)):
                _show(top_table(ranked, summary, trace, dimension, attribution.profile), keys=2)


@app.command()
def diff(
    results_a: Annotated[Path, typer.Argument(help="Results folder A (or its summary.parquet).")],
    results_b: Annotated[Path, typer.Argument(help="Results folder B, compared with A.")],
    out: Annotated[Optional[Path], typer.Option(help="Write the comparison here (.parquet).")] = None,
) -> None:
    """Per (trace, mode): how the modelled time and each cost category change from A to B."""
    from pipeline.analysis.diff import diff as compare
    from pipeline.reports.terminal import diff_table
    from pipeline.run.results import read_summary

    try:
        a, b = read_summary(results_a), read_summary(results_b)
    except FileNotFoundError as e:
        _fail(str(e))
    table = compare(a, b)
    both = table.filter(table["status"] == "both")
    for trace in both["trace"].unique(maintain_order=True):
        _show(diff_table(table, trace, (str(results_a), str(results_b))))
    for trace, mode, status in table.filter(table["status"] != "both").select("trace", "mode", "status").rows():
        say(out_console, f"{trace} / {mode}: {status}")
    if out:
        write_atomic(out, table.write_parquet)
        say(out_console, f"wrote {out} ({len(table)} rows)")


@app.command()
def validate(paths: Annotated[list[Path], typer.Argument(help="Trace files or folders (every *.parquet below).")]) -> None:
    """Check trace files against format v1; one line per bad file, exit 1 if any."""
    from pipeline.run.shards import find_traces
    from pipeline.tracefile.format import TraceError, validate as validate_trace

    _fail_if_missing(paths)
    found = find_traces(paths)
    if not found.traces and not found.not_regular:
        _fail(f"{paths[0]}: no trace files (*.parquet) found")
    for line in found.skipped:
        _note(line)
    for line in found.not_regular:
        say(err_console, line, "[red]bad[/red]")
    bad = len(found.not_regular)
    for t in found.traces:
        try:
            meta = validate_trace(t.path)
            say(out_console, f"ok  {t.path}  ({meta.workload}, {count_of(meta.ops, meta.op_unit)}, cpus {list(meta.cpus)})")
        except TraceError as e:
            bad += 1
            say(err_console, str(e), "[red]bad[/red]")
    if bad:
        raise typer.Exit(1)


@app.command()
@cluster_options
def sweep(
    paths: Annotated[list[Path], typer.Argument(help="Trace files or folders.")],
    set_: Annotated[list[str], typer.Option("--set", help="FIELD=v1,v2,… (repeatable): a grid over mode fields.")],
    out: Annotated[Path, typer.Option(help="Folder for the sweep's counts, summary.parquet and sweep.parquet.")] = Path("sweep"),
    mode: Annotated[str, typer.Option(help=f"The mode to vary; shipped: {SHIPPED_MODES}.")] = "kvm-paravirt",
    baseline: Annotated[str, typer.Option(
        help="Mode each point's gain is measured against (same settings, less the paravirt guest's); one of --mode's.")] = "kvm-trunk",
    profile: ProfileOpt = DEFAULT_PROFILE,
    modes_dir: ModesDirOpt = None,
    *, cluster: ClusterOptions, chunks: ChunkOptions,
) -> None:
    """Re-replay traces under a grid of mode settings; print each point's time and gain."""
    from pipeline.analysis import sweep as sw
    from pipeline.reports.terminal import sweep_table
    from pipeline.run.outdir import remove, write
    from pipeline.run.results import SUMMARY

    try:
        available = load_modes(extra=modes_dir or [])
        chosen, base = select_modes(available, mode)[0], select_modes(available, baseline)[0]
        grid_points = sw.points(chosen, base, sw.parse_sets(set_))
        cost_profile = load_profile(profile)
    except ConfigError as e:
        _fail(str(e))
    spec = _cluster(cluster)
    traces = _traces(paths, out)
    with _holding(out):
        remove(out / "sweep.parquet")  # like the summary, never left describing shards that are gone
        summary, failed = _replay(traces, sw.modes_to_run(grid_points), out, cost_profile, spec, chunks.chunking)
        table = sw.gains(summary, grid_points)
        write(out / "sweep.parquet", table.write_parquet)
    keys = [k for k, _ in grid_points[0].settings]
    _show(sweep_table(table, keys, cost_profile.name), keys=len(keys))
    say(out_console, f"wrote {out / 'sweep.parquet'} ({len(table)} rows) and {out / SUMMARY}")
    _exit_if_failed(failed)


@app.command()
def calibrate(
    results: Annotated[Path, typer.Argument(help="A results folder (or its summary.parquet) with every mode replayed.")],
    out: Annotated[Path, typer.Option(help="Fitted profile to write (.toml); tables go beside it as .cells/.costs.parquet.")],
    fit: Annotated[str, typer.Option(help="Workloads whose reference cells the costs are fitted to (comma-separated).")] = "lat-ctx-2,hackbench-1",
    reference: Annotated[Path, typer.Option(help="Reference measurements (TOML).", show_default=_in_repo(DEFAULT_REFERENCE))] = DEFAULT_REFERENCE,
    start_profile: Annotated[Path, typer.Option("--start-profile", "--profile", help="Profile to start from: figures, ranges, sources.",
                                                show_default=_in_repo(START_PROFILE))] = START_PROFILE,
    leave_one_out: Annotated[bool, typer.Option("--leave-one-out", help="Also fit without each workload in turn and predict it.")] = False,
) -> None:
    """Fit unit costs to reference measurements (bounded least squares on the counts in RESULTS)."""
    from pipeline.analysis import calibrate as cal
    from pipeline.reports.terminal import cost_table, prediction_table
    from pipeline.run.results import read_summary

    fit_on = [w.strip() for w in fit.split(",") if w.strip()]
    try:
        start, ref, summary = load_profile(start_profile), load_reference(reference), read_summary(results)
        rows = cal.design(summary, ref, start)
        costs, predictions = cal.calibrate(rows, start, fit_on)
    except (ConfigError, FileNotFoundError, cal.CalibrationError) as e:
        _fail(str(e))
    _show(cost_table(costs, start.name))
    _show(prediction_table(predictions, f"Reference {ref.name}: fitted on {fit}"), keys=2)
    for workload, measured, modelled in cal.ratio(predictions, "kvm-trunk", "kvm-paravirt"):
        out_console.print(f"paravirt gain (kvm-trunk ÷ kvm-paravirt) {workload}: modelled {modelled:.2f}×, measured {measured:.2f}×")
    tables = {"cells": cal.prediction_frame(predictions), "costs": cal.cost_frame(costs)}
    if leave_one_out:
        held = cal.leave_one_out(rows, start)
        _show(prediction_table(held, "Leave one workload out: each predicted by a fit on the others"), keys=2)
        tables["loo"] = cal.prediction_frame(held)
    _write_fit(out, start, costs, predictions, ref.name, fit_on, results)
    for kind, frame in tables.items():
        write_atomic(out.with_suffix(f".{kind}.parquet"), frame.write_parquet)
    say(out_console, f"wrote {out} and its tables: {', '.join(str(out.with_suffix(f'.{k}.parquet')) for k in tables)}")


def _write_fit(out: Path, start, costs: dict, predictions: list, reference: str, fit_on: list[str],
               results: Path) -> None:
    from pipeline.analysis import calibrate as cal

    fitted = [p for p in predictions if p.role == "fit" and not cal.is_native(p)]
    header = {"fit": {"reference": reference, "fitted_on": fit_on, "started_from": start.name,
                      "results": str(results), "max_abs_fit_error_pct": round(max(abs(p.error_pct) for p in fitted), 2)}}
    notes = {d: {"start_ns": f.start, "identifiable": f.identifiable, "at_bound": f.at_bound} for d, f in costs.items()}
    named = replace(start, name=out.stem, description=f"unit costs of {start.name} fitted to {reference} "
                    f"on {','.join(fit_on)} (ranges and sources from {start.name})")
    write_profile(out, named, {d: f.fitted for d, f in costs.items()}, notes, header)


@app.command("import")
@option_records(cluster=ClusterOptions)
def import_(
    files: Annotated[list[Path], typer.Argument(help="perf script, ftrace or trace-cmd report text (any rendering): the parts "
                                                     "of one recording with -o; with --out-dir each file, or each file below "
                                                     "a folder, is a recording of its own.")],
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Trace file to write (.parquet).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Import each recording into its own trace DIR/NAME.parquet, "
                                                         "one Dask task each (NAME: its path below the folder given).")] = None,
    split: Annotated[bool, typer.Option("--split", help="With -o: parse the (uncompressed) text in byte ranges as Dask "
                                                        "tasks; the trace is the same as without.")] = False,
    format: Annotated[Optional[str], typer.Option("--format", help="Force a format instead of detecting it.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="A malformed line is an error (nothing written).")] = False,
    user_pages: Annotated[int, typer.Option(min=0, help="Working-set estimate: private pages a user task touches per "
                                                        "scheduled quantum (recorded in the trace metadata).")] = 6,
    kernel_pages: Annotated[int, typer.Option(min=0, help="Working-set estimate: global kernel pages any task touches per scheduled quantum.")] = 12,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (there is none either when stderr is not a terminal).")] = False,
    x2apic: Annotated[Optional[bool], typer.Option("--x2apic/--xapic", help="The guest's APIC mode (default: x2APIC iff "
                                                                            "write_msr to 0x800-0x8FF is recorded).")] = None,
    timer_device: Annotated[Optional[str], typer.Option(help="Timer the guest arms: lapic, tsc-deadline, pit, hpet "
                                                             "(default: from the recorded MSR writes, else lapic).")] = None,
    level_irqs: Annotated[Optional[str], typer.Option(help="Level-triggered I/O APIC IRQs, e.g. 5,9-11,16-23 (default QEMU's PCI INTx pins).")] = None,
    device: Annotated[Optional[list[str]], typer.Option(help="NETDEV=DEVICE: apply configs/devices/DEVICE.toml to that interface, e.g. eth0=e1000.")] = None,
    no_device: Annotated[Optional[list[str]], typer.Option(help="Switch one device's rules off (configs/devices/NAME.toml).")] = None,
    no_device_rules: Annotated[bool, typer.Option("--no-device-rules", help="No MMIO estimates from device rules.")] = False,
    *, cluster: ClusterOptions,
) -> None:
    """Import guest-side recordings into a trace (switches, faults, IRQs, idle, timers, MSRs, syscalls; estimated touches and device MMIO).

    With --out-dir, each recording into its own trace, as Dask tasks (the cluster options
    are replay's); exit 1 if any recording failed, the others are still imported. With
    --split, one big recording's lines are parsed in parallel ranges."""
    from pipeline.tracefile.importers.batch import Settings
    from pipeline.tracefile.importers.plan import Options, TIMER_DEVICES, parse_irqs
    from pipeline.tracefile.importers.working_set import WorkingSet

    if (out is None) == (out_dir is None):
        _report_fail("give -o OUT.parquet (FILES are one recording) or --out-dir DIR (each its own trace)")
    if split and out is None:
        _report_fail("--split parses one recording's ranges in parallel: give -o OUT.parquet (--out-dir runs "
                     "one task per recording already)")
    if timer_device is not None and timer_device not in TIMER_DEVICES:
        _report_fail(f"--timer-device {timer_device!r}: one of {', '.join(TIMER_DEVICES)}")
    pairs = [d.split("=", 1) for d in device or []]
    if any(len(p) != 2 or not all(p) for p in pairs):
        _report_fail("--device takes NETDEV=DEVICE, e.g. eth0=e1000")
    _known_devices([dev for _, dev in pairs] + list(no_device or ()))
    try:
        levels = None if level_irqs is None else parse_irqs(level_irqs)
    except ValueError as e:
        _report_fail(f"--level-irqs: {e}")
    options = Options(x2apic, timer_device, levels, not no_device_rules, frozenset(no_device or ()),
                      {netdev: dev for netdev, dev in pairs})
    settings = Settings(format, strict, WorkingSet(user_pages, kernel_pages), options)
    if out is not None:
        _import_one(files, out, settings, quiet, cluster if split else None)
    else:
        assert out_dir is not None
        _import_batch(files, out_dir, settings, cluster, quiet)


def _import_one(files: list[Path], out: Path, settings: Settings, quiet: bool, split: Optional[ClusterOptions]) -> None:
    """FILES, the parts of one recording, into the trace `out`: read here, or with `split` in
    byte ranges on that cluster."""
    from pipeline.reports.text_traces import import_progress, print_import
    from pipeline.tracefile.importers import ImportFailed

    total = 2 * sum(p.stat().st_size for p in files if p.is_file())   # the bytes of both passes: read, then written
    try:
        with import_progress(total, quiet) as progress, _chunk_source(split) as chunks:
            report = settings.run(files, out, progress, chunks)
    except ImportFailed as e:
        _report_fail(str(e))
    print_import(report, out_console)


@contextmanager
def _chunk_source(split: Optional[ClusterOptions]) -> Iterator[Any]:
    """How an import reads its files: here, or (`split`) in byte ranges on that cluster."""
    from pipeline.run.runner import connect
    from pipeline.tracefile.importers import read_chunks_in_order
    from pipeline.tracefile.importers.split import split_reader

    if split is None:
        yield read_chunks_in_order
        return
    spec = split.spec()
    try:
        with connect(spec) as client:
            yield split_reader(client)
    except ClusterError as e:
        _fail(str(e))


def _import_batch(inputs: list[Path], out_dir: Path, settings: Settings, cluster: ClusterOptions, quiet: bool) -> None:
    """Each recording under `inputs` into its own trace in `out_dir`, one Dask task each: the
    table of those imported, an error line for each that failed, exit 1 if any did."""
    from pipeline.reports.text_traces import batch_table, print_error
    from pipeline.run.runner import connect, task_progress
    from pipeline.tracefile.importers import ImportFailed, check_format
    from pipeline.tracefile.importers.batch import Failed, find_recordings, import_all

    try:
        check_format(settings.fmt)
    except ImportFailed as e:
        _report_fail(str(e))
    _fail_if_missing(inputs)
    spec = cluster.spec()
    found = find_recordings(inputs, out_dir)
    for line in found.skipped:
        _note(line)
    if not found.recordings:
        _report_fail(f"{inputs[0]}: no recordings found")
    with _holding(out_dir), task_progress(disable=quiet) as bar:
        task = bar.add_task("importing recordings", total=len(found.recordings))
        try:
            with connect(spec) as client:
                outcomes = import_all(client, found.recordings, settings, lambda: bar.advance(task))
        except ClusterError as e:
            _fail(str(e))
    failed = [o for o in outcomes if isinstance(o, Failed)]
    imported = [o for o in outcomes if not isinstance(o, Failed)]
    if imported:
        _show(batch_table(imported))
    for f in failed:
        print_error(out_console, f.error)
    if failed:
        _fail(f"{len(failed)} of {len(outcomes)} recordings failed; the others are imported in {out_dir}", 1)


def _known_devices(named: list[str]) -> None:
    """--device and --no-device name device files (configs/devices/NAME.toml): a typo must not
    silently switch nothing."""
    from pipeline.config.devices import DEVICES_DIR

    known = sorted(p.stem for p in DEVICES_DIR.glob("*.toml"))
    unknown = sorted(set(named) - set(known))
    if unknown:
        _report_fail(f"unknown device {unknown[0]!r} (known: {', '.join(known)}; configs/devices/NAME.toml)")


def _report_fail(line: str) -> None:
    """Exit 2 with an error line on stdout, where `import` and `kvm-stat` print their reports."""
    from pipeline.reports.text_traces import print_error
    print_error(out_console, line)
    raise typer.Exit(2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def record(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--out", help="Trace file to write (.parquet).")],
    cpu: Annotated[Optional[int], typer.Option(help="Record on this CPU only: perf and the command pinned to it (taskset), like the seed's UP guests.")] = None,
    workload: Annotated[Optional[str], typer.Option(help="Workload name in the trace metadata (default: the file stem).")] = None,
) -> None:
    """Run `-- CMD ARGS…` under perf record with the guest tracepoints and import the result."""
    from pipeline.reports.text_traces import print_import
    from pipeline.tracefile.importers import ImportFailed, import_files
    from pipeline.tracefile.record import RecordError, record_text

    if not ctx.args:
        _fail("nothing to record: give the command after --, e.g. `pipeline record -o t.parquet -- perf bench sched pipe`")
    with tempfile.TemporaryDirectory(prefix="hvreplay-") as tmp:
        text = Path(tmp) / f"{out.stem}.perf.txt"
        try:
            events = record_text(list(ctx.args), text, cpu=cpu)
            report = import_files([text], out, fmt="perf", workload=workload or out.stem)
        except (RecordError, ImportFailed) as e:
            _fail(str(e))
    say(out_console, f"recorded {len(events)} tracepoints: {', '.join(events)}")
    print_import(report, out_console)


@app.command("kvm-stat")
def kvm_stat(
    files: Annotated[list[Path], typer.Argument(help="Host-side KVM trace text: trace-cmd report (default, -N, -R), ftrace, perf script.")],
    out: Annotated[Optional[Path], typer.Option(help="STATS.parquet to write (per vCPU and exit reason; tables beside it).")] = None,
    tsc_hz: Annotated[Optional[float], typer.Option(help="TSC frequency, for traces timestamped in raw TSC counts.")] = None,
    event: Annotated[str, typer.Option(help="What a row is, as perf kvm stat report --event: vmexit (exit reasons), "
                                            "mmio (MMIO address and R/W), ioport (port and PIN/POUT).")] = "vmexit",
    key: Annotated[str, typer.Option("-k", "--key", help="Row order, as perf's -k: sample (most samples first) or "
                                                         "time (longest average time first).")] = "sample",
    vcpu: Annotated[Optional[int], typer.Option(help="Only this vCPU id (in a host of several VMs, each has a vCPU 0: "
                                                     "see --vcpu-thread).")] = None,
    vcpu_thread: Annotated[Optional[str], typer.Option(help="Only this host thread, as the trace prints it (comm-pid, "
                                                            "e.g. qemu-system-x86-483882) or its pid.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="A malformed KVM line or an out-of-order exit/entry pair is an "
                                                          "error (that file is not summarised).")] = False,
) -> None:
    """Per exit reason (or MMIO address, port): samples, shares, min/max/avg time ± stddev, like perf kvm stat report."""
    # Malformed lines and out-of-order exit/entry pairs are warnings (as in `import`), with
    # --strict errors for their file. Exit status: 0 every file summarised, 1 some files failed
    # but others were summarised, 2 none could be read, a bad option, or --out not written.
    from math import isfinite

    from pipeline.analysis.kvm_stat import EVENTS, KEYS, Selection, SelectionError, summarise, write_stats
    from pipeline.reports.text_traces import print_files, print_tables

    if tsc_hz is not None and not (isfinite(tsc_hz) and tsc_hz > 0):
        _report_fail(f"--tsc-hz {tsc_hz}: must be the TSC frequency in Hz, a positive number")
    for name, value, known in (("--event", event, EVENTS), ("--key", key, KEYS)):
        if value not in known:
            _report_fail(f"{name} {value}: must be one of {', '.join(known)}")
    try:
        stats = summarise(files, tsc_hz, strict, Selection(vcpu, vcpu_thread), key)
    except SelectionError as e:
        _report_fail(str(e))
    print_files(stats, out_console)
    read = [s for s in stats.files if s.error is None]
    if not read:
        raise typer.Exit(2)
    print_tables(stats, event, out_console)
    if out is not None:
        try:
            written = write_stats(stats, out)
        except OSError as e:
            _report_fail(f"--out {out}: the tables cannot be written ({e.filename}: {e.strerror or e})")
        say(out_console, f"wrote {', '.join(map(str, written))}")
    raise typer.Exit(1 if len(read) < len(stats.files) else 0)


VcpuThreadOpt = Annotated[str, typer.Option(help="The host thread that runs the guest's vCPU, as the trace prints it "
                                                  "(comm-pid, e.g. qemu-system-x86-483882, or the pid kvm-stat lists).")]


@app.command()
def compare(
    guest: Annotated[Path, typer.Argument(help="Guest trace (.parquet) with its recording clock (`pipeline import`).")],
    hosts: Annotated[list[Path], typer.Argument(help="Host-side KVM trace text of the same recording (as for kvm-stat).")],
    mode: Annotated[str, typer.Option(help=f"The mode whose predicted exits are compared with the measured ones; shipped: {SHIPPED_MODES}.")],
    modes_dir: ModesDirOpt = None,
    vcpu_thread: Annotated[str, typer.Option(help="'auto' (per guest vCPU, the thread whose exits follow its events) or "
                                                  "the thread, as the trace prints it (comm-pid, or the pid kvm-stat lists); "
                                                  "one per guest vCPU, comma-separated, in the order of its cpus.")] = "auto",
    window_slack_us: Annotated[float, typer.Option(min=0, help="Host exits count up to this long after the window's end "
                                                              "(and after a guest row when choosing the thread).")] = 20.0,
    out: Annotated[Optional[Path], typer.Option(help="Write the comparison here (.parquet, one row per guest vCPU and reason).")] = None,
    html: Annotated[Optional[Path], typer.Option(help="Also write a self-contained HTML page of it here.")] = None,
) -> None:
    """Per exit reason: the exits mode M predicts for the guest trace beside those the host trace measured."""
    from pipeline.analysis import compare as cmp
    from pipeline.reports.compare import compare_table, heading, lines, render_html
    from pipeline.reports.html_page import write_page

    try:
        available = load_modes(extra=modes_dir or [])
        if mode not in available:
            _fail(f"--mode {mode}: unknown mode; known: {', '.join(available)}")
        result = cmp.compare(cmp.load_guest(guest), cmp.load_host(hosts), available[mode], vcpu_thread,
                             round(window_slack_us * cmp.NS_PER_US))
    except (ConfigError, cmp.CompareError) as e:
        _fail(str(e))
    for c in result:
        if len(result) > 1:
            say(out_console, heading(c))
        for line in lines(c):
            say(out_console, line)
        _show(compare_table(c))
    page = render_html(result) if html else ""
    _write_outputs([(out, lambda p: write_atomic(p, cmp.frame(result).write_parquet)), (html, lambda p: write_page(p, page))])


def _write_outputs(outputs: list[tuple[Optional[Path], Callable[[Path], None]]]) -> None:
    """Write each output that was asked for (its path given), saying so; one that cannot be
    written is an error line."""
    for path, writer in outputs:
        if path is None:
            continue
        try:
            writer(path)
        except OSError as e:
            _fail(f"{path}: cannot be written ({e.strerror or e})")
        say(out_console, f"wrote {path}")


@app.command("host-costs")
def host_costs(
    hosts: Annotated[list[Path], typer.Argument(help="Host-side KVM trace text (as for kvm-stat).")],
    vcpu_thread: VcpuThreadOpt,
    out: Annotated[Path, typer.Option("-o", "--out", help="Cost profile to write (.toml).")],
    base: Annotated[Path, typer.Option(help="Profile whose figures the drivers without measured exits keep.",
                                       show_default=_in_repo(MODERN_PROFILE))] = MODERN_PROFILE,
) -> None:
    """A cost profile whose exit costs are the thread's measured mean exit-to-entry times."""
    from pipeline.analysis import compare as cmp
    from pipeline.reports.compare import host_cost_table

    try:
        base_profile = load_profile(base)
        profile, choices = cmp.measured_profile(cmp.load_host(hosts), vcpu_thread, base_profile, out.stem)
    except (ConfigError, cmp.CompareError) as e:
        _fail(str(e))
    _show(host_cost_table(choices, base_profile.name))
    _write_outputs([(out, lambda p: write_profile(p, profile, {d: c.ns for d, c in profile.costs.items()}, {}, {}))])


OutOpt = Annotated[Path, typer.Option("-o", "--out", help="Trace file to write (.parquet).")]


def _generate_command(generator: Generator) -> Callable[..., None]:
    """`pipeline generate NAME`: -o/--out, the generator's options in its order, --native-profile."""
    def command(out: Path, native_profile: Path, **options: int | bool) -> None:
        try:
            trace = generator.run(profile=_profile(native_profile), **options)
        except (ConfigError, ValueError) as e:   # a profile without [native] costs, --ticks 0, …
            _fail(str(e))
        _write(out, *trace)

    params = [_parameter("out", OutOpt),
              *(_parameter(p.name, Annotated[type(p.default), typer.Option(p.option, help=p.help)], p.default)
                for p in generator.params),
              _parameter("native_profile", NativeProfileOpt, START_PROFILE)]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # typer reads the options from it
    return command


def _add_generate_commands() -> None:
    for generator in GENERATORS:
        generate_app.command(generator.name, help=generator.summary)(_generate_command(generator))


_add_generate_commands()


def _profile(path: Path):
    try:
        return load_profile(path)
    except ConfigError as e:
        _fail(str(e))


def _write(out: Path, columns: dict, meta) -> None:
    from pipeline.tracefile.format import write_trace

    write_trace(out, columns, meta)
    say(out_console, f"wrote {out}: {len(columns['kind'])} events, {meta.workload}, "
                     f"native {meta.native_ns / 1e9:.4g} s for {count_of(meta.ops, meta.op_unit)}")


if __name__ == "__main__":
    sys.exit(app())
