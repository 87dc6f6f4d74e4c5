"""`pipeline import --out-dir DIR`: many recordings, each into its own trace, one Dask task each.

`pipeline import FILES -o OUT` reads FILES as the parts of ONE recording (one clock, one
set of tasks: `import_files`). A batch job has many recordings instead, each its own guest
run, so each input here is its own recording: a file, or every regular file below a folder
(hidden ones left out). Its trace is DIR/NAME.parquet, NAME its path below the folder given
(or its file name) in the safe alphabet replay names traces with (`shards.safe_name`, made
unique), so nothing is written outside DIR.

The task is `import_files` itself, on the worker that reads the file: it writes the trace
atomically (a failed recording leaves no file), and returns a failure as a one-line value
instead of raising, as replay's tasks do (`pipeline.run.runner`: a raised exception would
print a worker's traceback on the user's terminal).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from dask.distributed import Client, as_completed

from pipeline.run.outdir import remove
from pipeline.run.runner import one_line
from pipeline.run.shards import TraceFile, deduplicate, safe_name
from pipeline.tracefile.importers import ChunkSource, ImportFailed, ImportReport, import_files, read_chunks_in_order
from pipeline.tracefile.importers.plan import Options
from pipeline.tracefile.importers.working_set import WorkingSet
from pipeline.tracefile.textlines import CODECS, kind_of


@dataclass(frozen=True)
class Settings:
    """What the command line decides for every recording of an import (one or a batch)."""
    fmt: str | None = None
    strict: bool = False
    working_set: WorkingSet = WorkingSet()
    options: Options = field(default_factory=Options)

    def run(self, paths: list[Path], out: Path, progress: Callable[[int], None] | None = None,
            chunks: ChunkSource = read_chunks_in_order) -> ImportReport:
        return import_files(paths, out, fmt=self.fmt, strict=self.strict, working_set=self.working_set,
                            progress=progress, options=self.options, chunks=chunks)


class Recording(NamedTuple):
    path: Path     # the text trace
    out: Path      # its trace file, inside the out dir


class Failed(NamedTuple):
    recording: Recording
    error: str     # one line naming the file (and the line, where one is to blame)


Outcome = ImportReport | Failed


class Found(NamedTuple):
    recordings: list[Recording]
    skipped: list[str]     # met in a folder, not a regular file: a note each


def find_recordings(inputs: list[Path], out_dir: Path) -> Found:
    """Each input file, and every regular non-hidden file below each input folder (not under
    `out_dir`, where the traces go), sorted, with the trace it becomes."""
    found: list[TraceFile] = []
    skipped: list[str] = []
    for root in inputs:
        if not root.is_dir():
            found.append(TraceFile(_trace_name(Path(root.name)), root))
            continue
        for p in sorted(root.rglob("*")):
            relative = p.relative_to(root)
            if p.is_dir() or any(part.startswith(".") for part in relative.parts) or _under(p, out_dir):
                continue
            if p.is_file():
                found.append(TraceFile(_trace_name(relative), p))
            else:
                skipped.append(f"{p}: not a regular file ({kind_of(p)}), skipped")
    # Absolute: a remote cluster's workers see the paths, not this process's working directory.
    return Found([Recording(t.path.absolute(), out_dir.absolute() / f"{t.trace}.parquet") for t in deduplicate(found)],
                 skipped)


def _trace_name(relative: Path) -> str:
    """The trace name of a recording: its path without the compression suffix (which
    safe_name would take for the only one) nor the text one."""
    return safe_name(relative.with_suffix("") if relative.suffix in CODECS else relative)


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def import_task(recording: Recording, settings: Settings) -> Outcome:
    """The Dask task: one recording into its trace (see the module docstring)."""
    try:
        return settings.run([recording.path], recording.out)
    except ImportFailed as e:
        return Failed(recording, str(e))
    except Exception as e:  # noqa: BLE001 - a bug: this recording fails with one line, the others go on
        return Failed(recording, one_line(f"{recording.path}: internal error: {type(e).__name__}: {e}"))


def import_all(client: Client, recordings: list[Recording], settings: Settings,
               done: Callable[[], None]) -> list[Outcome]:
    """Import every recording as its own task; the outcomes in the order of `recordings`
    (`done` is told as each ends). A failed recording's trace from an earlier run is removed,
    so DIR holds this run's traces only (OutError if it cannot be)."""
    futures = {client.submit(import_task, r, settings, pure=False): i for i, r in enumerate(recordings)}
    outcomes: dict[int, Outcome] = {}
    for future in as_completed(futures):
        i = futures[future]
        try:
            outcome = future.result()
        except Exception as e:  # a lost worker, after Dask's reruns: this recording fails, the others go on
            outcome = Failed(recordings[i], one_line(f"{recordings[i].path}: not imported: {type(e).__name__}: {e}"))
        if isinstance(outcome, Failed):
            remove(recordings[i].out)
        outcomes[i] = outcome
        done()
    return [outcomes[i] for i in range(len(recordings))]
