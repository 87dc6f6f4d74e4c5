"""Benchmark trace generators: the seed's benchmarks on a simulated UP Linux 2.6.20 guest.

simulated_kernel.py simulates the guest kernel (tasks, scheduler, timer, event emission),
ipc.py its sockets and pipes, layout.py where things live in virtual memory,
native.py the native costs that timestamp the trace; one module per benchmark, each
listed in registry.py (GENERATORS), from which the `pipeline generate` commands are built.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["generate_hackbench", "generate_lat_ctx"]


def __getattr__(name: str) -> Any:
    """`generate_hackbench` and `generate_lat_ctx`, imported when first asked for: they
    import numpy and pyarrow, which the command line's registry.py need not (PEP 562)."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{name.removeprefix('generate_')}"), name)
