"""Long traces for benchmarks: a shipped trace written again and again, shifted in time.

Built in a temporary folder by the benchmarks that need one, never committed. Each copy
is one row-group stream, so building a 1e9-event trace takes the memory of one copy."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.tracefile.format import META_KEY, read_meta

SOURCE = Path(__file__).resolve().parent.parent / "traces" / "hackbench-5.parquet"


def make_trace(out: Path, repeat: int, source: Path = SOURCE) -> int:
    """`source` written `repeat` times, each copy shifted by its native time; returns rows."""
    table = pq.read_table(source)
    meta = read_meta(source)
    longer = dataclasses.replace(meta, native_ns=meta.native_ns * repeat, ops=meta.ops * repeat)
    schema = table.schema.with_metadata({META_KEY: longer.to_json()})
    t_ns = table.column("t_ns").to_numpy()
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for k in range(repeat):
            shifted = table.set_column(0, "t_ns", [t_ns + k * meta.native_ns])
            writer.write_table(shifted.replace_schema_metadata(schema.metadata), row_group_size=1 << 20)
    return table.num_rows * repeat
