"""Exact chunked replay: one vCPU's events split into chunks replayed in parallel, each
after a warm-up prefix, with the result proved equal to the sequential replay.

Why proved and not assumed: an LRU of capacity k is fixed by the last k distinct keys,
but a shadow page's PTEs go back to when the page was allocated, and the CR3 cache
to its last fills, so how much warm-up suffices depends on the trace. Each chunk
therefore reports the model state after its warm-up and at its end (replay.kernel's
snapshot, in the trace's own keys), and what it read of the shadow pool it started from
(replay/reads.py). Chunk 0 has no warm-up and is exact; chunk i is exact when its state
after warm-up equals chunk i-1's (exact) end state, because the counts of a chunk depend
only on its start state and its events, or when the two differ only in shadow pages and
PTEs the chunk never read (reads.follows); its exact end state is then its own with those
pages put back (reads.carried). A chunk that fails
the check is replayed once more, from that end state restored (replay.kernel.restore) and
without warm-up, so it is exact; its new end state is what the next chunk is checked
against. A chain of failures thus costs at most the sequential replay besides the
speculation, never more, and the result never depends on the chunking. A repaired chunk
is checked like any other: a restore that did not give back the snapshot fails the run.

A chunk's counts come back per source (replay.kernel.attribution's columns), so the
merged shard has its attribution too; QEMU's busy time depends on the whole span and is
added once, after the merge.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from pipeline.tracefile.format import TraceMeta, iter_events
from replay import kernel, reads
from replay.mode import Mode

SOURCE_COLUMNS = ["kind", "asid", "device", "driver"]


@dataclass(frozen=True)
class Chunk:
    """Events [start, stop) of one vCPU, replayed after the warm-up [warm, start)."""

    start: int
    stop: int | None   # None: to the trace's end
    warm: int

    def unwarmed(self) -> Chunk:
        """The same chunk without warm-up: it starts from a restored state."""
        return replace(self, warm=self.start)


@dataclass(frozen=True)
class Part:
    """One chunk's counts per source, and the model state where it starts and ends."""

    chunk: Chunk
    counts: pl.DataFrame                   # SOURCE_COLUMNS + count; no busy time
    start_state: kernel.Snapshot | None    # after the warm-up; None for a chunk at event 0
    end_state: kernel.Snapshot | None      # None when no chunk follows
    read: tuple[reads.Reads, ...] | None = None  # what it read of start_state; None: started exact

    def follows(self, previous: Part, modes: tuple[Mode, ...]) -> bool:
        """Exact, given that `previous` is: it starts in the state `previous` ended in, or in
        one that differs from it only where it never looked."""
        if self.chunk.warm == 0 or self.start_state == previous.end_state:
            return True
        assert previous.end_state is not None and self.start_state is not None  # not the first part
        return self.read is not None and reads.follows(self.start_state, previous.end_state, self.read, modes)

    def after(self, previous: Part) -> Part:
        """This part (which follows `previous`) with the end state the sequential replay has."""
        if self.end_state is None or self.start_state == previous.end_state or self.read is None:
            return self
        assert previous.end_state is not None
        return replace(self, end_state=reads.carried(previous.end_state, self.end_state, self.read))


WHOLE = Chunk(0, None, 0)


def plan_chunks(events: int, chunk_events: int | None, warmup_events: int | None = None) -> list[Chunk]:
    """Chunks of `chunk_events` (the whole trace when None or longer than it), each warmed
    up by `warmup_events` (default: one chunk's length)."""
    if not chunk_events or events <= chunk_events:
        return [WHOLE]
    warmup = chunk_events if warmup_events is None else warmup_events
    return [Chunk(s, min(s + chunk_events, events), max(0, s - warmup)) for s in range(0, events, chunk_events)]


def replay_part(path: Path, cpu: int, meta: TraceMeta, mode: Mode, chunk: Chunk, last: bool,
                start: kernel.Snapshot | None = None) -> Part:
    """Replay one chunk with the compiled kernel, streaming the trace in batches: after its
    warm-up, or from `start` (a repair: the state the chunk before ended in) restored."""
    state = kernel.new_state([mode], meta.guest)
    if start is None:
        _replay_range(state, path, cpu, meta, chunk.warm, chunk.start)
    else:
        kernel.restore(state, start)
        chunk = chunk.unwarmed()
    start_state = kernel.snapshot(state) if chunk.start > 0 else None
    kernel.reset_counts(state)
    speculative = start is None and chunk.start > 0
    if speculative:
        kernel.track_reads(state)
    _replay_range(state, path, cpu, meta, chunk.start, chunk.stop)
    end_state = None if last else kernel.snapshot(state)
    return Part(chunk, _source_counts(state), start_state, end_state, reads.reads(state) if speculative else None)


def _replay_range(state: kernel.KernelState, path: Path, cpu: int, meta: TraceMeta, start: int,
                  stop: int | None) -> None:
    if stop is None or start < stop:
        for events in iter_events(path, cpu, meta, start=start, stop=stop):
            kernel.replay_batch(state, events.kind, events.value, events.asid, events.arg)


Repair = Callable[[Chunk, bool, kernel.Snapshot], Part]  # replay_part's (chunk, last, start)


def exact_parts(parts: list[Part], modes: tuple[Mode, ...], repair: Repair) -> tuple[list[Part], int]:
    """The parts with every chunk proved to start where the one before ended (each with the
    end state the sequential replay has): a chunk that does not is replayed once more from
    that end state (`repair(chunk, last, start)`). Returns the parts and how many were repaired."""
    exact, repaired = list(parts), 0
    for i in range(1, len(exact)):
        previous = exact[i - 1]
        if not exact[i].follows(previous, modes):
            assert previous.end_state is not None  # only the last part has none
            exact[i] = repair(exact[i].chunk, i == len(exact) - 1, previous.end_state)
            repaired += 1
            if exact[i].start_state != previous.end_state:
                raise RuntimeError(f"chunk at event {exact[i].chunk.start}: restored state differs from its snapshot")
        exact[i] = exact[i].after(previous)
    return exact, repaired


def merged_counts(parts: list[Part], mode: Mode, span_ns: int) -> pl.DataFrame:
    """The shard's counts per source: the chunks' summed, plus QEMU's busy time."""
    frame = pl.concat([p.counts for p in parts]).group_by(SOURCE_COLUMNS).agg(pl.col("count").sum())
    idle = int(frame.filter(pl.col("driver") == "idle_ns")["count"].sum())
    busy = pl.DataFrame(kernel.busy_rows(mode, span_ns, idle), schema=frame.schema)
    return pl.concat([frame, busy]).sort(SOURCE_COLUMNS)


def _source_counts(state: kernel.KernelState) -> pl.DataFrame:
    """Mode 0's counts per source; busy time is left out (the merge adds it once)."""
    columns = kernel.attribution(state, 0)
    return pl.DataFrame({name: list(values) for name, values in columns.items()},
                        schema={"kind": pl.String, "asid": pl.Int64, "device": pl.Int64,
                                "driver": pl.String, "count": pl.Int64})
