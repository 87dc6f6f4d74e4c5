"""Chunked against unchunked replay, and 1 -> 2 worker scaling, measured in one run (issue 16).

Every figure is the wall time of one `pipeline replay` process, start-up included (imports,
hashing the trace, connecting, the workers' first import of the model), on a fresh Dask cluster:
one this script starts (so it can ask the workers for their peak RSS, VmHWM, afterwards; the
cluster's own start-up is then outside the clock), or, where a figure is "end to end", the one
the CLI starts itself with --workers. Chunked runs add --chunk-events (and --warmup-events if
given); the re-run count is the K of the CLI's note line "... K replayed again ...". Every chunked
output is compared with the unchunked one (summary, counts and attribution files, row by row):
chunking must not change a bit. The parts, as issue 16 states its targets:
  a. per seed mode, alone: chunked / unchunked wall time on 1 and on 2 workers (unchunked:
     --chunk-events 0), after what bounds it: the cores one unchunked replay task keeps busy,
     and the fixed cost of a `pipeline replay` run;
  b. 1 -> 2 workers on a ~32 M-event trace (hackbench-5 repeated): two equal shards (it and a
     copy, kvm-trunk), and it alone chunked (native, whose state turns over): speed-up / 2;
  c. (with --events) the seed's five modes in one run over a trace of that many events;
  d. the seed's five modes in one run over the trace, end to end, in M events/s.
The trace is generated in a temporary folder (`pipeline generate hackbench --groups 5`, about a
minute for --loops 1000: 71 M events) unless --trace names one, which is only read.
Run: python benchmarks/chunked_replay.py [--trace PATH | --loops 1000] [--events 1e9]
     [--chunk-events N] [--warmup-events W] [--parts a,b,c,d]
"""
from __future__ import annotations

import argparse
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from dask.distributed import Client

from long_trace import SOURCE, make_trace
from pipeline.run.runner import local_cluster

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = Path(sys.executable).parent / "pipeline"
SEED_MODES = ["native", "qemu", "kvm-upstream", "kvm-trunk", "kvm-paravirt"]
SCALE_EVENTS = 32e6  # part b's trace, as the issue sizes it
CHUNKS_PER_TRACE = 8  # the default chunking: 4 chunks per worker on 2 workers
REPAIRED = re.compile(r"(\d+) replayed again")
UNCHUNKED = ["--chunk-events", "0"]   # the baseline: no chunks, not even the automatic ones


@dataclass(frozen=True)
class Run:
    """One timed `pipeline replay`: its wall time, chunks repaired (None: not chunked, or the
    note line not found), the largest worker peak RSS (None: the CLI's own cluster), its --out."""

    seconds: float
    repaired: int | None
    peak_mb: float | None
    out: Path


@dataclass(frozen=True)
class Setup:
    """What every run of this benchmark shares: its scratch folder and the chunking options."""

    tmp: Path
    chunk_events: int | None
    warmup_events: int | None

    def chunking(self, events: int) -> list[str]:
        """The CLI's chunking options for a trace of `events` (CHUNKS_PER_TRACE chunks unless told)."""
        chunk = self.chunk_events or math.ceil(events / CHUNKS_PER_TRACE)
        warmup = [] if self.warmup_events is None else ["--warmup-events", str(self.warmup_events)]
        return ["--chunk-events", str(chunk), *warmup]

    def out(self, label: str) -> Path:
        """A fresh --out per run: a reused one would resume, keeping the earlier run's shards."""
        return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.tmp))


