"""Terminal reports from a summary: the seed-shaped table, and where the time goes.

Every table says what its numbers are: native = the trace's own time (generated or
recorded), virtualized = modelled (native + Σ count × unit cost) under a named cost
profile.
"""
from __future__ import annotations

from math import floor, log10

import polars as pl
from rich.table import Table

from pipeline.analysis.attribution import DIMENSIONS
from pipeline.config.measurements import Cell, Reference
from pipeline.run.results import part_name, parts
from pipeline.text import markup_safe, printable
from pipeline.config.units import BY_HEADLINE, Row


def display_scale(row: Row) -> tuple[float, str]:
    """ns of a trace's run → its display unit: (ns per unit, label), e.g. (1e3 × ops, 'µs per switch')."""
    unit = BY_HEADLINE[row["headline"]]
    return unit.scale(row), unit.label(row["op_unit"])


def headline_value(row: Row) -> float:
    """A row's modelled figure in its trace's display unit (s, µs per op, % host CPU)."""
    return BY_HEADLINE[row["headline"]].value(row)


def trace_label(workload: str, trace: str) -> str:
    """How reports name a trace: its workload, and the trace too when they differ (control
    characters in either shown escaped: they come from the trace file)."""
    return printable(workload if trace == workload else f"{workload} · {trace}")


def mode_order(summary: pl.DataFrame) -> list[str]:
    ranked = summary.select("mode", "mode_rank").unique().sort("mode_rank")
    return ranked["mode"].to_list()


def trace_rows(summary: pl.DataFrame) -> list[tuple[str, str, str | None, str]]:
    """(trace, workload, headline, op unit) per trace; a trace that failed in every mode has
    no metadata to show, so its workload is its trace name and its headline None."""
    ok = summary.filter(pl.col("status") == "ok")
    rows = ok.select("trace", "workload", "headline", "op_unit").unique().sort("trace").rows() if len(ok) else []
    failed = sorted(set(summary["trace"]) - set(ok["trace"] if len(ok) else []))
    return rows + [(t, t, None, "") for t in failed]


def row_label(trace: str, workload: str, headline: str | None, op_unit: str) -> str:
    """A table row's name: "workload (unit)", or "trace (failed)" for a trace with no result."""
    unit = BY_HEADLINE[headline].label(op_unit) if headline else "failed"
    return f"{trace_label(workload, trace)} ({unit})"


def _cell(row: dict | None, native: float | None) -> str:
    if row is None:
        return "—"
    if row["status"] != "ok":
        return "failed"
    value = headline_value(row)
    ratio = f" ({ratio_text(value / native)})" if native else ""
    return f"{value:.3g}{ratio}"


def ratio_text(ratio: float) -> str:
    """×native with two significant digits of the overhead (ratio − 1), at least one decimal and
    at most four: 41.0×, 2.8×, 1.15×, 1.0020× (a mode that adds 0.2% is not shown as 1.0×)."""
    overhead = abs(ratio - 1)
    decimals = 1 if overhead == 0 else min(4, max(1, 1 - floor(log10(overhead))))
    return f"{ratio:.{decimals}f}×"


def seed_rows(summary: pl.DataFrame) -> list[list[str]]:
    """Rows: traces ("workload (unit)" first); then per mode the modelled time and its ×native
    ratio, as text. The terminal and the HTML report both show these."""
    index = {(r["trace"], r["mode"]): r for r in summary.iter_rows(named=True)}
    rows = []
    for trace, workload, headline, op_unit in trace_rows(summary):
        native_row = index.get((trace, "native"))
        native = headline_value(native_row) if native_row and native_row["status"] == "ok" else None
        rows.append([row_label(trace, workload, headline, op_unit),
                     *[_cell(index.get((trace, m)), native) for m in mode_order(summary)]])
    return rows


