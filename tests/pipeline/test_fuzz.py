"""Fuzz: corrupt traces and corrupt text recordings, as Hypothesis draws them.

Each corrupt Parquet trace is replayed and validated beside a good one; each corrupt text
recording is imported and summarised by kvm-stat. For every one: no traceback, one line
naming the corrupt file, exit status != 0 where the work is incomplete, no file written
outside --out (or -o), and the good trace's result identical to a clean run. What a
mutation does is not predicted: a flipped bit may land in a value and leave a valid trace,
which must then simply replay.

Bounded in time: HVREPLAY_FUZZ_EXAMPLES (default 40) examples per test, one local Dask
cluster shared by every replay.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dask.distributed import LocalCluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.run.runner import local_cluster as start_local_cluster
from pipeline.tracefile.format import META_KEY, validate
from tests.pipeline.test_importers import ATRACE, PERF, TRACECMD_N_FAULTS
from tests.pipeline.tracefiles import round_robin_events, write_events

runner = CliRunner()
FUZZ = settings(max_examples=int(os.environ.get("HVREPLAY_FUZZ_EXAMPLES", 40)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MODES = "native,kvm-trunk"
COLUMNS = ["t_ns", "cpu", "kind", "value", "asid", "pid", "arg"]
META_KEYS = ["version", "workload", "native_ns", "ops", "op_unit", "headline", "cpus", "source", "guest"]
HOST = "".join(f" CPU 0/KVM-10 [001] {t}.{u:06d}: {e}\n" for t in (10, 11) for u, e in (
    (1, "kvm_exit: reason HLT rip 0xffffffff81a3b6bb info 0 0"), (5, "kvm_entry: vcpu 0, rip 0xffffffff81a3b6bc"),
    (9, "kvm_exit: reason IO_INSTRUCTION rip 0x1 info 0 0"), (12, "kvm_pio: pio_write at 0x80 size 1 count 1 val 0x0"),
    (15, "kvm_entry: vcpu 0, rip 0x2")))
TEXTS = {"ftrace": ATRACE, "perf": PERF, "trace-cmd": TRACECMD_N_FAULTS, "host": HOST}


# --- the mutations -----------------------------------------------------------------------

def flipped(data: bytes, flips: list[tuple[float, int]]) -> bytes:
    out = bytearray(data)
    for where, bit in flips:
        out[int(where * (len(out) - 1))] ^= 1 << bit
    return bytes(out)


FLIPS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), min_size=1, max_size=4)
KEEP = st.floats(0, 0.999)   # the share of the bytes a truncation keeps
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats(allow_nan=True) | st.text(max_size=12)
    | st.sampled_from(["\x1b[31m", "\x00", "[/x]", "../../x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


def _bytes_edit(kind: str, data: bytes, draw) -> bytes:
    if kind == "flip":
        return flipped(data, draw(FLIPS))
    return data[:int(draw(KEEP) * len(data))]


def _table_edit(table: pa.Table, draw) -> pa.Table:
    """A schema mutation: a column dropped, renamed, retyped, nulled at a row, or one added."""
    name = draw(st.sampled_from(COLUMNS))
    i = table.schema.get_field_index(name)
    edit = draw(st.sampled_from(["drop", "rename", "retype", "null", "add"]))
    if edit == "drop":
        return table.remove_column(i)
    if edit == "rename":
        return table.rename_columns([f"{c}_x" if c == name else c for c in table.column_names])
    if edit == "retype":
        to = draw(st.sampled_from([pa.string(), pa.float64(), pa.int8(), pa.uint64(), pa.bool_()]))
        return table.set_column(i, pa.field(name, to), pa.array([str(v) if to == pa.string() else None
                                                                  for v in table.column(i).to_pylist()], to))
    if edit == "null":
        values = table.column(i).to_pylist()
        values[draw(st.integers(0, len(values) - 1))] = None
        return table.set_column(i, table.schema.field(i), pa.array(values, table.schema.field(i).type))
    return table.append_column("extra", pa.array(range(table.num_rows), pa.int64()))


def _meta_edit(meta: dict, draw) -> bytes:
    """A metadata mutation: a key set to any JSON value, a key deleted, or the JSON itself broken."""
    edit = draw(st.sampled_from(["set", "delete", "garbage"]))
    key = draw(st.sampled_from(META_KEYS) | st.text(max_size=6))
    if edit == "set":
        meta[key] = draw(JSON_VALUES)
    elif edit == "delete":
        meta.pop(key, None)
    else:
        return draw(st.binary(max_size=40))
    return json.dumps(meta).encode()


@st.composite
def corrupt_trace(draw, good: bytes, path: Path) -> Callable[[Path], None]:
    """A writer of one corrupt copy of the good trace (bytes, schema or metadata mutated)."""
    kind = draw(st.sampled_from(["flip", "truncate", "schema", "meta"]))
    if kind in ("flip", "truncate"):
        data = _bytes_edit(kind, good, draw)
        return lambda to: to.write_bytes(data)
    table = pq.read_table(path)
    if kind == "schema":
        table = _table_edit(table, draw)
    else:
        table = table.replace_schema_metadata({META_KEY: _meta_edit(json.loads(table.schema.metadata[META_KEY]), draw)})
    return lambda to: pq.write_table(table, to)


# --- Parquet traces: replay and validate --------------------------------------------------

@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    with start_local_cluster(1) as c:
        yield c


@pytest.fixture(scope="module")
def cluster(local_cluster: LocalCluster) -> str:
    return local_cluster.scheduler_address


def worker_errors(cluster: LocalCluster) -> list[str]:
    """What the workers logged at ERROR: a task that raised (Dask prints its traceback)."""
    return [line for address, log in cluster.get_logs(scheduler=False).items() if address != "Cluster"
            for line in str(log).splitlines() if " - ERROR - " in line]


@pytest.fixture(scope="module")
def good_trace(tmp_path_factory) -> Path:
    return write_events(tmp_path_factory.mktemp("good") / "good.parquet", round_robin_events(3, 6), workload="good")


@pytest.fixture(scope="module")
def clean(good_trace: Path, cluster: str, tmp_path_factory) -> pl.DataFrame:
    out = tmp_path_factory.mktemp("clean") / "out"
    r = runner.invoke(app, ["replay", str(good_trace), "--out", str(out), "--modes", MODES, "--scheduler-address", cluster])
    assert r.exit_code == 0, r.output
    return pl.read_parquet(out / "summary.parquet")


def files_under(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def assert_one_clean_line(output: str, name: str) -> None:
    """The corrupt file is named on exactly one line, and nothing is a traceback."""
    assert "Traceback" not in output, output
    naming = [line for line in output.splitlines() if name in line]
    assert len(naming) == 1, output


@FUZZ
@given(data=st.data())
def test_corrupt_trace_beside_a_good_one(data, good_trace: Path, clean: pl.DataFrame, cluster: str,
                                         local_cluster: LocalCluster, tmp_path_factory) -> None:
    base = tmp_path_factory.mktemp("fuzz")
    (base / "in").mkdir()
    (base / "in" / "good.parquet").write_bytes(good_trace.read_bytes())
    data.draw(corrupt_trace(good_trace.read_bytes(), good_trace))(base / "in" / "bad.parquet")
    before = files_under(base)
    out = base / "out"
    r = runner.invoke(app, ["replay", str(base / "in"), "--out", str(out), "--modes", MODES, "--scheduler-address", cluster])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert all(p.is_relative_to(out) for p in files_under(base) - before)
    summary = pl.read_parquet(out / "summary.parquet")
    bad = summary.filter(pl.col("trace") == "bad")
    assert r.exit_code == (1 if "failed" in bad["status"] else 0), r.output
    if r.exit_code:
        assert_one_clean_line(r.output, "bad.parquet")
        assert set(bad["status"]) == {"failed"} and all("bad.parquet" in e for e in bad["error"])
    assert summary.filter(pl.col("trace") == "good").equals(clean)
    v = runner.invoke(app, ["validate", str(base / "in" / "good.parquet"), str(base / "in" / "bad.parquet")])
    # validate is at least as strict as replay: it also reads pid, which replay does not need
    # (a damaged pid page fails validate only; a null in it fails both, by its footer count).
    assert v.exit_code in (0, 1) and v.exit_code >= r.exit_code, v.output
    assert_one_clean_line(v.output, "bad.parquet")
    assert not worker_errors(local_cluster)   # no task raised: no worker traceback on the terminal


# --- text recordings: import and kvm-stat -------------------------------------------------

COMPRESSORS = {".gz": gzip.compress, ".xz": lzma.compress, ".bz2": bz2.compress}


@st.composite
def corrupt_text(draw) -> tuple[str, bytes]:
    """(suffix, bytes): a small recording, its bytes or lines mutated, maybe compressed and
    mutated again."""
    text = draw(st.sampled_from(sorted(TEXTS.values())))
    lines = text.splitlines(keepends=True)
    edit = draw(st.sampled_from(["flip", "truncate", "insert", "shuffle", "number"]))
    if edit == "insert":
        lines.insert(draw(st.integers(0, len(lines))), draw(st.text(max_size=80)) + "\n")
    elif edit == "shuffle":
        lines = draw(st.permutations(lines))
    elif edit == "number":
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = lines[i].replace("1", str(draw(st.integers(-2**70, 2**70))), 1)
    data = "".join(lines).encode()
    if edit in ("flip", "truncate"):
        data = _bytes_edit(edit, data, draw)
    suffix = draw(st.sampled_from(["", *COMPRESSORS]))
    if suffix:
        data = COMPRESSORS[suffix](data)
        if draw(st.booleans()):
            data = _bytes_edit(draw(st.sampled_from(["flip", "truncate"])), data, draw)
    return suffix, data


@FUZZ
@given(case=corrupt_text())
def test_corrupt_text_recording(case: tuple[str, bytes], tmp_path_factory) -> None:
    suffix, data = case
    base = tmp_path_factory.mktemp("text")
    src = base / f"rec.txt{suffix}"
    src.write_bytes(data)
    out = base / "t.parquet"
    r = runner.invoke(app, ["import", str(src), "-o", str(out)])
    assert r.exit_code in (0, 2) and "Traceback" not in r.output and "Aborted" not in r.output, r.output
    assert files_under(base) - {src} == ({out} if r.exit_code == 0 else set())
    if r.exit_code == 0:
        validate(out)   # what import writes is a valid trace
    else:
        assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, r.output
        assert str(src) in r.output or "-o" in r.output
    k = runner.invoke(app, ["kvm-stat", str(src)])
    assert k.exit_code in (0, 1, 2) and "Traceback" not in k.output, k.output
    if k.exit_code:
        assert [line for line in k.output.splitlines() if line.startswith("error:")] and str(src) in k.output
