"""`kvm-stat`: summarise host-side KVM exit traces, like `perf kvm stat report` and xenalyze.

The files are read by `pipeline.tracefile.importers.kvm_exits` (each kvm_exit paired with
the next kvm_entry of its vCPU thread, typed rows, the problems of each file); this module
makes the tables of the files that were read, and writes them.

Tables (polars), each a `df`-style frame whose columns are listed where it is built:
  by_vcpu   one row per (vcpu, pid, reason): count, share, total/mean/min/max/p50/p95 time
  by_reason one row per reason over all vCPUs (the `perf kvm stat report` view)
  io        one row per (kind, address, direction, size) of kvm_pio / kvm_mmio, with the
            handling time of the exit each access happened in (the xenalyze view)
  events    one row per (vcpu, pid, event) for the other KVM events present

Reasons are normalised to one set of names across renderings, VMX and SVM
(`importers/exit_reasons.py`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.atomic import write_atomic
from pipeline.tracefile.importers.kvm_exits import EventRow, ExitRow, FileScan, IoRow, scan_file


@dataclass
class Stats:
    """The summary of one or more files; frames are empty when nothing was read."""
    by_vcpu: pl.DataFrame
    by_reason: pl.DataFrame
    io: pl.DataFrame
    events: pl.DataFrame
    files: list[FileScan]
    time_unit: str               # "ns" or "cycles"


def time_unit(clock: str | None, tsc_hz: float | None) -> str:
    """Seconds and converted counts are reported in ns; counts without tsc_hz in cycles."""
    return "cycles" if clock == "count" and not tsc_hz else "ns"


def _frame(scan: FileScan, rows: list[ExitRow] | list[IoRow] | list[EventRow], tsc_hz: float | None,
           schema: dict) -> pl.DataFrame:
    """One file's rows as a table with the schema's columns (the rows' fields of those names)."""
    columns = {name: [getattr(r, name) for r in rows] for name in schema}
    df = pl.DataFrame(columns, schema=schema).with_columns(file=pl.lit(Path(scan.source).name))
    if "time" in df.columns:
        scale = 1e9 / tsc_hz if scan.clock == "count" and tsc_hz else 1.0
        df = df.with_columns(pl.col("time").cast(pl.Float64) * scale)
    return df


def _frames(scans: list[FileScan], rows: str, schema: dict, tsc_hz: float | None) -> pl.DataFrame:
    """One table of every scan's `rows` (an empty one with the schema if there are none)."""
    return pl.concat([_frame(s, getattr(s, rows), tsc_hz, schema) for s in scans]
                     or [_frame(FileScan(""), [], None, schema)])


_EXIT_SCHEMA = {"pid": pl.Int64, "vcpu": pl.Int64, "reason": pl.String, "ts": pl.Int64, "time": pl.Int64}
_IO_SCHEMA = {"kind": pl.String, "address": pl.UInt64, "direction": pl.String, "size": pl.Int64, "time": pl.Int64}
_EVENT_SCHEMA = {"pid": pl.Int64, "vcpu": pl.Int64, "event": pl.String}


def _time_columns(unit: str) -> list[pl.Expr]:
    """The statistics of the timed exits; all null (not a total of 0) where none is timed."""
    t = pl.col("time")
    return [t.count().alias("timed"), pl.when(t.count() > 0).then(t.sum()).alias(f"total_{unit}"),
            t.mean().alias(f"mean_{unit}"), t.min().alias(f"min_{unit}"), t.max().alias(f"max_{unit}"),
            t.quantile(0.5, "nearest").alias(f"p50_{unit}"), t.quantile(0.95, "nearest").alias(f"p95_{unit}")]


def _summary(df: pl.DataFrame, keys: list[str], unit: str, extra: Sequence[pl.Expr] = ()) -> pl.DataFrame:
    """Group df by keys: count, share of all rows, the time statistics, files, time_unit.
    Columns: *keys, count, share, timed (exits with a time), total_/mean_/min_/max_/p50_/
    p95_<unit>, files, time_unit."""
    total = max(len(df), 1)
    out = df.group_by(keys).agg(pl.len().alias("count"), *_time_columns(unit), *extra,
                                pl.col("file").unique().sort().str.join(", ").alias("files"))
    out = out.with_columns((pl.col("count") / total).alias("share"), pl.lit(unit).alias("time_unit"))
    order = [*keys, "count", "share", *[c for c in out.columns if c not in (*keys, "count", "share")]]
    return out.select(order).sort(["count", *keys], descending=[True, *[False] * len(keys)])


def merge(scans: list[FileScan], tsc_hz: float | None) -> Stats:
    """Aggregate the files that were read. A file whose time unit differs from the first
    read file's (seconds vs raw counts without tsc_hz) cannot be added and gets an error."""
    good = [s for s in scans if s.error is None]
    unit = time_unit(good[0].clock, tsc_hz) if good else "ns"
    for s in good:
        if time_unit(s.clock, tsc_hz) != unit:
            s.error = (f"{s.source}: timestamps are {'raw clock counts' if s.clock == 'count' else 'seconds'}, "
                       f"unlike the other files; pass --tsc-hz to combine them")
    good = [s for s in good if s.error is None]
    exits, io = _frames(good, "exits", _EXIT_SCHEMA, tsc_hz), _frames(good, "io", _IO_SCHEMA, tsc_hz)
    events = _frames(good, "counted", _EVENT_SCHEMA, tsc_hz)
    return Stats(by_vcpu=_summary(exits, ["vcpu", "pid", "reason"], unit),
                 by_reason=_summary(exits, ["reason"], unit),
                 io=_io_summary(io, unit),
                 events=events.group_by(["vcpu", "pid", "event"]).agg(pl.len().alias("count"))
                 .sort(["vcpu", "pid", "count", "event"], descending=[False, False, True, False]),   # ties by name
                 files=scans, time_unit=unit)


def _io_summary(io: pl.DataFrame, unit: str) -> pl.DataFrame:
    """Per (kind, address, direction, size): count, share within its kind, time of the
    exits the accesses happened in; address_hex for reading."""
    out = _summary(io, ["kind", "address", "direction", "size"], unit)
    per_kind = pl.col("count").sum().over("kind")
    return out.with_columns((pl.col("count") / per_kind).alias("share"),
                            pl.col("address").map_elements(hex, return_dtype=pl.String).alias("address_hex"))


def summarise(paths: list[Path], tsc_hz: float | None, strict: bool = False) -> Stats:
    """Scan each file (errors are recorded per file, never raised) and merge them."""
    return merge([scan_file(Path(p), strict) for p in paths], tsc_hz)


def stats_paths(out: Path) -> dict[str, Path]:
    """STATS.parquet (per vcpu and reason) and its siblings; `out` is the file or a folder."""
    main = out if out.suffix == ".parquet" else out / "STATS.parquet"
    return {"by_vcpu": main, "by_reason": main.with_suffix(".reasons.parquet"),
            "io": main.with_suffix(".io.parquet"), "events": main.with_suffix(".events.parquet")}


def write_stats(stats: Stats, out: Path) -> list[Path]:
    """Write every table atomically; the io/events files only when they have rows."""
    written = []
    for name, path in stats_paths(out).items():
        frame = getattr(stats, name)
        if name in ("io", "events") and frame.is_empty():
            continue
        write_atomic(path, frame.write_parquet)
        written.append(path)
    return written
