"""`pipeline record`: prerequisite errors say what to change; a real perf recording imports."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.tracefile.format import validate
from pipeline.tracefile.record import Host, RecordError, check, pinned_on, record_text


def fake_tracefs(tmp_path: Path) -> Path:
    t = tmp_path / "tracing"
    (t / "events" / "sched" / "sched_switch").mkdir(parents=True, exist_ok=True)
    return t


def test_missing_perf_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="not installed; on Debian `apt-get install linux-perf`"):
        check(Host(perf="perf-that-does-not-exist", tracefs=(fake_tracefs(tmp_path),)))


def test_paranoid_level_for_non_root_says_the_sysctl(tmp_path: Path) -> None:
    paranoid = tmp_path / "paranoid"
    paranoid.write_text("3\n")
    with pytest.raises(RecordError, match=r"is 3: tracepoints need root, or `sudo sysctl kernel.perf_event_paranoid=-1`"):
        check(Host(perf="sh", paranoid=paranoid, tracefs=(fake_tracefs(tmp_path),), root=False))
    paranoid.write_text("1\n")  # enough for one's own processes
    assert check(Host(perf="sh", paranoid=paranoid, tracefs=(fake_tracefs(tmp_path),), root=False))[1].name == "tracing"


def test_no_tracefs_says_how_to_mount(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"needs tracefs, mounted at neither .*`sudo mount -t tracefs nodev /sys/kernel/tracing`"):
        check(Host(perf="sh", tracefs=(tmp_path / "nowhere",), root=True))


TRACEFS = Host().tracefs[0]


@pytest.fixture(scope="module")
def recorder(tmp_path_factory) -> Iterator[None]:
    """A host that can record: as root, tracefs is mounted for these tests if it is not (and
    unmounted after); otherwise the skip says what stopped perf (check's line, or perf's own
    stderr line for a trial recording)."""
    mounted = os.geteuid() == 0 and not (TRACEFS / "events").is_dir() and _mount_tracefs()
    try:
        record_text(["true"], tmp_path_factory.mktemp("probe") / "probe.txt")
    except RecordError as e:
        pytest.skip(f"perf cannot record tracepoints on this machine: {e}")
    yield
    if mounted:
        subprocess.run(["umount", str(TRACEFS)], check=False)


def _mount_tracefs() -> bool:
    return subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True).returncode == 0


def test_real_recording_of_a_pipe_ping_pong(recorder: None, tmp_path: Path) -> None:
    text = tmp_path / "rec.txt"
    events = record_text(["perf", "bench", "sched", "pipe", "-l", "200"], text, cpu=0)
    assert "sched:sched_switch" in events
    lines = text.read_text().splitlines()
    # Two processes pass a token 200 times each way on one CPU: 400 passes, each a switch
    # into a sched-pipe process (counted here by plain string matching), less a few: the
    # first and last pass, which start-up and exit may route elsewhere, and passes another
    # task on that CPU takes part in (perf itself runs there too, and the test machine is
    # shared): 394-402 seen.
    switches = [line for line in lines if "sched:sched_switch:" in line and "next_comm=sched-pipe" in line]
    assert len(switches) >= 0.97 * 2 * 200
    assert all("[000]" in line for line in lines)   # every event, not just the switches


def test_recording_pinned_to_a_cpu_has_that_cpu_only(recorder: None, tmp_path: Path) -> None:
    """--cpu 0: every recorded event ran on CPU 0, the command's first one included (a
    pinning taskset used to run ~200 events on another CPU before it pinned itself)."""
    out = tmp_path / "pipe.parquet"
    r = CliRunner().invoke(app, ["record", "-o", str(out), "--cpu", "0", "--", "perf", "bench", "sched", "pipe", "-l", "100"])
    assert r.exit_code == 0, r.output
    assert list(validate(out).cpus) == [0]


def test_pin_wraps_perf_so_the_command_inherits_it() -> None:
    assert pinned_on(None, ["perf", "record"]) == ["perf", "record"]
    assert pinned_on(3, ["perf", "record", "--", "cmd"]) == ["taskset", "-c", "3", "perf", "record", "--", "cmd"]
