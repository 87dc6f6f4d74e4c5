"""Record a workload with perf and import it: `pipeline record -o traces/NAME.parquet -- CMD…`.

perf records the guest-side tracepoints the importers map (sched switches, forks, execs,
exits, page faults, interrupts, syscalls, TLB flushes) for CMD and its children, `perf
script` renders them as text with pid/tid (so processes are known, not guessed), and the
perf-script importer writes the trace. When perf cannot record, the error says exactly
what to change on the host.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

TRACEPOINTS = (
    "sched:sched_switch", "sched:sched_process_fork", "sched:sched_process_exec",
    "sched:sched_process_exit", "exceptions:page_fault_user", "exceptions:page_fault_kernel",
    "irq:irq_handler_entry", "irq_vectors:local_timer_entry", "irq_vectors:reschedule_entry",
    "irq_vectors:call_function_entry", "raw_syscalls:sys_enter", "tlb:tlb_flush",
)
SCRIPT_FIELDS = "comm,pid,tid,cpu,time,event,trace"


class RecordError(Exception):
    """perf cannot record here; the message says what to change (one line)."""


@dataclass(frozen=True)
class Host:
    """Where the prerequisites are looked up (tests point these elsewhere)."""

    perf: str = "perf"
    paranoid: Path = Path("/proc/sys/kernel/perf_event_paranoid")
    tracefs: tuple[Path, ...] = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
    root: bool = os.geteuid() == 0


def check(host: Host = Host()) -> tuple[str, Path]:
    """The perf binary and the tracefs folder, or a RecordError saying what to change."""
    perf = shutil.which(host.perf)
    if perf is None:
        raise RecordError(f"{host.perf}: not installed; on Debian `apt-get install linux-perf`, "
                          "on Ubuntu `apt-get install linux-tools-$(uname -r)`")
    level = _paranoid(host.paranoid)
    if level > 1 and not host.root:
        raise RecordError(f"{host.paranoid} is {level}: tracepoints need root, or "
                          "`sudo sysctl kernel.perf_event_paranoid=-1` (1 is enough for your own processes)")
    tracefs = next((t for t in host.tracefs if (t / "events").is_dir()), None)
    if tracefs is None:
        raise RecordError(f"pipeline record needs tracefs, mounted at neither {' nor '.join(map(str, host.tracefs))}: "
                          "`sudo mount -t tracefs nodev /sys/kernel/tracing`")
    return perf, tracefs


def _paranoid(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 2  # unknown: assume the default restriction


def available(tracefs: Path) -> list[str]:
    """The wanted tracepoints this kernel has (events/<subsystem>/<name>/)."""
    return [t for t in TRACEPOINTS if (tracefs / "events" / t.replace(":", "/")).is_dir()]


def record_text(cmd: list[str], text: Path, cpu: int | None = None, host: Host = Host()) -> list[str]:
    """Run CMD under perf record and write `perf script` text to `text`; returns the
    tracepoints recorded. `cpu` confines the recording to that CPU, like the seed's
    uniprocessor guests (pinned_on)."""
    perf, tracefs = check(host)
    events = available(tracefs)
    if "sched:sched_switch" not in events:
        raise RecordError(f"{tracefs}: no sched:sched_switch tracepoint (kernel built without CONFIG_TRACEPOINTS?)")
    with tempfile.TemporaryDirectory(prefix="hvreplay-record-") as tmp:
        data = Path(tmp) / "perf.data"
        args = [perf, "record", "-q", *[a for e in events for a in ("-e", e)], "-o", str(data), "--", *cmd]
        _run(pinned_on(cpu, args), "perf record")
        with open(text, "w") as out:
            _run([perf, "script", "-F", SCRIPT_FIELDS, "-i", str(data)], "perf script", stdout=out)
    return events


def pinned_on(cpu: int | None, args: list[str]) -> list[str]:
    """`args` (a perf record command) run on `cpu` only, perf included.

    perf records CMD from its exec on; CMD then inherits perf's CPU affinity. Pinning CMD
    itself (`perf record -- taskset -c N CMD`) records taskset running wherever it started
    until it pins itself (~200 events on another CPU); `perf record -C N` would record
    every task on N, not CMD's. perf shares the CPU with CMD, as it would in a UP guest."""
    return args if cpu is None else ["taskset", "-c", str(cpu), *args]


def _run(args: list[str], what: str, stdout=None) -> None:
    done = subprocess.run(args, stdout=stdout if stdout is not None else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise RecordError(f"{what} failed: {last}")
