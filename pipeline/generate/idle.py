"""An idle uniprocessor 2.6.20 guest: nothing runs but the timer tick.

The idle task halts until the next tick boundary; the tick's interrupt wakes it, runs
the same handler as in every generated trace (simulated_kernel.py: IRQ 0x20, the i8259A ack and
unmask, the PIT clocksource read with its port-0x80 delays) and the idle loop halts
again. The CPU never switches address space. What the modes differ in is the host CPU
each tick costs, so the trace's headline is host CPU (% of its span), the figure the
seed quotes for an idle guest ("qemu CPU utilization", MODEL.md §1).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from pipeline.generate.simulated_kernel import Kernel, SchedPolicy
from pipeline.generate.native import NativeCosts
from pipeline.config.cost_profile import Profile
from pipeline.tracefile.format import TraceMeta
from replay.mode import Guest


def generate_idle(ticks: int, hz: int, profile: Profile) -> tuple[dict[str, np.ndarray], TraceMeta]:
    """Trace of an idle guest at CONFIG_HZ=`hz`, `ticks` timer ticks long."""
    policy = SchedPolicy(hz=hz)
    k = simulate_idle(ticks, NativeCosts.from_profile(profile), policy)
    meta = TraceMeta(
        workload=f"idle-hz{hz}", native_ns=k.elapsed, ops=ticks, op_unit="timer tick", headline="cpu",
        source={"tool": "pipeline generate idle", "args": {"ticks": ticks, "hz": hz},
                "profile": profile.name, "scheduler": policy.name},
        guest=Guest(), cpus=(0,))
    return k.columns(), meta


def simulate_idle(ticks: int, costs: NativeCosts, policy: SchedPolicy) -> Kernel:
    """The finished kernel: `ticks` rounds of halt, tick; its rows are the trace."""
    if ticks < 1 or policy.hz < 1:
        raise ValueError(f"an idle trace needs ticks >= 1 and hz >= 1, got {ticks}, {policy.hz}")
    k = Kernel(costs, policy)
    k.run(k.spawn("swapper", lambda task: _idle(k, ticks)))
    return k


def _idle(k: Kernel, ticks: int) -> Iterator[None]:
    for _ in range(ticks):
        k.halt()
        yield
