"""The trace generators, in one table (GENERATORS): each entry becomes `pipeline generate
NAME`, the command line being built from it in pipeline/cli.py.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

    from pipeline.tracefile.format import TraceMeta


class Param(NamedTuple):
    """One option of a generator: `--NAME`, its default and its help."""

    name: str
    default: int | bool
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Generator:
    """A benchmark trace generator: the subcommand `pipeline generate NAME` (see the module docstring)."""

    name: str
    # "module:function", imported when run: generators import numpy and pyarrow, which the
    # command line (its help, every other command) need not import to list them.
    function: str
    summary: str
    params: tuple[Param, ...]

    def run(self, **options: Any) -> tuple[dict[str, np.ndarray], TraceMeta]:
        module, name = self.function.split(":")
        result: tuple[dict[str, np.ndarray], TraceMeta] = getattr(importlib.import_module(module), name)(**options)
        return result


GENERATORS: tuple[Generator, ...] = (
    Generator("lat-ctx", "pipeline.generate.lat_ctx:generate_lat_ctx", "lmbench lat_ctx: N processes pass a token round a ring of pipes.",
              (Param("procs", 2, "Processes in the ring (lat_ctx -s 0 N)."),
               Param("switches", 20000, "Context switches to generate."))),
    Generator("hackbench", "pipeline.generate.hackbench:generate_hackbench", "hackbench (Rusty Russell, 2001): N groups exchanging 100-byte messages.",
              (Param("groups", 1, "Groups of 20 senders + 20 receivers."),
               Param("loops", 100, "Messages each sender sends to each receiver."),
               Param("pipe", False, "Pipes instead of AF_UNIX socketpairs."))),
    Generator("idle", "pipeline.generate.idle:generate_idle",
              "An idle guest: halts, woken by every timer tick (reports the host CPU it costs).",
              (Param("hz", 1000, "The guest's CONFIG_HZ: timer ticks per second."),
               Param("ticks", 1000, "Timer ticks to generate."))),
)
"""The generators; adding a benchmark is writing its module and adding one entry here.

- `run(profile=..., **options)` is called with the hardware profile whose [native] table
  times the events (pipeline/generate/native.py) and one keyword per Param, and returns
  the trace's columns and TraceMeta, as pipeline.tracefile.format.write_trace takes them;
- each Param becomes the option `--NAME` (underscores as dashes) with that default and
  help: an int default makes an integer option, False a flag (`--pipe`, no `--no-pipe`);
- `summary` says what the trace is of: it is the command's help;
- the command adds `-o/--out` (the trace file) and the profile option itself.

The simplest entry to copy: `idle`."""
