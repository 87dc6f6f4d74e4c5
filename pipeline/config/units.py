"""The units a summary row is shown and compared in: the whole run's time (s), time per
op (µs), or, for a guest that mostly idles, the host CPU it uses (% of its span).

Each is linear in the modelled overhead, which is what lets calibration fit cells of any
unit with one linear least squares: value = (virt_ns − offset) / scale, where virt_ns =
native_ns + overhead / cpus. For host CPU the offset is the idle time (per vCPU): the
guest's halts absorb the overhead, so what grows is the CPU it keeps busy, not its span.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.text import printable

Row = Mapping[str, Any]   # a summary row (or a sweep row with the same columns)


@dataclass(frozen=True)
class Unit:
    name: str        # as reference TOMLs spell it
    headline: str    # the trace headline whose reports use this unit

    def scale(self, row: Row) -> float:
        """ns of (per-vCPU) modelled time per one of this unit."""
        if self.headline == "per_op":
            return 1e3 * row["ops"]
        if self.headline == "cpu":
            return row["native_ns"] / 100.0
        return 1e9

    def offset(self, row: Row) -> float:
        """ns of the row's time that this unit leaves out (idle time, for host CPU)."""
        return row["idle_ns"] / row["cpus"] if self.headline == "cpu" else 0.0

    def value(self, row: Row, virt_ns: float | None = None) -> float:
        """The row's modelled figure in this unit, or that of `virt_ns` in the row's trace."""
        return ((row["virt_ns"] if virt_ns is None else virt_ns) - self.offset(row)) / self.scale(row)

    def native_value(self, row: Row) -> float:
        """The trace's own (native) part of the figure, in this unit."""
        return self.value(row, row["native_ns"])

    def virt_ns(self, value: float, row: Row) -> float:
        """The virt_ns that `value` of this unit stands for in `row`'s trace (value's inverse)."""
        return value * self.scale(row) + self.offset(row)

    def linear(self, row: Row) -> tuple[float, float]:
        """(native part, weight): value = native part + weight × Σ count × unit cost, the
        counts summed over vCPUs. Calibration fits in this form."""
        return self.native_value(row), 1.0 / (row["cpus"] * self.scale(row))

    def label(self, op_unit: str) -> str:
        """E.g. "µs per message"; `op_unit` comes from the trace file (control characters escaped)."""
        return {"per_op": f"µs per {printable(op_unit)}", "cpu": "% host CPU"}.get(self.headline, self.name)


UNITS: dict[str, Unit] = {u.name: u for u in (Unit("s", "total"), Unit("us/op", "per_op"), Unit("%cpu", "cpu"))}
BY_HEADLINE: dict[str, Unit] = {u.headline: u for u in UNITS.values()}
