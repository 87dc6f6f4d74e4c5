"""Bad input to `pipeline import` and `pipeline kvm-stat`: files they cannot read, options
they cannot use. One error line naming the file (or option), never a traceback (nor click's
`Aborted.`), no output left behind, exit status != 0.

The compressed inputs are real: small traces compressed with the standard library and then
cut short or corrupted; what each should say is written out by hand."""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pipeline.cli import app

# suffix -> (compress, decompress a file object, the name the error uses). bzip2 at level 1
# has 100 kB blocks, so the first blocks of the traces below are whole in their first half.
CODECS = {".gz": (gzip.compress, gzip.open, "gzip"),
          ".xz": (lzma.compress, lzma.open, "xz"),
          ".bz2": (lambda data: bz2.compress(data, 1), bz2.open, "bzip2")}


def guest_trace(switches: int) -> str:
    """ftrace sched_switch lines, bash (1000) and cat (2000) taking turns, 1 µs apart."""
    pids = (1000, 2000)
    return "".join(
        f"            bash-{pids[i % 2]}  [000] d..3   {100 + i // 10**6}.{i % 10**6:06d}: sched_switch: "
        f"prev_comm=bash prev_pid={pids[i % 2]} prev_prio=120 prev_state=S ==> "
        f"next_comm=cat next_pid={pids[1 - i % 2]} next_prio=120\n" for i in range(switches))


def host_trace(exits: int) -> str:
    """trace-cmd report lines of one vCPU thread: HLT exits handled in 7 µs, every 10 µs."""
    return "".join(
        f" CPU 0/KVM-10 [001] 5.{10 * i:06d}: kvm_exit: reason HLT rip 0x1 info 0 0\n"
        f" CPU 0/KVM-10 [001] 5.{10 * i + 7:06d}: kvm_entry: vcpu 0 rip 0x2\n" for i in range(exits))


