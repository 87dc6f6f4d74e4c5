"""README.md's figure tables are what the shipped traces give (pipeline/reports/readme_tables.py)."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from pipeline.reports import readme_tables as rt


def test_readme_tables_are_the_shipped_traces(shipped_results: Path) -> None:
    text = rt.README.read_text(encoding="utf-8")
    new = rt.rewrite(text, rt.load_run(shipped_results))
    diff = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md", "regenerated", n=0))
    assert new == text, ("README.md's generated tables differ from the shipped traces; run `pipeline replay traces/ "
                         f"--modes all --out results && python -m pipeline.reports.readme_tables results`\n{diff}")


def test_the_default_profile_is_the_fit_the_readme_quotes(shipped_results: Path) -> None:
    block = rt.fit_check(rt.load_run(shipped_results))
    same, total = map(int, re.search(r"(\d+) of its (\d+) cells print as in the table", block).groups())
    assert same == total, block


def test_a_readme_without_a_block_is_refused(shipped_results: Path) -> None:
    text = rt.README.read_text(encoding="utf-8").replace("<!-- BEGIN generated: seed-gain -->", "")
    with pytest.raises(rt.MissingBlock, match="seed-gain"):
        rt.rewrite(text, rt.load_run(shipped_results))


def test_check_reports_a_stale_table(shipped_results: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(rt.README.read_text(encoding="utf-8").replace("| 0.183 / 0.25 (−27%) |", "| 0.2 / 0.25 (−20%) |"),
                      encoding="utf-8")
    assert rt.main([str(shipped_results), "--readme", str(readme), "--check"]) == 1
    assert rt.main([str(shipped_results), "--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == rt.README.read_text(encoding="utf-8")
