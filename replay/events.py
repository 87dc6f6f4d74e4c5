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
        n = len(self.kind)
        if any(len(c) != n for c in (self.value, self.asid, self.arg)):
            raise ValueError("event columns differ in length")
        bad = np.flatnonzero(self.kind > MAX_KIND)
        if bad.size:
            raise ValueError(f"row {int(bad[0])}: unknown event kind {int(self.kind[bad[0]])}")

    def __len__(self) -> int:
        return len(self.kind)
