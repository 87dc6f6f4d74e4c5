"""The line prefixes of one chunk of a text trace, as columns: the first step of every reader.

Both readers of text traces, the guest-side import (`chunk.ChunkParser`) and the host-side
KVM exit statistics (`kvm_exits`), start the same way: split a chunk of whole lines
(`textlines.read_chunks`), let the compiled scanner (`linescan.scan_lines`) parse each
line's `TASK-PID [CPU] TS: EVENT: PAYLOAD` prefix, and parse the lines it hands back with
the Python specification (`textlines.parse_line`). What they make of the lines differs, so
this module stops there: `scan_prefixes` gives the columns, `EventIndex` the event name of
each line without making a string per line.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from pipeline.tracefile.importers import linescan as ls
from pipeline.tracefile.textlines import TraceLine, parse_line

T = TypeVar("T")


@dataclass
class Prefixes:
    """The lines of one chunk and their prefixes (`linescan.scan_lines`' columns).

    `status` is IGNORE, OTHER (not an event line), EVENT (parsed by the scanner: its columns
    and `spans` are set) or PYTHON: a line the scanner handed back that `parse_line` read as
    an event, in `parsed` (its numbers may exceed int64, so its columns are left unset)."""
    data: bytes
    buf: np.ndarray               # data as uint8
    starts: np.ndarray            # int64 line starts and ends (without the newline)
    ends: np.ndarray
    status: np.ndarray            # int8, linescan IGNORE / OTHER / EVENT / PYTHON
    pid: np.ndarray               # int64, -1 where not printed
    tgid: np.ndarray
    cpu: np.ndarray
    ts: np.ndarray
    unit: np.ndarray              # int8, linescan NS_UNIT / COUNT_UNIT
    spans: np.ndarray             # (lines, 6): comm, event and payload start/end
    hashes: np.ndarray            # uint64 hash of the event name
    parsed: dict[int, TraceLine] = field(default_factory=dict)

    @property
    def lines(self) -> int:
        return len(self.starts)

    def text(self, row: int) -> str:
        """The line as text (undecodable bytes become U+FFFD, as `open_lines` reads them)."""
        return self.data[self.starts[row]:self.ends[row]].decode("utf-8", errors="replace")


def scan_prefixes(data: bytes) -> Prefixes:
    """The Prefixes of a chunk of whole lines (the last may lack its newline)."""
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 10)
    if not data.endswith(b"\n"):
        ends = np.append(ends, len(buf))
    ends = ends.astype(np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    n = len(ends)
    pid, tgid, cpu, ts = (np.full(n, -1, np.int64) for _ in range(4))
    p = Prefixes(data, buf, starts, ends, np.zeros(n, np.int8), pid, tgid, cpu, ts,
                 np.zeros(n, np.int8), np.zeros((n, 6), np.int64), np.zeros(n, np.uint64))
    ls.scan_lines(buf, starts, ends, p.status, p.pid, p.tgid, p.cpu, p.ts, p.unit, p.spans, p.hashes)
    for row in np.flatnonzero(p.status == ls.PYTHON).tolist():
        tl = parse_line(p.text(row))
        if tl is None:
            p.status[row] = ls.OTHER
        else:
            p.parsed[row] = tl
    return p


class EventIndex(Generic[T]):
    """The event names of one file, in the order first seen, each with what its reader
    makes of it (`describe(event)`); a line's name is found by the scanner's hash of it,
    so a chunk makes one string per distinct name, not one per line."""

    def __init__(self, describe: Callable[[str], T]) -> None:
        self.describe = describe
        self.names: list[T] = []
        self._by_event: dict[str, int] = {}
        self._by_hash: dict[int, int] = {}

    def intern(self, event: str) -> int:
        """The index of an event name (as printed, subsystem included)."""
        if event not in self._by_event:
            self._by_event[event] = len(self.names)
            self.names.append(self.describe(event))
        return self._by_event[event]

    def of_lines(self, p: Prefixes) -> np.ndarray:
        """int32 index per line of the scanner's event lines (status EVENT), -1 for the others."""
        event = np.full(p.lines, -1, np.int32)
        rows = np.flatnonzero(p.status == ls.EVENT)
        uniq, first, inverse = np.unique(p.hashes[rows], return_index=True, return_inverse=True)
        index = np.empty(len(uniq), np.int32)
        for k, (h, row) in enumerate(zip(uniq.tolist(), rows[first].tolist())):
            if h not in self._by_hash:
                self._by_hash[h] = self.intern(p.data[p.spans[row, 2]:p.spans[row, 3]].decode())
            index[k] = self._by_hash[h]
        event[rows] = index[inverse]
        return event
