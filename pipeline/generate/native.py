"""Native guest-operation costs that timestamp generated traces (a profile's [native] table).

The generators advance a native clock by these costs as the simulated guest kernel
works; the trace's t_ns and native_ns come from nothing else. What each cost covers
is stated once, here; the figures and their reasoning live in the profile's TOML.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from pipeline.config.errors import ConfigError
from pipeline.config.cost_profile import Profile


@dataclass(frozen=True)
class NativeCosts:
    """Native costs in whole ns; field names are the [native] keys without `_ns`."""

    switch: int         # schedule() + context_switch() of one switch, TLB refills excluded
    wakeup: int         # try_to_wake_up() of one sleeper, enqueue and preemption check
    touch: int          # first access to a page in a quantum: TLB refill and cache misses
    syscall: int        # sysenter entry/exit and fd lookup of one read()/write()
    user: int           # user-mode work of one benchmark loop iteration
    unix_send: int      # unix_stream_sendmsg() of 100 bytes: skb alloc, copy, queue
    unix_recv: int      # unix_stream_recvmsg() of 100 bytes: copy, unlink, free skb
    pipe_write: int     # pipe_write() of a small message into a page buffer
    pipe_read: int      # pipe_read() of a small message from a page buffer
    page_fault: int     # copy-on-write fault: allocate, copy 4 KiB, map (PTE store excluded)
    pte_write: int      # one guest page-table entry store
    io_port: int        # one i8259A or PIT port access over the ISA/LPC bus
    io_delay: int       # one port-0x80 write (the outb_p/inb_p I/O delay)
    tick: int           # timer interrupt handler, port I/O excluded
    exit: int           # do_exit() of a benchmark child, PTE clears excluded
    reap: int           # wait4() reaping one zombie child (release_task)

    @classmethod
    def from_profile(cls, profile: Profile) -> NativeCosts:
        """The profile's [native] costs; every field is required."""
        table = profile.native
        values = {}
        for f in fields(cls):
            key = f"{f.name}_ns"
            if key not in table:
                raise ConfigError(profile.name, f"native.{key}",
                                  "missing: trace generators need every native cost")
            if table[key] < 0:
                raise ConfigError(profile.name, f"native.{key}", "must not be negative")
            values[f.name] = round(table[key])
        return cls(**values)
