"""`pipeline sweep` on hand-made traces: grid points, baselines, hit rates by hand."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import typer
from typer.testing import CliRunner

from pipeline.cli import ChunkOptions, ClusterOptions, app
from pipeline.config.modes import load_modes
from pipeline.analysis.sweep import parse_sets, points

runner = CliRunner()


def test_cache_size_sweep_hit_rates(traces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["sweep", str(traces_dir / "rr5.parquet"), "--set", "cr3_cache_size=0,4,5",
                                 "--set", "shadow_pool_pages=4,2048", "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out / "sweep.parquet")
    assert len(table) == 6
    rates = {(r["cr3_cache_size"], r["shadow_pool_pages"]): r["cr3_cache_hit_rate"] for r in table.iter_rows(named=True)}
    # 50 switches round-robin over 5 spaces: a 4-slot round-robin cache never hits; a
    # 5-slot one misses the first 5 and hits the other 45 (pool 2048: roots stay).
    assert rates[(0, 2048)] == 0
    assert rates[(4, 2048)] == 0
    assert rates[(5, 2048)] == 45 / 50
    # Pool of 4 pages: 5 roots + 11 tables cannot stay; each root is evicted before its
    # space comes round again, and its cache entry with it: no hits at all.
    assert rates[(5, 4)] == 0
    # Each point's baseline is kvm-trunk with the same pool and no guest-side settings.
    assert set(table.filter(pl.col("shadow_pool_pages") == 4)["baseline"]) == {"kvm-trunk~shadow_pool_pages-4"}
    assert (table["gain"] > 1).all()  # paravirt also drops the port-0x80 writes


def test_chunked_sweep_gives_the_same_sweep(traces_dir: Path, tmp_path: Path) -> None:
    grid = ["--set", "cr3_cache_size=0,5", "--workers", "4"]
    plain, chunked = tmp_path / "plain", tmp_path / "chunked"
    r = runner.invoke(app, ["sweep", str(traces_dir / "rr5.parquet"), *grid, "--out", str(plain)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["sweep", str(traces_dir / "rr5.parquet"), *grid, "--out", str(chunked),
                            "--chunk-events", "100", "--warmup-events", "20"])
    assert r.exit_code == 0, r.output
    # 350 events: 4 chunks; 3 modes (2 points and their baseline) of one trace on 4 workers:
    # 3 groups of one mode, which leave a worker idle
    assert "chunked: 12 chunks of 3 groups (3 shards)" in " ".join(r.output.split())
    assert pl.read_parquet(chunked / "sweep.parquet").equals(pl.read_parquet(plain / "sweep.parquet"))
    assert pl.read_parquet(chunked / "summary.parquet").equals(pl.read_parquet(plain / "summary.parquet"))


def test_sweep_rejects_unknown_fields_and_bad_values() -> None:
    for bad, words in (["colour=1"], "not a sweepable"), (["cr3_cache_size=a"], "integers"):
        try:
            parse_sets(bad)
        except Exception as e:  # ConfigError, one line naming the key
            assert words in str(e) and bad[0].split("=")[0] in str(e)
        else:
            raise AssertionError(f"{bad} accepted")


def test_baseline_keeps_its_own_guest() -> None:
    modes = load_modes()
    grid = points(modes["kvm-paravirt"], modes["kvm-trunk"], parse_sets(["cr3_cache_size=8"]))
    assert grid[0].variant.cr3_cache_size == 8
    assert grid[0].baseline.cr3_cache_size == 0 and grid[0].baseline.name == "kvm-trunk"


def test_replay_and_sweep_share_the_cluster_options() -> None:
    commands = typer.main.get_command(app).commands
    shared = {name: [(p.opts, p.default, p.help) for p in commands[name].params if p.name in ClusterOptions._fields + ChunkOptions._fields]
              for name in ("replay", "sweep")}
    assert shared["replay"] == shared["sweep"] and len(shared["sweep"]) == len(ClusterOptions._fields) + len(ChunkOptions._fields) == 8
    r = runner.invoke(app, ["sweep", "--help"], env={"COLUMNS": "200"})
    assert "--chunk-events" in r.output and "[default: (configs/hardware/core2-2007-fitted.toml)]" in r.output
