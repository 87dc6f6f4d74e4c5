"""Counts × unit costs → modelled time, by cost category.

virtualized time = native time + Σ count × unit cost (spread over the trace's vCPUs).
QEMU's instruction slowdown is itself a driver (emulated_ns, priced as slowdown − 1
per native ns), so the whole formula is linear in the unit costs, which is what
calibration fits. Counts are kept in the results, so re-pricing never re-replays.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pipeline.config.cost_profile import Profile


@dataclass(frozen=True)
class Priced:
    """Modelled time of one (trace, mode), in ns."""

    native_ns: float
    virt_ns: float
    by_category: dict[str, float]  # overhead ns per category, per vCPU-wall-time

    @property
    def slowdown(self) -> float:
        return self.virt_ns / self.native_ns


def overhead_by_category(counts: Mapping[str, int], profile: Profile) -> dict[str, float]:
    """Σ count × unit cost per category, in CPU ns (summed over vCPUs)."""
    out = dict.fromkeys(profile.categories(), 0.0)
    for driver, cost in profile.costs.items():
        out[cost.category] += counts.get(driver, 0) * cost.ns
    return out


def price(counts: Mapping[str, int], native_ns: int, cpus: int, profile: Profile) -> Priced:
    """Price one trace under one mode. Overhead is CPU time; it is spread evenly over
    the trace's vCPUs to give wall time (exact for the uniprocessor seed traces)."""
    by_cat = {k: v / cpus for k, v in overhead_by_category(counts, profile).items()}
    return Priced(native_ns=float(native_ns), virt_ns=native_ns + sum(by_cat.values()), by_category=by_cat)
