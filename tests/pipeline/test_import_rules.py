"""`pipeline import`, issue 14's rules: idle, MSRs, timer armings, interrupts and their source,
CR3 from tlb_flush / cobalt switches, device MMIO estimates. Snippets with counts by hand, and
the Dovetail guest sample against independent grep counts."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq

from pipeline.tracefile.importers import import_files
from pipeline.tracefile.importers.plan import Options
from pipeline.tracefile.importers.working_set import WorkingSet
from pipeline.tracefile.format import validate
from replay.kinds import DELAY_UNKNOWN, IRQ_EDGE, IRQ_LEVEL, IRQ_TIMER, IRQ_IPI, TIMER_LAPIC, TIMER_TSC_DEADLINE, Kind
from tests.pipeline.tracefiles import SAMPLES, needs_samples, sample_text

NO_WS = WorkingSet(user_pages=0, kernel_pages=0)


def _rows(tmp_path: Path, text: str, **kw) -> tuple:
    src, out = tmp_path / "in.txt", tmp_path / "out.parquet"
    src.write_text(text)
    report = import_files([src], out, working_set=NO_WS, **kw)
    meta = validate(out)
    t = pq.read_table(out).to_pydict()
    return report, meta, list(zip(t["kind"], t["value"], t["arg"]))


def _line(ts: str, task: str, event: str, payload: str) -> str:
    return f"{task:>16} [000] {ts}: {event}: {payload}\n"


# A Dovetail guest (trace-cmd report): idle, woken by an eth0 interrupt (irq 11, level) whose
# handler makes a synthetic in-band-work irq; a LAPIC timer interrupt; MSR writes; a tick shot;
# a vsock send: 2 packets, work run twice (kicks: first, then suppressed: no irq 33 between);
# irq 33 arrives, a third packet kicks again.
DOVETAIL = "".join([
    "cpus=1\n",
    _line("100.000000", "<idle>-0", "cpu_idle", "state=1 cpu_id=0"),
    _line("100.000010", "<idle>-0", "irq_pipeline_entry", "irq=11"),          # wakes the hlt: 10 µs
    _line("100.000011", "<idle>-0", "irq_handler_entry", "irq=24 name=in-band work"),
    _line("100.000012", "<idle>-0", "irq_handler_entry", "irq=11 name=eth0"),
    _line("100.000013", "<idle>-0", "irq_handler_exit", "irq=11 ret=handled"),
    _line("100.000014", "<idle>-0", "cpu_idle", "state=4294967295 cpu_id=0"),
    _line("100.000020", "<idle>-0", "irq_pipeline_entry", "irq=524546"),
    _line("100.000021", "<idle>-0", "irq_handler_entry", "irq=524546 name=Out-of-band LAPIC timer interrupt"),
    _line("100.000022", "<idle>-0", "local_timer_entry", "vector=236"),
    _line("100.000023", "<idle>-0", "cobalt_tick_shot", "[FAILED TO PARSE] secs=1 nsecs=2 delta=5000"),
    _line("100.000024", "<idle>-0", "write_msr", "c0000100, value 7fbde20ebc40"),
    _line("100.000025", "<idle>-0", "write_msr", "80b, value 0"),              # x2APIC EOI: no row
    _line("100.000030", "<idle>-0", "virtio_transport_alloc_pkt", "3:1 -> 2:1 len=0 type=STREAM op=RW flags=0"),
    _line("100.000031", "<idle>-0", "workqueue_execute_start", "work struct 0x1: function virtio_transport_send_pkt_work"),
    _line("100.000032", "<idle>-0", "virtio_transport_alloc_pkt", "3:1 -> 2:1 len=0 type=STREAM op=RW flags=0"),
    _line("100.000033", "<idle>-0", "workqueue_execute_start", "work struct 0x1: function virtio_transport_send_pkt_work"),
    _line("100.000034", "<idle>-0", "workqueue_execute_start", "work struct 0x1: function virtio_transport_send_pkt_work"),
    _line("100.000040", "<idle>-0", "irq_pipeline_entry", "irq=33"),
    _line("100.000041", "<idle>-0", "irq_handler_entry", "irq=33 name=virtio1-virtqueues"),
    _line("100.000042", "<idle>-0", "workqueue_queue_work", "work struct=0x2 function=virtio_transport_tx_work workqueue=v req_cpu=8192 cpu=0"),
    _line("100.000043", "<idle>-0", "irq_handler_exit", "irq=33 ret=handled"),
    _line("100.000050", "<idle>-0", "virtio_transport_alloc_pkt", "3:1 -> 2:1 len=0 type=STREAM op=RW flags=0"),
    _line("100.000051", "<idle>-0", "workqueue_execute_start", "work struct 0x1: function virtio_transport_send_pkt_work"),
    _line("100.000060", "<idle>-0", "cpu_idle", "state=1 cpu_id=0"),              # never woken: to the next event
    _line("100.000070", "<idle>-0", "napi_poll", "napi poll on napi struct 0x3 for device eth0 work 1 budget 64"),
])


def test_dovetail_guest(tmp_path: Path) -> None:
    report, meta, rows = _rows(tmp_path, DOVETAIL)
    irqs = [(v, a) for k, v, a in rows if k == Kind.IRQ]
    assert irqs == [(11, IRQ_LEVEL), (236, IRQ_TIMER), (33, IRQ_EDGE)]       # pipeline entries only
    assert [v for k, v, _ in rows if k == Kind.HLT] == [10_000, 10_000]
    assert [(v, a) for k, v, a in rows if k == Kind.MSR] == [(0xC0000100, 1)]
    assert [(v, a) for k, v, a in rows if k == Kind.TIMER_ARM] == [(5000, TIMER_LAPIC)]
    # e1000, present without a watchdog run by its level-triggered IRQ 11 named eth0: at that
    # interrupt ICR read, IMC write, STATUS read, IMS write, STATUS read (base 0xFEBC0000), then
    # ioapic-dovetail (irq 11 is level): index + data write, data read, index + data write; vsock:
    # 2 kicks (the first, and after irq 33); the napi poll of eth0 with work 1: the RDT write
    mmio = [(v, a) for k, v, a in rows if k == Kind.MMIO]
    assert mmio == [(0xFEBC00C0, 0), (0xFEBC00D8, 1), (0xFEBC0008, 0), (0xFEBC00D0, 1), (0xFEBC0008, 0),
                    (0xFEC00000, 1), (0xFEC00010, 1), (0xFEC00010, 0), (0xFEC00000, 1), (0xFEC00010, 1),
                    (0xFE003000, 1), (0xFE003000, 1), (0xFEBC2818, 1)]
    assert meta.assumptions["e1000"]["evidence"].startswith("IRQ 11 'eth0', level-triggered: QEMU's default NIC")
    assert report.rules["mmio: virtio-vsock.kick"] == 2 and report.rules["mmio: ioapic-dovetail.mask-unmask"] == 5
    assert meta.guest.x2apic == 1                 # a write_msr to 0x80B is in 0x800-0x8FF
    assert meta.assumptions["timer_arm"]["device"]["device"] == "lapic"
    assert meta.source["clock_start_ns"] == 100_000_000_000
    # e1000 named on the command line: the same rows; the I/O APIC's switched off
    report, meta, rows = _rows(tmp_path, DOVETAIL, options=Options(devices={"eth0": "e1000"}, no_devices=frozenset({"ioapic-dovetail"})))
    assert report.rules["mmio: e1000.interrupt"] == 5 and report.rules["mmio: e1000.rx-tail"] == 1
    assert "mmio: ioapic-dovetail.mask-unmask" not in report.rules and meta.assumptions["e1000"]["evidence"] == "--device eth0=e1000"
    report, _, rows = _rows(tmp_path, DOVETAIL, options=Options(no_devices=frozenset({"e1000"})))
    assert "mmio: e1000.interrupt" not in report.rules
    report, _, rows = _rows(tmp_path, DOVETAIL, options=Options(device_rules=False, x2apic=False))
    assert not any(k == Kind.MMIO for k, _, _ in rows)


# A guest without Dovetail or cobalt (ftrace): handler and vector entries are the interrupts;
# hrtimer estimate: one arming per local timer interrupt, one per hrtimer_start earlier than
# every pending timer (not inside the timer interrupt); an IPI sent to 2 CPUs; TSC deadline
# writes recorded: they are the armings.
PLAIN = """\
# tracer: nop
          <idle>-0     [000] d..1   200.000000: hrtimer_start: hrtimer=ffff1 function=tick_sched_timer expires=1000000 softexpires=1000000
          <idle>-0     [000] d..1   200.000001: hrtimer_start: hrtimer=ffff2 function=it_real_fn expires=2000000 softexpires=2000000
          <idle>-0     [000] d..1   200.000002: hrtimer_start: hrtimer=ffff3 function=hrtimer_wakeup expires=500000 softexpires=500000
          <idle>-0     [000] d.h1   200.000003: local_timer_entry: vector=236
          <idle>-0     [000] d.h1   200.000004: hrtimer_expire_entry: hrtimer=ffff3 now=500100 function=hrtimer_wakeup
          <idle>-0     [000] d.h1   200.000005: hrtimer_start: hrtimer=ffff3 function=hrtimer_wakeup expires=100 softexpires=100
          <idle>-0     [000] d.h1   200.000006: local_timer_exit: vector=236
          <idle>-0     [000] d.h1   200.000007: irq_handler_entry: irq=33 name=virtio1-virtqueues
          <idle>-0     [000] d.h1   200.000008: irq_handler_entry: irq=10 name=uhci_hcd
          <idle>-0     [000] d.h1   200.000009: reschedule_entry: vector=253
          <idle>-0     [000] d..1   200.000010: ipi_raise: target_mask=00000000,00000006 (Function call interrupts)
