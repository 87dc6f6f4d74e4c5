"""Exact chunked replay: one vCPU's events split into chunks replayed in parallel, each
after a warm-up prefix, with the result proved equal to the sequential replay.

Why proved and not assumed: an LRU of capacity k is fixed by the last k distinct keys,
but a global TLB entry may stay from any time ago, a shadow page's PTEs go back to when
the page was allocated, and the CR3 cache to its last fills, so how much warm-up
suffices depends on the trace. Each chunk therefore reports the model state after its
warm-up and at its end (replay.kernel's snapshot, in the trace's own keys), and what it
read of the TLBs, shadow pool and CR3 cache it started from (replay/reads.py). Chunk 0
has no warm-up and is exact; chunk i is exact when its state after warm-up equals chunk
i-1's (exact) end state, because the counts of a chunk depend only on its start state
and its events, or when the two differ only in what the chunk never read
(reads.follows); its exact end state is then its own with those put back (reads.carried).

A mode whose chunk fails the check is not speculated on again (exact_parts): the rest of
its trace is replayed in one pass from the end state of the chunk before, restored
(replay.kernel.restore), beside the other modes' chunks. So a trace whose state a warm-up
never reaches costs the sequential replay plus what was speculated before the miss was
seen, and the result never depends on the chunking. Where no worker would be left idle,
nothing is chunked (runner). A restore that did not give back the snapshot fails the run.

A chunk's counts come back per source (replay.kernel.attribution's columns), so the
merged shard has its attribution too; QEMU's busy time depends on the whole span and is
added once, after the merge.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

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

    def end(self) -> kernel.Snapshot:
        """The end state, of a part a chunk follows (only the last part has none)."""
        assert self.end_state is not None
        return self.end_state

    def after(self, previous: Part) -> Part:
        """This part (which follows `previous`) with the end state the sequential replay has."""
        if self.end_state is None or self.start_state == previous.end_state or self.read is None:
            return self
        assert previous.end_state is not None and self.start_state is not None
        return replace(self, end_state=reads.carried(self.start_state, previous.end_state, self.end_state, self.read))


WHOLE = Chunk(0, None, 0)


# Default warm-up: a tenth of a chunk, so that one worker replays at most ~10% more than the
# sequential replay, but at least 100,000 events, which reach the TLBs' and the softmmu's
# state (256 entries; measured on hackbench-5, 18.7 M events: native and qemu chunks then
# start in the sequential state). Longer warm-ups do not help what never converges (a shadow
# pool keeps pages from any time ago; replay/reads.py proves such chunks where it can).
WARMUP_MIN_EVENTS = 100_000
WARMUP_SHARE = 10
# Chunks made without --chunk-events: only for a trace of at least this many events, when
# there are fewer groups than workers, in chunks enough for two per idle worker.
AUTO_MIN_EVENTS = 4_000_000
AUTO_CHUNKS_PER_WORKER = 2
# CPU cores one replay task keeps busy: CPU time over wall time of one whole replay of
# hackbench-5 (71 M events) in one process, measured on a 2-core machine: 1.61 (native),
# 1.41 (kvm-trunk); decoding alone 1.73.
TASK_CORES = 1.5


def plan_chunks(events: int, chunk_events: int | None, warmup_events: int | None = None) -> list[Chunk]:
    """Chunks of `chunk_events` (the whole trace when None or longer than it), each warmed
    up by `warmup_events` (default_warmup's by default)."""
    if not chunk_events or events <= chunk_events:
        return [WHOLE]
    warmup = default_warmup(chunk_events) if warmup_events is None else warmup_events
    return [Chunk(s, min(s + chunk_events, events), max(0, s - warmup)) for s in range(0, events, chunk_events)]


def default_warmup(chunk_events: int) -> int:
    return min(chunk_events, max(WARMUP_MIN_EVENTS, chunk_events // WARMUP_SHARE))


def auto_chunks_pay(modes: tuple[Mode, ...], cores: int, groups: int) -> bool:
    """Whether chunks made without --chunk-events can pay: only where cores would idle, and
    only for modes whose state a warm-up reaches.
    - Cores, not task slots: one replay task keeps TASK_CORES busy (the kernel, and the
      trace decoded ahead of it on other threads), so a chunk only gains where the groups
      leave that much more. Measured on 2 cores, native on 71 M events, 2 workers: whole
      2.9 s, in 8 chunks 3.3 s, each chunk taking twice as long beside another.
    - Modes without a shadow pool: measured on hackbench-5 (18.7 M events, 2 M-event
      chunks), 6 to 9 of 10 chunks of kvm-upstream, kvm-trunk and kvm-paravirt missed
      their start states with warm-ups from 100,000 events to a whole chunk, so
      speculating on them costs more than it saves."""
    return cores >= TASK_CORES * (groups + 1) and not any(m.features.shadow for m in modes)


def wants_chunks(chunk_events: int | None, modes: tuple[Mode, ...], workers: int, cores: int, groups: int) -> bool:
    """Whether a group is chunked. Never where no worker would be left idle (the chunks
    could only replay one after another, each restoring the state the one before left);
    there, always with --chunk-events N, never with 0 (a baseline to measure chunks
    against), by default where auto_chunks_pay."""
    if groups >= workers:
        return False
    return chunk_events > 0 if chunk_events is not None else auto_chunks_pay(modes, cores, groups)


def auto_chunk_events(events: int, workers: int, groups: int) -> int | None:
    """The chunk size when auto_chunks_pay: two chunks per worker the groups leave idle, for
    a trace long enough (AUTO_MIN_EVENTS); None: no chunks."""
    if events < AUTO_MIN_EVENTS:
        return None
    return -(-events // (AUTO_CHUNKS_PER_WORKER * -(-workers // groups)))


def replay_parts(path: Path, cpu: int, meta: TraceMeta, modes: tuple[Mode, ...], chunk: Chunk, last: bool,
                 start: kernel.Snapshot | None = None) -> list[Part]:
    """Replay one chunk under every mode in one pass (the trace is read once), with the
    compiled kernel, streaming the trace in batches: after its warm-up, or from `start` (a
    repair: the state the chunk before ended in) restored. One Part per mode."""
    state = kernel.new_state(modes, meta.guest)
    if start is None:
        _replay_range(state, path, cpu, meta, chunk.warm, chunk.start)
    else:
        kernel.restore(state, start)
        chunk = chunk.unwarmed()
    start_state = kernel.snapshot(state) if chunk.start > 0 else None
    if start is not None and start_state != start:
        raise RuntimeError(f"chunk at event {chunk.start}: restored state differs from its snapshot")
    kernel.reset_counts(state)
    speculative = start is None and chunk.start > 0
    if speculative:
        kernel.track_reads(state)
    _replay_range(state, path, cpu, meta, chunk.start, chunk.stop)
    end_state = None if last else kernel.snapshot(state)
    read = reads.reads(state) if speculative else None

    def one(snap: kernel.Snapshot | None, m: int) -> kernel.Snapshot | None:
        return None if snap is None else (snap[m],)

    return [Part(chunk, _source_counts(state, m), one(start_state, m), one(end_state, m),
                 None if read is None else (read[m],)) for m in range(len(modes))]


def _replay_range(state: kernel.KernelState, path: Path, cpu: int, meta: TraceMeta, start: int,
                  stop: int | None) -> None:
    if stop is None or start < stop:
        for events in iter_events(path, cpu, meta, start=start, stop=stop):
            kernel.replay_batch(state, events.kind, events.value, events.asid, events.arg)


class Rest(NamedTuple):
    """Replay mode `mode` (an index) from chunk `first`'s start to the trace's end, in one
    pass, from `start` (the end state of the chunk before)."""

    mode: int
    first: int
    start: kernel.Snapshot


Repair = Callable[[list[Rest]], list[Callable[[], Part]]]   # runs the rests in parallel: a thunk each, waiting for its part


def exact_parts(speculated: Callable[[int], list[Part]], chunks: list[Chunk], modes: tuple[Mode, ...], repair: Repair,
                stop: Callable[[int], None]) -> tuple[list[list[Part]], int]:
    """Each mode's parts in order, proved to start where the one before ended, each with the
    end state the sequential replay has. speculated(i): chunk i's parts, one per mode
    (replayed after a warm-up; chunk 0 from the start), waited for in order. A mode whose
    chunk i misses (reads.follows) is not speculated on again: the rest of its trace, from
    chunk i on, is replayed in one pass from chunk i-1's end state (`repair`), while the
    other modes' chunks go on being checked; once every mode has missed, stop(i) is told
    that the speculation on chunks after i is no longer wanted. Returns the parts and how
    many chunks were replayed again."""
    exact: list[list[Part]] = [[p] for p in speculated(0)]
    rests: dict[int, tuple[int, Callable[[], Part]]] = {}
    for i in range(1, len(chunks)):
        parts = speculated(i)
        live = [j for j in range(len(modes)) if j not in rests]
        missed = [j for j in live if not parts[j].follows(exact[j][-1], (modes[j],))]
        for j in live:
            if j not in missed:
                exact[j].append(parts[j].after(exact[j][-1]))
        thunks = repair([Rest(j, i, exact[j][-1].end()) for j in missed]) if missed else []
        rests.update((j, (i, thunk)) for j, thunk in zip(missed, thunks))
        if len(rests) == len(modes):
            stop(i)
            break
    for j, (_, thunk) in rests.items():
        exact[j].append(thunk())
    return exact, sum(len(chunks) - first for first, _ in rests.values())


def rest_chunk(chunks: list[Chunk], first: int) -> Chunk:
    """Chunks `first`... as one, with no warm-up: it starts from a restored state."""
    return Chunk(chunks[first].start, chunks[-1].stop, chunks[first].start)


def merged_counts(parts: list[Part], mode: Mode, span_ns: int) -> pl.DataFrame:
    """The shard's counts per source: the chunks' summed, plus QEMU's busy time."""
    frame = pl.concat([p.counts for p in parts]).group_by(SOURCE_COLUMNS).agg(pl.col("count").sum())
    idle = int(frame.filter(pl.col("driver") == "idle_ns")["count"].sum())
    busy = pl.DataFrame(kernel.busy_rows(mode, span_ns, idle), schema=frame.schema)
    return pl.concat([frame, busy]).sort(SOURCE_COLUMNS)


def _source_counts(state: kernel.KernelState, m: int) -> pl.DataFrame:
    """Mode m's counts per source; busy time is left out (the merge adds it once)."""
    columns = kernel.attribution(state, m)
    return pl.DataFrame({name: list(values) for name, values in columns.items()},
                        schema={"kind": pl.String, "asid": pl.Int64, "device": pl.Int64,
                                "driver": pl.String, "count": pl.Int64})
