"""The line prefix shared by text traces: ftrace, `trace-cmd report` (-N, -R), `perf script`.

Every event line of these tools starts the same way, `TASK-PID [CPU] TIMESTAMP: EVENT: PAYLOAD`,
with variations that real files do show (see MODEL.md §5):

    ftrace          `     Web Content-2711  [003] d... 26186.336632: sched_waking: comm=…`
    atrace (TGID)   `ksoftirqd/1-12    (   12) [001] d..3 214168.479967: sched_switch: …`
    trace-cmd       ` qemu-system-x86-533825 [005]303280081981165: kvm_exit: reason HLT …`
    perf script     `perf 28039 [000] 194010.024771: cycles: ` / `swapper     0 194010.024867: sched:sched_switch: …`

`parse_line` is the specification of the prefix: both readers of text traces (`importers/`:
the guest-side import and kvm-stat's host-side reader) scan it with the compiled scanner
(`importers/linescan.py`, equal by test) and hand the lines it is unsure of to `parse_line`;
they parse only the payload themselves. `parse_line` returns None for everything that is not
an event line: headers, `cpus=`, `version =`, `CPU 3 is empty`, blank lines, callchains and
the wrapped continuation lines of long bprint payloads. Opening (and decompressing) trace files lives
here too, so no importer opens files on its own.
"""
from __future__ import annotations

import bz2
import gzip
import io
import stat
import lzma
import re
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

# The prefix, anchored on `-PID [CPU] TIMESTAMP:` (or perf's `COMM PID [CPU] TIMESTAMP:`).
# The task name is matched lazily: it may hold spaces and dashes (`CPU 0/KVM`,
# `kworker/2:0H`, `my-tool-2`), and the first place where everything after it fits the
# strict `PID [CPU] TS:` shape is the task's own `-PID`; a greedy match could instead run
# into a payload, which is free text. Parts:
#   pid      `-1234` (ftrace, trace-cmd) or ` 1234` (perf script), perf may print `pid/tid`
#   tgid     atrace's `(  12)` / `(-----)` column (unknown)
#   cpu      `[005]`, absent in some perf script output
#   flags    ftrace/trace-cmd latency flags `d.h.`, `dN..`, `d..2.`, skipped
#   ts       `26186.336632` (seconds), or an integer count of the trace clock that
#            trace-cmd glues to the CPU field when it is wide: `[005]303280081900681:`
PREFIX_RE = re.compile(
    r"^\s*(?P<comm>.*?)(?:-|\s+)(?P<pid>\d+)(?:/(?P<tid>\d+))?"
    r"\s+(?:\(\s*(?:(?P<tgid>\d+)|-+)\)\s+)?"
    r"(?:\[(?P<cpu>\d+)\]\s*)?"
    r"(?:(?P<flags>[.a-zA-Z0-9]{4,5})\s+)?"
    r"(?P<ts>\d+(?:\.\d+)?):\s+"
    r"(?P<rest>.*)$"
)
# After the prefix: perf may print a sample period before the event (`250000 cycles:`);
# the event name may carry a subsystem (`sched:sched_switch:`, `kvm:kvm_exit:`) and may start
# with a digit (the kernel's 9p events, include/trace/events/9p.h: `9p_client_req:`).
EVENT_RE = re.compile(r"^(?:\d+\s+)?(?P<event>[A-Za-z0-9_][\w.:-]*?):(?:\s+(?P<payload>.*))?$")
# ftrace's syscall tracer writes `sys_ioctl(fd: ff, …)` / `sys_ioctl -> 0x0` with no `event:`.
SYSCALL_RE = re.compile(r"^(?P<event>sys_\w+)(?P<payload>(?:\(| -> ).*)$")

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class TraceLine:
    """One event line. `ts` is an integer in `ts_unit`: "ns" when the trace printed
    seconds (sec.usec or sec.nsec, converted exactly), "count" when it printed an integer
    count of the trace clock (raw TSC cycles for x86-tsc, nanoseconds for a ns clock): only
    the user knows which, so converting counts is left to the caller."""
    comm: str
    pid: int
    cpu: int | None
    ts: int
    ts_unit: str
    event: str      # as printed, subsystem included if perf printed one
    payload: str
    tgid: int | None = None   # process id where printed: atrace's TGID column, perf's `pid/tid`

    @property
    def name(self) -> str:
        """The event name without subsystem: `kvm:kvm_exit` -> `kvm_exit`."""
        return self.event.rsplit(":", 1)[-1]


def parse_timestamp(text: str) -> tuple[int, str]:
    """(value, unit) of a printed timestamp; seconds become exact integer nanoseconds
    (floats would lose the ns digits of a day-long uptime)."""
    if "." not in text:
        return int(text), "count"
    sec, frac = text.split(".", 1)
    return int(sec) * NS_PER_S + int(frac.ljust(9, "0")[:9]), "ns"


def _event_and_payload(rest: str) -> tuple[str, str] | None:
    m = EVENT_RE.match(rest) or SYSCALL_RE.match(rest)
    if m is None:
        return None
    return m["event"], (m["payload"] or "").strip()


def parse_line(line: str) -> TraceLine | None:
    """The line's TraceLine, or None if it is not an event line."""
    if not line or line[0] == "#" or line.startswith("\t"):
        return None   # header, or a perf callchain frame
    m = PREFIX_RE.match(line.rstrip("\n"))
    if m is None:
        return None
    found = _event_and_payload(m["rest"])
    if found is None:
        return None
    ts, unit = parse_timestamp(m["ts"])
    pid = int(m["tid"] or m["pid"])  # perf's pid/tid: the thread is what runs a vCPU
    cpu = int(m["cpu"]) if m["cpu"] is not None else None
    tgid = m["tgid"] or (m["pid"] if m["tid"] else None)
    return TraceLine(m["comm"].strip(), pid, cpu, ts, unit, found[0], found[1],
                     int(tgid) if tgid is not None else None)