"""


def test_plain_guest_estimates(tmp_path: Path) -> None:
    report, meta, rows = _rows(tmp_path, PLAIN)
    assert [(v, a) for k, v, a in rows if k == Kind.IRQ] == [(236, IRQ_TIMER), (33, IRQ_EDGE), (10, IRQ_LEVEL), (253, IRQ_IPI)]
    # armings: the first start (nothing pending), the third (earliest), the timer interrupt; the
    # restart inside the interrupt none; delays unknown before an hrtimer_expire_entry, and the
    # interrupt's own reprogram's always: DELAY_UNKNOWN
    assert [(v, a) for k, v, a in rows if k == Kind.TIMER_ARM] == [(DELAY_UNKNOWN, TIMER_LAPIC)] * 3
    assert [v for k, v, _ in rows if k == Kind.IPI_SEND] == [2]
    assert meta.guest.x2apic == 0 and "estimate" in meta.assumptions["timer_arm"]["source"]
    tsc = PLAIN + "          <idle>-0     [000] d..1   200.000011: write_msr: 6e0, value 12345\n"
    _, meta, rows = _rows(tmp_path, tsc)
    assert [(v, a) for k, v, a in rows if k == Kind.TIMER_ARM] == [(DELAY_UNKNOWN, TIMER_TSC_DEADLINE)]
    assert not any(k == Kind.MSR for k, _, _ in rows)


# CR3: task-switch tlb_flush events are the CR3 loads (asid of the task switched to); without
# them, sched_switch plus cobalt_switch_context (next_pid 0: back to the Linux task).
SWITCHES = "".join([
    "cpus=1\n",
    _line("300.000001", "bash-1000", "sched_switch", "bash:1000 [120] S ==> cat:2000 [120]"),
    _line("300.000002", "bash-1000", "tlb_flush", "pages=-1 reason=flush on task switch (0)"),
    _line("300.000003", "cat-2000", "cobalt_switch_context", "prev_name=ROOT/0 prev_pid=0 prev_prio=-1 prev_state=0x1 ==> next_name=rt next_pid=3000 next_prio=1"),
    _line("300.000004", "cat-2000", "tlb_flush", "pages=-1 reason=flush on task switch (0)"),
    _line("300.000005", "rt-3000", "cobalt_switch_context", "prev_name=rt prev_pid=3000 prev_prio=1 prev_state=0x1 ==> next_name=ROOT/0 next_pid=0 next_prio=-1"),
    _line("300.000006", "rt-3000", "tlb_flush", "pages=-1 reason=flush on task switch (0)"),
])


def test_cr3_sources(tmp_path: Path) -> None:
    report, _, rows = _rows(tmp_path, SWITCHES)
    assert [(k, v) for k, v, _ in rows] == [(Kind.CR3_WRITE, 1), (Kind.CR3_WRITE, 2), (Kind.CR3_WRITE, 1)]
    assert "CR3 writes: 3 from tlb_flush task switch; sched_switch alone would give 1" in " ".join(report.notes)
    no_tlb = "".join(line + "\n" for line in SWITCHES.splitlines() if "tlb_flush" not in line)
    _, _, rows = _rows(tmp_path, no_tlb)
    assert [(k, v) for k, v, _ in rows] == [(Kind.CR3_WRITE, 1), (Kind.CR3_WRITE, 2), (Kind.CR3_WRITE, 1)]


def test_touches_follow_the_tlb_flush(tmp_path: Path) -> None:
    """With CR3 from tlb_flush a switch's working set waits for the CR3 write that starts its
    quantum (the flush comes after the switch): rows cr3 then touches, in the new asid; the last
    switch's touches, never followed by a row, come at the end."""
    src, out = tmp_path / "in.txt", tmp_path / "out.parquet"
    src.write_text(SWITCHES)
    import_files([src], out, working_set=WorkingSet(user_pages=1, kernel_pages=1))
    t = pq.read_table(out).to_pydict()
    assert list(zip(t["kind"], t["asid"])) == [(Kind.CR3_WRITE, 1), (Kind.TOUCH, 1), (Kind.TOUCH, 1),
                                               (Kind.CR3_WRITE, 2), (Kind.TOUCH, 2), (Kind.TOUCH, 2),
                                               (Kind.CR3_WRITE, 1), (Kind.TOUCH, 1), (Kind.TOUCH, 1)]
    assert t["pid"][1] == 2000 and t["pid"][4] == 3000 and t["pid"][7] == 2000


