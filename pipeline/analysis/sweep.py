"""Parameter sweeps: replay the same traces under variations of a mode's state.

`--set key=v1,v2 …` spans a grid; every point is the swept mode with those fields
replaced, and a baseline mode (default kvm-trunk) replayed with the same settings
except the paravirt guest's own (GUEST_SIDE), so that each point's gain
(baseline time ÷ variant time) compares like with like, e.g. the same shadow pool.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from typing import Any

import polars as pl

from pipeline.config.errors import ConfigError
from pipeline.config.modes import with_overrides
from replay.mode import Mode

# Settings that describe the paravirt guest itself; a baseline guest keeps its own.
GUEST_SIDE = frozenset({"cr3_cache_size", "dropped_io_ports", "dropped_io_reads", "dropped_io_writes",
                        "dropped_mmio_reads", "dropped_mmio_writes"})
SWEEPABLE = {f.name for f in fields(Mode)} - {"name", "paging", "on_event"}


@dataclass(frozen=True)
class Point:
    settings: tuple[tuple[str, int], ...]
    variant: Mode
    baseline: Mode


def parse_sets(sets: list[str]) -> dict[str, list[int]]:
    """['cr3_cache_size=0,1,4', …] -> {'cr3_cache_size': [0, 1, 4], …}"""
    grid: dict[str, list[int]] = {}
    for item in sets:
        key, _, values = item.partition("=")
        if key not in SWEEPABLE:
            raise ConfigError("--set", key, f"not a sweepable mode field; sweepable: {sorted(SWEEPABLE)}")
        try:
            grid[key] = [int(v, 0) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ConfigError("--set", key, f"values must be integers, got {values!r}") from None
        if not grid[key]:
            raise ConfigError("--set", key, "needs at least one value")
    return grid


def points(mode: Mode, baseline: Mode, grid: dict[str, list[int]]) -> list[Point]:
    keys = list(grid)
    out = []
    for values in itertools.product(*(grid[k] for k in keys)):
        settings = tuple(zip(keys, values))
        base_settings = tuple((k, v) for k, v in settings if k not in GUEST_SIDE)
        out.append(Point(settings, _variant(mode, settings), _variant(baseline, base_settings)))
    return out


def _variant(mode: Mode, settings: tuple[tuple[str, int], ...]) -> Mode:
    overrides: dict[str, Any] = dict(settings)
    name = "~".join([mode.name, *(f"{k}-{v}" for k, v in settings)])
    return with_overrides(mode, {**overrides, "name": name}, origin="--set")


def modes_to_run(grid_points: list[Point]) -> list[Mode]:
    """Every distinct variant and baseline, each once."""
    seen: dict[str, Mode] = {}
    for p in grid_points:
        seen.setdefault(p.variant.name, p.variant)
        seen.setdefault(p.baseline.name, p.baseline)
    return list(seen.values())


def gains(summary: pl.DataFrame, grid_points: list[Point]) -> pl.DataFrame:
    """One row per (trace, point): settings, variant and baseline time, gain, key counts."""
    ok = summary.filter(pl.col("status") == "ok")
    by = {(r["trace"], r["mode"]): r for r in ok.iter_rows(named=True)}
    rows = []
    for trace in ok["trace"].unique().sort():
        for p in grid_points:
            v, b = by.get((trace, p.variant.name)), by.get((trace, p.baseline.name))
            if v is None or b is None:
                continue
            rows.append({"trace": trace, "workload": v["workload"], "mode": p.variant.name,
                         "baseline": p.baseline.name, **dict(p.settings),
                         **{k: v[k] for k in ("headline", "ops", "op_unit", "native_ns", "idle_ns", "cpus")},
                         "virt_ns": v["virt_ns"], "baseline_ns": b["virt_ns"], "gain": b["virt_ns"] / v["virt_ns"],
                         "cr3_cache_hit_rate": v["cr3_cache_hit"] / v["cr3_writes"] if v["cr3_writes"] else None,
                         **{k: v[k] for k in ("exit_cr3", "exit_shadow_fault", "shadow_page_zap")},
                         "baseline_shadow_faults": b["exit_shadow_fault"]})
    return pl.DataFrame(rows)


def setting_keys(table: pl.DataFrame) -> list[str]:
    """The swept fields of a sweep.parquet table, in grid order."""
    return [c for c in table.columns if c in SWEEPABLE]
