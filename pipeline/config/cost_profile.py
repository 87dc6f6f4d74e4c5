"""Hardware cost profiles (configs/hardware/*.toml): unit costs in ns per priced driver.

Each cost carries its plausible range, its reporting category and its source, so a
fit can stay inside the range and a report can say where a figure came from. The
optional [native] table holds native guest-operation costs that generators use to
timestamp their traces.

A cost is a finite number of ns inside its range (low <= ns <= high), and it is >= 0
except for SAVINGS: a driver named *_avoided counts native work a mode no longer does,
so its cost is the time saved, <= 0. A cost of the wrong sign would turn a VM exit into
a speed-up.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from pipeline.atomic import write_atomic
from pipeline.config.errors import ConfigError
from replay.counts import DRIVERS
from pipeline.config import CONFIGS

CONFIG_DIR = CONFIGS / "hardware"
# Starting figures with sources; calibration starts from these.
START_PROFILE = CONFIG_DIR / "core2-2007.toml"
# What replay prices with: the starting profile fitted to the seed's table and its idle-guest
# figures (pipeline calibrate results --fit lat-ctx-2,hackbench-1,hackbench-5,idle-hz1000).
DEFAULT_PROFILE = CONFIG_DIR / "core2-2007-fitted.toml"
# Today's hardware: the base a measured profile (`pipeline host-costs`) starts from.
MODERN_PROFILE = CONFIG_DIR / "modern-2020s.toml"
SAVINGS = frozenset(d for d in DRIVERS if d.endswith("_avoided"))


@dataclass(frozen=True)
class UnitCost:
    ns: float
    low: float
    high: float
    category: str
    source: str


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    costs: dict[str, UnitCost]
    native: dict[str, float] = field(default_factory=dict)
    fitted_on: tuple[str, ...] = ()  # workloads a fitted profile was fitted to ([fit] header)

    def categories(self) -> list[str]:
        """Cost categories in first-seen order (report columns)."""
        return list(dict.fromkeys(c.category for c in self.costs.values()))


def load_profile(path: Path = DEFAULT_PROFILE) -> Profile:
    try:
        table = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(path, "", f"cannot read TOML ({e})") from None
    costs = _table(path, table, "costs")
    missing = sorted(set(DRIVERS) - set(costs))
    if missing:
        raise ConfigError(path, f"costs.{missing[0]}", "missing: every priced driver needs a unit cost")
    unknown = sorted(set(costs) - set(DRIVERS))
    if unknown:
        raise ConfigError(path, f"costs.{unknown[0]}", f"not a priced driver; known: {sorted(DRIVERS)}")
    return Profile(
        name=_str(path, table, "name"),
        description=_str(path, table, "description"),
        costs={d: _unit_cost(path, d, costs[d]) for d in DRIVERS},
        native={k: _ns(path, f"native.{k}", v, 1) for k, v in _table(path, table, "native").items()},
        fitted_on=_fitted_on(path, _table(path, table, "fit").get("fitted_on", [])),
    )


def find_profile(name: str, folder: Path = CONFIG_DIR) -> Path | None:
    """The profile file in `folder` whose `name` is `name`: results record the name of the
    profile that priced them, and re-pricing a part of them (attribution) needs its costs."""
    for path in sorted(folder.glob("*.toml")):
        try:
            if tomllib.loads(path.read_text()).get("name") == name:
                return path
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return None


def _str(path: Path, table: dict[str, Any], key: str, prefix: str = "") -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise ConfigError(path, prefix + key, "missing" if value is None else f"must be a string, got {value!r}")
    return value


def _table(path: Path, table: dict[str, Any], key: str) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"must be a table, got {value!r}")
    return value


def _ns(path: Path, key: str, value: Any, sign: int) -> float:
    """A time in ns: a finite number, >= 0 if `sign` is 1, <= 0 if it is -1 (a saving)."""
    if type(value) not in (int, float) or not math.isfinite(value) or sign * value < 0:
        raise ConfigError(path, key, f"must be a number of ns {'>=' if sign > 0 else '<='} 0, got {value!r}")
    return float(value)


def _fitted_on(path: Path, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise ConfigError(path, "fit.fitted_on", f"must be a list of workload names, got {value!r}")
    return tuple(value)


def _unit_cost(path: Path, driver: str, entry: Any) -> UnitCost:
    key = f"costs.{driver}"
    if not isinstance(entry, dict):
        raise ConfigError(path, key, "must be a table with ns, low, high, category, source")
    missing = [k for k in ("ns", "low", "high", "category", "source") if k not in entry]
    if missing:
        raise ConfigError(path, f"{key}.{missing[0]}", "missing")
    sign = -1 if driver in SAVINGS else 1
    ns, low, high = (_ns(path, f"{key}.{k}", entry[k], sign) for k in ("ns", "low", "high"))
    cost = UnitCost(ns, low, high, category=_str(path, entry, "category", f"{key}."),
                    source=_str(path, entry, "source", f"{key}."))
    if low > high:
        raise ConfigError(path, key, f"range [{low}, {high}] is reversed: low must be <= high")
    if not low <= ns <= high:
        raise ConfigError(path, key, f"ns={ns} outside its range [{low}, {high}]")
    return cost


def write_profile(path: Path, profile: Profile, costs: dict[str, float], notes: dict[str, dict[str, Any]],
                  header: dict[str, Any]) -> None:
    """Write `profile` with new unit costs (atomically); `notes` add keys per cost, `header`
    top-level keys (e.g. how the costs were fitted). Ranges, categories and sources stay."""
    table: dict[str, Any] = {"name": profile.name, "description": profile.description, **header}
    table["costs"] = {d: {"ns": round(costs[d], 3), "low": c.low, "high": c.high, "category": c.category,
                          "source": c.source, **notes.get(d, {})} for d, c in profile.costs.items()}
    if profile.native:
        table["native"] = profile.native
    write_atomic(Path(path), lambda tmp: Path(tmp).write_text(tomli_w.dumps(table)))
