"""`pipeline compare` and `pipeline host-costs` on a hand-written guest/host pair, and on the
real HIP24 pair (measured side only, counted here by plain line splitting).

The pair (times in µs after 1000 s on the recording clock; the guest's t_ns = 0 is at 1000 s):

  guest row (kvm-ept: driver, reason)      ours: qemu-system-x86-1111      decoy: CPU 0/KVM-2222
    0 cpuid  (before the host: not in the window)
                                            50 EXTERNAL_INTERRUPT  → 54 (4)
  100 hlt    exit_hlt HLT                  102 HLT → 180 (78)
                                                                           150 HLT → 160
  200 mmio   exit_mmio EPT_MISCONFIG       203 EPT_MISCONFIG → 206 (3)
                                                                           250 MSR_WRITE → 251
  300 io     exit_io IO_INSTRUCTION        301 IO_INSTRUCTION → 311 (10)
                                                                           350 HLT → 360
  400 mmio                                 402 EPT_MISCONFIG → 407 (5)
                                                                           450 MSR_WRITE → 451
  500 hlt                                  501 HLT → 591 (90)
                                                                           550 HLT → 560
  600 cpuid  exit_cpuid CPUID              602 CPUID → 603 (1)
  650 mmio   (no exit on the host)                                         650 MSR_WRITE → 651
  660 hypercall exit_hypercall VMCALL (never on the host)
  670 msr    exit_msr: no single host reason
  680 io     (no exit on the host)
  700 io     (the guest's last row)        702 IO_INSTRUCTION → 708 (6)  (in the 20 µs slack)
                                           715 EPT_VIOLATION → 719 (4)    (in the slack; not modelled)
                                           740 EPT_MISCONFIG → 744 (4)    (after end + slack)
                                           800 HLT → 900 (100)            (after end + slack)

Window: [max(0, 50), min(700, 800)] = [50, 700]; ours counted in [50, 720].
  reason              predicted  measured  error   mean µs  pred. host µs  meas. host µs
  HLT                 2          2          0%     84       168            168
  EPT_MISCONFIG       3          2        +50%     4        12             8
  IO_INSTRUCTION      3          2        +50%     8        24             16
  CPUID               1          1          0%     1        1              1
  EXTERNAL_INTERRUPT  0          1       -100%     4        0              4
  EPT_VIOLATION       0          1       -100%     4        0              4
  VMCALL              1          0          —      —        —              0
  total without HLT   8          7       +14.3%             37             33
  total               10         9       +11.1%             205            201
Thread choice: ours 2 of its 2 HLT exits within 20 µs after a guest hlt row (both hlt rows
followed by one); the decoy (window [150, 650]) 0 of its 3.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.cost_profile import MODERN_PROFILE, load_profile
from pipeline.tracefile.format import TraceMeta, write_trace
from replay.kinds import IRQ_EDGE, IRQ_LEVEL, IRQ_TIMER, TIMER_LAPIC, Kind
from tests.pipeline.browser import needs_chromium, opened
from tests.pipeline.tracefiles import SAMPLES, needs_samples, rewrite_meta, sample_text

CLOCK_START = 1_000_000_000_000   # ns: the guest's t_ns = 0 at 1000 s
US = 1_000
OURS, DECOY = "qemu-system-x86-1111", "CPU 0/KVM-2222"
GUEST_ROWS = [(0, Kind.CPUID, 0), (100, Kind.HLT, 80 * US), (200, Kind.MMIO, 0xFEBF0000), (300, Kind.IO, 0x3F8),
              (400, Kind.MMIO, 0xFEBF0004), (500, Kind.HLT, 90 * US), (600, Kind.CPUID, 1), (650, Kind.MMIO, 0xFEBF0008),
              (660, Kind.HYPERCALL, 0), (670, Kind.MSR, 0x10), (680, Kind.IO, 0x3F8), (700, Kind.IO, 0x3F8)]
# (µs, thread, reason, µs to its kvm_entry)
HOST_EXITS = [(50, OURS, "EXTERNAL_INTERRUPT", 4), (102, OURS, "HLT", 78), (150, DECOY, "HLT", 10),
              (203, OURS, "EPT_MISCONFIG", 3), (250, DECOY, "MSR_WRITE", 1), (301, OURS, "IO_INSTRUCTION", 10),
              (350, DECOY, "HLT", 10), (402, OURS, "EPT_MISCONFIG", 5), (450, DECOY, "MSR_WRITE", 1),
              (501, OURS, "HLT", 90), (550, DECOY, "HLT", 10), (602, OURS, "CPUID", 1), (650, DECOY, "MSR_WRITE", 1),
              (702, OURS, "IO_INSTRUCTION", 6), (715, OURS, "EPT_VIOLATION", 4), (740, OURS, "EPT_MISCONFIG", 4),
              (800, OURS, "HLT", 100)]
# reason -> (predicted, measured, error %, mean µs, predicted host µs, measured host µs), worked out above
EXPECTED = {"HLT": (2, 2, 0.0, 84.0, 168.0, 168.0), "EPT_MISCONFIG": (3, 2, 50.0, 4.0, 12.0, 8.0),
            "IO_INSTRUCTION": (3, 2, 50.0, 8.0, 24.0, 16.0), "CPUID": (1, 1, 0.0, 1.0, 1.0, 1.0),
            "EXTERNAL_INTERRUPT": (0, 1, -100.0, 4.0, 0.0, 4.0), "EPT_VIOLATION": (0, 1, -100.0, 4.0, 0.0, 4.0),
            "VMCALL": (1, 0, None, None, None, 0.0)}
SECOND = "qemu-system-x86-1112"   # our guest's second vCPU, in the two-vCPU test
VCPU_IDS = {OURS: 0, DECOY: 1, SECOND: 1}
runner = CliRunner()


def write_guest(path: Path, clock_start: int | None = CLOCK_START,
                rows: tuple[tuple[int, ...], ...] = tuple((t, 0, k, v) for t, k, v in GUEST_ROWS)) -> Path:
    """The guest trace of (µs, cpu, kind, value[, arg]) rows (default: GUEST_ROWS, all on vCPU 0; arg 0)."""
    n = len(rows)
    cols = {"t_ns": np.array([r[0] * US for r in rows], np.int64), "cpu": np.array([r[1] for r in rows], np.uint16),
            "kind": np.array([int(r[2]) for r in rows], np.uint8),
            "value": np.array([r[3] for r in rows], np.uint64), "asid": np.ones(n, np.uint32),
            "pid": np.ones(n, np.int32), "arg": np.array([r[4] if len(r) > 4 else 0 for r in rows], np.uint32)}
    source = {"tool": "tests"} | ({} if clock_start is None else {"clock_start_ns": clock_start})
    cpus = tuple(sorted({r[1] for r in rows}))
    write_trace(path, cols, TraceMeta(workload="pair", native_ns=700 * US, ops=1, op_unit="run", source=source, cpus=cpus))
    return path


def _line(us: int, thread: str, event: str, payload: str) -> str:
    return f"{thread:>22} [003] {1000 + us / 1e6:.6f}: {event + ':':<22}{payload}"


def host_text(exits: list[tuple[int, str, str, int]] = HOST_EXITS) -> str:
    """trace-cmd report text: each exit and its entry, both threads interleaved in time order."""
    lines = []
    for us, thread, reason, took in exits:
        vcpu = VCPU_IDS[thread]
        lines += [(us, _line(us, thread, "kvm_exit", f"reason {reason} rip 0xffffffff81001000 info 0 0")),
                  (us + took, _line(us + took, thread, "kvm_entry", f"vcpu {vcpu} rip 0xffffffff81001000"))]
    return "cpus=4\n" + "".join(f"{text}\n" for _, text in sorted(lines, key=lambda x: x[0]))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    host = tmp_path / "host.txt"
    host.write_text(host_text())
    return write_guest(tmp_path / "guest.parquet"), host


def compare(*args: object) -> tuple[int, str]:
    r = runner.invoke(app, ["compare", *map(str, args)])
    return r.exit_code, r.output


def test_host_text_is_what_the_docstring_says(pair: tuple[Path, Path]) -> None:
    text = pair[1].read_text()
    assert " qemu-system-x86-1111 [003] 1000.000050: kvm_exit:             reason EXTERNAL_INTERRUPT rip" in text
    assert "       CPU 0/KVM-2222 [003] 1000.000160: kvm_entry:            vcpu 1 rip" in text


def test_per_reason_window_and_thread(pair: tuple[Path, Path], tmp_path: Path) -> None:
    guest, host = pair
    out = tmp_path / "cmp.parquet"
    code, output = compare(guest, host, "--mode", "kvm-ept", "--out", out)
    assert code == 0, output
    assert (f"vcpu thread: {OURS} (2 of its 2 HLT exits within 20 µs after a guest hlt row, 2 of the guest's 2 hlt "
            f"rows followed by one; next: {DECOY}, 0 of 3)") in output
    assert "window: 1000.000050–1000.000700 s on the recording clock (0.00065 s): 11 guest rows replayed" in output
    assert "not produced by kvm-ept: EPT_VIOLATION, EXTERNAL_INTERRUPT (no exit driver models EPT_VIOLATION)" in output
    assert "predicted, never on the host: VMCALL: no measured mean, so no predicted host time (—)" in output
    assert "exit driver exit_msr (1): no VMX exit reason, left out of the table" in output
    assert ("exit drivers by reason: CPUID ← exit_cpuid; EPT_MISCONFIG ← exit_mmio; HLT ← exit_hlt; "
            "IO_INSTRUCTION ← exit_io; VMCALL ← exit_hypercall") in output
    assert "MSR_WRITE" not in output   # the decoy's exits are never counted
    table = pl.read_parquet(out)
    got = {r["reason"]: (r["predicted"], r["measured"], r["error_pct"], r["mean_exit_us"], r["predicted_host_us"],
                         r["measured_host_us"]) for r in table.iter_rows(named=True)}
    assert got == EXPECTED
    assert table["reason"].to_list() == ["EPT_MISCONFIG", "IO_INSTRUCTION", "HLT", "CPUID", "EPT_VIOLATION",
                                         "EXTERNAL_INTERRUPT", "VMCALL"]   # measured, then predicted, descending; then name
    first = table.row(0, named=True)
    assert (first["window_start_ns"], first["window_end_ns"], first["window_slack_ns"]) == \
        (CLOCK_START + 50 * US, CLOCK_START + 700 * US, 20 * US)
    assert (first["vcpu_thread"], first["mode"], first["isa"], first["guest"], first["hosts"]) == \
        (OURS, "kvm-ept", "VMX", str(guest), str(host))
    total = re.search(r"│ total\s+│\s+(\d+) │\s+(\d+) │\s+(\S+) │\s+— │\s+(\S+) │\s+(\S+) │", output)
    assert total and total.groups() == ("10", "9", "+11.1%", "205.0", "201.0")
    busy = re.search(r"│ total without HLT\s+│\s+(\d+) │\s+(\d+) │\s+(\S+) │\s+— │\s+(\S+) │\s+(\S+) │", output)
    assert busy and busy.groups() == ("8", "7", "+14.3%", "37.0", "33.0")
    assert re.search(r"│ VMCALL\s+│\s+1 │\s+0 │\s+— │\s+— │\s+— │\s+0.0 │", output)


def test_slack(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """5 µs: the exit 2 µs after the last guest row still counts, the one 15 µs after does not;
    0 µs: neither (a named thread: no exit follows its row by 0 µs, so auto would find none)."""
    guest, host = pair
    for slack, io, violation in ((5, 2, False), (0, 1, False), (15, 2, True)):
        out = tmp_path / f"s{slack}.parquet"
        code, output = compare(guest, host, "--mode", "kvm-ept", "--vcpu-thread", OURS, "--window-slack-us", slack,
                               "--out", out)
        assert code == 0, output
        measured = dict(pl.read_parquet(out).select("reason", "measured").iter_rows())
        assert measured["IO_INSTRUCTION"] == io and ("EPT_VIOLATION" in measured) == violation, slack
        assert f"vcpu thread: {OURS} (named)" in output


def test_thread_by_pid_and_the_decoy_named(pair: tuple[Path, Path], tmp_path: Path) -> None:
    guest, host = pair
    code, output = compare(guest, host, "--mode", "kvm-ept", "--vcpu-thread", "1111")
    assert code == 0 and f"vcpu thread: {OURS} (named)" in output
    out = tmp_path / "decoy.parquet"
    code, output = compare(guest, host, "--mode", "kvm-ept", "--vcpu-thread", DECOY, "--out", out)
    assert code == 0, output   # named, it is compared: its window is its own, [150, 650]
    assert "window: 1000.000150–1000.000650 s" in output
    assert dict(pl.read_parquet(out).select("reason", "measured").iter_rows()) == {
        "HLT": 3, "MSR_WRITE": 3, "EPT_MISCONFIG": 0, "IO_INSTRUCTION": 0, "CPUID": 0}   # VMCALL's row is at 660


def test_kvm_stat_lists_the_threads_by_pid(pair: tuple[Path, Path]) -> None:
    r = runner.invoke(app, ["kvm-stat", str(pair[1])])
    assert r.exit_code == 0, r.output
    rows = re.findall(r"│\s+(\d+) │\s+(\d) │\s+(\d+) │\s+([\d.]+) │", r.output.split("KVM exits by vCPU thread")[1])
    assert rows == [("1111", "0", "11", "64.71"), ("2222", "1", "6", "35.29")]


def test_html_has_both_series_and_the_table(pair: tuple[Path, Path], tmp_path: Path) -> None:
    guest, host = pair
    page = tmp_path / "site" / "cmp.html"
    code, output = compare(guest, host, "--mode", "kvm-ept", "--html", page)
    assert code == 0, output
    doc = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", doc)   # plotly inlined: opens offline
    assert '"name":"predicted (kvm-ept)"' in doc and '"name":"measured (host trace)"' in doc
    assert '"y":[3,3,2,1,0,0,1]' in doc and '"y":[2,2,2,1,1,1,0]' in doc
    assert '"type":"log"' in doc
    assert "<td>EPT_MISCONFIG</td><td>3</td><td>2</td><td class=\"poor\">+50.0%</td><td>4</td><td>12.0</td><td>8.0</td>" in doc
    assert "<td>VMCALL</td><td>1</td><td>0</td><td>—</td><td>—</td><td>—</td><td>0.0</td>" in doc
    assert f"vcpu thread: {OURS}" in doc and "window: 1000.000050–1000.000700 s" in doc and "mode kvm-ept" in doc


@needs_chromium
def test_html_renders_in_headless_chromium(pair: tuple[Path, Path], tmp_path: Path) -> None:
    guest, host = pair
    page_path = tmp_path / "cmp.html"
    assert compare(guest, host, "--mode", "kvm-ept", "--html", page_path)[0] == 0
    with opened(page_path) as got:
        series = got.page.evaluate("[...document.querySelector('.plotly-graph-div').data].map(t => [t.name, t.y])")
    assert got.errors == [] and all(r.startswith(got.url) for r in got.requests), (got.errors, got.requests)
    assert series == [["predicted (kvm-ept)", [3, 3, 2, 1, 0, 0, 1]], ["measured (host trace)", [2, 2, 2, 1, 1, 1, 0]]]


def test_host_costs(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The whole thread (no window): EPT_MISCONFIG 3, 5, 4 µs -> mean 4000 ns, p10 3200, p90 4800;
    IO_INSTRUCTION 10, 6 -> 8000, p10 6400, p90 9600; CPUID one exit of 1 µs: no percentile
    range, the base's [300, 600] widened to the mean; HLT kept from the base."""
    _, host = pair
    out = tmp_path / "measured.toml"
    r = runner.invoke(app, ["host-costs", str(host), "--vcpu-thread", OURS, "-o", str(out)])
    assert r.exit_code == 0, r.output
    profile, base = load_profile(out), load_profile(MODERN_PROFILE)
    mmio, io, cpuid = profile.costs["exit_mmio"], profile.costs["exit_io"], profile.costs["exit_cpuid"]
    assert (mmio.ns, mmio.low, mmio.high) == pytest.approx((4000, 3200, 4800))
    assert (io.ns, io.low, io.high) == pytest.approx((8000, 6400, 9600))
    assert (cpuid.ns, cpuid.low, cpuid.high) == (1000, base.costs["exit_cpuid"].low, 1000)
    assert mmio.source == (f"measured: mean exit-to-entry of 3 EPT_MISCONFIG exits of {OURS} in host.txt "
                           "(1000.000050–1000.000800 s)")
    assert profile.costs["exit_irq"].ns == profile.costs["exit_external_interrupt"].ns == 4000
    hlt = profile.costs["exit_hlt"]
    assert hlt.ns == base.costs["exit_hlt"].ns and "includes the halt itself" in hlt.source and "mean 89.33 µs" in hlt.source
    for driver in ("exit_msr_write", "exit_apic_write", "exit_cr3", "tdp_walk_extra"):
        assert profile.costs[driver] == base.costs[driver]   # the decoy's MSR_WRITEs are not ours
    assert profile.name == "measured" and f"wrote {out}" in r.output
    printed = {m[0]: m[1:] for m in re.findall(r"│ (exit_\w+)\s+│ (\w+)\s+│\s+(\d+) │.*│ ([^│]+?)\s+│", r.output)}
    assert printed["exit_mmio"] == ("EPT_MISCONFIG", "3", "measured")
    assert printed["exit_hlt"] == ("HLT", "3", "modern-2020s: HLT's time is the halt")
    assert printed["exit_msr_write"] == ("MSR_WRITE", "0", "modern-2020s: no MSR_WRITE exits")


