"""Run shards on Dask: map replay over (trace, vCPU, mode), write each result, reduce.

Dask only maps and reduces here: the task is `replay_shard`, a plain function of a
shard and a mode that reads its columns, replays them and writes its own file. A
local cluster is started unless a scheduler is named (address, scheduler file or
DASK_SCHEDULER_ADDRESS).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dask.distributed import Client, LocalCluster, as_completed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.results import Failure, shard_row, write_shard
from pipeline.shards import Shard, TraceFile, plan
from pipeline.trace_format import TraceError, read_events, read_meta
from replay.mode import Mode
from replay.kernel import replay


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: a local cluster of `workers` processes, or an existing scheduler."""

    workers: int = 2
    scheduler_address: str | None = None
    scheduler_file: str | None = None


@dataclass(frozen=True)
class RunOutput:
    rows: list[tuple[str, dict[str, Any]]]  # (mode, shard row)
    failures: list[Failure]


def replay_shard(shard: Shard, mode: Mode, out: str) -> tuple[str, dict[str, Any]] | Failure:
    """The Dask task: one shard under one mode, written to its own result file."""
    try:
        events = read_events(Path(shard.path), shard.cpu, shard.meta)
        counts = replay(events, shard.meta.guest, mode)
    except (TraceError, ValueError) as e:
        return Failure(shard.trace, mode.name, _one_line(f"{shard.path}: {e}" if isinstance(e, ValueError) else str(e)))
    row = shard_row(shard, counts)
    write_shard(Path(out), shard, row)
    return mode.name, row


@contextmanager
def connect(spec: ClusterSpec) -> Iterator[Client]:
    address = spec.scheduler_address or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if spec.scheduler_file:
        with Client(scheduler_file=spec.scheduler_file) as client:
            yield client
    elif address:
        with Client(address) as client:
            yield client
    else:
        with LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client


def open_traces(traces: list[TraceFile], modes: list[Mode], report: Any) -> tuple[list[Shard], list[Failure]]:
    """Read every trace's metadata up front; a bad file fails alone, with one line."""
    shards: list[Shard] = []
    failures: list[Failure] = []
    for t in traces:
        try:
            shards += plan(t, read_meta(t.path), [m.name for m in modes])
        except TraceError as e:
            report(str(e))
            failures += [Failure(t.trace, m.name, str(e)) for m in modes]
    return shards, failures


def run(traces: list[TraceFile], modes: list[Mode], out: Path, spec: ClusterSpec, report: Any = print) -> RunOutput:
    """Replay every trace under every mode; per-shard files land under `out`."""
    shards, failures = open_traces(traces, modes, report)
    by_name = {m.name: m for m in modes}
    rows: list[tuple[str, dict[str, Any]]] = []
    if not shards:
        return RunOutput(rows, failures)
    with connect(spec) as client, _progress() as bar:
        task = bar.add_task("replaying shards", total=len(shards))
        futures = {client.submit(replay_shard, s, by_name[s.mode], str(out), pure=False): s for s in shards}
        for future in as_completed(futures):
            outcome = _outcome(future, futures[future])
            if isinstance(outcome, Failure):
                report(outcome.error)
                failures.append(outcome)
            else:
                rows.append(outcome)
            bar.advance(task)
    return RunOutput(rows, _dedupe(failures))


def _outcome(future: Any, shard: Shard) -> tuple[str, dict[str, Any]] | Failure:
    try:
        return future.result()
    except Exception as e:  # a bug or a lost worker: this shard fails, the run goes on
        return Failure(shard.trace, shard.mode, _one_line(f"{shard.path}: internal error: {type(e).__name__}: {e}"))


def _dedupe(failures: list[Failure]) -> list[Failure]:
    """A multi-vCPU trace may fail once per shard; keep one failure per (trace, mode)."""
    return list({(f.trace, f.mode): f for f in failures}.values())


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True)


def _one_line(text: str) -> str:
    return " ".join(text.split())
