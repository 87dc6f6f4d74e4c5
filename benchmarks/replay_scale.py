"""Scaling from 1 to 2 Dask workers, and peak worker memory on a long trace, in one run.

Builds long traces in a temporary folder (benchmarks/long_trace.py: hackbench-5 repeated,
never committed) and runs `pipeline replay` against a local Dask cluster started here, so
the workers can be asked for their peak RSS (VmHWM) afterwards:
  1. shard-parallel: two copies of the long trace under kvm-trunk (two equal shards) on
     1 worker, then on 2 workers;
  2. chunk-parallel: one long trace under native cut with --chunk-events (its state turns
     over, so the warm-ups prove exact without repairs) on 1, then 2 workers;
and prints wall times, the speed-up and the scaling efficiency (speed-up / 2), and the
workers' peak RSS. `--events 1e9` builds a 1e9-event trace for the bounded-memory check
(several GB on disk in the temporary folder, minutes to build).
Run: python benchmarks/replay_scale.py [--events N]
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from dask.distributed import Client

from long_trace import SOURCE, make_trace
from pipeline.run.runner import local_cluster

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = Path(sys.executable).parent / "pipeline"


def worker_peak_rss_mb() -> float:
    """Run on a worker: its own peak resident memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_replay(inputs: list[Path], modes: str, workers: int, out: Path, *extra: str) -> tuple[float, float]:
    """Wall seconds of one `pipeline replay` on a fresh cluster, and its workers' max peak RSS."""
    with local_cluster(workers) as cluster, \
            Client(cluster) as client:
        client.run(lambda: None)  # workers up before the clock starts
        t0 = time.perf_counter()
        subprocess.run([str(PIPELINE), "replay", *map(str, inputs), "--modes", modes, "--out", str(out),
                        "--scheduler-address", cluster.scheduler_address, *extra],
                       cwd=ROOT, check=True, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        peak = max(client.run(worker_peak_rss_mb).values())
    return seconds, peak


def compare(label: str, inputs: list[Path], modes: str, tmp: Path, *extra: str) -> float:
    """One run on 1 worker and one on 2; prints the speed-up; returns the larger peak RSS."""
    one, peak1 = timed_replay(inputs, modes, 1, tmp / f"{label}-1", *extra)
    two, peak2 = timed_replay(inputs, modes, 2, tmp / f"{label}-2", *extra)
    speedup = one / two
    print(f"{label:16s} 1 worker {one:7.1f} s   2 workers {two:7.1f} s   speed-up {speedup:4.2f}   "
          f"efficiency {speedup / 2:4.0%}   worker peak RSS {max(peak1, peak2):5.0f} MB")
    return max(peak1, peak2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=float, default=26e6, help="events in the long trace (default 26 M)")
    args = parser.parse_args()
    per_copy = pq.ParquetFile(SOURCE).metadata.num_rows
    repeat = max(1, math.ceil(args.events / per_copy))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        long = tmp / "long.parquet"
        rows = make_trace(long, repeat)
        twin = tmp / "twin.parquet"
        twin.symlink_to(long)
        print(f"long trace: {rows:,} events, {long.stat().st_size / 1e6:.0f} MB, built in "
              f"{time.perf_counter() - t0:.0f} s; machine: {len(__import__('os').sched_getaffinity(0))} cores")
        compare("2 shards", [long, twin], "kvm-trunk", tmp)
        chunk = str(max(1, rows // 8))
        compare("8 chunks", [long], "native", tmp, "--chunk-events", chunk, "--warmup-events", "100000")
    print("wall time includes the driver's start-up (about 2-3 s) and hashing the traces; "
          "peak RSS = the largest worker's VmHWM (Python, numba, pyarrow and model state).")


if __name__ == "__main__":
    main()
