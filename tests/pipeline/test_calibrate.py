"""Calibration recovers known unit costs from results priced with them."""
from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import tomli_w
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.cost_profile import START_PROFILE, load_profile
from replay.kinds import Kind
from tests.pipeline.tracefiles import SEED_MODES, write_events

runner = CliRunner()


def mixed_events(spaces: int, switches: int, user_pages: int, io_every: int, fault_every: int,
                 irq_every: int, invlpg_every: int) -> list[tuple[int, int, int, int]]:
    """Quanta round-robin over `spaces`, each touching `user_pages` user pages spread over
    tables and 3 kernel pages; every n-th quantum adds a port-0x80 write, a guest fault
    (fault, PTE write, touch), a timer interrupt with its EOI, an invlpg."""
    rows = []
    for i in range(switches):
        a = 1 + i % spaces
        rows.append((Kind.CR3_WRITE, a, a, 0))
        rows += [(Kind.TOUCH, 0x08048 + 0x400 * (p % 3) + p, a, 0) for p in range(user_pages)]
        rows += [(Kind.TOUCH, 0xC0100 + k, a, 0) for k in range(3)]
        if i % io_every == 0:
            rows.append((Kind.IO, 0x80, a, 1))
        if i % fault_every == 0:
            page = 0x0A000 + i
            rows += [(Kind.PAGE_FAULT, page, a, 1), (Kind.PTE_WRITE, page, a, 0), (Kind.TOUCH, page, a, 1)]
        if i % irq_every == 0:
            rows += [(Kind.IRQ, 0x20, a, 0), (Kind.IO, 0x20, a, 1)]
        if i % invlpg_every == 0:
            rows.append((Kind.INVLPG, 0x08048, a, 0))
    return rows


MIXES = {  # workload: (spaces, switches, user pages, io, fault, irq, invlpg every n quanta)
    "w-a": (2, 300, 3, 1, 7, 5, 11),
    "w-b": (6, 300, 6, 3, 2, 9, 4),
    "w-c": (3, 400, 1, 2, 5, 2, 3),
    "w-d": (9, 200, 8, 5, 3, 4, 7),
    "w-e": (4, 500, 2, 4, 9, 3, 2),
    "w-f": (5, 250, 5, 7, 4, 6, 5),
    "w-g": (1, 300, 4, 2, 3, 7, 6),
}
IDLE = "w-idle"            # an idle guest: its cells are host CPU (%), not time
IDLE_TICKS, IDLE_STEP_NS, IDLE_HLT_NS = 400, 200_000, 600_000


def idle_events() -> list[tuple[int, int, int, int]]:
    """Per tick: the interrupt, a PIC read, a port-0x80 write, a kernel page, then a halt
    of IDLE_HLT_NS. Five rows of IDLE_STEP_NS: each tick spans 1 ms, 0.6 ms of it idle."""
    tick = [(Kind.IRQ, 0x20, 1, 0), (Kind.IO, 0x21, 1, 0), (Kind.IO, 0x80, 1, 1), (Kind.TOUCH, 0xC0100, 1, 0),
            (Kind.HLT, IDLE_HLT_NS, 1, 0)]
    return tick * IDLE_TICKS


# Native ns per event differ, so QEMU's translated time is not proportional to the
# event count (else emulated_ns, softmmu fills and flushes could not be told apart).
STEP_NS = {"w-a": 97, "w-b": 40, "w-c": 210, "w-d": 65, "w-e": 150, "w-f": 120, "w-g": 30}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cal")
    for name, mix in MIXES.items():
        write_events(d / "traces" / f"{name}.parquet", mixed_events(*mix), workload=name,
                     step_ns=STEP_NS[name], headline="total")
    write_events(d / "traces" / f"{IDLE}.parquet", idle_events(), workload=IDLE, step_ns=IDLE_STEP_NS,
                 headline="cpu", ops=IDLE_TICKS)
    result = runner.invoke(app, ["replay", str(d / "traces"), "--out", str(d / "results"), "--workers", "2",
                                 "--modes", ",".join(SEED_MODES)])  # the synthetic reference covers the seed's modes
    assert result.exit_code == 0, result.output
    return d


def true_costs(seed: int = 7) -> dict[str, float]:
    """Known costs: each starting figure moved by a random factor, kept inside its range."""
    rng = np.random.default_rng(seed)
    costs = load_profile(START_PROFILE).costs
    return {d: float(np.clip(c.ns * rng.uniform(0.6, 1.6), c.low * 1.01, c.high * 0.99)) for d, c in costs.items()}


def write_reference(path: Path, summary: pl.DataFrame, truth: dict[str, float]) -> None:
    """Cells priced by hand: native + Σ count × true cost, in seconds; for the idle guest,
    the busy part of its span plus that overhead, in % of the span."""
    idle_ns = IDLE_TICKS * IDLE_HLT_NS
    workloads: dict[str, dict] = {}
    for r in summary.iter_rows(named=True):
        overhead = sum(r[d] * ns for d, ns in truth.items())
        if r["workload"] == IDLE:
            value, unit = 100 * (r["native_ns"] - idle_ns + overhead) / r["native_ns"], "%cpu"
        else:
            value, unit = (r["native_ns"] + overhead) / 1e9, "s"
        workloads.setdefault(r["workload"], {"unit": unit})[r["mode"]] = value
    path.write_text(tomli_w.dumps({"name": "synthetic", "source": "test", "workloads": workloads}))