def worker_peak_rss_mb() -> float:
    """Run on a worker: its own peak resident memory (VmHWM; getrusage's would count its parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_cli(args: Sequence[str]) -> tuple[float, str]:
    """Wall seconds and stderr of one `pipeline replay ARGS`; exits with its stderr if it fails.

    $DASK_SCHEDULER_ADDRESS is dropped, so only the options given choose the cluster."""
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    t0 = time.perf_counter()
    done = subprocess.run([str(PIPELINE), "replay", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"pipeline replay {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return seconds, done.stderr


def repaired(stderr: str) -> int | None:
    """K of the note line "chunked: ... K replayed again ..." (None without one: not chunked)."""
    found = REPAIRED.search(stderr)
    return int(found.group(1)) if found else None


def replay(inputs: Sequence[Path], modes: Sequence[str], workers: int, out: Path, extra: Sequence[str] = (),
           own_cluster: bool = False) -> Run:
    """One timed run on a fresh cluster of `workers`: the script's (peak RSS measured), or with
    `own_cluster` the CLI's (--workers: its start-up in the wall time, no peak RSS)."""
    args = [*map(str, inputs), "--modes", ",".join(modes), "--out", str(out), *extra]
    if own_cluster:
        seconds, stderr = run_cli([*args, "--workers", str(workers)])
        return Run(seconds, repaired(stderr), None, out)
    with local_cluster(workers) as cluster, Client(cluster) as client:
        client.run(lambda: None)  # workers up before the clock starts
        seconds, stderr = run_cli([*args, "--scheduler-address", cluster.scheduler_address])
        peak = max(client.run(worker_peak_rss_mb).values())
    return Run(seconds, repaired(stderr), peak, out)


def identical(a: Path, b: Path) -> bool:
    """Whether two --out folders hold the same result files with the same rows (order aside:
    a chunked shard's attribution rows are merged in another order). Footers are not compared."""
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    if files != sorted(p.relative_to(b) for p in b.rglob("*.parquet")):
        return False
    return all(_rows(a / f).equals(_rows(b / f)) for f in files)


def _rows(path: Path) -> pl.DataFrame:
    frame = pl.read_parquet(path, hive_partitioning=False)
    return frame.sort(frame.columns)


def events_of(trace: Path) -> int:
    return pq.ParquetFile(trace).metadata.num_rows


def fmt(value: float | int | bool | None, spec: str = "") -> str:
    """A table cell; "-" for a figure this run does not have."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], legend: str) -> None:
    """Print one part: its title, right-aligned columns, and a line saying what the figures are."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print(legend)


def cores_used(trace: Path) -> None:
    """What bounds part a: the cores one unchunked replay task keeps busy (CPU time over wall
    time of replay_parts in this process: the kernel, and the trace decoded ahead of it on
    other threads), and the best chunked/unchunked ratio of the replay alone that this
    machine's cores then allow, with chunks that all start exact after the default warm-up
    (a tenth of a chunk): CPU time x 1.1 spread over every core, against the whole's wall."""
    from pipeline.config.modes import load_modes
    from pipeline.run.chunked import WHOLE, WARMUP_SHARE, replay_parts
    from pipeline.tracefile.format import read_meta

    meta, cores, modes = read_meta(trace), len(os.sched_getaffinity(0)), load_modes()
    rows = []
    for name in SEED_MODES:
        usage, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        replay_parts(trace, 0, meta, (modes[name],), WHOLE, True)
        wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - usage.ru_utime + after.ru_stime - usage.ru_stime
        rows.append([name, fmt(wall, ".2f"), fmt(cpu, ".2f"), fmt(cpu / wall, ".2f"),
                     fmt(cpu * (1 + 1 / WARMUP_SHARE) / cores / wall, ".2f")])
    table(f"(a0) one unchunked replay task, in this process, {trace.name}",
          ["mode", "wall s", "CPU s", "cores used", f"best chunked/unchunked on {cores} cores"], rows,
          "CPU s = user + system time of this process (every thread); best = CPU s x 1.1 / cores / wall s: "
          "the replay alone, measured, bounding part a's ratio before any fixed cost of `pipeline replay`.")


