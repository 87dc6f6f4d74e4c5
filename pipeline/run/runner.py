"""Run shards on Dask: map replay over (trace, vCPU, mode), write each result, reduce.

Dask only maps and reduces here: the task is `replay_group`, a plain function of the
shards of one trace's vCPU and their modes that reads the columns once, replays them
under every mode in one pass and writes each shard's own file (`Group`). A
local cluster is started unless a scheduler is named (address, scheduler file or
DASK_SCHEDULER_ADDRESS), over TLS when certificates are given.

Faults: a task lost with its worker is rerun by Dask on another (up to the
scheduler's distributed.scheduler.allowed-failures); a rerun overwrites the same
file, so a shard is never counted twice. Resume: the traces are hashed first (as
tasks), and shards whose files in OUT already match are read back, not replayed
(pipeline/run/manifest.py). OUT that cannot be written stops the run at the first file
that fails, with one line (pipeline/run/outdir.py OutError); files already written stay.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from dask.distributed import Client, LocalCluster, as_completed
from distributed.comm import connect as connect_comm
from distributed.comm.addressing import parse_address, parse_host_port
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.run.cluster import ClusterError, ClusterSpec, Tls, forked_workers
from pipeline.run.manifest import Resumed, entry, resume, trace_digest
from pipeline.run.chunked import (WHOLE, Chunk, Part, Rest, auto_chunk_events, exact_parts, merged_counts, plan_chunks,
                                  replay_parts, rest_chunk, wants_chunks)
from pipeline.run.outdir import OutError
from pipeline.run.results import Failure, mode_folders, remove_summary, shard_row, totals, write_attribution, write_shard
from pipeline.run.shards import Shard, TraceFile, plan
from pipeline.tracefile.format import TraceError, TraceMeta, count_events, read_meta
from replay.kernel import Snapshot
from replay.mode import Mode


Say = Callable[[str], None]   # where a run's error lines (report) and notes (note) go
PROBE_TIMEOUT_S = 10.0   # for a scheduler to accept a connection and say who it is
# distributed names the connection in its errors: "in <TCP (closed) local=… remote=…>: "
_COMM_NAME = re.compile(r"in <[^>]*>: ")


@dataclass(frozen=True)
class RunOutput:
    rows: list[tuple[str, dict[str, Any]]]  # (mode, shard row), replayed or resumed
    failures: list[Failure]
    done: list[tuple[Shard, str]]           # the shards of `rows`, each with its manifest entry


@dataclass(frozen=True)
class Chunking:
    """Split each vCPU's events into chunks of `events`, warmed up by `warmup` (default:
    chunked.default_warmup) and proved exact (pipeline/run/chunked.py); 0 = never; None =
    chosen per group (chunked.auto_chunk_events: often one task per group)."""

    events: int | None = None
    warmup: int | None = None


@dataclass(frozen=True)
class Group:
    """Shards of one trace's vCPU replayed together: one pass over the trace for all their
    modes (the kernel replays several at once), so the trace is read and its keys mapped
    once, not once per mode. Reading costs as much as replaying a mode or more."""

    shards: tuple[Shard, ...]

    @property
    def first(self) -> Shard:
        return self.shards[0]


# A mode's replay cost relative to the others, for dealing modes into groups: a shadow pool
# costs about twice the TLB-only modes (kernel seconds on the 71 M-event hackbench-5 trace,
# 2026-12-02: native 0.90, qemu 0.70, kvm-ept 1.10, kvm-apicv 1.12; kvm-upstream 2.20,
# kvm-trunk 1.75, kvm-paravirt 1.75; reading the trace 0.86 per group).
SHADOW_COST, OTHER_COST = 2, 1


def plan_groups(shards: list[Shard], workers: int, by_name: dict[str, Mode]) -> list[Group]:
    """The shards of each (trace, vCPU) in one group, unless there are fewer of those than
    workers: then each one's modes are dealt into as many groups as keep the workers busy
    (a trace read per group), the costliest first, each to the group with the least cost so
    far, so that the groups end together."""
    units: dict[tuple[str, int], list[Shard]] = {}
    for s in shards:
        units.setdefault((s.path, s.cpu), []).append(s)
    split = max(1, -(-workers // max(1, len(units))))   # ceil(workers / units)
    return [g for unit in units.values() for g in _dealt(unit, min(split, len(unit)), by_name)]


def _dealt(unit: list[Shard], k: int, by_name: dict[str, Mode]) -> list[Group]:
    """`unit`'s shards in k groups of about equal cost (longest processing time first)."""
    def cost(shard: Shard) -> int:
        return SHADOW_COST if by_name[shard.mode].features.shadow else OTHER_COST

    load: list[int] = [0] * k
    members: list[list[int]] = [[] for _ in range(k)]
    for i in sorted(range(len(unit)), key=lambda i: -cost(unit[i])):
        g = load.index(min(load))
        load[g] += cost(unit[i])
        members[g].append(i)
    return [Group(tuple(unit[i] for i in sorted(m))) for m in members]


