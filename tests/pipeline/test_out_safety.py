"""--out safety (issue 12, part A): nothing lost, nothing written outside --out, no tracebacks.

Real Parquet files and real local Dask clusters; a second run is a real second
process. Expected figures are counted by hand from the traces' construction
(tests/pipeline/tracefiles.py), never taken from the code under test.
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.run.manifest import entry, resume, trace_digest
from pipeline.config.modes import load_modes
from pipeline.run.outdir import OutError
from pipeline.run.results import Failure, write_attribution, write_shard
from pipeline.run.runner import ClusterSpec, run
from pipeline.run.shards import find_traces, plan
from pipeline.tracefile.format import read_meta
from tests.pipeline.tracefiles import round_robin_events, write_events

runner = CliRunner()
PIPELINE = Path(sys.executable).parent / "pipeline"
SLOW_SHARDS = Path(__file__).parent / "slow_shards.py"
WAIT_S = 60
NOWHERE = "tcp://127.0.0.1:1"  # no scheduler listens here: a run that gets past --out fails on it instead


def replay(paths: list[Path], out: Path, *extra: str):
    return runner.invoke(app, ["replay", *map(str, paths), "--out", str(out), "--workers", "1", *extra])


def lines_of(output: str) -> list[str]:
    """The output's lines, less blank ones (rich leaves one where its transient progress bar was)."""
    return [line for line in output.splitlines() if line.strip()]


def one_line(output: str) -> str:
    """The whole output, which must be a single line."""
    lines = lines_of(output)
    assert len(lines) == 1, output
    return lines[0]


