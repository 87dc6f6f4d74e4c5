"""`pipeline import` on Dask against the import without it, wall times and ratios in one run.

From one recording (FILE, default the guest-side sample of ../shared/samples, decompressed):
  1. COPIES copies of it, each its own recording: imported one after the other in this
     process, then with `--out-dir`'s tasks (`batch.import_all`) on a local cluster of WORKERS;
  2. REPEAT copies of it one after the other, each shifted in time past the one before, as
     one big file: imported unsplit, then with `--split` (`split.split_reader`) on that cluster.
The cluster is started and warmed (each worker has imported once: the compiled scanner is
loaded) before the timed runs, whose start-up time is printed apart; the split trace is
checked equal to the unsplit one. Each time is the best of ROUNDS (the machine may be
shared); the ratios are of one run.
Run: python benchmarks/import_cluster.py [FILE]
"""
from __future__ import annotations

import lzma
import re
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from dask.distributed import Client

from pipeline.run.runner import local_cluster
from pipeline.tracefile.importers import import_files
from pipeline.tracefile.importers.batch import Recording, Settings, import_all
from pipeline.tracefile.importers.split import split_reader

COPIES, REPEAT, WORKERS, ROUNDS = 20, 30, 2, 3
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


def repeated(one: Path, tmp: Path) -> Path:
    """REPEAT copies of `one`, each shifted past the one before (its first line, a header, once)."""
    text = one.read_bytes()
    secs = [int(m[2]) for m in TS.finditer(text)]
    step = secs[-1] - secs[0] + 1
    body = text.split(b"\n", 1)[1]
    big = tmp / f"x{REPEAT}.txt"
    with open(big, "wb") as out:
        for k in range(REPEAT):
            out.write(TS.sub(lambda m, k=k: m[1] + str(int(m[2]) + k * step).encode() + m[3], text if k == 0 else body))
    return big


def timed(run) -> float:
    """The best of ROUNDS wall times: on a shared machine the others' load only adds."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        one = recording(tmp)
        copies = [Recording(one, tmp / "batch" / f"r{k}.parquet") for k in range(COPIES)]
        big = repeated(one, tmp)
        import_files([one], tmp / "warm.parquet")                    # the compiled scanner, loaded here
        sequential = timed(lambda: [import_files([r.path], r.out) for r in copies])
        unsplit = timed(lambda: import_files([big], tmp / "unsplit.parquet", workload="big"))
        start = time.perf_counter()
        with local_cluster(WORKERS) as cluster, Client(cluster) as client:
            client.run(import_files, [one], tmp / "warm.parquet")    # ... and on each worker
            started = time.perf_counter() - start
            batch = timed(lambda: import_all(client, copies, Settings(), lambda: None))
            split = timed(lambda: import_files([big], tmp / "split.parquet", workload="big", chunks=split_reader(client)))
        same = pq.read_table(tmp / "split.parquet").equals(pq.read_table(tmp / "unsplit.parquet"))
        mb = big.stat().st_size / 1e6
        print(f"cluster of {WORKERS} workers started and warmed in {started:.1f} s (not in the times below)")
        print(f"{COPIES} recordings of {one.stat().st_size / 1e6:.1f} MB: sequential {sequential:.2f} s, "
              f"--out-dir on {WORKERS} workers {batch:.2f} s: {sequential / batch:.2f}x")
        print(f"one file of {mb:.0f} MB ({REPEAT} copies): unsplit {unsplit:.2f} s, --split on {WORKERS} workers "
              f"{split:.2f} s: {unsplit / split:.2f}x; same trace: {same}")


if __name__ == "__main__":
    main()
