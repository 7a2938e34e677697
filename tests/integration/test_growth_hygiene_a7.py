"""Growth hygiene against a running marketing app (A7 alone, port 30037): every rule holds on
its honest pages, and the pieces behind the rules (robots.txt, sharing image, analytics
collector, noindex off the sitemap) behave as the checker assumes."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phasekit.context import Phase
from readiness.phases.activation import growth_hygiene

pytestmark = pytest.mark.integration

PORT_BASE = 30030  # A7 = 30037; nothing else of the sandbox runs


@pytest.fixture(scope="module")
def a7(tmp_path_factory: pytest.TempPathFactory, params_factory, start_apps) -> Iterator[tuple[Path, str]]:
    from sandbox import launcher

    folder = tmp_path_factory.mktemp("growth")
    params_file = params_factory(folder, port_base=PORT_BASE)
    with start_apps([launcher.AppSpec("A7", PORT_BASE + 7)], folder / "a7-state") as state:
        yield params_file, state.apps["A7"]


def test_every_page_passes_every_rule(a7: tuple[Path, str], tmp_path: Path) -> None:
    params_file, base = a7
    params = load_params(params_file)
    run = RunFolder.create(tmp_path, params, params_file, mode="interactive")
    phase = Phase(name="07_activation_growth", params=params, params_file=params_file, run=run)
    frame = growth_hygiene.audit_pages(phase)
    assert list(frame.index) == ["/", "/about", "/courses", "/for-providers", "/pricing", "/get-started"]
    assert (frame[list(growth_hygiene.PAGE_RULES)] == "PASS").all().all(), frame
    checks = {c.id: c for c in run.read_checks("07_activation_growth")}
    assert {k: c.status for k, c in checks.items()} == dict.fromkeys(
        ["growth.sitemap", "growth.sitemap_urls", "growth.robots", "growth.canonical", "growth.noindex",
         "growth.open_graph", "growth.analytics"], Status.PASS), {k: c.detail for k, c in checks.items()}
    assert checks["growth.canonical"].n == 6 and checks["growth.sitemap_urls"].n == 5
    evidence = json.loads(run.path(growth_hygiene.EVIDENCE).read_text())
    assert evidence["assets"] == {f"{base}/assets/analytics.js": "200 text/javascript",
                                  f"{base}/assets/og-image.png": "200 image/png"}
    report = growth_hygiene.write_checklist(phase).data
    assert run.path(growth_hygiene.CHECKLIST).read_text() == report
    assert f"## {base}/get-started" in report and f"| canonical | PASS | {base}/get-started |" in report
    assert "| security headers (info) | grade F" in report  # the sandbox sends none: shown, judged in phase 10


def test_what_the_rules_rest_on(a7: tuple[Path, str]) -> None:
    _, base = a7
    with httpx.Client(base_url=base, timeout=5) as http:
        robots = http.get("/robots.txt")
        assert robots.status_code == 200 and f"Sitemap: {base}/sitemap.xml" in robots.text
        image = http.get("/assets/og-image.png")
        assert image.headers["content-type"] == "image/png" and image.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", image.content[16:24]) == (1200, 630)  # IHDR width, height
        off_sitemap = http.get("/thank-you").text
        assert '<meta name="robots" content="noindex">' in off_sitemap
        assert "noindex" not in http.get("/pricing").text
        beacon = {"site": "a7-marketing", "page": "/pricing", "referrer": None}
        assert http.post("/api/analytics/pageviews", json=beacon).status_code == 428
        contract = {"X-Idempotency-Key": "k-1", "X-Trace-Id": "t-1"}
        accepted = http.post("/api/analytics/pageviews", json=beacon, headers=contract)
        assert accepted.status_code == 202 and accepted.json() == {"accepted": True}
        refused = http.post("/api/analytics/pageviews", json={"page": "pricing"}, headers=contract)
        assert refused.status_code == 422
        assert refused.json() == {"error": "page must be a path starting with '/' of at most 512 characters"}
