"""The results dataset: per-shard count files, then the summary written last.

Layout under OUT:
  counts/mode=<mode>/<trace>__cpu<N>.parquet   one row of counts per shard (hive-partitioned)
  attribution/mode=<mode>/<trace>__cpu<N>.parquet  the same counts split by source: one row
                                               per (event kind, address space, device, priced driver)
  summary.parquet                              one row per (trace, mode), priced
Every file is written to a temporary name and renamed, so a reader (or a crashed
run) never sees half a file, and only to paths proved to resolve inside OUT
(pipeline/run/outdir.py). A shard file's Parquet footer holds its manifest entry
(MANIFEST_KEY: what it was computed from, see pipeline/run/manifest.py) and the SHA-256
of its content (CONTENT_KEY), committed by the same rename as its counts; its pages
carry CRCs. A kept file is trusted only once both are verified (read_kept): a flipped
bit in a page fails its CRC, and a change that still leaves a valid file (a rewritten
page, a damaged value with a recomputed CRC) fails the content checksum.
The summary's footer lists the counts files its rows were summed from (SHARDS_KEY),
so `pipeline report` can tell when it describes shards that are no longer there.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.analysis.pricing import price
from pipeline.config.cost_profile import Profile
from pipeline.run.outdir import inside, remove, write
from pipeline.run.shards import Shard
from replay.counts import ALL_COUNTS, DRIVERS, Counts

SUMMARY = "summary.parquet"
COUNTS_DIR = "counts"
ATTRIBUTION_DIR = "attribution"
MANIFEST_KEY = b"hvreplay.shard"
CONTENT_KEY = b"hvreplay.content_sha256"
SHARDS_KEY = "hvreplay.shards"


class Damaged(Exception):
    """A result file that cannot be read, fails a page CRC or its content checksum."""


class StaleSummary(Exception):
    """A summary that describes shard files which are gone or were recomputed since; str() is one line."""


@dataclass(frozen=True)
class Failure:
    """A trace that could not be replayed (under one mode, or at all)."""

    trace: str
    mode: str
    error: str


def shard_row(shard: Shard, counts: Counts) -> dict[str, Any]:
    """One shard's result: identity, the trace facts pricing needs, and every count."""
    m = shard.meta
    return {"trace": shard.trace, "workload": m.workload, "cpu": shard.cpu, "path": shard.path,
            "native_ns": m.native_ns, "cpus": len(m.cpus), "ops": m.ops, "op_unit": m.op_unit,
            "headline": m.headline, **counts.as_row()}


def mode_folder(out: Path, dataset: str, mode: str) -> Path:
    """OUT/<dataset>/mode=<mode>, refused (OutError) unless it resolves inside OUT."""
    return inside(out, out / dataset / f"mode={mode}")


def mode_folders(out: Path, modes: Iterable[str]) -> list[Path]:
    """Every result folder of these modes (counts and attribution), each proved inside OUT."""
    return [mode_folder(out, dataset, m) for m in modes for dataset in (COUNTS_DIR, ATTRIBUTION_DIR)]


def shard_path(out: Path, shard: Shard) -> Path:
    """A shard's deterministic result file (the mode is in the path), proved inside OUT."""
    return inside(out, mode_folder(out, COUNTS_DIR, shard.mode) / shard.file_name)


def write_shard(out: Path, shard: Shard, row: dict[str, Any], entry: str) -> Path:
    """Write one shard's row with its manifest entry in the footer, in one atomic rename."""
    return _write_committed(shard_path(out, shard), pa.Table.from_pylist([row]), entry)


def _write_committed(path: Path, table: pa.Table, entry: str) -> Path:
    """A result file with its manifest entry and content checksum in the footer (all land
    in one atomic rename), and a CRC on every page."""
    table = table.replace_schema_metadata({MANIFEST_KEY: entry.encode(), CONTENT_KEY: content_sha256(table).encode()})
    return write(path, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))


def content_sha256(table: pa.Table) -> str:
    """SHA-256 of a table's column names, types and values. Taken over the values, not the
    file's bytes, because the file holds its own checksum and the values are what a
    resumed run reads back."""
    columns = [[f.name, str(f.type), column.to_pylist()] for f, column in zip(table.schema, table.columns)]
    return hashlib.sha256(json.dumps(columns).encode()).hexdigest()


