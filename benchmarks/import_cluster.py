"""`pipeline import` on Dask against the import without it, wall times and ratios in one run.

From one recording (FILE, default the guest-side sample of ../shared/samples, decompressed):
  1. COPIES recordings, each its own trace: COPIES copies of it, then COPIES of it repeated
     LONGER times (a task's fixed cost, ~30 ms here, weighs less on longer recordings),
     imported one after the other in this process, then with `--out-dir`'s tasks
     (`batch.import_all`) on a local cluster of WORKERS;
  2. one big file of it repeated REPEAT times: imported unsplit, then with `--split`
     (`split.split_reader`) on that cluster.
Repeated copies follow each other, each shifted in time past the one before. The cluster is
started and warmed (each worker has imported once: the compiled scanner is loaded) before the
timed runs, whose start-up time is printed apart; beside each wall time the CPU-seconds of
this process and the workers (a cluster's cost, and what a loaded machine shares out); the split trace is checked equal to the
unsplit one. Each time is the best of ROUNDS (the machine may be shared); the ratios are of
one run.
Run: python benchmarks/import_cluster.py [FILE]
"""
from __future__ import annotations

import lzma
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pyarrow.parquet as pq
from dask.distributed import Client

from pipeline.run.runner import local_cluster
from pipeline.tracefile.importers import import_files
from pipeline.tracefile.importers.batch import Recording, Settings, import_all
from pipeline.tracefile.importers.split import split_reader

COPIES, LONGER, REPEAT, WORKERS, ROUNDS = 20, 4, 30, 2, 3
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / \
    "HIP24_Masterarbeit__documentation_trace-cmd_analysis_test_trace-Salamander4.dat__report_part1.txt.xz"
TS = re.compile(rb"(\s)(\d+)(\.\d+: )")


def recording(tmp: Path) -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    if not SAMPLE.exists():
        sys.exit(f"{SAMPLE}: absent; give a recording: python benchmarks/import_cluster.py FILE")
    text = tmp / "one.txt"
    text.write_bytes(lzma.decompress(SAMPLE.read_bytes()))
    return text


def repeated(one: Path, times: int, tmp: Path) -> Path:
    """`times` copies of `one`, each shifted past the one before (its first line, a header, once)."""
    text = one.read_bytes()
    secs = [int(m[2]) for m in TS.finditer(text)]
    step = secs[-1] - secs[0] + 1
    body = text.split(b"\n", 1)[1]
    out_path = tmp / f"x{times}.txt"
    with open(out_path, "wb") as out:
        for k in range(times):
            out.write(TS.sub(lambda m, k=k: m[1] + str(int(m[2]) + k * step).encode() + m[3], text if k == 0 else body))
    return out_path


def batch_line(client: Client, source: Path, tmp: Path) -> str:
    """COPIES recordings of `source`: one after the other here, then as tasks."""
    copies = [Recording(source, tmp / "batch" / f"r{k}.parquet") for k in range(COPIES)]
    sequential = timed(lambda: [import_files([r.path], r.out) for r in copies])
    batch = timed(lambda: import_all(client, copies, Settings(), lambda: None), client)
    return (f"{COPIES} recordings of {source.stat().st_size / 1e6:.1f} MB: sequential {sequential}, "
            f"--out-dir on {WORKERS} workers {batch}: {sequential.wall / batch.wall:.2f}x")


class Timing(NamedTuple):
    wall: float       # the best of ROUNDS: on a shared machine the others' load only adds
    cpu: float        # CPU-seconds of one round, this process's and the workers' together

    def __str__(self) -> str:
        return f"{self.wall:.2f} s ({self.cpu:.2f} CPU-s)"


def timed(run: Callable[[], object], client: Client | None = None) -> Timing:
    best, cpu = float("inf"), 0.0
    for _ in range(ROUNDS):
        start, used = time.perf_counter(), _cpu(client)
        run()
        best, cpu = min(best, time.perf_counter() - start), _cpu(client) - used
    return Timing(best, cpu)


def idle_cpu(client: Client, seconds: float = 3.0) -> float:
    """CPU-seconds per second the cluster and this process use doing nothing (heartbeats,
    monitors): part of the CPU-seconds beside the cluster's times, more the longer they are."""
    used = _cpu(client)
    time.sleep(seconds)
    return (_cpu(client) - used) / seconds


def _cpu(client: Client | None) -> float:
    workers = sum(client.run(time.process_time).values()) if client is not None else 0.0
    return time.process_time() + workers


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp, load = Path(d), os.getloadavg()[0]
        one = recording(tmp)
        longer, big = repeated(one, LONGER, tmp), repeated(one, REPEAT, tmp)
        import_files([one], tmp / "warm.parquet")                    # the compiled scanner, loaded here
        start = time.perf_counter()
        with local_cluster(WORKERS) as cluster, Client(cluster) as client:
            client.run(import_files, [one], tmp / "warm.parquet")    # ... and on each worker
            print(f"cluster of {WORKERS} workers started and warmed in {time.perf_counter() - start:.1f} s "
                  f"(not in the times below); idle, it uses {idle_cpu(client):.2f} CPU-s per second")
            for source in (one, longer):
                print(batch_line(client, source, tmp))
            unsplit = timed(lambda: import_files([big], tmp / "unsplit.parquet", workload="big"))
            split = timed(lambda: import_files([big], tmp / "split.parquet", workload="big", chunks=split_reader(client)),
                          client)
        same = pq.read_table(tmp / "split.parquet").equals(pq.read_table(tmp / "unsplit.parquet"))
        print(f"one file of {big.stat().st_size / 1e6:.0f} MB ({REPEAT} copies): unsplit {unsplit}, --split on "
              f"{WORKERS} workers {split}: {unsplit.wall / split.wall:.2f}x; same trace: {same}")
        print(f"load average (1 min) on {os.cpu_count()} CPUs: {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
