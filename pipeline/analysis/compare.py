"""`compare` and `host-costs`: a mode's predicted VM exits beside a host trace's measured ones.

Inputs: a guest trace (hvreplay Parquet) whose metadata says where its t_ns = 0 lies on the
recording clock (`source.clock_start_ns`), and host-side KVM traces of the same recording on
the same clock, read by `importers/kvm_exits` exactly as `kvm-stat` reads them (each kvm_exit
timed to its thread's next kvm_entry). Each guest vCPU is compared on its own; the steps, each
a function below:

  vCPU thread  the host thread that runs the vCPU, named (comm-pid or pid), or found
               (`score`): a guest event that exits is traced 0-3 µs before the kvm_exit it
               causes, so the right thread's exits follow the vCPU's rows within the slack,
               and another VM's (or vCPU's) exits do not; each thread goes to one vCPU, and
               only a vCPU's own thread's exits are ever counted for it.
  window       the time both sides cover, [max(firsts), min(lasts)] on the recording clock;
               the guest's rows in it are replayed under the mode (the oracle, in-process),
               the thread's exits counted in [start, end + slack]: the exit of the window's
               last guest event follows it by µs, as every exit follows its event.
  per reason   predicted = Σ the replayed counts of the exit drivers that EXIT_REASONS maps
               to the reason (VMX or SVM names: the ISA is read off the host's reason names),
               measured = the thread's exits of that reason; a predicted host time is the
               predicted count × the measured mean exit-to-entry time of the reason.

Everything here is pure (inputs -> records); pipeline/reports/compare.py prints and draws it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from pipeline.analysis.kvm_stat import time_stats
from pipeline.config.cost_profile import Profile, UnitCost
from pipeline.tracefile.format import TraceError, TraceMeta, read_rows
from pipeline.tracefile.importers.exit_reasons import SVM, VMX
from pipeline.tracefile.importers.kvm_exits import scan_file, thread_name
from replay import reference
from replay.counts import EXIT_REASONS, EXITS, Counts
from replay.events import Events
from replay.kinds import Kind
from replay.mode import Mode

NS_PER_US = 1_000
VMX_ONLY = frozenset(VMX.values()) - {name for name, _ in SVM.values()}
SVM_ONLY = frozenset(name for name, _ in SVM.values()) - frozenset(VMX.values())
# HLT's exit-to-entry time is the halt itself (KVM blocks the vCPU until its wake-up), not
# the cost of the exit: host-costs never takes exit_hlt from it.
NOT_A_COST = frozenset({"exit_hlt"})


class CompareError(Exception):
    """An input compare cannot use; str() is one line naming it."""


# ---------------------------------------------------------------- the host side
class Thread(NamedTuple):
    """A host thread with kvm_exit lines, named as the trace prints it (comm-pid)."""
    pid: int
    comm: str

    @property
    def name(self) -> str:
        return thread_name(self.comm, self.pid)


@dataclass(frozen=True)
class ThreadExits:
    """One thread's exits over every host file, in time order (ns on the recording clock)."""
    thread: Thread
    ts: np.ndarray          # int64 kvm_exit time
    time: np.ndarray        # float64 ns kvm_exit -> next kvm_entry, NaN where untimed
    reason: np.ndarray      # str (object), normalised names (exit_reasons.py)

    def between(self, start: int, end: int) -> ThreadExits:
        """The exits stamped in [start, end]."""
        keep = (self.ts >= start) & (self.ts <= end)
        return ThreadExits(self.thread, self.ts[keep], self.time[keep], self.reason[keep])

    def of_reason(self, reason: str) -> ThreadExits:
        keep = self.reason == reason
        return ThreadExits(self.thread, self.ts[keep], self.time[keep], self.reason[keep])


@dataclass(frozen=True)
class Host:
    """The host traces as compare reads them: each thread's exits, busiest thread first."""
    files: tuple[str, ...]
    threads: list[ThreadExits]
    warnings: list[str]     # each file's skipped lines, as kvm-stat reports them


