"""Cost attribution: which guest events, address spaces and devices the modelled time comes from.

A replay writes, per shard, OUT/attribution/mode=<mode>/<trace>__cpu<N>.parquet: one row per
(source, driver) with its count, a source being (kind, asid, device) — the event kind that
caused the count, its address space (-1: none) and its I/O port or MMIO address (-1: not
I/O). Pricing a row is count × the driver's unit cost, spread over the trace's vCPUs like
the summary's category times, so a (trace, mode)'s attributed total equals its modelled
overhead. The top sources per dimension are then group-bys of the priced table; the
terminal report (`--top N`) and the HTML report both read them from here.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from pipeline.config.cost_profile import Profile
from pipeline.run.results import ATTRIBUTION_DIR, ATTRIBUTION_SCHEMA
from replay.counts import ALL_COUNTS

# The written schema (results.ATTRIBUTION_SCHEMA) as read back, with cpu widened like the summary's.
SCHEMA: dict[str, Any] = {**pl.DataFrame(ATTRIBUTION_SCHEMA.empty_table()).schema, "cpu": pl.Int64}
# What each dimension groups by, and how the report names it.
DIMENSIONS: dict[str, str] = {"kind": "event kind", "asid": "address space", "device": "I/O port / MMIO address"}
DEVICE_KINDS = {"io": "port", "mmio": "mmio"}
CHECK_TOLERANCE = 1e-6  # relative: attributed total vs the summary's modelled overhead


class AttributionError(Exception):
    """An attribution file that does not follow the contract (one line, names the file)."""


def attribution_dir(results: Path) -> Path:
    """Where a results folder (or its summary file) keeps its attribution dataset."""
    return (results if results.is_dir() else results.parent) / ATTRIBUTION_DIR


def read_attribution(results: Path) -> pl.DataFrame | None:
    """Every attribution row of a results folder; None when the replay recorded none."""
    folder = attribution_dir(results)
    files = sorted(folder.glob("mode=*/*.parquet"))
    if not files:
        return None
    return pl.concat([_read_file(f) for f in files])


def _read_file(path: Path) -> pl.DataFrame:
    try:
        frame = pl.DataFrame(pq.read_table(path))
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise AttributionError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]})") from None
    missing = [c for c in SCHEMA if c not in frame.columns]
    if missing:
        raise AttributionError(f"{path}: missing column(s) {missing}; expected {list(SCHEMA)}")
    try:
        frame = frame.select([pl.col(c).cast(t, strict=True) for c, t in SCHEMA.items()])
    except pl.exceptions.PolarsError as e:
        raise AttributionError(f"{path}: bad column type ({str(e).splitlines()[0]})") from None
    folder_mode = path.parent.name.removeprefix("mode=")
    for row, (mode, driver) in enumerate(frame.select("mode", "driver").iter_rows()):
        if mode != folder_mode:
            raise AttributionError(f"{path}: row {row}: mode {mode!r} in a mode={folder_mode} folder")
        if driver not in ALL_COUNTS:
            raise AttributionError(f"{path}: row {row}: unknown driver {driver!r}")
    return frame


def price(rows: pl.DataFrame, profile: Profile, cpus: Mapping[str, int]) -> pl.DataFrame:
    """Rows of priced drivers with time_ns = count × unit cost ÷ the trace's vCPUs (wall ns,
    like the summary's time_<category>_ns). Informational counts carry no cost and drop out."""
    costs = pl.DataFrame({"driver": list(profile.costs), "unit_ns": [c.ns for c in profile.costs.values()],
                          "category": [c.category for c in profile.costs.values()]})
    vcpus = pl.DataFrame({"trace": list(cpus), "cpus": list(cpus.values())}, schema={"trace": pl.String, "cpus": pl.Int64})
    priced = rows.join(costs, on="driver").join(vcpus, on="trace", how="left")
    return priced.with_columns(time_ns=pl.col("count") * pl.col("unit_ns") / pl.col("cpus").fill_null(1))


def totals(priced: pl.DataFrame) -> pl.DataFrame:
    """Attributed modelled overhead per (trace, mode), in wall ns."""
    return priced.group_by("trace", "mode").agg(pl.col("time_ns").sum())


def mismatches(priced: pl.DataFrame, summary: pl.DataFrame) -> list[str]:
    """(trace, mode)s whose attributed total differs from the summary's modelled overhead:
    attribution from another run, or priced with another profile than the summary."""
    overhead = summary.filter(pl.col("status") == "ok").select(
        "trace", "mode", summary_ns=pl.sum_horizontal(pl.col("^time_.*_ns$")))
    joined = totals(priced).join(overhead, on=["trace", "mode"], how="full", coalesce=True).fill_null(0.0)
    bad = joined.filter((pl.col("time_ns") - pl.col("summary_ns")).abs()
                        > CHECK_TOLERANCE * pl.max_horizontal(pl.col("summary_ns").abs(), pl.lit(1.0)))
    return [f"{t} / {m}: attributed {a:.6g} ns, summary {s:.6g} ns"
            for t, m, a, s in bad.sort("trace", "mode").select("trace", "mode", "time_ns", "summary_ns").rows()]


def top(priced: pl.DataFrame, dimension: str, n: int) -> pl.DataFrame:
    """Per (trace, mode): the n sources costing most (by |time|: a saving is a source too),
    then one row 'other' for the rest. Columns: trace, mode, rank, source, sources (how many
    sources the row stands for), time_ns, share (of the (trace, mode)'s whole attributed
    overhead; negative for a saving)."""
    keys = {"kind": ["kind"], "asid": ["asid"], "device": ["kind", "device"]}[dimension]
    rows = priced.filter(pl.col("kind").is_in(list(DEVICE_KINDS)) & (pl.col("device") >= 0)) \
        if dimension == "device" else priced
    grouped = rows.group_by("trace", "mode", *keys).agg(pl.col("time_ns").sum()).filter(pl.col("time_ns") != 0)
    labels = pl.Series([_label(dimension, r) for r in grouped.iter_rows(named=True)], dtype=pl.String)
    ranked = grouped.with_columns(source=labels).sort(
        "trace", "mode", pl.col("time_ns").abs(), "source", descending=[False, False, True, False]).with_columns(
        rank=pl.int_range(1, pl.len() + 1).over("trace", "mode"))
    kept = ranked.filter(pl.col("rank") <= n).with_columns(sources=pl.lit(1, pl.Int64))
    other = ranked.filter(pl.col("rank") > n).group_by("trace", "mode").agg(
        rank=pl.lit(n + 1, pl.Int64), source=pl.lit("other"), sources=pl.len().cast(pl.Int64), time_ns=pl.col("time_ns").sum())
    columns = ["trace", "mode", "rank", "source", "sources", "time_ns"]
    out = pl.concat([kept.select(columns).cast({"rank": pl.Int64}), other.select(columns)])
    whole = totals(priced).rename({"time_ns": "total_ns"})
    return out.join(whole, on=["trace", "mode"]).with_columns(share=pl.col("time_ns") / pl.col("total_ns")) \
        .drop("total_ns").sort("trace", "mode", "rank")


def _label(dimension: str, row: dict) -> str:
    if dimension == "kind":
        return row["kind"]
    if dimension == "asid":
        return "no address space" if row["asid"] < 0 else f"asid {row['asid']}"
    return f"{DEVICE_KINDS[row['kind']]} {row['device']:#x}"
