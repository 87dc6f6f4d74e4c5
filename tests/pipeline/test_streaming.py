"""Streaming a trace in batches: the same events as one read, any slice of them, and the
row checks still naming the right file row across batch and row-group edges."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.tracefile.format import TraceError, count_events, iter_events, read_events, read_meta, validate
from tests.pipeline.tracefiles import round_robin_events, write_events


def _regroup(path: Path, rows_per_group: int, change=None) -> None:
    """Rewrite a trace with small row groups (and optionally one column changed)."""
    table = pq.read_table(path)
    if change:
        name, fn = change
        i = table.schema.get_field_index(name)
        table = table.set_column(i, table.schema.field(i), [pa.array(fn(table.column(name).to_numpy().copy()))])
    pq.write_table(table, path, row_group_size=rows_per_group)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    # 20 quanta of 7 rows (cr3, 5 touches, 1 io): 140 rows, one CPU.
    path = write_events(tmp_path / "t.parquet", round_robin_events(5, 20))
    _regroup(path, 16)
    return path


def _cat(parts, name):
    return np.concatenate([getattr(p, name) for p in parts])


def test_batches_and_slices_equal_one_read(trace: Path) -> None:
    meta = read_meta(trace)
    whole = read_events(trace, 0, meta)
    assert len(whole) == count_events(trace, 0, meta) == 140
    batched = list(iter_events(trace, 0, meta, batch_rows=5))
    assert max(len(b) for b in batched) <= 5
    assert (_cat(batched, "value") == whole.value).all()
    for start, stop in [(0, 140), (33, 97), (16, 32), (139, 140), (50, 50), (100, None)]:
        part = list(iter_events(trace, 0, meta, start=start, stop=stop, batch_rows=7))
        end = 140 if stop is None else stop
        for col in ("kind", "value", "asid", "arg"):
            got = _cat(part, col) if part else np.zeros(0)
            assert (got == getattr(whole, col)[start:end]).all(), (start, stop, col)


def test_time_going_backwards_names_its_row_across_batches(trace: Path) -> None:
    def back(t):
        t[70] = t[69] - 1  # row 70 lies in the 5th row group, 11th batch of 7
        return t
    _regroup(trace, 16, ("t_ns", back))
    with pytest.raises(TraceError, match=r"row 70: t_ns goes backwards on cpu 0"):
        validate(trace)
    with pytest.raises(TraceError, match=r"row 70: t_ns goes backwards"):
        list(iter_events(trace, 0, read_meta(trace), batch_rows=7))


def test_unknown_kind_in_a_later_batch(trace: Path) -> None:
    def bad(k):
        k[101] = 99
        return k
    _regroup(trace, 16, ("kind", bad))
    with pytest.raises(TraceError, match=r"row 101: unknown event kind 99"):
        list(iter_events(trace, 0, read_meta(trace), batch_rows=10))