def truncated(path: Path, text: str) -> Path:
    """`text` compressed by path's suffix, the second half of the compressed bytes cut off."""
    data = CODECS[path.suffix][0](text.encode())
    path.write_bytes(data[:len(data) // 2])
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def error_lines(result: Result) -> list[str]:
    """The output's error lines; also checks nothing escaped as an exception or a traceback."""
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, result.output
    assert "Aborted" not in result.output
    return [line for line in result.output.splitlines() if "error:" in line]


@pytest.mark.parametrize("suffix", CODECS)
def test_import_truncated_file(tmp_path: Path, suffix: str) -> None:
    """The cut falls after the first 4 kB of text, so the import fails mid-read, not in its
    first look at the file; nothing is written at -o, and no temporary file stays."""
    src = truncated(tmp_path / f"in.txt{suffix}", guest_trace(3000))
    decompress, name = CODECS[suffix][1], CODECS[suffix][2]
    assert len(decompress(io.BytesIO(src.read_bytes())).read(4096)) == 4096
    good = tmp_path / "good.txt"
    good.write_text(guest_trace(10))
    out = tmp_path / "out" / "t.parquet"
    result = run("import", good, src, "-o", out, "-q")
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: {src}: truncated {name} data (the file ends mid-stream)"]
    assert not out.exists() and not list(tmp_path.rglob(".*.tmp"))


def test_import_out_not_writable(tmp_path: Path) -> None:
    """-o naming a folder: the rename into place fails; the line says so without the
    temporary file's name, and that file is gone."""
    src, folder = tmp_path / "in.txt", tmp_path / "taken"
    src.write_text(guest_trace(4))
    folder.mkdir()
    result = run("import", src, "-o", folder)
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: -o {folder}: the trace cannot be written (Is a directory)"]
    assert not list(folder.iterdir()) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("suffix", CODECS)
def test_kvm_stat_truncated_file_beside_a_good_one(tmp_path: Path, suffix: str) -> None:
    src = truncated(tmp_path / f"host.txt{suffix}", host_trace(3000))
    good = tmp_path / "good.txt"
    good.write_text(host_trace(4))
    result = run("kvm-stat", src, good)
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {src}: truncated {CODECS[suffix][2]} data (the file ends mid-stream)"]
    assert re.search(r"│ HLT\s+│\s+4 │", result.output)     # the good file's 4 exits are still summarised


@pytest.mark.parametrize("suffix", CODECS)
def test_text_named_as_compressed(tmp_path: Path, suffix: str) -> None:
    fake = tmp_path / f"fake{suffix}"
    fake.write_text(host_trace(2))
    name = CODECS[suffix][2]
    want = [f"error: {fake}: not {name} data (named {suffix}, but does not start with {name}'s magic bytes)"]
    for args in (["import", fake, "-o", tmp_path / "o.parquet"], ["kvm-stat", fake]):
        result = run(*args)
        assert result.exit_code == 2 and error_lines(result) == want
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("suffix", CODECS)
def test_corrupt_compressed_data(tmp_path: Path, suffix: str) -> None:
    """A flipped byte mid-stream: each codec words it its own way, the line names the file."""
    data = bytearray(CODECS[suffix][0](host_trace(3000).encode()))
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / f"bad.txt{suffix}"
    bad.write_bytes(bytes(data))
    for args in (["import", bad, "-o", tmp_path / "o.parquet"], ["kvm-stat", bad]):
        result = run(*args)
        lines = error_lines(result)
        assert result.exit_code == 2 and len(lines) == 1
        assert lines[0].startswith(f"error: {bad}: corrupt {CODECS[suffix][2]} data (")
    assert not (tmp_path / "o.parquet").exists()


def test_empty_compressed_file_is_truncated(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt.gz"
    empty.write_bytes(b"")
    result = run("kvm-stat", empty)
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: {empty}: truncated gzip data (the file ends mid-stream)"]


def test_kvm_stat_files_that_are_not_traces(tmp_path: Path) -> None:
    """Each bad argument gets its line; the good file is still summarised (exit 1)."""
    empty, binary, folder = tmp_path / "empty.txt", tmp_path / "bin.txt", tmp_path / "dir"
    empty.write_text("")
    binary.write_bytes(bytes(range(256)))
    folder.mkdir()
    good = tmp_path / "good.txt"
    good.write_text(host_trace(3))
    result = run("kvm-stat", empty, binary, folder, tmp_path / "missing.txt", good)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"error: {empty}: no trace event lines (expected ftrace, trace-cmd report or perf script text)",
        f"error: {binary}: binary file, not a text trace",
        f"error: {folder}: Is a directory",
        f"error: {tmp_path / 'missing.txt'}: No such file or directory"]
    assert re.search(r"│ HLT\s+│\s+3 │", result.output)


def test_kvm_stat_strict(tmp_path: Path) -> None:
    """An entry stamped before its exit: a warning, or with --strict the file's error."""
    src = tmp_path / "host.txt"
    src.write_text(host_trace(2).replace("5.000017: kvm_entry", "5.000009: kvm_entry"))
    assert run("kvm-stat", src).exit_code == 0
    result = run("kvm-stat", src, "--strict")
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: {src}:4: kvm_entry earlier than the kvm_exit it follows (line 3): "
                                   "CPU 0/KVM-10 [001] 5.000009: kvm_entry: vcpu 0 rip 0x2 (--strict)"]


@pytest.mark.parametrize("hz", ["-1e9", "0", "nan", "inf"])
def test_kvm_stat_tsc_hz_must_be_a_frequency(tmp_path: Path, hz: str) -> None:
    """A negative --tsc-hz made every time negative; 0 silently meant none, nan made them NaN."""
    src = tmp_path / "host.txt"
    src.write_text(host_trace(2).replace("5.0000", "50000"))    # clock counts: --tsc-hz applies
    result = run("kvm-stat", src, "--tsc-hz", hz)
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: --tsc-hz {float(hz)}: must be the TSC frequency in Hz, a positive number"]


def test_kvm_stat_out_not_writable(tmp_path: Path) -> None:
    """--out names a folder for STATS.parquet unless it ends in .parquet: a plain file there
    cannot be one. The tables are printed; the error says why nothing was written."""
    src, taken = tmp_path / "host.txt", tmp_path / "taken"
    src.write_text(host_trace(2))
    taken.write_text("mine\n")
    result = run("kvm-stat", src, "--out", taken)
    assert result.exit_code == 2
    assert error_lines(result) == [f"error: --out {taken}: the tables cannot be written ({taken}: File exists)"]
    assert taken.read_text() == "mine\n" and not list(tmp_path.glob(".*.tmp"))


def test_trace_text_in_messages_is_shown_not_obeyed(tmp_path: Path) -> None:
    """Markup (`[/x]`) and an ANSI escape in a trace line, quoted by a --strict error, a
    warning's examples, the import's malformed lines: printed as text, never parsed or sent raw."""
    src = tmp_path / "host[1].txt"
    src.write_text(host_trace(2) + " CPU 0/KVM-10 [001] 5.000030: kvm_exit: [/x] \x1b[31m\n")
    warned = run("kvm-stat", src)
    assert warned.exit_code == 0 and "Traceback" not in warned.output, warned.output
    assert "[/x] \\x1b[31m" in warned.output and "\x1b" not in warned.output
    strict = run("kvm-stat", src, "--strict")
    assert strict.exit_code == 2 and error_lines(strict) == [
        f"error: {src}:5: kvm_exit: unknown rendering or reason, or a number out of range: "
        "CPU 0/KVM-10 [001] 5.000030: kvm_exit: [/x] \\x1b[31m (--strict)"]
    guest = tmp_path / "guest[2].txt"
    guest.write_text(guest_trace(4) + "not [/x] a \x1b[31m line\n")
    imported = run("import", guest, "-o", tmp_path / "g.parquet")
    assert imported.exit_code == 0 and f"{guest}:5: not an event line" in imported.output, imported.output
    assert "\x1b" not in imported.output and str(tmp_path / "g.parquet") in imported.output


@pytest.mark.parametrize("command", ["import", "kvm-stat"])
def test_a_pipe_is_refused_not_read_short(tmp_path: Path, command: str) -> None:
    """A named pipe (as `<(xz -dc …)` gives) would lose the bytes the format sniffing read
    before the file is read: refused in one line, nothing written, and never opened (no writer:
    opening it would block)."""
    import os

    fifo = tmp_path / "trace.txt"
    os.mkfifo(fifo)
    out = tmp_path / "out.parquet"
    r = run(command, fifo, *(["-o", out] if command == "import" else []))
    assert r.exit_code != 0
    assert f"{fifo}: not a regular file (a named pipe): give the file itself" in r.output
    assert "Traceback" not in r.output and not out.exists()
