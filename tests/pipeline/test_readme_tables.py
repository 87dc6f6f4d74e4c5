"""README.md's and docs/calibration.md's figure tables are what the shipped traces give
(pipeline/reports/readme_tables.py)."""
from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path

import pytest

from pipeline.reports import readme_tables as rt


@pytest.fixture(scope="module")
def run(shipped_results: Path) -> rt.Run:
    return rt.load_run(shipped_results)


@pytest.mark.parametrize("document", rt.DOCUMENTS, ids=lambda d: str(d.path))
def test_generated_tables_are_the_shipped_traces(run: rt.Run, document: rt.Document) -> None:
    text = (rt.ROOT / document.path).read_text(encoding="utf-8")
    new = rt.rewrite(text, run, document)
    diff = "".join(difflib.unified_diff(text.splitlines(True), new.splitlines(True), str(document.path), "regenerated", n=0))
    assert new == text, (f"{document.path}: generated tables differ from the shipped traces; run `pipeline replay "
                         f"traces/ --modes all --out results && python -m pipeline.reports.readme_tables results`\n{diff}")


def test_the_default_profile_is_the_fit_the_readme_quotes(run: rt.Run) -> None:
    block = rt.fit_check(run)
    same, total = map(int, re.search(r"(\d+) of its (\d+) cells print as in the table", block).groups())
    assert same == total, block


def test_a_document_without_a_block_is_refused(run: rt.Run) -> None:
    readme = rt.DOCUMENTS[0]
    text = (rt.ROOT / readme.path).read_text(encoding="utf-8").replace("<!-- BEGIN generated: seed-gain -->", "")
    with pytest.raises(rt.MissingBlock, match="seed-gain"):
        rt.rewrite(text, run, readme)


def test_check_reports_a_stale_table_and_the_command_mends_it(shipped_results: Path, tmp_path: Path) -> None:
    for d in rt.DOCUMENTS:
        (tmp_path / d.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(rt.ROOT / d.path, tmp_path / d.path)
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace("| 0.183 / 0.25 (−27%) |", "| 0.2 / 0.25 (−20%) |"),
                      encoding="utf-8")
    assert rt.main([str(shipped_results), "--root", str(tmp_path), "--check"]) == 1
    assert rt.main([str(shipped_results), "--root", str(tmp_path)]) == 0
    assert readme.read_text(encoding="utf-8") == (rt.ROOT / "README.md").read_text(encoding="utf-8")
    assert rt.main([str(shipped_results), "--root", str(tmp_path), "--check"]) == 0
