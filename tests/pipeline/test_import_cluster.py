"""`pipeline import` on a real local Dask cluster (127.0.0.1): --out-dir (one task per
recording) and --split (one recording's byte ranges), each checked against the import
without Dask and against counts read from the text independently."""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import typer
from dask.distributed import Client
from typer.testing import CliRunner

from pipeline.cli import ChunkOptions, ClusterOptions, app
from pipeline.run.runner import local_cluster
from pipeline.tracefile.importers import ImportFailed, ImportReport, detect, import_files
from pipeline.tracefile.importers.split import cuts, split_reader
from tests.pipeline.test_importers import ATRACE, FORK_EXEC
from tests.pipeline.tracefiles import needs_samples, sample_files, sample_text

TS = re.compile(r"(\s)(\d+)(\.\d+: )")   # a timestamp in seconds, its whole part apart
runner = CliRunner()


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with local_cluster(2) as cluster, Client(cluster) as c:
        yield c


def same_trace(a: Path, b: Path) -> bool:
    """Rows and metadata equal (the schema's key-value metadata holds the trace's)."""
    return pq.read_table(a).equals(pq.read_table(b)) and pq.read_schema(a).metadata == pq.read_schema(b).metadata


def report_fields(report: ImportReport) -> dict:
    return {k: v for k, v in vars(report).items() if k != "out"}