def test_errors_are_one_line_and_write_nothing(pair: tuple[Path, Path], tmp_path: Path) -> None:
    guest, host = pair
    no_clock = write_guest(tmp_path / "noclock.parquet", clock_start=None)
    counts = write_guest(tmp_path / "counts.parquet")
    rewrite_meta(counts, lambda m: m["source"].update(timestamps="counts"))
    later = write_guest(tmp_path / "later.parquet", clock_start=CLOCK_START + 10**9)
    # 60 µs later: every hlt row comes after the HLT exits near it (ours 102, 501; decoy 150, 350, 550)
    shifted = write_guest(tmp_path / "shifted.parquet", clock_start=CLOCK_START + 60 * US)
    empty = tmp_path / "empty.txt"
    empty.write_text("cpus=1\n" + _line(10, OURS, "sched_switch", "prev_comm=a prev_pid=1") + "\n")
    out, page = tmp_path / "o.parquet", tmp_path / "o.html"
    cases = [((no_clock, host), f"{no_clock}: no recording clock (source.clock_start_ns): import it again with this version"),
             ((counts, host), f"{counts}: recorded in clock counts, not seconds"),
             ((tmp_path / "missing.parquet", host), f"{tmp_path / 'missing.parquet'}: not a readable Parquet file"),
             ((guest, tmp_path / "missing.txt"), f"{tmp_path / 'missing.txt'}"),
             ((guest, empty), f"{empty}: no kvm_exit events in 1 event lines"),
             ((later, host, "--vcpu-thread", OURS), f"no overlap in time: guest 1001.000000–1001.000700 s, host thread {OURS} "
                                                    "1000.000050–1000.000800 s on the recording clock"),
             ((guest, host, "--vcpu-thread", "qemu-9"), f"--vcpu-thread qemu-9: no thread of that name has kvm_exit lines; "
                                                        f"threads: {OURS}, {DECOY}"),
             ((later, host), "no overlap in time: guest 1001.000000–1001.000700 s, no host thread's exits fall in it"),
             ((shifted, host), "--vcpu-thread auto: no thread's exits follow the guest's rows within 20 µs")]
    for args, line in cases:
        code, output = compare(*args, "--mode", "kvm-ept", "--out", out, "--html", page)
        assert code == 2 and output.startswith(f"error: {line}") and output.count("\n") == 1, output
        assert "Traceback" not in output
    assert compare(guest, host, "--mode", "kvm-nope")[1].startswith("error: --mode kvm-nope: unknown mode; known: native")
    r = runner.invoke(app, ["host-costs", str(host), "--vcpu-thread", "qemu-9", "-o", str(tmp_path / "p.toml")])
    assert r.exit_code == 2 and r.output.startswith("error: --vcpu-thread qemu-9: no thread")
    assert not out.exists() and not page.exists() and not (tmp_path / "p.toml").exists()