def test_idle_across_chunks(tmp_path: Path, monkeypatch) -> None:
    """An idle entry whose wake is chunks later is patched into the spool: same trace."""
    import pipeline.tracefile.importers as imp
    _, _, big = _rows(tmp_path, DOVETAIL)
    monkeypatch.setattr(imp, "CHUNK_BYTES", 100)
    _, _, small = _rows(tmp_path, DOVETAIL)
    assert small == big


GUEST = SAMPLES / "HIP24_Masterarbeit__documentation_trace-cmd_analysis_test_trace-Salamander4.dat__report_part1.txt.xz"


@needs_samples
def test_dovetail_sample(tmp_path: Path) -> None:
    """Counts by grep, not by the importer: the issue's analysis of the sample."""
    text = sample_text(GUEST)
    report = import_files([GUEST], tmp_path / "g.parquet")
    t = pq.read_table(tmp_path / "g.parquet").to_pydict()
    irq_args = [a for k, a in zip(t["kind"], t["arg"]) if k == Kind.IRQ]
    assert report.kinds["hlt"] == len(re.findall(r"cpu_idle: +state=1 ", text)) == 526
    assert report.kinds["timer_arm"] == text.count("cobalt_tick_shot: ") == 1142
    assert report.kinds["irq"] == text.count("irq_pipeline_entry: ") == 629
    assert irq_args.count(IRQ_TIMER) == len(re.findall(r"irq_pipeline_entry: +irq=524546$", text, re.M)) == 546
    assert irq_args.count(IRQ_LEVEL) == len(re.findall(r"irq_pipeline_entry: +irq=11$", text, re.M)) == 8
    assert irq_args.count(IRQ_EDGE) == 75
    assert report.kinds["msr"] == text.count("write_msr: ") == 559
    assert report.kinds["cr3_write"] == len(re.findall(r"tlb_flush: .*task switch", text)) == 1063
    napi = len(re.findall(r"napi_poll: .*for device eth0 work [1-9]", text))
    # the e1000 watchdog: 58 statistics reads + 2 MDIC poll reads, 2 MDIC writes + the ICS write (e1000_main.c)
    assert report.rules == {"irq from irq_pipeline_entry": 629, "timer_arm from cobalt_tick_shot": 1142,
                            "mmio: e1000.interrupt": 8 * 5, "mmio: e1000.rx-tail": napi, "mmio: e1000.watchdog": 60 + 3,
                            "mmio: ioapic-dovetail.mask-unmask": 8 * 5, "mmio: virtio-9p.kick": text.count("9p_client_req: "),
                            "mmio: virtio-vsock.kick": 65}
    meta = validate(tmp_path / "g.parquet")
    assert meta.guest.x2apic == 0 and meta.source["clock_start_ns"] == 22149948193000


