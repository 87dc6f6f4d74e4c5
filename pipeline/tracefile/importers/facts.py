"""What reading (the first pass) learns about the whole recording before any row is written.

Several rules depend on the recording as a whole: which source of CR3 writes it has
(`tlb_flush` task switches or only switches), whether Dovetail's interrupt pipeline is traced
(then its entries are the hardware interrupts), which MSRs are written (x2APIC, TSC deadline),
which IRQ is the LAPIC timer, in which IRQ's handler a device driver queues its work, which
work functions ran. `Facts.learn` collects them chunk by chunk; only small sets are kept.

`IdleWakes` gives each idle entry its length while reading, because its end (the first
hardware interrupt after it, else the idle exit, else the next event) may lie in a later
chunk: an entry still open when its chunk is spooled is patched in the spool file once its
end is read (one pending entry per CPU, so memory stays bounded).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

import numpy as np

from pipeline.tracefile.importers import chunk as ck

# Dovetail's synthetic interrupts (kernel/irq/pipeline.c: the in-band work and stage-escalation
# sirqs, the proxy tick device): raised by software, no hardware, never an exit.
SYNTHETIC_IRQS = frozenset({"in-band work", "Inband sirq", "proxy tick"})
_A_OFFSET: int = ck.SPOOLED.fields["a"][1]  # type: ignore[index]


@dataclass
class Facts:
    """Recording-wide evidence (see the module docstring)."""
    roles: Counter[int] = field(default_factory=Counter)       # lines per chunk role
    msr_writes: Counter[int] = field(default_factory=Counter)  # write_msr lines per MSR index
    tlb_switches: int = 0
    pipeline_irqs: Counter[int] = field(default_factory=Counter)    # irq_pipeline_entry lines per irq
    timer_follows: Counter[int] = field(default_factory=Counter)    # ... of those a local_timer_entry follows
    work_irqs: dict[int, set[int]] = field(default_factory=dict)   # work function -> irqs queueing it
    work_run: Counter[int] = field(default_factory=Counter)    # work function -> executions
    marks: Counter[int] = field(default_factory=Counter)       # marked event -> lines
    _handling: dict[int, int] = field(default_factory=dict)    # cpu -> irq whose handler runs
    _last_pipeline: dict[int, int] = field(default_factory=dict)

    def learn(self, chunk: ck.Chunk, names: ck.Names) -> None:
        role = chunk.role
        self.roles.update(dict(zip(*(x.tolist() for x in np.unique(role, return_counts=True)))))
        writes = (role == ck.R_MSR) & (chunk.b == 1)
        self.msr_writes.update(chunk.a[writes].tolist())
        self.tlb_switches += int(((role == ck.R_TLB) & (chunk.a == 1)).sum())
        self.work_run.update(chunk.a[role == ck.R_WORK_START].tolist())
        self.marks.update(chunk.a[role == ck.R_MARK].tolist())
        self._in_order(chunk, names.find("local_timer_entry"))

    def _in_order(self, chunk: ck.Chunk, local_timer: int) -> None:
        """The per-CPU sequences: work queued inside an irq handler, a pipeline irq followed
        by the local timer's entry."""
        role = chunk.role
        rows = np.flatnonzero(np.isin(role, (ck.R_IRQ_HANDLER, ck.R_IRQ_EXIT, ck.R_WORK_QUEUE, ck.R_IRQ_PIPELINE))
                              | ((role == ck.R_IRQ) & (chunk.b == local_timer)))
        for r, cpu, a in zip(rows.tolist(), chunk.cpu[rows].tolist(), chunk.a[rows].tolist()):
            kind = role[r]
            if kind == ck.R_IRQ_HANDLER:
                self._handling[cpu] = a
            elif kind == ck.R_IRQ_EXIT:
                self._handling.pop(cpu, None)
            elif kind == ck.R_WORK_QUEUE and cpu in self._handling:
                self.work_irqs.setdefault(a, set()).add(self._handling[cpu])
            elif kind == ck.R_IRQ_PIPELINE:
                self._last_pipeline[cpu] = a
                self.pipeline_irqs[a] += 1
            elif kind == ck.R_IRQ and cpu in self._last_pipeline:
                self.timer_follows[self._last_pipeline.pop(cpu)] += 1

    @property
    def timer_irqs(self) -> frozenset[int]:
        """The pipeline irqs that are the LAPIC timer: a local_timer_entry follows most of their
        entries (one chance pairing, a device irq taken just before a tick, does not make a
        device's irq the timer)."""
        return frozenset(irq for irq, n in self.timer_follows.items() if 2 * n > self.pipeline_irqs[irq])