# ---------------------------------------------------------------- two guest vCPUs
# vCPU 1's rows and its thread's exits, beside the pair above (µs):
#   120 hlt (before its window)        125 HLT → 225 (100)
#   320 hlt                            321 HLT → 471 (150)
#   520 mmio (its last row)            522 EPT_MISCONFIG → 524 (2)  (in the slack)
# vCPU 1's window: [max(120, 125), min(520, 522)] = [125, 520]: predicted HLT 1, EPT_MISCONFIG 1;
# measured HLT 2 (mean 125 µs), EPT_MISCONFIG 1 (2 µs). Its thread scores 1 of 2 HLT exits after
# an hlt row in its window (the 125 one follows the row at 120, outside it); every other
# (vCPU, thread) pair scores 0, so vCPU 0 keeps ours and vCPU 1 gets 1112.
SECOND_ROWS = [(120, 1, Kind.HLT, 5 * US), (320, 1, Kind.HLT, 5 * US), (520, 1, Kind.MMIO, 0xFEBF0000)]
SECOND_EXITS = [(125, SECOND, "HLT", 100), (321, SECOND, "HLT", 150), (522, SECOND, "EPT_MISCONFIG", 2)]


def test_two_vcpus_each_with_its_thread(tmp_path: Path) -> None:
    rows = sorted([(t, 0, k, v) for t, k, v in GUEST_ROWS] + SECOND_ROWS, key=lambda r: r[0])
    guest = write_guest(tmp_path / "smp.parquet", rows=tuple(rows))
    host = tmp_path / "host.txt"
    host.write_text(host_text(HOST_EXITS + SECOND_EXITS))
    out, page = tmp_path / "smp.cmp.parquet", tmp_path / "smp.html"
    code, output = compare(guest, host, "--mode", "kvm-ept", "--out", out, "--html", page)
    assert code == 0, output
    assert f"vcpu thread: {OURS} (2 of its 2 HLT exits" in output.split("guest vCPU 1")[0]
    assert (f"vcpu thread: {SECOND} (1 of its 2 HLT exits within 20 µs after a guest hlt row, 1 of the guest's 1 hlt "
            f"rows followed by one; next: {DECOY}, 0 of 2)") in output
    assert "window: 1000.000125–1000.000520 s" in output
    table = pl.read_parquet(out)
    first = {r["reason"]: (r["predicted"], r["measured"], r["error_pct"], r["mean_exit_us"], r["predicted_host_us"],
                           r["measured_host_us"]) for r in table.filter(pl.col("vcpu") == 0).iter_rows(named=True)}
    assert first == EXPECTED   # vCPU 1's thread's exits are not vCPU 0's
    second = table.filter(pl.col("vcpu") == 1).select("reason", "predicted", "measured", "mean_exit_us", "vcpu_thread")
    assert second.rows() == [("HLT", 1, 2, 125.0, SECOND), ("EPT_MISCONFIG", 1, 1, 2.0, SECOND)]
    doc = page.read_text(encoding="utf-8")
    assert '<section id="vcpu-0"><h2>guest vCPU 0: exits by reason</h2>' in doc and '<section id="vcpu-1">' in doc
    code, output = compare(guest, host, "--mode", "kvm-ept", "--vcpu-thread", f"{OURS}, 1112")
    assert code == 0 and f"vcpu thread: {SECOND} (named)" in output
    code, output = compare(guest, host, "--mode", "kvm-ept", "--vcpu-thread", "1111")
    assert code == 2 and output == ("error: --vcpu-thread 1111: 1 thread(s) for 2 guest vCPU(s) (cpus [0, 1]): "
                                    "name one per vCPU, comma-separated, in that order\n")


