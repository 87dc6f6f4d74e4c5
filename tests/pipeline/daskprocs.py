"""Real Dask clusters for tests: `dask scheduler` and `dask worker` processes on 127.0.0.1.

Ports are chosen by the OS (--port 0), the address is read back from the scheduler
file. Each process runs in its own session with its output in a log file; `stop()`
ends every one (SIGTERM, SIGKILL after a grace period), and every wait is bounded,
so a cluster that hangs fails its test with the logs' tails instead of hanging CI.
Workers run without a nanny, so killing a worker's process is losing that worker.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client
from distributed.security import Security

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60
STOP_GRACE_S = 5


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and one certificate it signed, used by every endpoint."""

    ca: Path
    cert: Path
    key: Path

    def args(self) -> list[str]:
        return ["--tls-ca-file", str(self.ca), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]


def make_ca(directory: Path) -> TlsFiles:
    """A CA and a CA-signed certificate made with the openssl CLI (valid one day).

    Dask checks the chain, not the host name, so one certificate serves all."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "node.pem", directory / "node.key", directory / "node.csr"
    for args in (
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=hvreplay-test-ca"],
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=hvreplay-test-node"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1"],
    ):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
    return TlsFiles(ca, cert, key)


@dataclass
class DaskCluster:
    directory: Path
    tls: TlsFiles | None = None
    scheduler: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def scheduler_file(self) -> Path:
        return self.directory / "scheduler.json"

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]

    def security(self) -> Security | None:
        return self.tls and Security(tls_ca_file=str(self.tls.ca), tls_client_cert=str(self.tls.cert),
                                     tls_client_key=str(self.tls.key), require_encryption=True)

    def client(self) -> Client:
        return Client(self.address, security=self.security(), timeout=START_TIMEOUT_S)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-15:])
                         for p in sorted(self.directory.glob("*.log")))

    def stop(self) -> None:
        """Workers first, then the scheduler; whatever ignores SIGTERM is killed."""
        _stop(self.workers)
        _stop([self.scheduler] if self.scheduler else [])


def start_cluster(directory: Path, workers: int = 2, tls: TlsFiles | None = None,
                  preload: Path | None = None, env: dict[str, str] | None = None) -> DaskCluster:
    """Scheduler and `workers` single-threaded workers, returned once all have registered."""
    directory.mkdir(parents=True, exist_ok=True)
    cluster = DaskCluster(directory, tls)
    tls_args = tls.args() if tls else []
    protocol = ["--protocol", "tls"] if tls else []
    try:
        cluster.scheduler = _spawn(directory, "scheduler", [
            "scheduler", "--host", "127.0.0.1", "--port", "0", *protocol, "--no-dashboard",
            "--scheduler-file", str(cluster.scheduler_file), *tls_args], env)
        _wait_for(cluster, lambda: _readable(cluster.scheduler_file), "the scheduler file")
        for i in range(workers):
            cluster.workers.append(_spawn(directory, f"worker{i}", [
                "worker", "--scheduler-file", str(cluster.scheduler_file), "--host", "127.0.0.1",
                "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                "--local-directory", str(directory / f"w{i}"), *tls_args,
                *(["--preload", str(preload)] if preload else [])], env))
        with cluster.client() as client:
            client.wait_for_workers(workers, timeout=START_TIMEOUT_S)
    except BaseException as e:
        cluster.stop()
        raise RuntimeError(f"test cluster did not start ({e}):\n{cluster.logs()}") from e
    return cluster


def _spawn(directory: Path, name: str, args: list[str], env: dict[str, str] | None) -> subprocess.Popen:
    """`dask ARGS`, run from `directory` (not the test's working directory), logging to NAME.log."""
    with open(directory / f"{name}.log", "w") as log:
        return subprocess.Popen([str(BIN / "dask"), *args], cwd=directory, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)


def _wait_for(cluster: DaskCluster, ready, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline or (cluster.scheduler and cluster.scheduler.poll() is not None):
            raise TimeoutError(f"no {what} after {START_TIMEOUT_S} s")
        time.sleep(0.05)


def _readable(scheduler_file: Path) -> bool:
    """Whole: the scheduler writes the file in place, so a reader may see half of it."""
    try:
        return "address" in json.loads(scheduler_file.read_text())
    except (OSError, ValueError):
        return False


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(p, signal.SIGKILL)
            p.wait(STOP_GRACE_S)


def _signal(p: subprocess.Popen, sig: int) -> None:
    """Signal the process's whole session (it leads it), if still there."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
