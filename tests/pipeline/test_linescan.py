"""The compiled chunk parser against the Python specification, line by line.

The reference below is the importer's former per-line path: `parse_line` for the prefix, the
Format's payload regex (`search`) for the fields. Every line of every shared sample and a set of
awkward made-up lines must get the same role and fields from `ChunkParser`."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.tracefile.importers import FORMATS
from pipeline.tracefile.importers import chunk as ck
from pipeline.tracefile.importers.formats import FREE_TEXT, HEADER_RE, SYSCALL_ENTER, fields_of
from pipeline.tracefile.textlines import parse_line
from tests.pipeline.tracefiles import needs_samples, sample_files, sample_text

EXIT, UNMAPPED, PROBLEM, NONE = "exit", "unmapped", "problem", "none"


def reference(fmt, text: str, continuation: bool, clock: dict[int, int]) -> tuple:
    """(kind, pid, tgid, cpu, ts, event, fields) of one line, the old importer's way, plus the
    new rule that an event line earlier than one before it on its CPU is malformed."""
    want = _reference(fmt, text, continuation)
    if want[0] in (NONE, PROBLEM):
        return want
    cpu, ts = max(want[3], 0), want[4]
    if ts < clock.get(cpu, ts):
        return (PROBLEM,)
    clock[cpu] = ts
    return want


def _reference(fmt, text: str, continuation: bool) -> tuple:
    tl = parse_line(text)
    if tl is None:
        ok = continuation or text.startswith(("#", "\t")) or HEADER_RE.match(text)
        return (NONE if ok else PROBLEM,)
    if max(tl.pid, tl.ts, tl.cpu or 0, tl.tgid or 0) >= 2**63:
        return (PROBLEM,)            # the trace's int64 columns cannot hold it
    name, payload = tl.name, tl.payload
    pattern = fmt.patterns.get(name)
    if pattern is None and (name.startswith("sys_enter_") or (name.startswith("sys_") and payload.startswith("("))):
        pattern = SYSCALL_ENTER
    head = (tl.pid, -1 if tl.tgid is None else tl.tgid, -1 if tl.cpu is None else tl.cpu, tl.ts, tl.event)
    if pattern is None:
        return (EXIT if name.startswith("sys_") and payload.startswith("->") else UNMAPPED, *head)
    m = pattern.search(payload)
    try:
        return ("record", *head, fields_of(m)) if m is not None else (PROBLEM,)
    except ValueError:       # `int('028', 0)`: a malformed number
        return (PROBLEM,)


def expected_ab(role: int, f: dict, comm: str) -> tuple:
    """The (a, b, kthread) chunk.py documents for each role."""
    if role == ck.R_SWITCH:
        return int(f["next_pid"]), None, ck.is_kthread_name(str(f["next_comm"]))
    if role == ck.R_EXEC:
        return None, None, ck.is_kthread_name(comm)
    if role == ck.R_FORK:
        return int(f["parent_pid"]), int(f["child_pid"]), None
    if role == ck.R_TLB:
        return int(f.get("code") == 0 or "task switch" in str(f["reason"]) or f["reason"] == "0"), None, None
    if role == ck.R_FAULT:
        return (int(f["address"]) % 2**64) >> 12, int(bool(int(f["error_code"]) & 2)), None
    if role == ck.R_IRQ:
        return int(f["vector"]), None, None
    if role == ck.R_SYSCALL:
        return None, None, None   # checked in test_importers (numbers by name)
    return None, None, None


def check_lines(fmt, lines: list[str], chunk_bytes: int = 1 << 20) -> int:
    data = "".join(line + "\n" for line in lines).encode()
    parser = ck.ChunkParser(fmt, "f", {})
    chunks, start = [], 0
    while start < len(data):                       # whole lines, about chunk_bytes each
        cut = data.find(b"\n", start + chunk_bytes) + 1 or len(data)
        chunks.append(parser.parse(data[start:cut]))
        start = cut
    role = np.concatenate([c.role for c in chunks])
    cols = {k: np.concatenate([getattr(c, k) for c in chunks]) for k in ("pid", "tgid", "cpu", "ts", "a", "b", "kthread")}
    event = np.concatenate([c.event for c in chunks])
    continuation, checked, clock = False, 0, {}
    for i, text in enumerate(lines):
        want = reference(fmt, text, continuation, clock)
        where = f"line {i + 1}: {text!r}"
        if want[0] == NONE:
            assert role[i] == ck.R_NONE, where
            continue
        if want[0] == PROBLEM:
            assert role[i] == ck.R_PROBLEM, where
            if parse_line(text) is not None:
                continuation = parse_line(text).name in FREE_TEXT
            continue
        kind, pid, tgid, cpu, ts, ev = want[:6]
        assert (cols["pid"][i], cols["tgid"][i], cols["cpu"][i], cols["ts"][i]) == (pid, tgid, cpu, ts), where
        assert parser.names[event[i]].event == ev, where
        continuation = parser.names[event[i]].free_text
        if kind == EXIT:
            assert role[i] == ck.R_SYS_EXIT, where
        elif kind == UNMAPPED:
            assert role[i] == ck.R_UNMAPPED, where
        else:
            assert role[i] in ck.RECORDS, where
            a, b, k = expected_ab(int(role[i]), want[6], parse_line(text).comm)
            got = (cols["a"][i], cols["b"][i], cols["kthread"][i])
            assert (a is None or np.uint64(got[0]) == np.uint64(a % 2**64)) and (b is None or got[1] == b) \
                and (k is None or got[2] == k), f"{where}: got {got}, want {(a, b, k)}"
        checked += 1
    return checked


@needs_samples
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name[:50])
def test_samples_line_by_line(path: Path) -> None:
    from pipeline.tracefile.importers import detect
    lines = sample_text(path).splitlines()
    # small chunks: the carry-over between chunks is exercised too
    assert check_lines(detect(path), lines, chunk_bytes=20_000) > 100


TRICKY = [
    # task names with spaces, dashes, digits, colons; optional columns; glued counts
    "     Web Content-2711  [003] d... 26186.336632: sched_waking: comm=x pid=1 prio=120 target_cpu=003",
    " CPU 0/KVM-533825 [005]303280081981165: kvm_exit: reason HLT rip 0xffffffff",
    "my-tool-2-99 [000] ..s1 12.5: irq_handler_entry: irq=028 name=eth0",
    "my-tool-2-99 [000] ..s1 12.5: irq_handler_entry: irq=28 name=eth0",
    "kworker/2:0H-17 [002] d..2 1.000000001: sched_switch: prev_comm=kworker/2:0H prev_pid=17 prev_prio=100 "
    "prev_state=I ==> next_comm=Web Content next_pid=2711 next_prio=120",
    "a b-1 [000] 1.0: sched_switch: prev_comm=a b prev_pid=1 x next_comm=kworker/u8:1 next_pid=55 y",
    "a-1 [000] 1.0: sched_switch: prev_comm=x prev_pid=01 next_comm=y next_pid=2",
    "a-1 [000] 1.0: sched_switch: prev_comm=x prev_pid=1 next_comm=y next_pid=02",
    "a-1 [000] 1.0: sched_switch: prev_comm=x prev_pid=1  next_comm=y next_pid=",
    "a-1 [000] 1.0: sched_switch: next_comm=y next_pid=2 prev_comm=x prev_pid=1 z",
    "ls-4735  [001] 106439.675599: sched_switch:         ls:4735 [120] R ==> this is not a switch",
    "ls-4735  [001] 106439.675599: sched_switch:         l:s:4735 [120] R ==> a:b:c:12 [120]",
    "ls-4735  [001] 106439.675599: sched_switch:         ls:4735 [-1] R ==> x:1 [120] ==> y:2 [3]",
    "  1234 [000] 5.0: tlb_flush: pages:-1 reason:flush on task switch (0)",
    "x-1 [000] 5.0: tlb_flush: pages=-1 reason=0",
    "x-1 [000] 5.0: tlb_flush: pages:1 reason:remote shootdown (1)",
    "x-1 [000] 5.0: tlb_flush: pages:1 reason:odd (x) (2)",
    "x-1 [000] 5.0: tlb_flush: pages:1 reason:odd (02)",
    "x-1 [000] 5.0: tlb_flush: pages:1 why:odd",
    "x-1 [000] 5.0: page_fault_user: address=0x7f12a000 ip=0x400123 error_code=0x6",
    "x-1 [000] 5.0: page_fault_kernel: address=-4096 ip=elf_load error_code=2",
    "x-1 [000] 5.0: page_fault_kernel: address=0xffffffffffffffff ip=x error_code=0x0",
    "x-1 [000] 5.0: page_fault_kernel: address=0x ip=x error_code=0x0",
    "x-1 [000] 5.0: page_fault_kernel: address=sym ip=x error_code=0x0",
    "x-1 [000] 5.0: page_fault_user: address=0x1000",
    "x-1 [000] 5.0: local_timer_entry: vector=236",
    "MainTaskLow:422-422   [000] 22150.357852: 9p_client_req:        client 1 request P9_TGETATTR tag  0",
    "x-1 [000] 5.0: reschedule_entry: vector=",
    "x-1 [000] 5.0: sys_enter: NR 4 (1, bfd0, 10)",
    "x-1 [000] 5.0: sys_enter: id=-1 args=(0)",
    "x-1 [000] 5.0: sys_enter: NR x id=7",
    "x-1 [000] 5.0: sys_enter_read: fd: 0x3, buf: 0x1, count: 0x10",
    "x-1 [000] 5.0: sys_enter_read: __syscall_nr=0 fd=3",
    "x-1 [000] 5.0: sys_enter_read: __syscall_nr: x",
    "bash-12 [000] 5.0: sys_read(fd: 3, buf: 1)",
    "bash-12 [000] 5.0: sys_read -> 0x0",
    "bash-12 [000] 5.0: sys_foo: bar",
    "bash 1000 [001] 5.000000100: exceptions:page_fault_user: address=0x8049123 ip=0x8048000 error_code=0x6",
    "perf 28039/28040 [000] 194010.024771: 250000 cycles: ",
    "swapper     0 194010.024867: sched:sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 "
    "prev_state=R ==> next_comm=perf next_pid=1 next_prio=120",
    "ksoftirqd/1-12    (   12) [001] d..3 214168.479967: sched_switch: prev_comm=a prev_pid=12 p next_comm=b next_pid=0",
    "          <idle>-0     (-----) [001] d..3 214168.479898: sched_process_exec: filename=/bin/ls pid=5 old_pid=5",
    "      kthreadd-2 [000] 1.0: sched_process_fork: comm=kthreadd pid=2 child_comm=kworker/0:1 child_pid=40",
    "      kthreadd-2 [000] 1.0: sched_process_fork: comm=kthreadd parent_pid=2 child_comm=k child_pid=40",
    "tïtle-9 [000] 1.0: sched_switch: prev_comm=tïtle prev_pid=9 q next_comm=ünï next_pid=10",
    "x-1 [000] 99999999999.0: sched_switch: prev_comm=x prev_pid=1 q next_comm=y next_pid=2",
    "x-1 [000] 1234567890123456789: sched_switch: prev_comm=x prev_pid=1 q next_comm=y next_pid=2",
    "x-1 [000] 1.0: bprint: func: some text",
    "wrapped continuation of the bprint above",
    "x-1 [000] 1.0: sched_wakeup: comm=a pid=1",
    "not an event line at all",
    "version = 6", "cpus=4", "CPU 3 is empty", "CPU:1 [LOST 12 EVENTS]", "   ", "",
    "# comment", "\tcallchain frame",
    "x-1 [000] 1.0:sched_switch: missing blank after the timestamp colon",
    "x-1 [000] 1.0: 7bad: name starts with a digit",
    "x-1 [000] 1.0: sched:sched_switch:: prev_comm=x prev_pid=1 q next_comm=y next_pid=2",
    "x-1\t[000]\t1.0:\tsched_switch:\tprev_comm=x prev_pid=1 q next_comm=y next_pid=2",
    "x-1 [000] d.h1. 1.0: local_timer_entry: vector=236",
    "x-1 [000] 1234 1.0: local_timer_entry: vector=236",
]


@pytest.mark.parametrize("fmt", ["ftrace", "trace-cmd", "trace-cmd-R", "perf"])
def test_tricky_lines(fmt: str) -> None:
    # one at a time (their timestamps go back and forth), then together (continuation, order)
    assert sum(check_lines(FORMATS[fmt], [line]) for line in TRICKY) > 30
    assert check_lines(FORMATS[fmt], TRICKY) > 5


def test_generated_lines() -> None:
    """Prefixes and payloads put together at random from the pieces real renderers print."""
    rnd = random.Random(4)
    comms = ["bash", "Web Content", "CPU 0/KVM", "kworker/u8:2", "my-tool-2", "a 12 [3]", "x-1", "", "rcu_sched"]
    payloads = ["prev_comm={c} prev_pid={p} prev_prio=120 prev_state=S ==> next_comm={c} next_pid={p} next_prio=120",
                "{c}:{p} [120] S ==> {c}:{p} [{p}]", "pages:-1 reason:flush on task switch ({p})",
                "address=0x{p}000 ip=0x1 error_code=0x{p}", "vector={p}", "NR {p} (1, 2)", "irq={p} name={c}"]
    events = ["sched_switch", "tlb_flush", "page_fault_user", "local_timer_entry", "sys_enter",
              "irq_handler_entry", "sched:sched_switch", "sys_enter_write"]
    lines = []
    for k in range(3000):
        c, p = rnd.choice(comms), rnd.choice(["0", "7", "1234", "00", "42"])
        sep = rnd.choice(["-", " ", "  "])
        cols = rnd.choice(["", " ( 12)", " (-----)", "/77"]) + rnd.choice([" [001]", "", " [2]"])
        flags = rnd.choice(["", " d..2", " d.h1.", " ...."])
        ts = f"{k}." + rnd.choice(["000001", "5", "123456789123"])    # in time order
        lines.append(f"{rnd.choice(['', '   '])}{c}{sep}{p}{cols}{flags} {ts}: {rnd.choice(events)}: "
                     + rnd.choice(payloads).format(c=rnd.choice(comms), p=p))
    assert check_lines(FORMATS["ftrace"], lines, chunk_bytes=50_000) > 500
