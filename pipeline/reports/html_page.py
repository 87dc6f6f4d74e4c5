"""The HTML report: one self-contained file (plotly.js inlined once) that opens offline.

It draws the same numbers as the terminal report, from the same summary columns and
terminal.py helpers: per workload the modelled time by mode beside the reference's
measurements, where the time goes by cost category, the top cost sources; across
workloads the per-op latency, the sweeps and the calibration cells. Every figure names
the cost profile that priced it and says what is modelled. The page is the SECTIONS in
order, each workload's section the WORKLOAD_FIGURES: adding a figure is adding a function
to one of them (their docstrings say how).
"""
from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import plotly.graph_objects as go
import plotly.io as pio
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from plotly.colors import qualitative

from pipeline.atomic import write_atomic
from pipeline.analysis.attribution import DIMENSIONS
from pipeline.config.measurements import Reference
from pipeline.reports.terminal import (TOP_CAPTION, display_scale, failures, headline_value, mode_order, profile_names, seed_rows,
                             top_grid, trace_label, trace_rows)
from pipeline.reports.data import Attribution, Calibration, Sweep
from pipeline.run.results import part_name, parts
from pipeline.config.units import BY_HEADLINE, UNITS
from replay.kernel import BUSY_KIND
from replay.kinds import Kind

# Every event kind its own colour, fixed: a rotating palette gave two kinds one colour once
# many address spaces had used it up (touch and io in hackbench's charts).
KIND_COLOURS = dict(zip([k.name.lower() for k in Kind] + [BUSY_KIND], qualitative.Light24))
# One palette per kind of thing, so a colour means one thing on the whole page; a dict is a
# fixed table, a list is handed out in turn.
PALETTES: dict[str, list[str] | dict[str, str]] = {
    "mode": qualitative.D3, "part": ["#b9b9b9", *qualitative.Set2[:7], *qualitative.Pastel1],
    "kind": KIND_COLOURS, "asid": qualitative.Alphabet, "device": qualitative.Alphabet, "line": qualitative.Dark24}
MODELLED = "native = the trace's own time (generated or recorded); every other mode is modelled: native + Σ count × unit cost"
FIG_HEIGHT = 430
NO_CALIBRATION = '<p class="note">No reference cell matches a replayed (workload, mode) in these results.</p>'


@dataclass(frozen=True)
class ReportInputs:
    """Everything the page shows; only the summary is required."""

    name: str                                  # the results folder, as the user named it
    summary: pl.DataFrame
    reference: Reference | None = None
    attribution: Attribution | None = None
    calibration: Calibration | None = None
    sweeps: list[Sweep] = field(default_factory=list)


def write_report(path: Path, inputs: ReportInputs) -> None:
    write_page(path, render(inputs))


def write_page(path: Path, page: str) -> None:
    """Write a page (atomically)."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))


def render(inputs: ReportInputs) -> str:
    """The whole page as one string: the SECTIONS in order."""
    page = _Page(mode_order(inputs.summary), profile_names(inputs.summary))
    return _document(inputs.name, page, [section for make in SECTIONS for section in make(page, inputs)])


@dataclass(frozen=True)
class Section:
    anchor: str
    heading: str
    body: str       # HTML

    def to_html(self) -> str:
        return f'<section id="{html.escape(self.anchor)}"><h2>{html.escape(self.heading)}</h2>{self.body}</section>'


class _Page:
    """Figure numbering and the colours that stay the same across every figure."""

    def __init__(self, modes: list[str], profile: str) -> None:
        self.modes, self.profile, self.count = modes, profile, 0
        self._colours: dict[tuple[str, str], str] = {}
        for m in modes:
            self.colour("mode", m)

    def colour(self, kind: str, key: str) -> str:
        """The colour of `key` among things of `kind` (a key of PALETTES), fixed once given."""
        palette = PALETTES[kind]
        if isinstance(palette, dict):
            return palette[key]
        if (kind, key) not in self._colours:
            self._colours[(kind, key)] = palette[sum(k == kind for k, _ in self._colours) % len(palette)]
        return self._colours[(kind, key)]

    def figure(self, fig: go.Figure, title: str, subtitle: str, height: int = FIG_HEIGHT, top: int = 90) -> str:
        """The figure as a div + script, titled, with the profile and 'modelled' in its subtitle."""
        self.count += 1
        fig.update_layout(template="plotly_white", height=height, margin=dict(t=top, l=70, r=30, b=60),
                          title=dict(text=f"{html.escape(title)}<br><sup>{html.escape(subtitle)}</sup>", x=0.01),
                          legend=dict(title=dict(text="")), font=dict(size=13))
        div = pio.to_html(fig, include_plotlyjs=False, full_html=False, div_id=f"fig{self.count}",
                          config={"displaylogo": False, "responsive": True})
        return f'<div class="figure">{div}</div>'


class Workload(NamedTuple):
    """What a figure of a workload's section draws: its trace, its label, its rows in mode order."""

    trace: str
    name: str
    rows: pl.DataFrame


