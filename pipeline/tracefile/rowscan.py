"""The row checks of trace format v1 (traces/README.md, checks 10-13) in one compiled pass.

format.RowChecker calls it once per batch. The numpy checks (a comparison, np.isin, a
flatnonzero and diff per vCPU: temporaries of every row) cost as much as decoding the
columns; one compiled call finds the first bad row of every check, with reductions LLVM
vectorises for a batch of one vCPU (the common case: each check reads its column once at
memory speed) and a row-by-row loop for a batch of several. It counts each vCPU's rows too,
which tells the reader when a batch is all one vCPU and can be passed on as views.
"""
from __future__ import annotations

import numpy as np
from numba import njit

NO_ROW = -1                                # a check no row of the batch fails
BAD_KIND, BAD_CPU, BAD_TIME = range(3)     # first_bad[...]; per-vCPU time order follows
UNLISTED = -1                              # slot_of[cpu] of a vCPU the metadata does not list


def slots(cpus: tuple[int, ...]) -> np.ndarray:
    """cpu value -> its index in the metadata `cpus` (UNLISTED if absent), for every uint16:
    a lookup per row instead of np.isin's sort."""
    slot_of = np.full(1 << 16, UNLISTED, dtype=np.int64)
    slot_of[list(cpus)] = np.arange(len(cpus))
    return slot_of


compiled = njit(cache=True, nogil=True)


@compiled
def scan(t: np.ndarray, cpu: np.ndarray, kind: np.ndarray, max_kind: int, native_ns: int,
         slot_of: np.ndarray, last_t: np.ndarray, rows: np.ndarray) -> np.ndarray:  # pragma: no cover (compiled)
    """First bad row of each check in the batch (NO_ROW if none): [kind, cpu, time range,
    then time order per slot]. `max_kind` is an argument, not the global, because numba's
    cache would not notice a new kind in replay/kinds.py. `last_t[slot]` (each vCPU's
    latest time before the batch) and `rows[slot]` (its row count) are carried on in place,
    so order is checked across batch edges; after a bad row they no longer matter (the
    trace is rejected). Each check is a reduction LLVM vectorises, and only a batch that
    fails it is searched for the row."""
    first_bad = np.full(3 + len(last_t), NO_ROW, dtype=np.int64)
    if len(t) == 0:
        return first_bad
    if kind.max() > max_kind:
        first_bad[BAD_KIND] = np.argmax(kind > max_kind)
    if t.min() < 0 or t.max() > native_ns:
        first_bad[BAD_TIME] = np.argmax((t < 0) | (t > native_ns))
    one = slot_of[cpu[0]]
    if one != UNLISTED and cpu.min() == cpu.max():
        first_bad[3 + one] = _first_decrease(t, last_t[one])
        last_t[one] = t[-1]
        rows[one] += len(t)
    else:
        _scan_cpus(t, cpu, slot_of, last_t, rows, first_bad)
    return first_bad


@compiled
def _first_decrease(t: np.ndarray, last: int) -> int:  # pragma: no cover (compiled)
    """The first row of a one-vCPU batch earlier than the row before it (`last` before the first)."""
    decreases = 0
    for i in range(1, len(t)):
        decreases += t[i] < t[i - 1]
    if t[0] < last:
        return 0
    if decreases == 0:
        return NO_ROW
    for i in range(1, len(t)):
        if t[i] < t[i - 1]:
            return i
    return NO_ROW


@compiled
def _scan_cpus(t: np.ndarray, cpu: np.ndarray, slot_of: np.ndarray, last_t: np.ndarray, rows: np.ndarray,
               first_bad: np.ndarray) -> None:  # pragma: no cover (compiled)
    """A batch of several vCPUs (or an unlisted one): row by row, each against its vCPU's last."""
    for i in range(len(t)):
        s = slot_of[cpu[i]]
        if s == UNLISTED:
            if first_bad[BAD_CPU] == NO_ROW:
                first_bad[BAD_CPU] = i
            continue
        if t[i] < last_t[s] and first_bad[3 + s] == NO_ROW:
            first_bad[3 + s] = i
        last_t[s] = t[i]
        rows[s] += 1