SEED_CAPTION = ("native = the trace's own time; other modes = native + Σ count × unit cost (modelled); "
                "% host CPU (idle guests) = (busy time + modelled overhead) ÷ the trace's span")


def seed_table(summary: pl.DataFrame, reference: Reference | None = None) -> Table:
    """Rows: traces; columns: modes; each cell the modelled time and its ×native ratio. With a
    reference, a "measured" row under each trace it covers: the published value and the
    model's error against it, so the table says how far the model is from the seed."""
    profile = profile_names(summary)
    modes = mode_order(summary)
    caption = SEED_CAPTION
    if reference is not None:
        caption += (f"; measured = {reference.name} ({reference.source}), as published; "
                    "(±%) = modelled − measured, in % of measured")
    table = Table(title=markup_safe(f"Modelled time by mode (×native)  ·  cost profile: {profile}"),
                  caption=markup_safe(caption))
    table.add_column("workload (unit)")
    for m in modes:
        table.add_column(m, justify="right", min_width=len(m))
    index = {(r["trace"], r["mode"]): r for r in summary.iter_rows(named=True)}
    for (trace, *_), row in zip(trace_rows(summary), seed_rows(summary)):
        table.add_row(*["[red]failed[/red]" if c == "failed" else markup_safe(c) for c in row])
        measured = measured_row(reference, [index.get((trace, m)) for m in modes]) if reference else None
        if measured:
            table.add_row(*measured, style="dim")
    return table


def measured_row(reference: Reference, rows: list[dict | None]) -> list[str] | None:
    """One trace's reference cells, a cell per mode (`rows`: its summary row per mode):
    "measured (error)", or None when the reference covers none of them."""
    cells = {(c.workload, c.mode, c.unit): c for c in reference.cells}
    matched = [None if r is None or r["status"] != "ok" else
               cells.get((r["workload"], r["mode"], BY_HEADLINE[r["headline"]].name)) for r in rows]
    if not any(matched):
        return None
    return ["  measured", *["" if c is None or r is None else _measured_cell(c, r) for c, r in zip(matched, rows)]]


def _measured_cell(cell: Cell, row: dict) -> str:
    error = round(100 * (headline_value(row) - cell.value) / cell.value, 1) + 0.0   # + 0.0: never "-0.0%"
    return f"{cell.value:.3g} ({error:+.1f}%)"


def category_table(summary: pl.DataFrame, trace: str) -> Table:
    """Where the time goes for one trace: rows modes, columns cost categories."""
    rows = summary.filter((pl.col("trace") == trace) & (pl.col("status") == "ok")).sort("mode_rank")
    first = rows.row(0, named=True)
    scale, label = display_scale(first)
    cats = [c for c in parts(summary)[1:] if rows[c].abs().sum() > 0]
    table = Table(title=markup_safe(f"{first['workload']} ({trace}): time by cost category, {label}  ·  "
                                    f"profile: {profile_names(summary)}"),
                  caption="native = trace time; categories = modelled overhead (count × unit cost)")
    for name in ["mode", "native", *[part_name(c) for c in cats], "total"]:
        table.add_column(name, justify="left" if name == "mode" else "right", min_width=len(name))
    unit = BY_HEADLINE[first["headline"]]
    for r in rows.iter_rows(named=True):
        values = [unit.native_value(r), *[r[c] / scale for c in cats], unit.value(r)]
        table.add_row(r["mode"], *[f"{v:.3g}" for v in values])
    return table


def failures(summary: pl.DataFrame) -> list[str]:
    bad = summary.filter(pl.col("status") != "ok").select("trace", "error").unique().sort("trace")
    return [f"{t}: {e}" for t, e in bad.rows()]


def profile_names(summary: pl.DataFrame) -> str:
    names = summary.filter(pl.col("status") == "ok")["profile"].unique().to_list() if "profile" in summary.columns else []
    return ", ".join(sorted(n for n in names if n)) or "?"


