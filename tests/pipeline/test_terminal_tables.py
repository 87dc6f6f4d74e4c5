"""Terminal tables: cut to the width they are shown in (never a number or a mode name cut
to …), the seed's measurements beside the modelled cells, and small wording fixes."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.reports.terminal import ratio_text
from pipeline.text import count_of

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "configs" / "reference" / "kvm-paravirt-2007.toml"
runner = CliRunner()


def _report(results: Path, columns: int | None, *args: str) -> str:
    result = runner.invoke(app, ["report", str(results), *args], env={"COLUMNS": None if columns is None else str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def _cells(output: str, label: str) -> dict[str, str]:
    """mode → cell text of the row whose first cell starts with `label`, from every block of
    the seed table (each block: a ┃ header line, then │ rows)."""
    found: dict[str, str] = {}
    modes: list[str] = []
    for line in output.splitlines():
        if line.startswith("┃"):
            modes = [c.strip() for c in line.strip("┃").split("┃")][1:]
        elif line.startswith("│"):
            first, *cells = [c.strip() for c in line.strip("│").split("│")]
            if first.startswith(label) and cells[0]:
                found.update({m: c for m, c in zip(modes, cells) if c})
    return found


def _modelled(results: Path) -> dict[str, float]:
    """mode → modelled µs per switch of the quick trace, from the summary."""
    summary = pl.read_parquet(results / "summary.parquet")
    return {r["mode"]: r["ns_per_op"] / 1e3 for r in summary.iter_rows(named=True)}


@pytest.mark.parametrize("columns", [100, 250])
def test_seed_table_fits_columns_with_every_mode_and_number_in_full(quick_results: Path, columns: int) -> None:
    output = _report(quick_results, columns)
    assert max(len(line) for line in output.splitlines()) <= columns
    assert "…" not in output
    modelled = _modelled(quick_results)
    cells = _cells(output, "lat-ctx-2 ·")
    assert set(cells) == set(modelled)                      # every mode, its name whole
    for mode, value in modelled.items():
        shown = re.fullmatch(rf"{re.escape(f'{value:.3g}')} \((\d+\.(\d+))×\)", cells[mode])
        assert shown, (mode, cells[mode])
        assert abs(float(shown[1]) - value / modelled["native"]) <= 0.5 * 10 ** -len(shown[2])
    blocks = output.count("┏")
    assert (blocks > 1) == (columns == 100)


def test_piped_without_columns_prints_one_complete_table(quick_results: Path) -> None:
    output = _report(quick_results, None)
    assert output.count("┏") == 1 and "…" not in output
    header = next(line for line in output.splitlines() if line.startswith("┃"))
    assert all(f" {mode} " in header for mode in _modelled(quick_results))


@pytest.mark.parametrize("args", [["--by", "category"], ["--top", "3"]])
def test_category_and_top_tables_fit(quick_results: Path, args: list[str]) -> None:
    output = _report(quick_results, 80, *args)
    assert max(len(line) for line in output.splitlines()) <= 80
    assert "…" not in output


def test_seed_table_shows_the_reference_measurements_and_the_error(quick_results: Path) -> None:
    output = _report(quick_results, 100)
    measured = tomllib.loads(REFERENCE.read_text())["workloads"]["lat-ctx-2"]
    modelled = _modelled(quick_results)
    cells = _cells(output, "measured")
    for mode in ("native", "qemu", "kvm-upstream", "kvm-trunk", "kvm-paravirt"):
        error = 100 * (modelled[mode] - measured[mode]) / measured[mode]
        assert cells[mode] == f"{measured[mode]:.3g} ({error:+.1f}%)", mode
    assert "kvm-ept" not in cells                          # not in the reference: no measured cell
    said = " ".join(output.split())
    assert "measured = kvm-paravirt-2007 (Molnar, LKML 2007-01-05" in said and "as published" in said


def test_ratio_shows_a_small_overhead() -> None:
    assert ratio_text(1.002) == "1.0020×"
    assert (ratio_text(41.03), ratio_text(2.845), ratio_text(1.0)) == ("41.0×", "2.8×", "1.0×")


@pytest.mark.parametrize(("n", "unit", "text"), [
    (80000, "message", "80000 messages"), (3, "context switch", "3 context switches"), (2, "run", "2 runs"),
    (4, "recording", "4 recordings"), (1000, "timer tick", "1000 timer ticks"), (1, "message", "1 message"),
])
def test_op_units_are_plural(n: int, unit: str, text: str) -> None:
    assert count_of(n, unit) == text


def test_validate_searches_folders_and_says_messages() -> None:
    result = runner.invoke(app, ["validate", str(REPO / "traces")])
    assert result.exit_code == 0, result.output
    assert "quick/lat-ctx-2-small.parquet" in result.output and "recorded/" in result.output
    assert "(hackbench-1, 40000 messages," in result.output


@pytest.mark.parametrize("command", [["validate"], ["replay", "--out", "OUT"]])
def test_a_missing_path_does_not_exist(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nope.parquet"
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    result = runner.invoke(app, [*args, str(missing)])
    assert result.exit_code == 2
    assert f"error: {missing}: does not exist" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_mistyped_mode_is_suggested(tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", str(REPO / "traces" / "quick"), "--modes", "kvm-trnk",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "'kvm-trnk' (did you mean 'kvm-trunk'?)" in " ".join(result.output.split())
