"""The figure tables of README.md and docs/calibration.md, made from a real run of the shipped traces.

Typed by hand, the README's figures drifted from what the commands print. Each table here
is computed from a results summary with the functions the terminal and HTML reports use
(terminal.py's data helpers, calibrate.py), and written into its document between
`<!-- BEGIN generated: NAME -->` and `<!-- END generated -->`; a test regenerates them from
the shipped traces and fails when a document differs (tests/pipeline/test_readme_tables.py).

    pipeline replay traces/ --modes all --out results
    python -m pipeline.reports.readme_tables results           # rewrites the generated blocks
    python -m pipeline.reports.readme_tables results --check   # exit 1 if they are out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.analysis import calibrate as cal
from pipeline.config.cost_profile import DEFAULT_PROFILE, MODERN_PROFILE, START_PROFILE, Profile, load_profile
from pipeline.config.measurements import Reference, load_reference
from pipeline.reports.terminal import headline_value, mode_order, row_label, trace_rows
from pipeline.run.results import read_summary, summarise

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated -->)", re.S)
# The modelled-times tables' columns: shadow paging to EPT, then today's KVM beside EPT + VPID.
SHADOW_TO_EPT = ("kvm-trunk", "kvm-paravirt", "kvm-shadow-prevroots", "kvm-ept", "kvm-ept-vpid", "kvm-pv-modern")
TODAY = ("kvm-ept-vpid", "kvm-apicv", "kvm-noapicv", "kvm-apicv-haltpoll", "kvm-apicv-nopt")
GAIN = ("kvm-trunk", "kvm-paravirt")          # the seed's paravirt gain: trunk time ÷ paravirt time
HELD_OUT_FIT = ("lat-ctx-2", "hackbench-1")   # docs/calibration.md's fit: hackbench-5 and the idle guest held out
CLOSE_PCT = 10.0                              # the target for a fitted cell


@dataclass(frozen=True)
class Run:
    """What the tables are made from: one replay, priced with the default and the modern profile."""

    default: pl.DataFrame
    modern: pl.DataFrame
    reference: Reference


def load_run(results: Path) -> Run:
    """A results folder replayed with the default profile; the modern prices come from its
    counts (re-pricing never re-replays)."""
    summary = read_summary(results)
    return Run(summary, reprice(summary, load_profile(MODERN_PROFILE)), load_reference())


def reprice(summary: pl.DataFrame, profile: Profile) -> pl.DataFrame:
    """The summary's ok rows priced with `profile`: each row already holds its shards' summed counts."""
    ok = summary.filter(pl.col("status") == "ok")
    return summarise([(r["mode"], r) for r in ok.iter_rows(named=True)], [], profile, mode_order(summary))


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub table, first column left-aligned, the figures right-aligned."""
    lines = [header, [":---", *["---:"] * (len(header) - 1)], *rows]
    return "".join(f"| {' | '.join(cells)} |\n" for cells in lines)


def _rows(summary: pl.DataFrame) -> dict[tuple[str, str], dict]:
    return {(r["trace"], r["mode"]): r for r in summary.filter(pl.col("status") == "ok").iter_rows(named=True)}


def _pct(pct: float, digits: int = 0) -> str:
    """A signed percentage as the documents print it: a true minus, 0% unsigned."""
    shown = round(pct, digits)
    return "0%" if shown == 0 else f"{shown:+.{digits}f}%".replace("-", "−")


def _reference_traces(run: Run) -> dict[str, dict]:
    """Each reference workload's native row, of the trace calibration matches it to."""
    natives = run.default.filter((pl.col("status") == "ok") & (pl.col("mode") == "native"))
    workloads = dict.fromkeys(c.workload for c in run.reference.cells)
    return {w: cal.one_trace(natives.filter(pl.col("workload") == w), w) for w in workloads}


def _label(row: dict) -> str:
    return row_label(row["trace"], row["workload"], row["headline"], row["op_unit"])


