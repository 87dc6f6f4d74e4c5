"""--out: checked before anything starts, held by one run at a time, never written outside.

A run takes an exclusive lock on OUT/.hvreplay.lock (the filelock library: flock on
Unix) before it reads, removes or writes anything there, and records beside it who
holds it (pid, host, start time, command). A second run into the same folder then
fails at once naming the first, instead of both reporting success while the last to
finish overwrites the other's summary. The kernel drops the lock with its process, so
a killed run never leaves a stale lock behind (its holder record may stay; the next
holder overwrites it).

Every result path is checked to resolve inside OUT before it is written or removed
(`inside`): names are made safe where they are made (pipeline/run/shards.py, the mode
loader), and the writers do not rely on that. Problems with OUT are OutError, whose
text is one line naming the path.
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pipeline.atomic import write_atomic

LOCK = ".hvreplay.lock"
HOLDER = ".hvreplay.holder.json"


class OutError(Exception):
    """--out cannot be used, or a path under it cannot be written or removed; str() is one line."""


@dataclass(frozen=True)
class Holder:
    """Who holds an OUT folder: enough for a user to find the run (or see that it is gone)."""

    pid: int
    host: str
    started: str
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}: {self.command}"


def inside(out: Path, path: Path) -> Path:
    """`path`, once proved to resolve (symbolic links and '..' followed) inside `out`."""
    if not path.resolve().is_relative_to(out.resolve()):
        raise OutError(f"{path}: resolves outside --out {out}; nothing is written or removed there")
    return path


def write(path: Path, write_to: Callable[[Any], object]) -> Path:
    """write_atomic, with a failure as one line naming the folder (cannot write: why)."""
    try:
        write_atomic(path, write_to)
    except OSError as e:
        raise OutError(f"{path.parent}: cannot write: {_why(path.parent, e)}") from None
    return path


def remove(path: Path) -> None:
    """Remove a file if it is there; a failure is one line naming it. A path through a file
    (NotADirectoryError) names nothing there to remove."""
    try:
        path.unlink(missing_ok=True)
    except NotADirectoryError:
        pass
    except OSError as e:
        raise OutError(f"{path}: cannot remove: {_why(path, e)}") from None


def _why(path: Path, e: OSError) -> str:
    """The reason in words; "not a folder" where a file stands in a folder's place (mkdir
    only says "File exists" then)."""
    if isinstance(e, FileExistsError) and path.exists() and not path.is_dir():
        return "a file is in the way (not a folder)"
    return e.strerror or str(e)


@contextmanager
def held(out: Path, command: str) -> Iterator[None]:
    """Hold OUT for one run: made if missing, locked (OutError at once, naming the holder,
    if another run has it), released on exit. An OUT this run made and left empty is
    removed again, so a run refused before it wrote anything leaves no folder behind."""
    made = _make_folder(out)
    lock = FileLock(out / LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise OutError(f"{out}: in use by another run ({_holder(out)}); "
                       "wait for it to finish, or give another --out") from None
    except OSError as e:
        raise OutError(f"{out}: cannot write: {_why(out, e)}") from None
    try:
        write(out / HOLDER, lambda tmp: Path(tmp).write_text(json.dumps(asdict(_me(command)))))
        yield
    finally:
        with suppress(OSError):  # tidying up must not hide why the run ended
            (out / HOLDER).unlink(missing_ok=True)
            if made and [p.name for p in out.iterdir()] == [LOCK]:
                (out / LOCK).unlink()
                out.rmdir()
        lock.release()


def _make_folder(out: Path) -> bool:
    """Make OUT (and its parents) if missing; True if this call made it."""
    if out.exists() and not out.is_dir():
        raise OutError(f"{out}: not a folder (--out names the folder results go to)")
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as e:
        raise OutError(f"{out}: cannot create: {_why(out, e)}") from None
    return True


def _me(command: str) -> Holder:
    return Holder(os.getpid(), socket.gethostname(), datetime.now().astimezone().isoformat(timespec="seconds"),
                  command)


def _holder(out: Path) -> str:
    """The holder's record, or why there is none (it may not have written it yet)."""
    try:
        return str(Holder(**json.loads((out / HOLDER).read_text())))
    except (OSError, ValueError, TypeError):
        return "its holder record is missing or unreadable"
