"""`pipeline import`: golden tests on inline snippets, and every shared sample file."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tracefile.importers import FORMATS, ImportFailed, import_files
from pipeline.tracefile.importers.working_set import WorkingSet
from pipeline.tracefile.format import validate
from replay.kinds import DELAY_UNKNOWN, Kind
from tests.pipeline.tracefiles import needs_samples, sample_files, sample_text

# ftrace, raw sched_switch: bash (1000) and its thread (1001, tgid from the TGID column),
# swapper, then back to bash.
ATRACE = """\
# tracer: nop
            bash-1000  ( 1000) [000] d..3   100.000001: sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=bash next_pid=1000 next_prio=120
            bash-1000  ( 1000) [000] d..3   100.000002: sched_switch: prev_comm=bash prev_pid=1000 prev_prio=120 prev_state=S ==> next_comm=worker next_pid=1001 next_prio=120
          worker-1001  ( 1000) [000] d..3   100.000003: sched_switch: prev_comm=worker prev_pid=1001 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
          <idle>-0     (-----) [000] d..3   100.000004: sched_switch: prev_comm=swapper/0 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=cat next_pid=2000 next_prio=120
             cat-2000  ( 2000) [000] d..3   100.000005: sched_switch: prev_comm=cat prev_pid=2000 prev_prio=120 prev_state=S ==> next_comm=kworker/0:1 next_pid=40 next_prio=120
     kworker/0:1-40    (   40) [000] d..3   100.000006: sched_switch: prev_comm=kworker/0:1 prev_pid=40 prev_prio=120 prev_state=S ==> next_comm=bash next_pid=1000 next_prio=120
"""
# Expected rows (kind, value, asid, arg) without the working set.
ATRACE_ROWS = [(Kind.CR3_WRITE, 1, 1, 0),   # first user task on cpu 0: bash
               # worker is bash's thread: nothing; swapper: nothing
               (Kind.CR3_WRITE, 2, 2, 0),   # cat
               # kworker keeps cat's address space: nothing
               (Kind.CR3_WRITE, 1, 1, 0)]   # back to bash: one

PERF = """\
# perf version : 5.10
bash  1000 [001] 5.000000100: exceptions:page_fault_user: address=0x8049123 ip=0x8048000 error_code=0x6
bash  1000 [001] 5.000000200: exceptions:page_fault_kernel: address=0xc1234567 ip=0xc0100000 error_code=0x0
bash  1000 [001] 5.000000300: irq_vectors:local_timer_entry: vector=236
bash  1000 [001] 5.000000400: irq:irq_handler_entry: irq=28 name=radeon
bash  1000 [001] 5.000000500: raw_syscalls:sys_enter: NR 4 (1, bfd0, 10)
bash  1000 [001] 5.000000600: sched:sched_wakeup: comm=cat pid=2000 prio=120 target_cpu=001
bash  1000 [001] 5.000000700: tlb:tlb_flush: pages:-1 reason:flush on task switch (0)
"""
# the local timer is IRQ_TIMER (2), irq 28 an edge-triggered device (0: not a default level pin);
# a task-switch tlb_flush is a CR3 load (before any user task: asid 0); without cobalt_tick_shot
# each local timer interrupt is estimated to re-arm the LAPIC timer (delay not recorded: DELAY_UNKNOWN)
PERF_ROWS = [(Kind.PAGE_FAULT, 0x8049, 0, 1), (Kind.PAGE_FAULT, 0xC1234, 0, 0), (Kind.IRQ, 236, 0, 2),
             (Kind.TIMER_ARM, DELAY_UNKNOWN, 0, 0), (Kind.IRQ, 28, 0, 0), (Kind.SYSCALL, 4, 0, 0), (Kind.CR3_WRITE, 0, 0, 0)]

TRACECMD = """\
version = 6
cpus=2
              ls-4734  [001] 106439.675591: sched_switch:         trace-cmd:4734 [120] R ==> ls:4735 [120]
              ls-4735  [001] 106439.675599: sched_switch:         ls:4735 [120] R ==> this is not a switch