def test_device_config_errors(tmp_path: Path) -> None:
    """A bad device file is one line naming the file and the key."""
    import pytest

    from pipeline.config.devices import load_device
    from pipeline.config.errors import ConfigError
    good = (Path(__file__).resolve().parents[2] / "configs" / "devices" / "virtio-9p.toml").read_text()
    cases = {"on = \"9p_client_req\"": ("on = \"nothing\"", r"rule\[0\]\.on: 'nothing': must be irq or one of"),
             "writes = 1": ("writes = -1", r"rule\[0\]\.access\[0\]\.writes: must be >= 0"),
             "event = \"9p_client_req\"": ("event = \"x\"", r"present\.event: 'x' is not read by the importer"),
             # a presence no count finds, an `after` that is never marked, an address past 2^64 - 1
             "[present]\nevent = \"9p_client_req\"": ("[present]\nevent = \"workqueue_execute_start\"",
                                                      r"present\.function: workqueue_execute_start needs the work's function"),
             "on = \"9p_client_req\"\n": ("on = \"9p_client_req\"\nafter = \"napi_poll\"\n",
                                         r"rule\[0\]\.after: 'napi_poll': must be one of virtio_transport_alloc_pkt, 9p_client_req"),
             "offset = 0x0": ("offset = 0xFFFFFFFFFFFFFFFF", r"rule\[0\]\.access\[0\]: base \+ offset \+ stride reach 0x")}
    for old, (new, message) in cases.items():
        path = tmp_path / "virtio-9p.toml"
        path.write_text(good.replace(old, new, 1))
        with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {message}"):
            load_device(path)


