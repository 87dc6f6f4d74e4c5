"""kvm-stat on the HIP24 host trace: counts checked against plain string counting."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.analysis.kvm_stat import summarise, write_stats
from pipeline.cli import app
from pipeline.tracefile.importers.exit_reasons import from_name, from_number
from pipeline.tracefile.importers.kvm_exits import FileScan, scan_chunks
from pipeline.tracefile.textlines import read_chunks
from tests.pipeline.tracefiles import SAMPLES, needs_samples, sample_text

BASE = "HIP24_Masterarbeit__documentation_trace-cmd_LTS_trace-cmd-v3.2_trace.dat__"
PLUGIN, KERNEL, RAW = (SAMPLES / f"{BASE}{s}.txt" for s in ("report", "report_N_noplugins", "report_R_raw"))
# Independent of the parser: VMX numbers as listed in the Intel SDM, appendix C.
SDM = {1: "EXTERNAL_INTERRUPT", 12: "HLT", 45: "EOI_INDUCED", 49: "EPT_MISCONFIG",
       52: "PREEMPTION_TIMER", 56: "APIC_WRITE"}


def scan_lines(lines: list[str], source: str) -> FileScan:
    """The reader on these lines, given as one chunk of a file."""
    return scan_chunks(["".join(f"{line}\n" for line in lines).encode()], source)


def kvm_stat(*args: object) -> tuple[int, str]:
    """`pipeline kvm-stat ARGS`: its exit status and output."""
    result = CliRunner().invoke(app, ["kvm-stat", *map(str, args)])
    return result.exit_code, result.output


def _count_named(path: Path) -> Counter:
    """` reason X ` on kvm_exit lines, by plain string splitting."""
    out = Counter()
    for line in path.read_text().splitlines():
        if "kvm_exit:" in line:
            out[line.split(" reason ", 1)[1].split(" ", 1)[0]] += 1
    return out


def _count_raw(path: Path) -> Counter:
    return Counter(SDM[int(n)] for n in re.findall(r"kvm_exit:\s+exit_reason=(\d+) ", path.read_text()))


def _counts(path: Path) -> dict:
    stats = summarise([path], None)
    return dict(stats.by_reason.select("reason", "count").iter_rows())


@needs_samples
@pytest.mark.parametrize("path,count", [(PLUGIN, _count_named), (KERNEL, _count_named), (RAW, _count_raw)])
def test_counts_match_string_counting(path: Path, count) -> None:
    assert _counts(path) == dict(count(path))


@needs_samples
def test_renderings_agree() -> None:
    assert _counts(PLUGIN) == _counts(KERNEL) == _counts(RAW)


@needs_samples
def test_times_agree_across_renderings() -> None:
    frames = [summarise([p], 1e9).by_vcpu.drop("files").sort("reason") for p in (PLUGIN, KERNEL, RAW)]
    assert frames[0].equals(frames[1]) and frames[0].equals(frames[2])
    assert frames[0]["vcpu"].to_list() == [0] * len(frames[0])


@needs_samples
def test_tsc_units() -> None:
    cycles, ns = summarise([PLUGIN], None), summarise([PLUGIN], 2e9)
    assert cycles.time_unit == "cycles" and "total_cycles" in cycles.by_reason.columns
    assert ns.time_unit == "ns"
    assert ns.by_reason["total_ns"].sum() == pytest.approx(cycles.by_reason["total_cycles"].sum() / 2)


def test_pairing_by_thread() -> None:
    """Time = exit to the next entry of the same thread; vcpu learned from any event."""
    lines = [" CPU 1/KVM-11 [000] 100: kvm_exit: reason HLT rip 0x1 info 0 0",
             " CPU 0/KVM-10 [001] 105: kvm_exit: reason npf rip 0x1 info 0 0",
             " CPU 1/KVM-11 [000] 130: kvm_entry: vcpu 1 rip 0x2",
             " CPU 0/KVM-10 [001] 112: kvm_entry: vcpu_id=0 rip=0x2",
             " CPU 0/KVM-10 [001] 120: kvm_exit: exit_reason=1024 guest_rip=0x1 isa=2 info1=0 vcpu_id=0"]
    scan = scan_lines(lines, "inline")
    assert [(r.vcpu, r.reason, r.time) for r in scan.exits] == [(1, "HLT", 30), (0, "NPF", 7), (0, "NPF", None)]
    assert scan.unpaired == 1


def test_reason_names() -> None:
    assert from_name("npf") == from_name("EXIT_NPF") == from_number(0x400, 2) == "NPF"
    assert from_name("PF excp") == from_name("EXIT_EXCP_PF") == "EXCP_PF"
    assert from_name("EPT_VIOLATION FAILED_VMENTRY") == from_number(0x80000030, 1) == "EPT_VIOLATION"
    assert from_name("hlt") == from_name("HLT") == from_number(12, 1) == from_number(0x78, 2) == "HLT"


def test_malformed_lines_counted_with_location() -> None:
    lines = [" q-1 [000] 1.0: kvm_exit: reason HLT rip 0x1 info 0 0",
             " q-1 [000] 2.0: kvm_exit: garbage",
             " q-1 [000] 3.0: kvm_entry: vcpu 0 rip 0x1"]
    scan = scan_lines(lines, "t.txt")
    assert scan.malformed.count == 1 and scan.malformed.examples[0].startswith("t.txt:2: kvm_exit")
    assert [r.time for r in scan.exits] == [2_000_000_000]


@needs_samples
def test_write_stats(tmp_path: Path) -> None:
    written = write_stats(summarise([KERNEL], None), tmp_path)
    df = pl.read_parquet(tmp_path / "STATS.parquet")
    assert {"vcpu", "reason", "count", "total_cycles", "p95_cycles", "time_unit"} <= set(df.columns)
    assert df["count"].sum() == 1558 and set(df["time_unit"]) == {"cycles"}
    assert tmp_path / "STATS.io.parquet" in written
    assert not list(tmp_path.glob(".*.tmp"))


@needs_samples
def test_command_exit_codes(tmp_path: Path) -> None:
    binary = tmp_path / "trace.dat"
    binary.write_bytes(b"\x17\x08Dtracing6\0\0\0")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("hello\n")
    runs = [kvm_stat(PLUGIN, "--out", tmp_path / "o"), kvm_stat(PLUGIN, binary),
            kvm_stat(binary, unrelated, tmp_path / "missing")]
    assert runs[0][0] == 0
    assert runs[1][0] == 1
    assert runs[2][0] == 2
    text = "".join(output for _, output in runs)
    assert f"{binary}: a trace-cmd .dat file" in text and f"{unrelated}: no trace event lines" in text
    assert "APIC_WRITE" in text and "times in cycles: the timestamps are raw clock counts" in text


# ------------------------------------------------------------------ entries stamped before their exit
# One vCPU thread, clock counts. By hand: HLT exits at 100, 200, 300 close at 130, 150 (before
# 200: out of order), 310; the MSR_WRITE exit at 400 at 404. The port write happens in the
# out-of-order exit, so it has no time either.
BACKWARDS = [" CPU 0/KVM-10 [001] 100: kvm_exit: reason HLT rip 0x1 info 0 0",
             " CPU 0/KVM-10 [001] 130: kvm_entry: vcpu 0 rip 0x2",
             " CPU 0/KVM-10 [001] 200: kvm_exit: reason HLT rip 0x1 info 0 0",
             " CPU 0/KVM-10 [001] 201: kvm_pio: pio_write at 0x80 size 1 count 1 val 0x0",
             " CPU 0/KVM-10 [001] 150: kvm_entry: vcpu 0 rip 0x2",
             " CPU 0/KVM-10 [001] 300: kvm_exit: reason HLT rip 0x1 info 0 0",
             " CPU 0/KVM-10 [001] 310: kvm_entry: vcpu 0 rip 0x2",
             " CPU 0/KVM-10 [001] 400: kvm_exit: reason MSR_WRITE rip 0x1 info 0 0",
             " CPU 0/KVM-10 [001] 404: kvm_entry: vcpu 0 rip 0x2"]
BACKWARDS_EXAMPLE = ":5: kvm_entry earlier than the kvm_exit it follows (line 3): CPU 0/KVM-10 [001] 150: kvm_entry: vcpu 0 rip 0x2"


def _command(tmp_path: Path, text: str, *options: str) -> tuple[int, str, Path]:
    src = tmp_path / "host.txt"
    src.write_text(text)
    return *kvm_stat(src, *options), src


def test_entry_before_its_exit_is_counted_not_timed() -> None:
    scan = scan_lines(BACKWARDS, "b.txt")
    assert [r.time for r in scan.exits] == [30, None, 10, 4]
    assert scan.backwards.count == 1 and scan.backwards.examples == ["b.txt" + BACKWARDS_EXAMPLE]
    assert scan.unpaired == 0 and scan.malformed.count == 0 and [r.time for r in scan.io] == [None]


def test_out_of_order_pair_left_out_of_the_times(tmp_path: Path) -> None:
    src = tmp_path / "host.txt"
    src.write_text("\n".join(BACKWARDS) + "\n")
    rows = {r["reason"]: r for r in summarise([src], None).by_reason.iter_rows(named=True)}
    assert {k: (r["count"], r["timed"], r["total_cycles"], r["min_cycles"], r["max_cycles"]) for k, r in rows.items()} \
        == {"HLT": (3, 2, 40, 10, 30), "MSR_WRITE": (1, 1, 4, 4, 4)}


def test_out_of_order_pairs_warn_and_strict_fails(tmp_path: Path) -> None:
    """Like `pipeline import`'s malformed lines: a warning with a count and file:line
    examples, exit 0; --strict makes it an error for the file (none summarised: exit 2)."""
    code, text, src = _command(tmp_path, "\n".join(BACKWARDS) + "\n")
    assert code == 0
    assert (f"warning: {src}: 1 kvm_entry line(s) earlier than the kvm_exit they follow: those exits counted, "
            "not timed (is the file in time order?)\n" f"  {src}{BACKWARDS_EXAMPLE}\n") in text
    code, text, src = _command(tmp_path, "\n".join(BACKWARDS) + "\n", "--strict")
    assert code == 2 and text == f"error: {src}{BACKWARDS_EXAMPLE} (--strict)\n"


def test_reason_with_no_timed_exit_has_no_total(tmp_path: Path) -> None:
    """Its only exit is closed out of order: total is null ("—"), like mean and min, not 0."""
    src = tmp_path / "host.txt"       # HLT 100 -> 130, CPUID 200 -> (150)
    src.write_text("\n".join(BACKWARDS[:2] + [BACKWARDS[2].replace("HLT", "CPUID")] + BACKWARDS[3:5]) + "\n")
    rows = {r["reason"]: r for r in summarise([src], None).by_reason.iter_rows(named=True)}
    assert (rows["CPUID"]["count"], rows["CPUID"]["timed"], rows["CPUID"]["total_cycles"]) == (1, 0, None)
    assert rows["HLT"]["total_cycles"] == 30


@needs_samples
def test_no_negative_times_in_a_trace_sorted_by_cpu(tmp_path: Path) -> None:
    """A real host trace reordered CPU by CPU (as per-CPU buffers read one after another
    would be): each vCPU thread's entries that fall before the exit they follow, counted by
    plain string splitting, are reported, and no time is negative."""
    text = sample_text(SAMPLES / "HIP24_Masterarbeit__documentation_trace-cmd_analysis_test_trace.dat__report_part1.txt.xz")
    lines = sorted(text.splitlines(), key=by_cpu)
    exit_at, backwards = {}, 0
    for line in lines:
        if ": kvm_exit:" in line or ": kvm_entry:" in line:
            thread, ts = line.split(" [", 1)[0].rsplit("-", 1)[1], float(line.split("] ", 1)[1].split(":", 1)[0])
            if ": kvm_exit:" in line:
                exit_at[thread] = ts
            elif thread in exit_at:
                backwards += ts < exit_at.pop(thread)
    assert backwards > 0
    src = tmp_path / "by_cpu.txt"
    src.write_text("\n".join(lines) + "\n")
    stats = summarise([src], None)
    assert stats.by_vcpu["min_ns"].min() >= 0
    assert stats.files[0].backwards.count == backwards


def test_numbers_too_large_for_the_tables_are_malformed(tmp_path: Path) -> None:
    """Garbled numbers made polars refuse the whole table (a traceback); now each such line is
    malformed. By hand: lines 2-7 each carry one number outside its 64-bit column (a negative
    port, a 73-bit gpa, 23-digit reason, vcpu, size and timestamp); line 1's exit stays, untimed."""
    big = "99999999999999999999999"
    lines = [" CPU 0/KVM-10 [001] 100: kvm_exit: reason HLT rip 0x1 info 0 0",
             " CPU 0/KVM-10 [001] 101: kvm_pio: rw=1 port=-1 size=1 count=1 val=0",
             " CPU 0/KVM-10 [001] 102: kvm_mmio: type=1 len=4 gpa=0x1ffffffffffffffffff val=0",
             f" CPU 0/KVM-10 [001] 103: kvm_exit: exit_reason={big} isa=1 vcpu_id=0",
             f" CPU 0/KVM-10 [001] 104: kvm_entry: vcpu_id={big}",
             f" CPU 0/KVM-10 [001] 105: kvm_pio: pio_write at 0x80 size {big} count 1 val 0x0",
             f" CPU 0/KVM-10 [001] {big}: kvm_entry: vcpu 0 rip 0x2"]
    code, text, src = _command(tmp_path, "\n".join(lines) + "\n")
    assert code == 0 and f"warning: {src}: 6 malformed KVM line(s) skipped" in text
    assert [line.split(": ", 1)[0] for line in text.splitlines() if line.startswith(f"  {src}:")] == \
        [f"  {src}:{n}" for n in range(2, 7)]     # the first five examples
    assert f"{src}: 1 exits, 1 without a following kvm_entry (untimed)" in text


