"""Resume decisions on real shard files: what is kept, what is recomputed, what is removed."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from pipeline.run import manifest as manifest
from pipeline.run.manifest import entry, resume, trace_digest
from pipeline.config.modes import load_modes, with_overrides
from pipeline.run.results import MANIFEST_KEY, attribution_path, shard_path, write_attribution, write_shard
from pipeline.run.shards import Shard, TraceFile, plan
from pipeline.tracefile.format import read_meta
from tests.pipeline.tracefiles import round_robin_events, write_events


@pytest.fixture
def trace(tmp_path: Path) -> TraceFile:
    return TraceFile("rr", write_events(tmp_path / "rr.parquet", round_robin_events(3, 12)))


def shards_of(trace: TraceFile, modes: tuple[str, ...] = ("native",)) -> list[Shard]:
    return plan(trace, read_meta(trace.path), list(modes), trace_digest(str(trace.path)))


def write_done(out: Path, shard: Shard, mode=None) -> Path:
    """A finished shard's files (attribution, then counts with a row that only this file
    could have produced), as replay_group writes them."""
    done = entry(shard, mode or load_modes()[shard.mode])
    write_attribution(out, shard, pl.DataFrame({"kind": ["io"], "asid": [1], "device": [0x80], "driver": ["exit_io"],
                                                "count": [3]}), done)
    return write_shard(out, shard, {"trace": shard.trace, "marker": 7}, done)


def test_matching_file_is_kept_and_its_row_read_back(trace: TraceFile, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (shard,) = shards_of(trace)
    path = write_done(out, shard)
    stored = pq.read_schema(path).metadata[MANIFEST_KEY].decode()
    assert f'"trace_sha256": "{hashlib.sha256(trace.path.read_bytes()).hexdigest()}"' in stored
    result = resume(out, [shard], load_modes(), {"rr"})
    assert result.todo == [] and result.done == [("native", {"trace": "rr", "marker": 7})]
    assert path.exists()


def test_shard_without_its_attribution_is_recomputed(trace: TraceFile, tmp_path: Path) -> None:
    """Killed between the two files of another configuration: counts alone do not count as done."""
    out = tmp_path / "out"
    (shard,) = shards_of(trace)
    path = write_done(out, shard)
    attribution_path(out, shard).unlink()
    assert resume(out, [shard], load_modes(), {"rr"}).todo == [shard]
    assert not path.exists()


def test_same_size_same_mtime_new_bytes_is_recomputed(trace: TraceFile, tmp_path: Path) -> None:
    """Why the content hash: size and mtime cannot see this change."""
    out = tmp_path / "out"
    (old,) = shards_of(trace)
    path = write_done(out, old)
    stat = trace.path.stat()
    data = bytearray(trace.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    trace.path.write_bytes(bytes(data))
    os.utime(trace.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (trace.path.stat().st_size, trace.path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    (new,) = plan(trace, old.meta, ["native"], trace_digest(str(trace.path)))
    assert new.digest == hashlib.sha256(bytes(data)).hexdigest() != old.digest
    result = resume(out, [new], load_modes(), {"rr"})
    assert result.todo == [new] and result.done == []
    assert not path.exists()  # a stale row never outlives a recompute that fails


def test_changed_mode_definition_or_model_code_is_recomputed(trace: TraceFile, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    modes = load_modes()
    (shard,) = shards_of(trace, ("kvm-paravirt",))
    write_done(out, shard)
    bigger_cache = with_overrides(modes["kvm-paravirt"], {"cr3_cache_size": 8})  # same name, new definition
    assert resume(out, [shard], {**modes, "kvm-paravirt": bigger_cache}, {"rr"}).todo == [shard]
    write_done(out, shard)
    monkeypatch.setattr(manifest, "code_version", lambda: "an edited model")
    assert resume(out, [shard], modes, {"rr"}).todo == [shard]


def test_unreadable_file_is_recomputed(trace: TraceFile, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (shard,) = shards_of(trace)
    path = write_done(out, shard)
    path.write_bytes(path.read_bytes()[:40])
    result = resume(out, [shard], load_modes(), {"rr"})
    assert result.todo == [shard] and result.damaged == [path]


def test_only_this_runs_stray_files_are_removed(trace: TraceFile, tmp_path: Path) -> None:
    """A vCPU the trace no longer has goes; other traces' files, and other modes', stay."""
    out = tmp_path / "out"
    (shard,) = shards_of(trace)
    write_done(out, shard)
    native = shard_path(out, shard).parent
    strays = {name: native / name for name in ("rr__cpu1.parquet", "other__cpu0.parquet", "rr__cpu1__cpu0.parquet")}
    for p in strays.values():
        p.write_bytes(b"old")
    elsewhere = out / "counts" / "mode=qemu" / "rr__cpu1.parquet"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"old")
    resume(out, [shard], {"native": load_modes()["native"]}, {"rr"})
    assert sorted(p.name for p in native.iterdir()) == ["other__cpu0.parquet", "rr__cpu0.parquet",
                                                          "rr__cpu1__cpu0.parquet"]
    assert elsewhere.exists()
