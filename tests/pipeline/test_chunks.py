"""Exact chunked replay: a trace cut into chunks gives the sequential replay's counts,
bit for bit, whatever the warm-up, because each chunk is checked against the state the
chunk before ended in (and replayed once more from that state when it does not match)."""
from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.run.chunked import (WHOLE, Chunk, Part, Rest, auto_chunk_events, rest_chunk, auto_chunks_pay, default_warmup, exact_parts, wants_chunks,
                                  merged_counts, plan_chunks, replay_parts)
from dask.distributed import Client

from pipeline.cli import app
from pipeline.config.modes import load_modes
from pipeline.run.runner import Group, Speculation, cluster_cores, local_cluster
from pipeline.run.shards import Shard
from pipeline.tracefile.format import count_events, read_meta
from tests.pipeline.conftest import QUICK_TRACE
from tests.pipeline.tracefiles import SEED_MODES

RECORDED = QUICK_TRACE.parents[1] / "recorded" / "pipe-2.parquet"


def replay_part(path: Path, cpu: int, meta, mode, chunk: Chunk, last: bool, start=None) -> Part:
    """replay_parts for one mode."""
    return replay_parts(path, cpu, meta, (mode,), chunk, last, start)[0]


def test_plan_chunks_covers_every_event_once() -> None:
    # 10 events in chunks of 4, warm-up 3: [0,4) [4,8) [8,10), warm-ups from 0, 1, 5.
    assert plan_chunks(10, 4, 3) == [Chunk(0, 4, 0), Chunk(4, 8, 1), Chunk(8, 10, 5)]
    assert plan_chunks(10, 4) == [Chunk(0, 4, 0), Chunk(4, 8, 0), Chunk(8, 10, 4)]  # default: one chunk
    assert plan_chunks(10, 10) == plan_chunks(10, None) == [WHOLE]
    assert Chunk(8, 10, 5).unwarmed() == Chunk(8, 10, 8)  # a repair starts from a restored state


def test_default_warm_up_and_automatic_chunks() -> None:
    # A tenth of the chunk, at least 100,000 events, never more than the chunk.
    assert (default_warmup(8_000_000), default_warmup(400_000), default_warmup(50_000)) == (800_000, 100_000, 50_000)
    modes = load_modes()
    native, trunk = modes["native"], modes["kvm-trunk"]
    # By default chunks only where the groups leave cores for one more task (1.5 cores
    # each), and never for a shadow pool.
    assert auto_chunks_pay((native,), cores=3, groups=1) and not auto_chunks_pay((native,), cores=2, groups=1)
    assert not auto_chunks_pay((native, trunk), cores=16, groups=1)
    # Never without an idle worker; there --chunk-events N chunks any group, 0 none, and by
    # default where chunks pay.
    assert not wants_chunks(5, (native,), workers=2, cores=8, groups=2)
    assert wants_chunks(5, (trunk,), workers=2, cores=2, groups=1) and not wants_chunks(0, (native,), 2, 8, groups=1)
    assert wants_chunks(None, (native,), workers=2, cores=4, groups=1)
    assert not wants_chunks(None, (native,), workers=2, cores=2, groups=1)
    # Two chunks per worker each group has: 71 M events, 2 workers, 1 group: 4 chunks.
    assert auto_chunk_events(71_004_388, workers=2, groups=1) == 17_751_097
    assert auto_chunk_events(71_004_388, workers=5, groups=2) == 11_834_065   # 3 workers a group: 6 chunks
    assert auto_chunk_events(3_999_999, workers=2, groups=1) is None           # too short to pay


def _chunked(path: Path, mode, chunk_events: int, warmup: int, repairs: Counter | None = None,
             stopped: list[int] | None = None) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """(proved-exact merge, naive merge without the check, chunks replayed again), in
    process: `repairs` counts the rests replayed per start, `stopped` gets the chunk after
    which speculation was no longer wanted."""
    meta = read_meta(path)
    chunks = plan_chunks(count_events(path, 0, meta), chunk_events, warmup)
    parts = [replay_part(path, 0, meta, mode, c, i == len(chunks) - 1) for i, c in enumerate(chunks)]

    def rest(r: Rest) -> Callable[[], Part]:
        if repairs is not None:
            repairs[chunks[r.first].start] += 1
        return partial(replay_part, path, 0, meta, mode, rest_chunk(chunks, r.first), True, r.start)

    [exact], repaired = exact_parts(lambda i: [parts[i]], chunks, (mode,), lambda rests: [rest(r) for r in rests],
                                    (stopped if stopped is not None else []).append)
    return (merged_counts(exact, mode, meta.native_ns), merged_counts(parts, mode, meta.native_ns), repaired)


