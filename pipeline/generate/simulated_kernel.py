"""A uniprocessor 32-bit Linux 2.6.20 guest kernel, simulated just enough to emit its events.

Tasks are Python generators that call into the Kernel (syscalls, blocking, wakeups,
exit) and `yield` wherever the real kernel could switch away: after blocking, and at
every return to user space (the preemption point). The Kernel advances a native
clock by the profile's [native] costs (native.py) and appends trace rows as it goes.

Rules of emission (the modelled choices):

* Address spaces. Every process has its own asid; threads of one process would share
  it. A switch to a task whose asid differs from the loaded one emits CR3_WRITE
  (value = asid column = the new asid); a switch within one address space emits none.
  No kernel threads run in these benchmarks, so none is modelled.
* Touches. After each switch a new quantum begins: the first access to each page in
  the quantum emits one TOUCH (arg 1 if that access writes), later ones nothing.
  Pages come from layout.py: user pages of the process, global kernel text per code
  path, the task's task_struct and kernel stack, the runqueue, channel structures and
  message buffers. The asid column of every row is the loaded address space.
* Syscalls emit SYSCALL (i386 numbers) on entry; a blocked call is still one call.
* Copy-on-write. A process's first write to a page in its `cow` set emits
  PAGE_FAULT (arg 1), PTE_WRITE, then the TOUCH.
* Exit clears every mapped user PTE (one PTE_WRITE each) before the parent reaps.
* Timer. HZ=250 (2.6.20 default): whenever the clock passes a 4 ms boundary the next
  operation boundary takes the tick: IRQ 0x20; mask_and_ack_8259A + enable_8259A_irq
  (in 0x21, out 0x21, out 0x20, out 0x21); then the PIT clocksource read pit_read()
  (outb_p 0x43, inb_p 0x40, inb_p 0x40, each _p followed by out 0x80). The tick
  charges the running task's timeslice.

Scheduling: see SchedPolicy, one policy for every benchmark and group count.
"""
from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.generate import layout as L
from pipeline.generate.native import NativeCosts
from replay.kinds import Kind

NR_EXIT_GROUP, NR_READ, NR_WRITE, NR_WAIT4 = 252, 3, 4, 114

_CR3, _TOUCH, _FAULT, _PTE = int(Kind.CR3_WRITE), int(Kind.TOUCH), int(Kind.PAGE_FAULT), int(Kind.PTE_WRITE)
_IO, _IRQ, _SYSCALL, _HLT = int(Kind.IO), int(Kind.IRQ), int(Kind.SYSCALL), int(Kind.HLT)
TIMER_VECTOR = 0x20
# (port, 1 if out, 1 if followed by the port-0x80 delay)
_TICK_IO = ((0x21, 0, 0), (0x21, 1, 0), (0x20, 1, 0), (0x21, 1, 0),   # i8259A ack + unmask
            (0x43, 1, 1), (0x40, 0, 1), (0x40, 0, 1))                # pit_read(): latch, lo, hi
IO_DELAY_PORT = 0x80

RUNNING, SLEEPING, ZOMBIE = 0, 1, 2


