"""The closing cells of notebook 11 on a small recorded run, against a running A8.

Only the command center runs (port 30108, its own state folder): the closing reads the
run folder and talks to A8 alone. The run holds a few checks of five phases, one logged
escalation and a couple of evidence files — enough for every section of the report, both
JSON documents, the cards and their dashboard check.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from readiness.core.approvals import log_event
from readiness.core.check import Check, Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phasekit.context import Phase
from readiness.phases.readiness_score import closing, ers
from readiness.phases.readiness_score.closing import validated
from sandbox import launcher

pytestmark = pytest.mark.integration

PORT_BASE = 30100
A8_PORT = PORT_BASE + 8


@pytest.fixture(scope="module")
def a8(tmp_path_factory: pytest.TempPathFactory, start_apps) -> Iterator[tuple[str, str]]:
    """A8 alone, with a telemetry key; yields (base URL, key)."""
    key = "closing-" + secrets.token_urlsafe(16)
    state_dir = tmp_path_factory.mktemp("closing-a8")
    with start_apps([launcher.AppSpec("A8", A8_PORT)], state_dir, env={"A8_TELEMETRY_KEY": key}):
        yield f"http://127.0.0.1:{A8_PORT}", key


def make_phase(folder: Path, params_factory: Any, **overrides: Any) -> Phase:
    params_file = params_factory(folder / "params", port_base=PORT_BASE, **overrides)
    params = load_params(params_file)
    run = RunFolder.create(folder / "outputs", params, params_file, mode="interactive")
    record(run)
    return Phase(name="11_readiness_score", params=params, params_file=params_file, run=run)


@pytest.fixture
def phase(a8: tuple[str, str], params_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Phase:
    monkeypatch.setenv("A8_TELEMETRY_KEY", a8[1])
    return make_phase(tmp_path, params_factory)


def external(data: dict[str, Any]) -> None:
    data["latency"]["compare_flags"] = []  # flags are the sandbox's own


PROD = {"environment": "prod", "target": "external", "ecosystem": "prod-check", "edit": external}
PRODUCTION_WRITE = {"id": "TEST-PROD-CARDS", "action": "production_write", "scope": "post the two cards",
                    "granted_by": "test", "environment": "prod", "apps": ["A8"]}


def chk(id: str, phase: str, status: Status = Status.PASS, **fields: Any) -> Check:
    return Check(id=id, phase=phase, title=id, status=status, **fields)


def record(run: RunFolder) -> None:
    run.write_text("reports/comparison.csv", "comparison,app,endpoint,q,n_before,n_after,before_ms,after_ms,diff_ms,"
                   "diff_low_ms,diff_high_ms,ratio,ratio_low,ratio_high,needs_n\n")
    run.write_json("evidence/b2c_oidc_probe.json", {"findings": []})
    latency = ("reports/comparison.csv",)
    run.record_checks("02_latency_profile", [
        chk("latency.A7.lead_capture.hot_path", "02_latency_profile", Status.FAIL, app="A7", observed=320.0,
            ci_low=300.0, ci_high=350.0, ci_level=0.95, threshold=150.0, comparator="<=", unit="ms", n=200, evidence=latency,
            tags=("performance",)),
        chk("latency.A7.lead_capture.a7_async_leads.improvement", "02_latency_profile", app="A7", observed=-310.0,
            ci_low=-340.0, ci_high=-290.0, threshold=0.0, comparator="<", unit="ms", n=200, evidence=latency)])
    run.record_checks("04_funnels", [
        chk("funnels.b2c.signup_rate", "04_funnels", observed=1.0, ci_low=0.9, ci_high=1.0, threshold=0.9,
            comparator=">=", unit="ratio", n=35, evidence=("evidence/b2c_oidc_probe.json",)),
        chk("funnels.b2c.oidc.jwks", "04_funnels", Status.FAIL, observed=1, threshold=0, unit="findings", n=1,
            evidence=("evidence/b2c_oidc_probe.json",))])
    run.record_checks("05_monetization", [
        chk("monetization.price", "05_monetization", Status.INCONCLUSIVE, detail="Stripe refused (escalated)"),
        chk("demo_mode.after.badge", "05_monetization", observed=True, threshold=True)])
    run.record_checks("06_telemetry_contract", [
        chk("telemetry.contract.identity_ok", "06_telemetry_contract", observed=0, threshold=0, n=12),
        chk("banners.after.ttl_expiry", "06_telemetry_contract", observed="expired", threshold="expired")])
    run.record_checks("10_security_ops", [
        chk("security.secrets.scan", "10_security_ops", observed=0, threshold=0, unit="findings", n=40),
        chk("ops.cost.A1.rss", "10_security_ops", Status.INCONCLUSIVE, threshold=50.0, unit="%", n=0)])
    log_event(run, "escalated", action="stripe_failure", phase="05_monetization", reason="card_declined")


def test_closing_writes_the_report_documents_and_cards(phase: Phase, a8: tuple[str, str]) -> None:
    root = phase.run.root
    score = ers.compute(phase)
    ers.write_outputs(phase, score)

    shown = closing.validation_report(phase, score).data
    text = (root / "reports" / "validation_report.md").read_text()
    assert shown.startswith("Written to `reports/validation_report.md`.") and "](" not in shown  # no dead links
    assert "delta to the target +170.0 ms, 95% CI [+150.0, +200.0] ms" in text
    assert "| Stripe failure | **escalated** | 1 `escalated` entries in [reports/hitl_approvals.log](" \
           "hitl_approvals.log)" in text
    assert "| OIDC regression | **indicated** |" in text
    assert "| Orchestration stalled > 2 h | **not evaluated** | 03_baseline_load did not run" in text

    closing.e2e_results_after(phase)
    e2e = json.loads((root / "reports" / "e2e_results_after.json").read_text())
    assert validated("reports/e2e_results_after.json", e2e) == e2e
    assert {(f["funnel"], f["status"]) for f in e2e["funnels"]} == {("funnels.b2c", "FAIL"),
                                                                      ("monetization", "INCONCLUSIVE")}
    assert e2e["phases"]["07_activation_growth"]["ran"] is False

    closing.a8_validation_after(phase)
    center = json.loads((root / "reports" / "a8_validation_after.json").read_text())
    assert validated("reports/a8_validation_after.json", center) == center
    assert [c["id"] for c in center["command_center"]["checks"]] == ["demo_mode.after.badge",
                                                                     "banners.after.ttl_expiry"]
    assert center["tiles_now"]["status"] == 200
    assert {"growth_signups", "finance_revenue_live"} <= {t["id"] for t in center["tiles_now"]["tiles"]}

    frame = closing.post_cards(phase, score)
    assert list(frame["status"]) == ["PASS", "PASS"], frame.to_dict()
    evidence = json.loads((root / "evidence" / "a8_cards.json").read_text())
    assert evidence["dashboard"]["screenshot"] == "evidence/a8_cards_dashboard.png"
    assert (root / "evidence" / "a8_cards_dashboard.png").read_bytes()[:4] == b"\x89PNG"
    listed = {c["id"]: c for c in httpx.get(f"{a8[0]}/api/cards").json()["cards"]}
    status, readiness = listed["readiness.sandbox.status"], listed["readiness.sandbox.score"]
    assert {"reports/validation_report.md", "reports/e2e_results_after.json"} <= {
        link["href"] for link in status["body"]["links"]}
    assert (readiness["body"]["grade"], readiness["body"]["score"]) == (score.grade, round(score.overall_score, 2))
    assert len(readiness["body"]["actions"]) == 5

    closing.post_cards(phase, score)  # the readiness card is unchanged: a replay; the status card counts more checks
    again = {c["id"]: c["version"] for c in httpx.get(f"{a8[0]}/api/cards").json()["cards"]}
    assert again == {"readiness.sandbox.status": status["version"] + 1, "readiness.sandbox.score": readiness["version"]}


def cards_now(a8: str) -> dict[str, int]:
    return {c["id"]: c["version"] for c in httpx.get(f"{a8}/api/cards").json()["cards"]}


def test_in_prod_the_cards_need_a_production_write_approval(a8: tuple[str, str], params_factory, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("A8_TELEMETRY_KEY", a8[1])
    refused = make_phase(tmp_path / "refused", params_factory, **PROD)
    score = ers.compute(refused)
    before = cards_now(a8[0])
    frame = closing.post_cards(refused, score)
    assert list(frame["status"]) == ["BLOCKED", "BLOCKED"]
    assert frame["detail"].iloc[0].startswith("refused: no approval for this action in params.approvals")
    assert cards_now(a8[0]) == before  # nothing was sent
    log = (refused.run.root / "reports" / "hitl_approvals.log").read_text().splitlines()
    assert json.loads(log[-1])["kind"] == "refused" and json.loads(log[-1])["action"] == "production_write"

    approved = make_phase(tmp_path / "approved", params_factory, **PROD, approvals=[PRODUCTION_WRITE])
    frame = closing.post_cards(approved, score)
    assert list(frame["status"]) == ["PASS", "SKIPPED"]  # an external dashboard's markup is not ours to read
    listed = {c["id"]: c for c in httpx.get(f"{a8[0]}/api/cards").json()["cards"]}
    tags = listed["readiness.prod-check.score"]["tags"]
    assert (tags["test_run"], tags["env"]) == ("true", "prod_observe")  # a production write is a tagged synthetic one
