"""`pipeline record`: prerequisite errors say what to change; a real perf recording imports."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.tracefile.record import Host, RecordError, check, record_text


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
    with pytest.raises(RecordError, match=r"no tracefs at .*`sudo mount -t tracefs nodev /sys/kernel/tracing`"):
        check(Host(perf="sh", tracefs=(tmp_path / "nowhere",), root=True))


def can_record() -> bool:
    try:
        check()
        return True
    except RecordError:
        return False


@pytest.mark.skipif(not can_record(), reason="perf cannot record tracepoints on this machine")
def test_real_recording_of_a_pipe_ping_pong(tmp_path: Path) -> None:
    text = tmp_path / "rec.txt"
    events = record_text(["perf", "bench", "sched", "pipe", "-l", "200"], text, cpu=0)
    assert "sched:sched_switch" in events
    lines = text.read_text().splitlines()
    # Two processes pass a token 200 times each way on one CPU: 400 passes, each a switch
    # into a sched-pipe process, less the first and last pass, which start-up and exit
    # (the parent is a sched-pipe process too) may route elsewhere: at least 398
    # (counted here by plain string matching).
    switches = [line for line in lines if "sched:sched_switch:" in line and "next_comm=sched-pipe" in line]
    assert len(switches) >= 2 * 200 - 2
    assert all("[000]" in line for line in switches)
