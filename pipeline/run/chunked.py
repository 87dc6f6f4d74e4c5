"""Exact chunked replay: one vCPU's events split into chunks replayed in parallel, each
after a warm-up prefix, with the result proved equal to the sequential replay.

Why proved and not assumed: an LRU of capacity k is fixed by the last k distinct keys,
but a shadow page's PTEs go back to when the page was allocated, and the CR3 cache
to its last fills, so how much warm-up suffices depends on the trace. Each chunk
therefore reports the model state after its warm-up and at its end (replay.kernel's
snapshot, in the trace's own keys), and what it read of the shadow pool and CR3 cache it
started from (replay/reads.py). Chunk 0 has no warm-up and is exact; chunk i is exact when
its state after warm-up equals chunk i-1's (exact) end state, because the counts of a chunk
depend only on its start state and its events, or when the two differ only in shadow
pages, PTEs and CR3 cache entries the chunk never read (reads.follows); its exact end state
is then its own with those put back (reads.carried). A chunk that fails
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
from typing import NamedTuple
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


def plan_chunks(events: int, chunk_events: int | None, warmup_events: int | None = None) -> list[Chunk]:
    """Chunks of `chunk_events` (the whole trace when None or longer than it), each warmed
    up by `warmup_events` (default_warmup's by default)."""
    if not chunk_events or events <= chunk_events:
        return [WHOLE]
    warmup = default_warmup(chunk_events) if warmup_events is None else warmup_events
    return [Chunk(s, min(s + chunk_events, events), max(0, s - warmup)) for s in range(0, events, chunk_events)]


def default_warmup(chunk_events: int) -> int:
    return min(chunk_events, max(WARMUP_MIN_EVENTS, chunk_events // WARMUP_SHARE))


def auto_chunks_pay(modes: tuple[Mode, ...], workers: int, groups: int) -> bool:
    """Whether chunks made without --chunk-events can pay: only where workers would idle,
    and only for modes whose state a warm-up reaches. Those are the modes without a shadow
    pool: measured on hackbench-5 (18.7 M events, 2 M-event chunks), 6 to 9 of 10 chunks of
    kvm-upstream, kvm-trunk and kvm-paravirt had to be repaired with warm-ups from 100,000
    events to a whole chunk, so speculating on them costs more than it saves."""
    return groups < workers and not any(m.features.shadow for m in modes)


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


class RepairRequest(NamedTuple):
    """Replay `chunk` of mode `mode` (an index) once more, from `start`."""

    mode: int
    chunk: Chunk
    last: bool
    start: kernel.Snapshot


Repair = Callable[[list[RepairRequest]], list[Part]]   # the requests' parts, in order, run in parallel


def exact_parts(chains: list[list[Part]], modes: tuple[Mode, ...], repair: Repair) -> tuple[list[list[Part]], int]:
    """Each mode's parts (chains[j]: mode j's, chunk by chunk) with every chunk proved to start
    where the one before ended, each with the end state the sequential replay has: a chunk
    that does not is replayed once more from that end state. Chunk i's repairs, one per
    mode that needs one, go out together (`repair`): modes' chains are independent, so a
    group's modes are repaired in parallel, chunk after chunk. Returns the chains and how
    many chunks were repaired."""
    exact = [list(chain) for chain in chains]
    repaired = 0
    for i in range(1, len(exact[0]) if exact else 0):
        wanted = [RepairRequest(j, chain[i].chunk, i == len(chain) - 1, _end(chain[i - 1]))
                  for j, chain in enumerate(exact) if not chain[i].follows(chain[i - 1], (modes[j],))]
        for request, part in zip(wanted, repair(wanted) if wanted else []):
            if part.start_state != request.start:
                raise RuntimeError(f"chunk at event {part.chunk.start}: restored state differs from its snapshot")
            exact[request.mode][i] = part
        repaired += len(wanted)
        for chain in exact:
            chain[i] = chain[i].after(chain[i - 1])
    return exact, repaired


def _end(part: Part) -> kernel.Snapshot:
    assert part.end_state is not None  # only the last part has none
    return part.end_state


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
