"""Attribution datasets in the contract's shape (OUT/attribution/mode=M/TRACE__cpuN.parquet),
written from hand-made rows, and a profile with round unit costs to price them by hand."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import tomli_w

from pipeline.config.cost_profile import SAVINGS
from pipeline.run.results import ATTRIBUTION_DIR, ATTRIBUTION_SCHEMA
from replay.counts import DRIVERS

# Source = (kind, asid, device); one row per (source, driver).
Row = tuple[str, int, int, str, int]


def write_attribution(results: Path, trace: str, cpu: int, mode: str, rows: list[Row]) -> Path:
    path = results / ATTRIBUTION_DIR / f"mode={mode}" / f"{trace}__cpu{cpu}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{"trace": trace, "cpu": cpu, "mode": mode, "kind": k, "asid": a, "device": d,
                                   "driver": drv, "count": n} for k, a, d, drv, n in rows], schema=ATTRIBUTION_SCHEMA)
    pq.write_table(table, path)
    return path


def write_round_profile(path: Path, costs: dict[str, float], name: str = "round-costs") -> Path:
    """A valid profile: the given unit costs, every other driver free (0 ns); ranges wide,
    on the side of 0 each driver's cost must be (a saving's <= 0)."""
    table = {"name": name, "description": "round unit costs for hand-priced tests",
             "costs": {d: {"ns": float(costs.get(d, 0.0)), "low": -1e6 if d in SAVINGS else 0.0,
                           "high": 0.0 if d in SAVINGS else 1e6, "category": "c", "source": "test"}
                       for d in DRIVERS}}
    path.write_text(tomli_w.dumps(table))
    return path
