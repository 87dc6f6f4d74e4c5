"""Fit unit costs to reference measurements, using the counts already in a summary.

Each reference cell is linear in the unit costs (pipeline/config/units.py):
    measured ≈ native part + Σ_d weight × count_d × cost_d
(weight 1/vCPUs for seconds, per op too for per-op cells, per span for host CPU), so the fit
is a bounded linear least squares (scipy.optimize.lsq_linear) over the costs, each kept
inside its plausible range from the profile. Residuals are relative errors, so a 0.36 s
cell weighs as much as a 35 s one. A weak pull towards each cost's starting figure
(PRIOR_WEIGHT, scaled by how much the cells see that cost) keeps costs the data cannot
see where the profile put them; the SVD of the column-normalised design matrix says
which those are, and they are reported as not identifiable rather than passed off as fitted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.optimize import lsq_linear

from pipeline.config.cost_profile import Profile, UnitCost
from pipeline.config.measurements import Cell, Reference
from pipeline.config.units import UNITS

PRIOR_WEIGHT = 1e-6     # relative weight of "stay at the starting figure" per cost
# Directions whose singular value is below this × the largest are too weakly determined
# to fit (condition number > 100): they count as null space, and the prior holds them.
NULL_TOLERANCE = 1e-2
IDENTIFIED = 0.1        # a cost whose null-space component exceeds this is not identified


class CalibrationError(Exception):
    """The results and the reference do not fit together (one line, says what is missing)."""


@dataclass(frozen=True)
class Row:
    """One reference cell matched to a replayed (trace, mode): measured ≈ native + coeffs · costs,
    all in the cell's unit."""

    cell: Cell
    trace: str
    native: float               # the native part, in the cell's unit
    coeffs: dict[str, float]    # driver -> weighted count: the cell's unit per ns of that cost

    def predict(self, costs: dict[str, float]) -> float:
        return self.native + sum(n * costs[d] for d, n in self.coeffs.items())


@dataclass(frozen=True)
class FittedCost:
    driver: str
    start: float
    fitted: float
    cost: UnitCost       # range, category, source
    at_bound: str        # "low", "high" or ""
    identifiable: bool
    seen: bool           # counted in any fitted cell at all


@dataclass(frozen=True)
class Prediction:
    workload: str
    mode: str
    unit: str
    measured: float      # as published, in `unit`
    predicted: float
    role: str            # "fit" or "held-out"

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted - self.measured) / self.measured


def design(summary: pl.DataFrame, reference: Reference, profile: Profile) -> list[Row]:
    """Every reference cell that has a replayed (trace, mode) in the summary."""
    return [_row(cell, r, profile) for cell, r in _matches(summary, reference)]


def modelled(summary: pl.DataFrame, reference: Reference, fitted_on: tuple[str, ...]) -> list[Prediction]:
    """Every reference cell beside the value the summary models for it, under the profile
    that priced the summary (no fit): how far that profile is from the measurements.
    Cells of `fitted_on` (the profile's own fit, if any) are in-sample."""
    return [Prediction(cell.workload, cell.mode, cell.unit, cell.value,
                       UNITS[cell.unit].value(r),
                       "fit" if cell.workload in fitted_on else "held-out")
            for cell, r in _matches(summary, reference)]


def _matches(summary: pl.DataFrame, reference: Reference) -> list[tuple[Cell, dict]]:
    """(cell, summary row) for each reference cell with a replayed (workload, mode)."""
    ok = summary.filter(pl.col("status") == "ok")
    out = []
    for cell in reference.cells:
        match = ok.filter((pl.col("workload") == cell.workload) & (pl.col("mode") == cell.mode))
        if len(match):
            out.append((cell, one_trace(match, cell.workload)))
    return out


def one_trace(match: pl.DataFrame, workload: str) -> dict:
    """The trace named like the workload, else the only one; several is ambiguous."""
    named = match.filter(pl.col("trace") == workload)
    if len(named) == 1 or len(match) == 1:
        return (named if len(named) == 1 else match).row(0, named=True)
    raise CalibrationError(f"workload {workload!r} has several traces {sorted(match['trace'])}; "
                           f"name one of them {workload!r} or calibrate on a results folder with one")


def _row(cell: Cell, r: dict, profile: Profile) -> Row:
    native, weight = UNITS[cell.unit].linear(r)
    return Row(cell, r["trace"], native, {d: r[d] * weight for d in profile.costs if r.get(d)})


