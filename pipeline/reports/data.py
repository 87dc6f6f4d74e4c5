"""What a report shows beside the summary: priced attribution, the calibration table, sweeps.

Each loader turns files into the frames the renderers (terminal and HTML) draw from, and
says in one line why something is not there, so a report of old results (no attribution)
or of results priced with a profile file that is not at hand still shows everything else.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipeline.analysis import attribution as attr
from pipeline.analysis import calibrate as cal
from pipeline.config.errors import ConfigError
from pipeline.config.cost_profile import Profile, find_profile, load_profile
from pipeline.config.measurements import Reference
from pipeline.reports.terminal import profile_names
from pipeline.run.results import SUMMARY, read_summary
from pipeline.analysis.sweep import setting_keys

CELL_COLUMNS = ("workload", "mode", "unit", "measured", "predicted", "error_pct", "role")


class ReportInputError(Exception):
    """An input the user named (--calibration, --sweep) cannot be used (one line, names the file)."""


@dataclass(frozen=True)
class Attribution:
    """Top sources per dimension (attribution.top frames), or why there are none."""

    top: dict[str, pl.DataFrame] | None
    profile: str    # the profile that priced it
    note: str       # why it is not available, or what does not add up ('' when all is well)


@dataclass(frozen=True)
class Calibration:
    cells: pl.DataFrame   # CELL_COLUMNS: measured vs modelled per reference cell
    profile: str          # the profile whose predictions these are
    source: str           # where the table comes from, for the caption


@dataclass(frozen=True)
class Sweep:
    table: pl.DataFrame   # sweep.parquet (pipeline.analysis.sweep.gains)
    keys: list[str]       # the swept mode fields
    profile: str


def summary_profile(summary: pl.DataFrame, explicit: Path | None) -> tuple[Profile | None, str]:
    """The cost profile that priced the summary: --profile if given, else the file in
    configs/hardware with the name the summary records. (None, why) when there is none."""
    ok = summary.filter(pl.col("status") == "ok")
    names = sorted(set(ok["profile"].drop_nulls())) if len(ok) else []   # no row priced: no profile column
    path = explicit or (find_profile(names[0]) if len(names) == 1 else None)
    if path is None:
        which = (f"profile {names[0]!r} is not in configs/hardware" if len(names) == 1
                 else f"profiles {names} in the summary" if names else "no trace was priced")
        return None, f"{which}; give --profile PROFILE.toml"
    try:
        return load_profile(path), ""
    except ConfigError as e:
        return None, str(e)


def load_attribution(results: Path, summary: pl.DataFrame, profile: Profile | None, no_profile: str,
                     n: int) -> Attribution:
    """The top n sources by kind, address space and device of every (trace, mode), priced
    with `profile` (`no_profile` says why there is none)."""
    try:
        rows = attr.read_attribution(results)
    except attr.AttributionError as e:
        return Attribution(None, "", f"attribution not available: {e}")
    if rows is None:
        where = attr.attribution_dir(results)
        return Attribution(None, "", f"attribution not available: {where} does not exist "
                                     "(results replayed before attribution was recorded)")
    if profile is None:
        return Attribution(None, "", f"attribution not priced: {no_profile}")
    cpus = dict(summary.filter(pl.col("status") == "ok").select("trace", "cpus").unique().rows())
    priced = attr.price(rows, profile, cpus)
    off = attr.mismatches(priced, summary)
    note = (f"attribution priced with {profile.name} does not add up to the summary's modelled overhead for "
            f"{len(off)} (trace, mode)(s), e.g. {off[0]}" if off else "")
    return Attribution({d: attr.top(priced, d, n) for d in attr.DIMENSIONS}, profile.name, note)


def load_calibration(cells: Path | None, summary: pl.DataFrame, reference: Reference,
                     profile: Profile | None) -> Calibration | None:
    """A calibration's cells file (`pipeline calibrate --out FIT.toml` writes FIT.cells.parquet),
    else the reference cells beside the summary's own modelled values."""
    if cells is not None:
        return _cells_file(cells)
    try:
        predictions = cal.modelled(summary, reference, profile.fitted_on if profile else ())
    except cal.CalibrationError as e:
        raise ReportInputError(str(e)) from None
    if not predictions:
        return None
    name = profile_names(summary)
    fitted = f"; fit = in the profile's own fit ({', '.join(profile.fitted_on)})" if profile and profile.fitted_on else ""
    return Calibration(cal.prediction_frame(predictions), name,
                       f"reference {reference.name} ({reference.source}) vs the results' modelled values{fitted}")


def _cells_file(path: Path) -> Calibration:
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as e:
        raise ReportInputError(f"{path}: cannot read Parquet ({str(e).splitlines()[0]})") from None
    missing = [c for c in CELL_COLUMNS if c not in frame.columns]
    if missing:
        raise ReportInputError(f"{path}: missing column(s) {missing}; expected `pipeline calibrate` cells")
    fit_profile = path.with_name(path.name.removesuffix(".cells.parquet") + ".toml")
    try:
        name = load_profile(fit_profile).name
    except ConfigError:
        name = f"{fit_profile.stem} (fitted; {fit_profile.name} not found)"
    return Calibration(frame.select(CELL_COLUMNS), name, f"{path}: fitted by pipeline calibrate")


def load_sweep(folder: Path) -> Sweep:
    """A `pipeline sweep --out DIR` folder: its sweep.parquet, and its summary for the profile."""
    path = folder / "sweep.parquet"
    try:
        table = pl.read_parquet(path)
        profile = profile_names(read_summary(folder))
    except (OSError, FileNotFoundError, pl.exceptions.PolarsError) as e:
        raise ReportInputError(f"{path}: cannot read the sweep ({str(e).splitlines()[0]}; "
                               f"expected a `pipeline sweep --out` folder with sweep.parquet and {SUMMARY})") from None
    keys = setting_keys(table)
    if not keys or "gain" not in table.columns:
        raise ReportInputError(f"{path}: not a sweep table (no swept setting or gain column)")
    return Sweep(table, keys, profile or "?")
