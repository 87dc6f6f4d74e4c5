"""hackbench (Rusty Russell, 2001) on the simulated UP 2.6.20 guest.

`hackbench [-pipe] N`: N groups of 20 receivers and 20 senders, all forked by one
parent. Receiver i of a group owns the read end of socketpair(AF_UNIX, SOCK_STREAM)
i (a pipe with -pipe); every sender of the group holds all 20 write ends and writes
`loops` rounds of one 100-byte message to each receiver in turn; each receiver reads
20 * loops messages of 100 bytes, one read() each. Every child then exits; the parent
reaps all 40N with wait().

The trace covers what hackbench times: from the start signal (the parent's one-byte
write that wakes the children polling for it, after all were forked and reported
ready) until the last child is reaped. Each child's first writes to its data and
stack pages after the start take copy-on-write faults (kernel.Task.cow), and each
child's exit clears its user PTEs before the parent reaps it. Children are forked
(and so start sleeping) in hackbench's order, per group the receivers then the
senders; the start byte wakes them last-forked first (kernel.Kernel.wake_all), so
the first senders write before any receiver waits, until their sockets fill.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.generate import layout as L
from pipeline.generate.ipc import Buffers, Channel, ChannelStats, Pipe, UnixStream
from pipeline.generate.simulated_kernel import NR_WRITE, Kernel, SchedPolicy, Task
from pipeline.generate.native import NativeCosts
from pipeline.config.cost_profile import Profile
from pipeline.tracefile.format import TraceMeta
from replay.mode import Guest

FDS_PER_GROUP = 20          # num_fds: receivers (and senders) per group
DATASIZE = 100              # bytes per message


@dataclass
class HackbenchRun:
    """A simulated run: the trace columns and what the checks need."""

    columns: dict[str, np.ndarray]
    native_ns: int
    messages: int
    channels: list[ChannelStats]
    senders: list[Task]
    receivers: list[Task]
    switches: int
    cr3_writes: int


def generate_hackbench(groups: int, loops: int, pipe: bool,
                       profile: Profile) -> tuple[dict[str, np.ndarray], TraceMeta]:
    """Trace of `hackbench [-pipe] groups` with `loops` rounds (hackbench.c: 100)."""
    run = simulate_hackbench(groups, loops, pipe, NativeCosts.from_profile(profile))
    name = f"hackbench-{groups}" + ("-pipe" if pipe else "")
    meta = TraceMeta(
        workload=name, native_ns=run.native_ns, ops=run.messages, op_unit="message",
        headline="total",
        source={"tool": "pipeline generate hackbench",
                "args": {"groups": groups, "loops": loops, "pipe": pipe},
                "profile": profile.name, "scheduler": SchedPolicy().name},
        guest=Guest(), cpus=(0,))
    return run.columns, meta


def simulate_hackbench(groups: int, loops: int, pipe: bool, costs: NativeCosts,
                       policy: SchedPolicy = SchedPolicy()) -> HackbenchRun:
    """Run the benchmark on a fresh simulated kernel."""
    if groups < 1 or loops < 1:
        raise ValueError(f"hackbench needs groups >= 1 and loops >= 1, got {groups}, {loops}")
    k = Kernel(costs, policy)
    bufs = Buffers(k.heap)
    start_waiters: list[Task] = []      # in fork order: every child polls for the start byte
    parent = k.spawn("hackbench", lambda t: _parent(k, start_waiters, pipe, 2 * FDS_PER_GROUP * groups))
    channels: list[Channel] = []
    senders: list[Task] = []
    receivers: list[Task] = []
    for _ in range(groups):
        chans = [(Pipe if pipe else UnixStream)(k, bufs) for _ in range(FDS_PER_GROUP)]
        group = [_child(k, parent, "receiver", k.body_of(_receiver, k, ch, FDS_PER_GROUP * loops))
                 for ch in chans]
        group += [_child(k, parent, "sender", k.body_of(_sender, k, chans, loops))
                  for _ in range(FDS_PER_GROUP)]
        channels += chans
        receivers += group[:FDS_PER_GROUP]
        senders += group[FDS_PER_GROUP:]
        start_waiters += group
    k.run(parent)
    return HackbenchRun(columns=k.columns(), native_ns=k.now, messages=len(senders) * FDS_PER_GROUP * loops,
                        channels=[ch.stats for ch in channels], senders=senders, receivers=receivers,
                        switches=k.switches, cr3_writes=k.cr3_writes)


def _child(k: Kernel, parent: Task, name: str, body: Callable[[Task], Iterable[None]]) -> Task:
    """A forked child: its private data and stack pages are still copy-on-write."""
    task = k.spawn(name, body, parent=parent)
    task.cow = set(L.USER_COW)
    return task


def _parent(k: Kernel, start_waiters: list[Task], pipe: bool, children: int) -> Iterator[None]:
    """Write the start byte (waking every polling child), then reap them all."""
    k.user()
    k.syscall(NR_WRITE)
    k.touch(L.PATH_PIPE if pipe else L.PATH_UNIX)
    k.spend(k.c.pipe_write if pipe else k.c.unix_send)
    k.wake_all(start_waiters)
    yield
    for _ in range(children):
        k.user()
        yield from k.wait4()
        yield


def _sender(k: Kernel, chans: list[Channel], loops: int) -> Iterator[None]:
    for _ in range(loops):
        for ch in chans:
            k.user()
            yield from ch.write(DATASIZE)
            yield                       # return to user space: a preemption point


def _receiver(k: Kernel, ch: Channel, messages: int) -> Iterator[None]:
    for _ in range(messages):
        k.user()
        yield from ch.read(DATASIZE)
        yield                           # return to user space: a preemption point
