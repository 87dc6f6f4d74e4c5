"""Fixtures for pipeline tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.pipeline.tracefiles import round_robin_events, write_events


@pytest.fixture
def traces_dir(tmp_path: Path) -> Path:
    """Two good traces: round-robin over 5 and over 2 address spaces."""
    d = tmp_path / "traces"
    write_events(d / "rr5.parquet", round_robin_events(5, 50), workload="rr5")
    write_events(d / "rr2.parquet", round_robin_events(2, 40), workload="rr2")
    return d


QUICK_TRACE = Path(__file__).resolve().parents[2] / "traces" / "quick" / "lat-ctx-2-small.parquet"


@pytest.fixture(scope="session")
def quick_results(tmp_path_factory) -> Path:
    """The shipped small lat-ctx trace replayed under every mode, default profile (shared:
    read it, never write into it)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path_factory.mktemp("quick") / "results"
    result = CliRunner().invoke(app, ["replay", str(QUICK_TRACE), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    return out


SHIPPED_TRACES = Path(__file__).resolve().parents[2] / "traces"


@pytest.fixture(scope="session")
def shipped_results(tmp_path_factory) -> Path:
    """`pipeline replay traces/ --modes all`, the README's run, default profile (shared: read
    it, never write into it)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    out = tmp_path_factory.mktemp("shipped") / "results"
    result = CliRunner().invoke(app, ["replay", str(SHIPPED_TRACES), "--modes", "all", "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    return out