"""

NO_WS = WorkingSet(user_pages=0, kernel_pages=0)


def _import(tmp_path: Path, text: str, **kw) -> tuple:
    src = tmp_path / "in.txt"
    src.write_text(text)
    out = tmp_path / "out.parquet"
    report = import_files([src], out, **kw)
    validate(out)
    t = pq.read_table(out).to_pydict()
    rows = list(zip(t["kind"], t["value"], t["asid"], t["arg"]))
    return report, rows, t


def test_address_space_switches(tmp_path: Path) -> None:
    report, rows, _ = _import(tmp_path, ATRACE, working_set=NO_WS)
    assert report.formats == {str(tmp_path / "in.txt"): "ftrace"}
    assert rows == ATRACE_ROWS
    assert report.switches == 6 and report.processes == 2
    assert report.malformed == 0 and not report.unmapped


def test_working_set_follows_each_switch_in(tmp_path: Path) -> None:
    ws = WorkingSet(user_pages=2, kernel_pages=1)
    report, rows, t = _import(tmp_path, ATRACE, working_set=ws)
    # 4 user switch-ins (bash, worker, cat, bash) x 3 pages + 2 kernel-thread switch-ins x 1 page
    assert report.kinds["touch"] == 4 * 3 + 2 * 1
    first = rows[:4]
    assert first == [(Kind.CR3_WRITE, 1, 1, 0), (Kind.TOUCH, 0x08048, 1, 0),
                     (Kind.TOUCH, 0xB7E2F, 1, 0), (Kind.TOUCH, 0xC0114, 1, 0)]
    kthread_touches = [r for r in rows if r[0] == Kind.TOUCH and r[1] >= 0xC0000]
    assert len(kthread_touches) == 6   # every switch-in: one global kernel page
    meta = validate(tmp_path / "out.parquet")
    assert meta.source["working_set"]["user_pages"] == 2 and meta.source["timestamps"] == "ns"
    assert meta.ops == 6 and meta.op_unit == "context switch" and meta.headline == "per_op"
    assert meta.workload == "out" and meta.native_ns == 5001 and meta.cpus == (0,)
    assert t["t_ns"][0] == 0


def test_kernel_mapping_and_unmapped(tmp_path: Path) -> None:
    report, rows, t = _import(tmp_path, PERF, working_set=NO_WS)
    assert report.formats[str(tmp_path / "in.txt")] == "perf"
    assert rows == PERF_ROWS
    assert dict(report.unmapped) == {"sched:sched_wakeup": 1}
    assert report.consumed["tlb_flush (task switch)"] == 1
    assert set(t["cpu"]) == {1} and report.cpus == (1,)


def test_malformed_counted_then_strict_error(tmp_path: Path) -> None:
    report, rows, _ = _import(tmp_path, TRACECMD + "garbage line\n", working_set=NO_WS)
    assert report.formats[str(tmp_path / "in.txt")] == "trace-cmd"
    assert rows == [(Kind.CR3_WRITE, 1, 1, 0)]
    assert report.malformed == 2
    assert report.malformed_examples[0].startswith(f"{tmp_path / 'in.txt'}:4: sched_switch")
    assert report.malformed_examples[1].startswith(f"{tmp_path / 'in.txt'}:5: not an event line")
    (tmp_path / "out.parquet").unlink()
    with pytest.raises(ImportFailed, match=r"in\.txt:4: sched_switch: payload not understood"):
        import_files([tmp_path / "in.txt"], tmp_path / "out.parquet", strict=True)
    assert not (tmp_path / "out.parquet").exists()


def test_command_exit_codes(tmp_path: Path) -> None:
    outputs = []

    def pipeline_import(path: Path, *options: str) -> int:
        result = CliRunner().invoke(app, ["import", str(path), "-o", str(tmp_path / "o.parquet"), *options])
        outputs.append(result.output)
        return result.exit_code

    (tmp_path / "bin.dat").write_bytes(b"\x17\x08Dtracing6\0\0\0")
    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    (tmp_path / "bad.txt").write_text(TRACECMD)
    assert pipeline_import(tmp_path / "bin.dat") == 2
    assert pipeline_import(tmp_path / "notes.txt") == 2
    assert pipeline_import(tmp_path / "bad.txt", "--strict") == 2
    assert not (tmp_path / "o.parquet").exists()
    assert pipeline_import(tmp_path / "bad.txt", "--format", "trace-cmd") == 0
    text = "".join(outputs)
    assert "trace-cmd report" in text and "no trace events" in text and "bad.txt:4" in text
    assert "1 malformed lines skipped" in text


# ------------------------------------------------------------------ the shared samples
EXPECTED_FORMAT = {"ARM-software_lisa": "trace-cmd-R", "ARM-software_trappy": "trace-cmd",
                   "report.txt": "trace-cmd", "report_N_noplugins": "trace-cmd-N",
                   "report_R_raw": "trace-cmd-R", "report_part1": "trace-cmd", "perf.scr": "perf",
                   "eclipse": "ftrace"}


def _plain_counts(path: Path) -> dict:
    """Independent counts by string operations."""
    text = sample_text(path)
    switch = text.count("sched_switch: ")
    next_pids = set(re.findall(r"next_pid=(\d+)", text)) | set(re.findall(r"==> \S+:(\d+) \[", text))
    return {"switch": switch, "next_tasks": len(next_pids),
            "irq": _hardware_irqs(text),
            "fault": text.count("page_fault_"),
            "kvm": len(re.findall(r"^.*?\bkvm_\w+:", text, re.M))}


def _hardware_irqs(text: str) -> int:
    """Dovetail's pipeline entries where recorded, else handler entries of non-synthetic IRQs and
    irq_vectors entries."""
    if "irq_pipeline_entry: " in text:
        return text.count("irq_pipeline_entry: ")
    synthetic = len(re.findall(r"irq_handler_entry: +irq=\d+ name=(?:in-band work|Inband sirq|proxy tick)$", text, re.M))
    return text.count("irq_handler_entry: ") - synthetic + len(re.findall(r"\b\w+_entry: +vector=", text))


@needs_samples
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name[:50])
def test_sample_imports(tmp_path: Path, path: Path) -> None:
    out = tmp_path / "s.parquet"
    n = _plain_counts(path)
    if not (n["switch"] or n["irq"] or n["fault"]):   # a host-side recording: no guest event in it
        with pytest.raises(ImportFailed, match=r"no guest events to import \(unmapped: kvm_.*pipeline kvm-stat"):
            import_files([path], out)
        assert not out.exists()
        return
    report = import_files([path], out)
    meta = validate(out)
    want = next(f for key, f in EXPECTED_FORMAT.items() if key in path.name)
    assert report.formats[str(path)] == want
    assert report.switches == n["switch"]
    assert 0 < report.kinds["cr3_write"] <= n["switch"] if n["switch"] else report.kinds["cr3_write"] == 0
    assert report.processes <= n["next_tasks"]
    assert report.kinds["irq"] == n["irq"] and report.kinds["page_fault"] == n["fault"]
    kvm_unmapped = sum(c for e, c in report.unmapped.items() if e.startswith(("kvm_", "kvm:")))
    assert kvm_unmapped == n["kvm"]
    assert report.malformed == 0
    assert meta.cpus == report.cpus and meta.source["files"] == [str(path)]
    assert meta.source["timestamps"] == ("counts" if "trace-cmd_LTS" in path.name else "ns")   # raw TSC
    cpu = pq.read_table(out, columns=["cpu"]).column("cpu").to_numpy()
    assert set(np.unique(cpu)) == set(meta.cpus)   # only CPUs that have events are listed


@needs_samples
def test_sample_syscalls_from_ftrace_syscall_tracer(tmp_path: Path) -> None:
    path = next(p for p in sample_files() if "ftrace_syscalls" in p.name)
    text = path.read_text()
    report = import_files([path], tmp_path / "s.parquet")
    assert report.kinds["syscall"] == len(re.findall(r": sys_\w+\(", text)) > 0
    assert report.consumed["sys_* (exit)"] == len(re.findall(r": sys_\w+ -> ", text))


def test_registry_names() -> None:
    assert list(FORMATS) == ["perf", "ftrace", "trace-cmd-R", "trace-cmd-N", "trace-cmd"]


def test_textlines_tgid() -> None:
    from pipeline.tracefile.textlines import parse_line
    assert parse_line("ksoftirqd/1-12    (   12) [001] d..3 214168.479967: sched_switch: x").tgid == 12
    assert parse_line("          <idle>-0     (-----) [001] d..3 214168.479898: sched_switch: x").tgid is None
    assert parse_line("perf 28039/28040 [000] 194010.024771: cycles: ").tgid == 28039


# ------------------------------------------------------------------ golden: processes from fork/exec
# ftrace without a TGID column: processes come from forks (each child its own process, a child
# of a kernel thread a kernel thread) and execs (a fresh address space, loaded at once).
FORK_EXEC = """\
# tracer: nop
            bash-100   [000] d..3    10.000001: sched_process_fork: comm=bash pid=100 child_comm=bash child_pid=101
            bash-100   [000] d..3    10.000002: sched_switch: prev_comm=bash prev_pid=100 prev_prio=120 prev_state=S ==> next_comm=bash next_pid=101 next_prio=120
            bash-101   [000] d..3    10.000003: sched_process_exec: filename=/bin/ls pid=101 old_pid=101
              ls-101   [000] d..3    10.000004: sched_switch: prev_comm=ls prev_pid=101 prev_prio=120 prev_state=S ==> next_comm=bash next_pid=100 next_prio=120
        kthreadd-2     [000] d..3    10.000005: sched_process_fork: comm=kthreadd pid=2 child_comm=mythread child_pid=50
            bash-100   [000] d..3    10.000006: sched_switch: prev_comm=bash prev_pid=100 prev_prio=120 prev_state=S ==> next_comm=mythread next_pid=50 next_prio=120
        mythread-50    [000] d..3    10.000007: sched_switch: prev_comm=mythread prev_pid=50 prev_prio=120 prev_state=S ==> next_comm=bash next_pid=100 next_prio=120
