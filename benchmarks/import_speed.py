"""Import throughput against a plain line count of the same file, measured in one run.

Makes a large `perf script` file by recording a pipe ping-pong with `pipeline record`'s
perf invocation (or uses FILE if given), then times, on one core:
  1. counting its lines (the floor: reading the text at all),
  2. `pipeline.importers.import_files` on it,
and prints lines/s for both and their ratio. Run: python benchmarks/import_speed.py [FILE]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pipeline.importers import import_files
from pipeline.record import record_text

REPEAT = 20  # copies of the recording, shifted in time, to make the file large


def make_file(tmp: Path) -> Path:
    one = tmp / "one.txt"
    record_text(["perf", "bench", "sched", "pipe", "-l", "20000"], one, cpu=0)
    lines = one.read_text().splitlines(keepends=True)
    big = tmp / "big.perf.txt"
    with open(big, "w") as out:
        for _ in range(REPEAT):  # same events again: the importer's work per line is what is timed
            out.writelines(lines)
    return big


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else make_file(tmp)
        t0 = time.perf_counter()
        n = count_lines(path)
        t1 = time.perf_counter()
        report = import_files([path], tmp / "out.parquet", fmt="perf", workload="bench")
        t2 = time.perf_counter()
        size_mb = path.stat().st_size / 1e6
    count_rate, import_rate = n / (t1 - t0), n / (t2 - t1)
    print(f"file: {path.name}, {n:,} lines, {size_mb:.0f} MB")
    print(f"plain line count : {count_rate / 1e6:8.2f} M lines/s")
    print(f"pipeline import  : {import_rate / 1e6:8.2f} M lines/s  ({sum(report.kinds.values()):,} rows written)")
    print(f"import / count   : {import_rate / count_rate:8.3f}  (one core, same file, same run)")


if __name__ == "__main__":
    main()
