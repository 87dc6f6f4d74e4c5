"""Hardware cost profiles (configs/hardware/*.toml): unit costs in ns per priced driver.

Each cost carries its plausible range, its reporting category and its source, so a
fit can stay inside the range and a report can say where a figure came from. The
optional [native] table holds native guest-operation costs that generators use to
timestamp their traces.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from pipeline.atomic import write_atomic
from pipeline.config_error import ConfigError
from replay.counts import DRIVERS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "hardware"
# Starting figures with sources; calibration starts from these.
START_PROFILE = CONFIG_DIR / "core2-2007.toml"
# What replay prices with: the starting profile fitted to the seed's table on all three
# workloads (pipeline calibrate results --fit lat-ctx-2,hackbench-1,hackbench-5).
DEFAULT_PROFILE = CONFIG_DIR / "core2-2007-fitted.toml"


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
    costs = table.get("costs", {})
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
        native={k: float(v) for k, v in table.get("native", {}).items()},
        fitted_on=tuple(table.get("fit", {}).get("fitted_on", ())),
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


def _str(path: Path, table: dict[str, Any], key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise ConfigError(path, key, "missing or not a string")
    return value


def _unit_cost(path: Path, driver: str, entry: Any) -> UnitCost:
    key = f"costs.{driver}"
    if not isinstance(entry, dict):
        raise ConfigError(path, key, "must be a table with ns, low, high, category, source")
    try:
        cost = UnitCost(ns=float(entry["ns"]), low=float(entry["low"]), high=float(entry["high"]),
                        category=str(entry["category"]), source=str(entry["source"]))
    except KeyError as e:
        raise ConfigError(path, f"{key}.{e.args[0]}", "missing") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(path, key, f"bad value ({e})") from None
    if not cost.low <= cost.ns <= cost.high:
        raise ConfigError(path, key, f"ns={cost.ns} outside its range [{cost.low}, {cost.high}]")
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
