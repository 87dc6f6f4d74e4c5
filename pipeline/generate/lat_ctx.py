"""lmbench lat_ctx -s 0 N on the simulated UP 2.6.20 guest.

N processes in a ring of pipes pass a 4-byte token: process i reads it from pipe i
and writes it to pipe i+1 (mod N); with -s 0 nothing is summed in between. With two
processes every pass is one context switch and one CR3_WRITE; with more, a woken
reader preempts its writer and preempted writers run again before the token comes
round, so a lap takes more than N switches (ops counts the switches made). The
trace starts after a warm-up lap (lmbench warms up too), just after a read()
returned the token, and ends when the `switches`-th switch's read() returns.

lmbench reports (ring time - the same pipe reads and writes done by one process) /
switches: the pipe work is subtracted. So the native clock here charges nothing for
the syscall entry, the pipe read/write and the user loop (their events are still
emitted), only what the switch adds: the sleep and wakeup, schedule() and the
context switch, and the first touch of every page in the new quantum. That is
what the per-op native figure (1.11 us on the seed's machine) is made of.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from pipeline.generate.ipc import Buffers, Pipe
from pipeline.generate.simulated_kernel import Kernel, SchedPolicy
from pipeline.generate.native import NativeCosts
from pipeline.config.cost_profile import Profile
from pipeline.tracefile.format import TraceMeta
from replay.mode import Guest

TOKEN = 4                   # sizeof(int): the token lat_ctx passes


def generate_lat_ctx(procs: int, switches: int,
                     profile: Profile) -> tuple[dict[str, np.ndarray], TraceMeta]:
    """Trace of `lat_ctx -s 0 procs`, `switches` context switches long."""
    k = simulate_lat_ctx(procs, switches, NativeCosts.from_profile(profile))
    meta = TraceMeta(
        workload=f"lat-ctx-{procs}", native_ns=k.elapsed, ops=switches, op_unit="context switch",
        headline="per_op",
        source={"tool": "pipeline generate lat-ctx", "args": {"procs": procs, "switches": switches},
                "profile": profile.name, "scheduler": SchedPolicy().name},
        guest=Guest(), cpus=(0,))
    return k.columns(), meta


def simulate_lat_ctx(procs: int, switches: int, costs: NativeCosts,
                     policy: SchedPolicy = SchedPolicy()) -> Kernel:
    """The finished kernel; its rows are the trace."""
    if procs < 2 or switches < 1:
        raise ValueError(f"lat_ctx needs procs >= 2 and switches >= 1, got {procs}, {switches}")
    subtracted = replace(costs, syscall=0, user=0, pipe_read=0, pipe_write=0)
    k = Kernel(subtracted, policy)
    bufs = Buffers(k.heap)
    pipes = [Pipe(k, bufs) for _ in range(procs)]
    ring = _Ring(warmup=procs, switches=switches)
    tasks = [k.spawn(f"lat_ctx.{i}", k.body_of(_member, k, ring, pipes[i], pipes[(i + 1) % procs], i == 0))
             for i in range(procs)]
    for t in tasks[1:]:
        k.enqueue(t)          # the warm-up lap puts them to sleep in read()
    k.run(tasks[0])
    return k


@dataclass
class _Ring:
    """When to start the trace (after the warm-up lap) and when to stop it."""

    warmup: int
    switches: int
    tracing: bool = False

    def done(self, k: Kernel) -> bool:
        """Called after each read(): restart the trace after warm-up; True at the end."""
        if self.tracing:
            return k.switches >= self.switches
        if k.switches >= self.warmup:
            k.restart_trace()
            self.tracing = True
        return False


def _member(k: Kernel, ring: _Ring, inp: Pipe, out: Pipe, has_token: bool) -> Iterator[None]:
    if has_token:
        k.user()
        yield from out.write(TOKEN)
        yield
    while True:
        k.user()
        yield from inp.read(TOKEN)
        if ring.done(k):
            k.stop()
        yield
        k.user()
        yield from out.write(TOKEN)
        yield