def test_cli_rule_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app
    src = tmp_path / "in.txt"
    src.write_text(DOVETAIL)

    def run(*options: str):
        return CliRunner().invoke(app, ["import", str(src), "-o", str(tmp_path / "o.parquet"), *options])

    assert run("--timer-device", "apic").exit_code == 2
    assert run("--device", "eth0").exit_code == 2
    typo = run("--device", "eth0=e100")
    assert typo.exit_code == 2 and "unknown device 'e100' (known: e1000, ioapic-dovetail, virtio-9p, virtio-vsock" in typo.output
    assert "unknown device 'vsock'" in run("--no-device", "vsock").output
    assert run("--level-irqs", "9-5").exit_code == 2
    done = run("--timer-device", "hpet", "--xapic", "--level-irqs", "33", "--no-device-rules")
    assert done.exit_code == 0, done.output
    assert "rule: timer_arm from cobalt_tick_shot: 1 rows" in done.output
    meta = validate(tmp_path / "o.parquet")
    assert meta.guest.x2apic == 0 and meta.assumptions["timer_arm"]["device"] == {"device": "hpet", "evidence": "--timer-device"}
    t = pq.read_table(tmp_path / "o.parquet").to_pydict()
    assert [a for k, v, a in zip(t["kind"], t["value"], t["arg"]) if k == Kind.IRQ and v == 33] == [IRQ_LEVEL]