@pytest.mark.parametrize("name", SEED_MODES)
@pytest.mark.parametrize("warmup", [0, 400, 5_000])
def test_chunks_equal_the_sequential_replay(name: str, warmup: int) -> None:
    mode = load_modes()[name]
    meta = read_meta(QUICK_TRACE)
    sequential = merged_counts([replay_part(QUICK_TRACE, 0, meta, mode, WHOLE, True)], mode, meta.native_ns)
    exact, _, _ = _chunked(QUICK_TRACE, mode, 1_000, warmup)
    assert exact.equals(sequential)


def test_a_short_warm_up_is_caught_and_repaired() -> None:
    """On a real recording under trunk, chunks with no warm-up start from an empty shadow
    pool: merged naively they miscount; the check repairs them."""
    mode = dataclasses.replace(load_modes()["kvm-trunk"], shadow_pool_pages=64)
    meta = read_meta(RECORDED)
    sequential = merged_counts([replay_part(RECORDED, 0, meta, mode, WHOLE, True)], mode, meta.native_ns)
    exact, naive, repaired = _chunked(RECORDED, mode, 100_000, 0)
    assert repaired > 0 and not naive.equals(sequential)
    assert exact.equals(sequential)
    # Where state turns over (native: a 256-entry TLB flushed on every CR3 write), a short
    # warm-up already reaches the sequential state: no repair, and the naive merge agrees.
    native = load_modes()["native"]
    sequential = merged_counts([replay_part(RECORDED, 0, meta, native, WHOLE, True)], native, meta.native_ns)
    exact, naive, repaired = _chunked(RECORDED, native, 100_000, 5_000)
    assert repaired == 0 and exact.equals(sequential) and naive.equals(sequential)


@pytest.mark.parametrize("name", ["kvm-trunk", "kvm-paravirt"])
def test_chunks_whose_state_differs_only_where_they_never_look_need_no_repair(name: str) -> None:
    """pipe-2 under trunk's and paravirt's pools, which never evict: a 1,000-event warm-up
    leaves out shadow pages (and, for paravirt, CR3 cache entries) the sequential replay
    still holds, so the start states differ, but the chunks never read the difference
    (replay/reads.py): none is repaired, and the counts are the sequential ones."""
    mode = load_modes()[name]
    meta = read_meta(RECORDED)
    sequential = merged_counts([replay_part(RECORDED, 0, meta, mode, WHOLE, True)], mode, meta.native_ns)
    first = replay_part(RECORDED, 0, meta, mode, Chunk(0, 60_000, 0), False)
    second = replay_part(RECORDED, 0, meta, mode, Chunk(60_000, 120_000, 59_000), False)
    assert second.start_state != first.end_state
    exact, _, repaired = _chunked(RECORDED, mode, 60_000, 1_000)
    assert repaired == 0 and exact.equals(sequential)


def test_a_chain_of_failed_speculations_repairs_each_chunk_once() -> None:
    """A shadow pool that never evicts keeps PTEs from the trace's start, so a 10-event
    warm-up never reaches the sequential state: every chunk after the first fails its
    check. The first miss ends the speculation: the rest of the trace is replayed once,
    from chunk 0's end state (doubling the warm-up instead took 104 re-runs, 9.5M events:
    22x the trace; repairing chunk by chunk, 7 re-runs)."""
    mode = dataclasses.replace(load_modes()["kvm-trunk"], shadow_pool_pages=4096)
    meta = read_meta(RECORDED)
    sequential = merged_counts([replay_part(RECORDED, 0, meta, mode, WHOLE, True)], mode, meta.native_ns)
    repairs: Counter = Counter()
    stopped: list[int] = []
    exact, naive, repaired = _chunked(RECORDED, mode, 60_000, 10, repairs, stopped)
    chunks = plan_chunks(count_events(RECORDED, 0, meta), 60_000, 10)
    assert not naive.equals(sequential) and exact.equals(sequential)  # counts per source: the attribution
    # Its one mode missed at chunk 1: the rest is replayed once, in one pass, and no
    # speculation after chunk 1 is wanted.
    assert repairs == Counter({chunks[1].start: 1}) and repaired == len(chunks) - 1 and stopped == [1]


def _same_files(plain: Path, chunked: Path, modes: int) -> None:
    for folder in ("counts", "attribution"):
        files = sorted(p.relative_to(plain) for p in (plain / folder).rglob("*.parquet"))
        assert len(files) == modes
        for f in files:
            assert pq.read_table(chunked / f).equals(pq.read_table(plain / f)), f
    assert pl.read_parquet(chunked / "summary.parquet").equals(pl.read_parquet(plain / "summary.parquet"))


