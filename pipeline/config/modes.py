"""Load virtualization modes from configs/modes/*.toml into replay.mode.Mode records.

A mode file may say `inherits = "other-mode"`: it starts from that mode's table and
overrides keys (nested tables merge key by key). Every key must be a Mode field,
`on_event` keys event kinds and its values priced drivers; anything else is an
error naming the file and key. Users add modes in their own folders (`--modes-dir`),
loaded together with the shipped ones so that they can inherit from them.
See configs/modes/README.md.
"""
from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pipeline.config.errors import ConfigError
from replay.counts import DRIVERS
from replay.kinds import KIND_NAMES
from replay.mode import Mode, Paging
from pipeline.config import CONFIGS

DEFAULT_DIR = CONFIGS / "modes"
DOC_KEYS = {"description", "source", "inherits", "order"}
FIELD_TYPES = {f.name: f.type for f in fields(Mode)}
# A mode's name names its result folders (OUT/counts/mode=<name>/) and its columns in
# reports: letters, digits, '.', '_', '-' and '~' (sweep points join their settings with
# '~'), never a separator, a leading dot or a NUL, so it cannot lead outside --out; at most
# 200 characters, so that "mode=<name>" fits a file name (NAME_MAX = 255 bytes).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]{0,199}")
# Each state size's (least, most). The upper bounds are far beyond real hardware, so that
# what-if sweeps fit, yet keep the replay's memory sane: the engines allocate the softmmu
# TLB and the CR3 cache and held roots up front (per mode: 16 B per softmmu entry in
# replay/kernel.py, a list slot in replay/softmmu.py and cr3_cache.py); the TLB and the
# shadow pool grow with the pages and tables a trace touches, so for them the bound is
# about meaning (and keeps the capacities well inside the kernel's int64).
SIZES: dict[str, tuple[int, int]] = {
    # Largest second-level TLBs today hold 2048-3072 entries (Zen 4's L2 DTLB: 3072);
    # 2**20 is ~340x that and maps 4 GiB in 4 KiB pages, a whole 32-bit address space.
    "tlb_entries": (1, 2**20),
    # QEMU's own ceiling: dynamic TLB sizing grows to 2**CPU_TLB_DYN_MAX_BITS = 2**22 entries
    # (include/exec/cpu-defs.h; 256 = 2**8 in 2007); 64 MiB per mode in the kernel's array.
    "softmmu_tlb_entries": (1, 2**22),
    # The VMCS holds 4 CR3-target values; IA32_VMX_MISC can report at most 256 (Intel SDM
    # Vol. 3D, A.6). 256 is 64x today's 4 and more than the address spaces of any shipped
    # trace (hackbench-5: 201, recorded 204); the slots are scanned on every CR3 write.
    "cr3_cache_size": (0, 256),
    # KVM_NUM_MMU_PAGES was 256 (2048 in the seed's runs); today's default is 20 per mille of
    # guest pages (KVM_PERMILLE_MMU_PAGES). 2**22 pages is that default for a 800 GiB guest.
    "shadow_pool_pages": (2, 2**22),
    # KVM holds 3 previous roots (KVM_MMU_NUM_PREV_ROOTS); 256 is 85x that, again more than
    # any shipped trace's address spaces; the held roots are scanned on every CR3 write.
    "prev_roots": (0, 256),
}
# Sets of guest accesses a paravirt guest no longer makes, and the values they may hold.
PORT_SETS = ("dropped_io_ports", "dropped_io_reads", "dropped_io_writes")
ADDRESS_SETS = ("dropped_mmio_reads", "dropped_mmio_writes")
MAX_PORT, MAX_ADDRESS = 0xFFFF, 2**64 - 1


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
        raise ConfigError("--modes", "", f"unknown mode(s) {unknown}; known: {sorted(available)}")
    return [available[n] for n in names]


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
    if not NAME.fullmatch(name):
        raise ConfigError(path, "name", f"{name!r}: a mode name is 1-200 letters, digits, '.', '_', '-' or '~', "
                                        "starting with a letter or digit (it names a folder under --out)")
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
    for key in PORT_SETS + ADDRESS_SETS:
        top = MAX_PORT if key in PORT_SETS else MAX_ADDRESS
        values[key] = frozenset(_int_list(path, key, values.get(key, []), top))
    for key, (least, most) in SIZES.items():
        if key in values and (type(values[key]) is not int or not least <= values[key] <= most):
            raise ConfigError(path, key, f"must be an integer in {least}..{most}, got {values[key]!r}")
    soft = values.get("softmmu_tlb_entries", 1)
    if soft & (soft - 1):
        raise ConfigError(path, "softmmu_tlb_entries", f"must be a power of two (direct mapped), got {soft}")
    for key in (k for k, t in FIELD_TYPES.items() if t == "bool"):
        if key in values and not isinstance(values[key], bool):
            raise ConfigError(path, key, f"must be true or false, got {values[key]!r}")
    return Mode(**values)


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
        if driver not in DRIVERS:
            raise ConfigError(path, f"on_event.{key}", f"unknown driver {driver!r}; known: {sorted(DRIVERS)}")
        out[KIND_NAMES[key]] = driver
    return out


def _int_list(path: Path, key: str, value: Any, top: int) -> list[int]:
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise ConfigError(path, key, "must be a list of integers")
    bad = [v for v in value if not 0 <= v <= top]
    if bad:
        raise ConfigError(path, key, f"{bad[0]:#x} is outside 0..{top:#x}")
    return value
