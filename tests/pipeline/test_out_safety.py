"""--out safety (issue 12, part A): nothing lost, nothing written outside --out, no tracebacks.

Real Parquet files and real local Dask clusters; a second run is a real second
process. Expected figures are counted by hand from the traces' construction
(tests/pipeline/tracefiles.py), never taken from the code under test.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


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
