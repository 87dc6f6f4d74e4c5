"""User-defined modes: the documented example replays with no code change (`--modes-dir`),
and a mistake in a user's mode file stops the run with one line naming file, key and problem.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import CONFIGS
from pipeline.config.modes import DEFAULT_DIR
from replay.mode import Mode

runner = CliRunner()
EXAMPLES = DEFAULT_DIR / "examples"


def test_the_example_mode_replays_from_its_folder(traces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = runner.invoke(app, ["replay", str(traces_dir), "--out", str(out), "--workers", "1",
                            "--modes-dir", str(EXAMPLES), "--modes", "kvm-paravirt,kvm-paravirt-8"])
    assert r.exit_code == 0, r.output
    summary = pl.read_parquet(out / "summary.parquet")
    rows = {(t, m): row for t, m, row in zip(summary["trace"], summary["mode"], summary.iter_rows(named=True))}
    # rr5: 50 switches round-robin over 5 spaces. 4 slots refilled round-robin never hold the
    # space coming next: 50 misses, 50 exits. 8 slots: 5 cold misses, then 45 hits.
    assert (rows["rr5", "kvm-paravirt"]["exit_cr3"], rows["rr5", "kvm-paravirt"]["cr3_cache_hit"]) == (50, 0)
    assert (rows["rr5", "kvm-paravirt-8"]["exit_cr3"], rows["rr5", "kvm-paravirt-8"]["cr3_cache_hit"]) == (5, 45)
    # rr2: 40 switches over 2 spaces fit either cache: 2 misses, 38 hits.
    assert rows["rr2", "kvm-paravirt"]["cr3_cache_hit"] == rows["rr2", "kvm-paravirt-8"]["cr3_cache_hit"] == 38
    # Everything else the example inherits: the 50 port-0x80 delays are dropped in both.
    assert rows["rr5", "kvm-paravirt-8"]["native_io_avoided"] == 50
    assert rows["rr5", "kvm-paravirt-8"]["virt_ns"] < rows["rr5", "kvm-paravirt"]["virt_ns"]


def test_a_mistake_in_a_user_mode_is_one_line(traces_dir: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "fast.toml").write_text('inherits = "kvm-ept"\nname = "fast"\n[on_event]\nio = "exit_pio"\n')
    r = runner.invoke(app, ["replay", str(traces_dir), "--out", str(tmp_path / "o"), "--modes-dir", str(mine)])
    assert r.exit_code == 2
    assert f"{mine / 'fast.toml'}: on_event.io: unknown driver 'exit_pio'" in r.output.replace("\n", "")
    assert not (tmp_path / "o").exists()   # nothing replayed


def _documented_keys() -> dict[str, str]:
    """configs/modes/README.md's keys table: key -> its default column, as written."""
    readme = (CONFIGS / "modes" / "README.md").read_text()
    table = readme[readme.index("| key | type | default | meaning |"):].split("\n\n")[0].splitlines()[2:]
    keys: dict[str, str] = {}
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        for key in re.findall(r"`(\w+)`", cells[0]):
            keys[key] = cells[-2].strip("`")
    return keys


def _as_documented(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return '""'
    if isinstance(value, (frozenset, set, list, tuple)):
        return "[]" if not value else repr(sorted(value))
    if isinstance(value, dict):
        return "{}" if not value else repr(value)
    return str(value)


def test_keys_table_matches_the_mode_record() -> None:
    """Every Mode field is documented with its real default; nothing documented is not a key."""
    keys = _documented_keys()
    loader_keys = {"order", "description", "source", "inherits"}   # read by the loader, not Mode fields
    fields = {f.name: f for f in dataclasses.fields(Mode)}
    assert set(keys) == set(fields) | loader_keys
    for name, f in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            assert keys[name] == "required", name
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert keys[name] == _as_documented(default), name