def split_and_sequential(src: Path, tmp: Path, client: Client, range_bytes: int, **kw) -> tuple:
    """Import `src` without and with --split (small ranges and chunks: many cuts); both
    outcomes, a failure as its message."""
    def run(out: Path, **more) -> ImportReport | str:
        try:
            return import_files([src], out, workload="w", **kw, **more)
        except ImportFailed as e:
            return str(e)
    plain = run(tmp / "plain.parquet")
    split = run(tmp / "split.parquet", chunks=split_reader(client, range_bytes, range_bytes // 3))
    return plain, split


def shifted(text: str, copies: int) -> str:
    """`copies` of a recording one after the other, each shifted in time past the one before."""
    secs = [int(m[2]) for m in TS.finditer(text)]
    step = secs[-1] - secs[0] + 1
    body = text.split("\n", 1)[1]
    return "".join(TS.sub(lambda m, k=k: m[1] + str(int(m[2]) + k * step) + m[3], text if k == 0 else body)
                   for k in range(copies))


# ------------------------------------------------------------------ --split
@needs_samples
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name[:50])
def test_split_import_of_each_sample_is_the_sequential_one(tmp_path: Path, client: Client, path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text(sample_text(path))
    range_bytes = max(src.stat().st_size // 9, 2000)
    assert len(cuts(src, detect(src), range_bytes)) >= 4   # really split
    plain, split = split_and_sequential(src, tmp_path, client, range_bytes)
    if isinstance(plain, str):               # a host-side recording: the same one-line refusal
        assert split == plain and not (tmp_path / "split.parquet").exists()
        return
    assert not isinstance(split, str), split
    assert report_fields(split) == report_fields(plain)
    assert same_trace(tmp_path / "plain.parquet", tmp_path / "split.parquet")
    assert split.switches == len(re.findall(r"sched_switch: ", src.read_text()))


@needs_samples
def test_split_import_of_the_guest_sample_times_four(tmp_path: Path, client: Client) -> None:
    guest = next(p for p in sample_files() if "Salamander4" in p.name)
    src = tmp_path / "x4.txt"
    src.write_text(shifted(sample_text(guest), 4))
    plain, split = split_and_sequential(src, tmp_path, client, 1 << 20)
    assert isinstance(split, ImportReport) and isinstance(plain, ImportReport)
    assert report_fields(split) == report_fields(plain) and split.malformed == 0
    assert same_trace(tmp_path / "plain.parquet", tmp_path / "split.parquet")
    assert split.switches == 4 * sample_text(guest).count("sched_switch: ")


def test_split_problems_name_the_same_lines(tmp_path: Path, client: Client) -> None:
    """Malformed lines, lines back in time and wrapped free-text payloads near the cuts:
    the same problems, with the same line numbers (ranges of ~300 bytes: a cut every few lines)."""
    lines = shifted(ATRACE + FORK_EXEC.split("\n", 1)[1].replace("    10.0", "   200.0"), 6).splitlines(keepends=True)
    for at in range(7, len(lines), 9):
        lines.insert(at, "garbage that is no event line\n")
    lines.insert(30, lines[12])      # back in time on cpu 0
    src = tmp_path / "in.txt"
    src.write_text("".join(lines))
    plain, split = split_and_sequential(src, tmp_path, client, 300)
    assert isinstance(split, ImportReport) and isinstance(plain, ImportReport)
    assert plain.malformed >= 5 and report_fields(split) == report_fields(plain)
    assert same_trace(tmp_path / "plain.parquet", tmp_path / "split.parquet")
    strict_plain, strict_split = split_and_sequential(src, tmp_path / "s", client, 300, strict=True)
    assert strict_split == strict_plain and re.search(r"in\.txt:8: not an event line", strict_plain)


def test_split_on_the_command_line_prints_and_writes_what_the_plain_import_does(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text(shifted(ATRACE, 40))
    outputs = {}
    for name, more in (("plain", []), ("split", ["--split", "--workers", "2"])):
        r = runner.invoke(app, ["import", str(src), "-o", str(tmp_path / "t.parquet"), *more], env={"COLUMNS": "200"})
        assert r.exit_code == 0, r.output
        (tmp_path / "t.parquet").rename(tmp_path / f"{name}.parquet")
        outputs[name] = r.output
    assert outputs["split"] == outputs["plain"] and "240 context switches" in outputs["plain"]
    assert same_trace(tmp_path / "plain.parquet", tmp_path / "split.parquet")


def test_split_refuses_compressed_text_and_out_dir(tmp_path: Path) -> None:
    import gzip
    src = tmp_path / "in.txt.gz"
    src.write_bytes(gzip.compress(ATRACE.encode()))
    r = runner.invoke(app, ["import", str(src), "-o", str(tmp_path / "o.parquet"), "--split", "--workers", "1"])
    assert r.exit_code == 2 and "--split reads byte ranges of uncompressed text" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o.parquet").exists()
    r = runner.invoke(app, ["import", str(src), "--out-dir", str(tmp_path / "d"), "--split"])
    assert r.exit_code == 2 and "--split parses one recording" in r.output


# ------------------------------------------------------------------ --out-dir
def write_recordings(tmp: Path) -> dict[str, Path]:
    """trace name -> recording: files named directly, and a folder with a nested one."""
    (tmp / "folder" / "sub").mkdir(parents=True)
    files = {"atrace": tmp / "atrace.txt", "forks": tmp / "folder" / "forks.txt",
             "sub__again": tmp / "folder" / "sub" / "again.txt.gz"}
    files["atrace"].write_text(ATRACE)
    files["forks"].write_text(FORK_EXEC)
    import gzip
    files["sub__again"].write_bytes(gzip.compress(ATRACE.encode()))
    (tmp / "folder" / ".hidden").write_text("not a recording: hidden")
    return files


def test_out_dir_imports_each_recording_as_its_own_trace(tmp_path: Path) -> None:
    files = write_recordings(tmp_path)
    out = tmp_path / "traces"
    r = runner.invoke(app, ["import", str(files["atrace"]), str(tmp_path / "folder"), "--out-dir", str(out),
                            "--workers", "2"], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [f"{n}.parquet" for n in sorted(files)]
    for name, src in files.items():
        alone = tmp_path / "alone" / f"{name}.parquet"
        report = import_files([src], alone)
        assert same_trace(out / f"{name}.parquet", alone)
        assert f"{src} " in r.output and str(report.rows) in r.output
    assert not list(out.glob(".*.tmp"))


def test_a_bad_recording_fails_alone(tmp_path: Path) -> None:
    """One line naming the bad file (and line, with --strict); the others are imported; exit
    1; the bad one's trace from an earlier run is gone, no partial file is left."""
    write_recordings(tmp_path)
    (tmp_path / "folder" / "words.txt").write_text("the quick brown fox\n" * 5)
    bad_line = tmp_path / "folder" / "bad_line.txt"
    bad_line.write_text(ATRACE.replace("[000] d..3   100.000004", "[000] d..3   oops"))
    out = tmp_path / "traces"
    out.mkdir()
    (out / "words.parquet").write_text("an old trace of words.txt")
    r = runner.invoke(app, ["import", str(tmp_path / "folder"), "--out-dir", str(out), "--strict", "--workers", "2"],
                      env={"COLUMNS": "400"})
    assert r.exit_code == 1, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert errors[0].startswith(f"error: {bad_line}:5: not an event line: ") and len(errors) == 3
    assert errors[1] == (f"error: {tmp_path / 'folder' / 'words.txt'}: no trace events found (expected perf script, "
                         "ftrace or trace-cmd report text)")
    assert errors[2] == f"error: 2 of 4 recordings failed; the others are imported in {out}"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["forks.parquet", "sub__again.parquet"]
    assert "Traceback" not in r.output


def test_same_names_are_made_unique(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "rec.txt").write_text(ATRACE)
    out = tmp_path / "o"
    r = runner.invoke(app, ["import", str(tmp_path / "a" / "rec.txt"), str(tmp_path / "b" / "rec.txt"),
                            "--out-dir", str(out), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["rec.parquet", "rec~1.parquet"]


def test_import_takes_the_cluster_options_but_not_chunking() -> None:
    commands = typer.main.get_command(app).commands
    own = {name: {p.name: (p.opts, p.default, p.help) for p in commands[name].params} for name in ("import", "replay")}
    assert all(own["import"][f] == own["replay"][f] for f in ClusterOptions._fields)
    assert not set(ChunkOptions._fields) & set(own["import"]) and set(ChunkOptions._fields) <= set(own["replay"])
    r = runner.invoke(app, ["import", str(Path(__file__))])
    assert r.exit_code == 2 and "give -o OUT.parquet" in r.output