class TraceFileError(ValueError):
    """A file that cannot be read as a text trace: missing, binary, or not decompressible.
    str() is one line naming the file, so every command prints it as it is (and click never
    sees the EOFError of a truncated stream, which it would take for a ^D and print `Aborted.`)."""


class NotText(TraceFileError):
    """The file is binary, not a text trace."""


@dataclass(frozen=True)
class Codec:
    """A compression the readers undo, chosen by the file's suffix."""
    name: str
    open: Callable[..., Any]     # gzip.open and the like: (file, mode) -> a binary stream
    magic: bytes = b""   # how every such file starts; b"" when the format has no magic bytes


CODECS = {".gz": Codec("gzip", gzip.open, b"\x1f\x8b"), ".xz": Codec("xz", lzma.open, b"\xfd7zXZ\0"),
          ".lzma": Codec("lzma", lzma.open), ".bz2": Codec("bzip2", bz2.open, b"BZh")}
_BINARY_MAGIC = {b"\x17\x08Dtracing": "a trace-cmd .dat file: render it with `trace-cmd report` first",
                 b"PERFILE2": "a perf.data file: render it with `perf script` first"}
# What opening and decompressing raise: OSError with an errno is the file system's (missing
# file, directory, I/O error); gzip's BadGzipFile and bz2's "Invalid data stream" are
# OSErrors without one; a stream that ends early raises EOFError in all three codecs.
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)


def _failure(path: Path, e: Exception) -> TraceFileError:
    """The one-line error for what reading `path` raised."""
    codec = CODECS.get(path.suffix)
    if codec is None or (isinstance(e, OSError) and e.errno is not None):
        return TraceFileError(f"{path}: {getattr(e, 'strerror', None) or e}")
    if isinstance(e, EOFError):
        return TraceFileError(f"{path}: truncated {codec.name} data (the file ends mid-stream)")
    return TraceFileError(f"{path}: corrupt {codec.name} data ({e})")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any error of opening or decompressing `path` into its TraceFileError."""
    try:
        yield
    except _READ_ERRORS as e:
        raise _failure(path, e) from None


def _decoded(path: Path, raw: BinaryIO) -> BinaryIO:
    """`raw`, decompressed by the file's suffix; TraceFileError if it does not start like that format."""
    codec = CODECS.get(path.suffix)
    if codec is None:
        return raw
    head = raw.read(len(codec.magic))
    if head != codec.magic:
        if codec.magic.startswith(head):
            raise EOFError   # empty, or ends inside the magic: truncated, as _failure says
        raise TraceFileError(f"{path}: not {codec.name} data (named {path.suffix}, but does not "
                             f"start with {codec.name}'s magic bytes)")
    raw.seek(0)
    return codec.open(raw)


def kind_of(path: Path) -> str:
    """What a path that is not a regular file is, in words."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a broken link"
    return {stat.S_IFIFO: "a named pipe", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "a device")


def sniff(path: Path) -> None:
    """Raise TraceFileError (NotText with a hint, if the first bytes are binary) unless the
    file opens, decompresses and starts like text. A pipe (`<(xz -dc …)`) is refused: the
    sniffed bytes would be gone from it when the file is read, so the trace would silently
    lose its first lines."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise TraceFileError(f"{path}: not a regular file ({kind_of(path)}): give the file itself "
                             "(.gz, .xz and .bz2 are read as they are)")
    with _reading(path), open(path, "rb") as raw, _decoded(path, raw) as stream:
        head = stream.read(4096)
    for magic, hint in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise NotText(f"{path}: {hint}")
    if b"\0" in head:
        raise NotText(f"{path}: binary file, not a text trace")


def read_chunks(path: Path, size: int = 4 << 20,
                progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """The file's bytes (decompressed by suffix) in pieces of whole lines, about `size` each,
    with newlines normalised as `open_lines` does (`\\r\\n` and `\\r` become `\\n`); the last
    piece may lack the final newline. `progress` is told how many bytes of the file itself
    (compressed, if it is) each piece took. Memory stays bounded by `size` plus the longest line.
    Any error reading the file is a TraceFileError."""
    sniff(path)
    with _reading(path), open(path, "rb") as raw, _decoded(path, raw) as stream:
        carry, told = b"", 0
        while True:
            block = stream.read(size)
            data, carry = carry + block, b""
            if block and data.endswith(b"\r"):
                data, carry = data[:-1], b"\r"      # may be the first half of a \r\n
            data = normalise(data)
            cut = data.rfind(b"\n") + 1 if block else len(data)
            carry = data[cut:] + carry
            if progress is not None:
                progress(raw.tell() - told)
                told = raw.tell()
            if cut:
                yield data[:cut]
            if not block:
                return


def normalise(data: bytes) -> bytes:
    """Line ends as `open_lines` reads them: `\\r\\n` and `\\r` become `\\n`."""
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n") if b"\r" in data else data


def read_range(path: Path, start: int, end: int) -> bytes:
    """Bytes start..end of an uncompressed file as they are (offsets stay file offsets;
    `normalise` them to read lines). Any error reading it is a TraceFileError."""
    with _reading(path), open(path, "rb") as raw:
        raw.seek(start)
        return raw.read(end - start)


def open_lines(path: Path) -> Iterator[str]:
    """The file's lines (decompressed by suffix); undecodable bytes become U+FFFD. Any
    error reading the file is a TraceFileError."""
    sniff(path)
    with _reading(path), open(path, "rb") as raw, \
            io.TextIOWrapper(_decoded(path, raw), encoding="utf-8", errors="replace") as text:
        yield from text
