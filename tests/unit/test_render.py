"""Rendering: analyst and leadership pages of an executed notebook, the run index, and the
scan that keeps every page free of network loads."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from readiness.core.runfolder import RunFolder
from readiness.report.render import (
    OfflineRenderError,
    network_references,
    render_index,
    render_notebook,
    strip_xml_prolog,
    svg_is_inert,
)

CODE_MARKER = "rendered_code_marker = 41 + 1"
CHART_CELL = """\
import math
import pandas as pd
from readiness.report.charts import enable_offline_rendering, latency_chart
enable_offline_rendering()
latency_chart(pd.DataFrame({"label": ["A1 /health", "A2 /login"], "p95_ms": [41.0, 133.0],
    "ci_low_ms": [36.0, math.nan], "ci_high_ms": [47.0, math.nan], "threshold_ms": [120.0, 120.0],
    "n": [200, 30], "status": ["PASS", "INCONCLUSIVE"]}))
"""


class _Classes(HTMLParser):
    """CSS classes used by elements (the embedded stylesheet names classes too)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: set[str] = set()
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.update(*(value.split() for name, value in attrs if name == "class" and value))


def _new_run(root: Path) -> RunFolder:
    root.mkdir(parents=True, exist_ok=True)
    (root / "run.json").write_text("{}\n")
    return RunFolder.open(root)


