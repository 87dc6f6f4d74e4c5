"""What `pipeline compare` and `pipeline host-costs` print, and compare's HTML page.

The terminal and the page show the same cells (`grid`) and the same sentences (`lines`):
which thread, which window, what "predicted" and "measured" are, which reasons the model
does not produce. The page is built from the HTML report's parts (html_page: figures,
tables, the page around them), so it opens offline the same way.
"""
from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go
from rich.table import Table

from pipeline.analysis.compare import NS_PER_US, Comparison, CostChoice, ReasonRow, Score
from pipeline.reports.html_page import Section, _Page, _table, document, log_axis
from pipeline.text import markup_safe

HEADER = ["reason", "predicted", "measured", "error", "mean exit→entry (µs)", "predicted host (µs)", "measured host (µs)"]
COLOURS = {"predicted": "#1f77b4", "measured": "#444444"}   # modelled: the mode colour of the report; measured: black


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "—" if value is None else format(value, fmt)


def _cells(r: ReasonRow) -> list[str]:
    error = "—" if r.error_pct is None else f"{r.error_pct:+.1f}%"
    return [r.reason, str(r.predicted), str(r.measured), error, _num(r.mean_exit_us), _num(r.predicted_host_us, ",.1f"),
            _num(r.measured_host_us, ",.1f")]


def grid(c: Comparison) -> list[list[str]]:
    """The table's rows as text: one per reason, then the total without HLT, then the total."""
    return [_cells(r) for r in c.rows] + [_cells(c.busy), _cells(c.total)]


def _seconds(ns: int) -> str:
    return f"{ns / 1e9:.6f}"


def thread_line(c: Comparison) -> str:
    """Which host thread, and why: its score beside the runner-up's."""
    if c.named:
        return f"vcpu thread: {c.thread.name} (named)"
    best = next(s for s in c.scores if s.thread == c.thread)
    rest = [s for s in c.scores if s.thread != c.thread]
    slack = f"{c.window.slack / NS_PER_US:g} µs"
    what = ("HLT exits", "guest hlt row", "hlt rows") if best.basis == "HLT" else ("exits", "guest row", "rows")
    nxt = f"next: {rest[0].thread.name}, {_of(rest[0])}" if rest else "no other thread"
    return (f"vcpu thread: {c.thread.name} ({best.exits_matched} of its {best.exits} {what[0]} within {slack} after a "
            f"{what[1]}, {best.rows_matched} of the guest's {best.rows} {what[2]} followed by one; {nxt})")


def _of(s: Score) -> str:
    return f"{s.exits_matched} of {s.exits}"


def lines(c: Comparison) -> list[str]:
    """The sentences around the table: what was compared, and what the model leaves out."""
    w = c.window
    out = [thread_line(c),
           f"window: {_seconds(w.start)}–{_seconds(w.end)} s on the recording clock ({(w.end - w.start) / 1e9:.6g} s): "
           f"{c.replayed} guest rows replayed, host exits counted to {w.slack / NS_PER_US:g} µs after its end "
           "(an exit follows its guest event by µs)",
           f"predicted = modelled by mode {c.mode} (the replayed rows' exit drivers, by their {c.isa} exit reason); "
           f"measured = the exits of {c.thread.name} in the host trace; counts, times in µs; "
           "exit→entry = kvm_exit to the thread's next kvm_entry; predicted host = predicted × that mean; "
           "error = (predicted − measured) ÷ measured"]
    if c.drivers:
        out.append("exit drivers by reason: " + "; ".join(f"{r} ← {', '.join(d)}" for r, d in sorted(c.drivers.items())))
    if c.not_produced:
        out.append(f"not produced by {c.mode}: {', '.join(c.not_produced)}"
                   + (f" (no exit driver models {', '.join(c.not_modelled)})" if c.not_modelled else ""))
    if c.never_measured:
        out.append(f"predicted, never on the host: {', '.join(c.never_measured)}: no measured mean, so no predicted host time (—)")
    if "HLT" in {r.reason for r in c.rows}:
        out.append("HLT's exit→entry includes the halt itself (the vCPU sleeps until its wake-up)")
    out += [f"exit driver {d} ({n}): no {c.isa} exit reason, left out of the table" for d, n in c.unmapped.items()]
    if c.untimed:
        out.append(f"{c.untimed} measured exit(s) without a following kvm_entry: counted, not timed")
    return out + c.warnings