def test_a_mode_that_misses_leaves_the_others_speculating() -> None:
    """Two modes in one group, chunks after a 10-event warm-up: kvm-trunk misses at chunk 1
    and its rest is replayed in one pass, while native's chunks (a one-entry TLB, which
    any warm-up with a touch reaches) go on being checked and all follow; so only trunk's
    7 chunks are replayed again, the speculation is never stopped, and both modes count
    what they count sequentially."""
    modes = load_modes()
    both = (dataclasses.replace(modes["kvm-trunk"], shadow_pool_pages=4096),
            dataclasses.replace(modes["native"], tlb_entries=1))
    meta = read_meta(RECORDED)
    chunks = plan_chunks(count_events(RECORDED, 0, meta), 60_000, 10)
    speculated = [replay_parts(RECORDED, 0, meta, both, c, i == len(chunks) - 1) for i, c in enumerate(chunks)]
    rests: list[Rest] = []

    def repair(requested: list[Rest]) -> list[Callable[[], Part]]:
        rests.extend(requested)
        return [partial(replay_part, RECORDED, 0, meta, both[r.mode], rest_chunk(chunks, r.first), True, r.start)
                for r in requested]

    stopped: list[int] = []
    chains, again = exact_parts(speculated.__getitem__, chunks, both, repair, stopped.append)
    assert [(r.mode, r.first) for r in rests] == [(0, 1)] and again == 7 and not stopped
    assert len(chains[0]) == 2 and len(chains[1]) == len(chunks)
    for mode, chain in zip(both, chains):
        sequential = merged_counts([replay_part(RECORDED, 0, meta, mode, WHOLE, True)], mode, meta.native_ns)
        assert merged_counts(chain, mode, meta.native_ns).equals(sequential), mode.name


@pytest.mark.parametrize(("mode", "warmup", "again"), [("kvm-trunk", 10, 7), ("native", 5_000, 0)])
def test_chunks_on_the_cluster_give_the_unchunked_files(tmp_path: Path, mode: str, warmup: int, again: int) -> None:
    """One mode on 2 workers: its 8 chunks are speculated on. kvm-trunk after a 10-event
    warm-up misses at chunk 1 (as in the in-process test above), so chunks 1-7 are replayed
    in one pass from chunk 0's end state; native's 5,000-event warm-up reaches every start
    state. Either way the files are the unchunked run's."""
    runner = CliRunner()
    plain, chunked = tmp_path / "plain", tmp_path / "chunked"
    r = runner.invoke(app, ["replay", str(RECORDED), "--modes", mode, "--out", str(plain), "--workers", "2",
                            "--chunk-events", "0"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["replay", str(RECORDED), "--modes", mode, "--out", str(chunked), "--workers", "2",
                            "--chunk-events", "60000", "--warmup-events", str(warmup)])
    assert r.exit_code == 0, r.output
    assert f"chunked: 8 chunks of 1 groups (1 shards), {again} replayed again" in " ".join(r.output.split())
    _same_files(plain, chunked, 1)


def test_replay_command_chunked_files_are_identical(tmp_path: Path) -> None:
    modes = ",".join(SEED_MODES)
    runner = CliRunner()
    plain, chunked = tmp_path / "plain", tmp_path / "chunked"
    r = runner.invoke(app, ["replay", str(RECORDED), "--modes", modes, "--out", str(plain), "--workers", "2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["replay", str(RECORDED), "--modes", modes, "--out", str(chunked), "--workers", "2",
                            "--chunk-events", "60000", "--warmup-events", "1000"])
    assert r.exit_code == 0, r.output
    # 5 modes on 2 workers: 2 groups (runner.plan_groups), which keep both busy: no chunks
    output = " ".join(r.output.split())
    assert "--chunk-events not used: 2 task(s) keep the 2 worker(s) busy" in output and "chunked:" not in output
    _same_files(plain, chunked, len(SEED_MODES))


def test_speculation_is_submitted_as_the_check_reaches_it() -> None:
    """A chunked group keeps `ahead` chunk tasks under way from the one its check waits for,
    and once told that nothing after chunk i is wanted, drops the tasks after it: a mode
    that misses at chunk 1 costs the chunks under way then, not all."""
    meta = read_meta(RECORDED)
    shard = Shard(trace="pipe-2", path=str(RECORDED), cpu=0, mode="native", meta=meta, digest="")
    chunks = plan_chunks(count_events(RECORDED, 0, meta), 60_000, 1_000)
    native = load_modes()["native"]
    with local_cluster(1) as cluster, Client(cluster) as client:
        spec = Speculation(client, Group((shard,)), (native,), chunks, ahead=2)
        assert len(spec.futures) == 2
        first = spec.parts(0)
        assert len(spec.futures) == 2 and first[0].chunk == chunks[0]
        assert spec.parts(1)[0].chunk == chunks[1] and len(spec.futures) == 3
        spec.stop(1)
        assert spec.futures[2].status == "cancelled"


def test_the_cores_of_a_cluster_count_each_host_once() -> None:
    # Two workers on this machine: its cores, not twice them (the automatic chunks' test).
    with local_cluster(2) as cluster, Client(cluster) as client:
        assert cluster_cores(client) == len(os.sched_getaffinity(0))