def _notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = list(cells)
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A notebook with markdown, a parameters cell, code with printed output and a chart,
    executed once by a real python3 kernel."""
    nb = _notebook(
        nbformat.v4.new_markdown_cell("# Smoke phase\nRead the chart below; see [the docs](https://example.org)."),
        nbformat.v4.new_code_cell("run_dir = '/tmp/x'  # the run folder", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(f"{CODE_MARKER}\nprint('probe finished:', rendered_code_marker)"),
        nbformat.v4.new_code_cell("scratch = 1", metadata={"tags": ["analyst-only"]}),
        nbformat.v4.new_code_cell(CHART_CELL),
    )
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    path = tmp_path_factory.mktemp("nb") / "01_smoke.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def pages(executed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunFolder, str, str]:
    run = _new_run(tmp_path_factory.mktemp("run"))
    analyst, leadership = render_notebook(executed, run, phase="01_smoke")
    return run, run.path(analyst).read_text(), run.path(leadership).read_text()


def test_render_notebook_writes_both_pages(pages: tuple[RunFolder, str, str]) -> None:
    run, _, _ = pages
    assert (run.root / "html" / "01_smoke.html").is_file()
    assert (run.root / "html" / "leadership" / "01_smoke.html").is_file()


def test_analyst_page_keeps_code_and_prompts(pages: tuple[RunFolder, str, str]) -> None:
    _, analyst, _ = pages
    assert "rendered_code_marker" in analyst
    assert {"jp-InputArea-editor", "jp-InputPrompt"} <= _Classes(analyst).found
    assert "In\xa0[2]:" in analyst
    assert "probe finished: 42" in analyst
    assert "<title>01_smoke</title>" in analyst


def test_leadership_page_has_no_code_prompts_or_parameters(pages: tuple[RunFolder, str, str]) -> None:
    _, _, leadership = pages
    assert not {"jp-InputArea-editor", "jp-InputPrompt", "jp-OutputPrompt"} & _Classes(leadership).found
    assert not re.search(r"(In|Out)\xa0?\[\d", leadership)
    for absent in ("rendered_code_marker", "run_dir", "scratch", "enable_offline_rendering"):
        assert absent not in leadership, absent
    assert "probe finished: 42" in leadership
    assert "Smoke phase" in leadership
    assert "<title>01_smoke (leadership)</title>" in leadership


def test_both_pages_have_inline_svg_charts_and_no_network_loads(pages: tuple[RunFolder, str, str]) -> None:
    _, analyst, leadership = pages
    for html in (analyst, leadership):
        assert network_references(html) == []
        assert re.search(r'<svg[^>]*class="marks"', html)
        assert "A2 /login (n=30, no interval)" in html
        assert "<script" not in html
        assert "mathjax" not in html.lower() and "require.js" not in html
        assert '<a href="https://example.org">' in html  # a link the reader may follow is kept


def test_a_page_that_would_load_from_a_cdn_is_refused(tmp_path: Path) -> None:
    cell = nbformat.v4.new_code_cell("chart")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"text/html": '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>',
                              "text/plain": "chart"})]
    path = tmp_path / "02_latency_profile.ipynb"
    nbformat.write(_notebook(cell), path)
    run = _new_run(tmp_path / "run")
    with pytest.raises(OfflineRenderError, match=re.escape(
            "html/02_latency_profile.html would load 1 network resource(s), first: "
            "['<script src=https://cdn.jsdelivr.net/npm/vega@5>']")):
        render_notebook(path, run, phase="02_latency_profile")
    assert not (run.root / "html").exists()


def test_render_notebook_rejects_bad_phase_and_missing_file(tmp_path: Path) -> None:
    run = _new_run(tmp_path / "run")
    with pytest.raises(ValueError, match=re.escape("phase must be letters, digits, '_' or '-', got '../x'")):
        render_notebook(tmp_path / "x.ipynb", run, phase="../x")
    with pytest.raises(FileNotFoundError, match=re.escape(f"notebook not found: {tmp_path / 'x.ipynb'}")):
        render_notebook(tmp_path / "x.ipynb", run, phase="01_smoke")


@pytest.mark.parametrize(("html", "found"), [
    ('<script src="https://cdn.example/require.js"></script>', ["<script src=https://cdn.example/require.js>"]),
    ('<link rel="stylesheet" href="//fonts.example/css">', ["<link href=//fonts.example/css>"]),
    ('<img srcset="a.png 1x, http://x.example/b.png 2x">', ["<img srcset=http://x.example/b.png>"]),
    ('<div style="background: url(\'https://x.example/bg.png\')"></div>', ["<div style> https://x.example/bg.png"]),
    ("<style>@import 'https://x.example/a.css';</style>", ["<style> https://x.example/a.css"]),
    ('<script>import("https://esm.example/mermaid.mjs")</script>', ["<script> https://esm.example/mermaid.mjs"]),
    ('<svg><image href="https://x.example/i.png"/></svg>', ["<image href=https://x.example/i.png>"]),
    ('<iframe src="wss://x.example/live"></iframe>', ["<iframe src=wss://x.example/live>"]),
])
def test_network_references_finds_resource_loads(html: str, found: list[str]) -> None:
    assert network_references(html) == found


def test_network_references_ignores_links_namespaces_data_and_local_files() -> None:
    html = ('<a href="https://example.org">docs</a>'
            '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"></svg>'
            '<img src="data:image/png;base64,AAAA"><link rel="stylesheet" href="style.css">'
            '<script src="../local.js"></script><style>.x { background: url(data:image/svg+xml;base64,AA) }</style>')
    assert network_references(html) == []


def test_svg_helpers() -> None:
    assert svg_is_inert('<svg><text x="1">on time</text></svg>')
    for active in ('<svg><script>x()</script></svg>', '<svg onload="x()"></svg>',
                   '<svg><foreignObject></foreignObject></svg>', '<svg><a href="javascript:x()"/></svg>'):
        assert not svg_is_inert(active), active
    assert strip_xml_prolog('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg/>') == "<svg/>"


PHASES: list[dict[str, Any]] = [
    {"phase": "01_smoke", "status": "OK", "elapsed_s": 12.34, "html": "html/01_smoke.html",
     "leadership_html": "html/leadership/01_smoke.html", "notebook": "notebooks/01_smoke.ipynb", "error": None},
    {"phase": "09_resiliency", "status": "BLOCKED", "elapsed_s": None, "html": None, "leadership_html": None,
     "notebook": None, "error": "no approval for fault injection"},
]


def _index_run(tmp_path: Path) -> RunFolder:
    run = _new_run(tmp_path / "run")
    for rel in ("html/01_smoke.html", "html/leadership/01_smoke.html", "notebooks/01_smoke.ipynb",
                "reports/ecosystem_inventory.md", "evidence/A1_health.json", "charts/readiness radar.svg"):
        run.write_text(rel, "x")
    (run.root / "evidence" / ".A2_health.json.tmp").write_text("partial")
    return run


def _index(run: RunFolder, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "title": "Readiness <audit>", "phases": PHASES, "score": {"grade": "Yellow", "overall_score": 87.5},
        "profile_note": "Quick profile: windows compressed to seconds",
        "checks_summary": {"01_smoke": {"PASS": 8, "FAIL": 1, "INCONCLUSIVE": 0}}}
    args.update(overrides)
    assert render_index(run, **args) == "index.html"
    return run.path("index.html").read_text()


def test_index_puts_grade_first_then_phases_and_artifacts(tmp_path: Path) -> None:
    html = _index(_index_run(tmp_path))
    body = html[html.index("<body>"):]
    assert body.index("Yellow") < body.index("87.5 / 100") < body.index("<h1>") < body.index('id="phases"')
    assert "Readiness &lt;audit&gt;" in html  # autoescaped
    assert "Quick profile: windows compressed to seconds" in html
    assert '<span class="badge OK">OK</span>' in html and '<span class="badge BLOCKED">BLOCKED</span>' in html
    assert "12.3 s" in html and "no approval for fault injection" in html
    assert '<span class="badge PASS">PASS 8</span>' in html and "INCONCLUSIVE 0" not in html
    assert '<a href="html/leadership/01_smoke.html">leadership</a>' in html
    assert '<a href="notebooks/01_smoke.ipynb">notebook</a>' in html
    assert "no leadership" in html  # the blocked phase has no page, so no dead link
    for rel in ("reports/ecosystem_inventory.md", "evidence/A1_health.json", "run.json"):
        assert f'<a href="{rel}">{rel}</a>' in html
    assert '<a href="charts/readiness%20radar.svg">charts/readiness radar.svg</a>' in html
    assert ".tmp" not in html and "readiness_score.json" not in html
    assert '<a href="manifest.json">manifest.json</a> <span class="size">written when the run finalizes' in html
    assert network_references(html) == [] and "<script" not in html


def test_index_shows_the_approvals_log(tmp_path: Path) -> None:
    run = _index_run(tmp_path)
    assert "No restricted action was requested in this run." in _index(run)
    lines = [{"at": "2026-11-21T10:00:00Z", "kind": "refused", "action": "fault_injection_503",
              "phase": "09_resiliency", "apps": ["A3"], "approval_id": None, "reason": "refused: no approval"},
             {"at": "2026-11-21T10:01:00Z", "kind": "approved", "action": "production_write", "phase": "04_funnels",
              "apps": ["A1", "A2"], "approval_id": "HITL-PROD-1", "reason": "approved by HITL-PROD-1 (cto): qa"},
             {"at": "2026-11-21T10:02:00Z", "kind": "escalated", "reason": "Stripe <failure>"}]
    run.write_text("reports/hitl_approvals.log", "\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    html = _index(run)
    table = html[html.index('id="approvals"'):html.index("</table>", html.index('id="approvals"'))]
    assert table.count("<tr>") == 5  # header + 4 entries, the unreadable line included
    assert '<span class="badge BLOCKED">refused</span>' in table and "fault_injection_503" in table
    assert '<span class="badge PASS">approved</span>' in table and "HITL-PROD-1" in table and "A1, A2" in table
    assert '<span class="badge FAIL">escalated</span>' in table and "Stripe &lt;failure&gt;" in table
    assert "unreadable" in table and "not json" in table


def test_index_without_score_says_the_run_is_incomplete(tmp_path: Path) -> None:
    run = _index_run(tmp_path)
    run.write_json("readiness_score.json", {"grade": "Red"})
    html = _index(run, score=None)
    assert 'class="verdict none"' in html and "No score" in html and "run incomplete" in html
    assert '<a href="readiness_score.json">readiness_score.json</a>' in html


@pytest.mark.parametrize(("overrides", "message"), [
    ({"score": {"grade": "Blue", "overall_score": 1}}, "score: grade must be one of Green, Yellow, Red, got 'Blue'"),
    ({"score": {"overall_score": 1}}, "score: missing keys ['grade']"),
    ({"phases": [{"phase": "01_smoke", "status": "PASS"}]},
     "phase '01_smoke': status must be one of OK, ERROR, BLOCKED, STOPPED, SKIPPED, WAITING, got 'PASS'"),
    ({"phases": [{"status": "OK"}]}, "phase #0: missing keys ['phase']"),
])
def test_index_rejects_bad_input(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    run = _index_run(tmp_path)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        _index(run, **overrides)
    assert not (run.root / "index.html").exists()


def test_report_cells_never_carry_a_live_tag_from_a_target() -> None:
    from readiness.report.markdown import md_table

    table = md_table(["evidence"], [('<script src="/x.js"></script> <img src=y> <!-- c --> <= 150 ms',),
                                    ("<https://git.example.test/pull/1> a|b",)])
    assert "<script" not in table and "<img" not in table and "<!--" not in table
    assert "&lt;script src=\"/x.js\">&lt;/script>" in table and "<= 150 ms" in table
    assert "<https://git.example.test/pull/1> a\\|b" in table  # autolinks stay links