"""
FORK_EXEC_ROWS = [(Kind.CR3_WRITE, 1, 1, 0),   # 101 (forked: its own process) is the first user task
                  (Kind.CR3_WRITE, 2, 2, 0),   # its exec: a fresh address space, loaded at once
                  (Kind.CR3_WRITE, 3, 3, 0)]   # back to bash (100): its own, third address space
#                   mythread (child of kthreadd: a kernel thread) keeps bash's; back to bash: nothing


def test_fork_and_exec_make_processes(tmp_path: Path) -> None:
    report, rows, t = _import(tmp_path, FORK_EXEC, working_set=NO_WS)
    assert report.formats[str(tmp_path / "in.txt")] == "ftrace"
    assert rows == FORK_EXEC_ROWS
    assert t["pid"] == [101, 101, 100]
    assert report.switches == 4 and report.processes == 2     # processes 100 and 101 (one exec)
    assert report.consumed["sched_process_fork"] == 2 and report.consumed["sched_process_exec"] == 1


# ------------------------------------------------------------------ golden: trace-cmd -N page faults
# `trace-cmd report -N` prints events in the kernel's own format; exceptions:page_fault_* is
# TP_printk("address=%ps ip=%ps error_code=0x%lx") (arch/x86/include/asm/trace/exceptions.h), and
# libtraceevent prints a %ps without a symbol as hex, one with a symbol by name: the payloads
# below are as `perf script` (same library) printed them on a 6.18 kernel.
TRACECMD_N_FAULTS = """\
version = 6
cpus=2
            bash-1000  [001]  5000.000001: sched_switch:         prev_comm=swapper/1 prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=bash next_pid=1000 next_prio=120
            bash-1000  [001]  5000.000002: page_fault_user:      address=0x7f4c79e76110 ip=0x7f4c79e5c2a0 error_code=0x6
            bash-1000  [001]  5000.000003: page_fault_kernel:    address=0x55b00a409014 ip=elf_load error_code=0x2
            bash-1000  [001]  5000.000004: page_fault_user:      address=0x55b00a200000 ip=0x55b00a200000 error_code=0x14
