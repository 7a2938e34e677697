"""The rendered pages of a run, opened in Chromium from file:// with the network cut off.

Any request that is not a local file or a data: URI is aborted and recorded, so a page
that would fetch a script, font or image from the web fails here even when the machine
happens to be online. :func:`check_run_pages` takes any run folder; the fixture gives
it a freshly rendered one.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Route

pytestmark = pytest.mark.browser

LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")
_SVG_STATS = """() => Array.from(document.querySelectorAll('svg')).map(svg => {
    const box = svg.getBoundingClientRect();
    return {width: box.width, height: box.height,
            marks: svg.querySelectorAll('path, rect, line, circle, polygon, polyline').length,
            texts: Array.from(svg.querySelectorAll('text')).map(t => t.textContent)};
})"""
_PIXEL_STATS = """async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const colours = new Set();
    let nonWhite = 0, sampled = 0;
    for (let i = 0; i < data.length; i += 4 * 7) {
        sampled++;
        colours.add((data[i] >> 3) << 10 | (data[i + 1] >> 3) << 5 | (data[i + 2] >> 3));
        if (data[i] < 240 || data[i + 1] < 240 || data[i + 2] < 240) nonWhite++;
    }
    return {width: canvas.width, height: canvas.height, colours: colours.size, nonWhite: nonWhite / sampled};
}"""


@dataclasses.dataclass
class PageReport:
    """What one page did in the browser."""

    path: Path
    blocked: list[str]
    console_errors: list[str]
    page_errors: list[str]
    svgs: list[dict]
    text: str
    local_links: list[str]
    screenshot: Path
    pixels: dict


def _offline_context(browser: Browser, blocked: list[str]) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route(route: Route) -> None:
        if route.request.url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", route)
    return context


def open_page(browser: Browser, path: Path, screenshot: Path) -> PageReport:
    """Load one HTML file offline, collect what it drew and said, screenshot it."""
    blocked: list[str] = []
    console_errors: list[str] = []
    page_errors: list[str] = []
    context = _offline_context(browser, blocked)
    try:
        page = context.new_page()
        page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.goto(path.as_uri(), wait_until="load")
        svgs = page.evaluate(_SVG_STATS)
        text = page.inner_text("body")
        hrefs = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
        page.screenshot(path=str(screenshot), full_page=True)
        data_url = "data:image/png;base64," + base64.b64encode(screenshot.read_bytes()).decode()
        pixels = page.evaluate(_PIXEL_STATS, data_url)
    finally:
        context.close()
    local = [unquote(urlsplit(h).path) for h in hrefs if h.startswith("file:")]
    return PageReport(path, blocked, console_errors, page_errors, svgs, text, local, screenshot, pixels)


def check_run_pages(browser: Browser, run_dir: Path, shots: Path) -> dict[str, PageReport]:
    """Open index.html and every leadership page of ``run_dir``; assert each renders offline.

    Returns the reports keyed by path relative to the run folder, for further checks.
    """
    pages = [run_dir / "index.html", *sorted((run_dir / "html" / "leadership").glob("*.html"))]
    assert (run_dir / "index.html").is_file(), f"{run_dir} has no index.html"
    assert len(pages) > 1, f"{run_dir} has no leadership pages"
    reports: dict[str, PageReport] = {}
    for path in pages:
        rel = path.relative_to(run_dir).as_posix()
        report = open_page(browser, path, shots / (rel.replace("/", "__") + ".png"))
        assert report.blocked == [], f"{rel} tried to reach the network: {report.blocked}"
        assert report.console_errors == [], f"{rel} logged errors: {report.console_errors}"
        assert report.page_errors == [], f"{rel} raised: {report.page_errors}"
        assert "Error loading script" not in report.text, rel
        missing = [link for link in report.local_links if not Path(link).exists()]
        assert missing == [], f"{rel} links to files that do not exist: {missing}"
        assert report.screenshot.stat().st_size > 10_000, f"{rel}: screenshot suspiciously small"
        assert report.pixels["colours"] >= 8, f"{rel}: screenshot is nearly uniform: {report.pixels}"
        assert report.pixels["nonWhite"] > 0.01, f"{rel}: screenshot is nearly blank: {report.pixels}"
        for svg in report.svgs:
            if svg["width"] >= 200:  # a chart, not an icon
                assert svg["height"] >= 100 and svg["marks"] >= 5, f"{rel}: chart drawn without marks: {svg}"
        reports[rel] = report
    return reports


def _charts(report: PageReport) -> list[dict]:
    return [svg for svg in report.svgs if svg["width"] >= 200 and svg["marks"] >= 5]


def test_index_and_leadership_pages_render_offline(chromium: Browser, rendered_run: Path,
                                                    tmp_path: Path) -> None:
    reports = check_run_pages(chromium, rendered_run, tmp_path)
    leadership = [r for rel, r in reports.items() if rel.startswith("html/leadership/")]
    assert sum(len(_charts(r)) for r in leadership) >= 1, "no leadership page shows a chart"
    index = reports["index.html"]
    assert index.text.lstrip().upper().startswith("READINESS GRADE"), index.text[:200]
    assert any(link.endswith(".html") and "/html/leadership/" in link for link in index.local_links)


def test_sample_run_shows_every_chart_with_its_labels(chromium: Browser, rendered_run: Path,
                                                       tmp_path: Path) -> None:
    if not (rendered_run / "html" / "leadership" / "11_readiness_score.html").is_file():
        pytest.skip("READINESS_BROWSER_RUN_DIR points at a run without the readiness score page")
    report = open_page(chromium, rendered_run / "html" / "leadership" / "11_readiness_score.html",
                       tmp_path / "score.png")
    charts = _charts(report)
    assert len(charts) == 3, report.svgs
    radar, heatmap, latency = charts
    assert any(t.startswith("reliability (4") for t in radar["texts"]), radar["texts"]
    assert "12.0 / 15" in heatmap["texts"], heatmap["texts"]
    assert "A7 / (n=40, no interval)" in latency["texts"], latency["texts"]
    assert "run_dir" not in report.text  # the parameters cell stays out of the leadership page
    assert report.blocked == [] and report.console_errors == []


@pytest.mark.notebooks
def test_real_run_renders_offline_in_chromium(chromium: Browser, suite_run, tmp_path: Path) -> None:
    """The report of an actual suite run: index and every leadership page, network blocked."""
    shots = Path(os.environ.get("READINESS_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    reports = check_run_pages(chromium, suite_run.run_dir, shots)
    index = reports["index.html"]
    assert index.text.lstrip().upper().startswith("READINESS GRADE")
    assert (shots / "index.html.png").stat().st_size > 10_000
    assert len(_charts(reports["html/leadership/11_readiness_score.html"])) >= 2  # radar and heatmap
    assert len(_charts(reports["html/leadership/01_smoke.html"])) >= 1  # latency per app