def hardware_irq_lines(chunk: ck.Chunk, irq_names: dict[int, str]) -> np.ndarray:
    """Mask of the lines that record a hardware interrupt: irq_vectors/ipi entries, pipeline
    entries, and handler entries of IRQs that are not Dovetail's synthetic ones."""
    role = chunk.role
    synthetic = np.array([irq for irq, name in irq_names.items() if name in SYNTHETIC_IRQS], np.int64)
    return (np.isin(role, (ck.R_IRQ, ck.R_IRQ_PIPELINE))
            | ((role == ck.R_IRQ_HANDLER) & ~np.isin(chunk.a, synthetic)))


class _Open(NamedTuple):
    ts: int
    row: int            # row in its chunk (while not spooled)
    offset: int         # file offset of its spooled `a` field, -1 while not spooled
    fallback: int       # ts of the next event after it on its CPU, -1 if not read yet


class IdleWakes:
    """Idle entries' lengths (R_IDLE's `a`): ns to the first hardware interrupt or idle exit
    after the entry on its CPU; with neither before the next idle entry or the end of the
    input, to the next event after it."""

    def __init__(self, spool: BinaryIO) -> None:
        self.spool = spool
        self.open: dict[int, _Open] = {}
        self.last_ts = 0

    def resolve(self, chunk: ck.Chunk, irq_names: dict[int, str]) -> None:
        """Close what this chunk ends (before it is spooled)."""
        valid = chunk.event_lines()
        cpu, ts, role = np.maximum(chunk.cpu, 0), chunk.ts, chunk.role
        if valid.any():
            self.last_ts = int(ts[valid].max())
        self._fallbacks(valid, cpu, ts)
        ends = hardware_irq_lines(chunk, irq_names) | (role == ck.R_IDLE_EXIT)
        idle = role == ck.R_IDLE
        nxt = _next_event_ts(valid, cpu, ts)
        for r in np.flatnonzero(ends | idle).tolist():
            c, t = int(cpu[r]), int(ts[r])
            if idle[r]:
                if c in self.open:
                    self._close(chunk, c, self.open[c].fallback)
                self.open[c] = _Open(t, r, -1, int(nxt[r]))
            elif c in self.open:
                self._close(chunk, c, t)

    def _fallbacks(self, valid: np.ndarray, cpu: np.ndarray, ts: np.ndarray) -> None:
        for c, o in list(self.open.items()):
            if o.fallback < 0:
                mine = np.flatnonzero(valid & (cpu == c))
                if len(mine):
                    self.open[c] = o._replace(fallback=int(ts[mine[0]]))

    def spooled(self, chunk: ck.Chunk, data_offset: int) -> None:
        """The chunk's rows are in the spool from data_offset: entries still open get their offsets."""
        spooled_index = np.cumsum(np.isin(chunk.role, ck.ROWS)) - 1
        for c, o in self.open.items():
            if o.offset < 0:
                self.open[c] = o._replace(offset=data_offset + int(spooled_index[o.row]) * ck.SPOOLED.itemsize + _A_OFFSET)

    def finish(self) -> None:
        """The input ended: entries still open last until the next event, else the last event."""
        for c in list(self.open):
            self._close(None, c, self.open[c].fallback if self.open[c].fallback >= 0 else self.last_ts)

    def _close(self, chunk: ck.Chunk | None, cpu: int, end: int) -> None:
        o = self.open.pop(cpu)
        length = max(end - o.ts, 0)
        if o.offset < 0:
            assert chunk is not None
            chunk.a[o.row] = length
            return
        here = self.spool.tell()
        self.spool.seek(o.offset)
        self.spool.write(np.int64(length).tobytes())
        self.spool.seek(here)


def _next_event_ts(valid: np.ndarray, cpu: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Per line, the ts of the next event line on its CPU in this chunk, -1 if none."""
    out = np.full(len(ts), -1, np.int64)
    for c in np.unique(cpu[valid]).tolist():
        mine = np.flatnonzero(valid & (cpu == c))
        out[mine[:-1]] = ts[mine[1:]]
    return out
