"""`pipeline report --html`: the page's numbers, and the page itself in a real headless Chromium
served from 127.0.0.1 (renders, no console error, nothing fetched from elsewhere, every mode drawn)."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.modes import load_modes
from pipeline.reports import html_page
from pipeline.run.results import read_summary
from tests.pipeline.browser import needs_chromium, opened
from tests.pipeline.conftest import QUICK_TRACE
from tests.pipeline.tracefiles import SEED_MODES

runner = CliRunner()
MODE_COLOURS = {"native": (0x1F, 0x77, 0xB4), "qemu": (0xFF, 0x7F, 0x0E), "kvm-upstream": (0x2C, 0xA0, 0x2C),
                "kvm-trunk": (0xD6, 0x27, 0x28), "kvm-paravirt": (0x94, 0x67, 0xBD)}  # plotly D3, in mode order


@pytest.fixture(scope="module")
def full_report(quick_results: Path, tmp_path_factory) -> tuple[Path, Path]:
    """(results with their replay's attribution, report.html) with a real sweep of the CR3 cache size."""
    base = tmp_path_factory.mktemp("html")
    results = base / "results"
    shutil.copytree(quick_results, results)
    sweep = base / "sweep"
    r = runner.invoke(app, ["sweep", str(QUICK_TRACE), "--set", "cr3_cache_size=0,2", "--out", str(sweep), "--workers", "1"])
    assert r.exit_code == 0, r.output
    page = base / "site" / "report.html"
    r = runner.invoke(app, ["report", str(results), "--html", str(page), "--sweep", str(sweep), "--top", "3"])
    assert r.exit_code == 0, r.output
    return results, page


def text_of(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def test_page_is_self_contained_and_states_profile_and_numbers(full_report: tuple[Path, Path]) -> None:
    results, page = full_report
    doc = text_of(page)
    assert not re.search(r"<script[^>]*\bsrc=", doc) and "<iframe" not in doc
    assert re.findall(r"<link[^>]*>", doc) == ['<link rel="icon" href="data:,">']  # no favicon request either
    summary = {r["mode"]: r for r in pl.read_parquet(results / "summary.parquet").iter_rows(named=True)}
    assert "Cost profile: <b>core2-2007-fitted</b>" in doc
    for mode, row in summary.items():
        assert f"<th>{mode}</th>" in doc
        ratio = row["ns_per_op"] / summary["native"]["ns_per_op"]
        shown = re.search(rf"<td>{row['ns_per_op'] / 1e3:.3g} \((\d+\.(\d+))×\)</td>", doc)
        assert shown and abs(float(shown[1]) - ratio) <= 0.5 * 10 ** -len(shown[2]), mode
    # Calibration cell lat-ctx-2 / kvm-trunk: the seed measured 6.36 µs; modelled = the summary's.
    modelled = summary["kvm-trunk"]["ns_per_op"] / 1e3
    error = 100 * (modelled - 6.36) / 6.36
    cells = f"<td>lat-ctx-2</td><td>kvm-trunk</td><td>µs/op</td><td>6.36</td><td>{modelled:.4g}</td>"
    assert re.search(re.escape(cells) + r'<td class="\w+">' + re.escape(f"{error:+.1f}%</td><td>fit</td>"), doc)
    assert "Sweep of kvm-paravirt over cr3_cache_size" in doc
    assert "top cost sources by address space" in doc and "attribution not available" not in doc
    assert "does not add up" not in doc  # the replay's sources sum to its counts


def test_top_sources_in_the_page_match_the_terminal(full_report: tuple[Path, Path]) -> None:
    results, page = full_report
    r = runner.invoke(app, ["report", str(results), "--top", "3"])
    assert r.exit_code == 0, r.output
    # The replay charges CR3 exits to the CR3 writes: the same cells in both renderings.
    cells = set(re.findall(r"cr3_write  [0-9.]+ \(\d+%\)", r.output))
    assert cells and all(c in text_of(page) for c in cells)


def test_page_without_attribution_and_with_a_calibration_file(quick_results: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(quick_results, bare, ignore=shutil.ignore_patterns("attribution"))
    cells = tmp_path / "myfit.cells.parquet"
    pl.DataFrame({"workload": ["lat-ctx-2"], "mode": ["kvm-trunk"], "unit": ["us/op"], "measured": [6.36],
                  "predicted": [6.0], "error_pct": [100 * (6.0 - 6.36) / 6.36], "role": ["held-out"]}).write_parquet(cells)
    fitted = (QUICK_TRACE.parents[2] / "configs" / "hardware" / "core2-2007.toml").read_text()
    (tmp_path / "myfit.toml").write_text(fitted.replace('name = "core2-2007"', 'name = "myfit-profile"', 1))
    page = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(bare), "--html", str(page), "--calibration", str(cells)])
    assert r.exit_code == 0, r.output
    doc = text_of(page)
    assert "attribution not available" in doc and "attribution does not exist" in doc
    assert "<td>6.36</td><td>6</td><td class=\"good\">-5.7%</td><td>held-out</td>" in doc
    assert "cost profile myfit-profile" in doc
    r = runner.invoke(app, ["report", str(bare), "--html", str(page), "--sweep", str(tmp_path)])
    assert r.exit_code == 2 and "sweep.parquet" in r.output


def test_the_page_is_its_registries(quick_results: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A function added to SECTIONS or WORKLOAD_FIGURES is drawn where its place in the list says."""
    def marker(page: html_page._Page, inputs: html_page.ReportInputs, workload: html_page.Workload) -> str:
        return f'<p class="marker">{workload.trace}: {len(workload.rows)} modes</p>'

    def appendix(page: html_page._Page, inputs: html_page.ReportInputs):
        yield html_page.Section("appendix", "Appendix", f"<p>{inputs.name}</p>")

    monkeypatch.setattr(html_page, "WORKLOAD_FIGURES", (marker, *html_page.WORKLOAD_FIGURES))
    monkeypatch.setattr(html_page, "SECTIONS", (*html_page.SECTIONS, appendix))
    doc = html_page.render(html_page.ReportInputs("mine", read_summary(quick_results)))
    anchors = re.findall(r'<section id="([^"]+)">', doc)
    assert anchors == ["overview", "trace-lat-ctx-2-small", "calibration", "appendix"]
    workload = doc.split('<section id="trace-lat-ctx-2-small">')[1].split("</section>")[0]
    shipped = len(load_modes())   # quick_results replays every shipped mode
    assert workload.index(f'<p class="marker">lat-ctx-2-small: {shipped} modes</p>') < workload.index('<div class="figure">')
    assert '<a href="#appendix">Appendix</a>' in doc and "<p>mine</p></section>" in doc


@needs_chromium
def test_report_renders_in_headless_chromium(full_report: tuple[Path, Path]) -> None:
    from PIL import Image

    _, page_path = full_report
    with opened(page_path, viewport={"width": 1280, "height": 900}) as got:
        page = got.page
        figures = page.evaluate("""[...document.querySelectorAll('.plotly-graph-div')].map(d => ({
            title: d.layout.title.text,
            axes: Object.keys(d.layout).filter(k => /^[xy]axis\\d*$/.test(k))
                        .map(k => (d.layout[k].title || {}).text || '')}))""")
        svg_text = set(page.eval_on_selector_all(".plotly-graph-div text", "els => els.map(e => e.textContent)"))
        shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
        first = Image.open(io.BytesIO(page.locator("#fig2").screenshot())).convert("RGB")
    errors, requests, url = got.errors, got.requests, got.url
    assert errors == []
    assert requests and all(r.startswith(url) for r in requests), requests  # nothing from off the machine
    assert len(figures) == 7  # per-op, time, categories, attribution by kind and asid (no I/O here), sweep, calibration
    for f in figures:
        assert "profile" in f["title"] and "modelled" in f["title"].lower(), f["title"]
        assert f["axes"] and all(f["axes"]), f
    assert all(m in svg_text for m in SEED_MODES), set(SEED_MODES) - svg_text
    assert len(shot.getcolors(maxcolors=1 << 20)) > 200  # text, tables, bars: not a blank page
    drawn = {c for _, c in first.getcolors(maxcolors=1 << 20)}
    assert all(MODE_COLOURS[m] in drawn for m in SEED_MODES)  # each mode's bar is on screen in its colour


@pytest.fixture(scope="module")
def shipped_report(shipped_results: Path, tmp_path_factory) -> Path:
    """The report of the README's run: every op unit, an idle guest, I/O and many address spaces."""
    page = tmp_path_factory.mktemp("shipped-html") / "report.html"
    r = runner.invoke(app, ["report", str(shipped_results), "--html", str(page), "--top", "5"])
    assert r.exit_code == 0, r.output
    return page


def test_every_event_kind_has_its_own_colour() -> None:
    from replay.kernel import BUSY_KIND
    from replay.kinds import Kind

    kinds = [k.name.lower() for k in Kind] + [BUSY_KIND]
    assert set(html_page.KIND_COLOURS) == set(kinds)
    assert len(set(html_page.KIND_COLOURS.values())) == len(kinds)


DECADE = re.compile(r"0\.0*1|10*|10*[kMGT]")   # how plotly labels 10^n


@needs_chromium
def test_log_axes_kind_colours_and_per_op_units_as_drawn(shipped_report: Path, shipped_results: Path) -> None:
    with opened(shipped_report, viewport={"width": 1280, "height": 900}) as got:
        page = got.page
        figures = page.evaluate("""[...document.querySelectorAll('.plotly-graph-div')].map(d => ({
            title: d.layout.title.text,
            logTicks: Object.keys(d.layout).filter(k => /^yaxis\\d*$/.test(k) && d.layout[k].type === 'log')
                .map(k => [...d.querySelectorAll('g.' + k.replace('axis', '') + 'tick text')].map(e => e.textContent)),
            axes: Object.keys(d.layout).filter(k => /^yaxis\\d*$/.test(k)).sort()
                .map(k => [d.layout[k].title.text, d.layout[k].anchor || 'x']),
            bars: d.data.map(t => ({name: t.name, colour: t.marker.color, x: t.x, xaxis: t.xaxis || 'x'}))}))""")
    assert got.errors == []
    log_ticks = [ticks for f in figures for ticks in f["logTicks"]]
    assert log_ticks and all(ticks for ticks in log_ticks)   # every log axis has a labelled tick
    assert all(DECADE.fullmatch(t) for ticks in log_ticks for t in ticks), log_ticks

    by_kind = [b for f in figures if "by event kind" in f["title"] for b in f["bars"] if b["name"] != "other"]
    colours = {b["name"]: b["colour"] for b in by_kind}
    assert {"touch", "io"} <= set(colours)
    assert len(set(colours.values())) == len(colours), colours           # one colour per kind ...
    assert all(colours[b["name"]] == b["colour"] for b in by_kind)       # ... the same in every chart

    per_op = next(f for f in figures if f["title"].startswith("Per-op latency"))
    summary = read_summary(shipped_results).filter(pl.col("status") == "ok")
    units = dict(summary.select("trace", "op_unit").unique().rows())
    titles = {anchor: title for title, anchor in per_op["axes"]}
    for bar in per_op["bars"]:     # each panel's traces are of the op unit its axis names
        assert all(titles[bar["xaxis"]] == f"µs per {units[t]} (log scale)" for t in bar["x"]), (bar, titles)
    assert sorted(titles.values()) == sorted(f"µs per {u} (log scale)" for u in set(units.values()))
