"""Per-event payload patterns (data) every format module shares, and detection's first look.

A format module is a `Format` (declared here, registered in `pipeline.tracefile.importers`): a name,
a `detect` test on the first lines of a file, and `patterns`, one regex per guest event it
reads, whose named groups are the event's fields (converted with `int(x, 0)` where listed
in `INT_FIELDS`). Everything else about a line (task, pid, tgid, cpu, timestamp) comes from
`pipeline.tracefile.textlines.parse_line`. The minimal format, to copy:

    FORMAT = Format("mytool", detect=lambda head: ..., patterns={**KERNEL, "sched_switch": re.compile(...)})

The patterns are the specification of what is read from a payload: `chunk.py` applies them
(through the compiled scanner `linescan.py` for the frequent ones, checked against them by the
tests). An event whose name has no pattern is unmapped (counted and listed); so is a
`sys_NAME` event other than `sys_enter_NAME` unless its payload starts with `(` (ftrace's
syscall tracer prints entries `sys_read(fd: 3, …)` and exits `sys_read -> 0x0`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pipeline.config.devices import MARKED
from pipeline.tracefile.textlines import TraceLine, parse_line

_NUM = r"(?:0x[0-9a-fA-F]+|-?\d+)"

# The kernel's own print formats (ftrace, `trace-cmd report -N`, perf script). Searched,
# not matched, in the payload; field names are the tracepoints' own.
KERNEL: dict[str, re.Pattern[str]] = {
    # `prev_comm=sh prev_pid=1642 prev_prio=120 prev_state=S ==> next_comm=… next_pid=46 …`;
    # -R prints the same fields without `==>`, comms may hold spaces (`Web Content`).
    "sched_switch": re.compile(r"prev_comm=(?P<prev_comm>.*?) prev_pid=(?P<prev_pid>\d+) .*?"
                               r"next_comm=(?P<next_comm>.*?) next_pid=(?P<next_pid>\d+)"),
    # `comm=bash pid=1 child_comm=bash child_pid=2` (-R: parent_comm=, parent_pid=)
    "sched_process_fork": re.compile(r"\b(?:parent_)?pid=(?P<parent_pid>\d+) "
                                     r"child_comm=(?P<child_comm>.*?) child_pid=(?P<child_pid>\d+)"),
    # `filename=/bin/ls pid=1234 old_pid=1234`
    "sched_process_exec": re.compile(r"\bpid=(?P<pid>\d+)"),
    # `pages:-1 reason:flush on task switch (0)` (-R: `pages=-1 reason=0`)
    "tlb_flush": re.compile(r"reason[:=](?P<reason>[^(]*?)\s*(?:\((?P<code>\d+)\))?$"),
    # `address=0x7f12… ip=0x… error_code=0x6`
    "page_fault_user": re.compile(rf"address=(?P<address>{_NUM}).*?error_code=(?P<error_code>{_NUM})"),
    "page_fault_kernel": re.compile(rf"address=(?P<address>{_NUM}).*?error_code=(?P<error_code>{_NUM})"),
    # `irq=28 name=radeon`
    "irq_handler_entry": re.compile(r"irq=(?P<vector>\d+)"),
    # raw_syscalls: `NR 3 (3, bfd0…, …)` (-R: `id=3 args=…`)
    "sys_enter": re.compile(r"(?:NR |id=)(?P<id>-?\d+)"),
}
# irq_vectors:* entry events (arch/x86/include/asm/trace/irq_vectors.h): `vector=236`.
IRQ_VECTOR_ENTRIES = ("local_timer_entry", "spurious_apic_entry", "error_apic_entry",
                      "x86_platform_ipi_entry", "irq_work_entry", "reschedule_entry",
                      "call_function_entry", "call_function_single_entry",
                      "threshold_apic_entry", "deferred_error_apic_entry", "thermal_apic_entry")
KERNEL.update({name: re.compile(r"vector=(?P<vector>\d+)") for name in IRQ_VECTOR_ENTRIES + ("local_timer_exit",)})
_HEX = r"(?:0x)?[0-9a-fA-F]+"
_ADDRESS = r"hrtimer=(?P<hrtimer>(?:0x)?[0-9a-fA-F]+)"
KERNEL.update({
    # power:cpu_idle (include/trace/events/power.h): `state=1 cpu_id=0`; exit: state=4294967295 (-1)
    "cpu_idle": re.compile(r"state=(?P<state>\d+)"),
    # msr:write_msr/read_msr (arch/x86/include/asm/trace/msr.h, "%x, value %llx"): `c0000100, value 7fbde20ebc40`
    # (-R: `msr=0xc0000100 val=…`)
    "write_msr": re.compile(rf"^(?:msr=)?(?P<msr>{_HEX})\b"),
    "read_msr": re.compile(rf"^(?:msr=)?(?P<msr>{_HEX})\b"),
    # Xenomai cobalt_tick_shot, as trace-cmd prints it without a plugin:
    # `[FAILED TO PARSE] secs=414 nsecs=773254996 delta=1359928` (delta: ns to the shot)
    "cobalt_tick_shot": re.compile(r"delta=(?P<delta>-?\d+)"),
    # Dovetail's interrupt pipeline and the irq handler's exit: `irq=33`
    "irq_pipeline_entry": re.compile(r"irq=(?P<vector>\d+)"),
    "irq_handler_exit": re.compile(r"irq=(?P<vector>\d+)"),
    # ipi:ipi_entry `(Rescheduling interrupts)`; ipi_raise `target_mask=00000000,00000005 (…)`;
    # ipi_send_cpu `cpu=1 callsite=… callback=…`; ipi_send_cpumask `cpumask=0-3 callsite=…`
    "ipi_entry": re.compile(r"(?P<reason>.*)"),
    "ipi_raise": re.compile(r"target_mask=(?P<mask>[0-9a-fA-F,]+)"),
    "ipi_send_cpu": re.compile(r"cpu=(?P<cpu>\d+)"),
    "ipi_send_cpumask": re.compile(r"cpumask=(?P<cpulist>[0-9,-]*)"),
    # `prev_name=ROOT/0 prev_pid=0 … ==> next_name=LRT-Main next_pid=413 next_prio=1`
    "cobalt_switch_context": re.compile(r"next_name=(?P<next_comm>.*?) next_pid=(?P<next_pid>\d+)"),
    # include/trace/events/timer.h: `hrtimer=0xffff… function=tick_sched_timer/0x0 expires=414709209720 …`
    "hrtimer_start": re.compile(rf"{_ADDRESS} .*?\bexpires=(?P<expires>\d+)"),
    "hrtimer_cancel": re.compile(_ADDRESS),
    "hrtimer_expire_entry": re.compile(rf"{_ADDRESS} .*?\bnow=(?P<now>\d+)"),   # older kernels: function first
    # include/trace/events/workqueue.h: `work struct=0x… function=e1000_watchdog workqueue=events …`
    # and `work struct 0x…: function e1000_watchdog`
    "workqueue_queue_work": re.compile(r"\bfunction[= ](?P<function>[^\s/+]+)"),
    "workqueue_execute_start": re.compile(r"\bfunction[= ](?P<function>[^\s/+]+)"),
    # include/trace/events/napi.h: `napi poll on napi struct 0x… for device eth0 work 2 budget 64`
    "napi_poll": re.compile(r"(?:for device |dev_name=)(?P<device>\S+) (?:work |work=)(?P<work>\d+)"),
})
# Events the device rules (configs/devices/*.toml, pipeline.config.devices.MARKED) count by
# name, whatever their payload.
KERNEL.update({name: re.compile("") for name in MARKED})
# syscalls:sys_enter_<name> (`fd: 0x3, buf: …`; -R may print `__syscall_nr=3`) and the
# ftrace syscall tracer's `sys_read(fd: 3, …)`: the number only where it is printed.
SYSCALL_ENTER = re.compile(r"(?:__syscall_nr[=:]\s*(?P<id>-?\d+))?")

INT_FIELDS = frozenset({"prev_pid", "next_pid", "parent_pid", "child_pid", "pid", "code",
                        "address", "error_code", "vector", "id", "state", "delta", "expires", "now",
                        "work", "cpu"})
# Hexadecimal with or without `0x` (the msr tracepoints print `%x`), kept as the 64 bits in int64.
HEX_FIELDS = frozenset({"msr", "hrtimer"})
# Events whose payload is free text that may run over several lines (trace-cmd wraps them);
# 9p_protocol_dump's own format prints a hex dump on two more lines (include/trace/events/9p.h:
# TP_printk("clnt %lu %s(tag = %d)\n%.3x: %16ph\n%.3x: %16ph\n", …)).
FREE_TEXT = frozenset({"print", "bprint", "bputs", "tracing_mark_write", "console", "9p_protocol_dump"})
# Non-event lines every renderer may print.
HEADER_RE = re.compile(r"^(?:version = \d+|cpus=\d+|CPU \d+ is empty|CPU:\d+ \[.*\]|\s*)$")


@dataclass(frozen=True)
class Head:
    """What detection sees: the first header lines and parsed event lines of a file."""
    headers: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    events: list[TraceLine] = field(default_factory=list)

    def payloads(self, name: str) -> list[str]:
        return [e.payload for e in self.events if e.name == name]


@dataclass(frozen=True)
class Format:
    """One input rendering; see the module docstring."""
    name: str
    detect: Callable[[Head], bool]
    patterns: dict[str, re.Pattern[str]]
    description: str = ""


def fields_of(m: re.Match[str]) -> dict[str, int | str]:
    return {k: (int(v, 0) if k in INT_FIELDS else _signed64(int(v, 16)) if k in HEX_FIELDS else v.strip())
            for k, v in m.groupdict().items() if v is not None}


def _signed64(v: int) -> int:
    """A 64-bit value (a kernel address) as the int64 the columns hold."""
    v &= 2**64 - 1
    return v - 2**64 if v >= 2**63 else v


def read_head(lines: Iterable[str], max_events: int = 200) -> Head:
    """The first header and event lines, for detection."""
    head = Head()
    for text in lines:
        tl = parse_line(text)
        if tl is None:
            if len(head.headers) < 50:
                head.headers.append(text.rstrip("\n"))
            continue
        head.raw.append(text.rstrip("\n"))
        head.events.append(tl)
        if len(head.events) >= max_events:
            break
    return head