def seed_table(run: Run) -> str:
    """Per reference workload and seed mode: modelled / measured (error), as the seed's table."""
    measured = {(c.workload, c.mode): c.value for c in run.reference.cells}
    modes = [m for m in mode_order(run.default) if any(mode == m for _, mode in measured)]
    index = _rows(run.default)
    rows = []
    for w, native in _reference_traces(run).items():
        cells = []
        for m in modes:
            model, seed = headline_value(index[(native["trace"], m)]), measured.get((w, m))
            cells.append(f"{model:.3g} / —" if seed is None else f"{model:.3g} / {seed:g} ({_pct(100 * (model - seed) / seed)})")
        rows.append([_label(native), *cells])
    return markdown(["workload (unit)", *modes], rows)


def modelled_table(modes: tuple[str, ...]) -> Callable[[Run], str]:
    """Per trace: native, then each of `modes` as default profile / modern profile."""
    def table(run: Run) -> str:
        default, modern = _rows(run.default), _rows(run.modern)
        rows = [[row_label(trace, workload, headline, op_unit), f"{headline_value(default[(trace, 'native')]):.3g}",
                 *[f"{headline_value(default[(trace, m)]):.3g} / {headline_value(modern[(trace, m)]):.3g}" for m in modes]]
                for trace, workload, headline, op_unit in trace_rows(run.default) if headline]
        return markdown(["workload (unit)", "native", *modes], rows)
    return table


def gains(run: Run) -> str:
    """The paravirt gain per reference workload, modelled beside the seed's, and the CR3
    cache's hit rate that bounds it."""
    over, under = GAIN
    ratios = cal.ratio(cal.modelled(run.default, run.reference, ()), over, under)
    index = _rows(run.default)
    hits = {w: index[(r["trace"], under)] for w, r in _reference_traces(run).items()}
    rates = ", ".join(f"{w} {r['cr3_cache_hit'] / r['cr3_writes']:.0%}" for w, r in hits.items() if r["cr3_writes"])
    return (f"Paravirt gain ({over} ÷ {under}), model / seed: "
            f"{', '.join(f'{w} {model:.2f} / {seed:.2f}' for w, seed, model in ratios)}. "
            f"Hits of {under}'s 4-entry CR3 cache, % of CR3 writes: {rates}.\n")


def _refit(run: Run, workloads: tuple[str, ...]) -> list[cal.Prediction]:
    """`pipeline calibrate results --fit WORKLOADS`'s cells: a fit from the starting profile."""
    start = load_profile(START_PROFILE)
    return cal.calibrate(cal.design(run.default, run.reference, start), start, list(workloads))[1]


def _modelled_cells(predictions: list[cal.Prediction]) -> list[cal.Prediction]:
    return [p for p in predictions if not cal.is_native(p)]


def fit_check(run: Run) -> str:
    """The default profile's fit, redone from its starting profile on these counts: the
    README quotes that command under the seed table, so its cells must be the table's."""
    fitted = load_profile(DEFAULT_PROFILE)
    refit = _refit(run, fitted.fitted_on)
    table = cal.modelled(run.default, run.reference, fitted.fitted_on)
    same = sum(f"{a.predicted:.3g}" == f"{b.predicted:.3g}" for a, b in zip(refit, table))
    worst = max(abs(p.error_pct) for p in _modelled_cells(refit))
    return (f"`pipeline calibrate results --fit {','.join(fitted.fitted_on)} --out /tmp/fit.toml` refits "
            f"`{fitted.name}` from `{load_profile(START_PROFILE).name}` on these counts: {same} of its {len(refit)} "
            f"cells print as in the table (largest error of a fitted cell {worst:.1f}%).\n")


def default_misses(run: Run) -> str:
    """How many of the default profile's modelled cells are within CLOSE_PCT, and the others."""
    cells = _modelled_cells(cal.modelled(run.default, run.reference, ()))
    far = sorted((p for p in cells if abs(p.error_pct) > CLOSE_PCT), key=lambda p: -abs(p.error_pct))
    return (f"{len(cells) - len(far)} of the {len(cells)} modelled cells are within {CLOSE_PCT:g}%; the others: "
            f"{', '.join(f'{p.workload} {p.mode} {_pct(p.error_pct)}' for p in far)}.\n")