def _overview(page: _Page, inputs: ReportInputs) -> Iterator[Section]:
    table = _table(["workload (unit)", *page.modes], seed_rows(inputs.summary),
                   f"Modelled time by mode (×native) · cost profile {page.profile}. {MODELLED}.")
    yield Section("overview", "Overview", table + _per_op_figure(page, inputs.summary))


def _per_op_figure(page: _Page, summary: pl.DataFrame) -> str:
    """Time per op of every trace, one panel per op unit: a µs per timer tick beside a µs per
    context switch would put unlike things on one axis."""
    ok = summary.filter(pl.col("status") == "ok")
    traces = [t for t in trace_rows(summary) if t[2] is not None]
    units = list(dict.fromkeys(op_unit for *_, op_unit in traces))
    if not units:   # no trace has a result: the overview's table says so
        return ""
    fig = make_subplots(rows=1, cols=len(units), subplot_titles=[f"per {u}" for u in units], horizontal_spacing=0.08,
                        column_widths=[sum(t[3] == u for t in traces) for u in units])
    for col, unit in enumerate(units, start=1):
        mine = [trace for trace, *_, op_unit in traces if op_unit == unit]
        for mode in page.modes:
            rows = {r["trace"]: r for r in ok.filter((pl.col("mode") == mode) & pl.col("trace").is_in(mine)).iter_rows(named=True)}
            fig.add_bar(name=mode, legendgroup=mode, showlegend=col == 1, x=[t for t in mine if t in rows],
                        y=[rows[t]["ns_per_op"] / 1e3 for t in mine if t in rows], marker_color=page.colour("mode", mode),
                        hovertemplate=f"{mode}<br>%{{x}}: %{{y:.4g}} µs per {unit}<extra></extra>", row=1, col=col)
        values = ok.filter(pl.col("trace").is_in(mine))["ns_per_op"] / 1e3
        fig.update_yaxes(title_text=f"µs per {unit} (log scale)", **log_axis(values.to_list()), row=1, col=col)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="trace")
    return page.figure(fig, "Per-op latency by mode, every workload, one panel per op unit",
                       f"modelled, cost profile {page.profile}; native = the trace's own time per op")


def log_axis(values: list[float]) -> dict:
    """A log axis's settings: labels at decades only (plotly's own also label 2 and 5 between
    them, which reads '5, 2, 10, 5, 2, 1'), unlabelled minor ticks and grid at 2–9."""
    return dict(type="log", range=_log_range(values), dtick=1,
                minor=dict(dtick="D1", ticks="outside", showgrid=True, gridcolor="#f2f2f2"))


def _log_range(values: list[float]) -> list[float]:
    """A log axis from half a decade below the smallest bar (a bar's base is the axis's bottom,
    so an axis starting just under the smallest value would draw it as nearly nothing), and
    down to a decade at least, so that it has a labelled tick."""
    positive = [v for v in values if v > 0]
    if not positive:
        return [0, 1]
    low, high = math.log10(min(positive)), math.log10(max(positive))
    return [min(low - 0.5, math.floor(high)), high + 0.15]


def _workloads(page: _Page, inputs: ReportInputs) -> Iterator[Section]:
    """A section per workload with a headline, made of the WORKLOAD_FIGURES in order."""
    ok = inputs.summary.filter(pl.col("status") == "ok")
    for trace, _, headline, _ in trace_rows(inputs.summary):
        if headline is not None:
            rows = ok.filter(pl.col("trace") == trace).sort("mode_rank")
            workload = Workload(trace, trace_label(rows["workload"][0], trace), rows)
            yield Section(f"trace-{trace}", workload.name,
                          "".join(figure(page, inputs, workload) for figure in WORKLOAD_FIGURES))