# The Dask tasks never raise: an exception raised in a task is logged by its worker with a
# traceback, on the user's terminal for a local cluster. Each returns its failure instead,
# as a value the driver reports in one line; only a lost worker reaches the driver raised.

Outcome = tuple[str, dict[str, Any]] | Failure | OutError   # a shard's: its (mode, row), or why not


def replay_group(group: Group, modes: tuple[Mode, ...], out: str) -> list[Outcome]:
    """The Dask task: a group's shards in one pass, each written to its own result files."""
    parts = replay_chunk(group, modes, WHOLE, last=True)
    if isinstance(parts, Failure):
        return [replace(parts, mode=m.name) for m in modes]
    outcomes: list[Outcome] = []
    for shard, mode, part in zip(group.shards, modes, parts):
        try:
            outcomes.append(finish(Path(out), shard, mode, [part]))
        except Exception as e:  # noqa: BLE001 - a bug: the shard fails with one line (see above)
            outcomes.append(_internal_failure(shard, e))
    return outcomes


def replay_chunk(group: Group, modes: tuple[Mode, ...], chunk: Chunk, last: bool,
                 start: Snapshot | None = None) -> list[Part] | Failure:
    """The Dask task of a chunked group: one chunk's counts and edge states per mode (from
    `start`, the previous chunk's end state, when it repairs the chunk for one mode)."""
    shard = group.first
    try:
        return replay_parts(Path(shard.path), shard.cpu, shard.meta, modes, chunk, last, start)
    except (TraceError, ValueError) as e:
        return Failure(shard.trace, modes[0].name, one_line(f"{shard.path}: {e}" if isinstance(e, ValueError) else str(e)))
    except Exception as e:  # noqa: BLE001 - a bug: the shard fails with one line (see above)
        return _internal_failure(shard, e)


def hash_trace(path: str) -> str | OSError:
    """The Dask task that hashes a trace: its digest, or the OSError that stopped it (the
    file may be gone or changed since its metadata was read)."""
    try:
        return trace_digest(path)
    except OSError as e:
        return e


def finish(out: Path, shard: Shard, mode: Mode, parts: list[Part]) -> tuple[str, dict[str, Any]] | OutError:
    """Merge a shard's (exact) parts and write its attribution, then its counts file.

    A file that cannot be written is returned, not raised: raised in a task, Dask would
    log a traceback for it on the worker; the driver stops the run on it (_written)."""
    by_source = merged_counts(parts, mode, shard.meta.native_ns)
    row = shard_row(shard, totals(by_source))
    done = entry(shard, mode)
    try:
        write_attribution(out, shard, by_source, done)
        write_shard(out, shard, row, done)
    except OutError as e:
        return e
    return mode.name, row


def _written(outcome: Any) -> Any:
    """A shard's outcome, unless its files could not be written: then the run stops here
    (every later shard would fail the same way; those already written are kept)."""
    if isinstance(outcome, OutError):
        raise outcome
    return outcome


@contextmanager
def connect(spec: ClusterSpec) -> Iterator[Client]:
    if spec.scheduler_file or spec.address:
        with _client(spec, spec.address) as client:
            yield client
    elif spec.tls:
        raise ClusterError("--tls-ca-file/--tls-cert/--tls-key are for an existing scheduler: "
                           "give --scheduler-address or --scheduler-file")
    else:
        with local_cluster(spec.workers) as cluster, Client(cluster) as client:
            yield client


