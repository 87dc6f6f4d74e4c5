"""Plan the work: which trace files, under which names, split into which shards.

A shard is (trace, vCPU, mode): the unit a Dask task replays and the unit of one
result file. Trace names become file names, so they are reduced to a safe alphabet
and can never point outside the output folder. Shards carry absolute paths (workers
on a cluster do not share the driver's working directory) and the trace file's
content digest, which its result file records (pipeline/run/manifest.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.tracefile.format import TraceMeta
from pipeline.tracefile.textlines import kind_of

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SHARD_FILE = re.compile(r"(?P<trace>.+)__cpu[0-9]+\.parquet")


@dataclass(frozen=True)
class TraceFile:
    trace: str   # safe, unique name: the path below the input root, '/' -> '__'
    path: Path


@dataclass(frozen=True)
class Shard:
    trace: str
    path: str
    cpu: int
    mode: str
    meta: TraceMeta
    digest: str  # SHA-256 of the trace file's bytes

    @property
    def file_name(self) -> str:
        """Deterministic: a retried task overwrites its own file, never adds one."""
        return f"{self.trace}__cpu{self.cpu}.parquet"


def trace_of_file(name: str) -> str | None:
    """The trace a shard file name belongs to (the inverse of Shard.file_name), else None."""
    m = _SHARD_FILE.fullmatch(name)
    return m["trace"] if m else None


def safe_name(relative: Path) -> str:
    """A file-name-safe trace name: no separators, no leading dots, never empty."""
    parts = [_UNSAFE.sub("_", p).lstrip(".") for p in relative.with_suffix("").parts]
    name = "__".join(p for p in parts if p)
    return name or "trace"


@dataclass(frozen=True)
class Found:
    """What a trace search found: the traces, and a line for each path that cannot be one."""

    traces: list[TraceFile]
    skipped: list[str]      # met in a folder, not a regular file: left out (say so, go on)
    not_regular: list[str]  # named explicitly, not a regular file: an error


def find_traces(inputs: list[Path], exclude: Path | None = None) -> Found:
    """Every regular *.parquet under the given files/folders, sorted, each with a unique name.

    Only regular files are traces: opening a FIFO waits for a writer, so reading one named
    *.parquet would hang the run (a socket or device is no trace either). One named
    explicitly is an error, as a missing file is: the user asked for that file. One met
    in a folder is skipped with a note: a folder may hold anything, and the other traces
    in it are still wanted. Folders named *.parquet are searched, not noted. `exclude`
    (the run's --out) and everything under it stay out of folder searches, so results
    written inside an input folder are never read back as traces."""
    found: list[TraceFile] = []
    skipped: list[str] = []
    not_regular: list[str] = []
    for root in inputs:
        if root.is_dir():
            for p in sorted(root.rglob("*.parquet")):
                if p.is_dir() or _under(p, exclude):
                    continue
                if p.is_file():
                    found.append(TraceFile(safe_name(p.relative_to(root)), p))
                else:
                    skipped.append(f"{p}: not a regular file ({kind_of(p)}), skipped")
        elif root.exists() and not root.is_file():
            not_regular.append(f"{root}: not a regular file ({kind_of(root)})")
        else:
            found.append(TraceFile(safe_name(Path(root.name)), root))
    return Found(deduplicate(found), skipped, not_regular)


def _under(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder.resolve())


def deduplicate(found: list[TraceFile]) -> list[TraceFile]:
    """Names made unique in order: a repeated one gets ~1, ~2, … (they become file names)."""
    seen: dict[str, int] = {}
    out = []
    for t in found:
        n = seen.get(t.trace, 0)
        seen[t.trace] = n + 1
        out.append(t if n == 0 else TraceFile(f"{t.trace}~{n}", t.path))
    return out


def plan(trace: TraceFile, meta: TraceMeta, modes: list[str], digest: str) -> list[Shard]:
    path = str(trace.path.absolute())
    return [Shard(trace.trace, path, cpu, mode, meta, digest) for mode in modes for cpu in meta.cpus]