def prediction_table(predictions: list, title: str) -> Table:
    """Reference cells: measured vs modelled, error in %."""
    table = Table(title=title, caption="native cells check the traces (no cost enters them); the others test the fit")
    for name in ("workload", "mode", "unit", "measured", "modelled", "error", "role"):
        table.add_column(name, justify="left" if name in ("workload", "mode", "unit", "role") else "right")
    for p in predictions:
        colour = "green" if abs(p.error_pct) <= 10 else "yellow" if abs(p.error_pct) <= 20 else "red"
        table.add_row(p.workload, p.mode, p.unit, f"{p.measured:.4g}", f"{p.predicted:.4g}",
                      f"[{colour}]{p.error_pct:+.1f}%[/{colour}]", p.role)
    return table


def cost_table(costs: dict, profile_name: str) -> Table:
    """Fitted unit costs beside their starting figures and plausible ranges."""
    table = Table(title=f"Unit costs (ns), fitted from profile {profile_name}",
                  caption="bound = the fit pushed the cost to an end of its range; "
                          "not identifiable = the fitted cells cannot tell it apart, it stays near its start")
    for name in ("driver", "category", "start", "fitted", "range", "bound", "identified"):
        table.add_column(name, justify="right" if name in ("start", "fitted", "range") else "left")
    for f in costs.values():
        ident = "yes" if f.identifiable else ("not identifiable" if f.seen else "not counted")
        table.add_row(f.driver, f.cost.category, f"{f.start:.4g}", f"{f.fitted:.4g}",
                      f"{f.cost.low:.4g}–{f.cost.high:.4g}", f.at_bound, ident)
    return table


def sweep_table(gains: pl.DataFrame, keys: list[str], profile: str) -> Table:
    """Per grid point (rows) and trace (columns): modelled time, gain over the baseline, hit rate."""
    table = Table(title=f"Sweep: modelled time, gain over baseline (×), CR3-cache hit rate  ·  profile: {profile}",
                  caption="gain = baseline time ÷ variant time, both modelled with the same non-guest settings")
    for k in keys:
        table.add_column(k, justify="right")
    traces = gains.select("trace", "headline", "op_unit").unique().sort("trace").rows()
    for trace, headline, op_unit in traces:
        table.add_column(markup_safe(f"{trace} ({BY_HEADLINE[headline].label(op_unit)})"), justify="right")
    for settings in gains.select(keys).unique(maintain_order=True).rows():
        cells = []
        for trace, *_ in traces:
            match = gains.filter((pl.col("trace") == trace) & pl.all_horizontal(
                [pl.col(k) == v for k, v in zip(keys, settings)]))
            r = match.row(0, named=True) if len(match) else None
            rate = "" if r is None or r["cr3_cache_hit_rate"] is None else f", {r['cr3_cache_hit_rate']:.0%} hits"
            cells.append("—" if r is None else f"{headline_value(r):.3g} ({r['gain']:.2f}×{rate})")
        table.add_row(*map(str, settings), *cells)
    return table


def top_grid(ranked: pl.DataFrame, summary: pl.DataFrame, trace: str) -> tuple[str, list[str], list[list[str]]]:
    """One trace's top sources as text (attribution.top's rows): (unit label, modes,
    rows of [rank, one cell per mode]). Shared by the terminal and the HTML report."""
    first = summary.filter((pl.col("trace") == trace) & (pl.col("status") == "ok")).row(0, named=True)
    scale, label = display_scale(first)
    mine = ranked.filter(pl.col("trace") == trace)
    modes = [m for m in mode_order(summary) if m in set(mine["mode"])]
    cells = {(r["mode"], r["rank"]): r for r in mine.iter_rows(named=True)}

    def text(r: dict | None) -> str:
        if r is None:
            return ""
        many = "source" if r["sources"] == 1 else "sources"
        name = f"other ({r['sources']} {many})" if r["source"] == "other" else r["source"]
        return f"{name}  {r['time_ns'] / scale:.3g} ({_percent(r['share'])})"
    return label, modes, [[str(k), *[text(cells.get((m, k))) for m in modes]] for k in sorted(set(mine["rank"]))]


