"""Reference measurements (configs/reference/*.toml): published cells to calibrate against.

A cell is one measured number for a (workload, mode) in one of pipeline/config/units.py's units:
seconds for a whole run ("s"), microseconds per op ("us/op"), or the host CPU an idle
guest uses ("%cpu", percent of its span).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.errors import ConfigError
from pipeline.config.units import UNITS
from pipeline.config import CONFIGS
DEFAULT_REFERENCE = CONFIGS / "reference" / "kvm-paravirt-2007.toml"


@dataclass(frozen=True)
class Cell:
    workload: str
    mode: str
    value: float   # as published, in `unit`
    unit: str      # a name in pipeline/config/units.py's UNITS


@dataclass(frozen=True)
class Reference:
    name: str
    source: str
    cells: tuple[Cell, ...]


def load_reference(path: Path = DEFAULT_REFERENCE) -> Reference:
    try:
        table = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(path, "", f"cannot read TOML ({e})") from None
    for key in ("name", "source"):
        if not isinstance(table.get(key), str):
            raise ConfigError(path, key, "missing or not a string")
    workloads = table.get("workloads")
    if not isinstance(workloads, dict) or not workloads:
        raise ConfigError(path, "workloads", "needs at least one [workloads.NAME] table")
    cells = tuple(c for name, w in workloads.items() for c in _cells(path, name, w))
    return Reference(table["name"], table["source"], cells)


def _cells(path: Path, workload: str, table: dict) -> list[Cell]:
    unit = table.get("unit")
    if unit not in UNITS:
        raise ConfigError(path, f"workloads.{workload}.unit", f"must be one of {sorted(UNITS)}, got {unit!r}")
    cells = []
    for mode, value in table.items():
        if mode in ("unit", "description"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ConfigError(path, f"workloads.{workload}.{mode}", f"must be a positive number, got {value!r}")
        cells.append(Cell(workload, mode, float(value), unit))
    return cells
