"""`pipeline COMMAND --help` reads whole at 120 columns: defaults as short names, brackets
kept, the shipped modes listed, flags without a `<bool>` type."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import CONFIGS
from pipeline.config.modes import load_modes
from pipeline.generate.registry import GENERATORS


def command_paths(group=None, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command of `pipeline`, groups included, as its words (`("generate", "idle")`)."""
    group = group or typer.main.get_command(app)
    paths = [prefix]
    for name, command in getattr(group, "commands", {}).items():
        paths += command_paths(command, (*prefix, name)) if hasattr(command, "commands") else [(*prefix, name)]
    return paths


def help_text(*words: str) -> str:
    """The help of `pipeline WORDS`, its panels' borders and line breaks folded into spaces."""
    r = CliRunner().invoke(app, [*words, "--help"], env={"COLUMNS": "120"})
    assert r.exit_code == 0, r.output
    return re.sub(r"[│╭╮╰╯─\s]+", " ", r.output)


@pytest.mark.parametrize("words", command_paths(), ids=lambda w: " ".join(w) or "pipeline")
def test_help_has_no_bool_types_nor_cut_paths(words: tuple[str, ...]) -> None:
    text = help_text(*words)
    assert "<bool>" not in text and "…/" not in text and str(CONFIGS.parent) not in text


@pytest.mark.parametrize("command, default", [
    ("replay", "configs/hardware/core2-2007-fitted.toml"), ("sweep", "configs/hardware/core2-2007-fitted.toml"),
    ("calibrate", "configs/hardware/core2-2007.toml"), ("host-costs", "configs/hardware/modern-2020s.toml"),
    ("report", "configs/reference/kvm-paravirt-2007.toml"),
])
def test_default_profiles_read_as_repository_paths(command: str, default: str) -> None:
    assert f"[default: ({default})]" in help_text(command)


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.name)
def test_generate_help_keeps_the_native_bracket(generator) -> None:
    text = help_text("generate", generator.name)
    assert "whose [native] table" in text and "[default: (configs/hardware/core2-2007.toml)]" in text


@pytest.mark.parametrize("command", ["replay", "sweep", "compare"])
def test_mode_options_list_every_shipped_mode(command: str) -> None:
    text = help_text(command)
    start = text.index("shipped:")
    listed = text[start:text.index(".", start)]
    assert [m for m in load_modes() if f" {m}," not in listed + ","] == []   # the last one ends the list


def test_flags_show_their_switches() -> None:
    text = help_text("import")
    assert "--x2apic --xapic The guest's APIC mode" in text and "--strict A malformed line" in text


HEAVY = ("dask", "distributed", "numba", "polars", "scipy", "pyarrow", "numpy")


@pytest.mark.parametrize("args", [[], ["--help"], ["replay", "--help"], ["sweep", "--help"], ["generate", "--help"],
                                  ["import", "--help"]], ids=" ".join)
def test_the_help_imports_no_dask_numba_polars_nor_pyarrow(args: list[str]) -> None:
    """The command line imports what a command needs in its body: the help starts without
    Dask, numba, polars, scipy, pyarrow or numpy, in a fraction of a second instead of more
    than one."""
    script = ("import sys\nfrom pipeline.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    imported = r.stdout.splitlines()[-1].split() if r.stdout.strip() else []
    assert imported == [], r.stderr
