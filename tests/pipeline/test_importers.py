"""`pipeline import`: golden tests on inline snippets, and every shared sample file."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from pipeline.importers import FORMATS, ImportFailed, import_command, import_files
from pipeline.importers.working_set import WorkingSet
from pipeline.trace_format import validate
from replay.kinds import Kind

SAMPLES = Path(__file__).parents[2].parent / "shared" / "samples"
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"{SAMPLES} absent (samples live outside the repository)")

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
PERF_ROWS = [(Kind.PAGE_FAULT, 0x8049, 0, 1), (Kind.PAGE_FAULT, 0xC1234, 0, 0), (Kind.IRQ, 236, 0, 0),
             (Kind.IRQ, 28, 0, 0), (Kind.SYSCALL, 4, 0, 0)]

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
    console = Console(record=True, width=200)
    (tmp_path / "bin.dat").write_bytes(b"\x17\x08Dtracing6\0\0\0")
    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    (tmp_path / "bad.txt").write_text(TRACECMD)
    assert import_command([tmp_path / "bin.dat"], tmp_path / "o.parquet", None, False, console) == 2
    assert import_command([tmp_path / "notes.txt"], tmp_path / "o.parquet", None, False, console) == 2
    assert import_command([tmp_path / "bad.txt"], tmp_path / "o.parquet", None, True, console) == 2
    assert not (tmp_path / "o.parquet").exists()
    assert import_command([tmp_path / "bad.txt"], tmp_path / "o.parquet", "trace-cmd", False, console) == 0
    text = console.export_text()
    assert "trace-cmd report" in text and "no trace events" in text and "bad.txt:4" in text
    assert "1 malformed lines skipped" in text


# ------------------------------------------------------------------ the shared samples
def _samples() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.name != "README.md") if SAMPLES.is_dir() else []


EXPECTED_FORMAT = {"ARM-software_lisa": "trace-cmd-R", "ARM-software_trappy": "trace-cmd",
                   "report.txt": "trace-cmd", "report_N_noplugins": "trace-cmd-N",
                   "report_R_raw": "trace-cmd-R", "perf.scr": "perf", "eclipse": "ftrace"}


def _plain_counts(path: Path) -> dict:
    """Independent counts by string operations."""
    text = path.read_text(errors="replace")
    switch = text.count("sched_switch: ")
    next_pids = set(re.findall(r"next_pid=(\d+)", text)) | set(re.findall(r"==> \S+:(\d+) \[", text))
    return {"switch": switch, "next_tasks": len(next_pids),
            "irq": text.count("irq_handler_entry: "), "fault": text.count("page_fault_"),
            "kvm": len(re.findall(r"^.*?\bkvm_\w+:", text, re.M))}


@needs_samples
@pytest.mark.parametrize("path", _samples(), ids=lambda p: p.name[:50])
def test_sample_imports(tmp_path: Path, path: Path) -> None:
    out = tmp_path / "s.parquet"
    report = import_files([path], out)
    meta = validate(out)
    want = next(f for key, f in EXPECTED_FORMAT.items() if key in path.name)
    assert report.formats[str(path)] == want
    n = _plain_counts(path)
    assert report.switches == n["switch"]
    assert 0 < report.kinds["cr3_write"] <= n["switch"] if n["switch"] else report.kinds["cr3_write"] == 0
    assert report.processes <= n["next_tasks"]
    assert report.kinds["irq"] == n["irq"] and report.kinds["page_fault"] == n["fault"]
    kvm_unmapped = sum(c for e, c in report.unmapped.items() if e.startswith(("kvm_", "kvm:")))
    assert kvm_unmapped == n["kvm"]
    assert report.malformed == 0
    assert meta.cpus == report.cpus and meta.source["files"] == [str(path)]
    assert meta.source["timestamps"] == ("counts" if "HIP24" in path.name else "ns")
    cpu = pq.read_table(out, columns=["cpu"]).column("cpu").to_numpy()
    assert set(np.unique(cpu)) <= set(meta.cpus)


@needs_samples
def test_sample_syscalls_from_ftrace_syscall_tracer(tmp_path: Path) -> None:
    path = next(p for p in _samples() if "ftrace_syscalls" in p.name)
    text = path.read_text()
    report = import_files([path], tmp_path / "s.parquet")
    assert report.kinds["syscall"] == len(re.findall(r": sys_\w+\(", text)) > 0
    assert report.consumed["sys_* (exit)"] == len(re.findall(r": sys_\w+ -> ", text))


def test_registry_names() -> None:
    assert list(FORMATS) == ["perf", "ftrace", "trace-cmd-R", "trace-cmd-N", "trace-cmd"]


def test_tracetext_tgid() -> None:
    from pipeline.tracetext import parse_line
    assert parse_line("ksoftirqd/1-12    (   12) [001] d..3 214168.479967: sched_switch: x").tgid == 12
    assert parse_line("          <idle>-0     (-----) [001] d..3 214168.479898: sched_switch: x").tgid is None
    assert parse_line("perf 28039/28040 [000] 194010.024771: cycles: ").tgid == 28039