def held_out_table(run: Run) -> str:
    """The cells of the fit on HELD_OUT_FIT, the others held out, as `pipeline calibrate` prints them."""
    labels = {w: _label(r) for w, r in _reference_traces(run).items()}
    rows, previous = [], ""
    for p in _modelled_cells(_refit(run, HELD_OUT_FIT)):
        rows.append(["" if p.workload == previous else labels[p.workload], p.mode, f"{p.measured:g}",
                     f"{p.predicted:.4g}", _pct(p.error_pct, 1), p.role.replace("-", " ")])
        previous = p.workload
    return markdown(["workload (unit)", "mode", "seed", "modelled", "error", "role"], rows)


def held_out_notes(run: Run) -> str:
    """Under the held-out table: the natives, the paravirt gains, and each workload's worst
    cells when a fit on the others predicts it (`--leave-one-out`)."""
    fit, labels = _refit(run, HELD_OUT_FIT), {w: _label(r) for w, r in _reference_traces(run).items()}
    natives = ", ".join(f"{labels[p.workload]} {p.predicted:.4g} ({_pct(p.error_pct)})" for p in fit if cal.is_native(p))
    over, under = GAIN
    ratios = ", ".join(f"{w} {model:.2f}× (seed {seed:.2f}×)" for w, seed, model in cal.ratio(fit, over, under))
    start = load_profile(START_PROFILE)
    loo = _modelled_cells(cal.leave_one_out(cal.design(run.default, run.reference, start), start))
    worst = "; ".join(f"{w} " + ", ".join(f"{p.mode} {_pct(p.error_pct, 1)}" for p in sorted(
        (p for p in loo if p.workload == w and abs(p.error_pct) > CLOSE_PCT), key=lambda p: -abs(p.error_pct)))
        for w in dict.fromkeys(p.workload for p in loo))
    return (f"Natives (traces, not fitted): {natives}. Paravirt gain ({over} ÷ {under}): {ratios}.\n\n"
            f"Leave one workload out (each predicted by a fit on the others), cells off by more than "
            f"{CLOSE_PCT:g}%: {worst}.\n")


@dataclass(frozen=True)
class Document:
    """A document with generated blocks: its path in the repository and what makes each block."""

    path: Path
    tables: dict[str, Callable[[Run], str]]


DOCUMENTS = (
    Document(Path("README.md"), {"seed-table": seed_table, "seed-fit": fit_check, "seed-gain": gains,
                                 "modern-shadow-ept": modelled_table(SHADOW_TO_EPT), "modern-today": modelled_table(TODAY)}),
    Document(Path("docs/calibration.md"), {"held-out-table": held_out_table, "held-out-notes": held_out_notes,
                                           "default-misses": default_misses}),
)
"""The generated blocks by document and name; each makes its block's text from one run."""


class MissingBlock(Exception):
    """A document lacks a block a table is for, or has one no table makes."""


def rewrite(text: str, run: Run, document: Document) -> str:
    """`text` (the document) with every generated block made anew from `run`."""
    names = [m["name"] for m in BLOCK.finditer(text)]
    if sorted(names) != sorted(document.tables):
        raise MissingBlock(f"{document.path}: generated blocks {sorted(names)}, tables for {sorted(document.tables)}")
    return BLOCK.sub(lambda m: m[1] + document.tables[m["name"]](run) + m[4], text)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("results", type=Path, help="`pipeline replay traces/ --modes all --out RESULTS` (default profile)")
    args.add_argument("--root", type=Path, default=ROOT, help="the folder the documents are in (the repository)")
    args.add_argument("--check", action="store_true", help="change nothing; exit 1 if a document's tables differ")
    opts = args.parse_args(argv)
    run, stale = load_run(opts.results), 0
    for document in DOCUMENTS:
        path = opts.root / document.path
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, run, document)
        stale += new != text
        if not opts.check:
            path.write_text(new, encoding="utf-8")
        print(f"{path}: {'up to date' if new == text else 'out of date' if opts.check else 'rewritten'}")
    return 1 if opts.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