def local_cluster(workers: int, **options: Any) -> LocalCluster:
    """A local cluster of `workers` single-threaded processes, without a dashboard.

    Without a dashboard the scheduler still serves HTTP (health, metrics), on port 8787
    unless told otherwise: with another cluster up there, distributed warns "Port 8787 is
    already in use" on every run. So that server takes any free port, on loopback only.

    Its workers are forked from a fork server that has the task module and the compiled
    kernel loaded (pipeline/run/cluster.py forked_workers)."""
    with forked_workers() as worker_options:
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"}, **worker_options, **options)


def _client(spec: ClusterSpec, address: str | None) -> Client:
    """A client of the named scheduler; any failure to connect is one ClusterError line."""
    if spec.tls and address and "://" not in address:
        address = f"tls://{address}"
    where = f"scheduler file {spec.scheduler_file}" if spec.scheduler_file else f"scheduler {address}"
    security = {"security": spec.tls.security()} if spec.tls else {}
    problem = probe_scheduler(_scheduler_address(spec, address), spec.tls)
    if problem:
        raise ClusterError(f"cannot connect to the Dask {where}: {problem}")
    try:
        if spec.scheduler_file:
            return Client(scheduler_file=spec.scheduler_file, **security)
        return Client(address, **security)
    except (OSError, TypeError, RuntimeError, ValueError) as e:
        # The Client that failed to start still owns an event-loop runner; left to the
        # garbage collector, its __del__ may run inside the next Client's start and
        # deadlock there (seen in the tests: a refused TLS connect, then a new client).
        # Collect it here, where no other client is starting.
        gc.collect()
        raise ClusterError(f"cannot connect to the Dask {where}: {_connect_problem(e)}") from None


