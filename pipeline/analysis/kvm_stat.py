"""`kvm-stat`: summarise host-side KVM exit traces, like `perf kvm stat report` and xenalyze.

The files are read by `pipeline.tracefile.importers.kvm_exits` (each kvm_exit paired with
the next kvm_entry of its vCPU thread, typed rows, the problems of each file); this module
makes the tables of the files that were read, and writes them.

Tables (polars), each a `df`-style frame whose columns are listed where it is built:
  by_vcpu   one row per (vcpu, pid, reason): count, share, time share, total/mean/min/max,
            relative stddev of the mean (perf's `+-x%`), p10/p50/p90/p95 time
  by_reason one row per reason over the selected vCPUs (`perf kvm stat report --event vmexit`)
  io        one row per (kind, address, direction, size) of kvm_pio / kvm_mmio, with the
            handling time of the exit each access happened in (the xenalyze view)
  events    one row per (vcpu, pid, event) for the other KVM events present
  views     perf's three reports (--event vmexit|mmio|ioport), sorted by its -k sample|time

As `perf kvm stat report` (tools/perf/builtin-kvm.c), an exit's time is kvm_exit to the next
kvm_entry of its thread, and --vcpu / -p select vCPUs and threads. Unlike perf, an exit never
closed by an entry still counts as a sample (it is left out of the times only), and an MMIO
or port access has the time of the whole exit it happened in (perf times a read from the exit
to its kvm_mmio, a write or port access from its event to the entry).

Reasons are normalised to one set of names across renderings, VMX and SVM
(`importers/exit_reasons.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.atomic import write_atomic
from pipeline.tracefile.importers.kvm_exits import EventRow, ExitRow, FileScan, IoRow, scan_file, thread_name


EVENTS = ("vmexit", "mmio", "ioport")   # perf kvm stat report --event: what a row is
KEYS = ("sample", "time")               # perf's -k: by samples, or by average time


class SelectionError(ValueError):
    """A --vcpu / --vcpu-thread that selects nothing; str() is one line naming it."""


@dataclass(frozen=True)
class Selection:
    """Which exits to summarise (perf's --vcpu and -p): one vCPU id, one host thread (its
    name as printed, comm-pid, or its pid), or both; None is all. A host trace often holds
    several VMs, each with a vCPU 0, so --vcpu alone may mix VMs and a thread picks one."""
    vcpu: int | None = None
    thread: str | None = None

    def pids(self, scans: list[FileScan]) -> set[int] | None:
        """The pids the thread names, None for all; a name no thread has is an error."""
        if self.thread is None:
            return None
        threads = {(pid, thread_name(s.comms[pid], pid)) for s in scans for pid in {r.pid for r in s.exits}}
        found = {pid for pid, name in threads if self.thread in (name, str(pid))}
        if not found:
            known = ", ".join(sorted(name for _, name in threads))
            raise SelectionError(f"--vcpu-thread {self.thread}: no thread of that name has kvm_exit lines; threads: {known}")
        return found

    def apply(self, df: pl.DataFrame, pids: set[int] | None) -> pl.DataFrame:
        keep = pl.lit(True)
        if pids is not None:
            keep &= pl.col("pid").is_in(sorted(pids))
        if self.vcpu is not None:
            keep &= pl.col("vcpu") == self.vcpu
        return df.filter(keep)

    def describe(self) -> str:
        """What perf's report says above its table: which VMs and vCPUs it analysed."""
        return (f"thread {self.thread}" if self.thread else "all threads") + ", " + \
            (f"vCPU {self.vcpu}" if self.vcpu is not None else "all vCPUs")


