"""Imported by the local cluster's fork server (runner.local_cluster), before it forks any
worker: the Dask task module and its imports, and numba's compiled replay kernel, are then
in every worker from its first instant, loaded once instead of once per worker on its
first task. Nothing here may fail the server: a kernel that does not load now loads on
the first task, which reports any error as that task's failure."""
from __future__ import annotations

import pipeline.run.runner  # noqa: F401 - the module every task is unpickled from
from replay import kernel

try:
    kernel.warm()
except Exception:  # noqa: BLE001, S110 - see above: the first task loads it and says why not
    pass