def _time_figure(page: _Page, inputs: ReportInputs, workload: Workload) -> str:
    reference, name, rows = inputs.reference, workload.name, workload.rows
    first = rows.row(0, named=True)
    _, label = display_scale(first)
    modes, values = rows["mode"].to_list(), [headline_value(r) for r in rows.iter_rows(named=True)]
    fig = go.Figure(go.Bar(x=modes, y=values, name="modelled", marker_color=[page.colour("mode", m) for m in modes],
                           text=[f"{v:.3g}" for v in values], textposition="inside", insidetextanchor="start",
                           showlegend=False, hovertemplate="%{x}: %{y:.4g} " + label + "<extra>modelled</extra>"))
    cells = [c for c in (reference.cells if reference else ()) if c.workload == first["workload"] and c.mode in modes]
    ref_name = reference.name if reference else ""
    if cells:
        shown = BY_HEADLINE[first["headline"]]
        measured = [shown.value(first, UNITS[c.unit].virt_ns(c.value, first)) for c in cells]
        fig.add_scatter(x=[c.mode for c in cells], y=measured, mode="markers", name=f"measured ({ref_name})",
                        marker=dict(symbol="diamond", size=13, color="black", line=dict(color="white", width=1)),
                        hovertemplate="%{x}: %{y:.4g} " + label + "<extra>measured</extra>")
    fig.update_yaxes(title_text=f"{label} (log scale)", **log_axis(values + (measured if cells else [])))
    fig.update_xaxes(title_text="mode")
    fig.update_layout(showlegend=True)
    source = f"; ◆ measured: {ref_name}" if cells else "; no reference measurement for this workload"
    return page.figure(fig, f"{name}: time by mode ({label})",
                       f"bars modelled, cost profile {page.profile}{source}")


def _category_figure(page: _Page, inputs: ReportInputs, workload: Workload) -> str:
    name, rows = workload.name, workload.rows
    first = rows.row(0, named=True)
    scale, label = display_scale(first)
    modes = rows["mode"].to_list()
    shown = [c for c in parts(rows) if c == "native_ns" or rows[c].abs().sum() > 0]
    fig = go.Figure()
    unit = BY_HEADLINE[first["headline"]]
    for part in shown:
        legend = "native (trace time)" if part == "native_ns" else part_name(part)
        ys = [unit.native_value(r) if part == "native_ns" else r[part] / scale for r in rows.iter_rows(named=True)]
        fig.add_bar(name=legend, x=modes, y=ys, marker_color=page.colour("part", part),
                    hovertemplate="%{x}: %{y:.4g} " + label + f"<extra>{legend}</extra>")
    fig.update_layout(barmode="relative")
    fig.update_yaxes(title_text=label)
    fig.update_xaxes(title_text="mode")
    return page.figure(fig, f"{name}: where the time goes, by cost category ({label})",
                       f"modelled overhead per category (count × unit cost), cost profile {page.profile}; "
                       "native = trace time; below zero = time saved")


def _attribution(page: _Page, inputs: ReportInputs, workload: Workload) -> str:
    attribution, trace, name, rows = inputs.attribution, *workload
    if attribution is None:
        return ""
    if attribution.top is None:
        return f'<p class="note">{html.escape(attribution.note)}</p>'
    note = f'<p class="note">{html.escape(attribution.note)}</p>' if attribution.note else ""
    parts = [note]
    for dimension, ranked in attribution.top.items():
        mine = ranked.filter(pl.col("trace") == trace)
        if not len(mine):
            parts.append(f"<p>No modelled cost is attributed to any {DIMENSIONS[dimension]} in {html.escape(name)}.</p>")
            continue
        parts.append(_top_figure(page, attribution.profile, name, mine, rows, dimension))
        label, modes, grid = top_grid(ranked, inputs.summary, trace)
        caption = f"{name}: top cost sources by {DIMENSIONS[dimension]}, {label}, cost profile {attribution.profile}. {TOP_CAPTION}"
        parts.append(f"<details><summary>Top sources by {DIMENSIONS[dimension]}: table</summary>"
                     f"{_table(['#', *modes], grid, caption)}</details>")
    return "".join(parts)


