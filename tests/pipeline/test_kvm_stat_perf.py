"""kvm-stat's perf-kvm-stat-report view, checked against counts made here: regexes over the
sample texts, and hand-made host traces whose exit times are known by construction."""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline.tracefiles import SAMPLES, needs_samples, sample_text

LTS = SAMPLES / "HIP24_Masterarbeit__documentation_trace-cmd_LTS_trace-cmd-v3.2_trace.dat__report.txt"
PART1 = SAMPLES / "HIP24_Masterarbeit__documentation_trace-cmd_analysis_test_trace.dat__report_part1.txt.xz"
# The exits of thread 483882 of PART1 by reason, counted once by hand (grep | sort | uniq -c).
THREAD_483882 = {"APIC_WRITE": 1140, "HLT": 524, "EPT_MISCONFIG": 221, "PREEMPTION_TIMER": 35, "EPT_VIOLATION": 25,
                 "EOI_INDUCED": 8, "EXTERNAL_INTERRUPT": 5, "PAUSE_INSTRUCTION": 5}
ROW = re.compile(r"^│ (\S.*?)\s+│\s+(\d+) │\s+([\d.]+)% │\s+(\S+) │\s+(\S+) │\s+(\S+) │\s+(\S+) │\s+(\S+) │$")
EXIT = re.compile(r"^\s*(?P<thread>.+?-\d+)\s+\[\d+\]\s*[\d.]+: kvm_exit:\s+reason (?P<reason>\w+)", re.M)


class Row(NamedTuple):
    """One printed row of the report table."""
    label: str
    samples: int
    samples_pct: float
    time_pct: float
    min: str
    max: str
    avg: str
    stddev: str


def kvm_stat(*args: object) -> tuple[int, str]:
    """`pipeline kvm-stat ARGS` in a 100-column terminal: its exit status and output."""
    result = CliRunner().invoke(app, ["kvm-stat", *map(str, args)], env={"COLUMNS": "100"})
    return result.exit_code, result.output


def rows(output: str) -> list[Row]:
    """The report table's rows, in printed order."""
    return [Row(m[1], int(m[2]), float(m[3]), math.nan if m[4] == "—" else float(m[4].rstrip("%")), *m.groups()[4:])
            for m in map(ROW.match, output.splitlines()) if m]


def samples(output: str) -> dict[str, int]:
    return {r.label: r.samples for r in rows(output)}


def exits_by_thread(text: str) -> Counter:
    """(thread, reason) of every kvm_exit line, by regex over the text."""
    return Counter((m["thread"], m["reason"]) for m in EXIT.finditer(text))