"""


def test_tracecmd_noplugins_page_faults(tmp_path: Path) -> None:
    report, rows, t = _import(tmp_path, TRACECMD_N_FAULTS, working_set=NO_WS)
    assert report.formats[str(tmp_path / "in.txt")] == "trace-cmd-N"
    faults = [r for r in rows if r[0] == Kind.PAGE_FAULT]
    assert len(faults) == TRACECMD_N_FAULTS.count("page_fault_") == 3
    # value = address >> 12; arg = error_code bit 1 (write): 0x6 and 0x2 write, 0x14 (fetch) not
    assert faults == [(Kind.PAGE_FAULT, 0x7F4C79E76, 1, 1), (Kind.PAGE_FAULT, 0x55B00A409, 1, 1),
                      (Kind.PAGE_FAULT, 0x55B00A200, 1, 0)]
    assert report.malformed == 0


# The 9p events' names start with a digit, and 9p_protocol_dump prints a two-line hex dump
# (include/trace/events/9p.h); lines as trace-cmd 3.1.6 rendered them in the guest sample.
NINE_P = """\
version = 6
CPU 1 is empty
cpus=2
 MainTaskLow:422-422   [000] 22150.357851: 9p_protocol_dump:     clnt 18446636889643796544 P9_TGETATTR(tag = 0)
