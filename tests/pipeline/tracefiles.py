"""Small hand-made trace files for pipeline tests: builders with counts easy to work out by hand."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.tracefile.format import META_KEY, TraceMeta, write_trace
from replay.kinds import Kind

SEED_MODES = ["native", "qemu", "kvm-upstream", "kvm-trunk", "kvm-paravirt"]   # the seed's table, in order
# Real recordings for importer tests; they live beside the repository, not in it.
SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} absent (samples live outside the repository)")
USER_PAGES = (0x08048, 0x0804A, 0xBFFFF)
KERNEL_PAGES = (0xC0100, 0xC0101)


def round_robin_events(spaces: int, switches: int) -> list[tuple[int, int, int, int]]:
    """(kind, value, asid, arg) rows: switch round-robin over `spaces` address
    spaces, each quantum touching 3 user and 2 kernel pages and one port-0x80 write."""
    rows = []
    for i in range(switches):
        a = 1 + i % spaces
        rows.append((Kind.CR3_WRITE, a, a, 0))
        rows += [(Kind.TOUCH, p, a, 0) for p in USER_PAGES + KERNEL_PAGES]
        rows.append((Kind.IO, 0x80, a, 1))
    return rows


def write_events(path: Path, rows: list[tuple[int, int, int, int]], workload: str = "rr",
                 step_ns: int = 100, headline: str = "per_op", ops: int | None = None) -> Path:
    n = len(rows)
    cols = {
        "t_ns": np.arange(n, dtype=np.int64) * step_ns,
        "cpu": np.zeros(n, dtype=np.uint16),
        "kind": np.array([int(r[0]) for r in rows], dtype=np.uint8),
        "value": np.array([r[1] for r in rows], dtype=np.uint64),
        "asid": np.array([r[2] for r in rows], dtype=np.uint32),
        "pid": np.array([r[2] for r in rows], dtype=np.int32),
        "arg": np.array([r[3] for r in rows], dtype=np.uint32),
    }
    switches = sum(1 for r in rows if r[0] == Kind.CR3_WRITE)
    meta = TraceMeta(workload=workload, native_ns=n * step_ns, ops=ops or max(switches, 1),
                     op_unit="context switch", headline=headline, source={"tool": "tests"})
    write_trace(path, cols, meta)
    return path


def rewrite_meta(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Edit a trace's metadata JSON in place (`change` mutates the dict), rows untouched."""
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[META_KEY])
    change(meta)
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), path)


def sample_files() -> list[Path]:
    """The recordings in SAMPLES (none if it is absent)."""
    return sorted(p for p in SAMPLES.iterdir() if p.name != "README.md") if SAMPLES.is_dir() else []


def sample_text(path: Path) -> str:
    """A sample's text, decompressed by its suffix, read independently of the importers' readers."""
    opener = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()
