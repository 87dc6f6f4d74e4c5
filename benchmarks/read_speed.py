"""Reading a trace for replay (iter_events: decode, row checks, the vCPU's rows) against
decoding the same columns bare, measured in one run.

The old reader cannot run beside the new one, so the ratio shown is the overhead that is
left: iter_events' rows/s over the bare read's (pyarrow's reader, the one iter_events used
before, and polars', the one it uses now). Wall time, best of --runs; the trace is
`--trace PATH` (e.g. `pipeline generate hackbench --groups 5 --loops 1000 -o hb71.parquet`,
71 M events) or, without it, the shipped hackbench-5 written --repeat times in a
temporary folder (benchmarks/long_trace.py).
Run: python benchmarks/read_speed.py [--trace PATH | --repeat N] [--runs 3]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from long_trace import make_trace
from pipeline.tracefile.format import iter_events, read_meta

COLUMNS = ["t_ns", "cpu", "kind", "value", "asid", "arg"]  # what iter_events reads


def pyarrow_read(path: Path) -> int:
    pf = pq.ParquetFile(path)
    return sum(len(pf.read_row_group(g, columns=COLUMNS).column(0)) for g in range(pf.num_row_groups))


def polars_read(path: Path) -> int:
    md, scan, first, rows = pq.read_metadata(path), pl.scan_parquet(path, glob=False).select(COLUMNS), 0, 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        rows += len(scan.slice(first, n).collect())
        first += n
    return rows


def replay_read(path: Path) -> int:
    meta = read_meta(path)
    return sum(len(events) for cpu in meta.cpus for events in iter_events(path, cpu, meta))


def rate(read: Callable[[Path], int], path: Path, runs: int) -> float:
    """Rows per wall second, the best of `runs` (the machine's other load only slows)."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        rows = read(path)
        best = min(best, time.perf_counter() - t0)
    return rows / best


def measure(path: Path, runs: int) -> None:
    rows = pq.read_metadata(path).num_rows
    print(f"trace: {rows:,} events, {path.stat().st_size / 1e6:.0f} MB, cpus {list(read_meta(path).cpus)}")
    list(iter_events(path, read_meta(path).cpus[0], read_meta(path), stop=1))  # numba: compile or load the cache
    bare = {"pyarrow read_row_group": rate(pyarrow_read, path, runs), "polars scan, per row group": rate(polars_read, path, runs)}
    replay = rate(replay_read, path, runs)
    for label, r in bare.items():
        print(f"{'bare read, ' + label:40s} {r / 1e6:7.1f} M rows/s")
    print(f"{'iter_events (checked, every vCPU)':40s} {replay / 1e6:7.1f} M rows/s   "
          + "   ".join(f"{label.split()[0]}/iter_events {r / replay:4.2f}" for label, r in bare.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace", type=Path, help="a trace file (default: hackbench-5 repeated)")
    parser.add_argument("--repeat", type=int, default=4, help="copies of hackbench-5 (6.7 M events each)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.trace:
        measure(args.trace, args.runs)
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "long.parquet"
        make_trace(path, args.repeat)
        measure(path, args.runs)


if __name__ == "__main__":
    main()