# ---------------------------------------------------------------- the real pair
HOST_SAMPLE = SAMPLES / "HIP24_Masterarbeit__documentation_trace-cmd_analysis_test_trace.dat__report_part1.txt.xz"
GUEST_SAMPLE = SAMPLES / "HIP24_Masterarbeit__documentation_trace-cmd_analysis_test_trace-Salamander4.dat__report_part1.txt.xz"
THREAD = "qemu-system-x86-483882"


def _first_timestamp_ns(text: str) -> int:
    """The first event line's timestamp (`… [000] 22149.948193: …`), by plain splitting."""
    line = next(x for x in text.splitlines() if "]" in x and ": " in x)
    sec, frac = line.split("]", 1)[1].split(":", 1)[0].split(".")
    return int(sec) * 10**9 + int(frac.ljust(9, "0"))


@needs_samples
def test_real_pair_predicted_against_measured(tmp_path: Path) -> None:
    """Issue 14's bar on the real pair, judged against the host's exits counted here by
    splitting the lines: our guest's thread is chosen over the other VM's on its HLT exits; every
    reason with at least 1% of the exits is predicted within ±15% by kvm-apicv, except
    EPT_VIOLATION, which the model does not produce (host memory management, invisible in the
    guest: README); the total within ±10%, the host time within ±20%. The importer records the
    guest's first timestamp as clock_start_ns."""
    text = sample_text(HOST_SAMPLE)
    exits = Counter(line.split(" reason ", 1)[1].split(" ", 1)[0] for line in text.splitlines()
                    if line.lstrip().startswith(THREAD) and "kvm_exit:" in line)
    assert exits == {"APIC_WRITE": 1140, "HLT": 524, "EPT_MISCONFIG": 221, "PREEMPTION_TIMER": 35,
                     "EPT_VIOLATION": 25, "EOI_INDUCED": 8, "EXTERNAL_INTERRUPT": 5, "PAUSE_INSTRUCTION": 5}
    guest = tmp_path / "guest.parquet"
    r = runner.invoke(app, ["import", str(GUEST_SAMPLE), "-o", str(guest)])
    assert r.exit_code == 0, r.output
    meta = TraceMeta.from_json(pq.read_schema(guest).metadata[b"hvreplay"], guest)
    assert meta.source["clock_start_ns"] == _first_timestamp_ns(sample_text(GUEST_SAMPLE))
    out = tmp_path / "cmp.parquet"
    code, output = compare(guest, HOST_SAMPLE, "--mode", "kvm-apicv", "--out", out)
    assert code == 0, output
    assert re.search(rf"vcpu thread: {THREAD} \(\d+ of its 524 HLT exits", output)
    table = pl.read_parquet(out)
    assert dict(table.filter(pl.col("measured") > 0).select("reason", "measured").iter_rows()) == dict(exits)
    assert set(table["vcpu_thread"]) == {THREAD}
    predicted = dict(table.select("reason", "predicted").iter_rows())
    total = sum(exits.values())
    for reason, n in exits.items():
        if n >= total / 100 and reason != "EPT_VIOLATION":
            assert abs(predicted[reason] - n) <= 0.15 * n, (reason, predicted[reason], n)
    assert predicted["EPT_VIOLATION"] == 0
    assert abs(sum(predicted.values()) - total) <= 0.10 * total
    host = table.select(pl.col("predicted_host_us").fill_null(0).sum(), pl.col("measured_host_us").sum()).row(0)
    assert abs(host[0] - host[1]) <= 0.20 * host[1]


