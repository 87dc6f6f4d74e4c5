"""Dask worker preload for the fault tests: a pause after each shard file, and a log.

Loaded with `dask worker --preload tests/pipeline/slow_shards.py`, or for a local
cluster's workers through DASK_DISTRIBUTED__WORKER__PRELOAD, it wraps
pipeline.run.runner.replay_group in that worker process only (tasks find their function
by module and name, so the wrapper is what runs). The real task runs unchanged; then,
while the file HVREPLAY_TEST_SHARD_HOLD exists (at most HOLD_LIMIT_S), the wrapper
waits before returning. So a test decides when shards may finish: with the hold file
in place each worker writes one group's shard files and stops there, written but not reported,
which is where a killed worker forces its task to run again elsewhere; removing the
file lets the run go on at full speed. Each execution appends `start` and `written`
lines (event, pid, trace, cpu, mode), one per shard of the group, to HVREPLAY_TEST_SHARD_LOG.
Nothing in pipeline/ knows about this.
"""
from __future__ import annotations

import os
import time

import pipeline.run.runner as runner

HOLD = os.environ.get("HVREPLAY_TEST_SHARD_HOLD")
LOG = os.environ.get("HVREPLAY_TEST_SHARD_LOG")
HOLD_LIMIT_S = 60


def _log(event: str, shard) -> None:
    if LOG:
        with open(LOG, "a") as f:  # one short append per line: lines from several workers do not mix
            f.write(f"{event} {os.getpid()} {shard.trace} {shard.cpu} {shard.mode}\n")


def _hold() -> None:
    deadline = time.monotonic() + HOLD_LIMIT_S
    while HOLD and os.path.exists(HOLD) and time.monotonic() < deadline:
        time.sleep(0.01)


def _held(real):
    def replay_group(group, modes, out):
        for shard in group.shards:
            _log("start", shard)
        outcome = real(group, modes, out)
        for shard in group.shards:
            _log("written", shard)
        _hold()
        return outcome
    replay_group.held = True
    return replay_group


# Dask may execute a preload file more than once (it also imports a copy from the
# worker's directory): wrap once.
if not getattr(runner.replay_group, "held", False):
    runner.replay_group = _held(runner.replay_group)