def load_host(paths: Sequence[Path]) -> Host:
    """Read the host traces with kvm-stat's reader; a file it cannot read, or whose
    timestamps are raw clock counts (not the seconds a guest's clock can meet), is an error."""
    scans = [scan_file(Path(p)) for p in paths]
    for s in scans:
        if s.error:
            raise CompareError(s.error)
        if s.clock == "count":
            raise CompareError(f"{s.source}: timestamps are raw clock counts (a counter clock such as x86-tsc); compare "
                               "needs seconds on the clock the guest was recorded with")
    rows: dict[int, list[tuple[int, float, str]]] = {}
    for r in (r for s in scans for r in s.exits):
        rows.setdefault(r.pid, []).append((r.ts, np.nan if r.time is None else r.time, r.reason))
    names = {pid: comm for s in reversed(scans) for pid, comm in s.comms.items()}   # the first file's name wins
    threads = [_thread_exits(Thread(pid, names.get(pid, "")), mine) for pid, mine in rows.items()]
    warnings = [f"{s.source}: {p.count} {p.what}" for s in scans for p in s.problems if p.count]
    return Host(tuple(map(str, paths)), sorted(threads, key=lambda t: (-len(t.ts), t.thread.pid)), warnings)


def _thread_exits(thread: Thread, rows: list[tuple[int, float, str]]) -> ThreadExits:
    """A thread's (ts, time, reason) rows as columns, in time order (files may overlap)."""
    rows.sort(key=lambda r: r[0])
    return ThreadExits(thread, np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float64),
                       np.array([r[2] for r in rows], dtype=object))


def isa_of(reasons: set[str]) -> str:
    """VMX or SVM, by the exit reasons only one of them has (HLT, CPUID, … both have)."""
    return "SVM" if len(reasons & SVM_ONLY) > len(reasons & VMX_ONLY) else "VMX"


def host_reason(driver: str, isa: str) -> str | None:
    """The host's name for an exit driver's exit on this ISA; None if it has none."""
    pair = EXIT_REASONS.get(driver)
    return None if pair is None else pair[0 if isa == "VMX" else 1]


def find_thread(host: Host, name: str) -> ThreadExits:
    """The thread named `name` (comm-pid, or the pid alone)."""
    for t in host.threads:
        if name in (t.thread.name, str(t.thread.pid)):
            return t
    known = ", ".join(t.thread.name for t in host.threads)
    raise CompareError(f"--vcpu-thread {name}: no thread of that name has kvm_exit lines; threads: {known}")


# ---------------------------------------------------------------- the guest side
@dataclass(frozen=True)
class GuestRows:
    """One guest vCPU's rows with their times on the recording clock."""
    path: str
    meta: TraceMeta
    cpu: int
    t: np.ndarray           # int64 ns on the recording clock (clock_start_ns + t_ns)
    columns: dict[str, np.ndarray]   # kind, value, asid, arg

    def between(self, start: int, end: int) -> dict[str, np.ndarray]:
        keep = (self.t >= start) & (self.t <= end)
        return {name: column[keep] for name, column in self.columns.items()}

    @property
    def hlt_t(self) -> np.ndarray:
        return self.t[self.columns["kind"] == Kind.HLT]


def load_guest(path: Path) -> list[GuestRows]:
    """The guest trace, checked as `validate` checks it, on the recording clock: one GuestRows
    per vCPU, in the order of the metadata's cpus."""
    try:
        meta, cols = read_rows(path)
    except TraceError as e:
        raise CompareError(str(e)) from None
    start = meta.source.get("clock_start_ns")
    if type(start) is not int:
        raise CompareError(f"{path}: no recording clock (source.clock_start_ns): import it again with this version")
    if meta.source.get("timestamps") == "counts":
        raise CompareError(f"{path}: recorded in clock counts, not seconds: the host's seconds cannot be matched "
                           "to it (record both sides with a seconds clock, e.g. trace-cmd's default local clock)")
    return [_vcpu_rows(path, meta, cols, cols["cpu"] == cpu, cpu, start) for cpu in meta.cpus]