def part_a(setup: Setup, trace: Path) -> None:
    """Each seed mode alone (one shard): unchunked, then chunked, on 1 and on 2 workers."""
    cores_used(trace)
    small = ROOT / "traces" / "hackbench-1.parquet"
    fixed = replay([small], ["native"], 2, setup.out("a-fixed"), UNCHUNKED).seconds
    print(f"fixed cost of `pipeline replay` (the same run on {small.name}, {events_of(small):,} events): {fixed:.1f} s")
    rows = []
    for mode in SEED_MODES:
        for workers in (1, 2):
            plain = replay([trace], [mode], workers, setup.out(f"a-{mode}-{workers}"), UNCHUNKED)
            chunked = replay([trace], [mode], workers, setup.out(f"a-{mode}-{workers}c"),
                             setup.chunking(events_of(trace)))
            rows.append([mode, str(workers), fmt(plain.seconds, ".1f"), fmt(chunked.seconds, ".1f"),
                         fmt(chunked.seconds / plain.seconds, ".2f"), fmt(chunked.repaired),
                         fmt(identical(plain.out, chunked.out)), fmt(max(plain.peak_mb or 0, chunked.peak_mb or 0), ".0f")])
    table(f"(a) chunked vs unchunked, each seed mode alone, {trace.name} ({events_of(trace) / 1e6:.1f} M events)",
          ["mode", "workers", "unchunked s", "chunked s", "chunked/unchunked", "repaired", "identical", "peak RSS MB"],
          rows, "s = wall time of `pipeline replay` incl. its start-up (not the cluster's); target "
          "chunked/unchunked <= 0.65 on 2 workers, <= 1.1 on 1 (where no worker is left idle the CLI does not "
          "chunk); repaired = chunks replayed again, in one pass from the previous chunk's end state, "
          "after their mode missed a start state; identical = chunked results equal to unchunked, row for row; "
          "peak RSS = the largest worker VmHWM of the two runs.")


def part_b(setup: Setup) -> None:
    """1 -> 2 workers: two equal whole shards, and one trace in chunks, on the same ~32 M events."""
    copies = math.ceil(SCALE_EVENTS / events_of(SOURCE))
    trace = setup.tmp / "scale.parquet"
    make_trace(trace, copies)
    twin = setup.tmp / "scale-twin.parquet"
    twin.symlink_to(trace)
    cases: list[tuple[str, list[Path], str, list[str]]] = [
        ("2 equal shards (kvm-trunk)", [trace, twin], "kvm-trunk", UNCHUNKED),
        ("chunked (native)", [trace], "native", setup.chunking(events_of(trace)))]
    rows = []
    for label, inputs, mode, extra in cases:
        one, two = (replay(inputs, [mode], w, setup.out(f"b-{w}"), extra) for w in (1, 2))
        speedup = one.seconds / two.seconds
        rows.append([label, fmt(one.seconds, ".1f"), fmt(two.seconds, ".1f"), fmt(speedup, ".2f"),
                     fmt(speedup / 2, ".0%"), fmt(two.repaired), fmt(identical(one.out, two.out)),
                     fmt(max(one.peak_mb or 0, two.peak_mb or 0), ".0f")])
    table(f"(b) 1 -> 2 workers, {SOURCE.name} x {copies} ({events_of(trace) / 1e6:.1f} M events)",
          ["case", "1 worker s", "2 workers s", "speed-up", "efficiency", "repaired", "identical", "peak RSS MB"],
          rows, "s = wall time of `pipeline replay` incl. its start-up (not the cluster's); efficiency = "
          "speed-up / 2; repaired = on 2 workers; identical = 2 workers' results equal to 1 worker's; the "
          "chunked case on 1 worker runs unchunked (no idle worker: the CLI says --chunk-events not used); "
          "peak RSS = the largest worker VmHWM.")


def seed_runs(setup: Setup, trace: Path, label: str, own_cluster: bool) -> list[list[str]]:
    """The seed's five modes in one run on 2 workers, unchunked and chunked: a row each."""
    events = events_of(trace)
    plain = replay([trace], SEED_MODES, 2, setup.out(f"{label}-2"), UNCHUNKED, own_cluster=own_cluster)
    chunked = replay([trace], SEED_MODES, 2, setup.out(f"{label}-2c"), setup.chunking(events), own_cluster)
    same = identical(plain.out, chunked.out)
    return [[name, fmt(r.seconds, ".1f"), fmt(events / r.seconds / 1e6, ".1f"), fmt(r.repaired),
             fmt(same if r is chunked else None), fmt(r.peak_mb, ".0f")]
            for name, r in (("unchunked", plain), (" ".join(setup.chunking(events)), chunked))]


SEED_HEADER = ["run", "wall s", "M events/s", "repaired", "identical", "peak RSS MB"]


