"""The fixed cost of `pipeline replay`, component by component, measured in one run.

Chunked replay is worth it only when the replay itself outweighs what every run pays
before and after it (issue 16): the interpreter, the CLI's imports, the local Dask
cluster's start, the workers' first task (importing the replay kernel and loading numba's
cache of it), hashing the traces, resume, writing results and summary, and closing the
cluster. This prints each one's start and duration on the run's clock, so components that
overlap (a cluster starting while the driver reads its configs) show as overlapping, and
the total against `python -c pass` and `pipeline --help`.

How: the same `pipeline replay` runs in a child interpreter (this file with --child) with
the functions named in SPANS wrapped to record when they start and end; a name that no
longer exists is reported as absent, not an error. Every run is on a fresh cluster.
Run: python benchmarks/startup.py [TRACE] [--workers N] [--modes M]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.abc
import importlib.machinery
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = Path(sys.executable).parent / "pipeline"
QUICK = ROOT / "traces" / "quick"
# (label, module, function): timed wherever the run calls it; a context manager's entry and
# exit are timed apart (label + " start", label + " close").
SPANS = [
    ("build the command line (typer)", "typer.main", "get_command"),
    ("read the modes", "pipeline.config.modes", "load_modes"),
    ("read the cost profile", "pipeline.config.cost_profile", "load_profile"),
    ("read trace metadata", "pipeline.run.runner", "open_traces"),
    ("cluster", "pipeline.run.runner", "connect"),
    ("fork server start (not waited for)", "pipeline.run.cluster", "start_fork_server"),
    ("cluster: LocalCluster()", "pipeline.run.runner", "local_cluster"),
    ("hash traces (first tasks)", "pipeline.run.runner", "plan_shards"),
    ("resume scan", "pipeline.run.runner", "resume"),
    ("replay and write shards", "pipeline.run.runner", "_replay_all"),
    ("summarise", "pipeline.run.results", "summarise"),
    ("write summary", "pipeline.run.results", "write_summary"),
    ("print the table", "pipeline.cli", "_show"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", nargs="?", type=Path, default=QUICK)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modes", default="native")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)   # the instrumented run: write its spans here
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


def parent(args: argparse.Namespace) -> None:
    """Time the reference commands, then one instrumented replay, and print the breakdown."""
    with tempfile.TemporaryDirectory(prefix="hvreplay-startup-") as tmp:
        bare = wall([sys.executable, "-c", "pass"])
        imports = wall([sys.executable, "-c", "import pipeline.cli"])
        helps = wall([str(PIPELINE), "--help"])
        worker_import = wall([sys.executable, "-c", WORKER_FIRST_TASK])
        plain = wall([str(PIPELINE), "replay", str(args.trace), "--modes", args.modes, "--out", f"{tmp}/out",
                      "--workers", str(args.workers)])
        spans_file = Path(tmp) / "spans.json"
        replayed = wall([sys.executable, __file__, str(args.trace), "--workers", str(args.workers),
                         "--modes", args.modes, "--child", str(spans_file)], env={"STARTUP_T0": repr(time.time())})
        spans = json.loads(spans_file.read_text())
    for label, seconds in (("python -c pass", bare), ("python -c 'import pipeline.cli'", imports),
                           ("pipeline --help", helps), ("python: import the task module, load numba's kernel", worker_import),
                           (f"pipeline replay {args.trace.name} (not instrumented)", plain)):
        print(f"{label:<52} {seconds:6.2f} s")
    print(f"\n`pipeline replay {args.trace.name} --modes {args.modes} --workers {args.workers}`, on its own clock:")
    print(f"{'component':<52} {'start':>6}   {'took':>6}")
    for label, start, took in spans:
        print(f"{label:<52} {start:6.2f}   {took:6.2f} s")
    print(f"{'total wall':<52} {'':>6}   {replayed:6.2f} s   ({replayed - bare:.2f} s more than python -c pass)")


# What a spawned worker would do on its first task besides the task (a forked one has it
# done by the fork server, once): import the task's module, numba with it, and load numba's
# cache of the kernel.
WORKER_FIRST_TASK = "import pipeline.run.runner; from replay.kernel import warm; warm()"


def wall(command: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of `command` run from the repository's root (it must succeed)."""
    t0 = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - t0


def child(args: argparse.Namespace) -> None:
    """The instrumented `pipeline replay`: its spans, on the clock started by the parent
    just before it launched this interpreter, written to args.child."""
    t0 = float(os.environ["STARTUP_T0"])
    sys.modules["__main__"].__file__ = str(PIPELINE)   # workers import what `pipeline`'s script imports, as they would
    spans: list[tuple[str, float, float]] = [("interpreter start", 0.0, time.time() - t0)]
    with span(spans, t0, "import pipeline.cli"):
        from pipeline.cli import app
    _wrap_on_import(spans, t0)
    with tempfile.TemporaryDirectory(prefix="hvreplay-startup-out-") as out:
        with span(spans, t0, "pipeline replay (the command)"):
            app(["replay", str(args.trace), "--modes", args.modes, "--out", out, "--workers", str(args.workers)],
                standalone_mode=False)
    spans.append(("end of the command", time.time() - t0, 0.0))
    args.child.write_text(json.dumps(sorted(spans, key=lambda s: s[1])))


@contextlib.contextmanager
def span(spans: list[tuple[str, float, float]], t0: float, label: str) -> Iterator[None]:
    start = time.time()
    try:
        yield
    finally:
        spans.append((label, start - t0, time.time() - start))


def _wrap_on_import(spans: list[tuple[str, float, float]], t0: float) -> None:
    """Wrap SPANS' functions as their modules are imported (importing them here would move
    the command's own imports, which are part of what is measured, before it)."""
    pending = {module for _, module, _ in SPANS}

    def wrap(module: Any) -> None:
        for label, name_of_module, name in SPANS:
            if name_of_module == module.__name__:
                _wrap(spans, t0, label, module, name)

    for name in pending & set(sys.modules):
        wrap(sys.modules[name])

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
            if fullname not in pending:
                return None
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec and spec.loader:
                exec_module = spec.loader.exec_module

                def exec_then_wrap(module: Any) -> None:
                    exec_module(module)
                    wrap(module)
                spec.loader.exec_module = exec_then_wrap  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Finder())


def _wrap(spans: list[tuple[str, float, float]], t0: float, label: str, module: Any, name: str) -> None:
    """Record each call of module.name (a context manager: its entry and its exit apart)."""
    original = getattr(module, name, None)
    if original is None:
        spans.append((f"{label} (absent: {module.__name__}.{name})", 0.0, 0.0))
        return

    @functools.wraps(original)
    def timed(*a: Any, **kw: Any) -> Any:
        with span(spans, t0, label):
            result = original(*a, **kw)
        return _timed_exit(spans, t0, label, result) if hasattr(result, "__exit__") and hasattr(result, "__enter__") else result

    setattr(module, name, timed)
    for other in list(sys.modules.values()):   # modules that imported the name themselves
        if getattr(other, name, None) is original and other is not module:
            setattr(other, name, timed)


def _timed_exit(spans: list[tuple[str, float, float]], t0: float, label: str, manager: Any) -> Any:
    """`manager` whose entry and exit are timed as LABEL start and LABEL close."""
    @contextlib.contextmanager
    def timed() -> Iterator[Any]:
        with span(spans, t0, f"{label} start"):
            value = manager.__enter__()
        try:
            yield value
        finally:
            with span(spans, t0, f"{label} close"):
                manager.__exit__(*sys.exc_info())
    return timed()


if __name__ == "__main__":
    main()