def parts(summary: pl.DataFrame) -> list[str]:
    """What a summary row's time is made of: native_ns, then the cost-category columns
    (time_<category>_ns) in the summary's own order."""
    return ["native_ns", *[c for c in summary.columns if c.startswith("time_") and c.endswith("_ns")]]


def part_name(part: str) -> str:
    """native_ns -> "native", time_<category>_ns -> category."""
    return "native" if part == "native_ns" else part.removeprefix("time_").removesuffix("_ns")


ATTRIBUTION_SCHEMA = pa.schema([("trace", pa.string()), ("cpu", pa.int32()), ("mode", pa.string()),
                                ("kind", pa.string()), ("asid", pa.int64()), ("device", pa.int64()),
                                ("driver", pa.string()), ("count", pa.int64())])


def totals(by_source: pl.DataFrame) -> Counts:
    """A shard's counts from its counts per source (chunks.SOURCE_COLUMNS + count)."""
    sums = by_source.group_by("driver").agg(pl.col("count").sum())
    return Counts({d: int(n) for d, n in sums.iter_rows() if n})


def attribution_path(out: Path, shard: Shard) -> Path:
    """A shard's attribution file: the counts file's name, in its own folder, proved inside OUT."""
    return inside(out, mode_folder(out, ATTRIBUTION_DIR, shard.mode) / shard.file_name)


def write_attribution(out: Path, shard: Shard, by_source: pl.DataFrame, entry: str) -> Path:
    """One shard's priced counts by source (what costs time; informational counts are in
    the counts file), with the same manifest entry as its counts file.

    Written before the counts file, whose rename commits the shard: a resumed run keeps
    a shard only when both files carry this run's entry."""
    rows = by_source.filter(pl.col("driver").is_in(list(DRIVERS))).with_columns(
        trace=pl.lit(shard.trace), cpu=pl.lit(shard.cpu), mode=pl.lit(shard.mode))
    table = rows.to_arrow().select(ATTRIBUTION_SCHEMA.names).cast(ATTRIBUTION_SCHEMA)
    return _write_committed(attribution_path(out, shard), table, entry)


def read_kept(path: Path, entry: str) -> pa.Table | None:
    """The table of a result file computed from `entry`, proved intact; None if there is no
    file or it was computed from something else (other trace bytes, mode or model: then
    it is simply out of date). Damaged if it cannot be read, or a page fails its CRC, or
    its values fail the content checksum in its footer."""
    if not path.exists():
        return None
    footer = _footer(path)
    if footer is None:
        raise Damaged(path)
    if footer.get(MANIFEST_KEY) != entry.encode():
        return None
    try:
        table = pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException):
        raise Damaged(path) from None
    if footer.get(CONTENT_KEY) != content_sha256(table).encode():
        raise Damaged(path)
    return table


def _footer(path: Path) -> dict[bytes, bytes] | None:
    """A Parquet file's key-value metadata (its footer's, which Polars writes too, not the
    stored Arrow schema's); None if it cannot be read."""
    try:
        return pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None


# A summary row's identity and priced figures; the cost categories and counts follow
# (summary_schema). A failed (trace, mode) row has nulls there, so a summary in which
# every trace failed still has every column readers select.
_SUMMARY_HEAD: dict[str, Any] = {
    "trace": pl.String, "workload": pl.String, "mode": pl.String, "status": pl.String, "error": pl.String,
    "native_ns": pl.Float64, "virt_ns": pl.Float64, "slowdown": pl.Float64, "ops": pl.Int64,
    "op_unit": pl.String, "headline": pl.String, "ns_per_op": pl.Float64, "native_ns_per_op": pl.Float64,
    "profile": pl.String, "shards": pl.Int64, "cpus": pl.Int64}


def summary_schema(profile: Profile) -> dict[str, Any]:
    """The summary's columns and types under `profile` (its categories name the time columns)."""
    return {**_SUMMARY_HEAD, **{f"time_{c}_ns": pl.Float64 for c in profile.categories()},
            **dict.fromkeys(ALL_COUNTS, pl.Int64), "mode_rank": pl.Int64}


