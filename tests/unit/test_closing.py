"""The closing report's logic on synthetic runs: phase states, funnels, escalations, hot path, cards, schemas."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from readiness.core.check import Check, Status
from readiness.phases.readiness_score.cards import (
    build_cards,
    card_checks,
    card_id,
    confirmed,
    idempotency_key,
    ranked_actions,
)
from readiness.phases.readiness_score.closing import ClosingError, check_json, e2e_document, tile_problem, validated
from readiness.phases.readiness_score.closing_report import (
    delta_to_target,
    e2e_checks,
    escalation_rows,
    funnel_of,
    funnel_summaries,
    hot_paths,
    not_run_reason,
    read_log,
    validation_markdown,
)
from readiness.score.rubric import GradeBands
from readiness.score.scoring import CategoryScore, ReadinessScore
from sandbox.apps.a8_cards import validate_card

BASE = {"version": "1.0", "run_id": "20240501-120000", "generated_at": "2024-05-01T12:00:00Z",
        "ecosystem": "sandbox", "environment": "staging"}


def chk(id: str, phase: str, status: Status = Status.PASS, **fields: Any) -> Check:
    return Check(id=id, phase=phase, title=id, status=status, **fields)


def action(text: str, risk: str = "medium", owner: str = "platform") -> dict[str, str]:
    return {"owner": owner, "eta": "14d", "risk": risk, "action": text}


def category(key: str, weight: int, score: int, *actions: dict[str, str]) -> CategoryScore:
    return CategoryScore(key=key, title=key, weight=weight, score=score, weighted=Decimal(score * weight) / 5,
                         evidence=(), gaps=(), actions=tuple(actions), levels=())


def readiness(*cats: CategoryScore, blockers: tuple[str, ...] = ()) -> ReadinessScore:
    overall = sum((c.weighted for c in cats), Decimal("0"))
    return ReadinessScore(overall=overall, grade="Red", categories=cats, blockers=blockers, non_blocking_risks=(),
                          assumptions=(), scoring_notes="", bands=GradeBands(green=90, yellow=75),
                          risk_order=("critical", "high", "medium", "low"))


HOT = chk("latency.A7.lead_capture.hot_path", "02_latency_profile", Status.FAIL, app="A7", observed=331.9,
          ci_low=292.5, ci_high=369.7, ci_level=0.95, threshold=150.0, comparator="<=", unit="ms", n=200,
          evidence=("reports/comparison.csv", "evidence/latency_samples.parquet"))
IMPROVED = chk("latency.A7.lead_capture.a7_async_leads.improvement", "02_latency_profile", app="A7",
               observed=-327.2, ci_low=-365.3, ci_high=-285.3, threshold=0.0, comparator="<", unit="ms", n=200,
               detail="P95 after - before")


def test_a_phase_without_checks_says_why() -> None:
    checks = [chk("smoke.A1.p95", "01_smoke"),
              chk("run.03_baseline_load", "03_baseline_load", Status.BLOCKED, detail="Phase 0 gate is NO-GO")]
    info = {"phases": {"05_monetization": {"status": "ERROR", "error": "RuntimeError: boom"}}}
    assert not_run_reason("01_smoke", checks, info) is None
    assert not_run_reason("03_baseline_load", checks, info) == "BLOCKED: Phase 0 gate is NO-GO"
    assert not_run_reason("05_monetization", checks, info) == "ERROR: RuntimeError: boom"
    assert not_run_reason("07_activation_growth", checks, info) == \
        "the phase was not selected in this run or has no notebook"


def test_funnels_group_by_id_and_decide_all_of() -> None:
    checks = [chk("funnels.b2c.signup_rate", "04_funnels"), chk("funnels.b2c.oidc.jwks", "04_funnels", Status.FAIL),
              chk("funnels.b2b.signup_rate", "04_funnels"),
              chk("monetization.price", "05_monetization", Status.INCONCLUSIVE),
              chk("demo_mode.before.badge", "05_monetization", Status.FAIL), chk("smoke.A1.p95", "01_smoke")]
    assert (funnel_of("funnels.b2c.oidc.jwks"), funnel_of("monetization.price"), funnel_of("funnels.x")) == (
        "funnels.b2c", "monetization", "funnels")
    e2e = e2e_checks(checks)
    assert [c.id for c in e2e] == ["funnels.b2c.signup_rate", "funnels.b2c.oidc.jwks", "funnels.b2b.signup_rate",
                                   "monetization.price"]
    assert [(f["funnel"], f["status"], f["n_checks"]) for f in funnel_summaries(e2e)] == [
        ("funnels.b2c", "FAIL", 2), ("funnels.b2b", "PASS", 1), ("monetization", "INCONCLUSIVE", 1)]


def test_escalations_logged_indicated_absent_or_not_evaluated() -> None:
    checks = [chk("funnels.b2c.oidc.jwks", "04_funnels", Status.FAIL, evidence=("evidence/b2c_oidc_probe.json",)),
              chk("monetization.price", "05_monetization", Status.INCONCLUSIVE),
              chk("load.autonomy.arrival", "03_baseline_load", Status.FAIL)]
    log = [{"kind": "escalated", "action": "stripe_failure", "phase": "05_monetization", "reason": "402"},
           {"kind": "approved", "action": "fault_injection_503"},
           {"kind": "escalated", "action": "fault_injection_503", "reason": "fault removal could not be verified"}]
    rows, other = escalation_rows(checks, log, {})
    assert [(r["condition"].key, r["state"]) for r in rows] == [
        ("stripe_failure", "escalated"), ("oidc_regression", "indicated"),
        ("orchestration_stalled", "no"),  # a late arrival is no missing signal
        ("schema_mismatch", "not evaluated")]
    assert [c.id for c in rows[1]["failing"]] == ["funnels.b2c.oidc.jwks"]
    assert [e["action"] for e in other] == ["fault_injection_503"]


def test_the_approvals_log_keeps_unreadable_lines(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "hitl_approvals.log").write_text('{"kind": "escalated", "action": "x"}\nnot json\n[1]\n')
    assert read_log(tmp_path) == [{"kind": "escalated", "action": "x"}, {"kind": "unreadable", "line": "not json"},
                                  {"kind": "unreadable", "line": "[1]"}]
    assert read_log(tmp_path / "nowhere") == []


def test_hot_path_delta_carries_its_interval_and_units() -> None:
    other = chk("latency.A2.courses.improvement", "02_latency_profile")
    assert hot_paths([HOT, IMPROVED, other]) == [(HOT, [IMPROVED])]
    assert delta_to_target(HOT) == "delta to the target +181.9 ms, 95% CI [+142.5, +219.7] ms"
    bare = chk("latency.A7.x.hot_path", "02_latency_profile", Status.INCONCLUSIVE, threshold=150.0, unit="ms")
    assert delta_to_target(bare) == "no delta: no P95 was measured"


def test_the_report_links_what_exists_and_names_what_is_missing(tmp_path: Path) -> None:
    for rel in ("reports/comparison.csv", "evidence/b2c_oidc_probe.json", "reports/readiness_heatmap.csv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "reports" / "comparison.csv").write_text(
        "comparison,app,endpoint,q,n_before,n_after,before_ms,after_ms,diff_ms,diff_low_ms,diff_high_ms,ratio,"
        "ratio_low,ratio_high,needs_n\nflag a7_async_leads: off → on,A7,lead_capture,0.95,200,200,331.9,4.7,"
        "-327.2,-365.3,-285.3,0.01,0.01,0.02,\n")
    (tmp_path / "reports" / "hitl_approvals.log").write_text(
        '{"kind": "escalated", "action": "fault_injection_503", "phase": "09_resiliency", "reason": "unverified"}\n'
        "truncated {\n")
    checks = [HOT, IMPROVED, chk("funnels.b2c.oidc.jwks", "04_funnels", Status.FAIL, unit="findings", observed=1,
                                 n=1, evidence=("evidence/b2c_oidc_probe.json",)),
              chk("security.headers.A1", "10_security_ops", Status.FAIL, app="A1", observed=10, unit="points", n=2),
              chk("ops.cost.A1.rss", "10_security_ops", Status.INCONCLUSIVE, threshold=50.0, comparator="<=",
                  unit="%", n=0)]
    text = validation_markdown(run_name="r1", ecosystem="sandbox", environment="staging", profile_note="quick",
                               root=tmp_path, checks=checks, info={}, score=readiness(category("security", 15, 2)),
                               this_phase="11_readiness_score")
    assert "- Grade **Red**, overall score 6.00 / 100 points over 1 categories" in text
    assert "delta to the target +181.9 ms, 95% CI [+142.5, +219.7] ms" in text
    assert "[reports/comparison.csv](comparison.csv)" in text
    assert "`evidence/latency_samples.parquet` (missing: not in the run folder)" in text
    assert "| flag a7_async_leads: off → on | 331.9 ms | 4.7 ms | -327.2 ms | [-365.3, -285.3] ms | 200 / 200 |" \
        in text
    assert ("| OIDC regression | **indicated** | an OIDC or session-cookie check failed (funnels.b2c.oidc.jwks FAIL); "
            "no escalation entry was logged. Evidence: [evidence/b2c_oidc_probe.json](../evidence/b2c_oidc_probe.json)"
            " |") in text
    assert "| Stripe failure | **not evaluated** | 05_monetization did not run (the phase was not" in text
    assert "Other escalation entries: fault_injection_503 in 09_resiliency: unverified" in text
    assert ("1 lines of [reports/hitl_approvals.log](hitl_approvals.log) are not JSON objects and could not be read "
            "(an escalation among them would be missing above): `truncated {`") in text
    assert "| Headers (Observatory-style grade) | 1 | 1 FAIL | A1 F (10 points) |" in text
    assert "- 07_activation_growth did not run (the phase was not selected" in text
    assert "| 04_funnels | yes | 0 | 1 | 0 | 0 | 0 | 0 | 0 | 1 |" in text
    assert "11_readiness_score" not in text.split("## Checks per phase")[1]


def test_json_documents_are_validated_before_writing(tmp_path: Path) -> None:
    (tmp_path / "evidence").mkdir()
    (tmp_path / "evidence" / "a.json").write_text("{}")
    check = chk("funnels.b2b.signup_rate", "04_funnels", observed=0.97, ci_low=0.9, ci_high=0.99, threshold=0.9,
                comparator=">=", unit="ratio", n=40, evidence=("evidence/a.json", "evidence/gone.json"))
    assert (check_json(check, tmp_path)["evidence"], check_json(check, tmp_path)["missing_evidence"]) == (
        ["evidence/a.json"], ["evidence/gone.json"])
    doc = e2e_document(BASE, tmp_path, [check], {})
    assert doc["phases"]["07_activation_growth"]["ran"] is False and doc["funnels"][0]["status"] == "PASS"
    broken = json.loads(json.dumps(doc))
    broken["checks"][0]["status"] = "GREEN"
    with pytest.raises(ClosingError) as err:
        validated("reports/e2e_results_after.json", broken)
    assert str(err.value) == ("reports/e2e_results_after.json does not match schemas/e2e_results_after.schema.json at "
                              "checks/0/status: 'GREEN' is not one of ['PASS', 'FAIL', 'INCONCLUSIVE', 'SKIPPED', "
                              "'STOPPED', 'BLOCKED', 'ERROR']")
    a8 = {**BASE, "telemetry_contract": {"phases": {}, "counts": doc["phases"]["04_funnels"]["counts"], "checks": []},
          "command_center": {"phases": {}, "counts": doc["phases"]["04_funnels"]["counts"], "checks": []},
          "tiles_now": {"app": "A8", "url": "http://127.0.0.1:1/api/tiles", "read_at": "2024-05-01T12:00:00Z",
                        "status": None, "error": None, "demo_mode": None, "tiles": []}}
    with pytest.raises(ClosingError, match=r"at tiles_now/error: None is not of type 'string'"):
        validated("reports/a8_validation_after.json", a8)
    a8["tiles_now"]["error"] = "connect_error"
    assert validated("reports/a8_validation_after.json", a8) is a8
    a8["tiles_now"]["tiles"] = [{"id": "growth_signups", "title": "Sign-ups", "value": 3, "unit": "signups"}]
    with pytest.raises(ClosingError) as err:
        validated("reports/a8_validation_after.json", a8)  # a failed read carries no tiles
    assert str(err.value).endswith("at tiles_now/tiles: [{'id': 'growth_signups', 'title': 'Sign-ups', 'value': 3, "
                                   "'unit': 'signups'}] is expected to be empty")


def test_a_tile_must_have_the_documented_shape() -> None:
    assert tile_problem({"id": "b2b_billing", "title": "B2B", "value": None, "unit": "cents", "labels": []}) is None
    assert tile_problem({"id": "x", "title": "x", "value": {"a": 1}, "unit": "u"}) == \
        "{'a': 1} is not of type 'number', 'null'"
    assert tile_problem({"title": "x", "value": 1, "unit": "u"}) == "'id' is a required property"


def test_actions_rank_by_the_points_a_category_leaves_open() -> None:
    score = readiness(category("reliability", 15, 4, action("fix smoke", "critical")),
                      category("security", 15, 1, action("add headers", "low"), action("rotate", "high")),
                      category("performance", 10, 0, action("async leads", "medium"),
                               action("add headers", "low")),
                      category("cost_capacity", 5, 5))
    ranked = ranked_actions(score, 3)
    assert [(a["action"], a["category"], a["gap_points"]) for a in ranked] == [
        ("rotate", "security", 12.0), ("add headers", "security", 12.0), ("async leads", "performance", 10.0)]


def test_cards_are_valid_for_the_command_center(tmp_path: Path) -> None:
    for rel in ("reports/validation_report.md", "reports/readiness_rubric.md", "evidence/x.json"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    score = readiness(category("security", 15, 1, action("x" * 600, "high")))
    cards = build_cards(run_id="r1", ecosystem="my eco/1", environment="staging", root=tmp_path, score=score,
                        checks=[chk("a.b", "01_smoke"), chk("a.c", "01_smoke", Status.FAIL)])
    assert [c["id"] for c in cards] == ["readiness.my-eco-1.status", "readiness.my-eco-1.score"]
    assert card_id("  ", "score") == "readiness.ecosystem.score"
    for card in cards:
        validate_card(card)  # the card shape A8 accepts; raises CardError naming the field otherwise
    status, score_card = cards
    assert [link["href"] for link in status["body"]["links"]] == [
        "reports/readiness_rubric.md", "reports/validation_report.md", "evidence/"]
    assert "2 checks recorded — 1 PASS, 1 FAIL" in status["body"]["text"]
    assert score_card["body"]["score"] == 3.0 and len(score_card["body"]["actions"][0]["text"]) == 500
    assert idempotency_key(status) == idempotency_key(json.loads(json.dumps(status)))
    assert idempotency_key(status) != idempotency_key({**status, "title": "other"})


def seen(*posted: tuple[str, int | None, int | None], listed: dict[str, int]) -> dict[str, Any]:
    return {"posted": [{"id": cid, "status": status, "error": None if status else "connect_error",
                        "answer": {"card": {"id": cid, "version": v}} if v else None} for cid, status, v in posted],
            "listed": {"status": 200, "answer": {"cards": [{"id": k, "version": v} for k, v in listed.items()]}}}


def test_card_checks_need_the_posted_version_listed_and_shown() -> None:
    cards = [{"id": "s"}, {"id": "r"}]
    stale = seen(("s", 201, 3), ("r", 201, 1), listed={"s": 4, "r": 1})  # someone posted s again since
    assert confirmed(stale) == {"r": 1}
    posted, shown = card_checks("11_readiness_score", "A8", cards, stale, {"shown": {"s": "4", "r": "1"}, "note": ""},
                                ("evidence/a8_cards_dashboard.png",))
    assert (posted.id, posted.status, posted.observed, posted.unit) == ("closing.cards.posted", Status.FAIL, 1, "cards")
    assert (shown.status, shown.observed) == (Status.FAIL, 1)
    good = seen(("s", 201, 1), ("r", 201, 1), listed={"s": 1, "r": 1})
    posted, shown = card_checks("11_readiness_score", "A8", cards, good, {"shown": {"s": "1", "r": "1"}, "note": ""},
                                ())
    assert (posted.status, shown.status) == (Status.PASS, Status.PASS)
    _, shown = card_checks("11_readiness_score", "A8", cards, good, {"shown": None, "note": "no Chromium"}, ())
    assert (shown.status, shown.detail) == (Status.INCONCLUSIVE, "no data; no Chromium")
    down = seen(("s", None, None), ("r", None, None), listed={})
    posted, shown = card_checks("11_readiness_score", "A8", cards, down, None, ())
    assert (posted.status, shown.status) == (Status.FAIL, Status.SKIPPED)
    assert posted.detail.endswith("s → connect_error; r → connect_error; GET /api/cards → 200")


def test_an_interval_without_a_recorded_level_is_not_called_95() -> None:
    bare = dataclasses.replace(HOT, ci_level=None)
    assert delta_to_target(bare) == "delta to the target +181.9 ms, CI [+142.5, +219.7] ms"
