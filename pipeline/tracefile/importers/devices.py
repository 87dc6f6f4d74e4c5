"""MMIO rows estimated by the device rules (`configs/devices/*.toml`, loaded by
`pipeline.config.devices`): which devices are present (their evidence, or `--device`), which
IRQ is theirs, and per rule the accesses each firing makes (`mmio` rows after the line that
fires it: value = base + offset (+ k * stride), arg = 1 write / 0 read). Every active rule and
its parameters go into the metadata `assumptions`; the report lists each rule's rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.config.devices import Device, Rule
from pipeline.tracefile.importers import chunk as ck
from pipeline.tracefile.importers.facts import Facts
from pipeline.tracefile.importers.plan import Options, Plan


@dataclass
class _Active:
    """One rule of a present device, with its parameters resolved."""
    device: Device
    rule: Rule
    irqs: frozenset[int]
    trigger_symbol: int          # work function / netdev / marked event symbol, -1 if none
    after_symbol: int
    addresses: tuple[tuple[int, int], ...]      # (address, write) per access, in order
    pending_after: bool = False
    irq_since: bool = True
    rows: int = 0

    @property
    def label(self) -> str:
        return f"{self.device.name}.{self.rule.name}"


@dataclass
class DeviceRules:
    """The active rules, firing in line order chunk after chunk (their state carries over)."""
    active: list[_Active] = field(default_factory=list)
    assumptions: dict[str, Any] = field(default_factory=dict)

    def rows(self, lines: np.ndarray, irq_row: np.ndarray) -> list[tuple[int, int, int]]:
        """(line, address, write) of one chunk's spooled lines; irq_row: mask of the lines that
        make an irq row (hardware interrupts, their irq number in `a`)."""
        out: list[tuple[int, int, int]] = []
        for r in self.active:
            fire, device_irq, after = _masks(r, lines, irq_row)
            for i in np.flatnonzero(fire | device_irq | after).tolist():
                if _fires(r, bool(fire[i]), bool(device_irq[i]), bool(after[i])):
                    out += [(i, address, write) for address, write in r.addresses]
                    r.rows += len(r.addresses)
        return out        # rule by rule: the mapping sorts every rule's rows by line, stably

    def counts(self) -> dict[str, int]:
        return {r.label: r.rows for r in self.active}


def _masks(r: _Active, lines: np.ndarray, irq_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per line: the rule fires, the device interrupts, the rule's `after` event."""
    role, a, b = lines["role"], lines["a"], lines["b"]
    device_irq = irq_row & (role != ck.R_IRQ) & np.isin(a, list(r.irqs))    # IRQ numbers, not vectors
    on = r.rule.on
    if on == "irq":
        fire = device_irq
    elif on == "napi_poll":
        fire = (role == ck.R_NAPI) & (a == r.trigger_symbol) & (b >= r.rule.min_work)
    else:
        fire = (role == (ck.R_WORK_START if on == "workqueue_execute_start" else ck.R_MARK)) & (a == r.trigger_symbol)
    after = (role == ck.R_MARK) & (a == r.after_symbol) if r.rule.after else np.zeros(len(role), bool)
    return fire, device_irq, after


def _fires(r: _Active, fire: bool, device_irq: bool, after: bool) -> bool:
    """Updates the rule's state for one line; True if the line fires it."""
    r.pending_after |= after
    r.irq_since |= device_irq
    if not fire or (r.rule.after and not r.pending_after):
        return False
    r.pending_after = False
    if r.rule.suppress:
        if not r.irq_since:
            return False
        r.irq_since = False
    return True


def device_rules(devices: list[Device], facts: Facts, names: ck.Names, plan: Plan, options: Options) -> DeviceRules:
    """The rules of the devices present (evidence or `--device`), unless switched off."""
    rules = DeviceRules()
    if not options.device_rules:
        rules.assumptions["devices"] = "device rules off (--no-device-rules)"
        return rules
    forced = {dev: netdev for netdev, dev in options.devices.items()}
    for d in devices:
        netdev = forced.get(d.name, d.netdev)
        irqs = _irqs(d, netdev, facts, names, plan)
        evidence = _evidence(d, facts, names, forced) or _level_irq_evidence(d, netdev, irqs, plan)
        if d.name in options.no_devices or not evidence:
            continue
        for rule in d.rules:
            rules.active.append(_active(d, rule, netdev, irqs, names))
        rules.assumptions[d.name] = {
            "evidence": evidence, "source": str(d.path.name), "base": hex(d.base), "base_source": d.base_source,
            **({"netdev": netdev} if netdev else {}), "irqs": sorted(irqs),
            "rules": {r.name: {"on": r.on, **_filters(r, netdev), "accesses": _describe(r), "source": r.source}
                      for r in d.rules}}
    return rules


def _evidence(d: Device, facts: Facts, names: ck.Names, forced: dict[str, str]) -> str:
    if d.name in forced:
        return f"--device {forced[d.name]}={d.name}"
    if d.present_event == "irq_pipeline_entry":
        n = facts.roles[ck.R_IRQ_PIPELINE]
    elif d.present_function:
        n = facts.work_run[names.find(d.present_function)]
    else:
        n = facts.marks[names.find(d.present_event)]
    what = f"{d.present_event} {d.present_function}".strip()
    return f"{n} {what} recorded" if n else ""


def _level_irq_evidence(d: Device, netdev: str, irqs: frozenset[int], plan: Plan) -> str:
    """A device known by its interrupt alone: a level-triggered I/O APIC IRQ named as the device's
    IRQ is (the TOML's present.level_irq says why that identifies it)."""
    level = sorted(irqs & plan.level_irqs) if d.present_level_irq else []
    return f"IRQ {', '.join(map(str, level))} {netdev!r}, level-triggered: {d.present_level_irq}" if level else ""


def _irqs(d: Device, netdev: str, facts: Facts, names: ck.Names, plan: Plan) -> frozenset[int]:
    if d.irq_level:
        return plan.level_irqs
    if d.irq_name:
        name = d.irq_name.replace("{netdev}", netdev)
        return frozenset(irq for irq, nm in names.irqs.items() if nm == name)
    if d.irq_queued_work:
        return frozenset(irq for sym, irqs in facts.work_irqs.items()
                         if names.symbols[sym].startswith(d.irq_queued_work) for irq in irqs)
    return frozenset()


def _active(d: Device, rule: Rule, netdev: str, irqs: frozenset[int], names: ck.Names) -> _Active:
    trigger = {"napi_poll": rule.netdev.replace("{netdev}", netdev), "workqueue_execute_start": rule.function,
               "irq": ""}.get(rule.on, rule.on)
    addresses = tuple((d.base + acc.offset + k * acc.stride, int(acc.writes > 0))
                      for acc in rule.access for k in range(acc.reads + acc.writes))
    return _Active(d, rule, irqs, names.find(trigger) if trigger else -1,
                   names.find(rule.after) if rule.after else -1, addresses)


def _filters(r: Rule, netdev: str) -> dict[str, Any]:
    f = {"function": r.function, "netdev": r.netdev.replace("{netdev}", netdev), "min_work": r.min_work,
         "after": r.after, "suppress": r.suppress}
    return {k: v for k, v in f.items() if v}


def _describe(r: Rule) -> list[str]:
    return [f"{acc.reads or acc.writes} {'read' if acc.reads else 'write'}{'s' if acc.reads + acc.writes > 1 else ''} "
            f"{acc.register} (+{acc.offset:#x}{f', stride {acc.stride}' if acc.stride else ''}): {acc.source}"
            for acc in r.access]
