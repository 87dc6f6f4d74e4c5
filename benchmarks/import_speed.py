"""Import throughput against a plain line count of the same file, and peak memory, in one run.

Makes a large `perf script` file by recording a pipe ping-pong with `pipeline record`'s perf
invocation and writing REPEAT copies of it one after the other, each shifted in time past the
one before (or uses FILE if given), then measures:
  1. counting its lines in Python (the floor: reading the text at all), lines per CPU-second;
  2. `pipeline.tracefile.importers.import_files` on it, in a fresh process: lines per CPU-second of that
     process (all its threads; start-up not included) and wall time;
  3. peak RSS of that process, and of a second one importing a tenth of the file: streaming
     means the two should be about the same.
Run: python benchmarks/import_speed.py [FILE]
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.tracefile.record import record_text

REPEAT = 20   # copies of the recording: the importer's work per line is what is timed
TS = re.compile(rb"(\] +)(\d+)(\.\d+: )")

# Runs in the child: import one file, report CPU and wall seconds of the import alone.
CHILD = """
import json, sys, time
from pathlib import Path
from pipeline.tracefile.importers import import_files
cpu, wall = time.process_time(), time.perf_counter()
report = import_files([Path(sys.argv[1])], Path(sys.argv[2]), fmt="perf", workload="bench")
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "rows": report.rows,
                  "peak_mb": peak / 1024}))
"""


def make_file(tmp: Path, copies: int) -> Path:
    one = tmp / "one.txt"
    if not one.exists():
        record_text(["perf", "bench", "sched", "pipe", "-l", "20000"], one, cpu=0)
    text = one.read_bytes()
    secs = [int(m[2]) for m in TS.finditer(text)]
    step = secs[-1] - secs[0] + 1
    big = tmp / f"x{copies}.perf.txt"
    with open(big, "wb") as out:
        for k in range(copies):
            out.write(TS.sub(lambda m, k=k: m[1] + str(int(m[2]) + k * step).encode() + m[3], text))
    return big


def tenth(path: Path, lines: int, tmp: Path) -> Path:
    """The first tenth of the lines of path."""
    small = tmp / f"tenth-{path.name}"
    with open(path, "rb") as f, open(small, "wb") as out:
        for _, line in zip(range(lines // 10), f):
            out.write(line)
    return small


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def run_import(path: Path, out: Path) -> dict:
    """The child's figures; its peak RSS is its own VmHWM (getrusage's ru_maxrss of a child
    would count the parent's memory from before the child's exec)."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else make_file(tmp, REPEAT)
        t0 = time.process_time()      # CPU time, like the import's: the machine may be shared
        n = count_lines(path)
        count_rate = n / (time.process_time() - t0)
        small_run = run_import(tenth(path, n, tmp), tmp / "small.parquet")
        big_run = run_import(path, tmp / "big.parquet")
        size_mb = path.stat().st_size / 1e6
    import_rate = n / big_run["cpu"]
    print(f"file: {path.name}, {n:,} lines, {size_mb:.0f} MB")
    print(f"plain line count : {count_rate / 1e6:8.2f} M lines per CPU-second")
    print(f"pipeline import  : {import_rate / 1e6:8.2f} M lines per CPU-second "
          f"({n / big_run['wall'] / 1e6:.2f} M lines/s wall, {big_run['rows']:,} rows written)")
    print(f"import / count   : {import_rate / count_rate:8.3f}  (same file, same run, CPU time both)")
    print(f"peak RSS         : {small_run['peak_mb']:8.0f} MB importing {n // 10:,} lines, "
          f"{big_run['peak_mb']:.0f} MB importing {n:,} (whole process, interpreter and libraries included)")


if __name__ == "__main__":
    main()
