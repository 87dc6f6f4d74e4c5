"""Timer armings (`timer_arm` rows: value = delay ns, arg = the timer device), by source:

* **TSC-deadline MSR writes** (write_msr 0x6E0, when recorded): each is an arming; its delay is
  that of the cobalt_tick_shot before it on its CPU since the last arming, else unknown
  (`DELAY_UNKNOWN`: the deadline is a TSC value; the TSC rate is not in the recording).
* **cobalt_tick_shot** (Xenomai's core programming the one-shot tick device through Dovetail's
  proxy: kernel/cobalt/clock.c xnclock_core_local_shot, `delta` = ns to the shot): one arming each.
* Otherwise an **estimate**, as the kernel's clockevent reprogramming is not traced: one arming
  per local timer interrupt (hrtimer_interrupt reprograms the next event at its end,
  kernel/time/hrtimer.c; delay not recorded: `DELAY_UNKNOWN`) and one per `hrtimer_start` whose expiry is
  earlier than every pending hrtimer's on its CPU (hrtimer_reprogram), not while the local timer
  interrupt runs (its in_hrtirq: the interrupt's own reprogram covers it, when local_timer_exit
  is recorded). Pending hrtimers: started by hrtimer_start, gone at hrtimer_cancel /
  hrtimer_expire_entry. The delay is expires - now, with the hrtimer clock's now estimated from
  the latest hrtimer_expire_entry's `now` on that CPU (unknown before one).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.tracefile.importers import chunk as ck
from pipeline.tracefile.importers.plan import MSR_TSC_DEADLINE, Plan
from replay.kinds import DELAY_UNKNOWN

Extra = tuple[int, int, int]    # (line, value, arg) of one timer_arm row


@dataclass
class _Cpu:
    pending: dict[int, int] = field(default_factory=dict)   # hrtimer -> expires
    in_timer_irq: bool = False
    clock_offset: int | None = None                         # hrtimer clock's now - trace ts
    shot: int = DELAY_UNKNOWN                               # delay of the last tick shot not yet armed


class TimerArmings:
    """The armings of the spooled lines, chunk after chunk (state per CPU carries over)."""

    def __init__(self, plan: Plan, exits_recorded: bool) -> None:
        self.plan, self.exits_recorded = plan, exits_recorded
        self.cpus: dict[int, _Cpu] = {}
        self.source = ("write_msr 0x6E0" if plan.tsc_deadline_msr else "cobalt_tick_shot" if plan.tick_shots
                       else "estimate: local timer interrupts + hrtimer_start earliest")

    def rows(self, lines: np.ndarray, timer_irq: np.ndarray) -> list[Extra]:
        """timer_irq: mask of the lines that make an IRQ_TIMER row."""
        role = lines["role"]
        device = self.plan.timer_device
        if self.plan.tick_shots and not self.plan.tsc_deadline_msr:      # stateless: one per shot
            shots = np.flatnonzero(role == ck.R_TICK)
            return [(i, max(d, 0), device) for i, d in zip(shots.tolist(), lines["a"][shots].tolist())]
        if self.plan.tsc_deadline_msr:
            wanted = ((role == ck.R_MSR) & (lines["a"] == MSR_TSC_DEADLINE) & (lines["b"] == 1)) | (role == ck.R_TICK)
        else:
            wanted = timer_irq | np.isin(role, (ck.R_HRTIMER_START, ck.R_HRTIMER_CANCEL, ck.R_HRTIMER_EXPIRE,
                                                ck.R_TIMER_EXIT))
        out: list[Extra] = []
        for i in np.flatnonzero(wanted).tolist():
            line = lines[i]
            delay = self._line(int(line["role"]), int(line["cpu"]), int(line["a"]), int(line["b"]),
                               int(line["ts"]), bool(timer_irq[i]))
            if delay is not None:
                out.append((i, max(delay, 0), device))
        return out

    def _line(self, role: int, cpu: int, a: int, b: int, ts: int, timer_irq: bool) -> int | None:
        """The delay of the arming this line makes, None if it makes none."""
        st = self.cpus.setdefault(cpu, _Cpu())
        if role == ck.R_TICK:        # with TSC-deadline writes: the delay of the next one
            st.shot = a
            return None
        if role == ck.R_MSR:
            delay, st.shot = st.shot, DELAY_UNKNOWN
            return delay
        if timer_irq:
            st.in_timer_irq = self.exits_recorded
            return DELAY_UNKNOWN
        if role == ck.R_TIMER_EXIT:
            st.in_timer_irq = False
        elif role == ck.R_HRTIMER_START:
            st.pending.pop(a, None)          # a restart replaces the timer's expiry
            earliest = not st.pending or b < min(st.pending.values())
            st.pending[a] = b
            if earliest and not st.in_timer_irq:
                return b - (ts + st.clock_offset) if st.clock_offset is not None else DELAY_UNKNOWN
        elif role == ck.R_HRTIMER_EXPIRE:
            st.pending.pop(a, None)
            st.clock_offset = b - ts
        else:
            st.pending.pop(a, None)
        return None