def _scheduler_address(spec: ClusterSpec, address: str | None) -> str | None:
    """The address a scheduler file names (None if it cannot be read: Client says why)."""
    if not spec.scheduler_file:
        return address
    try:
        return str(json.loads(Path(spec.scheduler_file).read_text())["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def probe_scheduler(address: str | None, tls: Tls | None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `address` is not a Dask scheduler we can use, or None if it is (or cannot be probed).

    distributed's Client waits without end on a server that accepts the connection but
    does not speak its protocol (seen: a plain HTTP server, 11 minutes), and reports a
    refused connection only as a time-out. So first a plain TCP connect (refused at once),
    then the scheduler's own `identity` call with a deadline; only when that fails is the
    server asked what it is."""
    if not address:
        return None
    scheme, location = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return None   # inproc://, ucx://: leave them to distributed
    host, port = parse_host_port(location)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        return f"connection refused: nothing listens at {host}:{port} (is the scheduler running?)"
    except socket.gaierror as e:
        return f"unknown host {host!r} ({e.strerror})"
    except OSError as e:
        return f"no connection to {host}:{port} within {timeout:g} s ({e.strerror or type(e).__name__})"
    if scheme == "tls" and not tls:
        return "it uses TLS; give --tls-ca-file, --tls-cert and --tls-key"
    args = tls.security().get_connection_args("client") if tls and scheme == "tls" else {}
    try:
        reply = asyncio.run(_identity(address, args, timeout))
    except Exception:  # noqa: BLE001 - any failure of the handshake means "not usable"; diagnosed below
        return _not_a_scheduler(host, port, scheme, tls, timeout)
    return None if isinstance(reply, dict) and reply.get("type") == "Scheduler" else \
        f"the server at {host}:{port} answered, but it is not a Dask scheduler"


async def _identity(address: str, connection_args: dict[str, Any], timeout: float) -> Any:
    comm = await asyncio.wait_for(connect_comm(address, timeout=timeout, **connection_args), timeout)
    try:
        await asyncio.wait_for(comm.write({"op": "identity", "reply": True}), timeout)
        return await asyncio.wait_for(comm.read(), timeout)
    finally:
        comm.abort()


def _not_a_scheduler(host: str, port: int, scheme: str, tls: Tls | None, timeout: float) -> str:
    """What answers at host:port, asked with an HTTP request: an HTTP server (the dashboard's
    port is a common mistake), or a server that drops plain bytes (a TLS scheduler at a tcp://
    address does), or one that says nothing."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            head = sock.recv(5)
    except OSError:
        head = b""
    if head.startswith(b"HTTP/"):
        return (f"an HTTP server answers at {host}:{port}, not a Dask scheduler "
                "(the dashboard's port? the scheduler's is 8786 by default)")
    if scheme == "tcp" and not tls:
        return (f"no Dask scheduler answered at {host}:{port} within {timeout:g} s "
                "(a TLS scheduler needs its tls:// address and --tls-ca-file, --tls-cert, --tls-key)")
    return f"no Dask scheduler answered at {host}:{port} within {timeout:g} s"


def _connect_problem(e: Exception) -> str:
    """What distributed said, without its connection repr (the probe has ruled out the usual causes)."""
    return _COMM_NAME.sub("", one_line(f"{type(e).__name__}: {e}"))


def open_traces(traces: list[TraceFile], modes: list[Mode],
                report: Say) -> tuple[list[tuple[TraceFile, TraceMeta]], list[Failure]]:
    """Read every trace's metadata up front; a bad file fails alone, with one line."""
    opened: list[tuple[TraceFile, TraceMeta]] = []
    failures: list[Failure] = []
    for t in traces:
        try:
            opened.append((t, read_meta(t.path)))
        except TraceError as e:
            report(str(e))
            failures += [Failure(t.trace, m.name, str(e)) for m in modes]
    return opened, failures


def plan_shards(client: Client, opened: list[tuple[TraceFile, TraceMeta]], modes: list[Mode],
                report: Say) -> tuple[list[Shard], list[Failure]]:
    """Hash every trace on the workers (they read it next anyway), then split it into shards."""
    digests = client.map(hash_trace, [str(t.path.absolute()) for t, _ in opened], pure=False)
    shards: list[Shard] = []
    failures: list[Failure] = []
    for (t, meta), digest in zip(opened, digests):
        try:
            shards += plan(t, meta, [m.name for m in modes], _raised(digest.result()))
        except Exception as e:  # unreadable now, or a lost worker: this trace fails, the run goes on
            line = one_line(f"{t.path}: cannot read: {type(e).__name__}: {e}")
            report(line)
            failures += [Failure(t.trace, m.name, line) for m in modes]
    return shards, failures


def _raised(digest: str | OSError) -> str:
    if isinstance(digest, OSError):
        raise digest
    return digest


def run(traces: list[TraceFile], modes: list[Mode], out: Path, spec: ClusterSpec, report: Say = print,
        note: Say = print, chunking: Chunking = Chunking()) -> RunOutput:
    """Replay every trace under every mode; per-shard files land under `out`.

    Shards whose result files already match (same trace bytes, mode, model) and prove
    intact are kept. The caller holds `out` (pipeline.run.outdir.held) and writes the new
    summary; the old one is removed first. OutError: a result path would resolve outside
    `out` (checked before anything starts), or a file cannot be written or removed."""
    by_name = {m.name: m for m in modes}
    mode_folders(out, by_name)  # refuses a result folder outside `out` before anything starts
    remove_summary(out)
    opened, failures = open_traces(traces, modes, report)
    if not opened:
        return RunOutput([], failures, [])
    with connect(spec) as client:
        if not client.scheduler_info().get("workers"):
            note(f"the scheduler at {client.scheduler.address} has no workers yet: waiting for them")
        shards, unread = plan_shards(client, opened, modes, report)
        resumed = resume(out, shards, by_name, {t.trace for t in traces})
        for line in _resume_notes(resumed, len(shards), out):
            note(line)
        rows, failed = _replay_all(client, resumed.todo, by_name, out, report, note, chunking)
    rows = resumed.done + rows
    return RunOutput(rows, _dedupe(failures + unread + failed), _done(shards, by_name, rows))


def _resume_notes(resumed: Resumed, planned: int, out: Path) -> list[str]:
    """What resume kept, and that files which failed their checks are recomputed."""
    notes = [f"resumed: {len(resumed.done)} of {planned} shards already done in {out}"] if resumed.done else []
    if resumed.damaged:
        n, first = len(resumed.damaged), resumed.damaged[0]
        what = "1 shard file failed its checksum and is" if n == 1 else f"{n} shard files failed their checksum and are"
        notes.append(f"{what} recomputed: {first}" + (f" and {n - 1} more" if n > 1 else ""))
    return notes


def _done(shards: list[Shard], by_name: dict[str, Mode],
          rows: list[tuple[str, dict[str, Any]]]) -> list[tuple[Shard, str]]:
    """Each shard with a row, and its manifest entry (for the summary's list of files)."""
    have = {(mode, row["trace"], row["cpu"]) for mode, row in rows}
    return [(s, entry(s, by_name[s.mode])) for s in shards if (s.mode, s.trace, s.cpu) in have]


def _replay_all(client: Client, shards: list[Shard], by_name: dict[str, Mode], out: Path, report: Say,
                note: Say, chunking: Chunking) -> tuple[list[tuple[str, dict[str, Any]]], list[Failure]]:
    """Whole groups run as one task each; chunked ones as one task per chunk, merged here."""
    lengths: dict[tuple[str, int], int] = {}  # a trace's vCPU is counted once
    workers = _workers(client)
    groups = plan_groups(shards, workers, by_name)
    cores = cluster_cores(client) if chunking.events is None else 0   # only the automatic chunks ask
    plans = [(g, m, _chunks(g, m, chunking, lengths, workers, cores, len(groups))) for g in groups
             for m in [_modes(g, by_name)]]
    whole = {client.submit(replay_group, g, m, str(out), pure=False): g for g, m, chunks in plans if chunks == [WHOLE]}
    chunked = [Speculation(client, g, m, chunks, -(-workers // len(groups))) for g, m, chunks in plans if chunks != [WHOLE]]
    if chunking.events and len(groups) >= workers:
        note(f"--chunk-events not used: {len(groups)} task(s) keep the {workers} worker(s) busy, so chunks could "
             "only replay one after another")
    outcomes: list[tuple[str, dict[str, Any]] | Failure] = []
    repaired = 0
    with task_progress() as bar, ThreadPoolExecutor(max(1, len(chunked))) as merging:
        task = bar.add_task("replaying shards", total=len(shards))
        merges = [merging.submit(_merge_chunks, spec, out) for spec in chunked]   # each checks its group as it comes
        for future in as_completed(whole):
            try:
                done = future.result()
            except Exception as e:  # a bug or a lost worker: these shards fail, the run goes on
                done = [_internal_failure(s, e) for s in whole[future].shards]
            outcomes += [_written(o) for o in done]
            bar.advance(task, len(done))
        for merge in merges:
            done, n = merge.result()
            outcomes += [_written(o) for o in done]
            repaired += n
            bar.advance(task, len(done))
    if chunked:
        shards_chunked = sum(len(c.group.shards) for c in chunked)
        note(f"chunked: {sum(len(c.chunks) for c in chunked)} chunks of {len(chunked)} groups ({shards_chunked} shards), "
             f"{repaired} replayed again, in one pass from the previous chunk's end state (their mode's warm-up had "
             "missed a start state)")
    for line in dict.fromkeys(o.error for o in outcomes if isinstance(o, Failure)):
        report(line)   # a bad row fails the trace in every mode: say it once
    return [o for o in outcomes if not isinstance(o, Failure)], [o for o in outcomes if isinstance(o, Failure)]


def _workers(client: Client) -> int:
    """Task slots of the cluster now (at least 1: a scheduler may have none yet)."""
    return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()))


def cluster_cores(client: Client) -> int:
    """CPU cores the workers run on, each host's counted once (a worker that cannot say,
    gone since it was counted, adds none)."""
    answers = client.run(host_cores, on_error="ignore").values()
    return sum(dict(a for a in answers if isinstance(a, tuple)).values())


def host_cores() -> tuple[str, int]:
    """Run on a worker: its host, and the cores it may run on."""
    return socket.gethostname(), len(os.sched_getaffinity(0))


def _modes(group: Group, by_name: dict[str, Mode]) -> tuple[Mode, ...]:
    return tuple(by_name[s.mode] for s in group.shards)


def _chunks(group: Group, modes: tuple[Mode, ...], chunking: Chunking, lengths: dict[tuple[str, int], int],
            workers: int, cores: int, groups: int) -> list[Chunk]:
    """The group's chunks; its vCPU's events are counted only when chunks may be made (a
    multi-vCPU trace is scanned for them, in the driver)."""
    if not wants_chunks(chunking.events, modes, workers, cores, groups):
        return [WHOLE]
    shard = group.first
    key = (shard.path, shard.cpu)
    if key not in lengths:
        lengths[key] = count_events(Path(shard.path), shard.cpu, shard.meta)
    size = chunking.events or auto_chunk_events(lengths[key], workers, groups)
    return plan_chunks(lengths[key], size, chunking.warmup)


class ChunkFailed(Exception):
    """A chunk task returned a Failure: the group fails with it."""


class Speculation:
    """A chunked group's chunk tasks, submitted as its check reaches them: `ahead` at a time
    from the chunk it waits for, so that when its modes miss, the speculation under way,
    which Dask cannot stop, is little."""

    def __init__(self, client: Client, group: Group, modes: tuple[Mode, ...], chunks: list[Chunk], ahead: int) -> None:
        self.client, self.group, self.modes, self.chunks, self.ahead = client, group, modes, chunks, ahead
        self.futures: list[Any] = []
        self._submit(ahead)

    def parts(self, i: int) -> list[Part]:
        """Chunk i's parts, per mode (the next chunks are submitted first)."""
        self._submit(i + self.ahead)
        return _parts(self.futures[i].result())

    def stop(self, i: int) -> None:
        """No chunk after i is wanted (exact_parts asks for none): those under way are dropped."""
        self.client.cancel(self.futures[i + 1:])

    def _submit(self, upto: int) -> None:
        last = len(self.chunks) - 1
        while len(self.futures) < min(upto, len(self.chunks)):
            i = len(self.futures)
            self.futures.append(self.client.submit(replay_chunk, self.group, self.modes, self.chunks[i], i == last,
                                                   pure=False))


def _merge_chunks(spec: Speculation, out: Path) -> tuple[list[Outcome], int]:
    """Prove each mode's chunks exact (replaying the rest of a mode whose warm-up fell short
    in one pass), then write its shard; returns the shards' outcomes and how many chunks
    were replayed again."""
    group, modes, chunks = spec.group, spec.modes, spec.chunks

    def repair(rests: list[Rest]) -> list[Callable[[], Part]]:
        futures = [spec.client.submit(replay_chunk, Group((group.shards[r.mode],)), (modes[r.mode],),
                                      rest_chunk(chunks, r.first), True, r.start, pure=False, priority=1) for r in rests]
        return [partial(_first_part, f) for f in futures]

    try:
        chains, repaired = exact_parts(spec.parts, chunks, modes, repair, spec.stop)
    except ChunkFailed as e:
        return [replace(e.args[0], mode=m.name) for m in modes], 0
    except Exception as e:  # a bug or a lost worker: these shards fail, the run goes on
        return [_internal_failure(s, e) for s in group.shards], 0
    return [finish(out, s, m, chain) for s, m, chain in zip(group.shards, modes, chains)], repaired


def _first_part(future: Any) -> Part:
    return _parts(future.result())[0]


def _parts(result: list[Part] | Failure) -> list[Part]:
    if isinstance(result, Failure):
        raise ChunkFailed(result)
    return result


def _internal_failure(shard: Shard, e: Exception) -> Failure:
    return Failure(shard.trace, shard.mode, one_line(f"{shard.path}: internal error: {type(e).__name__}: {e}"))


def _dedupe(failures: list[Failure]) -> list[Failure]:
    """A multi-vCPU trace may fail once per shard; keep one failure per (trace, mode)."""
    return list({(f.trace, f.mode): f for f in failures}.values())


def task_progress(disable: bool = False) -> Progress:
    """A bar of tasks done (shards replayed, recordings imported), gone when it ends."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, disable=disable)


def one_line(text: str) -> str:
    return " ".join(text.split())
