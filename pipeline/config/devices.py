"""Device rules (configs/devices/*.toml): the MMIO accesses a guest driver makes that its
recording does not show, estimated from events it does show. Data, each figure with its source.

A file describes one device:

    name = "e1000"                      # the file's stem; `--no-device NAME` switches it off
    description = "…"
    base = 0xFEBC0000                   # placeholder guest-physical base of its registers
    base_source = "…"
    netdev = "eth0"                     # optional: substituted for {netdev} (`--device eth0=e1000`)
    [present]                           # the device's rules apply when this event is recorded
    event = "workqueue_execute_start"   # (and ran this work function, for workqueue events)
    function = "e1000_watchdog"
    level_irq = "…"                     # optional: or when a level-triggered IRQ has its irq.name;
                                        #   the text says why that identifies the device
    [irq]                               # its interrupt: one of
    name = "{netdev}"                   #   the IRQ of this name (irq_handler_entry)
    queued_work = "virtio_transport_"   #   the IRQ in whose handler work of this prefix is queued
    level = true                        #   every level-triggered I/O APIC IRQ
    [[rule]]
    name = "interrupt"
    on = "irq"                          # each hardware interrupt of its IRQ, or an event (below)
    source = "…"
    access = [{register = "ICR", offset = 0xC0, reads = 1, source = "…"}, …]

`on` may be "irq", "workqueue_execute_start" (with `function`), "napi_poll" (with `netdev`,
`min_work`) or an event of `MARKED`; `after = EVENT` makes a rule fire only if EVENT
was recorded since its last firing; `suppress = "until-irq"` only if it never fired or the
device's interrupt arrived since it last did (virtio ring notification suppression).
An access entry: `register`, `offset`, `reads` or `writes` (a count), optional `stride`
(bytes between the addresses of a count > 1), `source`.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import CONFIGS
from pipeline.config.errors import ConfigError

DEVICES_DIR = CONFIGS / "devices"
# Events the importer reads only for the device rules (formats.KERNEL takes them by name).
MARKED = ("virtio_transport_alloc_pkt", "9p_client_req")
EVENT_TRIGGERS = ("workqueue_execute_start", "napi_poll", *MARKED)
# What the importer counts per event name (facts): a device's presence is one of these, or a
# workqueue_execute_start of a named function; a rule's `after`, one of the marked events.
PRESENCE_EVENTS = ("irq_pipeline_entry", "workqueue_execute_start", *MARKED)
UINT64_MAX = 2**64 - 1
SUPPRESS = ("until-irq",)


@dataclass(frozen=True)
class Access:
    register: str
    offset: int
    reads: int
    writes: int
    stride: int
    source: str


@dataclass(frozen=True)
class Rule:
    name: str
    on: str                 # "irq" or an event of EVENT_TRIGGERS
    function: str
    netdev: str
    min_work: int
    after: str
    suppress: str
    source: str
    access: tuple[Access, ...]


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    base: int
    base_source: str
    netdev: str
    present_event: str
    present_function: str
    present_level_irq: str      # why a level-triggered IRQ of irq_name identifies the device ("": it does not)
    irq_name: str
    irq_queued_work: str
    irq_level: bool
    rules: tuple[Rule, ...]
    path: Path


def load_devices(folder: Path = DEVICES_DIR) -> list[Device]:
    return [load_device(p) for p in sorted(folder.glob("*.toml"))]


def load_device(path: Path) -> Device:
    try:
        t = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(path, "", f"cannot read TOML ({e})") from None
    r = _Reader(path)
    _known(r, t, "", {"name", "description", "base", "base_source", "netdev", "present", "irq", "rule"})
    present, irq = r.table(t, "present"), r.table(t, "irq")
    _known(r, present, "present", {"event", "function", "level_irq"})
    _known(r, irq, "irq", {"name", "queued_work", "level"})
    event = r.text(present, "present.event")
    if event not in PRESENCE_EVENTS:
        raise ConfigError(path, "present.event", f"{event!r} is not read by the importer (known: {', '.join(PRESENCE_EVENTS)})")
    if event == "workqueue_execute_start" and "function" not in present:
        raise ConfigError(path, "present.function", "workqueue_execute_start needs the work's function")
    if sum(k in irq for k in ("name", "queued_work", "level")) > 1:
        raise ConfigError(path, "irq", "give one of name, queued_work, level")
    rules = t.get("rule", [])
    if not isinstance(rules, list) or not rules:
        raise ConfigError(path, "rule", "at least one [[rule]] table is needed")
    name = r.text(t, "name")
    if name != path.stem:
        raise ConfigError(path, "name", f"must be the file's stem {path.stem!r}")
    device = Device(name, r.text(t, "description"), r.integer(t, "base"), r.text(t, "base_source"),
                    r.text(t, "netdev", ""), event, r.text(present, "present.function", ""),
                    r.text(present, "present.level_irq", ""),
                    r.text(irq, "irq.name", ""), r.text(irq, "irq.queued_work", ""), r.flag(irq, "irq.level", False),
                    tuple(_rule(r, rule, f"rule[{k}]") for k, rule in enumerate(rules)), path)
    _addresses_fit(device)
    return device


def _addresses_fit(d: Device) -> None:
    """Every address a rule writes is a guest-physical address: a uint64 `value`."""
    for k, rule in enumerate(d.rules):
        for j, a in enumerate(rule.access):
            last = d.base + a.offset + (max(a.reads, a.writes) - 1) * a.stride
            if last > UINT64_MAX:
                raise ConfigError(d.path, f"rule[{k}].access[{j}]", f"base + offset + stride reach {last:#x}, beyond 2^64 - 1")


def _rule(r: _Reader, t: Any, key: str) -> Rule:
    if not isinstance(t, dict):
        raise ConfigError(r.path, key, "must be a table")
    _known(r, t, key, {"name", "on", "function", "netdev", "min_work", "after", "suppress", "source", "access"})
    on = r.text(t, f"{key}.on")
    if on != "irq" and on not in EVENT_TRIGGERS:
        raise ConfigError(r.path, f"{key}.on", f"{on!r}: must be irq or one of {', '.join(EVENT_TRIGGERS)}")
    after, suppress = r.text(t, f"{key}.after", ""), r.text(t, f"{key}.suppress", "")
    if after and after not in MARKED:
        raise ConfigError(r.path, f"{key}.after", f"{after!r}: must be one of {', '.join(MARKED)}")
    if suppress and suppress not in SUPPRESS:
        raise ConfigError(r.path, f"{key}.suppress", f"{suppress!r}: must be one of {', '.join(SUPPRESS)}")
    access = t.get("access")
    if not isinstance(access, list) or not access:
        raise ConfigError(r.path, f"{key}.access", "a non-empty list of accesses is needed")
    return Rule(r.text(t, f"{key}.name"), on, r.text(t, f"{key}.function", ""), r.text(t, f"{key}.netdev", ""),
                r.integer(t, f"{key}.min_work", 0), after, suppress, r.text(t, f"{key}.source"),
                tuple(_access(r, a, f"{key}.access[{k}]") for k, a in enumerate(access)))


def _access(r: _Reader, t: Any, key: str) -> Access:
    if not isinstance(t, dict):
        raise ConfigError(r.path, key, "must be a table")
    _known(r, t, key, {"register", "offset", "reads", "writes", "stride", "source"})
    reads, writes = r.integer(t, f"{key}.reads", 0), r.integer(t, f"{key}.writes", 0)
    if (reads > 0) == (writes > 0):
        raise ConfigError(r.path, key, "give reads or writes (a count > 0), not both")
    return Access(r.text(t, f"{key}.register"), r.integer(t, f"{key}.offset"), reads, writes,
                  r.integer(t, f"{key}.stride", 0), r.text(t, f"{key}.source"))


def _known(r: _Reader, t: dict[str, Any], key: str, allowed: set[str]) -> None:
    unknown = sorted(set(t) - allowed)
    if unknown:
        raise ConfigError(r.path, f"{key}.{unknown[0]}" if key else unknown[0], f"unknown key (known: {', '.join(sorted(allowed))})")


@dataclass(frozen=True)
class _Reader:
    """Typed reads of keys, each failure one ConfigError naming the key."""
    path: Path

    def _get(self, t: dict[str, Any], key: str, kind: type, default: Any) -> Any:
        leaf = key.rsplit(".", 1)[-1]
        if leaf not in t:
            if default is None:
                raise ConfigError(self.path, key, "missing")
            return default
        value = t[leaf]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.path, key, f"must be a {kind.__name__}, got {value!r}")
        return value

    def text(self, t: dict[str, Any], key: str, default: str | None = None) -> str:
        return self._get(t, key, str, default)

    def integer(self, t: dict[str, Any], key: str, default: int | None = None) -> int:
        value = self._get(t, key, int, default)
        if value < 0:
            raise ConfigError(self.path, key, f"must be >= 0, got {value}")
        return value

    def flag(self, t: dict[str, Any], key: str, default: bool) -> bool:
        return self._get(t, key, bool, default)

    def table(self, t: dict[str, Any], key: str) -> dict[str, Any]:
        value = t.get(key, {})
        if not isinstance(value, dict):
            raise ConfigError(self.path, key, "must be a table")
        return value
