"""`pipeline import BIG -o OUT --split`: one big text recording's first pass parsed in byte
ranges as Dask tasks, into the same trace, bit for bit, as the import without it.

What can run apart, and what cannot. Parsing a line (`ChunkParser.parse_lines`: the
compiled scanner and the payload patterns, about two thirds of an import's time) depends on
nothing before it but four things, each made exact here:

* its line number (in every problem's "file:line"): the ranges' lines are counted first,
  as tasks, so each range is parsed knowing its first line;
* whether a wrapped free-text payload continues into it: a range starts only at an event
  line (one the parser itself takes for one), before which nothing is a continuation;
* the strings the columns refer to by number (event names, symbols): a range numbers its
  own, and the driver renumbers them into the recording's, in range order (the numbers are
  never written, only the strings: rows and metadata do not depend on them);
* the time order per CPU (`clock`): checked by the driver, in order (`ChunkParser.order`).

Everything after parsing needs the recording so far, in order, and stays on the driver as in
the import without --split: the tasks' pid -> tgid, the recording-wide facts, the idle
entries' lengths (an entry may end in a later range), the spool; then the whole second pass
(address spaces, touches waiting for their CR3 write, timer armings, device rules), which
needs the first pass's facts of the whole recording before its first row. A compressed file
has no byte ranges to seek to: --split refuses it. At most `workers` x 2 ranges are in
flight, so memory stays bounded as without --split.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from dask.distributed import Client, Future

from pipeline.run.runner import one_line
from pipeline.tracefile.importers import CHUNK_BYTES, FORMATS, ChunkSource, ImportFailed
from pipeline.tracefile.importers import chunk as ck
from pipeline.tracefile.importers.formats import Format
from pipeline.tracefile.textlines import CODECS, TraceFileError, normalise, read_range

RANGE_BYTES = 32 << 20      # text parsed by one task
SEARCH_BYTES = 1 << 20      # how far past a cut an event line is looked for
# The fields that hold a symbol (`ck.Names`) for the roles that carry one.
_SYMBOL_FIELDS = (("a", (ck.R_MARK, ck.R_WORK_QUEUE, ck.R_WORK_START, ck.R_NAPI)), ("b", (ck.R_IRQ,)))


class Parsed(NamedTuple):
    """A range's chunks, and the strings their numbers refer to, numbered in the range."""
    chunks: list[ck.Chunk]
    sizes: list[int]              # bytes of each chunk's text
    events: list[str]             # event names, by `Chunk.event`
    symbols: list[str]
    irqs: dict[int, str]


def split_reader(client: Client, range_bytes: int = RANGE_BYTES, chunk_bytes: int = CHUNK_BYTES) -> ChunkSource:
    """The ChunkSource (`import_files`) that parses each file's ranges on `client`'s workers."""
    inflight = 2 * max(len(client.scheduler_info().get("workers", {})), 1)

    def chunks(paths: list[Path], fmts: list[Format], names: ck.Names) -> Iterator[tuple[ck.ChunkParser, ck.Chunk, int]]:
        clock: dict[int, int] = {}
        for path, fmt in zip(paths, fmts):
            if path.suffix in CODECS:
                raise ImportFailed(f"{path}: --split reads byte ranges of uncompressed text; decompress it first")
            parser = ck.ChunkParser(fmt, str(path), clock, names)
            for parsed in _parsed(client, path, fmt, range_bytes, chunk_bytes, inflight):
                yield from _renumbered(parser, parsed)
    return chunks


def _parsed(client: Client, path: Path, fmt: Format, range_bytes: int, chunk_bytes: int,
            inflight: int) -> Iterator[Parsed]:
    """The file's ranges parsed on the workers, in order, at most `inflight` at a time."""
    starts = cuts(path, fmt, range_bytes)
    ends = starts[1:] + [path.stat().st_size]
    where = path.absolute()    # what the workers open (a remote one has no working directory of ours)
    counts = [_value(f, path) for f in client.map(count_lines, [where] * len(starts), starts, ends, pure=False)]
    first = np.cumsum([1] + counts[:-1]).tolist()
    pending: deque[Future] = deque()
    for start, end, line in zip(starts, ends, first):
        pending.append(client.submit(parse_range, where, str(path), fmt.name, start, end, line, chunk_bytes, pure=False))
        if len(pending) >= inflight:
            yield _value(pending.popleft(), path)
    while pending:
        yield _value(pending.popleft(), path)


