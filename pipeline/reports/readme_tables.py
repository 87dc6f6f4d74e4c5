"""The README's figure tables, made from a real run of the shipped traces.

Typed by hand, the README's figures drifted from what the commands print. Each table here
is computed from a results summary with the functions the terminal and HTML reports use
(terminal.py's data helpers, calibrate.py), and written into README.md between
`<!-- BEGIN generated: NAME -->` and `<!-- END generated -->`; a test regenerates them from
the shipped traces and fails when the README differs (tests/pipeline/test_readme_tables.py).

    pipeline replay traces/ --modes all --out results
    python -m pipeline.reports.readme_tables results           # rewrites README.md's tables
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

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- END generated -->)", re.S)
# The modelled-times tables' columns: shadow paging to EPT, then today's KVM beside EPT + VPID.
SHADOW_TO_EPT = ("kvm-trunk", "kvm-paravirt", "kvm-shadow-prevroots", "kvm-ept", "kvm-ept-vpid", "kvm-pv-modern")
TODAY = ("kvm-ept-vpid", "kvm-apicv", "kvm-noapicv", "kvm-apicv-haltpoll", "kvm-apicv-nopt")
GAIN = ("kvm-trunk", "kvm-paravirt")   # the seed's paravirt gain: trunk time ÷ paravirt time


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


def _error(model: float, measured: float) -> str:
    pct = round(100 * (model - measured) / measured)
    return "0%" if pct == 0 else f"{pct:+d}%".replace("-", "−")


def seed_table(run: Run) -> str:
    """Per reference workload and seed mode: modelled / measured (error), as the seed's table."""
    measured = {(c.workload, c.mode): c.value for c in run.reference.cells}
    workloads = list(dict.fromkeys(c.workload for c in run.reference.cells))
    modes = [m for m in mode_order(run.default) if any(mode == m for _, mode in measured)]
    ok, index = run.default.filter(pl.col("status") == "ok"), _rows(run.default)
    rows = []
    for w in workloads:
        trace = cal.one_trace(ok.filter((pl.col("workload") == w) & (pl.col("mode") == modes[0])), w)["trace"]
        cells = []
        for m in modes:
            model, seed = headline_value(index[(trace, m)]), measured.get((w, m))
            cells.append(f"{model:.3g} / —" if seed is None else f"{model:.3g} / {seed:g} ({_error(model, seed)})")
        first = index[(trace, modes[0])]
        rows.append([row_label(trace, w, first["headline"], first["op_unit"]), *cells])
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
    hits = {r["workload"]: r["cr3_cache_hit"] / r["cr3_writes"] for r in run.default.filter(
        (pl.col("mode") == under) & (pl.col("trace") == pl.col("workload"))).iter_rows(named=True) if r["cr3_writes"]}
    cells = ", ".join(f"{w} {model:.2f} / {seed:.2f}" for w, seed, model in ratios)
    rates = ", ".join(f"{w} {hits[w]:.0%}" for w, *_ in ratios if w in hits)
    return (f"Paravirt gain ({over} ÷ {under}), model / seed: {cells}. "
            f"Hits of {under}'s 4-entry CR3 cache, % of CR3 writes: {rates}.\n")


def fit_check(run: Run) -> str:
    """The default profile's fit, redone from its starting profile on these counts: the
    README quotes that command under the seed table, so its cells must be the table's."""
    fitted, start = load_profile(DEFAULT_PROFILE), load_profile(START_PROFILE)
    _, refit = cal.calibrate(cal.design(run.default, run.reference, start), start, list(fitted.fitted_on))
    table = cal.modelled(run.default, run.reference, fitted.fitted_on)
    same = sum(f"{a.predicted:.3g}" == f"{b.predicted:.3g}" for a, b in zip(refit, table))
    worst = max(abs(p.error_pct) for p in refit if p.role == "fit" and not cal.is_native(p))
    return (f"`pipeline calibrate results --fit {','.join(fitted.fitted_on)} --out /tmp/fit.toml` refits "
            f"`{fitted.name}` from `{start.name}` on these counts: {same} of its {len(refit)} cells print as in "
            f"the table (largest error of a fitted cell {worst:.1f}%).\n")


TABLES: dict[str, Callable[[Run], str]] = {
    "seed-table": seed_table, "seed-gain": gains, "seed-fit": fit_check,
    "modern-shadow-ept": modelled_table(SHADOW_TO_EPT), "modern-today": modelled_table(TODAY)}
"""README.md's generated blocks by name; each makes its block's text from one run."""


class MissingBlock(Exception):
    """The README lacks a block a table is for, or has one no table makes."""


def rewrite(text: str, run: Run) -> str:
    """`text` (README.md) with every generated block made anew from `run`."""
    names = [m["name"] for m in BLOCK.finditer(text)]
    if sorted(names) != sorted(TABLES):
        raise MissingBlock(f"generated blocks {sorted(names)} in the README, tables for {sorted(TABLES)}")
    return BLOCK.sub(lambda m: m[1] + TABLES[m["name"]](run) + m[4], text)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("results", type=Path, help="`pipeline replay traces/ --modes all --out RESULTS` (default profile)")
    args.add_argument("--readme", type=Path, default=README)
    args.add_argument("--check", action="store_true", help="change nothing; exit 1 if the README's tables differ")
    opts = args.parse_args(argv)
    text = opts.readme.read_text(encoding="utf-8")
    new = rewrite(text, load_run(opts.results))
    if opts.check:
        print(f"{opts.readme}: tables {'up to date' if new == text else 'out of date'}")
        return 0 if new == text else 1
    opts.readme.write_text(new, encoding="utf-8")
    print(f"{opts.readme}: {len(TABLES)} generated blocks written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