def _top_figure(page: _Page, profile: str, name: str, mine: pl.DataFrame, rows: pl.DataFrame, dimension: str) -> str:
    """Each mode's overhead split over its top sources, as shares: modes differ by orders of
    magnitude, their make-up is what compares; the hover and the table give the times."""
    scale, label = display_scale(rows.row(0, named=True))
    modes = [m for m in rows["mode"].to_list() if m in set(mine["mode"])]
    sources = mine.sort("rank")["source"].unique(maintain_order=True).to_list()
    fig = go.Figure()
    for source in sources:
        part = {r["mode"]: r for r in mine.filter(pl.col("source") == source).iter_rows(named=True)}
        fig.add_bar(name=source, orientation="h", y=modes, x=[100 * part[m]["share"] if m in part else 0 for m in modes],
                    customdata=[part[m]["time_ns"] / scale if m in part else 0 for m in modes],
                    marker_color="#c7c7c7" if source == "other" else page.colour(dimension, source),
                    hovertemplate="%{y}: %{x:.1f}%, %{customdata:.4g} " + label + f"<extra>{html.escape(source)}</extra>")
    fig.update_layout(barmode="relative")
    fig.update_yaxes(title_text="mode", autorange="reversed")
    fig.update_xaxes(title_text="% of the mode's modelled overhead", ticksuffix="%")
    return page.figure(fig, f"{name}: top cost sources by {DIMENSIONS[dimension]}, share of each mode's overhead",
                       f"modelled (count × unit cost), cost profile {profile}; other = the remaining sources; "
                       f"times ({label}) in the hover and the table",
                       height=max(320, 130 + 45 * len(modes), 170 + 22 * len(sources)))


def _sweeps(page: _Page, inputs: ReportInputs) -> Iterator[Section]:
    for sweep in inputs.sweeps:
        yield _sweep(page, sweep)


def _sweep(page: _Page, sweep: Sweep) -> Section:
    table, keys = sweep.table, sweep.keys
    x_key, others = keys[0], keys[1:]
    mode, baseline = table["mode"][0].split("~")[0], table["baseline"][0].split("~")[0]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=(f"gain = {baseline} time ÷ {mode} time", "CR3 target cache hit rate"))
    lines = table.select("trace", *others).unique(maintain_order=True).rows()
    dashes = ["solid", "dash", "dot", "dashdot"]  # lines that coincide stay visible
    for i, line in enumerate(lines):
        match = table.filter(pl.all_horizontal([pl.col(c) == v for c, v in zip(["trace", *others], line)]))
        match = match.sort(x_key)
        label = " · ".join([line[0], *[f"{k}={v}" for k, v in zip(others, line[1:])]])
        colour = page.colour("line", label)
        xs = [str(v) for v in match[x_key]]
        fig.add_scatter(x=xs, y=match["gain"].to_list(), name=label, legendgroup=label, mode="lines+markers",
                        line=dict(color=colour, dash=dashes[i % 4]), row=1, col=1, hovertemplate="%{x}: %{y:.3f}×<extra>" + label + "</extra>")
        rates = [None if r is None else 100 * r for r in match["cr3_cache_hit_rate"]]
        fig.add_scatter(x=xs, y=rates, name=label, legendgroup=label, showlegend=False, mode="lines+markers",
                        line=dict(color=colour, dash=dashes[i % 4]), row=1, col=2, hovertemplate="%{x}: %{y:.1f}%<extra>" + label + "</extra>")
    fig.update_xaxes(title_text=x_key, type="category")
    fig.update_yaxes(title_text="gain (×, modelled)", row=1, col=1)
    fig.update_yaxes(title_text="hits (% of CR3 writes)", range=[0, 100], row=1, col=2)
    figure = page.figure(fig, f"Sweep: {mode} against {baseline} by {x_key}",
                         f"modelled, cost profile {sweep.profile}; baseline with the same settings less the paravirt guest's own",
                         height=490, top=120)
    return Section(f"sweep-{'-'.join(keys)}", f"Sweep of {mode} over {', '.join(keys)}", figure)


def _calibration(page: _Page, inputs: ReportInputs) -> Iterator[Section]:
    cells = NO_CALIBRATION if inputs.calibration is None else _calibration_cells(page, inputs.calibration)
    yield Section("calibration", "Calibration", cells)


