"""Bad inputs are one line naming the file (and row or key), never a traceback, never a
result: traces without events, nulls, out-of-range metadata, mode names that would leave
--out, oversized mode state, and terminal control characters in trace metadata.
Real Parquet files throughout; one replay run serves the replay tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.errors import ConfigError
from pipeline.config.modes import load_modes, with_overrides
from pipeline.tracefile.format import TraceError, TraceMeta, iter_events, read_events, read_meta, validate, write_trace
from tests.pipeline.tracefiles import rewrite_meta, round_robin_events, write_events

runner = CliRunner()
EVIL = "evil\x1b[31mred\x00"            # an ANSI colour escape and a NUL
SHOWN = "evil\\x1b[31mred\\x00"          # how every output shows it
ROWS = round_robin_events(2, 2)          # 2 switches x 7 events = 14 rows, all on cpu 0


def good(path: Path, workload: str = "rr") -> Path:
    return write_events(path, ROWS, workload=workload)


def with_null(path: Path, column: str, row: int) -> Path:
    """A good trace whose `column` is null at `row` (metadata kept)."""
    table = pq.read_table(good(path))
    i = table.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    values[row] = None
    pq.write_table(table.set_column(i, table.schema.field(i), pa.array(values, type=table.schema.field(i).type)), path)
    return path


def without_rows(path: Path) -> Path:
    pq.write_table(pq.read_table(good(path)).slice(0, 0), path)
    return path


def cpu1_silent(path: Path) -> Path:
    """Metadata lists cpus 0 and 1; every row is cpu 0's."""
    n = 4
    cols = {"t_ns": np.arange(n, dtype=np.int64), "cpu": np.zeros(n, dtype=np.uint16),
            "kind": np.full(n, 1, dtype=np.uint8), "value": np.arange(n, dtype=np.uint64),
            "asid": np.ones(n, dtype=np.uint32), "pid": np.ones(n, dtype=np.int32), "arg": np.zeros(n, dtype=np.uint32)}
    write_trace(path, cols, TraceMeta(workload="two", native_ns=10, ops=1, op_unit="run", cpus=(0, 1)))
    return path


def huge_span(path: Path) -> Path:
    rewrite_meta(good(path), lambda m: m.update(native_ns=2**70))
    return path


# --- trace files, through pipeline.tracefile.format -------------------------------------------

def test_a_trace_without_rows_has_no_events(tmp_path: Path) -> None:
    path = without_rows(tmp_path / "t.parquet")
    with pytest.raises(TraceError, match=r"t\.parquet: no events \(the file has no rows\)$"):
        validate(path)
    with pytest.raises(TraceError, match="no events"):   # replay reads the metadata first
        read_meta(path)


def test_a_listed_cpu_without_events_is_an_error(tmp_path: Path) -> None:
    path = cpu1_silent(tmp_path / "t.parquet")
    problem = r"t\.parquet: no events on cpu 1 \(listed in metadata cpus\)$"
    with pytest.raises(TraceError, match=problem):
        validate(path)
    meta = read_meta(path)
    assert len(read_events(path, 0, meta)) == 4
    with pytest.raises(TraceError, match=problem):
        read_events(path, 1, meta)


@pytest.mark.parametrize("column", ["t_ns", "cpu", "kind", "value", "asid", "pid", "arg"])
def test_a_null_is_an_error_naming_column_and_row(tmp_path: Path, column: str) -> None:
    path = with_null(tmp_path / "t.parquet", column, 9)
    line = f"{path}: row 9: null in column {column!r}"
    with pytest.raises(TraceError) as e:
        validate(path)
    assert str(e.value) == line
    if column != "pid":   # replay does not read pid
        with pytest.raises(TraceError) as e:
            read_events(path, 0, read_meta(path))
        assert str(e.value) == line


def test_a_null_in_a_later_batch_is_numbered_in_the_file(tmp_path: Path) -> None:
    path = with_null(tmp_path / "t.parquet", "value", 12)
    meta = read_meta(path)
    with pytest.raises(TraceError, match=r"row 12: null in column 'value'"):
        list(iter_events(path, 0, meta, batch_rows=5))   # batches of rows 0-4, 5-9, 10-13


# --- pipeline validate ----------------------------------------------------------------------

def test_validate_reports_every_bad_file_in_one_line_each(tmp_path: Path) -> None:
    d = tmp_path / "traces"
    good(d / "a_good.parquet")
    with_null(d / "b_null_kind.parquet", "kind", 3)
    with_null(d / "c_null_t.parquet", "t_ns", 0)
    without_rows(d / "d_empty.parquet")
    huge_span(d / "e_huge.parquet")
    good(d / "f_evil.parquet", workload=EVIL)
    r = runner.invoke(app, ["validate", str(d)])
    assert r.exit_code == 1
    lines = r.output.splitlines()
    assert lines == [
        f"ok  {d / 'a_good.parquet'}  (rr, 2 context switches, cpus [0])",
        f"bad {d / 'b_null_kind.parquet'}: row 3: null in column 'kind'",
        f"bad {d / 'c_null_t.parquet'}: row 0: null in column 't_ns'",
        f"bad {d / 'd_empty.parquet'}: no events (the file has no rows)",
        f"bad {d / 'e_huge.parquet'}: bad trace metadata: native_ns must be in 1..{2**63 - 1}, got {2**70}",
        f"ok  {d / 'f_evil.parquet'}  ({SHOWN}, 2 context switches, cpus [0])",
    ], r.output
    assert "\x1b" not in r.output and "\x00" not in r.output


