"""Streaming a trace in batches: the same events as one read, any slice of them, and the
row checks still naming the right file row across batch and row-group edges."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.tracefile.format import (TraceError, TraceMeta, count_events, iter_events, read_events, read_meta, validate,
                                       write_trace)
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


# --- the fast paths against a slow reference -------------------------------------------------

CPUS = (3, 0, 7)   # listed out of order: the checks go through them in the metadata's order


def _multi_cpu(path: Path, rows: int = 300, group: int = 64) -> Path:
    """Three vCPUs interleaved at random (with runs of one vCPU longer than a batch, so some
    batches are all one vCPU and some mixed), each in time order, in row groups of `group`."""
    rng = np.random.default_rng(5)
    cpu = np.repeat(rng.choice(CPUS, size=rows // 10), 10).astype(np.uint16)
    cpu[100:160] = 0
    t = np.zeros(rows, dtype=np.int64)
    for c in CPUS:
        t[cpu == c] = 1 + np.cumsum(rng.integers(0, 3, size=int((cpu == c).sum())))
    columns = {"t_ns": t, "cpu": cpu, "kind": rng.integers(0, 15, rows).astype(np.uint8),
               "value": np.arange(rows, dtype=np.uint64), "asid": rng.integers(0, 9, rows).astype(np.uint32),
               "pid": np.zeros(rows, dtype=np.int32), "arg": rng.integers(0, 2, rows).astype(np.uint32)}
    write_trace(path, columns, TraceMeta(workload="mix", native_ns=int(t.max()) + 1, ops=1, op_unit="run", cpus=CPUS))
    _regroup(path, group)
    return path


def test_every_range_of_every_cpu_equals_a_filter_of_the_whole_table(tmp_path: Path) -> None:
    path = _multi_cpu(tmp_path / "t.parquet")
    meta, table = read_meta(path), pq.read_table(path)
    for cpu in CPUS:
        on_cpu = table.column("cpu").to_numpy() == cpu
        want = {col: table.column(col).to_numpy()[on_cpu] for col in ("kind", "value", "asid", "arg")}
        assert count_events(path, cpu, meta) == len(want["kind"])
        for start, stop in [(0, None), (0, 1), (5, 64), (63, 65), (20, 90), (len(want["kind"]) - 1, None)]:
            for batch_rows in (7, 64, 1000):
                parts = list(iter_events(path, cpu, meta, start=start, stop=stop, batch_rows=batch_rows))
                for col, values in want.items():
                    got = _cat(parts, col) if parts else np.zeros(0)
                    assert (got == values[start:stop]).all(), (cpu, start, stop, batch_rows, col)


def _spoil(path: Path, column: str, rows: dict[int, int]) -> None:
    def change(values: np.ndarray) -> np.ndarray:
        for row, value in rows.items():
            values[row] = value
        return values
    _regroup(path, 64, (column, change))


@pytest.mark.parametrize("row", [63, 64, 70, 127, 128])   # batches of 7 restart at each group of 64
@pytest.mark.parametrize("column, value, problem", [
    ("kind", 99, r"unknown event kind 99 \(known: 0\.\.14\)"),
    ("cpu", 5, "cpu 5 not listed in metadata cpus"),
    ("t_ns", -1, r"t_ns outside \[0, native_ns=\d+\]"),
])
def test_a_bad_row_at_a_batch_edge_is_named(tmp_path: Path, row: int, column: str, value: int, problem: str) -> None:
    path = _multi_cpu(tmp_path / "t.parquet")
    _spoil(path, column, {row: value})
    with pytest.raises(TraceError, match=rf"row {row}: {problem}$"):
        validate(path)
    for cpu in CPUS:
        with pytest.raises(TraceError, match=rf"row {row}: {problem}$"):
            list(iter_events(path, cpu, read_meta(path), batch_rows=7))


def _first_row_from(cpus: np.ndarray, cpu: int, row: int) -> int:
    return int(next(r for r in np.flatnonzero(cpus == cpu) if r >= row))


def test_time_going_back_on_one_cpu_across_a_batch_edge(tmp_path: Path) -> None:
    """cpu 7's first row of the second row group goes back before its last of the first
    (every time is >= 1, so 0 goes back); then cpu 0 goes back earlier in the batch where
    cpu 3 goes back later, and cpu 3 is named: the metadata lists it first."""
    path = _multi_cpu(tmp_path / "t.parquet")
    cpus = pq.read_table(path).column("cpu").to_numpy()
    row = _first_row_from(cpus, 7, 64)
    _spoil(path, "t_ns", {row: 0})
    for read in (validate, lambda p: list(iter_events(p, 0, read_meta(p), batch_rows=7))):
        with pytest.raises(TraceError, match=rf"row {row}: t_ns goes backwards on cpu 7$"):
            read(path)
    path = _multi_cpu(tmp_path / "u.parquet")
    on0 = _first_row_from(cpus, 0, 192)
    on3 = _first_row_from(cpus, 3, on0)
    assert on3 < 256, "the trace has cpu 0 then cpu 3 in one row group of 64"
    _spoil(path, "t_ns", {on0: 0, on3: 0})
    with pytest.raises(TraceError, match=rf"row {on3}: t_ns goes backwards on cpu 3$"):
        list(iter_events(path, 7, read_meta(path), batch_rows=64))


def test_the_checks_keep_their_order_within_a_batch(tmp_path: Path) -> None:
    """A bad kind is named before an earlier unlisted cpu of the same batch, and that
    before an earlier bad time; time order goes by the metadata's cpus (3 before 0)."""
    path = _multi_cpu(tmp_path / "t.parquet")
    _spoil(path, "t_ns", {2: -1})
    _spoil(path, "cpu", {3: 5})
    _spoil(path, "kind", {5: 99})
    with pytest.raises(TraceError, match=r"row 5: unknown event kind 99"):
        list(iter_events(path, 0, read_meta(path), batch_rows=7))
    with pytest.raises(TraceError, match=r"row 3: cpu 5 not listed"):
        list(iter_events(path, 0, read_meta(path), batch_rows=5))   # row 5 is in the next batch
    with pytest.raises(TraceError, match=r"row 2: t_ns outside"):
        list(iter_events(path, 0, read_meta(path), batch_rows=3))