@needs_samples
def test_chunk_boundaries_change_nothing(tmp_path: Path) -> None:
    """Read in chunks of a few lines, a file gives what it gives read in one: line numbers,
    pending exits and vCPU ids carry over from chunk to chunk. The host trace sorted CPU by
    CPU has out-of-order pairs (examples with line numbers) and pairs across chunks."""
    text = sample_text(SAMPLES / "HIP24_Masterarbeit__documentation_trace-cmd_analysis_test_trace.dat__report_part1.txt.xz")
    lines = sorted(text.splitlines(), key=by_cpu)
    src = tmp_path / "by_cpu.txt"
    src.write_text("\n".join(lines[:40] + ["garbage", " q-1 [000] 1.0: kvm_exit: garbage"] + lines[40:]) + "\n")
    whole = scan_chunks(read_chunks(src, 1 << 30), "f")
    assert whole.backwards.count > 0 and whole.malformed.count == 1 and whole.exits
    assert scan_chunks(read_chunks(src, 1_000), "f") == whole


def test_events_table_orders_ties_by_name(tmp_path: Path) -> None:
    """Events of equal count come out in name order, the same in every run."""
    lines = [" CPU 0/KVM-10 [001] 5.000001: kvm_exit: reason HLT rip 0x1 info 0 0",
             " CPU 0/KVM-10 [001] 5.000002: kvm_msr: msr_write 6e0 = 0x1",
             " CPU 0/KVM-10 [001] 5.000003: kvm_cr: cr_write 3 = 0x1000",
             " CPU 0/KVM-10 [001] 5.000004: kvm_hypercall: nr 0x1 a0 0x0 a1 0x0 a2 0x0 a3 0x0",
             " CPU 0/KVM-10 [001] 5.000005: kvm_entry: vcpu 0 rip 0x2"]
    src = tmp_path / "host.txt"
    src.write_text("\n".join(lines) + "\n")
    events = summarise([src], None).events
    assert events["event"].to_list() == ["kvm_cr", "kvm_hypercall", "kvm_msr"] and set(events["count"]) == {1}


def by_cpu(line: str) -> int:
    """The CPU column of a trace line (-1 for a line without one): sorting by it gives a host
    trace as per-CPU buffers read one after the other would, out of time order."""
    return int(line.split("[", 1)[1].split("]", 1)[0]) if "] " in line else -1