000: ARG TYPE NOT FIELD BUT 2
010: ARG TYPE NOT FIELD BUT 11
 MainTaskLow:422-422   [000] 22150.357852: 9p_client_req:        client 18446636889643796544 request P9_TGETATTR tag  0
 MainTaskLow:422-422   [000] 22150.357853: sched_switch:         MainTaskLow:422:422 [120] S ==> bash:500 [120]
"""


def test_events_named_with_a_digit_and_their_dump_lines(tmp_path: Path) -> None:
    report, _, _ = _import(tmp_path, NINE_P, working_set=NO_WS)
    assert report.malformed == 0, report.malformed_examples
    assert report.unmapped == {"9p_protocol_dump": 1}
    assert report.consumed["9p_client_req"] == 1
    assert report.switches == 1


HOST_ONLY = """\
 qemu-system-x86-4838 [000] 10.000001: kvm_exit:             reason HLT rip 0xffffffff81a3b6bb info 0 0
 qemu-system-x86-4838 [000] 10.000002: kvm_entry:            vcpu 0, rip 0xffffffff81a3b6bc
"""


def test_a_recording_without_guest_events_is_not_imported(tmp_path: Path) -> None:
    """A trace needs events (an empty one would be priced as if it ran); a host-side
    recording gets pointed at kvm-stat."""
    with pytest.raises(ImportFailed, match=r"in.txt: no guest events to import \(unmapped: kvm_exit 1, "
                                           r"kvm_entry 1\); a host-side KVM recording is summarised by"):
        _import(tmp_path, HOST_ONLY)
    assert not (tmp_path / "out.parquet").exists()


def test_only_cpus_with_events_are_listed(tmp_path: Path) -> None:
    """cpu 1 has only an unmapped line: the trace lists cpu 0 alone (a listed CPU without
    events is an invalid trace)."""
    text = ATRACE + "            bash-1000  ( 1000) [001] d..3   100.000007: sched_waking: comm=x pid=1 prio=120 target_cpu=001\n"
    report, _, t = _import(tmp_path, text, working_set=NO_WS)
    assert report.cpus == (0,) and set(t["cpu"]) == {0}


# ------------------------------------------------------------------ golden: syscall numbers by name
# x86_64 numbers from the kernel's arch/x86/entry/syscalls/syscall_64.tbl: read 0, write 1,
# fstat 5 (entry point sys_newfstat, hence the tracepoint sys_enter_newfstat), openat 257,
# rt_sigaction 13, clock_gettime 228.
SYSCALL_NAMES = """\
# perf version : 6.18
bash  1000/1000 [000] 5.000000100: syscalls:sys_enter_read: fd: 0x00000003, buf: 0x7ffd, count: 0x00000400
bash  1000/1000 [000] 5.000000200: syscalls:sys_enter_openat: dfd: 0xffffff9c, filename: 0x7ffd, flags: 0x00080000
bash  1000/1000 [000] 5.000000300: syscalls:sys_enter_newfstat: fd: 0x00000003, statbuf: 0x7ffd
bash  1000/1000 [000] 5.000000400: syscalls:sys_enter_no_such_call: x: 0x1
bash  1000/1000 [000] 5.000000500: syscalls:sys_enter_write: __syscall_nr=1 fd=1
bash  1000/1000 [000] 5.000000600: syscalls:sys_exit_read: 0x400
"""


def test_syscall_numbers_from_names(tmp_path: Path) -> None:
    report, rows, _ = _import(tmp_path, SYSCALL_NAMES, working_set=NO_WS)
    assert [r[1] for r in rows if r[0] == Kind.SYSCALL] == [0, 257, 5, 0, 1]   # unknown name: 0
    assert report.unmapped == {"syscalls:sys_exit_read": 1}
    meta = validate(tmp_path / "out.parquet")
    assert "syscall_64.tbl" in meta.source["syscall_numbers"]


UNISTD = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")


@pytest.mark.skipif(not UNISTD.is_file(), reason="no x86_64 kernel headers (linux-libc-dev)")
def test_syscall_table_agrees_with_kernel_headers() -> None:
    """Every name the headers and the table share has the same number (the table is keyed by
    tracepoint name: the headers' stat/fstat/lstat/uname/sendfile/umount2 are renamed there)."""
    from pipeline.tracefile.importers.chunk import SYSCALL_NUMBERS
    headers = {m[1]: int(m[2]) for m in re.finditer(r"#define __NR_(\w+) (\d+)", UNISTD.read_text())}
    shared = set(headers) & set(SYSCALL_NUMBERS)
    assert len(shared) > 300
    assert {n: headers[n] for n in shared} == {n: SYSCALL_NUMBERS[n] for n in shared}
    assert SYSCALL_NUMBERS["newfstat"] == headers["fstat"] and SYSCALL_NUMBERS["newuname"] == headers["uname"]


@needs_samples
def test_sample_syscall_numbers(tmp_path: Path) -> None:
    path = next(p for p in sample_files() if "ftrace_syscalls" in p.name)
    text = path.read_text()
    t = import_files([path], tmp_path / "s.parquet")
    table = pq.read_table(tmp_path / "s.parquet").to_pydict()
    values = [v for k, v in zip(table["kind"], table["value"]) if k == Kind.SYSCALL]
    for name, number in {"rt_sigaction": 13, "rt_sigprocmask": 14, "clock_gettime": 228, "ioctl": 16,
                         "mmap": 9, "read": 0, "close": 3, "write": 1}.items():
        assert values.count(number) == len(re.findall(rf": sys_{name}\(", text)), name
    assert t.kinds["syscall"] == len(values)


# ------------------------------------------------------------------ CLI: the working-set estimate
def test_cli_working_set_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner
    from pipeline.cli import app
    src, out = tmp_path / "in.txt", tmp_path / "out.parquet"
    src.write_text(ATRACE)
    done = CliRunner().invoke(app, ["import", str(src), "-o", str(out), "--user-pages", "2", "--kernel-pages", "1", "-q"])
    assert done.exit_code == 0, done.output
    meta = validate(out)
    assert (meta.source["working_set"]["user_pages"], meta.source["working_set"]["kernel_pages"]) == (2, 1)
    kinds = pq.read_table(out).column("kind").to_pylist()
    # 4 user switch-ins x (2 + 1) pages + 2 kernel-thread switch-ins x 1 page (see ATRACE)
    assert kinds.count(Kind.TOUCH) == 4 * 3 + 2 * 1
    default = CliRunner().invoke(app, ["import", str(src), "-o", str(tmp_path / "d.parquet")])
    assert default.exit_code == 0
    assert validate(tmp_path / "d.parquet").source["working_set"]["user_pages"] == WorkingSet().user_pages
    bad = CliRunner().invoke(app, ["import", str(src), "-o", str(tmp_path / "x.parquet"), "--user-pages", "-1"])
    assert bad.exit_code == 2 and not (tmp_path / "x.parquet").exists()


# ------------------------------------------------------------------ streaming and bad input
def test_chunk_and_row_group_boundaries_change_nothing(tmp_path: Path, monkeypatch) -> None:
    """Tiny chunks and row groups: the state carried between them must give the same trace."""
    import pipeline.tracefile.importers as imp
    import pipeline.tracefile.format as tf
    text = (ATRACE + FORK_EXEC.split("\n", 1)[1].replace("    10.0", "   200.0")) * 1
    src = tmp_path / "in.txt"
    src.write_text(text)
    import_files([src], tmp_path / "big.parquet")
    monkeypatch.setattr(imp, "CHUNK_BYTES", 300)
    monkeypatch.setattr(tf, "ROW_GROUP", 7)
    report = import_files([src], tmp_path / "small.parquet")
    a, b = pq.read_table(tmp_path / "big.parquet"), pq.read_table(tmp_path / "small.parquet")
    assert a.equals(b) and pq.ParquetFile(tmp_path / "small.parquet").num_row_groups == -(-a.num_rows // 7)
    assert report.malformed == 0 and report.switches == 10


def test_progress_counts_both_passes(tmp_path: Path) -> None:
    src = tmp_path / "in.txt.gz"
    import gzip
    src.write_bytes(gzip.compress(ATRACE.encode()))
    seen = []
    report = import_files([src], tmp_path / "out.parquet", working_set=NO_WS, progress=seen.append)
    assert sum(seen) == 2 * src.stat().st_size
    assert [r[:2] for r in report.kinds.items()] == [("cr3_write", 3)]


def test_line_ends_and_time_order(tmp_path: Path) -> None:
    """CRLF and lone CR line ends read like LF; a line earlier than the one before it on its
    CPU is malformed (rows are written as they come); --strict makes it an error."""
    lf = _import(tmp_path, ATRACE, working_set=NO_WS)[1]
    assert _import(tmp_path, ATRACE.replace("\n", "\r\n"), working_set=NO_WS)[1] == lf
    assert _import(tmp_path, ATRACE.replace("\n", "\r"), working_set=NO_WS)[1] == lf
    lines = ATRACE.splitlines(keepends=True)
    back = "".join(lines[:3] + [lines[1]] + lines[3:])       # line 4 repeats line 2 (100.000001)
    report, rows, _ = _import(tmp_path, back, working_set=NO_WS)
    assert report.malformed == 1 and rows == ATRACE_ROWS
    assert report.malformed_examples == [f"{tmp_path / 'in.txt'}:4: timestamp 100000001000 is before "
                                         "100000002000, an earlier event's on cpu 0"]
    with pytest.raises(ImportFailed, match=r"in\.txt:4: timestamp"):
        import_files([tmp_path / "in.txt"], tmp_path / "o2.parquet", strict=True)


def test_unrelated_text_and_non_utf8(tmp_path: Path) -> None:
    (tmp_path / "words.txt").write_text("the quick brown fox\n" * 50)
    with pytest.raises(ImportFailed, match=r"words\.txt: no trace events found"):
        import_files([tmp_path / "words.txt"], tmp_path / "o.parquet")
    latin1 = ATRACE.replace("next_comm=cat", "next_comm=c\xe4t").encode("latin-1")
    (tmp_path / "l1.txt").write_bytes(latin1)
    report = import_files([tmp_path / "l1.txt"], tmp_path / "o.parquet", working_set=NO_WS)
    assert report.rows == len(ATRACE_ROWS) and report.malformed == 0


def test_numbers_too_large_are_malformed(tmp_path: Path) -> None:
    """A payload number beyond int64 (next_pid, irq, syscall NR) raised OverflowError out of
    the import; now it is a malformed line like a too-large prefix number. By hand: lines 2-5
    and 7-8 each hold a 23-digit number; line 1's switch and line 6's fault are written."""
    big = "99999999999999999999999"
    switch = "prev_comm=bash prev_pid=1000 prev_prio=120 prev_state=S ==> next_comm=cat next_pid={} next_prio=120"
    lines = [f"            bash-1000  [000] d..3   100.000001: sched_switch: {switch.format(2000)}",
             f"            bash-1000  [000] d..3   {big}.000002: sched_switch: {switch.format(2000)}",
             f"            bash-{big}  [000] d..3   100.000003: sched_switch: {switch.format(2000)}",
             f"            bash-1000  [000] d..3   100.000004: sched_switch: {switch.format(big)}",
             f"            bash-1000  [{big}] d..3   100.000005: sched_switch: {switch.format(2000)}",
             "            bash-1000  [000] d..3   100.000006: page_fault_user: address=0x8049123 ip=0x8048000 error_code=0x6",
             f"            bash-1000  [000] d..3   100.000007: irq_handler_entry: irq={big} name=x",
             f"            bash-1000  [000] d..3   100.000008: sys_enter: NR {big} (1, 2, 3)"]
    report, rows, _ = _import(tmp_path, "\n".join(lines) + "\n", working_set=NO_WS)
    assert report.malformed == 6 and [r[0] for r in rows] == [Kind.CR3_WRITE, Kind.PAGE_FAULT]
    assert [e.split(": ", 1)[0] for e in report.malformed_examples] == [f"{tmp_path / 'in.txt'}:{n}" for n in (2, 3, 4, 5, 7)]
    assert all("number too large" in e for e in report.malformed_examples)