def test_validate_shows_markup_in_metadata_as_text(tmp_path: Path) -> None:
    good(tmp_path / "t.parquet", workload="a[/x]b[bold]c")
    r = runner.invoke(app, ["validate", str(tmp_path / "t.parquet")])
    assert r.exit_code == 0 and "(a[/x]b[bold]c, 2 context switch" in r.output, r.output


# --- pipeline replay and report -----------------------------------------------------------

@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> tuple[Path, object]:
    """One run over a good trace and every kind of bad one."""
    d = tmp_path_factory.mktemp("bad") / "traces"
    good(d / "good.parquet")
    without_rows(d / "empty.parquet")
    cpu1_silent(d / "silent_cpu1.parquet")
    with_null(d / "null_value.parquet", "value", 5)
    with_null(d / "null_pid.parquet", "pid", 3)      # a column replay does not read: still the trace's error
    huge_span(d / "huge.parquet")
    out = d.parent / "out"
    r = runner.invoke(app, ["replay", str(d), "--out", str(out), "--modes", "native,qemu", "--workers", "1"])
    return out, r


def test_replay_fails_each_bad_trace_alone_with_its_line(replayed) -> None:
    out, r = replayed
    assert r.exit_code == 1, r.output
    summary = pl.read_parquet(out / "summary.parquet")
    assert set(summary.filter(pl.col("status") == "ok")["trace"]) == {"good"}
    errors = dict(summary.filter(pl.col("status") == "failed").select("trace", "error").unique().rows())
    assert errors.keys() == {"empty", "silent_cpu1", "null_value", "null_pid", "huge"}
    assert errors["null_pid"].endswith("null_pid.parquet: row 3: null in column 'pid'")
    assert errors["empty"].endswith("empty.parquet: no events (the file has no rows)")
    assert errors["silent_cpu1"].endswith("silent_cpu1.parquet: no events on cpu 1 (listed in metadata cpus)")
    assert errors["null_value"].endswith("null_value.parquet: row 5: null in column 'value'")
    assert errors["huge"].endswith(f"huge.parquet: bad trace metadata: native_ns must be in 1..{2**63 - 1}, got {2**70}")
    text = " ".join(r.output.split())
    for line in errors.values():
        assert line in text
    assert "Traceback" not in r.output and "zero_copy" not in r.output
    assert isinstance(r.exception, SystemExit)   # the table was printed, then exit 1
    for name in errors:
        assert text.count(f"{name}.parquet:") == 1   # said once, not once per mode


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

def test_a_mode_name_with_a_path_stops_replay_before_anything_is_written(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "escape.toml").write_text('inherits = "native"\nname = "a/../../../victim"\n')
    good(tmp_path / "t.parquet")
    out = tmp_path / "deep" / "er" / "out"
    r = runner.invoke(app, ["replay", str(tmp_path / "t.parquet"), "--out", str(out), "--modes-dir", str(mine),
                            "--modes", "a/../../../victim"])
    assert r.exit_code == 2
    assert (f"{mine / 'escape.toml'}: name: 'a/../../../victim': a mode name is 1-200 letters, digits, "
            "'.', '_', '-' or '~'") in " ".join(r.output.split())
    assert not (tmp_path / "deep").exists() and not list(tmp_path.rglob("victim*"))


def test_sweep_settings_are_checked_like_a_file() -> None:
    qemu = load_modes()["qemu"]
    with pytest.raises(ConfigError, match=r"^--set: softmmu_tlb_entries: must be an integer in 1\.\.4194304, got 1099511627776$"):
        with_overrides(qemu, {"softmmu_tlb_entries": 2**40})
    with pytest.raises(ConfigError, match=r"^--set: name: 'x/y': a mode name is"):
        with_overrides(qemu, {"name": "x/y"})
    assert with_overrides(qemu, {"softmmu_tlb_entries": 2**22, "name": "qemu~softmmu_tlb_entries-4194304"})


def test_sweep_of_an_oversized_setting_is_one_line(tmp_path: Path) -> None:
    good(tmp_path / "t.parquet")
    r = runner.invoke(app, ["sweep", str(tmp_path / "t.parquet"), "--set", "softmmu_tlb_entries=256,0x10000000000",
                            "--mode", "qemu", "--baseline", "qemu", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2
    assert "--set: softmmu_tlb_entries: must be an integer in 1..4194304, got 1099511627776" in r.output
    assert not (tmp_path / "s").exists()


def test_config_errors_with_markup_in_values_are_printed_as_text(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "m.toml").write_text('name = "m"\npaging = "tdp"\ntlb_flush_on_exit = "[/x]\\u001b"\n')
    r = runner.invoke(app, ["replay", str(tmp_path), "--out", str(tmp_path / "o"), "--modes-dir", str(mine)])
    assert r.exit_code == 2
    assert "tlb_flush_on_exit: must be true or false, got '[/x]\\x1b'" in r.output and "\x1b" not in r.output


def test_paths_with_markup_in_notes_and_summary_lines(tmp_path: Path) -> None:
    """An --out named like a rich closing tag: the resume note and the summary line print it
    as text (the note raised MarkupError)."""
    good(tmp_path / "t.parquet")
    out = tmp_path / "o[/x]"
    args = ["replay", str(tmp_path / "t.parquet"), "--out", str(out), "--modes", "native", "--workers", "1"]
    assert runner.invoke(app, args).exit_code == 0
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and r.exception is None, r.output
    said = " ".join(r.output.split())
    assert f"resumed: 1 of 1 shards already done in {out}" in said and f"summary: {out}/summary.parquet" in said
