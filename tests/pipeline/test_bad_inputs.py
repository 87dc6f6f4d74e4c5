"""Bad inputs are one line, never a traceback: terminal control characters and rich markup
in trace metadata and config values are shown as text. Real Parquet files throughout."""
from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline.tracefiles import round_robin_events, write_events

runner = CliRunner()
EVIL = "evil\x1b[31mred\x00"            # an ANSI colour escape and a NUL
SHOWN = "evil\\x1b[31mred\\x00"          # how every output shows it
ROWS = round_robin_events(2, 2)          # 2 switches x 7 events = 14 rows, all on cpu 0


def good(path: Path, workload: str = "rr") -> Path:
    return write_events(path, ROWS, workload=workload)


# --- pipeline validate ----------------------------------------------------------------------

def test_validate_shows_markup_in_metadata_as_text(tmp_path: Path) -> None:
    good(tmp_path / "t.parquet", workload="a[/x]b[bold]c")
    r = runner.invoke(app, ["validate", str(tmp_path / "t.parquet")])
    assert r.exit_code == 0 and "(a[/x]b[bold]c, 2 context switch" in r.output, r.output


# --- pipeline replay and report -----------------------------------------------------------

def test_replay_and_report_escape_control_characters_of_the_workload(tmp_path: Path) -> None:
    good(tmp_path / "evil.parquet", workload=EVIL)
    out = tmp_path / "out"
    r = runner.invoke(app, ["replay", str(tmp_path / "evil.parquet"), "--out", str(out), "--modes", "native,kvm-trunk",
                            "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x00" not in r.output
    assert f"{SHOWN} · evil (µs per context switch)" in r.output, r.output
    r = runner.invoke(app, ["report", str(out), "--by", "category", "--top", "1"])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\x00" not in r.output
    assert f"{SHOWN} · evil (µs per context switch)" in r.output            # the seed table
    assert f"{SHOWN} (evil): time by cost category" in r.output             # the category table
    assert f"{SHOWN} (evil): top cost sources" in r.output                  # the top sources


# --- modes: names and sizes -------------------------------------------------------------------

def test_config_errors_with_markup_in_values_are_printed_as_text(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "m.toml").write_text('name = "m"\npaging = "tdp"\ntlb_flush_on_exit = "[/x]\\u001b"\n')
    r = runner.invoke(app, ["replay", str(tmp_path), "--out", str(tmp_path / "o"), "--modes-dir", str(mine)])
    assert r.exit_code == 2
    assert "tlb_flush_on_exit: must be true or false, got '[/x]\\x1b'" in r.output and "\x1b" not in r.output