def files_under(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def traces_of(paths: list[Path]) -> list:
    return find_traces(paths).traces


# --- 2: a kept shard must be proved intact -------------------------------------------


def flip_bit_in_value(path: Path, column: str, value: int) -> None:
    """Flip the low bit of `value` (little-endian int64) where it is stored in `column`'s
    column chunk (a dictionary page here; small pages are stored as snappy literals)."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    data = bytearray(path.read_bytes())
    at = data.find(value.to_bytes(8, "little"), start, start + chunk.total_compressed_size)
    assert at >= 0, f"{value} not found in {column}'s pages"
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_flipped_bit_or_altered_value_in_a_kept_shard_is_recomputed(tmp_path: Path) -> None:
    trace = write_events(tmp_path / "rr5.parquet", round_robin_events(5, 50), workload="rr5")
    out = tmp_path / "out"
    assert replay([trace], out, "--modes", "kvm-trunk").exit_code == 0
    counts = out / "counts" / "mode=kvm-trunk" / "rr5__cpu0.parquet"
    # 50 switches round-robin over 5 address spaces: every CR3 write exits under kvm-trunk.
    assert pq.read_table(counts)["exit_cr3"].to_pylist() == [50]

    flip_bit_in_value(counts, "exit_cr3", 50)  # one bit in a page: its CRC no longer matches
    again = replay([trace], out, "--modes", "kvm-trunk")
    assert again.exit_code == 0, again.output
    text = " ".join(again.output.split())
    assert "resumed:" not in text
    assert f"1 shard file failed its checksum and is recomputed: {counts}" in text
    assert pl.read_parquet(out / "summary.parquet")["exit_cr3"].to_list() == [50]

    # A still-valid file (fresh page CRCs) holding another value under the same footer:
    # only the content checksum can tell.
    table = pq.read_table(counts)
    altered = table.set_column(table.schema.get_field_index("exit_cr3"), "exit_cr3", pa.array([51], pa.int64()))
    pq.write_table(altered.replace_schema_metadata(table.schema.metadata), counts, write_page_checksum=True)
    assert pq.read_table(counts, page_checksum_verification=True)["exit_cr3"].to_pylist() == [51]
    third = replay([trace], out, "--modes", "kvm-trunk")
    assert third.exit_code == 0, third.output
    assert "1 shard file failed its checksum and is recomputed" in " ".join(third.output.split())
    assert pl.read_parquet(out / "summary.parquet")["exit_cr3"].to_list() == [50]


# --- 3 and 4: one run at a time; a killed rerun leaves no stale summary --------------


@contextlib.contextmanager
def held_run(traces: Path, out: Path, hold: Path, *extra: str) -> Iterator[subprocess.Popen]:
    """A `pipeline replay` process whose workers stop after writing a shard file while
    `hold` exists (tests/pipeline/slow_shards.py), yielded once one has; ended with its
    whole session."""
    log = hold.with_suffix(".log")
    hold.touch()
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{SLOW_SHARDS}"]',
           "HVREPLAY_TEST_SHARD_HOLD": str(hold), "HVREPLAY_TEST_SHARD_LOG": str(log)}
    driver = subprocess.Popen([str(PIPELINE), "replay", str(traces), "--out", str(out), "--workers", "1", *extra],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (log.exists() and "written" in log.read_text()):
            assert time.monotonic() < deadline and driver.poll() is None, driver.stderr.read()
            time.sleep(0.02)
        yield driver
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(10)


def test_second_run_into_a_held_out_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    write_events(mine / "rr5.parquet", round_robin_events(5, 50), workload="rr5")
    write_events(mine / "rr3.parquet", round_robin_events(3, 30), workload="rr3")
    write_events(theirs / "rr2.parquet", round_robin_events(2, 40), workload="rr2")
    out, hold = tmp_path / "out", tmp_path / "hold"
    with held_run(mine, out, hold, "--modes", "native") as first:
        before = files_under(out / "counts")
        # The second run must stop at --out: were it to get past, it would fail on the
        # scheduler address instead, and the sweep would write its own files.
        second = replay([theirs], out, "--scheduler-address", NOWHERE)
        assert second.exit_code == 2
        line = one_line(second.output)
        assert f"{out}: in use by another run (pid {first.pid} on {socket.gethostname()}, started " in line
        assert f"pipeline replay {mine} --out {out} --workers 1 --modes native" in line
        sweep = runner.invoke(app, ["sweep", str(theirs), "--set", "cr3_cache_size=1,4", "--out", str(out),
                                    "--scheduler-address", NOWHERE])
        assert sweep.exit_code == 2 and f"pid {first.pid}" in one_line(sweep.output)
        assert files_under(out / "counts") == before
        hold.unlink()
        assert first.wait(WAIT_S) == 0, first.stderr.read()
    summary = pl.read_parquet(out / "summary.parquet")
    assert sorted(summary["trace"]) == ["rr3", "rr5"]
    assert sorted(p.name for p in (out / "counts" / "mode=native").iterdir()) == ["rr3__cpu0.parquet",
                                                                                   "rr5__cpu0.parquet"]


def test_killed_rerun_with_new_inputs_leaves_no_stale_summary(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    write_events(traces / "rr5.parquet", round_robin_events(5, 50), workload="rr5")
    write_events(traces / "rr3.parquet", round_robin_events(3, 30), workload="rr3")
    out = tmp_path / "out"
    assert replay([traces], out, "--modes", "native").exit_code == 0
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0
    write_events(traces / "rr5.parquet", round_robin_events(5, 60), workload="rr5")  # new inputs
    write_events(traces / "rr3.parquet", round_robin_events(3, 36), workload="rr3")
    with held_run(traces, out, tmp_path / "hold", "--modes", "native") as rerun:
        os.killpg(rerun.pid, signal.SIGKILL)
        rerun.wait(10)
    assert not (out / "summary.parquet").exists()
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 2
    assert f"{out / 'summary.parquet'}: no summary here" in one_line(report.output)


def test_report_refuses_a_summary_whose_shards_are_gone_or_recomputed(traces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert replay([traces_dir], out, "--modes", "native,kvm-trunk").exit_code == 0
    rr5, rr2 = (out / "counts" / "mode=kvm-trunk" / f"{t}__cpu0.parquet" for t in ("rr5", "rr2"))
    kept = rr5.read_bytes()
    rr5.write_bytes(rr2.read_bytes())  # a file computed from other inputs in its place
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 2
    assert (f"{out / 'summary.parquet'}: stale summary (counts/mode=kvm-trunk/rr5__cpu0.parquet is gone or was "
            f"recomputed since); rerun `pipeline replay … --out {out}`") in one_line(report.output)
    rr5.unlink()
    assert "stale summary" in one_line(runner.invoke(app, ["report", str(out)]).output)
    rr5.write_bytes(kept)
    assert runner.invoke(app, ["report", str(out)]).exit_code == 0


# --- 13: --out unusable: checked before the cluster; unwritable partway: one line -----


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`chattr +i`: not even root may create, remove or rename entries in the folder
    (chmod does not stop root). Skips where the file system or container does not allow it."""
    if not shutil.which("chattr"):
        pytest.skip("cannot make a folder immutable here: no chattr (Debian package e2fsprogs)")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode:
        pytest.skip(f"cannot make a folder immutable here (chattr +i: {made.stderr.strip()})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_out_that_is_a_file_or_cannot_be_made_fails_before_anything_starts(traces_dir: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "results"
    a_file.write_text("not a folder")
    # A dead scheduler address: had the run started a cluster connection, it would fail on that instead.
    r = replay([traces_dir], a_file, "--scheduler-address", NOWHERE)
    assert r.exit_code == 2
    assert one_line(r.output) == f"error: {a_file}: not a folder (--out names the folder results go to)"
    r = replay([traces_dir], a_file / "sub", "--scheduler-address", NOWHERE)
    assert r.exit_code == 2 and one_line(r.output) == f"error: {a_file / 'sub'}: cannot create: Not a directory"
    locked = tmp_path / "locked"
    locked.mkdir()
    with immutable(locked):
        r = replay([traces_dir], locked, "--scheduler-address", NOWHERE)
    assert r.exit_code == 2 and one_line(r.output) == f"error: {locked}: cannot write: Operation not permitted"
    assert list(locked.iterdir()) == []


def file_in_the_way(folder: Path) -> contextlib.AbstractContextManager:
    folder.write_text("a file where the mode's folder goes")
    return contextlib.nullcontext()


def folder_made_immutable(folder: Path) -> contextlib.AbstractContextManager:
    folder.mkdir()
    return immutable(folder)


@pytest.mark.parametrize("block, why", [(file_in_the_way, "a file is in the way (not a folder)"),
                                        (folder_made_immutable, "Operation not permitted")])
def test_out_unwritable_partway_stops_at_the_first_file_and_keeps_what_was_written(
        block, why: str, traces_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert replay([traces_dir], out, "--modes", "native").exit_code == 0
    native = files_under(out / "counts" / "mode=native")
    assert sorted(p.name for p in native) == ["rr2__cpu0.parquet", "rr5__cpu0.parquet"]
    capfd.readouterr()
    blocked = out / "counts" / "mode=kvm-trunk"
    with block(blocked):
        r = replay([traces_dir], out, "--modes", "native,kvm-trunk")
    worker_output = "".join(capfd.readouterr())
    assert r.exit_code == 2
    assert lines_of(r.output) == ["resumed: 2 of 4 shards already done in " + str(out),
                     f"error: {blocked}: cannot write: {why}"], r.output
    assert "Traceback" not in worker_output and "internal error" not in worker_output
    assert files_under(out / "counts" / "mode=native") == native  # nothing already computed is lost


# --- 17 and 15: what is a trace -------------------------------------------------------


def test_out_inside_the_input_folder_is_not_read_back_as_traces(traces_dir: Path) -> None:
    out = traces_dir / "results"
    assert replay([traces_dir], out, "--modes", "native").exit_code == 0
    again = replay([traces_dir], out, "--modes", "native")
    assert again.exit_code == 0, again.output
    assert f"resumed: 2 of 2 shards already done in {out}" in again.output
    assert sorted(pl.read_parquet(out / "summary.parquet")["trace"]) == ["rr2", "rr5"]


@contextlib.contextmanager
def fifo_opened_for_readers(path: Path) -> Iterator[None]:
    """A FIFO whose readers, if any, get end-of-file instead of waiting for a writer
    forever: code that (wrongly) opens it fails instead of hanging the test suite."""
    os.mkfifo(path)
    done = threading.Event()

    def release() -> None:
        while not done.wait(0.05):
            with contextlib.suppress(OSError):  # ENXIO: no reader has it open
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_fifo_is_not_a_trace(traces_dir: Path, tmp_path: Path) -> None:
    fifo = traces_dir / "p.parquet"
    with fifo_opened_for_readers(fifo):
        v = runner.invoke(app, ["validate", str(traces_dir)])
        assert v.exit_code == 0, v.output
        assert f"note: {fifo}: not a regular file (a named pipe), skipped" in v.output
        assert v.output.count("ok  ") == 2
        v = runner.invoke(app, ["validate", str(fifo)])
        assert v.exit_code == 1 and one_line(v.output) == f"bad {fifo}: not a regular file (a named pipe)"
        r = replay([fifo], tmp_path / "o")
        assert r.exit_code == 2 and one_line(r.output) == f"error: {fifo}: not a regular file (a named pipe)"
        r = replay([traces_dir], tmp_path / "o", "--modes", "native")
        assert r.exit_code == 0, r.output
        assert f"note: {fifo}: not a regular file (a named pipe), skipped" in r.output
    assert sorted(pl.read_parquet(tmp_path / "o" / "summary.parquet")["trace"]) == ["rr2", "rr5"]


# --- 1 (part): every output path resolves inside --out ------------------------------

EVIL = "a/../../../victim"


def evil_mode():
    """A mode whose name climbs out of OUT. The Mode record refuses such names when it is
    built; a copy renamed after the fact tests the writers' own check, which must hold
    whatever made the name."""
    mode = copy.copy(load_modes()["native"])
    object.__setattr__(mode, "name", EVIL)
    return mode


def with_victim(tmp_path: Path) -> tuple[Path, Path]:
    """A trace rr and an OUT = work/out beside work/victim/rr__cpu0.parquet, where
    counts/mode=a/../../../victim resolves: a file resume's clean-up would take for a stale
    shard of rr. Returns (trace, out)."""
    trace = write_events(tmp_path / "traces" / "rr.parquet", round_robin_events(3, 12), workload="rr")
    victim = tmp_path / "work" / "victim" / "rr__cpu0.parquet"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(b"precious")
    return trace, tmp_path / "work" / "out"


def test_mode_name_leaving_out_writes_and_removes_nothing_outside(tmp_path: Path) -> None:
    trace, out = with_victim(tmp_path)
    before = files_under(tmp_path)
    with pytest.raises(OutError) as refused:
        run(traces_of([trace]), [evil_mode()], out, ClusterSpec(workers=1), report=print, note=print)
    assert str(refused.value) == (f"{out / 'counts' / f'mode={EVIL}'}: resolves outside --out {out}; "
                                  "nothing is written or removed there")
    assert files_under(tmp_path) == before


def test_resume_and_writers_refuse_paths_outside_out(tmp_path: Path) -> None:
    trace, out = with_victim(tmp_path)
    before = files_under(tmp_path)
    mode = evil_mode()
    (shard,) = plan(traces_of([trace])[0], read_meta(trace), [EVIL], trace_digest(str(trace)))
    with pytest.raises(OutError, match="resolves outside --out"):
        resume(out, [shard], {EVIL: mode}, {"rr"})
    with pytest.raises(OutError, match="resolves outside --out"):
        write_shard(out, shard, {"trace": "rr"}, entry(shard, mode))
    with pytest.raises(OutError, match="resolves outside --out"):
        write_attribution(out, shard, pl.DataFrame({"kind": ["io"], "asid": [1], "device": [0x80],
                                                    "driver": ["exit_io"], "count": [3]}), entry(shard, mode))
    assert files_under(tmp_path) == before


def test_tasks_return_their_failures_instead_of_raising(tmp_path: Path) -> None:
    """A task that raised would have its worker log a traceback onto the user's terminal:
    hashing a trace gone since planning, and a shard whose files cannot even be named
    (a NUL in the folder), come back as values."""
    from pipeline.run.runner import Group, hash_trace, replay_group
    gone = hash_trace(str(tmp_path / "gone.parquet"))
    assert isinstance(gone, FileNotFoundError)
    trace = write_events(tmp_path / "t.parquet", round_robin_events(2, 3))
    (shard,) = plan(traces_of([trace])[0], read_meta(trace), ["native"], trace_digest(str(trace)))
    (failed,) = replay_group(Group((shard,)), (load_modes()["native"],), str(tmp_path / "o\0ut"))
    assert isinstance(failed, Failure) and "internal error: ValueError" in failed.error and "\n" not in failed.error
