"""Benchmark trace generators: the seed's benchmarks on a simulated UP Linux 2.6.20 guest.

simulated_kernel.py simulates the guest kernel (tasks, scheduler, timer, event emission),
ipc.py its sockets and pipes, layout.py where things live in virtual memory,
native.py the native costs that timestamp the trace; one module per benchmark, each
listed in registry.py (GENERATORS), from which the `pipeline generate` commands are built.
"""
from pipeline.generate.hackbench import generate_hackbench
from pipeline.generate.lat_ctx import generate_lat_ctx

__all__ = ["generate_hackbench", "generate_lat_ctx"]
