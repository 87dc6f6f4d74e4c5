"""The columns of one shard of a trace, as the model consumes them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replay.kinds import MAX_KIND


@dataclass(frozen=True)
class Events:
    """Parallel columns, one row per guest event, in time order on one vCPU.

    `span_ns` is the native time the shard covers (busy + idle), which QEMU's
    translated-code driver needs; the model never reads timestamps otherwise."""

    kind: np.ndarray   # uint8, replay.kinds.Kind codes
    value: np.ndarray  # uint64, meaning per kind
    asid: np.ndarray   # uint32, address space current at the event
    arg: np.ndarray    # uint32, meaning per kind
    span_ns: int

    def __post_init__(self) -> None:
        check_columns(self.kind, self.value, self.asid, self.arg)

    def __len__(self) -> int:
        return len(self.kind)


def check_columns(kind: np.ndarray, value: np.ndarray, asid: np.ndarray, arg: np.ndarray,
                  first_row: int = 0) -> None:
    """Reject columns the model cannot index: unequal lengths, or a kind beyond replay.kinds
    (row numbers count from `first_row`, the batch's place in its vCPU's events)."""
    if not len(kind) == len(value) == len(asid) == len(arg):
        raise ValueError("event columns differ in length")
    bad = np.flatnonzero(kind > MAX_KIND)
    if bad.size:
        raise ValueError(f"row {first_row + int(bad[0])}: unknown event kind {int(kind[bad[0]])}")