def _vcpu_rows(path: Path, meta: TraceMeta, cols: dict[str, np.ndarray], mine: np.ndarray, cpu: int,
               start: int) -> GuestRows:
    return GuestRows(str(path), meta, cpu, cols["t_ns"][mine] + start,
                     {name: cols[name][mine] for name in ("kind", "value", "asid", "arg")})


# ---------------------------------------------------------------- thread and window
class Window(NamedTuple):
    """The compared span on the recording clock (ns); host exits count up to end + slack."""
    start: int
    end: int
    slack: int


def overlap(guest: GuestRows, exits: ThreadExits, slack: int) -> Window | None:
    """Where the guest's rows and the thread's exits both are, None if nowhere."""
    if not len(exits.ts):
        return None
    start, end = max(int(guest.t[0]), int(exits.ts[0])), min(int(guest.t[-1]), int(exits.ts[-1]))
    return Window(start, end, slack) if start <= end else None


class Score(NamedTuple):
    """How a thread's exits line up with the guest's rows: of its exits, those within the
    slack after a guest row; of the guest's rows, those followed by one of its exits.
    basis: HLT exits against hlt rows, or (a guest without hlt) every exit and row."""
    thread: Thread
    basis: str
    exits: int
    exits_matched: int
    rows: int
    rows_matched: int

    @property
    def value(self) -> float:
        """Both fractions at once: a busy decoy matches many rows by chance but few of its
        exits follow one, a quiet one the other way round."""
        return (self.exits_matched / self.exits if self.exits else 0.0) * (self.rows_matched / self.rows if self.rows else 0.0)


def score(guest: GuestRows, exits: ThreadExits, slack: int) -> Score:
    hlt = len(guest.hlt_t) > 0
    window = overlap(guest, exits, slack)
    if window is None:
        return Score(exits.thread, "HLT" if hlt else "all", 0, 0, 0, 0)
    rows = guest.hlt_t if hlt else guest.t
    rows = rows[(rows >= window.start) & (rows <= window.end)]
    mine = exits.between(window.start, window.end + slack)
    mine = mine.of_reason("HLT") if hlt else mine
    return Score(exits.thread, "HLT" if hlt else "all", len(mine.ts), _followed(rows, mine.ts, slack),
                 len(rows), _following(rows, mine.ts, slack))


def _followed(rows: np.ndarray, ts: np.ndarray, slack: int) -> int:
    """How many exits `ts` have a row in [exit - slack, exit] (both sorted)."""
    return int(np.count_nonzero(np.searchsorted(rows, ts, "right") > np.searchsorted(rows, ts - slack, "left")))


def _following(rows: np.ndarray, ts: np.ndarray, slack: int) -> int:
    """How many rows have an exit in [row, row + slack]."""
    return int(np.count_nonzero(np.searchsorted(ts, rows + slack, "right") > np.searchsorted(ts, rows, "left")))


class Choice(NamedTuple):
    """A guest vCPU's host thread, and every thread's score for that vCPU, best first."""
    exits: ThreadExits
    scores: list[Score]


def choose_threads(vcpus: Sequence[GuestRows], host: Host, wanted: str, slack: int) -> list[Choice]:
    """Each guest vCPU's thread: named (one name per vCPU, comma-separated, in the order of
    the trace's cpus), or `auto`: the best-scoring (vCPU, thread) pairs first, each thread
    to one vCPU, every vCPU to a thread whose exits follow its rows."""
    scores = [sorted((score(g, t, slack) for t in host.threads), key=lambda s: (-s.value, -s.exits, s.thread.pid))
              for g in vcpus]
    if wanted != "auto":
        return [Choice(find_thread(host, name), mine) for name, mine in zip(_names(wanted, vcpus), scores)]
    if all(overlap(g, t, slack) is None for g in vcpus for t in host.threads):
        raise CompareError(f"no overlap in time: guest {_span(np.sort(np.concatenate([g.t for g in vcpus])))}, no host "
                           f"thread's exits fall in it (host {_span(np.sort(np.concatenate([t.ts for t in host.threads])))} "
                           "on the recording clock)")
    chosen: dict[int, Thread] = {}
    for i, s in sorted(((i, s) for i, mine in enumerate(scores) for s in mine), key=lambda p: -p[1].value):
        if s.value > 0 and i not in chosen and s.thread not in chosen.values():
            chosen[i] = s.thread
    for i, g in enumerate(vcpus):
        if i not in chosen:
            whose = "the guest's rows" if len(vcpus) == 1 else f"the rows of guest vCPU {g.cpu}"
            raise CompareError(f"--vcpu-thread auto: no {'free ' if chosen else ''}thread's exits follow {whose} within "
                               f"{slack / NS_PER_US:g} µs (threads: {', '.join(t.thread.name for t in host.threads)}); "
                               "name the thread")
    by_thread = {t.thread: t for t in host.threads}
    return [Choice(by_thread[chosen[i]], mine) for i, mine in enumerate(scores)]