@dataclass
class Stats:
    """The summary of one or more files; frames are empty when nothing was read."""
    by_vcpu: pl.DataFrame
    by_reason: pl.DataFrame
    io: pl.DataFrame
    events: pl.DataFrame
    views: dict[str, pl.DataFrame]   # EVENTS -> perf's report of it: one row per `label`
    files: list[FileScan]
    time_unit: str               # "ns" or "cycles"
    converted: bool = False      # some file's raw clock counts were converted with --tsc-hz
    selection: Selection = Selection()
    threads: dict[int, str] = field(default_factory=dict)   # pid -> its name as printed


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
_IO_SCHEMA = {"pid": pl.Int64, "vcpu": pl.Int64, "kind": pl.String, "address": pl.UInt64, "direction": pl.String,
              "size": pl.Int64, "time": pl.Int64}
_EVENT_SCHEMA = {"pid": pl.Int64, "vcpu": pl.Int64, "event": pl.String}


def _time_columns(unit: str) -> list[pl.Expr]:
    """The statistics of the timed exits; all null (not a total of 0) where none is timed.
    stddev_pct is perf's `( +-x.xx% )`: the standard deviation of the mean (sample stddev
    over sqrt(n)) relative to the mean, 0 below two timed exits or for a mean of 0 (as
    perf's rel_stddev_stats). Quantiles interpolate linearly (numpy's default)."""
    t = pl.col("time")
    sem = t.std(ddof=1) / t.count().sqrt()
    rel = pl.when((t.count() >= 2) & (t.mean() != 0)).then(100 * sem / t.mean()).otherwise(0.0)
    quantiles = [t.quantile(q / 100, "linear").alias(f"p{q}_{unit}") for q in (10, 50, 90, 95)]
    return [t.count().alias("timed"), pl.when(t.count() > 0).then(t.sum()).alias(f"total_{unit}"),
            t.mean().alias(f"mean_{unit}"), t.min().alias(f"min_{unit}"), t.max().alias(f"max_{unit}"),
            pl.when(t.count() > 0).then(rel).alias("stddev_pct"), *quantiles]


def time_stats(df: pl.DataFrame, keys: list[str], unit: str = "ns") -> pl.DataFrame:
    """Per group of keys: count (every exit), timed and the time statistics of the timed
    ones; `df` has the keys and a float `time` column, null where untimed. Shared with
    `compare`, whose measured costs are these figures of one thread."""
    return df.group_by(keys).agg(pl.len().alias("count"), *_time_columns(unit))


def _sorted(df: pl.DataFrame, keys: list[str], key: str, unit: str) -> pl.DataFrame:
    """perf's orders: `sample` most exits first, `time` longest mean first; ties by the keys."""
    first = "count" if key == "sample" else f"mean_{unit}"
    return df.sort([first, *keys], descending=[True, *[False] * len(keys)], nulls_last=True)


def _summary(df: pl.DataFrame, keys: list[str], unit: str, key: str = "sample") -> pl.DataFrame:
    """Group df by keys: count, share of all rows, time_share (perf's Time%: of the time of
    all rows), the time statistics, files, time_unit. Columns: *keys, count, share, timed,
    total_/mean_/min_/max_<unit>, stddev_pct, p10/p50/p90/p95_<unit>, time_share, files, time_unit."""
    total = max(len(df), 1)
    out = time_stats(df, keys, unit).join(
        df.group_by(keys).agg(pl.col("file").unique().sort().str.join(", ").alias("files")), on=keys, nulls_equal=True)
    all_time = df["time"].sum()
    out = out.with_columns((pl.col("count") / total).alias("share"), pl.lit(unit).alias("time_unit"),
                           (pl.col(f"total_{unit}") / all_time if all_time else pl.lit(None, pl.Float64)).alias("time_share"))
    order = [*keys, "count", "share", *[c for c in out.columns if c not in (*keys, "count", "share", "files", "time_unit")],
             "files", "time_unit"]
    return _sorted(out.select(order), keys, key, unit)


_LABELS = {"mmio": {"read": "R", "write": "W", "unsatisfied-read": "R, unsatisfied"},
           "pio": {"read": "PIN", "write": "POUT"}}   # perf's names of an access's direction