def compare_table(c: Comparison) -> Table:
    table = Table(title=markup_safe(f"Exits by reason: {c.mode} predicted vs measured on {c.thread.name}"),
                  caption="totals: counts and host time over every reason but HLT (the halt's exit→entry is the guest's "
                          "idle time), then over every reason (predicted host time: of the reasons with a measured mean)")
    for name in HEADER:
        table.add_column(name, justify="left" if name == "reason" else "right")
    *reasons, busy, total = grid(c)
    for row in reasons:
        table.add_row(*map(markup_safe, row))
    table.add_section()
    for row in (busy, total):
        table.add_row(*map(markup_safe, row))
    return table


def host_cost_table(choices: list[CostChoice], base: str) -> Table:
    """Per exit driver: the unit cost written and where it came from."""
    table = Table(title=markup_safe(f"Exit unit costs (ns): measured, or kept from {base}"))
    for name in ("driver", "reason", "exits", "ns", "low", "high", "from"):
        table.add_column(name, justify="left" if name in ("driver", "reason", "from") else "right")
    for ch in choices:
        table.add_row(ch.driver, ch.reason or "—", str(ch.times.exits) if ch.times else "0",
                      f"{ch.cost.ns:.4g}", f"{ch.cost.low:.4g}", f"{ch.cost.high:.4g}", markup_safe(ch.origin))
    return table


def heading(c: Comparison) -> str:
    return f"guest vCPU {c.cpu}: exits by reason"


# ---------------------------------------------------------------- HTML
def render_html(comparisons: list[Comparison]) -> str:
    """The page: per guest vCPU its sentences, the figure and the table."""
    first = comparisons[0]
    page = _Page([first.mode], "")
    sections = [Section(f"vcpu-{c.cpu}", heading(c), "".join(f"<p>{html.escape(line)}</p>" for line in lines(c))
                        + _figure(page, c) + _table(HEADER, grid(c), f"{c.mode} predicted vs measured exits of "
                                                    f"{c.thread.name}, per exit reason", error_column=3))
                for c in comparisons]
    lede = (f"<p>Mode {html.escape(first.mode)} (predicted, modelled) against the host trace (measured), per exit "
            f"reason of each guest vCPU's host thread.</p>")
    return document(f"hvreplay compare: {Path(first.guest).name}", lede, sections,
                    f"Written by <code>pipeline compare</code> from {html.escape(first.guest)} and "
                    f"{html.escape(', '.join(first.hosts))}.")


def _figure(page: _Page, c: Comparison) -> str:
    """Predicted beside measured per reason, on a log axis from below the smallest count, so a
    reason of 5 exits stays visible beside one of 1000 (a zero draws no bar)."""
    reasons = [r.reason for r in c.rows]
    fig = go.Figure()
    for side in ("predicted", "measured"):
        values = [getattr(r, side) for r in c.rows]
        name = f"predicted ({c.mode})" if side == "predicted" else "measured (host trace)"
        fig.add_bar(name=name, x=reasons, y=values, marker_color=COLOURS[side], text=values, textposition="outside",
                    cliponaxis=False, hovertemplate=f"%{{x}}: %{{y}} exits<extra>{html.escape(name)}</extra>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="exits in the window (log scale)",
                     **log_axis([float(v) for r in c.rows for v in (r.predicted, r.measured)]))
    fig.update_xaxes(title_text=f"exit reason ({c.isa})")
    w = c.window
    return page.figure(fig, f"Exits by reason: {c.mode} predicted vs measured on {c.thread.name}",
                       f"predicted: modelled by mode {c.mode}; measured: host trace; window {_seconds(w.start)}–"
                       f"{_seconds(w.end)} s (+{w.slack / NS_PER_US:g} µs for the host)")