# A hand-worked pair for the APIC rules of kvm-apicv and kvm-noapicv (docs/issue14-design.md's
# table), end to end through compare. Guest rows (µs, kind, value, arg); xAPIC guest:
#   2 cpuid                      CPUID (first row: the window opens at 2 µs, with the host's first exit)
#  10 timer_arm 100 µs, LAPIC    apicv APIC_WRITE (TMICT traps)            noapicv APIC_ACCESS
#  12 hlt 38 µs                  HLT, halted
#  50 irq timer                  the wake-up: no delivery exit             + EOI: APIC_ACCESS
#  60 timer_arm 1 µs             APIC_WRITE                                 APIC_ACCESS
#  61 irq timer                  armed 1 µs < 1.5 µs ahead: expired during the arming exit, no exit  + EOI APIC_ACCESS
#  70 timer_arm 5 µs             APIC_WRITE                                 APIC_ACCESS
#  75 irq timer                  running: PREEMPTION_TIMER                  PREEMPTION_TIMER + EOI APIC_ACCESS
#  80 irq edge (MSI)             posted: none                               EXTERNAL_INTERRUPT (kick) + EOI APIC_ACCESS
#  90 irq level (IRQ 11)         EOI_INDUCED                                EXTERNAL_INTERRUPT + EOI APIC_ACCESS
# 100 wrmsr FS_BASE              passed through: none                       none
# 110 wrmsr 0x6E0                MSR_WRITE (TSC_DEADLINE is intercepted)    MSR_WRITE
# 120 mmio write (virtio notify) EPT_MISCONFIG                              EPT_MISCONFIG
# 130 mmio write 0xFEE000B0      EOI virtualized: none                      APIC_ACCESS
# 140 hlt 50 µs                  HLT, halted
# 190 irq edge                   the wake-up: none                          + EOI APIC_ACCESS
# 200 cpuid                      CPUID (last row: the window closes at 200 µs)
# Busy 198 − 88 = 110 µs × 250 Hz: no host tick. kvm-apicv: APIC_WRITE 3, HLT 2, CPUID 2,
# PREEMPTION_TIMER 1, EOI_INDUCED 1, MSR_WRITE 1, EPT_MISCONFIG 1 = 11, each measured once per
# predicted exit below. kvm-noapicv: APIC_ACCESS 3 + 6 EOIs + 1 = 10, EXTERNAL_INTERRUPT 2, and
# no APIC_WRITE or EOI_INDUCED (3 and 1 measured).
APIC_ROWS = ((2, 0, Kind.CPUID, 0), (10, 0, Kind.TIMER_ARM, 100_000, TIMER_LAPIC), (12, 0, Kind.HLT, 38 * US),
             (50, 0, Kind.IRQ, 236, IRQ_TIMER), (60, 0, Kind.TIMER_ARM, 1_000, TIMER_LAPIC), (61, 0, Kind.IRQ, 236, IRQ_TIMER),
             (70, 0, Kind.TIMER_ARM, 5_000, TIMER_LAPIC), (75, 0, Kind.IRQ, 236, IRQ_TIMER), (80, 0, Kind.IRQ, 33, IRQ_EDGE),
             (90, 0, Kind.IRQ, 11, IRQ_LEVEL), (100, 0, Kind.MSR, 0xC0000100, 1), (110, 0, Kind.MSR, 0x6E0, 1),
             (120, 0, Kind.MMIO, 0xFE003000, 1), (130, 0, Kind.MMIO, 0xFEE000B0, 1), (140, 0, Kind.HLT, 50 * US),
             (190, 0, Kind.IRQ, 33, IRQ_EDGE), (200, 0, Kind.CPUID, 1))
