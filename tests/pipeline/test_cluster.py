"""`pipeline replay` on real clusters: `dask scheduler` + `dask worker` processes, TLS, a
worker killed mid-run, a driver killed mid-run and resumed.

Every result is compared with a clean run on a local cluster of the same traces.
Drivers that talk to external clusters run as subprocesses with a timeout, so a hung
cluster fails its test; clusters are stopped by fixture finalizers.
"""
from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.modes import load_modes
from pipeline.config.cost_profile import START_PROFILE
from pipeline.run.runner import ClusterError, ClusterSpec, connect, local_cluster
from tests.pipeline.daskprocs import DaskCluster, make_ca, start_cluster
from tests.pipeline.tracefiles import round_robin_events, write_events

pytestmark = pytest.mark.cluster

PIPELINE = Path(sys.executable).parent / "pipeline"
SLOW_SHARDS = Path(__file__).parent / "slow_shards.py"
RUN_TIMEOUT_S = 120
MODES = len(load_modes())  # every shipped mode ("--modes all")


def write_traces(d: Path) -> Path:
    """Three single-vCPU traces: 3 x MODES shards."""
    write_events(d / "rr5.parquet", round_robin_events(5, 50), workload="rr5")
    write_events(d / "rr2.parquet", round_robin_events(2, 40), workload="rr2")
    write_events(d / "rr3.parquet", round_robin_events(3, 30), workload="rr3")
    return d


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> Path:
    return write_traces(tmp_path_factory.mktemp("traces"))


