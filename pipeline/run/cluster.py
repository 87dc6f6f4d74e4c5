"""Where a run's tasks go, and the local cluster's worker processes; cheap to import.

The command line builds a ClusterSpec before anything heavy is imported, so that for a
local cluster it can start the workers' fork server first (start_fork_server): the
server imports the task module and loads numba's compiled kernel (pipeline/run/preload.py)
on one core while the driver imports its own modules on another, and every worker is
then forked from it with all of that loaded. runner.py connects (runner.connect).
"""
from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import forkserver
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed.security import Security

# What the fork server imports before it forks a worker: the main script, as a spawned
# worker would run it (multiprocessing's own default), then the tasks' module and kernel.
PRELOAD = ["__main__", "pipeline.run.preload"]
HASH_SEED = "6640"   # distributed's own choice for its workers, so that they hash alike


class ClusterError(Exception):
    """The named scheduler cannot be used; str() is one line saying why."""


@dataclass(frozen=True)
class Tls:
    """Client certificates for a TLS scheduler (the key may be inside the cert file)."""

    ca_file: str
    cert: str
    key: str | None = None

    def security(self) -> Security:
        from distributed.security import Security

        return Security(tls_ca_file=self.ca_file, tls_client_cert=self.cert, tls_client_key=self.key,
                        require_encryption=True)


@dataclass(frozen=True)
class ClusterSpec:
    """Where to run: a local cluster of `workers` processes, or an existing scheduler."""

    workers: int = 2
    scheduler_address: str | None = None
    scheduler_file: str | None = None
    tls: Tls | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:   # LocalCluster(n_workers=0) starts and then waits for ever
            raise ClusterError(f"--workers {self.workers}: a local cluster needs at least 1 worker")

    @property
    def address(self) -> str | None:
        """The scheduler named by address (the option, else $DASK_SCHEDULER_ADDRESS)."""
        return self.scheduler_address or os.environ.get("DASK_SCHEDULER_ADDRESS")

    @property
    def local(self) -> bool:
        """Whether the run starts a local cluster (no scheduler named, no TLS asked for)."""
        return not (self.scheduler_file or self.address or self.tls)


def start_fork_server() -> None:
    """Start the local cluster's fork server now, without waiting for it: it loads what
    the workers need while the caller goes on (see the module docstring).

    It is started as distributed starts a worker process (distributed.nanny's
    pre-spawn-environ: malloc trimming, one BLAS thread, and the same hash seed in every
    worker) without leaving those variables in this process."""
    with _environment({**os.environ, **_pre_spawn_environ()}):
        multiprocessing.set_forkserver_preload(PRELOAD)
        forkserver.ensure_running()


@contextmanager
def forked_workers() -> Iterator[dict[str, Any]]:
    """Nannies started in here, given the options yielded, fork their workers from the fork
    server: spawned, each worker would import the task module and load numba's cache itself
    (about 2 s of CPU each), and would end with a full interpreter shutdown, where a forked
    one ends at once.

    A forked worker has the environment the server started with, not this process's now
    (a second cluster in one process, or a library that set a variable on import): the
    options give it this process's variables, as a spawned worker has them, set as it
    starts (those read as an interpreter starts, such as PYTHONHASHSEED, are the server's)."""
    import dask.config
    from distributed.utils import get_mp_context

    start_fork_server()
    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        get_mp_context()   # sets distributed's own preload list, once: ours replaces it
        multiprocessing.set_forkserver_preload(PRELOAD)
        yield {"env": dict(os.environ)}


def _pre_spawn_environ() -> dict[str, str]:
    """What distributed's Nanny sets before it starts a worker process (Nanny.__init__)."""
    import dask.config

    _add_distributed_defaults()
    given = dask.config.get("distributed.nanny.pre-spawn-environ")
    environ = {k: os.environ.get(k, str(v)) for k, v in given.items() if v is not None}
    if environ.get("PYTHONHASHSEED") in (None, "0"):
        environ["PYTHONHASHSEED"] = HASH_SEED
    return environ


@functools.cache
def _add_distributed_defaults() -> None:
    """distributed's config defaults, read from its distributed.yaml as its config.py does
    on import (the user's dask config still wins), without importing distributed itself:
    that takes longer than the rest of start_fork_server, and the fork server is waited for."""
    import dask.config
    import yaml

    spec = importlib.util.find_spec("distributed")
    if spec and spec.origin:
        dask.config.update_defaults(yaml.safe_load((Path(spec.origin).parent / "distributed.yaml").read_text()))


@contextmanager
def _environment(environ: dict[str, str]) -> Iterator[None]:
    """os.environ is `environ` inside (for a process started in here), as it was after."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