def test_calibration_recovers_known_costs_within_one_percent(replayed: Path) -> None:
    summary = pl.read_parquet(replayed / "results" / "summary.parquet")
    truth = true_costs()
    write_reference(replayed / "ref.toml", summary, truth)
    out = replayed / "fit.toml"
    result = runner.invoke(app, ["calibrate", str(replayed / "results"), "--reference", str(replayed / "ref.toml"),
                                 "--fit", ",".join([*MIXES, IDLE]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    costs = pl.read_parquet(out.with_suffix(".costs.parquet"))
    identified = costs.filter(pl.col("identifiable"))
    # The mixes exercise these drivers independently enough to pin each one down.
    must = {"exit_cr3", "exit_shadow_fault", "exit_guest_pf", "exit_pte_write", "exit_io", "exit_irq",
            "exit_invlpg", "shadow_root_alloc", "shadow_page_alloc", "shadow_page_zap", "tlb_refill_extra",
            "cr3_cache_lookup", "softmmu_fill", "softmmu_flush", "emul_exception", "emul_io", "emul_irq",
            "emulated_ns", "native_io_avoided", "exit_hlt"}
    assert must <= set(identified["driver"])
    for driver, fitted in identified.select("driver", "fitted_ns").rows():
        assert fitted == pytest.approx(truth[driver], rel=0.01), driver
    # Drivers no trace counts are reported as such, not fitted.
    uncounted = set(costs.filter(~pl.col("counted_in_fit"))["driver"])
    assert {"exit_mmio", "exit_cpuid", "exit_msr", "exit_hypercall"} <= uncounted
    assert not (uncounted & set(identified["driver"]))
    cells = pl.read_parquet(out.with_suffix(".cells.parquet"))
    assert len(cells) == (len(MIXES) + 1) * len(SEED_MODES)
    idle = cells.filter((pl.col("workload") == IDLE) & (pl.col("mode") == "native")).row(0, named=True)
    assert idle["unit"] == "%cpu" and idle["predicted"] == pytest.approx(40.0)  # 0.4 ms busy per 1 ms tick
    assert cells["error_pct"].abs().max() < 0.5
    assert load_profile(out).costs["exit_cr3"].ns == pytest.approx(truth["exit_cr3"], rel=0.01)


def test_held_out_workload_is_predicted_not_fitted(replayed: Path) -> None:
    summary = pl.read_parquet(replayed / "results" / "summary.parquet")
    write_reference(replayed / "ref2.toml", summary, true_costs(seed=11))
    out = replayed / "fit2.toml"
    fit_on = [w for w in [*MIXES, IDLE] if w != "w-d"]
    result = runner.invoke(app, ["calibrate", str(replayed / "results"), "--reference", str(replayed / "ref2.toml"),
                                 "--fit", ",".join(fit_on), "--out", str(out), "--leave-one-out"])
    assert result.exit_code == 0, result.output
    cells = pl.read_parquet(out.with_suffix(".cells.parquet"))
    assert set(cells.filter(pl.col("role") == "held-out")["workload"]) == {"w-d"}
    loo = pl.read_parquet(out.with_suffix(".loo.parquet"))
    assert sorted(loo["workload"].unique()) == sorted([*MIXES, IDLE])


def test_fit_naming_a_workload_without_cells_is_one_line(replayed: Path) -> None:
    result = runner.invoke(app, ["calibrate", str(replayed / "results"), "--fit", "hackbench-9",
                                 "--out", str(replayed / "x.toml")])
    assert result.exit_code == 2
    assert "reference cell" in result.output or "no reference cell" in result.output


def renamed_profile(path: Path, name: str) -> Path:
    """The shipped starting profile under another name."""
    path.write_text(START_PROFILE.read_text().replace('name = "core2-2007"', f'name = "{name}"', 1))
    return path


@pytest.mark.parametrize("option", ["--start-profile", "--profile"])  # the new name and the old spelling
def test_start_profile_option_and_its_old_spelling(option: str, quick_results: Path, tmp_path: Path) -> None:
    start = renamed_profile(tmp_path / "mine.toml", "my-start")
    out = tmp_path / "fit.toml"
    result = runner.invoke(app, ["calibrate", str(quick_results), "--fit", "lat-ctx-2", "--out", str(out), option, str(start)])
    assert result.exit_code == 0, result.output
    assert tomllib.loads(out.read_text())["fit"]["started_from"] == "my-start"


def test_calibrate_help_names_the_start_profile_option() -> None:
    result = runner.invoke(app, ["calibrate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--start-profile" in result.output and "--profile" not in result.output
    assert "[default: (configs/hardware/core2-2007.toml)]" in result.output  # from the repository, not cut
