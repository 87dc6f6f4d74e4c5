"""`pipeline diff`: the small lat-ctx trace priced with two profiles; expected changes by hand
from the profiles' unit costs (read straight from their TOML) and the replayed counts."""
from __future__ import annotations

import tomllib
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline.conftest import QUICK_TRACE

runner = CliRunner()
HARDWARE = Path(__file__).resolve().parents[2] / "configs" / "hardware"


def by_category(row: dict, costs: dict) -> dict[str, float]:
    """Σ count × unit cost per category, per vCPU: the pricing formula written out again."""
    out: dict[str, float] = defaultdict(float)
    for driver, cost in costs.items():
        out[cost["category"]] += row[driver] * cost["ns"] / row["cpus"]
    return out


@pytest.fixture(scope="module")
def start_results(tmp_path_factory) -> Path:
    """Three modes priced with the unfitted starting profile core2-2007."""
    out = tmp_path_factory.mktemp("diff") / "start"
    r = runner.invoke(app, ["replay", str(QUICK_TRACE), "--modes", "native,kvm-trunk,kvm-paravirt", "--out", str(out),
                            "--profile", str(HARDWARE / "core2-2007.toml"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    return out


def test_diff_of_two_profiles_matches_hand_pricing(start_results: Path, quick_results: Path, tmp_path: Path) -> None:
    out = tmp_path / "diff.parquet"
    r = runner.invoke(app, ["diff", str(start_results), str(quick_results), "--out", str(out)])
    assert r.exit_code == 0, r.output
    d = pl.read_parquet(out)
    a_costs = tomllib.loads((HARDWARE / "core2-2007.toml").read_text())["costs"]
    b_costs = tomllib.loads((HARDWARE / "core2-2007-fitted.toml").read_text())["costs"]
    b_summary = {r["mode"]: r for r in pl.read_parquet(quick_results / "summary.parquet").iter_rows(named=True)}
    for mode in ("kvm-trunk", "kvm-paravirt"):
        counts = b_summary[mode]  # the same replay under both profiles: the counts do not depend on costs
        row = d.filter(pl.col("mode") == mode).row(0, named=True)
        assert row["status"] == "both" and (row["profile_a"], row["profile_b"]) == ("core2-2007", "core2-2007-fitted")
        a, b = by_category(counts, a_costs), by_category(counts, b_costs)
        for cat in a:
            assert row[f"time_{cat}_ns_delta"] == pytest.approx(b[cat] - a[cat], abs=1e-6), (mode, cat)
            expected_pct = None if a[cat] == 0 else 100 * (b[cat] - a[cat]) / abs(a[cat])
            assert row[f"time_{cat}_ns_pct"] == (None if expected_pct is None else pytest.approx(expected_pct)), (mode, cat)
        assert row["native_ns_delta"] == 0
        assert row["virt_ns_delta"] == pytest.approx(sum(b.values()) - sum(a.values()))
        assert row["virt_ns_a"] == pytest.approx(counts["native_ns"] + sum(a.values()))
    # kvm-trunk's CR3 exits alone: one exit per switch, each dearer once fitted (fitted − start exit_cr3).
    trunk = d.filter(pl.col("mode") == "kvm-trunk").row(0, named=True)
    cr3_drivers = [k for k, c in a_costs.items() if c["category"] == "cr3"]
    assert trunk["time_cr3_ns_delta"] == pytest.approx(
        sum(b_summary["kvm-trunk"][k] * (b_costs[k]["ns"] - a_costs[k]["ns"]) for k in cr3_drivers))
    assert b_summary["kvm-trunk"]["exit_cr3"] > 0 and trunk["time_cr3_ns_delta"] > 0
    status = dict(d.select("mode", "status").rows())
    shared = {"native", "kvm-trunk", "kvm-paravirt"}
    assert {m for m, st in status.items() if st == "both"} == shared
    assert {m for m, st in status.items() if st == "only in B"} == set(b_summary) - shared
    text = " ".join(r.output.split())
    assert "lat-ctx-2-small / qemu: only in B" in text and "profile core2-2007)" in text


def test_diff_reverse_is_the_negation_and_missing_folder_is_one_line(start_results: Path, quick_results: Path,
                                                                     tmp_path: Path) -> None:
    forward = tmp_path / "f.parquet"
    backward = tmp_path / "b.parquet"
    assert runner.invoke(app, ["diff", str(start_results), str(quick_results), "--out", str(forward)]).exit_code == 0
    assert runner.invoke(app, ["diff", str(quick_results), str(start_results), "--out", str(backward)]).exit_code == 0
    f = pl.read_parquet(forward).filter(pl.col("status") == "both").sort("mode")
    b = pl.read_parquet(backward).filter(pl.col("status") == "both").sort("mode")
    assert f["virt_ns_delta"].to_list() == pytest.approx((-b["virt_ns_delta"]).to_list())
    assert set(pl.read_parquet(backward)["status"]) == {"both", "only in A"}
    r = runner.invoke(app, ["diff", str(tmp_path / "nowhere"), str(quick_results)])
    assert r.exit_code == 2 and "nowhere" in r.output


IDLE_TRACE = Path(__file__).resolve().parents[2] / "traces" / "idle-hz1000.parquet"


def test_diff_of_an_idle_guest_is_in_host_cpu(tmp_path: Path) -> None:
    """An idle guest's diff shows % host CPU: (busy time + modelled overhead) ÷ span, by hand."""
    sides = {}
    for side, profile in (("a", "core2-2007.toml"), ("b", "core2-2007-fitted.toml")):
        r = runner.invoke(app, ["replay", str(IDLE_TRACE), "--modes", "native,kvm-trunk", "--out",
                                str(tmp_path / side), "--profile", str(HARDWARE / profile), "--workers", "1"])
        assert r.exit_code == 0, r.output
        sides[side] = tomllib.loads((HARDWARE / profile).read_text())["costs"]
    r = runner.invoke(app, ["diff", str(tmp_path / "a"), str(tmp_path / "b")], terminal_width=250)
    assert r.exit_code == 0, r.output
    trunk = pl.read_parquet(tmp_path / "a" / "summary.parquet").filter(pl.col("mode") == "kvm-trunk").row(0, named=True)
    span, busy = trunk["native_ns"], trunk["native_ns"] - trunk["idle_ns"]
    pct = {s: 100 * (busy + sum(by_category(trunk, costs).values())) / span for s, costs in sides.items()}
    assert 5 < pct["a"] < 50 and 5 < pct["b"] < 50   # an idle guest's host CPU, not its span
    line = next(ln for ln in r.output.splitlines() if "kvm-trunk" in ln)
    assert f"{pct['a']:.4g}" in line and f"{pct['b']:.4g}" in line, line
    assert f"{pct['b'] - pct['a']:+.3g}" in line, line
    assert "% host CPU" in " ".join(r.output.split())
