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
