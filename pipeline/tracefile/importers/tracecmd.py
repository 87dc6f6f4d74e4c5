"""`trace-cmd report` in its three renderings (one tool, so one module, three formats).

No flags column; a long trace-clock count may be glued to the CPU field; header lines
`version = 6`, `cpus=N`, `CPU 3 is empty`. The renderings differ in their payloads:

  trace-cmd     default: plugins render some events, e.g. the compact sched_switch
                `prev:pid [prio] S ==> next:pid [prio]` and `kvm_exit: reason X rip …`
  trace-cmd-N   -N, no plugins: the kernel's print formats (`prev_comm=… ==> next_comm=…`)
  trace-cmd-R   -R, raw: every field as `name=value` (`prev_comm=… prev_state=64 next_comm=…`,
                `kvm_exit: exit_reason=1 …`, `tlb_flush: pages=-1 reason=0`)
"""
from __future__ import annotations

import re

from pipeline.tracefile.importers.formats import KERNEL, Format, Head
from pipeline.tracefile.importers.ftrace import looks_ftrace
from pipeline.tracefile.importers.perf import looks_perf

COMPACT_SWITCH = re.compile(r"^(?P<prev_comm>.*):(?P<prev_pid>\d+) \[-?\d+\] .*?==> "
                            r"(?P<next_comm>.*):(?P<next_pid>\d+) \[-?\d+\]")


def _tracecmd(head: Head) -> bool:
    return not looks_perf(head) and not looks_ftrace(head)


def _raw(head: Head) -> bool:
    switch = head.payloads("sched_switch")
    return _tracecmd(head) and (
        any("prev_comm=" in p and "==>" not in p for p in switch)
        or any(p.startswith("exit_reason=") for p in head.payloads("kvm_exit")))


def _noplugins(head: Head) -> bool:
    return _tracecmd(head) and (
        any("prev_comm=" in p and "==>" in p for p in head.payloads("sched_switch"))
        or any(re.match(r"vcpu \d+ reason ", p) for p in head.payloads("kvm_exit")))


DEFAULT = Format("trace-cmd", _tracecmd, {**KERNEL, "sched_switch": COMPACT_SWITCH},
                 "trace-cmd report (plugins)")
NOPLUGINS = Format("trace-cmd-N", _noplugins, KERNEL, "trace-cmd report -N")
RAW = Format("trace-cmd-R", _raw, KERNEL, "trace-cmd report -R")
# Most specific first: the default matches every trace-cmd file.
FORMATS = (RAW, NOPLUGINS, DEFAULT)