def fit(rows: list[Row], profile: Profile) -> dict[str, FittedCost]:
    """Bounded least squares of the relative errors of `rows` over every unit cost."""
    if not rows:
        raise CalibrationError("no reference cell matches a replayed (workload, mode) in the results")
    drivers = list(profile.costs)
    scale = np.array([abs(profile.costs[d].ns) or 1.0 for d in drivers])
    data = np.array([[r.coeffs.get(d, 0.0) * s / r.cell.value for d, s in zip(drivers, scale)] for r in rows])
    target = np.array([(r.cell.value - r.native) / r.cell.value for r in rows])
    start = np.array([profile.costs[d].ns for d in drivers]) / scale
    norms = np.linalg.norm(data, axis=0)
    norms[norms == 0] = 1.0  # a cost no cell counts: only the prior holds it
    prior = np.sqrt(PRIOR_WEIGHT) * np.diag(norms)
    bounds = (np.array([profile.costs[d].low for d in drivers]) / scale,
              np.array([profile.costs[d].high for d in drivers]) / scale)
    x = lsq_linear(np.vstack([data, prior]), np.concatenate([target, prior @ start]), bounds=bounds).x
    free = _identifiable(data / norms)
    return {d: _fitted(profile.costs[d], d, x[i] * scale[i], free[i], bool(data[:, i].any()))
            for i, d in enumerate(drivers)}


def _identifiable(data: np.ndarray) -> np.ndarray:
    """Costs outside the (near-)null space of the column-normalised design matrix:
    what the fitted cells can tell apart, however small each one's share."""
    _, s, vt = np.linalg.svd(data, full_matrices=True)
    rank = int((s > NULL_TOLERANCE * s.max()).sum()) if s.size else 0
    null = vt[rank:]
    return np.linalg.norm(null, axis=0) < IDENTIFIED if null.size else np.ones(data.shape[1], bool)


def _fitted(cost: UnitCost, driver: str, value: float, identifiable: bool, seen: bool) -> FittedCost:
    value = min(max(value, cost.low), cost.high)
    width = cost.high - cost.low
    bound = "low" if value - cost.low < 1e-6 * width else "high" if cost.high - value < 1e-6 * width else ""
    return FittedCost(driver, cost.ns, float(value), cost, bound, bool(identifiable and seen), bool(seen))


def predict(rows: list[Row], costs: dict[str, float], fitted_on: set[str]) -> list[Prediction]:
    return [Prediction(r.cell.workload, r.cell.mode, r.cell.unit, r.cell.value,
                       r.predict(costs),
                       "fit" if r.cell.workload in fitted_on else "held-out") for r in rows]


def calibrate(rows: list[Row], profile: Profile, fit_on: list[str]) -> tuple[dict[str, FittedCost], list[Prediction]]:
    """Fit on the cells of `fit_on`; predict every cell (the others are held out)."""
    missing = sorted(set(fit_on) - {r.cell.workload for r in rows})
    if missing:
        raise CalibrationError(f"--fit names workload(s) {missing} with no replayed trace and reference cell")
    fitted = fit([r for r in rows if r.cell.workload in fit_on], profile)
    return fitted, predict(rows, {d: f.fitted for d, f in fitted.items()}, set(fit_on))


def leave_one_out(rows: list[Row], profile: Profile) -> list[Prediction]:
    """For each workload: fit on all the others, predict it."""
    workloads = list(dict.fromkeys(r.cell.workload for r in rows))
    out = []
    for held in workloads:
        others = [w for w in workloads if w != held]
        _, predictions = calibrate(rows, profile, others)
        out += [p for p in predictions if p.workload == held]
    return out


def is_native(p: Prediction) -> bool:
    """Native cells have no cost in them: they check the traces, not the fit."""
    return p.mode == "native"


def cost_frame(costs: dict[str, FittedCost]) -> pl.DataFrame:
    return pl.DataFrame([{
        "driver": f.driver, "category": f.cost.category, "start_ns": f.start, "fitted_ns": f.fitted,
        "low_ns": f.cost.low, "high_ns": f.cost.high, "at_bound": f.at_bound,
        "identifiable": f.identifiable, "counted_in_fit": f.seen, "source": f.cost.source,
    } for f in costs.values()])


def prediction_frame(predictions: list[Prediction]) -> pl.DataFrame:
    return pl.DataFrame([{
        "workload": p.workload, "mode": p.mode, "unit": p.unit, "measured": p.measured,
        "predicted": p.predicted, "error_pct": p.error_pct, "role": p.role,
    } for p in predictions], schema_overrides={"measured": pl.Float64, "predicted": pl.Float64})


def ratio(predictions: list[Prediction], over: str, under: str) -> list[tuple[str, float, float]]:
    """Per workload, (measured, modelled) time of mode `over` ÷ mode `under`, e.g. the
    paravirt gain kvm-trunk ÷ kvm-paravirt."""
    cells = {(p.workload, p.mode): p for p in predictions}
    return [(w, cells[(w, over)].measured / cells[(w, under)].measured,
             cells[(w, over)].predicted / cells[(w, under)].predicted)
            for w in dict.fromkeys(p.workload for p in predictions)
            if (w, over) in cells and (w, under) in cells]