def host(tmp_path: Path, lines: list[str], name: str = "host.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(f" {line}\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def part1(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter]:
    """PART1 decompressed, and its exits counted by regex."""
    text = sample_text(PART1)
    path = tmp_path_factory.mktemp("part1") / "part1.txt"
    path.write_text(text)
    return path, exits_by_thread(text)


# ---------------------------------------------------------------- samples against the texts
@needs_samples
def test_lts_samples_match_the_kvm_exit_lines() -> None:
    code, output = kvm_stat(LTS)
    assert code == 0
    assert samples(output) == dict(Counter(m["reason"] for m in EXIT.finditer(LTS.read_text())))


@needs_samples
def test_one_thread_of_a_host_with_two_vms(part1: tuple[Path, Counter]) -> None:
    path, counted = part1
    mine = {reason: n for (thread, reason), n in counted.items() if thread == "qemu-system-x86-483882"}
    assert mine == THREAD_483882
    for name in ("483882", "qemu-system-x86-483882"):
        code, output = kvm_stat(path, "--vcpu-thread", name)
        assert code == 0 and samples(output) == THREAD_483882
        assert f"thread {name}, all vCPUs" in output


@needs_samples
def test_vcpu_takes_that_vcpu_of_every_vm(part1: tuple[Path, Counter]) -> None:
    """vCPU 0 is qemu-system-x86-483882's only vCPU and CPU 0/KVM-453724 of the other VM;
    vCPU 1 only CPU 1/KVM-453725 (`kvm_entry: vcpu N` of each thread in the text)."""
    path, counted = part1
    text = path.read_text()
    vcpu_of = dict(re.findall(r"^\s*(.+?-\d+)\s+\[\d+\]\s*[\d.]+: kvm_entry:\s+vcpu (\d+)", text, re.M))
    for vcpu in ("0", "1"):
        want: Counter = Counter()
        for (thread, reason), n in counted.items():
            if vcpu_of[thread] == vcpu:
                want[reason] += n
        code, output = kvm_stat(path, "--vcpu", vcpu)
        assert code == 0 and samples(output) == dict(want)
    code, output = kvm_stat(path, "--vcpu", 0, "--vcpu-thread", "CPU 0/KVM-453724")
    assert samples(output) == {r: n for (t, r), n in counted.items() if t == "CPU 0/KVM-453724"}


@needs_samples
def test_shares_sum_to_100(part1: tuple[Path, Counter]) -> None:
    found = rows(kvm_stat(part1[0])[1])
    assert sum(r.samples_pct for r in found) == pytest.approx(100, abs=0.01 * len(found))
    assert sum(r.time_pct for r in found) == pytest.approx(100, abs=0.01 * len(found))


@needs_samples
@pytest.mark.parametrize("sample,options", [("part1", []), ("lts", []), ("lts", ["--event", "mmio"]),
                                            ("lts", ["--tsc-hz", "3e9"])])
def test_the_table_fits_100_columns(part1: tuple[Path, Counter], sample: str, options: list[str]) -> None:
    """Its natural width (the console is 240 wide when not a terminal, so no cell is cut);
    the files are named once, above it."""
    path = part1[0] if sample == "part1" else LTS
    code, output = kvm_stat(path, *options)
    table = [line for line in output.splitlines() if line[:1] in "┏┃┡│└"]
    assert code == 0 and table and max(map(len, table)) <= 100
    assert f"Analyze events of {path.name}: all threads, all vCPUs" in output
    assert not any(path.name in line for line in table)


# ---------------------------------------------------------------- hand-made host traces
def _pair(ts: float, reason: str, took_us: float, pid: int = 10, vcpu: int = 0) -> list[str]:
    return [f"CPU {vcpu}/KVM-{pid} [001] {ts:.6f}: kvm_exit: reason {reason} rip 0x1 info 0 0",
            f"CPU {vcpu}/KVM-{pid} [001] {ts + took_us / 1e6:.6f}: kvm_entry: vcpu {vcpu} rip 0x2"]


def test_stddev_is_perfs_relative_stddev_of_the_mean(tmp_path: Path) -> None:
    """HLT exits of 10, 20, 30, 40 µs: mean 25, sample stddev sqrt(500/3), of the mean that
    over sqrt(4), relative 25.82%; one CPUID exit: ±0.00% (perf's value below two samples)."""
    lines = [line for i, t in enumerate((10, 20, 30, 40)) for line in _pair(1 + i / 1000, "HLT", t)]
    code, output = kvm_stat(host(tmp_path, lines + _pair(2, "CPUID", 5)))
    by = {r.label: r for r in rows(output)}
    relative = 100 * math.sqrt(500 / 3) / math.sqrt(4) / 25
    assert code == 0 and by["HLT"].stddev == f"±{relative:.2f}%" == "±25.82%" and by["CPUID"].stddev == "±0.00%"
    assert (by["HLT"].min, by["HLT"].max, by["HLT"].avg) == ("10.00", "40.00", "25.00")
    assert (by["HLT"].time_pct, by["CPUID"].time_pct) == (95.24, 4.76)      # 100 of 105 µs
    assert "Total samples: 5, total handling time: 105.00 µs" in output


def test_key_orders_by_samples_or_average_time(tmp_path: Path) -> None:
    """3 HLT of 1 µs, 2 MSR_WRITE of 5 µs, 1 CPUID of 9 µs: by samples HLT first, by
    average time CPUID first (perf's -k time is the average, not the total)."""
    spec = [("HLT", 1)] * 3 + [("MSR_WRITE", 5)] * 2 + [("CPUID", 9)]
    path = host(tmp_path, [line for i, (r, t) in enumerate(spec) for line in _pair(1 + i / 1000, r, t)])
    assert [r.label for r in rows(kvm_stat(path)[1])] == ["HLT", "MSR_WRITE", "CPUID"]
    assert [r.label for r in rows(kvm_stat(path, "-k", "sample")[1])] == ["HLT", "MSR_WRITE", "CPUID"]
    assert [r.label for r in rows(kvm_stat(path, "--key", "time")[1])] == ["CPUID", "MSR_WRITE", "HLT"]


def test_microseconds_or_cycles_says_why(tmp_path: Path) -> None:
    seconds = host(tmp_path, _pair(1.0, "HLT", 3), "s.txt")
    counts = host(tmp_path, ["CPU 0/KVM-10 [001] 1000: kvm_exit: reason HLT rip 0x1 info 0 0",
                             "CPU 0/KVM-10 [001] 7000: kvm_entry: vcpu 0 rip 0x2"], "c.txt")
    output = kvm_stat(seconds)[1]
    assert "times in µs: the timestamps are seconds" in output and rows(output)[0].avg == "3.00"
    output = kvm_stat(counts)[1]
    assert "times in cycles: the timestamps are raw clock counts, and no --tsc-hz converts them" in output
    assert rows(output)[0].avg == "6000"
    output = kvm_stat(counts, "--tsc-hz", 2e9)[1]
    assert "times in µs: raw clock counts ÷ --tsc-hz" in output and rows(output)[0].avg == "3.00"


# An MMIO read that goes to userspace is traced as unsatisfied-read, then as read when the
# value comes back, within one exit: one read. By hand: 0x1000 R once (lines 2 and 4), a
# kernel-satisfied read of 0x2000 once, a write of 0x1000 once; a later exit's unsatisfied
# read of 0x1000 that the trace never completes stays one unsatisfied read.
MMIO = ["q-10 [001] 1.000000: kvm_exit: reason EPT_MISCONFIG rip 0x1 info 0 0",
        "q-10 [001] 1.000001: kvm_mmio: mmio unsatisfied-read len 4 gpa 0x1000 val 0x0",
        "q-10 [001] 1.000002: kvm_userspace_exit: reason KVM_EXIT_MMIO (6)",
        "q-10 [001] 1.000020: kvm_mmio: mmio read len 4 gpa 0x1000 val 0x80",
        "q-10 [001] 1.000021: kvm_entry: vcpu 0 rip 0x2",
        "q-10 [001] 1.000100: kvm_exit: reason EPT_MISCONFIG rip 0x1 info 0 0",
        "q-10 [001] 1.000101: kvm_mmio: mmio read len 4 gpa 0x2000 val 0x1",
        "q-10 [001] 1.000103: kvm_entry: vcpu 0 rip 0x2",
        "q-10 [001] 1.000200: kvm_exit: reason EPT_MISCONFIG rip 0x1 info 0 0",
        "q-10 [001] 1.000201: kvm_mmio: mmio write len 4 gpa 0x1000 val 0x1",
        "q-10 [001] 1.000205: kvm_entry: vcpu 0 rip 0x2",
        "q-10 [001] 1.000300: kvm_exit: reason EPT_MISCONFIG rip 0x1 info 0 0",
        "q-10 [001] 1.000301: kvm_mmio: mmio unsatisfied-read len 4 gpa 0x1000 val 0x0"]


def test_an_unsatisfied_read_and_its_completion_are_one_read(tmp_path: Path) -> None:
    code, output = kvm_stat(host(tmp_path, MMIO), "--event", "mmio")
    assert code == 0
    assert samples(output) == {"0x1000:R": 1, "0x2000:R": 1, "0x1000:W": 1, "0x1000:R, unsatisfied": 1}
    assert {r.label: r.avg for r in rows(output)}["0x1000:R"] == "21.00"   # the whole exit's time


def test_ioport_view(tmp_path: Path) -> None:
    lines = ["q-10 [001] 1.000000: kvm_exit: reason IO_INSTRUCTION rip 0x1 info 0 0",
             "q-10 [001] 1.000001: kvm_pio: pio_write at 0x70 size 1 count 1 val 0x8f",
             "q-10 [001] 1.000004: kvm_entry: vcpu 0 rip 0x2",
             "q-10 [001] 1.000010: kvm_exit: reason IO_INSTRUCTION rip 0x1 info 0 0",
             "q-10 [001] 1.000011: kvm_pio: pio_read at 0x71 size 1 count 1 val 0x0",
             "q-10 [001] 1.000012: kvm_entry: vcpu 0 rip 0x2"]
    code, output = kvm_stat(host(tmp_path, lines), "--event", "ioport")
    assert code == 0 and samples(output) == {"0x70:POUT": 1, "0x71:PIN": 1} and "IO Port Access" in output


@pytest.mark.parametrize("args,line", [
    (["--event", "npf"], "error: --event npf: must be one of vmexit, mmio, ioport"),
    (["--key", "avg"], "error: --key avg: must be one of sample, time"),
    (["--vcpu-thread", "qemu-99"], "error: --vcpu-thread qemu-99: no thread of that name has kvm_exit lines; "
                                   "threads: CPU 0/KVM-10, CPU 1/KVM-11"),
    (["--vcpu", "3"], "error: --vcpu 3: no kvm_exit of that vCPU in these files; vCPUs: 0, 1"),
    (["--vcpu", "1", "--vcpu-thread", "10"], "error: --vcpu 1: no kvm_exit of that vCPU in thread 10; vCPUs: 0"),
])
def test_a_bad_selection_is_one_line(tmp_path: Path, args: list[str], line: str) -> None:
    path = host(tmp_path, _pair(1.0, "HLT", 2) + _pair(1.1, "HLT", 2, pid=11, vcpu=1))
    code, output = kvm_stat(path, *args)
    assert code == 2 and output.replace("\n", "") == line