def _names(wanted: str, vcpus: Sequence[GuestRows]) -> list[str]:
    names = [n.strip() for n in wanted.split(",")]
    if len(names) != len(vcpus):
        raise CompareError(f"--vcpu-thread {wanted}: {len(names)} thread(s) for {len(vcpus)} guest vCPU(s) "
                           f"(cpus {[g.cpu for g in vcpus]}): name one per vCPU, comma-separated, in that order")
    return names


# ---------------------------------------------------------------- per reason
class ReasonTimes(NamedTuple):
    """A reason's exits and their exit-to-entry times (ns; None without a timed exit)."""
    exits: int
    timed: int
    total_ns: float
    mean_ns: float | None
    p10_ns: float | None
    p90_ns: float | None


def reason_times(exits: ThreadExits) -> dict[str, ReasonTimes]:
    """Per reason, kvm-stat's figures of the thread's exits (`kvm_stat.time_stats`)."""
    df = pl.DataFrame({"reason": exits.reason.astype(str), "time": exits.time}, schema={"reason": pl.String, "time": pl.Float64})
    stats = time_stats(df.with_columns(pl.col("time").fill_nan(None)), ["reason"]).sort("reason")
    return {r["reason"]: ReasonTimes(r["count"], r["timed"], r["total_ns"] or 0.0, r["mean_ns"], r["p10_ns"], r["p90_ns"])
            for r in stats.iter_rows(named=True)}


class ReasonRow(NamedTuple):
    """One reason (or the total): counts, error = (predicted − measured) ÷ measured in %,
    host times in µs. None where undefined: error without measured exits, mean and predicted
    time for a reason the host never shows."""
    reason: str
    predicted: int
    measured: int
    error_pct: float | None
    mean_exit_us: float | None
    predicted_host_us: float | None
    measured_host_us: float


def _error(predicted: float, measured: float) -> float | None:
    return 100 * (predicted - measured) / measured if measured else None


def reason_row(reason: str, predicted: int, times: ReasonTimes | None) -> ReasonRow:
    measured = times.exits if times else 0
    mean = times.mean_ns / NS_PER_US if times and times.mean_ns is not None else None
    return ReasonRow(reason, predicted, measured, _error(predicted, measured), mean,
                     None if mean is None else predicted * mean, times.total_ns / NS_PER_US if times else 0.0)


def total_row(rows: Sequence[ReasonRow], label: str = "total") -> ReasonRow:
    """Σ counts and Σ host times (predicted: of the reasons that have one)."""
    predicted, measured = sum(r.predicted for r in rows), sum(r.measured for r in rows)
    host_pred = sum(r.predicted_host_us or 0.0 for r in rows)
    host_meas = sum(r.measured_host_us for r in rows)
    return ReasonRow(label, predicted, measured, _error(predicted, measured), None, host_pred, host_meas)


HALT = "HLT"     # the halt's exit: its exit-to-entry time is mostly the guest's own idle time