def _access_view(io: pl.DataFrame, kind: str, unit: str, key: str) -> pl.DataFrame:
    """perf's mmio / ioport report: per address and direction (`0xfec00010:W`, `0x70:POUT`)."""
    mine = io.filter(pl.col("kind") == kind)
    out = _summary(mine, ["address", "direction"], unit, key)
    names = _LABELS[kind]
    label = pl.struct("address", "direction").map_elements(
        lambda r: f"{r['address']:#x}:{names.get(r['direction'], r['direction'])}", return_dtype=pl.String)
    return out.with_columns(label.alias("label"))


def merge(scans: list[FileScan], tsc_hz: float | None, selection: Selection = Selection(),
          key: str = "sample") -> Stats:
    """Aggregate the files that were read, the selected threads' and vCPU's rows only, in
    the order of `key`. A file whose time unit differs from the first read file's (seconds
    vs raw counts without tsc_hz) cannot be added and gets an error; a selection that
    matches no exit raises SelectionError."""
    good = [s for s in scans if s.error is None]
    unit = time_unit(good[0].clock, tsc_hz) if good else "ns"
    for s in good:
        if time_unit(s.clock, tsc_hz) != unit:
            s.error = (f"{s.source}: timestamps are {'raw clock counts' if s.clock == 'count' else 'seconds'}, "
                       f"unlike the other files; pass --tsc-hz to combine them")
    good = [s for s in good if s.error is None]
    pids = selection.pids(good)
    exits, io, events = (selection.apply(_frames(good, rows, schema, tsc_hz), pids) for rows, schema in
                         (("exits", _EXIT_SCHEMA), ("io", _IO_SCHEMA), ("counted", _EVENT_SCHEMA)))
    if good and exits.is_empty():
        vcpus = sorted({r.vcpu for s in good for r in s.exits if r.vcpu is not None and (pids is None or r.pid in pids)})
        where = f"thread {selection.thread}" if selection.thread else "these files"
        raise SelectionError(f"--vcpu {selection.vcpu}: no kvm_exit of that vCPU in {where}; "
                             f"vCPUs: {', '.join(map(str, vcpus)) or 'none printed'}")
    by_reason = _summary(exits, ["reason"], unit, key)
    return Stats(by_vcpu=_summary(exits, ["vcpu", "pid", "reason"], unit, key), by_reason=by_reason,
                 io=_io_summary(io, unit),
                 events=events.group_by(["vcpu", "pid", "event"]).agg(pl.len().alias("count"))
                 .sort(["vcpu", "pid", "count", "event"], descending=[False, False, True, False]),   # ties by name
                 views={"vmexit": by_reason.with_columns(pl.col("reason").alias("label")),
                        "mmio": _access_view(io, "mmio", unit, key), "ioport": _access_view(io, "pio", unit, key)},
                 files=scans, time_unit=unit, converted=bool(tsc_hz) and any(s.clock == "count" for s in good),
                 selection=selection,
                 threads={pid: thread_name(comm, pid) for s in good for pid, comm in s.comms.items()})


def _io_summary(io: pl.DataFrame, unit: str) -> pl.DataFrame:
    """Per (kind, address, direction, size): count, share within its kind, time of the
    exits the accesses happened in; address_hex for reading."""
    out = _summary(io, ["kind", "address", "direction", "size"], unit)
    per_kind = pl.col("count").sum().over("kind")
    return out.with_columns((pl.col("count") / per_kind).alias("share"),
                            pl.col("address").map_elements(hex, return_dtype=pl.String).alias("address_hex"))


def summarise(paths: list[Path], tsc_hz: float | None, strict: bool = False, selection: Selection = Selection(),
              key: str = "sample") -> Stats:
    """Scan each file (a file's errors are recorded with it, never raised) and merge them."""
    return merge([scan_file(Path(p), strict) for p in paths], tsc_hz, selection, key)


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
