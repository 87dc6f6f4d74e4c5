"""Replay throughput per core against reading the same Parquet data, measured in one run.

Builds a long trace in a temporary folder (the shipped traces/hackbench-5.parquet written
REPEAT times, shifted in time: >= 20 M events; never committed), then, in a fresh process
on one core (CPU time, so other load on the machine matters less):
  1. streams it row group by row group into numpy: the Parquet-read ceiling,
  2. streams it again through the compiled kernel under each shipped mode alone
     (configs/modes: the seed's five and the four after 2007),
  3. and under the seed's five modes, then every shipped mode, in one pass,
and prints M events/s for each, the replay/read ratio, that process's peak RSS, and the
kernel's first-call time with an empty numba cache (cold: compiles) and a filled one (warm).
Run: python benchmarks/replay_speed.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from long_trace import make_trace
from pipeline.config.modes import load_modes
from pipeline.tracefile.format import META_KEY, TraceMeta
from replay import kernel

ROOT = Path(__file__).resolve().parent.parent
SEED = ["native", "qemu", "kvm-upstream", "kvm-trunk", "kvm-paravirt"]  # the one-pass target
COLUMNS = ["kind", "value", "asid", "arg"]  # what the model reads (one-CPU trace)
FIRST_CALL = """
import time
t = time.process_time()
import numpy as np
from pipeline.config.modes import load_modes
from replay import kernel
from replay.mode import Guest
s = kernel.new_state(list(load_modes().values()), Guest())
kernel.replay_batch(s, np.array([0, 1, 5], np.uint8), np.array([1, 2, 3], np.uint64),
                    np.ones(3, np.uint32), np.zeros(3, np.uint32))
print(time.process_time() - t)
"""


def batches(path: Path):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20, columns=COLUMNS, use_threads=False):
        yield [batch.column(c).to_numpy() for c in COLUMNS]


def read_rate(path: Path) -> float:
    t0, n = time.process_time(), 0
    for cols in batches(path):
        n += len(cols[0])
    return n / (time.process_time() - t0)


def replay_rate(path: Path, modes: list, guest) -> float:
    """Events/s of replay_batch alone (reading excluded) while streaming the file."""
    state, spent = kernel.new_state(modes, guest), 0.0
    for cols in batches(path):
        t0 = time.process_time()
        kernel.replay_batch(state, *cols)
        spent += time.process_time() - t0
    return state.events / spent


def measure(path: Path) -> None:
    guest = TraceMeta.from_json(pq.read_schema(path).metadata[META_KEY], path).guest
    modes = load_modes()
    # compile (or load from numba's cache) outside the timings
    kernel.replay_batch(kernel.new_state(list(modes.values()), guest), *next(batches(path)))
    rows = pq.ParquetFile(path).metadata.num_rows
    read = read_rate(path)
    print(f"trace: {rows:,} events ({rows / 1e6:.1f} M), {path.stat().st_size / 1e6:.0f} MB, one CPU")
    print(f"{'Parquet read into numpy (ceiling)':36s} {read / 1e6:7.1f} M events/s")
    rates = {name: replay_rate(path, [m], guest) for name, m in modes.items()}
    for name, rate in rates.items():
        print(f"{'replay ' + name:36s} {rate / 1e6:7.1f} M events/s   replay/read {rate / read:5.2f}")
    for label, group in (("the seed's 5 modes", [modes[n] for n in SEED]), (f"all {len(modes)} modes", list(modes.values()))):
        together = replay_rate(path, group, guest)
        print(f"{'replay ' + label + ' in one pass':36s} {together / 1e6:7.1f} M events/s   "
              f"replay/read {together / read:5.2f}  ({len(group) * together / 1e6:.1f} M mode-events/s)")
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB (Python, numba, pyarrow and the JIT code included)")


def peak_rss_mb() -> float:
    """VmHWM: this process's own peak (getrusage's would include the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_call_seconds(cache: Path) -> float:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", FIRST_CALL], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=4, help="copies of hackbench-5 (6.45 M events each)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        path = tmp / "long.parquet"
        make_trace(path, args.repeat)
        subprocess.run([sys.executable, __file__, "--measure", str(path)], cwd=ROOT, check=True)
        cold, warm = first_call_seconds(tmp / "numba"), first_call_seconds(tmp / "numba")
    print(f"first call (import + compile or cache load, {len(load_modes())} modes): cold {cold:.1f} s, "
          f"warm {warm:.2f} s CPU")
    print("M events/s = events per CPU-second of one process (single-threaded numba and Parquet decoding).")


if __name__ == "__main__":
    main()