def part_c(setup: Setup, events: float) -> None:
    """The seed's five modes over a trace of `events` (hackbench-5 repeated), on 2 workers."""
    trace = setup.tmp / "long.parquet"
    t0 = time.perf_counter()
    rows = make_trace(trace, math.ceil(events / events_of(SOURCE)))
    print(f"\n(c)'s trace: {rows:,} events, {trace.stat().st_size / 1e6:.0f} MB, built in {time.perf_counter() - t0:.0f} s")
    table(f"(c) the five seed modes in one run, 2 workers, {rows / 1e6:,.0f} M events",
          SEED_HEADER, seed_runs(setup, trace, "c", own_cluster=False),
          "wall s = `pipeline replay` incl. its start-up, on a cluster started beforehand (its ~2 s start "
          "not counted); target <= 90 s, peak RSS (largest worker VmHWM) < 2048 MB; "
          "M events/s = trace events / wall s (each event replayed under 5 modes).")


def part_d(setup: Setup, trace: Path) -> None:
    """The seed's five modes over the trace on 2 local workers, end to end, as a user runs it."""
    table(f"(d) the five seed modes in one run, `pipeline replay --workers 2`, {events_of(trace) / 1e6:.1f} M events",
          SEED_HEADER, seed_runs(setup, trace, "d", own_cluster=True),
          "wall s = end to end incl. the CLI starting its own 2-worker cluster (so no peak RSS); "
          "M events/s = trace events / wall s (each event replayed under 5 modes), target >= 6.")


def generate(out: Path, loops: int) -> None:
    """hackbench with 5 groups, as the issue's 71 M-event trace (--loops 1000) is made."""
    subprocess.run([str(PIPELINE), "generate", "hackbench", "--groups", "5", "--loops", str(loops),
                    "-o", str(out)], cwd=ROOT, check=True, capture_output=True)


def warm_numba(setup: Setup) -> None:
    """Fill numba's on-disk cache (whole and chunked replay), so no timed run pays a compile."""
    small = ROOT / "traces" / "hackbench-1.parquet"
    replay([small], SEED_MODES, 1, setup.out("warm"))
    replay([small], SEED_MODES, 1, setup.out("warm-c"), setup.chunking(events_of(small)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, help="trace to replay (read only); else one is generated")
    parser.add_argument("--loops", type=int, default=1000, help="hackbench loops of the generated trace (1000: 71 M events)")
    parser.add_argument("--events", type=float, help="part c's trace length (e.g. 1e9: several GB, minutes)")
    parser.add_argument("--chunk-events", type=int, help=f"chunk size (default: each trace in {CHUNKS_PER_TRACE} chunks)")
    parser.add_argument("--warmup-events", type=int, help="passed to the CLI (default: the CLI's)")
    parser.add_argument("--parts", help="comma-separated, of a,b,c,d (default a,b,d, and c with --events)")
    args = parser.parse_args()
    args.parts = set((args.parts or "a,b,d" + (",c" if args.events else "")).split(","))
    if args.parts - set("abcd"):
        parser.error(f"--parts: unknown {','.join(sorted(args.parts - set('abcd')))}")
    if "c" in args.parts and not args.events:
        parser.error("part c needs --events")
    return args


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as d:
        setup = Setup(Path(d), args.chunk_events, args.warmup_events)
        trace = args.trace or setup.tmp / f"hackbench-5-loops{args.loops}.parquet"
        t0 = time.perf_counter()
        if not args.trace and args.parts & set("ad"):
            generate(trace, args.loops)
            print(f"generated {trace.name} in {time.perf_counter() - t0:.0f} s")
        print(f"machine: {len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f} at the start")
        if args.parts & set("ad"):
            print(f"trace: {trace} ({events_of(trace):,} events)")
        warm_numba(setup)
        steps: dict[str, Callable[[], None]] = {
            "a": lambda: part_a(setup, trace), "b": lambda: part_b(setup),
            "c": lambda: part_c(setup, args.events), "d": lambda: part_d(setup, trace)}
        for part in sorted(args.parts):
            steps[part]()
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