# perf script: power:cpu_idle state 0 is cpuidle's poll (no hlt), state 2 a hlt woken by the
# local timer 5 µs later; a read_msr; an IPI to CPUs 0-3 and 5.
PERF_IDLE = """\
# perf version : 6.1
swapper     0 [000] 5.000000000: power:cpu_idle: state=0 cpu_id=0
swapper     0 [000] 5.000001000: power:cpu_idle: state=4294967295 cpu_id=0
swapper     0 [000] 5.000002000: power:cpu_idle: state=2 cpu_id=0
swapper     0 [000] 5.000007000: irq_vectors:local_timer_entry: vector=236
swapper     0 [000] 5.000008000: power:cpu_idle: state=4294967295 cpu_id=0
swapper     0 [000] 5.000009000: msr:read_msr: 1b, value fee00900
swapper     0 [000] 5.000010000: ipi:ipi_send_cpumask: cpumask=0-3,5 callsite=smp_call_function_many_cond callback=x
"""


def test_perf_idle_msr_ipi(tmp_path: Path) -> None:
    report, _, rows = _rows(tmp_path, PERF_IDLE)
    assert [(k, v, a) for k, v, a in rows if k != Kind.TIMER_ARM] == [
        (Kind.HLT, 5000, 0), (Kind.IRQ, 236, IRQ_TIMER), (Kind.MSR, 0x1B, 0), (Kind.IPI_SEND, 5, 0)]
    assert report.consumed["cpu_idle (poll state 0)"] == 1 and report.consumed["cpu_idle (exit)"] == 2


# An x2APIC guest: the TMICT write (0x838) is the tick shot's arming, the ICR write (0x830) the
# IPI that ipi_raise records, the EOI (0x80B) the model's own: each of those writes is stood for
# by another row (one exit each under kvm-apicv, not two); FS_BASE stays an msr row.
X2APIC = """\
cpus=1
          <idle>-0     [000] 100.000000: cobalt_tick_shot:     [FAILED TO PARSE] secs=1 nsecs=0 delta=5000
          <idle>-0     [000] 100.000001: write_msr:            838, value 1388
          <idle>-0     [000] 100.000002: ipi_raise:            target_mask=00000000,00000002 (Function call interrupts)
          <idle>-0     [000] 100.000003: write_msr:            830, value fd
          <idle>-0     [000] 100.000004: write_msr:            c0000100, value 7fbde20ebc40
          <idle>-0     [000] 100.000005: write_msr:            80b, value 0
"""


def test_x2apic_writes_other_rows_stand_for(tmp_path: Path) -> None:
    report, meta, rows = _rows(tmp_path, X2APIC)
    assert rows == [(Kind.TIMER_ARM, 5000, TIMER_LAPIC), (Kind.IPI_SEND, 1, 0), (Kind.MSR, 0xC0000100, 1)]
    assert meta.guest.x2apic == 1
    assert sorted(meta.assumptions["msr_writes_without_rows"]) == ["0x80b", "0x830", "0x838"]
    assert report.consumed["write_msr (stood for by other rows)"] == 3


# Dovetail without the timer's name: the pipeline irq that a local_timer_entry follows each
# time (700) is the LAPIC timer; irq 33, followed once by a tick in three entries, stays a device.
PAIRING = "".join([
    "cpus=1\n",
    _line("100.000000", "<idle>-0", "irq_pipeline_entry", "irq=700"),
    _line("100.000001", "<idle>-0", "local_timer_entry", "vector=236"),
    _line("100.000010", "<idle>-0", "irq_pipeline_entry", "irq=33"),
    _line("100.000011", "<idle>-0", "irq_handler_entry", "irq=33 name=virtio1-virtqueues"),
    _line("100.000020", "<idle>-0", "irq_pipeline_entry", "irq=33"),
    _line("100.000021", "<idle>-0", "local_timer_entry", "vector=236"),
    _line("100.000030", "<idle>-0", "irq_pipeline_entry", "irq=700"),
    _line("100.000031", "<idle>-0", "local_timer_entry", "vector=236"),
    _line("100.000040", "<idle>-0", "irq_pipeline_entry", "irq=33"),
])


def test_the_timer_irq_is_the_one_ticks_follow_mostly(tmp_path: Path) -> None:
    _, _, rows = _rows(tmp_path, PAIRING)
    assert [(v, a) for k, v, a in rows if k == Kind.IRQ] == [(236, IRQ_TIMER), (33, IRQ_EDGE), (33, IRQ_EDGE),
                                                              (236, IRQ_TIMER), (33, IRQ_EDGE)]