APIC_EXITS = [(2, OURS, "CPUID", 1), (5, DECOY, "HLT", 10), (11, OURS, "APIC_WRITE", 1), (13, OURS, "HLT", 37),
              (61, OURS, "APIC_WRITE", 1), (71, OURS, "APIC_WRITE", 1), (76, OURS, "PREEMPTION_TIMER", 1),
              (91, OURS, "EOI_INDUCED", 2), (95, DECOY, "HLT", 10), (111, OURS, "MSR_WRITE", 1),
              (121, OURS, "EPT_MISCONFIG", 3), (141, OURS, "HLT", 49), (165, DECOY, "HLT", 10), (201, OURS, "CPUID", 1)]


@pytest.mark.parametrize("mode, expected", [
    ("kvm-apicv", {"APIC_WRITE": (3, 3), "HLT": (2, 2), "CPUID": (2, 2), "PREEMPTION_TIMER": (1, 1),
                   "EOI_INDUCED": (1, 1), "MSR_WRITE": (1, 1), "EPT_MISCONFIG": (1, 1)}),
    ("kvm-noapicv", {"APIC_WRITE": (0, 3), "HLT": (2, 2), "CPUID": (2, 2), "PREEMPTION_TIMER": (1, 1),
                     "EOI_INDUCED": (0, 1), "MSR_WRITE": (1, 1), "EPT_MISCONFIG": (1, 1), "APIC_ACCESS": (10, 0),
                     "EXTERNAL_INTERRUPT": (2, 0)}),
])
def test_apic_rules_through_compare(tmp_path: Path, mode: str, expected: dict[str, tuple[int, int]]) -> None:
    guest = write_guest(tmp_path / "guest.parquet", rows=APIC_ROWS)
    host = tmp_path / "host.txt"
    host.write_text(host_text(APIC_EXITS))
    out = tmp_path / "cmp.parquet"
    code, output = compare(guest, host, "--mode", mode, "--out", out)
    assert code == 0, output
    assert f"vcpu thread: {OURS} (2 of its 2 HLT exits" in output and f"next: {DECOY}, 0 of 3" in output
    table = pl.read_parquet(out)
    assert {r: (p, m) for r, p, m in table.select("reason", "predicted", "measured").iter_rows()} == expected
    first = table.row(0, named=True)
    assert (first["window_start_ns"], first["window_end_ns"]) == (CLOCK_START + 2 * US, CLOCK_START + 200 * US)
