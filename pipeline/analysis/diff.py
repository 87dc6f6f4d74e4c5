"""Compare two results folders: per (trace, mode), how the modelled time and each part of it moved.

The parts are the trace's native time and each cost category's modelled overhead
(time_<category>_ns), so the part deltas add up to the total's. Two summaries priced with
different profiles, replayed under different modes or by different versions compare the
same way; a category only one profile has counts as zero on the other side.
"""
from __future__ import annotations

import polars as pl

from pipeline.run.results import parts

KEY = ["trace", "mode"]
IDENTITY = ["workload", "headline", "ops", "op_unit", "mode_rank", "cpus", "idle_ns"]


def diff(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """One row per (trace, mode) of either summary. `status`: both, only in A, only in B,
    failed in A / B / both. For rows in both: X_a, X_b, X_delta (B − A, ns) and X_pct
    (% of A; null when A is 0) for X = virt_ns and every part."""
    columns = ["virt_ns", *dict.fromkeys(parts(a) + parts(b))]
    joined = _side(a, "a", columns).join(_side(b, "b", columns), on=KEY, how="full", coalesce=True)
    ok_a, ok_b = pl.col("status_a") == "ok", pl.col("status_b") == "ok"
    status = (pl.when(ok_a & ok_b).then(pl.lit("both"))
              .when(pl.col("status_a").is_null()).then(pl.lit("only in B"))
              .when(pl.col("status_b").is_null()).then(pl.lit("only in A"))
              .when(~ok_a & ~ok_b).then(pl.lit("failed in both"))
              .when(~ok_a).then(pl.lit("failed in A"))
              .otherwise(pl.lit("failed in B")))
    both = status == "both"
    deltas = []
    for c in columns:
        delta = pl.col(f"{c}_b") - pl.col(f"{c}_a")
        deltas += [pl.when(both).then(delta).alias(f"{c}_delta"),
                   pl.when(both & (pl.col(f"{c}_a") != 0)).then(100 * delta / pl.col(f"{c}_a").abs()).alias(f"{c}_pct")]
    identity = [pl.coalesce(f"{k}_a", f"{k}_b").alias(k) for k in IDENTITY]
    out = joined.select(*KEY, *identity, status.alias("status"), "profile_a", "profile_b",
                        *[f"{c}_{s}" for c in columns for s in "ab"], *deltas)
    return out.sort("trace", "mode_rank", "mode")


def _side(summary: pl.DataFrame, tag: str, columns: list[str]) -> pl.DataFrame:
    """The summary's key, identity, status, profile and `columns` (0 where it has no such
    category), suffixed with `tag`."""
    have = set(summary.columns)
    values = [pl.col(c).cast(pl.Float64) if c in have else pl.lit(0.0).alias(c) for c in columns]
    optional = [pl.col(c) if c in have else pl.lit(None).alias(c) for c in ["profile", *IDENTITY]]
    side = summary.select(*KEY, "status", *optional, *values)
    return side.rename({c: f"{c}_{tag}" for c in side.columns if c not in KEY})
