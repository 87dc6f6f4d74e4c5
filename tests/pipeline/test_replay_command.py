"""`pipeline replay` end to end on a real local Dask cluster, with real Parquet files."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.modes import load_modes
from pipeline.config.cost_profile import load_profile
from replay.kinds import Kind
from tests.pipeline.tracefiles import SEED_MODES, round_robin_events, write_events

runner = CliRunner()


def replay(paths: list[Path], out: Path, *extra: str):
    return runner.invoke(app, ["replay", *map(str, paths), "--out", str(out), *extra])


def test_all_modes_summary_rows_and_counts(traces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = replay([traces_dir], out, "--workers", "2")
    assert result.exit_code == 0, result.output
    summary = pl.read_parquet(out / "summary.parquet")
    assert sorted(summary["trace"].unique()) == ["rr2", "rr5"]
    assert summary.filter(pl.col("trace") == "rr5")["mode"].to_list() == list(load_modes())  # seed's first
    assert set(summary["status"]) == {"ok"}
    # One hive partition per mode, one file per (trace, cpu) in each.
    for mode in SEED_MODES:
        files = sorted(p.name for p in (out / "counts" / f"mode={mode}").iterdir())
        assert files == ["rr2__cpu0.parquet", "rr5__cpu0.parquet"]
    row = summary.filter((pl.col("trace") == "rr5") & (pl.col("mode") == "kvm-paravirt")).row(0, named=True)
    # 50 switches over 5 spaces never hit a 4-entry round-robin cache: 50 exits.
    assert row["exit_cr3"] == 50 and row["cr3_cache_hit"] == 0
    # 50 port-0x80 writes, all dropped by the paravirt guest.
    assert row["native_io_avoided"] == 50 and row["exit_io"] == 0
    # The attribution dataset splits the same counts by source: the 50 CR3 exits are
    # the CR3 writes' own, 10 in each of the 5 spaces; the avoided I/O is port 0x80's.
    att = pl.read_parquet(out / "attribution" / "mode=kvm-paravirt" / "rr5__cpu0.parquet")
    cr3 = att.filter((pl.col("driver") == "exit_cr3"))
    assert set(cr3["kind"]) == {"cr3_write"} and sorted(cr3["count"]) == [10] * 5
    io = att.filter(pl.col("driver") == "native_io_avoided")
    assert io["device"].to_list() == [0x80] * len(io) and io["count"].sum() == 50
    rr2 = summary.filter((pl.col("trace") == "rr2") & (pl.col("mode") == "kvm-paravirt")).row(0, named=True)
    # 40 switches over 2 spaces: 2 cold misses, then 38 hits.
    assert (rr2["cr3_cache_miss"], rr2["cr3_cache_hit"]) == (2, 38)


def test_pricing_matches_hand_calculation(traces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert replay([traces_dir / "rr5.parquet"], out, "--modes", "kvm-trunk", "--workers", "1").exit_code == 0
    row = pl.read_parquet(out / "summary.parquet").row(0, named=True)
    costs = load_profile().costs
    # 50 switches x 7 events x 100 ns = 35,000 ns native.
    assert row["native_ns"] == 35_000
    # kvm-trunk: 50 CR3 exits, 50 port-0x80 exits (userspace); 5 roots built once;
    # shadow tables: 5 spaces x 2 user tables (0x08048>>10 == 0x0804a>>10, 0xbffff) + 1 kernel table = 11;
    # shadow faults: 5 x 3 user pages + 2 kernel pages = 17, once each (pool is 2048).
    expected = {"exit_cr3": 50, "exit_io": 50, "shadow_root_alloc": 5, "shadow_page_alloc": 11,
                "exit_shadow_fault": 17}
    for name, n in expected.items():
        assert row[name] == n, name
    # Every exit flushes the TLB (no VPID); native keeps the 2 global kernel pages across
    # switches, so after the first quantum each quantum re-misses those 2: 49 x 2 extra.
    assert row["tlb_refill_extra"] == 98
    overhead = sum(n * costs[d].ns for d, n in expected.items()) + 98 * costs["tlb_refill_extra"].ns
    assert row["virt_ns"] == pytest.approx(35_000 + overhead)
    assert row["ns_per_op"] == pytest.approx(row["virt_ns"] / 50)


def test_one_and_two_workers_give_identical_results(traces_dir: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "w1", tmp_path / "w2"
    assert replay([traces_dir], one, "--workers", "1").exit_code == 0
    assert replay([traces_dir], two, "--workers", "2").exit_code == 0
    assert pl.read_parquet(one / "summary.parquet").equals(pl.read_parquet(two / "summary.parquet"))
    for f in sorted((one / "counts").rglob("*.parquet")):
        assert pq.read_table(f).equals(pq.read_table(two / f.relative_to(one)))


def test_bad_traces_fail_alone_with_one_line_each(traces_dir: Path, tmp_path: Path) -> None:
    (traces_dir / "garbage.parquet").write_bytes(b"this is not parquet at all")
    good = (traces_dir / "rr2.parquet").read_bytes()
    (traces_dir / "truncated.parquet").write_bytes(good[: len(good) // 2])
    pl.DataFrame({"t_ns": [1, 2]}).write_parquet(traces_dir / "foreign.parquet")
    rows = round_robin_events(2, 3)
    rows.insert(4, (99, 0, 1, 0))  # unknown kind at row 4
    write_events(traces_dir / "unknown_kind.parquet", rows)
    out = tmp_path / "out"
    result = replay([traces_dir], out, "--modes", "native,kvm-trunk", "--workers", "2")
    assert result.exit_code == 1
    summary = pl.read_parquet(out / "summary.parquet")
    failed = summary.filter(pl.col("status") == "failed")
    assert sorted(failed["trace"].unique()) == ["foreign", "garbage", "truncated", "unknown_kind"]
    assert set(summary.filter(pl.col("status") == "ok")["trace"]) == {"rr2", "rr5"}
    errors = dict(failed.select("trace", "error").unique().rows())
    assert "row 4" in errors["unknown_kind"] and "unknown event kind 99" in errors["unknown_kind"]
    assert "hvreplay trace metadata" in errors["foreign"]
    for name, line in errors.items():
        assert f"{name}.parquet" in line and "\n" not in line
    said = " ".join(result.output.split())
    assert said.count("unknown_kind.parquet: row 4: unknown event kind 99") == 1   # once, not once per mode
    # The table is printed: the good traces' cells and one row per failed trace.
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    for name in ("foreign", "garbage", "truncated", "unknown_kind"):
        assert f"{name} (failed) │ failed │ failed │" in said
    assert "rr2 (µs per context switch) │ 0.7 (1.0×)" in said   # 7 events × 100 ns per switch


def test_summary_schema_names_every_priced_column() -> None:
    """summarise() keeps only the schema's columns: a priced row's keys must all be in it."""
    from pipeline.run.results import _priced_row, summary_schema
    from replay.counts import ALL_COUNTS
    profile = load_profile()
    shard = {"trace": "t", "workload": "w", "native_ns": 1000, "cpus": 1, "ops": 2, "op_unit": "op",
             "headline": "per_op", **dict.fromkeys(ALL_COUNTS, 1)}
    assert list(_priced_row("native", [shard], profile)) + ["mode_rank"] == list(summary_schema(profile))


def test_report_of_a_folder_where_every_trace_failed(tmp_path: Path) -> None:
    """A summary with no priced row still has every column: report, --by category, --top,
    --html, diff and calibrate read it without a traceback."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "empty.parquet").write_bytes(b"")
    (src / "text.parquet").write_text("no")
    out = tmp_path / "out"
    result = replay([src], out, "--modes", "native,kvm-trunk", "--workers", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "empty (failed) │ failed │ failed" in " ".join(result.output.split())
    r = runner.invoke(app, ["report", str(out), "--by", "category", "--top", "2", "--html", str(tmp_path / "r.html")])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert "Traceback" not in r.output and (tmp_path / "r.html").exists()
    assert runner.invoke(app, ["diff", str(out), str(out)]).exception is None
    r = runner.invoke(app, ["calibrate", str(out), "--out", str(tmp_path / "fit.toml")])
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2 and "no replayed trace" in r.output


def test_trace_names_cannot_leave_out(tmp_path: Path) -> None:
    nested = tmp_path / "in" / ".." / "in" / "..hidden dir" / "a b;c"
    write_events(nested / "..x.parquet", round_robin_events(2, 4))
    out = tmp_path / "out"
    assert replay([tmp_path / "in"], out, "--modes", "native", "--workers", "1").exit_code == 0
    written = [p.resolve() for p in out.rglob("*.parquet")]
    assert written and all(p.is_relative_to(out.resolve()) for p in written)
    assert pl.read_parquet(out / "summary.parquet")["trace"].to_list() == ["hidden_dir__a_b_c__x"]


def test_unknown_mode_and_missing_path_are_one_line_errors(traces_dir: Path, tmp_path: Path) -> None:
    r = replay([traces_dir], tmp_path / "o", "--modes", "kvm-nope")
    assert r.exit_code == 2 and "unknown mode" in r.output and "kvm-nope" in r.output
    r = replay([tmp_path / "nowhere"], tmp_path / "o")
    assert r.exit_code == 2 and "nowhere" in r.output


def test_tls_options_are_checked_before_connecting(traces_dir: Path, tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("not checked yet")
    r = replay([traces_dir], tmp_path / "o", "--tls-cert", str(pem))
    assert r.exit_code == 2 and "--tls-ca-file and --tls-cert go together" in r.output
    r = replay([traces_dir], tmp_path / "o", "--tls-ca-file", str(pem), "--tls-cert", str(tmp_path / "gone.pem"))
    assert r.exit_code == 2 and "gone.pem: no such file" in r.output
    r = replay([traces_dir], tmp_path / "o", "--tls-ca-file", str(pem), "--tls-cert", str(pem))
    assert r.exit_code == 2 and "are for an existing scheduler" in " ".join(r.output.split())
    assert not (tmp_path / "o").exists()


def test_report_by_category_sums_to_total(traces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert replay([traces_dir], out, "--workers", "1").exit_code == 0
    summary = pl.read_parquet(out / "summary.parquet")
    cats = [c for c in summary.columns if c.startswith("time_")]
    total = summary.select(pl.sum_horizontal(cats) + pl.col("native_ns")).to_series()
    assert total.to_list() == pytest.approx(summary["virt_ns"].to_list())
    r = runner.invoke(app, ["report", str(out), "--by", "category"])
    assert r.exit_code == 0 and "paging" in r.output and "core2-2007" in r.output


def test_idle_guest_reports_host_cpu(tmp_path: Path) -> None:
    # 10 ticks of (interrupt, port-0x80 write, 2 us halt), 1 us per row: a 30 us span, 20 us idle.
    tick = [(Kind.IRQ, 0x20, 1, 0), (Kind.IO, 0x80, 1, 1), (Kind.HLT, 2000, 1, 0)]
    trace = write_events(tmp_path / "idle.parquet", tick * 10, workload="idle", step_ns=1000, headline="cpu", ops=10)
    out = tmp_path / "out"
    assert replay([trace], out, "--modes", "native,kvm-trunk,kvm-paravirt", "--workers", "1").exit_code == 0
    rows = {r["mode"]: r for r in pl.read_parquet(out / "summary.parquet").iter_rows(named=True)}
    c = {d: u.ns for d, u in load_profile().costs.items()}
    # Host CPU = (busy 10 us + overhead) / 30 us span. Trunk: each tick exits on the
    # interrupt, the port write and the halt; paravirt drops the port write and saves its native time.
    expected = {"native": 100 * 10_000 / 30_000,
                "kvm-trunk": 100 * (10_000 + 10 * (c["exit_irq"] + c["exit_io"] + c["exit_hlt"])) / 30_000,
                "kvm-paravirt": 100 * (10_000 + 10 * (c["exit_irq"] + c["exit_hlt"] + c["native_io_avoided"])) / 30_000}
    r = runner.invoke(app, ["report", str(out)])
    assert r.exit_code == 0 and "idle (% host CPU)" in r.output
    for mode, pct in expected.items():
        assert rows[mode]["idle_ns"] == 20_000
        assert f"{pct:.3g}" in r.output, mode


def test_modes_are_data_in_seed_order() -> None:
    assert list(load_modes())[:5] == SEED_MODES


@pytest.mark.cluster
def test_existing_scheduler_by_address_environment_and_file(traces_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from dask.distributed import Client

    from pipeline.run.runner import local_cluster

    with local_cluster(2, host="127.0.0.1") as cluster:
        by_option = tmp_path / "opt"
        assert replay([traces_dir], by_option, "--scheduler-address", cluster.scheduler_address).exit_code == 0
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        by_env = tmp_path / "env"
        assert replay([traces_dir], by_env).exit_code == 0
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
        by_file = tmp_path / "file"
        # A scheduler file as `dask scheduler --scheduler-file` writes it (the address is what
        # clients read); Client.write_scheduler_file would also dump worker metrics, whose
        # tuple keys json cannot encode once tasks have run.
        (tmp_path / "scheduler.json").write_text(json.dumps({"address": cluster.scheduler_address}))
        assert replay([traces_dir], by_file, "--scheduler-file", str(tmp_path / "scheduler.json")).exit_code == 0
        with Client(cluster) as client:
            # All three runs' shards ran on this cluster, none on a private one: 2 traces on as
            # many workers, so each trace is one task that replays every mode (runner.plan_groups).
            done = client.run_on_scheduler(
                lambda dask_scheduler: dask_scheduler.task_prefixes["replay_group"].state_counts["memory"])
        assert done == 3 * 2
    first = pl.read_parquet(by_option / "summary.parquet")
    assert first.equals(pl.read_parquet(by_env / "summary.parquet"))
    assert first.equals(pl.read_parquet(by_file / "summary.parquet"))
