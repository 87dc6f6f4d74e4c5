"""Load virtualization modes from configs/modes/*.toml into replay.mode.Mode records.

A mode file may say `inherits = "other-mode"`: it starts from that mode's table and
overrides keys (nested tables merge key by key). Every key must be a Mode field,
`on_event` keys event kinds and its values priced drivers; anything else is an
error naming the file and key. Users add modes in their own folders (`--modes-dir`),
loaded together with the shipped ones so that they can inherit from them.
See configs/modes/README.md.
"""
from __future__ import annotations

import difflib
import tomllib
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pipeline.config import CONFIGS
from pipeline.config.errors import ConfigError
from replay.kinds import KIND_NAMES
from replay.mode import DROPPED, Mode, ModeError, Paging

DEFAULT_DIR = CONFIGS / "modes"
DOC_KEYS = {"description", "source", "inherits", "order"}
FIELD_TYPES = {f.name: f.type for f in fields(Mode)}


def load_modes(directory: Path = DEFAULT_DIR, extra: Sequence[Path] = ()) -> dict[str, Mode]:
    """Every mode in `directory` and in the `extra` folders (or files), by name, ordered
    by each file's `order` key, then name. A name defined twice is an error."""
    by_name: dict[str, tuple[Path, dict]] = {}
    for path in _mode_files([directory, *extra]):
        table = _read(path)
        name = _name(path, table)
        if name in by_name:
            raise ConfigError(path, "name", f"mode {name!r} is already defined in {by_name[name][0]}")
        by_name[name] = (path, table)
    resolved = {name: _resolve(name, by_name, ()) for name in by_name}
    ordered = sorted(resolved, key=lambda n: (_order(*by_name[n]), n))  # a file's own order, not inherited
    return {name: _build(by_name[name][0], resolved[name]) for name in ordered}


def select_modes(available: dict[str, Mode], wanted: str) -> list[Mode]:
    """`all` or a comma-separated list of names, in the order given."""
    if wanted == "all":
        return list(available.values())
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in available]
    if unknown:
        named = ", ".join(_unknown(n, available) for n in unknown)
        raise ConfigError("--modes", "", f"unknown mode(s) {named}; known: {sorted(available)}")
    return [available[n] for n in names]


def _unknown(name: str, available: dict[str, Mode]) -> str:
    """An unknown mode name as the error quotes it, with the known name a typo away, if any:
    "'kvm-trnk' (did you mean 'kvm-trunk'?)"."""
    close = difflib.get_close_matches(name, available, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def with_overrides(mode: Mode, overrides: dict[str, Any], origin: str = "--set") -> Mode:
    """A copy of `mode` with state fields replaced (sweeps); checked like a file."""
    table = {f.name: getattr(mode, f.name) for f in fields(Mode)}
    table.update(overrides)
    return _build(Path(origin), table)


def _mode_files(paths: Sequence[Path]) -> list[Path]:
    """*.toml of each folder (not below it), or the file itself; each file once."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.toml"))
        elif path.is_file():
            found = [path]
        else:
            raise ConfigError(path, "", "no such mode folder or file")
        files += [f for f in found if f.resolve() not in {g.resolve() for g in files}]
    return files


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(path, "", f"cannot parse TOML ({e})") from None


def _name(path: Path, table: dict[str, Any]) -> str:
    name = table.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(path, "name", "missing or not a string")
    return name


def _resolve(name: str, by_name: dict[str, tuple[Path, dict]], seen: tuple[str, ...]) -> dict[str, Any]:
    path, table = by_name[name]
    for key in DOC_KEYS - {"order"}:
        if key in table and not isinstance(table[key], str):
            raise ConfigError(path, key, f"must be a string, got {table[key]!r}")
    parent = table.get("inherits")
    if parent is None:
        return dict(table)
    if parent not in by_name or parent in seen:
        problem = "inherits a mode that does not exist" if parent not in by_name else "inheritance cycle"
        raise ConfigError(path, "inherits", f"{problem}: {parent!r}")
    merged = _resolve(parent, by_name, seen + (name,))
    for key, value in table.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


def _order(path: Path, table: dict[str, Any]) -> int:
    order = table.get("order", 1000)
    if type(order) is not int:
        raise ConfigError(path, "order", "must be an integer (position in --modes all)")
    return order


def _build(path: Path, table: dict[str, Any]) -> Mode:
    values = {k: v for k, v in table.items() if k not in DOC_KEYS}
    _name(path, values)
    unknown = sorted(set(values) - set(FIELD_TYPES))
    if unknown:
        raise ConfigError(path, unknown[0], f"unknown key; known keys: {sorted(FIELD_TYPES)}")
    try:
        values["paging"] = Paging(values.get("paging"))
    except ValueError:
        raise ConfigError(path, "paging", f"must be one of {[p.value for p in Paging]}") from None
    values["on_event"] = _on_event(path, values.get("on_event", {}))
    for key in DROPPED:  # TOML lists of integers; Mode checks their values
        values[key] = frozenset(_int_list(path, key, values.get(key, [])))
    if "msr_passthrough" in values:  # a list, kept in its order (a tuple: Mode is frozen)
        values["msr_passthrough"] = tuple(_int_list(path, "msr_passthrough", values["msr_passthrough"]))
    try:
        return Mode(**values)
    except ModeError as e:  # Mode checks every value (replay/mode.py): here it gets its file
        raise ConfigError(path, e.key, e.problem) from None


def _on_event(path: Path, table: Any) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(path, "on_event", "must be a table of event kind = driver")
    out = {}
    for kind, driver in table.items():
        key = kind if isinstance(kind, str) else kind.name.lower()
        if key not in KIND_NAMES:
            raise ConfigError(path, f"on_event.{key}", f"unknown event kind; known: {sorted(KIND_NAMES)}")
        if not isinstance(driver, str):
            raise ConfigError(path, f"on_event.{key}", f"must be a driver name in quotes, got {driver!r}")
        if driver == "":  # an inherited entry switched off: this mode does not trap it
            continue
        out[KIND_NAMES[key]] = driver
    return out


def _int_list(path: Path, key: str, value: Any) -> list[int]:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise ConfigError(path, key, "must be a list of integers")
    return value
