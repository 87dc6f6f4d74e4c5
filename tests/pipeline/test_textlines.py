"""Golden tests for the shared text-trace line prefix (snippets copied from shared/samples)."""
from __future__ import annotations

import pytest

from pipeline.tracefile.textlines import TraceLine, parse_line
from tests.pipeline.tracefiles import SAMPLES, needs_samples

GOLDEN = [
    # trace-cmd report, raw TSC glued to the CPU field
    (" qemu-system-x86-533825 [005]303280081981165: kvm_exit:             reason EXTERNAL_INTERRUPT rip 0xffffffffba200cf0 info 0 0",
     TraceLine("qemu-system-x86", 533825, 5, 303280081981165, "count", "kvm_exit",
               "reason EXTERNAL_INTERRUPT rip 0xffffffffba200cf0 info 0 0")),
    # ftrace with latency flags, task name with a space
    ("     Web Content-2711  [003] d... 26186.336632: sched_waking: comm=Timer pid=2745 prio=120 target_cpu=001",
     TraceLine("Web Content", 2711, 3, 26186_336632000, "ns", "sched_waking",
               "comm=Timer pid=2745 prio=120 target_cpu=001")),
    # task name with a dash and digits
    ("    kworker/2:0H-24678 [002] d... 26186.336680: sched_switch: prev_comm=kworker/2:0H prev_pid=24678",
     TraceLine("kworker/2:0H", 24678, 2, 26186_336680000, "ns", "sched_switch", "prev_comm=kworker/2:0H prev_pid=24678")),
    # atrace's TGID column
    ("          <idle>-0     (-----) [001] d..3 214168.479898: sched_switch: prev_comm=swapper/1 prev_pid=0",
     TraceLine("<idle>", 0, 1, 214168_479898000, "ns", "sched_switch", "prev_comm=swapper/1 prev_pid=0")),
    # trace-cmd compact sched_switch, no flags column
    ("              ls-4734  [002] 106439.675591: sched_switch:         trace-cmd:4734 [120] R ==> migration/2:18 [0]",
     TraceLine("ls", 4734, 2, 106439_675591000, "ns", "sched_switch", "trace-cmd:4734 [120] R ==> migration/2:18 [0]")),
    # perf script without CPU column, subsystem in the event name
    ("swapper     0 194010.024867: sched:sched_switch: prev_comm=swapper/1 prev_pid=0 prev_prio=120",
     TraceLine("swapper", 0, None, 194010_024867000, "ns", "sched:sched_switch", "prev_comm=swapper/1 prev_pid=0 prev_prio=120")),
    # perf script with CPU column, empty payload (a callchain follows)
    ("perf 28039 [000] 194010.024771: cycles: ",
     TraceLine("perf", 28039, 0, 194010_024771000, "ns", "cycles", "")),
    # a synthetic vCPU thread name as MODEL.md §5 describes it
    ("       CPU 0/KVM-1234  [005] 1.000000001: kvm_entry: vcpu 0, rip 0xffffffff81000000",
     TraceLine("CPU 0/KVM", 1234, 5, 1_000000001, "ns", "kvm_entry", "vcpu 0, rip 0xffffffff81000000")),
]

NOT_EVENTS = ["cpus=20", "version = 6", "CPU 3 is empty", "", "\n", " gid=4", "# tracer: nop",
              "#           TASK-PID   CPU#  ||||    TIMESTAMP  FUNCTION",
              "\tffffffff8104f45a native_write_msr_safe ([kernel.kallsyms])"]


@pytest.mark.parametrize("line,expected", GOLDEN)
def test_golden(line: str, expected: TraceLine) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize("line", NOT_EVENTS)
def test_not_event_lines(line: str) -> None:
    assert parse_line(line) is None


def test_event_name_without_subsystem() -> None:
    assert parse_line(GOLDEN[5][0]).name == "sched_switch"


@needs_samples
def test_sample_files_every_event_line() -> None:
    """Every line the samples' own shape marks as an event line parses, and nothing else."""
    f = SAMPLES / "ARM-software_trappy__tests_trace_not_raw.txt"
    lines = f.read_text().splitlines()
    expected = sum(1 for line in lines if "] " in line and ": " in line and line.startswith(" "))
    assert sum(parse_line(line) is not None for line in lines) == expected