def _calibration_cells(page: _Page, calibration: Calibration) -> str:
    cells = calibration.cells
    rows = [[r["workload"], r["mode"], r["unit"].replace("us", "µs"), f"{r['measured']:.4g}", f"{r['predicted']:.4g}",
             f"{r['error_pct']:+.1f}%", r["role"]] for r in cells.iter_rows(named=True)]
    table = _table(["workload", "mode", "unit", "measured", "modelled", "error", "role"], rows,
                   f"Measured vs modelled, cost profile {calibration.profile}: {calibration.source}. "
                   "error = (modelled − measured) ÷ measured; native cells check the traces (no cost enters them).",
                   error_column=5)
    fig = go.Figure()
    for mode in cells["mode"].unique(maintain_order=True):
        part = cells.filter(pl.col("mode") == mode)
        fig.add_bar(name=mode, x=part["workload"].to_list(), y=part["error_pct"].to_list(), marker_color=page.colour("mode", mode),
                    hovertemplate=f"{mode} · %{{x}}: %{{y:+.1f}}%<extra></extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="error, % of measured (modelled − measured)", zeroline=True)
    fig.update_xaxes(title_text="workload")
    figure = page.figure(fig, "Calibration: modelled vs measured, error per reference cell",
                         f"modelled with cost profile {calibration.profile}; measured: the reference (table below)")
    return figure + table


def _failed(page: _Page, inputs: ReportInputs) -> Iterator[Section]:
    bad = failures(inputs.summary)
    if bad:
        yield Section("failures", "Failed traces", "<ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in bad) + "</ul>")


SECTIONS: tuple[Callable[[_Page, ReportInputs], Iterable[Section]], ...] = (
    _overview, _workloads, _sweeps, _calibration, _failed)
"""The page's sections, in this order; adding one is adding a function here.

Each is called as `make(page, inputs)` and yields the sections it adds (none, one, or
one per sweep, …): `page` numbers the figures (page.figure turns a plotly figure into
HTML, titled, with the cost profile in its subtitle) and keeps every colour fixed across
the page (page.colour), `inputs` is everything the report read. The nav bar lists every
section. The simplest to copy: `_failed`."""

WORKLOAD_FIGURES: tuple[Callable[[_Page, ReportInputs, Workload], str], ...] = (
    _time_figure, _category_figure, _attribution)
"""What each workload's section shows, in this order; adding a figure is adding a function here.

Each is called as `figure(page, inputs, workload)` (see SECTIONS for page and inputs;
`workload` is the trace's rows with status ok, in mode order) and returns its HTML
(usually one page.figure, "" for nothing). The simplest to copy: `_category_figure`."""


def _table(header: list[str], rows: list[list[str]], caption: str, error_column: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_td(c, i == error_column) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _td(text: str, is_error: bool) -> str:
    if not is_error or text == "—":   # no error without a measurement
        return f"<td>{html.escape(text)}</td>"
    size = abs(float(text.rstrip("%")))
    level = "good" if size <= 10 else "fair" if size <= 20 else "poor"
    return f'<td class="{level}">{html.escape(text)}</td>'


def _document(name: str, page: _Page, sections: list[Section]) -> str:
    lede = (f"<p class=\"lede\">Cost profile: <b>{html.escape(page.profile)}</b>. Modes: {html.escape(', '.join(page.modes))}.\n"
            f"{html.escape(MODELLED)}. Measured values come only from the reference measurements, marked as such.</p>")
    return document(f"hvreplay report: {name}", lede, sections,
                    f"Written by <code>pipeline report {html.escape(name)} --html</code>.")


def document(title: str, lede: str, sections: list[Section], footer: str) -> str:
    """A whole page: `title`, the `lede` and `footer` (HTML), a nav bar of the sections, the
    sections; plotly.js inlined, so it opens offline (every page of this project is one)."""
    nav = "".join(f'<a href="#{html.escape(s.anchor)}">{html.escape(s.heading)}</a>' for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
{lede}
<nav>{nav}</nav>
{"".join(s.to_html() for s in sections)}
<footer>{footer} Self-contained: plotly.js is embedded, nothing is fetched.</footer>
</body></html>
"""


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; max-width: 1250px; margin: 1em auto;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-top: .6em; }
nav { display: flex; flex-wrap: wrap; gap: .3em 1.2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
caption { caption-side: top; text-align: left; padding: .3em 0; color: #444; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
td.good { background: #e3f4e3; } td.fair { background: #fcf3d9; } td.poor { background: #f8dcdc; }
.note { background: #f4f4f4; border-left: 4px solid #999; padding: .5em .8em; }
.figure { margin: 1em 0 1.5em; }
footer { margin-top: 2em; color: #666; font-size: .9em; }
"""