@pytest.fixture(scope="module")
def clean(traces: Path, tmp_path_factory) -> Path:
    """The reference: the same traces replayed on a local cluster, start to finish."""
    out = tmp_path_factory.mktemp("clean")
    result = CliRunner().invoke(app, ["replay", str(traces), "--out", str(out), "--workers", "2"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[DaskCluster]:
    c = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield c
    c.stop()


def pipeline_replay(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed `pipeline replay` command in a subprocess, bounded in time."""
    return subprocess.run([str(PIPELINE), "replay", *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env={**os.environ, **(env or {})})


def assert_same_results(out: Path, reference: Path) -> None:
    """Same summary, and the same one-row file per shard (row for row, the trace's path aside)."""
    assert pl.read_parquet(out / "summary.parquet").equals(pl.read_parquet(reference / "summary.parquet"))
    files = sorted(p.relative_to(reference) for p in (reference / "counts").rglob("*.parquet"))
    assert sorted(p.relative_to(out) for p in (out / "counts").rglob("*.parquet")) == files
    for f in files:
        assert pq.read_table(out / f).drop(["path"]).equals(pq.read_table(reference / f).drop(["path"])), f


def replay_tasks_done(cluster: DaskCluster) -> int:
    """replay_group tasks the scheduler has seen finish, over all its clients so far."""
    def count(dask_scheduler) -> int:
        prefix = dask_scheduler.task_prefixes.get("replay_group")
        return prefix.state_counts["memory"] if prefix is not None else 0
    with cluster.client() as client:
        return client.run_on_scheduler(count)


def test_dask_cli_cluster_by_address_and_by_scheduler_file(cluster: DaskCluster, traces: Path, clean: Path,
                                                           tmp_path: Path) -> None:
    done_before = replay_tasks_done(cluster)
    by_address = pipeline_replay(traces, "--out", tmp_path / "a", "--scheduler-address", cluster.address)
    assert by_address.returncode == 0, by_address.stderr
    by_file = pipeline_replay(traces, "--out", tmp_path / "f", "--scheduler-file", cluster.scheduler_file)
    assert by_file.returncode == 0, by_file.stderr
    assert_same_results(tmp_path / "a", clean)
    assert_same_results(tmp_path / "f", clean)
    # Both runs' shards ran on this cluster's workers, not on a private local cluster: one
    # task per trace (3 traces keep the workers busy), each replaying every mode in one pass.
    assert replay_tasks_done(cluster) - done_before == 2 * 3


def test_tls_cluster_and_plaintext_client_refused(traces: Path, clean: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI makes the throw-away CA")
    tls = make_ca(tmp_path / "ca")
    cluster = start_cluster(tmp_path / "tls-cluster", workers=1, tls=tls)
    try:
        assert cluster.address.startswith("tls://127.0.0.1:")
        done = pipeline_replay(traces, "--out", tmp_path / "tls", "--scheduler-address", cluster.address, *tls.args())
        assert done.returncode == 0, done.stderr
        assert_same_results(tmp_path / "tls", clean)
        # A plaintext client at the TLS port: refused, in one line naming the address, no traceback.
        plain_address = cluster.address.replace("tls://", "tcp://")
        plain = pipeline_replay(traces, "--out", tmp_path / "plain", "--scheduler-address", plain_address)
        assert plain.returncode == 2
        assert "Traceback" not in plain.stderr
        error = " ".join(plain.stderr.split())
        assert error.startswith(f"error: cannot connect to the Dask scheduler {plain_address}:"), error
        assert "--tls-ca-file" in error
        # The TLS address without certificates: told which options to give.
        no_certs = CliRunner().invoke(app, ["replay", str(traces), "--out", str(tmp_path / "nc"),
                                            "--scheduler-address", cluster.address])
        assert no_certs.exit_code == 2 and "Traceback" not in no_certs.output
        assert "it uses TLS; give --tls-ca-file, --tls-cert and --tls-key" in " ".join(no_certs.output.split())
        assert not (tmp_path / "plain" / "counts").exists() and not (tmp_path / "nc" / "counts").exists()
    finally:
        cluster.stop()


def test_worker_killed_mid_run_reruns_its_shard_once(traces: Path, clean: Path, tmp_path: Path) -> None:
    log, hold = tmp_path / "executions.log", tmp_path / "hold"
    hold.touch()
    cluster = start_cluster(tmp_path / "cluster", preload=SLOW_SHARDS,
                            env={"HVREPLAY_TEST_SHARD_HOLD": str(hold), "HVREPLAY_TEST_SHARD_LOG": str(log)})
    try:
        driver = subprocess.Popen([str(PIPELINE), "replay", str(traces), "--out", str(tmp_path / "out"),
                                   "--scheduler-address", cluster.address],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # This worker has written a shard file and is held before reporting it: killed
        # there, its task must run again on the other worker and write the same file.
        pid, shard = wait_for_line(log, "written", driver)
        victim = next(w for w in cluster.workers if w.pid == pid)
        os.kill(pid, signal.SIGKILL)
        assert victim.wait(10) == -signal.SIGKILL
        hold.unlink()
        _, stderr = driver.communicate(timeout=RUN_TIMEOUT_S)
        assert driver.returncode == 0, stderr
    finally:
        cluster.stop()
    assert_same_results(tmp_path / "out", clean)
    runs = [line.split() for line in log.read_text().splitlines() if line.startswith("start")]
    started_by = {int(p) for _, p, *s in runs if tuple(s) == shard}
    assert pid in started_by and len(started_by) == 2, runs  # ran twice, on two workers; one file, one row
    assert len(runs) == 3 * MODES + MODES   # the killed task replays its trace's every mode again


def wait_for_line(log: Path, event: str, driver: subprocess.Popen) -> tuple[int, tuple[str, ...]]:
    """The first `event` line of the execution log: (worker pid, (trace, cpu, mode))."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline and driver.poll() is None:
        for line in log.read_text().splitlines() if log.exists() else []:
            kind, pid, *shard = line.split()
            if kind == event:
                return int(pid), tuple(shard)
        time.sleep(0.02)
    driver.kill()
    raise AssertionError(f"no {event!r} line in {log} (driver exit status {driver.wait()}): {driver.stderr.read()}")


def shard_files(out: Path) -> dict[Path, int]:
    """Every shard result file under `out`, with its modification time (ns)."""
    counts = out / "counts"
    return {p: p.stat().st_mtime_ns for p in counts.rglob("*.parquet")} if counts.exists() else {}


def session_ends(session: int, within_s: float) -> bool:
    """Whether every live process of the session (process group) is gone within `within_s`.

    Zombies count as gone: whether one is reaped is up to the container's init."""
    deadline = time.monotonic() + within_s
    while any(group == session and state != "Z" for state, group in processes()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def processes() -> list[tuple[str, int]]:
    """(state, process group) of every process, from /proc/PID/stat."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "PID (comm)"
        except (OSError, IndexError):
            continue  # ended while we looked
        found.append((fields[0], int(fields[2])))
    return found


def test_driver_killed_then_resumed(cluster: DaskCluster, clean: Path, tmp_path: Path) -> None:
    traces = write_traces(tmp_path / "traces")
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.touch()
    held = {"DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{SLOW_SHARDS}"]', "HVREPLAY_TEST_SHARD_HOLD": str(hold)}
    # SIGKILL the driver when each of its local cluster's 2 workers has written its task's
    # shard files (one trace, every mode) and is held before reporting them. The workers, left without their scheduler,
    # must go too (the whole session is killed at the end in any case).
    driver = subprocess.Popen([str(PIPELINE), "replay", str(traces), "--out", str(out), "--workers", "2"],
                              env={**os.environ, **held}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(shard_files(out)) < 2 * MODES:
            assert time.monotonic() < deadline and driver.poll() is None, driver.stderr.read()
            time.sleep(0.02)
        driver.kill()
        assert driver.wait(10) == -signal.SIGKILL
        assert session_ends(driver.pid, within_s=30), "local workers outlived their driver"
    finally:
        if not session_ends(driver.pid, within_s=0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(driver.pid, signal.SIGKILL)
    before = shard_files(out)
    assert len(before) == 2 * MODES and not (out / "summary.parquet").exists()

    # Rerun, on another cluster: the 2 traces' files are kept as they are, the others replayed.
    again = ["replay", str(traces), "--out", str(out), "--scheduler-address", cluster.address]
    resumed = CliRunner().invoke(app, again)
    assert resumed.exit_code == 0, resumed.output
    assert f"resumed: {2 * MODES} of {3 * MODES} shards already done" in resumed.output
    after = shard_files(out)
    assert {p: after[p] for p in before} == before
    assert_same_results(out, clean)

    # A changed trace (same name, new bytes) and another cost profile: only that trace's
    # shards are replayed; the others' counts are kept and priced with the new profile.
    write_events(traces / "rr3.parquet", round_robin_events(3, 31), workload="rr3")
    profile = ["--profile", str(START_PROFILE)]
    changed = CliRunner().invoke(app, again + profile)
    assert changed.exit_code == 0, changed.output
    assert f"resumed: {2 * MODES} of {3 * MODES} shards already done" in changed.output
    latest = shard_files(out)
    assert sorted(p.name for p in latest if latest[p] != after[p]) == ["rr3__cpu0.parquet"] * MODES
    reference = tmp_path / "reference"
    fresh = CliRunner().invoke(app, ["replay", str(traces), "--out", str(reference),
                                     "--scheduler-address", cluster.address, *profile])
    assert fresh.exit_code == 0, fresh.output
    assert_same_results(out, reference)


def _free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_scheduler_address_says_refused_at_once(traces: Path, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    r = pipeline_replay(traces, "--out", tmp_path / "o", "--scheduler-address", address)
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "connection refused: nothing listens at 127.0.0.1:" in said and "TLS" not in said
    assert time.monotonic() - start < 15   # distributed's own retry loop took its 30 s connect time-out


def test_address_of_a_server_that_is_not_a_scheduler(traces: Path, tmp_path: Path) -> None:
    """A plain HTTP server accepts the connection and never speaks Dask: one line, no hang."""
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
        r = pipeline_replay(traces, "--out", tmp_path / "o", "--scheduler-address", address)
    finally:
        server.shutdown()
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"an HTTP server answers at 127.0.0.1:{server.server_address[1]}, not a Dask scheduler" in said
    assert not (tmp_path / "o" / "counts").exists()


def test_workers_below_one_is_a_usage_error(traces: Path, tmp_path: Path) -> None:
    for n in ("0", "-1"):
        r = pipeline_replay(traces, "--out", tmp_path / "o", "--workers", n)
        assert r.returncode == 2 and "greater than or equal to 1" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(ClusterError, match="at least 1 worker"):
        ClusterSpec(workers=0)


def test_local_clusters_side_by_side_do_not_warn_of_port_8787(recwarn: pytest.WarningsRecorder) -> None:
    """Two local clusters at once (a run's and another, as the tests and a user's second
    run start them): neither claims the fixed dashboard port, so distributed does not warn
    "Port 8787 is already in use"; their HTTP servers listen on loopback only."""
    with local_cluster(1) as other, connect(ClusterSpec(workers=1)) as client:
        assert client.submit(sum, [1, 2]).result() == 3
        for scheduler in (other.scheduler, client.cluster.scheduler):
            assert scheduler.http_server.address == "127.0.0.1" and scheduler.http_server.port != 8787
    assert [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)] == []


def test_local_workers_have_the_kernel_loaded_before_their_first_task() -> None:
    """A local cluster's workers are forked from a server that has loaded numba's compiled
    kernel (pipeline/run/preload.py), so no worker loads it again on its first task."""
    script = ("import sys\nfrom pipeline.run.runner import ClusterSpec, connect\n"
              "with connect(ClusterSpec(workers=2)) as client:\n"
              "    print(list(client.run(lambda: len(sys.modules['replay.kernel_core'].replay_events.signatures)\n"
              "                          if 'replay.kernel_core' in sys.modules else 0).values()))\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "[1, 1]", "")


def test_starting_the_fork_server_leaves_the_environment_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.run.cluster import start_fork_server

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = dict(os.environ)
    start_fork_server()
    assert dict(os.environ) == before


def test_local_workers_see_an_environment_changed_since_the_fork_server_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers forked from the server see a variable set after it started, as spawned
    workers did."""
    from pipeline.run.cluster import start_fork_server

    start_fork_server()
    monkeypatch.setenv("HVREPLAY_TEST_WORKER_ENV", "seen")
    with connect(ClusterSpec(workers=1)) as client:
        assert list(client.run(lambda: os.environ.get("HVREPLAY_TEST_WORKER_ENV")).values()) == ["seen"]