def _percent(share: float) -> str:
    """A share as a percentage that does not round a real cost to 0%."""
    return f"{100 * share:.0f}%" if abs(share) >= 0.01 or share == 0 else f"{100 * share:.1g}%"


def top_table(ranked: pl.DataFrame, summary: pl.DataFrame, trace: str, dimension: str, profile: str) -> Table:
    """One trace's top cost sources along one dimension: a row per (mode, rank), so the
    table stays narrow however many modes were replayed."""
    label, modes, rows = top_grid(ranked, summary, trace)
    workload = summary.filter(pl.col("trace") == trace)["workload"][0]
    table = Table(title=markup_safe(f"{workload} ({trace}): top cost sources by {DIMENSIONS[dimension]}"
                                    f"  ·  profile: {profile}"), caption=TOP_CAPTION)
    for name in ("mode", "#", markup_safe(f"source  time, {label} (share)")):
        table.add_column(name, justify="right" if name == "#" else "left")
    for col, mode in enumerate(modes, start=1):
        ranked_cells = [(row[0], row[col]) for row in rows if row[col]]
        for k, (rank, cell) in enumerate(ranked_cells):
            table.add_row(mode if k == 0 else "", rank, cell, end_section=k == len(ranked_cells) - 1)
    return table


TOP_CAPTION = ("modelled: Σ count × unit cost of each source's drivers; % of the mode's modelled overhead; "
               "negative = time saved")


def diff_table(d: pl.DataFrame, trace: str, names: tuple[str, str]) -> Table:
    """One trace's rows of diff.diff (in both): modelled time A, B, B − A and each part's
    change, in the trace's display unit."""
    rows = d.filter((pl.col("trace") == trace) & (pl.col("status") == "both"))
    first = rows.row(0, named=True)
    scale, label = display_scale(_diff_side(first, "a"))
    profiles = [" + ".join(sorted(set(rows[f"profile_{s}"].drop_nulls()))) or "?" for s in "ab"]
    changed = [p for p in parts_of(d) if rows[f"{p}_delta"].abs().sum() > 0]
    table = Table(title=markup_safe(f"{first['workload']} ({trace}): modelled time, A = {names[0]} (profile {profiles[0]}) "
                                    f"→ B = {names[1]} (profile {profiles[1]}), {label}"),
                  caption="Δ = B − A (% of A); native = the trace's own time, categories = modelled overhead")
    for name in ["mode", "A", "B", "Δ", *[f"Δ {part_name(p)}" for p in changed]]:
        table.add_column(name, justify="left" if name == "mode" else "right")
    for r in rows.iter_rows(named=True):
        table.add_row(r["mode"], *[f"{headline_value(_diff_side(r, s)):.4g}" for s in "ab"],
                      *[_change(r, p, scale) for p in ["virt_ns", *changed]])
    return table


def _diff_side(r: Row, side: str) -> dict:
    """Side `side` ("a" or "b") of a diff.diff row, shaped as a summary row for units.py."""
    return {**r, "virt_ns": r[f"virt_ns_{side}"], "native_ns": r[f"native_ns_{side}"]}


def parts_of(d: pl.DataFrame) -> list[str]:
    """The parts (native_ns, time_<category>_ns) a diff frame compares."""
    return [c.removesuffix("_delta") for c in d.columns
            if c.endswith("_delta") and c.removesuffix("_delta") != "virt_ns"]


def _change(r: dict, part: str, scale: float) -> str:
    pct = r[f"{part}_pct"]
    return f"{r[f'{part}_delta'] / scale:+.3g}" + ("" if pct is None else f" ({pct:+.1f}%)")