@dataclass(frozen=True)
class SchedPolicy:
    """The 2.6.20 O(1) scheduler, reduced to what decides who runs after a wakeup.

    One FIFO per priority; the best priority runs. prio = static_prio - bonus with
    bonus = sleep_avg * max_bonus / max_sleep_avg - max_bonus / 2 (integers, so one
    bonus step is 100 ms of sleep_avg). sleep_avg grows by the time slept, up to the
    cap, and shrinks by the time run divided by the current bonus level (2.6.20
    charges run_time / CURRENT_BONUS). The model charges the run continuously: a
    task's priority, when compared or requeued, reflects the run it has had so far.
    A woken task preempts the running one iff its priority is strictly better
    (TASK_PREEMPTS_CURR); a preempted task keeps its place at the head of its queue
    (O(1) never dequeued it); a task whose timeslice has run out gets a new one at
    the tail. Every task starts at the cap (see child_sleep_avg_ns). The outcome: a
    task that has just slept beats one that has been running since it last slept,
    so a woken receiver preempts its sender.

    Not modelled: the expired array, TIMESLICE_GRANULARITY round robin, the on-runqueue
    sleep credit, TASK_NONINTERACTIVE (pipe) sleeps, the timeslice split at fork,
    nice levels, SMP. The same policy runs every benchmark and group count.
    """

    name: str = "o1-2.6.20"                      # short name recorded in trace metadata
    hz: int = 250                                # CONFIG_HZ default of 2.6.20: one tick per 4 ms
    timeslice_ns: int = 100_000_000              # DEF_TIMESLICE of a nice-0 task
    max_sleep_avg_ns: int = 1_000_000_000        # MAX_SLEEP_AVG = DEF_TIMESLICE * MAX_BONUS
    max_bonus: int = 10                          # MAX_BONUS: 25% of the 40 nice levels
    static_prio: int = 120                       # nice 0
    # Initial sleep_avg of every task. 2.6.20's fork gives a child 95% of its parent's bonus
    # level (900 ms for a parent at the cap); with 100-ms bonus steps that would leave
    # senders and receivers tied for the first ~100 ms of sleep, a bulk-transfer regime in
    # which hackbench 1 (0.25 s natively) would finish in ~0.1 s. Starting at the cap is
    # the documented choice that reproduces the seed's switch-heavy regime (MODEL.md §3).
    child_sleep_avg_ns: int = 1_000_000_000

    @property
    def tick_ns(self) -> int:
        return 1_000_000_000 // self.hz

    def level(self, sleep_avg: int) -> int:
        """CURRENT_BONUS: 0..max_bonus."""
        return sleep_avg * self.max_bonus // self.max_sleep_avg_ns

    def prio(self, sleep_avg: int) -> int:
        """effective_prio(): lower is better."""
        return self.static_prio - (self.level(sleep_avg) - self.max_bonus // 2)

    def charged(self, sleep_avg: int, run_ns: int) -> int:
        """sleep_avg after running run_ns."""
        return max(0, sleep_avg - run_ns // max(1, self.level(sleep_avg)))

    def slept(self, sleep_avg: int, sleep_ns: int) -> int:
        """sleep_avg after sleeping sleep_ns."""
        return min(self.max_sleep_avg_ns, sleep_avg + sleep_ns)


@dataclass(eq=False)
class Task:
    """A schedulable task and the kernel state the simulation keeps for it."""

    pid: int
    asid: int
    name: str
    kpages: tuple[tuple[int, int], ...]      # task_struct and kernel stack pages, written
    sleep_avg: int
    prio: int
    timeslice: int
    parent: Task | None = None
    body: Iterator[None] | None = None
    state: int = SLEEPING
    slept_at: int = 0                        # when the current sleep began
    ran_at: int = 0                          # when last switched in
    cow: set[int] = field(default_factory=set)
    zombies: list[Task] = field(default_factory=list)
    child_wait: list[Task] = field(default_factory=list)
    ctx: int = 0                             # packed (asid, pid) for trace rows


class RunQueue:
    """One FIFO per priority with a bitmap of non-empty ones, as the O(1) scheduler."""

    def __init__(self) -> None:
        self._queues: list[deque[Task]] = [deque() for _ in range(140)]
        self._bits = 0

    def push(self, task: Task, head: bool = False) -> None:
        q = self._queues[task.prio]
        q.appendleft(task) if head else q.append(task)
        self._bits |= 1 << task.prio

    def pop(self) -> Task | None:
        if not self._bits:
            return None
        prio = (self._bits & -self._bits).bit_length() - 1
        q = self._queues[prio]
        task = q.popleft()
        if not q:
            self._bits &= ~(1 << prio)
        return task


class Kernel:
    """The simulated guest: native clock, scheduler, trace rows."""

    def __init__(self, costs: NativeCosts, policy: SchedPolicy = SchedPolicy()) -> None:
        self.c = costs
        self.p = policy
        self.heap = L.KernelHeap()
        self.rq = RunQueue()
        self.now = 0
        self.t0 = 0                              # native time at trace start
        self.next_tick = policy.tick_ns
        self.rows = array("q")                   # flat (t_ns, value, packed kind/arg/asid/pid)
        self.current: Task | None = None
        self.cr3 = -1
        self.seen: set[int] = set()              # pages touched in the current quantum
        self.ctx = 0
        self.need_resched = False
        self.expired = False                     # the current task's timeslice ran out
        self.stopped = False
        self.switches = 0
        self.cr3_writes = 0
        self._next_pid = 1000
        self._next_asid = 1

    # --- tasks -----------------------------------------------------------------------
    def spawn(self, name: str, body: Callable[[Task], Iterable[None]], parent: Task | None = None,
              asid: int | None = None) -> Task:
        """A new task (a new process unless `asid` names an existing address space),
        asleep until woken. `body(task)` is its program; when it returns the task exits."""
        if asid is None:
            asid, self._next_asid = self._next_asid, self._next_asid + 1
        pid, self._next_pid = self._next_pid, self._next_pid + 1
        avg = self.p.child_sleep_avg_ns
        task = Task(pid=pid, asid=asid, name=name, kpages=((self.heap.pages(), 1), (self.heap.pages(2) + 1, 1)),
                    sleep_avg=avg, prio=self.p.prio(avg), timeslice=self.p.timeslice_ns, parent=parent,
                    ctx=(asid << 16) | (pid << 40))
        task.body = self._program(task, body)
        return task

    @staticmethod
    def body_of(program: Callable[..., Iterable[None]], *args: Any) -> Callable[[Task], Iterable[None]]:
        """A task body running `program(*args)`, its arguments bound now (not when a loop
        variable has moved on, as a lambda in a loop would bind them)."""
        return lambda _task: program(*args)

    def _program(self, task: Task, body: Callable[[Task], Iterable[None]]) -> Iterator[None]:
        yield from body(task)
        if task.parent is None:
            self.stopped = True
        else:
            self.exit()
        yield

    @property
    def running(self) -> Task:
        """The task on the CPU: run() puts one there before any event happens."""
        assert self.current is not None
        return self.current

    def run(self, first: Task) -> None:
        """Run from `first` (already on the CPU) until a root task returns or stop()."""
        first.state = RUNNING
        self.current, self.cr3, self.ctx = first, first.asid, first.ctx
        while not self.stopped:
            task = self.running
            next(task.body)  # type: ignore[arg-type]  # spawn() gives every task its body
            if not self.stopped and (task.state != RUNNING or self.need_resched):
                self.schedule()

    def enqueue(self, task: Task) -> None:
        """Make a new task runnable without a wakeup (set-up before run())."""
        task.state = RUNNING
        self.rq.push(task)

    def stop(self) -> None:
        self.stopped = True

    def restart_trace(self) -> None:
        """Drop what was emitted so far (a warm-up) and start the trace clock here."""
        self.rows = array("q")
        self.t0 = self.now
        self.switches = self.cr3_writes = 0

    @property
    def elapsed(self) -> int:
        """Native ns since the trace started."""
        return self.now - self.t0

    # --- emission and time ----------------------------------------------------------------
    def emit(self, kind: int, value: int, arg: int = 0) -> None:
        self.rows.extend((self.now, value, self.ctx | kind | (arg << 8)))

    def spend(self, ns: int) -> None:
        """Advance the native clock; a passed tick boundary takes the timer interrupt."""
        self.now += ns
        if self.now >= self.next_tick:
            self._ticks()

    def halt(self) -> None:
        """The idle loop's safe_halt(): HLT until the next tick boundary, whose timer
        interrupt ends it (2.6.20 i386 has no NO_HZ, so every tick wakes the CPU). The
        wakeup starts a new quantum of page accesses: natively they hit the TLB, but a
        mode that flushes on the hlt exit must see them to refill it."""
        self.emit(_HLT, self.next_tick - self.now)
        self.now = self.next_tick
        self.seen = set()
        self._ticks()

    def touch(self, pages: Iterable[tuple[int, int]]) -> None:
        """TOUCH each page not yet accessed in this quantum."""
        seen = self.seen
        for vpn, write in pages:
            if vpn not in seen:
                seen.add(vpn)
                self.rows.extend((self.now, vpn, self.ctx | _TOUCH | (write << 8)))
                self.now += self.c.touch

    def syscall(self, nr: int) -> None:
        self.emit(_SYSCALL, nr)
        self.touch(L.PATH_SYSCALL)
        self.touch(self.running.kpages)
        self.spend(self.c.syscall)

    def user(self) -> None:
        """One iteration of the benchmark's user-mode loop (COW faults on first writes)."""
        task = self.running
        if task.cow:
            self._cow_faults(task)
        self.touch(L.USER_HOT)
        self.spend(self.c.user)

    def _cow_faults(self, task: Task) -> None:
        for vpn, write in L.USER_HOT:
            if write and vpn in task.cow:
                task.cow.discard(vpn)
                self.touch(L.PATH_FAULT)
                self.emit(_FAULT, vpn, 1)
                self.spend(self.c.page_fault)
                self.emit(_PTE, vpn)
                self.spend(self.c.pte_write)
                self.touch(((vpn, 1),))

    def _ticks(self) -> None:
        while self.now >= self.next_tick:
            self.next_tick += self.p.tick_ns
            self._tick()

    def _tick(self) -> None:
        c = self.c
        self.emit(_IRQ, TIMER_VECTOR)
        self.touch(L.PATH_TICK)
        for port, out, delay in _TICK_IO:
            self.emit(_IO, port, out)
            self.now += c.io_port
            if delay:
                self.emit(_IO, IO_DELAY_PORT, 1)
                self.now += c.io_delay
        self.now += c.tick
        task = self.running
        task.timeslice -= self.p.tick_ns
        if task.timeslice <= 0:          # scheduler_tick(): new slice, to the tail
            task.timeslice = self.p.timeslice_ns
            self.expired = True
            self.need_resched = True

    def columns(self) -> dict[str, np.ndarray]:
        """The rows as tracefile.format.SCHEMA columns."""
        flat = np.frombuffer(self.rows, dtype=np.int64).reshape(-1, 3)
        packed = flat[:, 2]
        return {
            "t_ns": flat[:, 0] - self.t0,
            "cpu": np.zeros(len(flat), dtype=np.uint16),
            "kind": (packed & 0xFF).astype(np.uint8),
            "value": flat[:, 1].astype(np.uint64),
            "asid": ((packed >> 16) & 0xFFFFFF).astype(np.uint32),
            "pid": (packed >> 40).astype(np.int32),
            "arg": ((packed >> 8) & 0xFF).astype(np.uint32),
        }

    # --- sleeping and waking -----------------------------------------------------------
    def block(self, waitq: list[Task]) -> None:
        """Put the current task to sleep on `waitq`; the caller must yield next."""
        task = self.running
        task.state = SLEEPING
        waitq.append(task)

    def wake_all(self, waitq: list[Task]) -> None:
        """wake_up() of a wait queue: every sleeper is woken and removed, the last to
        sleep first (add_wait_queue() puts a sleeper at the head of the list)."""
        if waitq:
            sleepers = waitq[::-1]
            waitq.clear()
            for task in sleepers:
                self.wake(task)

    def wake(self, task: Task) -> None:
        """try_to_wake_up(): sleep credit, enqueue, preempt the runner if better."""
        self.touch(L.PATH_WAKE)
        self.touch(task.kpages[:1])
        self.spend(self.c.wakeup)
        p = self.p
        task.sleep_avg = p.slept(task.sleep_avg, self.now - task.slept_at)
        task.prio = p.prio(task.sleep_avg)
        task.state = RUNNING
        self.rq.push(task)
        cur = self.running
        if task.prio < p.prio(p.charged(cur.sleep_avg, self.now - cur.ran_at)):
            self.need_resched = True

    def exit(self) -> None:
        """exit_group(): tear the address space down, become a zombie, wake the parent."""
        task = self.running
        self.emit(_SYSCALL, NR_EXIT_GROUP)
        self.touch(L.PATH_EXIT)
        for vpn in L.USER_MAPPED:
            self.emit(_PTE, vpn)
            self.now += self.c.pte_write
        self.spend(self.c.exit)
        task.state = ZOMBIE
        assert task.parent is not None   # a root task's return stops the kernel (_program)
        task.parent.zombies.append(task)
        self.wake_all(task.parent.child_wait)

    def wait4(self) -> Iterator[None]:
        """wait4(): sleep until a child is a zombie, then reap it."""
        self.syscall(NR_WAIT4)
        task = self.running
        while not task.zombies:
            self.block(task.child_wait)
            yield
        child = task.zombies.pop(0)
        self.touch(L.PATH_EXIT)
        self.touch(child.kpages)
        self.spend(self.c.reap)

    # --- scheduling ----------------------------------------------------------------------
    def schedule(self) -> None:
        """Switch out the current task (charging its run) and run the best runnable one."""
        prev, p = self.running, self.p
        prev.sleep_avg = p.charged(prev.sleep_avg, self.now - prev.ran_at)
        prev.prio = p.prio(prev.sleep_avg)
        if prev.state != RUNNING:
            prev.slept_at = self.now
        else:
            self.rq.push(prev, head=not self.expired)
        self.need_resched = self.expired = False
        nxt = self.rq.pop()
        if nxt is None:
            raise RuntimeError(f"guest deadlock: nothing runnable after {prev.name} at {self.now} ns")
        nxt.ran_at = self.now
        if nxt is not prev:
            self._switch_to(nxt)

    def _switch_to(self, nxt: Task) -> None:
        """context_switch(): load the address space if it differs, start a new quantum."""
        self.switches += 1
        self.current, self.ctx = nxt, nxt.ctx
        if nxt.asid != self.cr3:
            self.cr3 = nxt.asid
            self.cr3_writes += 1
            self.emit(_CR3, nxt.asid)
        self.spend(self.c.switch)
        self.seen = set()
        self.touch(L.PATH_SWITCH)
        self.touch(nxt.kpages)