def busy_total(rows: Sequence[ReasonRow]) -> ReasonRow:
    """The total without HLT: an idle guest's host time is nearly all halt, which a right HLT
    count predicts whatever else is wrong; without it, the host time that is overhead."""
    return total_row([r for r in rows if r.reason != HALT], "total without HLT")


def predicted_by_reason(counts: Counts, isa: str) -> tuple[dict[str, int], dict[str, tuple[str, ...]], dict[str, int]]:
    """(reason -> predicted count, reason -> its drivers, exit drivers without a host reason
    on this ISA -> their count): a driver that no reason names is said, never dropped silently."""
    by_reason: dict[str, int] = {}
    drivers: dict[str, tuple[str, ...]] = {}
    unmapped: dict[str, int] = {}
    for driver in sorted(EXITS):
        n, reason = counts[driver], host_reason(driver, isa)
        if n and reason is None:
            unmapped[driver] = n
        elif n and reason is not None:
            by_reason[reason] = by_reason.get(reason, 0) + n
            drivers[reason] = (*drivers.get(reason, ()), driver)
    return by_reason, drivers, unmapped


@dataclass(frozen=True)
class Comparison:
    """Everything `pipeline compare` reports of one guest vCPU."""
    guest: str
    cpu: int
    hosts: tuple[str, ...]
    mode: str
    isa: str
    thread: Thread
    named: bool                 # the thread was named, not chosen by score
    scores: list[Score]
    window: Window
    replayed: int               # guest rows in the window
    rows: list[ReasonRow]       # measured count, then predicted, descending
    total: ReasonRow
    busy: ReasonRow             # the total without HLT (busy_total)
    drivers: dict[str, tuple[str, ...]]
    unmapped: dict[str, int]
    untimed: int                # measured exits without a following kvm_entry
    warnings: list[str]

    @property
    def not_produced(self) -> list[str]:
        """Reasons the host shows that the mode predicts none of."""
        return [r.reason for r in self.rows if r.measured and not r.predicted]

    @property
    def not_modelled(self) -> list[str]:
        """Of those, the reasons no exit driver maps to on this ISA: the model has no such exit."""
        mapped = {host_reason(d, self.isa) for d in EXIT_REASONS}
        return [r for r in self.not_produced if r not in mapped]

    @property
    def never_measured(self) -> list[str]:
        """Reasons predicted that the thread never shows: no mean, so no predicted host time."""
        return [r.reason for r in self.rows if r.predicted and not r.measured]


def compare(vcpus: Sequence[GuestRows], host: Host, mode: Mode, wanted: str, slack: int) -> list[Comparison]:
    """Each guest vCPU replayed under `mode`, compared with its host thread."""
    return [compare_vcpu(g, choice, host, mode, wanted != "auto", slack)
            for g, choice in zip(vcpus, choose_threads(vcpus, host, wanted, slack))]


def compare_vcpu(guest: GuestRows, choice: Choice, host: Host, mode: Mode, named: bool, slack: int) -> Comparison:
    """One vCPU's rows in its window, replayed, beside its thread's exits per reason."""
    exits = choice.exits
    window = overlap(guest, exits, slack)
    if window is None:
        raise CompareError(f"no overlap in time: guest {_span(guest.t)}, host thread {exits.thread.name} "
                           f"{_span(exits.ts)} on the recording clock")
    rows = guest.between(window.start, window.end)
    events = Events(kind=rows["kind"], value=rows["value"], asid=rows["asid"], arg=rows["arg"],
                    span_ns=window.end - window.start)
    isa = isa_of(set(exits.reason.tolist()))
    predicted, drivers, unmapped = predicted_by_reason(reference.replay(events, guest.meta.guest, mode), isa)
    measured = exits.between(window.start, window.end + slack)
    times = reason_times(measured)
    reasons = sorted(set(predicted) | set(times), key=lambda r: (-(times[r].exits if r in times else 0),
                                                                  -predicted.get(r, 0), r))
    table = [reason_row(r, predicted.get(r, 0), times.get(r)) for r in reasons]
    return Comparison(guest.path, guest.cpu, host.files, mode.name, isa, exits.thread, named, choice.scores, window,
                      len(events), table, total_row(table), busy_total(table), drivers, unmapped,
                      int(np.isnan(measured.time).sum()), host.warnings)


