"""A real browser on a page: headless Chromium reading it from a local HTTP server, as a
user's browser would, with every console error, page error and request recorded (so a test
can say the page drew without errors and fetched nothing from off the machine)."""
from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian package `chromium`; .ci/run installs it)")


@dataclass
class Opened:
    """The loaded page, its URL, and what the browser reported while it loaded and ran."""
    page: Any
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


ALL_PLOTS_DRAWN = "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))"


@contextmanager
def opened(page_path: Path, viewport: dict[str, int] | None = None, timeout_ms: int = 60_000) -> Iterator[Opened]:
    """page_path served from its folder and loaded in headless Chromium, every plotly figure
    on it drawn (within timeout_ms); closed after the block."""
    from playwright.sync_api import sync_playwright

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(page_path.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
            page = browser.new_page(**({"viewport": viewport} if viewport else {}))
            got = Opened(page, f"http://127.0.0.1:{server.server_address[1]}/{page_path.name}")
            page.on("console", lambda m: got.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: got.errors.append(str(e)))
            page.on("request", lambda r: got.requests.append(r.url))
            page.goto(got.url, wait_until="load")
            page.wait_for_function(ALL_PLOTS_DRAWN, timeout=timeout_ms)
            yield got
            browser.close()
    finally:
        server.shutdown()
