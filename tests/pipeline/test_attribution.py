"""Attribution: hand-made rows in the contract's shape, priced with round unit costs by hand."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.analysis import attribution as attr
from pipeline.cli import app
from pipeline.config.cost_profile import load_profile
from tests.pipeline.attribution_rows import write_attribution, write_round_profile

runner = CliRunner()
COSTS = {"exit_cr3": 1000, "tlb_refill_extra": 100, "exit_shadow_fault": 2000, "exit_io": 3000, "exit_mmio": 4000,
         "native_io_avoided": -500, "emulated_ns": 2}
MMIO = 0xFEE00000


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """t1 (1 vCPU) under kvm-trunk; t2 (2 vCPUs) under kvm-paravirt and qemu."""
    out = tmp_path / "results"
    write_attribution(out, "t1", 0, "kvm-trunk", [
        ("cr3_write", 1, -1, "exit_cr3", 10), ("cr3_write", 1, -1, "tlb_refill_extra", 4),
        ("cr3_write", 1, -1, "cr3_writes", 10),            # informational: never priced
        ("cr3_write", 2, -1, "exit_cr3", 6),
        ("touch", 1, -1, "exit_shadow_fault", 3), ("touch", 2, -1, "exit_shadow_fault", 1),
        ("io", 1, 0x80, "exit_io", 5), ("io", 2, 0x3F8, "exit_io", 1),
        ("mmio", 2, MMIO, "exit_mmio", 2)])
    write_attribution(out, "t2", 0, "kvm-paravirt", [("io", 3, 0x80, "native_io_avoided", 4), ("cr3_write", 3, -1, "exit_cr3", 2)])
    write_attribution(out, "t2", 1, "kvm-paravirt", [("io", 4, 0x80, "native_io_avoided", 2), ("cr3_write", 4, -1, "exit_cr3", 4)])
    write_attribution(out, "t2", 0, "qemu", [("busy", -1, -1, "emulated_ns", 3000)])
    return out


def priced(results: Path, tmp_path: Path) -> pl.DataFrame:
    profile = load_profile(write_round_profile(tmp_path / "round.toml", COSTS))
    return attr.price(attr.read_attribution(results), profile, {"t1": 1, "t2": 2})


def rows_of(frame: pl.DataFrame, trace: str, mode: str) -> list[tuple]:
    part = frame.filter((pl.col("trace") == trace) & (pl.col("mode") == mode)).sort("rank")
    return part.select("rank", "source", "sources", "time_ns").rows()


def test_priced_totals_by_hand(results: Path, tmp_path: Path) -> None:
    totals = {(t, m): ns for t, m, ns in attr.totals(priced(results, tmp_path)).rows()}
    # t1: cr3 10×1000 + 4×100 + 6×1000; faults 4×2000; io 6×3000; mmio 2×4000 = 50,400 ns.
    assert totals[("t1", "kvm-trunk")] == pytest.approx(50_400)
    # t2 paravirt, over 2 vCPUs: (6 × -500 + 6 × 1000) / 2 = 1,500 ns; qemu: 3000 × 2 / 2 = 3,000 ns.
    assert totals[("t2", "kvm-paravirt")] == pytest.approx(1_500)
    assert totals[("t2", "qemu")] == pytest.approx(3_000)


def test_top_by_kind_address_space_and_device(results: Path, tmp_path: Path) -> None:
    table = priced(results, tmp_path)
    # Kinds in t1: io 18,000; cr3_write 16,400; mmio 8,000 and touch 8,000 lumped as other.
    assert rows_of(attr.top(table, "kind", 2), "t1", "kvm-trunk") == [
        (1, "io", 1, pytest.approx(18_000)), (2, "cr3_write", 1, pytest.approx(16_400)),
        (3, "other", 2, pytest.approx(16_000))]
    # Address spaces in t1: asid 1 = 10,400 + 6,000 + 15,000; asid 2 = 6,000 + 2,000 + 3,000 + 8,000.
    assert rows_of(attr.top(table, "asid", 1), "t1", "kvm-trunk") == [
        (1, "asid 1", 1, pytest.approx(31_400)), (2, "other", 1, pytest.approx(19_000))]
    assert rows_of(attr.top(table, "device", 5), "t1", "kvm-trunk") == [
        (1, "port 0x80", 1, pytest.approx(15_000)), (2, "mmio 0xfee00000", 1, pytest.approx(8_000)),
        (3, "port 0x3f8", 1, pytest.approx(3_000))]
    # A saving ranks by its size: cr3 +3,000 before port 0x80's -1,500 (per vCPU wall ns).
    kinds = attr.top(table, "kind", 5).filter(pl.col("trace") == "t2")
    assert rows_of(kinds, "t2", "kvm-paravirt") == [(1, "cr3_write", 1, pytest.approx(3_000)),
                                                     (2, "io", 1, pytest.approx(-1_500))]
    shares = dict(kinds.filter(pl.col("mode") == "kvm-paravirt").select("source", "share").rows())
    assert shares == {"cr3_write": pytest.approx(2.0), "io": pytest.approx(-1.0)}
    # asid 3 nets to zero (2 × 1000 - 4 × 500): not a source; QEMU's busy time has none.
    assert rows_of(attr.top(table, "asid", 5), "t2", "kvm-paravirt") == [(1, "asid 4", 1, pytest.approx(1_500))]
    assert rows_of(attr.top(table, "asid", 5), "t2", "qemu") == [(1, "no address space", 1, pytest.approx(3_000))]
    assert rows_of(attr.top(table, "device", 5), "t2", "qemu") == []


def test_mismatch_with_the_summary_is_named(results: Path, tmp_path: Path) -> None:
    summary = pl.DataFrame({"trace": ["t1", "t2", "t2"], "mode": ["kvm-trunk", "kvm-paravirt", "qemu"],
                            "status": ["ok"] * 3, "time_a_ns": [50_000.0, 1_000.0, 3_001.0],
                            "time_b_ns": [400.0, 500.0, 0.0]})
    assert attr.mismatches(priced(results, tmp_path), summary) == [
        "t2 / qemu: attributed 3000 ns, summary 3001 ns"]


def hand_summary(path: Path) -> None:
    """A summary for t1 and t2 (one op each, so the report shows µs per run)."""
    rows = [("t1", "kvm-trunk", 1, 50_400.0), ("t2", "kvm-paravirt", 2, 1_500.0), ("t2", "qemu", 2, 3_000.0)]
    pl.DataFrame([{"trace": t, "workload": t, "mode": m, "status": "ok", "error": None, "native_ns": 0.0,
                   "virt_ns": ns, "ops": 1, "op_unit": "run", "headline": "per_op", "ns_per_op": ns,
                   "profile": "round-costs", "cpus": cpus, "time_c_ns": ns, "mode_rank": i}
                  for i, (t, m, cpus, ns) in enumerate(rows)]).write_parquet(path / "summary.parquet")


def test_report_top_prints_hand_priced_sources(results: Path, tmp_path: Path) -> None:
    hand_summary(results)
    profile = write_round_profile(tmp_path / "round.toml", COSTS)
    r = runner.invoke(app, ["report", str(results), "--top", "2", "--profile", str(profile)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    # t1: 18,000 ns = 18 µs per run, 36% of 50,400; 16,400 ns (33%); 16,000 ns over 2 sources (32%).
    for cell in ("io 18 (36%)", "cr3_write 16.4 (33%)", "other (2 sources) 16 (32%)",
                 "port 0x80 15 (30%)", "asid 1 31.4 (62%)", "cr3_write 3 (200%)", "io -1.5 (-100%)"):
        assert cell in text, cell
    assert "profile: round-costs" in text and "does not add up" not in text


def test_report_without_attribution_says_so(tmp_path: Path) -> None:
    results = tmp_path / "old"
    results.mkdir()
    hand_summary(results)
    r = runner.invoke(app, ["report", str(results), "--top", "3"])
    assert r.exit_code == 0, r.output
    assert "attribution not available" in r.output and "t1" in r.output


def test_bad_attribution_file_is_one_line_naming_it(results: Path, tmp_path: Path) -> None:
    hand_summary(results)
    bad = results / "attribution" / "mode=qemu" / "t2__cpu1.parquet"
    bad.write_bytes(b"not parquet")
    r = runner.invoke(app, ["report", str(results), "--top", "3", "--profile",
                            str(write_round_profile(tmp_path / "round.toml", COSTS))])
    assert r.exit_code == 0, r.output
    assert "attribution not available" in r.output and "t2__cpu1.parquet" in " ".join(r.output.split())
    write_attribution(results, "t2", 1, "qemu", [("busy", -1, -1, "not_a_driver", 1)])
    with pytest.raises(attr.AttributionError, match="t2__cpu1.parquet: row 0: unknown driver 'not_a_driver'"):
        attr.read_attribution(results)