def _span(ts: np.ndarray) -> str:
    return f"{ts[0] / 1e9:.6f}–{ts[-1] / 1e9:.6f} s"


def frame(comparisons: Sequence[Comparison]) -> pl.DataFrame:
    """One row per (guest vCPU, reason): ReasonRow's columns, with what was compared in every row."""
    return pl.concat([_frame(c) for c in comparisons])


def _frame(c: Comparison) -> pl.DataFrame:
    df = pl.DataFrame([r._asdict() for r in c.rows], schema={
        "reason": pl.String, "predicted": pl.Int64, "measured": pl.Int64, "error_pct": pl.Float64,
        "mean_exit_us": pl.Float64, "predicted_host_us": pl.Float64, "measured_host_us": pl.Float64})
    return df.with_columns(vcpu=pl.lit(c.cpu, pl.Int64), window_start_ns=pl.lit(c.window.start, pl.Int64), window_end_ns=pl.lit(c.window.end, pl.Int64),
                           window_slack_ns=pl.lit(c.window.slack, pl.Int64), vcpu_thread=pl.lit(c.thread.name),
                           mode=pl.lit(c.mode), isa=pl.lit(c.isa), guest=pl.lit(c.guest),
                           hosts=pl.lit(", ".join(c.hosts)))


# ---------------------------------------------------------------- host-costs
class CostChoice(NamedTuple):
    """Where one exit driver's unit cost came from: measured (taken) or the base profile's."""
    driver: str
    reason: str | None
    times: ReasonTimes | None
    cost: UnitCost
    origin: str     # "measured", or why the base's figure was kept


def measured_profile(host: Host, name: str, base: Profile, profile_name: str) -> tuple[Profile, list[CostChoice]]:
    """`base` with each exit driver's unit cost replaced by the mean exit-to-entry time of its
    reason on thread `name`, where the thread shows that reason timed (exit_hlt never: its
    time is the halt). Range: the 10th-90th percentile, or the base's where that is
    undefined or empty (p10 equal to p90: one exit, or all times alike); either widened to hold the mean."""
    exits = find_thread(host, name)
    isa = isa_of(set(exits.reason.tolist()))
    times = reason_times(exits)
    where = f"{exits.thread.name} in {', '.join(Path(f).name for f in host.files)} ({_span(exits.ts)})"
    choices = [_choice(d, host_reason(d, isa), times, base.costs[d], where, base.name) for d in sorted(EXIT_REASONS)]
    costs = {**base.costs, **{c.driver: c.cost for c in choices}}
    described = f"{base.description}; exit costs measured: mean exit-to-entry times of {where}"
    return replace(base, name=profile_name, description=described, costs=costs), choices


def _choice(driver: str, reason: str | None, times: dict[str, ReasonTimes], base: UnitCost, where: str,
            base_name: str) -> CostChoice:
    t = times.get(reason) if reason else None
    if t is None or t.mean_ns is None:
        return CostChoice(driver, reason, t, base, f"{base_name}: no {'timed ' if t else ''}{reason or 'such'} exits")
    if driver in NOT_A_COST:
        kept = (f"{base.source} (kept from {base_name}, not measured: the exit-to-entry time of the {t.exits} "
                f"{reason} exits of {where}, mean {t.mean_ns / NS_PER_US:.4g} µs, includes the halt itself)")
        return CostChoice(driver, reason, t, replace(base, source=kept), f"{base_name}: {reason}'s time is the halt")
    mean = round(t.mean_ns, 3)
    low, high = (t.p10_ns, t.p90_ns) if t.p10_ns is not None and t.p90_ns is not None and t.p10_ns < t.p90_ns \
        else (base.low, base.high)
    source = f"measured: mean exit-to-entry of {t.timed} {reason} exits of {where}"
    return CostChoice(driver, reason, t, UnitCost(mean, min(low, mean), max(high, mean), base.category, source), "measured")
