"""Fixtures for the browser tests: the system Chromium and a run folder to open in it.

``rendered_run`` builds a small run folder with the real chart, notebook and index
renderers (an executed notebook with three charts, its two HTML pages, saved charts, a
report and ``index.html``). Set ``READINESS_BROWSER_RUN_DIR`` to check an existing run
folder instead, e.g. the output of a full run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from playwright.sync_api import Browser

from readiness.core.runfolder import RunFolder
from readiness.probe.browser import BrowserUnavailable, chromium_sync
from readiness.report.render import render_index, render_notebook

PHASE = "11_readiness_score"

_SETUP = """\
import math
import pandas as pd
from readiness.report.charts import enable_offline_rendering, heatmap_chart, latency_chart, radar_chart, save_chart
enable_offline_rendering()
categories = [
    {"key": key, "score": score, "weight": weight, "weighted": score / 5 * weight}
    for key, score, weight in [("reliability", 4, 15), ("performance", 3, 10), ("security", 2, 15),
                               ("observability", 5, 10), ("resiliency", 1, 10), ("cost_capacity", 3, 5)]
]
latency = pd.DataFrame({
    "label": ["A1 /health", "A5 /checkout", "A7 /"], "p95_ms": [41.0, 133.0, 95.0],
    "ci_low_ms": [36.0, 118.0, math.nan], "ci_high_ms": [47.0, 161.0, math.nan],
    "threshold_ms": [120.0, 120.0, 120.0], "n": [200, 200, 40],
    "status": ["PASS", "INCONCLUSIVE", "INCONCLUSIVE"],
})
"""



@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """The Debian Chromium (never a downloaded browser), launched once per module.

    Module scope on purpose: Playwright's sync API keeps an event loop running in the main
    thread while it is open, which would break later tests that start their own loop.
    """
    try:
        with chromium_sync() as browser:  # the suite's one way to start Chromium (readiness.probe.browser)
            yield browser
    except BrowserUnavailable as exc:
        pytest.fail(str(exc))


def _chart_notebook(run_dir: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Readiness score\nThe radar and heatmap summarise the "
                                      "eleven categories; the latency chart shows P95 per endpoint."),
        nbformat.v4.new_code_cell(f"run_dir = {str(run_dir)!r}  # the run folder",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(_SETUP),
        nbformat.v4.new_code_cell("from readiness.core.runfolder import RunFolder\n"
                                  "run = RunFolder.open(run_dir)\n"
                                  "saved = save_chart(run, 'readiness_radar', radar_chart(categories))"),
        nbformat.v4.new_code_cell("radar_chart(categories)"),
        nbformat.v4.new_code_cell("heatmap_chart(categories)"),
        nbformat.v4.new_markdown_cell("## Latency\nFaded diamonds have no interval yet."),
        nbformat.v4.new_code_cell("latency_chart(latency)"),
    ]
    return nb


def build_sample_run(root: Path) -> Path:
    """A run folder produced by the real renderers, with one phase carrying charts."""
    (root / "run.json").write_text('{"status": "running", "phases": {}}\n')  # what RunFolder.create starts with
    run = RunFolder.open(root)
    nb = _chart_notebook(root)
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    run.write_text(f"notebooks/{PHASE}.ipynb", nbformat.writes(nb), producer="test")
    html, leadership = render_notebook(run.path(f"notebooks/{PHASE}.ipynb"), run, phase=PHASE)
    run.write_text("reports/readiness_rubric.md", "# Rubric\n", producer="test")
    run.write_json("evidence/A1_health.json", {"status": 200}, producer="test")
    run.write_json("readiness_score.json", {"grade": "Yellow", "overall_score": 78.4}, producer="test")
    render_index(
        run, title="Readiness audit: sandbox",
        phases=[
            {"phase": "01_smoke", "status": "ERROR", "elapsed_s": 3.2, "html": None, "leadership_html": None,
             "notebook": None, "error": "ConnectError: A3 did not answer"},
            {"phase": PHASE, "status": "OK", "elapsed_s": 4.8, "html": html, "leadership_html": leadership,
             "notebook": f"notebooks/{PHASE}.ipynb", "error": None},
        ],
        score={"grade": "Yellow", "overall_score": 78.4, "blockers": ["resiliency scored 1"]},
        profile_note="Quick profile: windows compressed to seconds",
        checks_summary={PHASE: {"PASS": 5, "FAIL": 1, "INCONCLUSIVE": 2}},
    )
    run.write_manifest()  # as the run's finalize step does, after the pages
    return root


@pytest.fixture(scope="session")
def rendered_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder the browser tests open (see module docstring)."""
    existing = os.environ.get("READINESS_BROWSER_RUN_DIR")
    if existing:
        return Path(existing)
    return build_sample_run(tmp_path_factory.mktemp("run"))
