"""Resume: which shard results already in OUT a run may keep.

Each shard's result file carries its own manifest entry in its Parquet footer
(results.MANIFEST_KEY): the trace file's SHA-256 and path, the vCPU, the whole mode
definition and the model's code version. Entry and counts are committed by one
rename, so whenever the driver, a worker or the machine dies, every shard file that
exists is complete and says what it was computed from; there is no separate manifest
to fall out of step with the files. A run keeps a file whose entry equals the one it
would write and whose content is proved intact (page CRCs and a content checksum,
pipeline/run/results.py read_kept), and recomputes every other shard: a damaged file is
counted (Resumed.damaged) and replaced, never trusted and never a crash.

Why a content hash and not size + mtime: copies (cp, rsync, git checkout) change the
mtime of unchanged bytes, and a regenerated trace can keep its size and, on a file
system with coarse timestamps, its mtime: the first costs a needless recompute, the
second silently keeps stale results. SHA-256 reads each trace once per run (about
1.7 GB/s on one core here), in Dask tasks on the workers, which is small next to
replaying it under several modes. The cost profile is not part of the entry: counts
do not depend on it, and the summary is priced afresh on every run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

import pipeline
import replay
from pipeline.run.outdir import remove
from pipeline.run.results import Damaged, attribution_path, mode_folders, read_kept, shard_path
from pipeline.run.shards import Shard, trace_of_file
from replay.mode import Mode

# The code between a trace file and a shard row, besides the model package: an edit
# to any of it (or to replay/) may change counts, so it invalidates every result.
PIPELINE_SOURCES = ("tracefile/format.py", "run/shards.py", "run/runner.py", "run/results.py", "run/chunked.py")


@dataclass(frozen=True)
class Resumed:
    done: list[tuple[str, dict[str, Any]]]  # (mode, row) read back from files kept
    todo: list[Shard]                       # shards to replay
    damaged: list[Path]                     # files of this run's entry that failed their checks


def trace_digest(path: str) -> str:
    """SHA-256 of a trace file's bytes (the same as `sha256sum`)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@cache
def code_version() -> str:
    """SHA-256 over the model's sources, so a changed model never reuses old counts."""
    root = Path(replay.__file__).parent.parent
    files = sorted(Path(replay.__file__).parent.rglob("*.py"))
    files += [Path(pipeline.__file__).parent / name for name in PIPELINE_SOURCES]
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\0".encode() + f.read_bytes())
    return h.hexdigest()


def entry(shard: Shard, mode: Mode) -> str:
    """The manifest entry of `shard` replayed under `mode`: canonical JSON, compared as text."""
    record = {"trace_sha256": shard.digest, "path": shard.path, "cpu": shard.cpu,
              "mode": _plain(asdict(mode)), "model": code_version()}
    return json.dumps(record, sort_keys=True)


def resume(out: Path, shards: list[Shard], modes: dict[str, Mode], traces: set[str]) -> Resumed:
    """Keep each shard whose counts and attribution files both carry this run's entry and
    prove intact; delete every other file of this run's traces and modes, so no stale row
    outlives a recompute that fails. Every path is proved to resolve inside OUT before
    anything is removed (OutError otherwise)."""
    planned = [(s, shard_path(out, s), attribution_path(out, s)) for s in shards]
    folders = mode_folders(out, modes)
    done: list[tuple[str, dict[str, Any]]] = []
    todo: list[Shard] = []
    damaged: list[Path] = []
    for s, path, attribution in planned:
        expected = entry(s, modes[s.mode])
        counts, by_source = (_kept(p, expected, damaged) for p in (path, attribution))
        if counts is not None and by_source is not None and counts.num_rows == 1:
            done.append((s.mode, counts.to_pylist()[0]))
        else:
            remove(path)
            remove(attribution)
            todo.append(s)
    keep = {p for _, *paths in planned for p in paths}
    for folder in folders:
        for path in folder.glob("*.parquet"):
            if trace_of_file(path.name) in traces and path not in keep:
                remove(path)
    return Resumed(done, todo, damaged)


def _kept(path: Path, expected: str, damaged: list[Path]) -> pa.Table | None:
    """read_kept, with a damaged file noted in `damaged` (and then recomputed)."""
    try:
        return read_kept(path, expected)
    except Damaged:
        damaged.append(path)
        return None


def _plain(value: Any) -> Any:
    """JSON-ready and order-independent: enums by name, sets sorted, dict keys as text."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