def summarise(rows: list[tuple[str, dict[str, Any]]], failures: list[Failure], profile: Profile,
              mode_order: list[str]) -> pl.DataFrame:
    """Sum shards per (trace, mode), price them, and add one row per failure.

    `mode_rank` keeps the run's mode order, so reports show modes as configured."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for mode, row in rows:
        groups[(row["trace"], mode)].append(row)
    failed = {(f.trace, f.mode) for f in failures}
    ok = [_priced_row(mode, shards, profile) for (trace, mode), shards in sorted(groups.items())
          if (trace, mode) not in failed]
    bad = [{"trace": f.trace, "mode": f.mode, "status": "failed", "error": f.error} for f in failures]
    rank = {m: i for i, m in enumerate(mode_order)}
    rows_out = [{**r, "mode_rank": rank.get(r["mode"], len(rank))} for r in ok + bad]
    return pl.DataFrame(rows_out, schema=summary_schema(profile)).sort(["trace", "mode_rank"])


def _priced_row(mode: str, shards: list[dict[str, Any]], profile: Profile) -> dict[str, Any]:
    first = shards[0]
    counts = {n: sum(s[n] for s in shards) for n in ALL_COUNTS}
    p = price(counts, first["native_ns"], first["cpus"], profile)
    return {
        "trace": first["trace"], "workload": first["workload"], "mode": mode, "status": "ok", "error": None,
        "native_ns": float(first["native_ns"]), "virt_ns": p.virt_ns, "slowdown": p.slowdown,
        "ops": first["ops"], "op_unit": first["op_unit"], "headline": first["headline"],
        "ns_per_op": p.virt_ns / first["ops"], "native_ns_per_op": first["native_ns"] / first["ops"],
        "profile": profile.name, "shards": len(shards), "cpus": first["cpus"],
        **{f"time_{cat}_ns": ns for cat, ns in p.by_category.items()},
        **counts,
    }


def write_summary(out: Path, summary: pl.DataFrame, done: list[tuple[Shard, str]]) -> Path:
    """The summary, its footer listing each counts file its ok rows were summed from (of
    `done`: (shard, manifest entry)) with the SHA-256 of that file's entry."""
    ok = set(summary.filter(pl.col("status") == "ok").select("trace", "mode").rows()) if len(summary) else set()
    shards = [[s.trace, s.mode, shard_path(out, s).relative_to(out).as_posix(), _sha256(e)]
              for s, e in done if (s.trace, s.mode) in ok]
    return write(out / SUMMARY, lambda tmp: summary.write_parquet(tmp, metadata={SHARDS_KEY: json.dumps(shards)}))


def remove_summary(out: Path) -> None:
    """Remove OUT's summary: a run does so before it removes or replaces any shard file,
    so that a run that is killed leaves no summary of shards that are gone."""
    remove(out / SUMMARY)


def read_summary(results: Path) -> pl.DataFrame:
    """The summary of a results folder (or a summary file given directly)."""
    path = _summary_file(results)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no summary here (run `pipeline replay … --out {results}` first)")
    return pl.read_parquet(path)


def check_summary(results: Path, summary: pl.DataFrame) -> None:
    """StaleSummary unless every ok row's counts files, as listed in the summary's footer,
    are there and carry the manifest entry they had when it was written. A summary with
    no such list (made by hand, or by a version before it was kept) is not checked."""
    path = _summary_file(results)
    listed = (_footer(path) or {}).get(SHARDS_KEY.encode())
    if listed is None:
        return
    shards = json.loads(listed)
    backed = {(trace, mode) for trace, mode, _, _ in shards}
    for trace, mode in summary.filter(pl.col("status") == "ok").select("trace", "mode").rows():
        if (trace, mode) not in backed:
            raise StaleSummary(_stale(path, f"{trace} / {mode} has no counts files listed"))
    for _, _, name, digest in shards:
        entry = (_footer(path.parent / name) or {}).get(MANIFEST_KEY)
        if entry is None or _sha256(entry.decode()) != digest:
            raise StaleSummary(_stale(path, f"{name} is gone or was recomputed since"))


def _stale(path: Path, why: str) -> str:
    return f"{path}: stale summary ({why}); rerun `pipeline replay … --out {path.parent}`"


def _summary_file(results: Path) -> Path:
    return results / SUMMARY if results.is_dir() else results


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