def _value(future: Future, path: Path) -> Any:
    """A task's value; its failure line (or a lost worker's) as ImportFailed."""
    try:
        value = future.result()
    except Exception as e:  # noqa: BLE001 - a lost worker, after Dask's reruns: the import fails with one line
        raise ImportFailed(one_line(f"{path}: a range task failed: {type(e).__name__}: {e}")) from None
    if isinstance(value, str):
        raise ImportFailed(value)
    return value


def cuts(path: Path, fmt: Format, range_bytes: int) -> list[int]:
    """Where the ranges start: 0, then the first event line at or after each multiple of
    `range_bytes` (a cut with none within SEARCH_BYTES is left out: its range is longer)."""
    size = path.stat().st_size
    starts = [0]
    for approx in range(range_bytes, size, range_bytes):
        at = _event_line_after(path, fmt, approx)
        if at is not None and at > starts[-1]:
            starts.append(at)
    return starts


def _event_line_after(path: Path, fmt: Format, offset: int) -> int | None:
    """The offset of the first line starting after `offset` that the parser takes for an
    event line (nothing before it can then be a payload's continuation)."""
    data = read_range(path, offset, offset + SEARCH_BYTES)
    at = data.find(b"\n") + 1
    while 0 < at < len(data):
        end = data.find(b"\n", at) + 1
        if not end:
            return None
        if ck.ChunkParser(fmt, str(path), {}).parse_lines(normalise(data[at:end])).event[0] >= 0:
            return offset + at
        at = end
    return None


def count_lines(path: Path, start: int, end: int) -> int | str:
    """The Dask task that counts a range's lines (its failure as a line, never raised)."""
    try:
        return normalise(read_range(path, start, end)).count(b"\n")
    except TraceFileError as e:
        return str(e)


def parse_range(path: Path, name: str, fmt: str, start: int, end: int, first_line: int,
                chunk_bytes: int) -> Parsed | str:
    """The Dask task: a range's lines (`ChunkParser.parse_lines`) in chunks of about
    `chunk_bytes`, numbered from `first_line`, problems naming the file `name` (as given on
    the command line); its failure as a line, never raised."""
    try:
        data = normalise(read_range(path, start, end))
    except TraceFileError as e:
        return str(e)
    parser = ck.ChunkParser(FORMATS[fmt], name, {})
    parser.next_line = first_line
    pieces = list(_pieces(data, chunk_bytes))
    chunks = [parser.parse_lines(piece) for piece in pieces]
    return Parsed(chunks, [len(p) for p in pieces], [nm.event for nm in parser.names], parser.strings.symbols,
                  parser.strings.irqs)


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in pieces of whole lines of about `size` bytes (one longer line: that line)."""
    at = 0
    while at < len(data):
        cut = len(data) if at + size >= len(data) else data.rfind(b"\n", at, at + size) + 1
        if cut <= at:
            cut = data.find(b"\n", at + size) + 1 or len(data)
        yield data[at:cut]
        at = cut


def _renumbered(parser: ck.ChunkParser, parsed: Parsed) -> Iterator[tuple[ck.ChunkParser, ck.Chunk, int]]:
    """A range's chunks with the recording's numbers for its strings, time-ordered by the
    file's parser (which carries the clock)."""
    events = np.array([parser.events.intern(e) for e in parsed.events] + [-1], np.int32)   # [-1]: non-events
    symbols = np.array([parser.strings.intern(s) for s in parsed.symbols] + [-1], np.int64)
    for irq, name in parsed.irqs.items():
        parser.strings.irqs.setdefault(irq, name)     # named by its first handler line in the file
    for chunk, size in zip(parsed.chunks, parsed.sizes):
        chunk.event = events[chunk.event]
        for column, roles in _SYMBOL_FIELDS:
            rows = np.isin(chunk.role, roles)
            values = getattr(chunk, column)
            values[rows] = symbols[values[rows]]
        parser.order(chunk)
        yield parser, chunk, size
