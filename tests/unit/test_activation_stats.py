"""Time to first value as a distribution, and the activation verdicts, from fabricated evidence."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from readiness.core.check import Status
from readiness.params.model import load_params
from readiness.phases.activation.activation import activation_checks, ttfv_distribution_chart, ttfv_summary
from readiness.report.charts import embedded_rows

ROOT = Path(__file__).resolve().parents[2]
EVIDENCE = ("evidence/activation_journeys.json", "evidence/activation_events.json")


def test_summary_counts_no_answer_as_beyond_any_target() -> None:
    s = ttfv_summary([2.0, 3.0, None, 400.0, 1.0], target_s=300, quantiles=[0.5, 0.9])
    assert (s["n"], s["answered"], s["within_target"]["count"]) == (5, 4, 3)
    assert s["within_target"]["share"] == 0.6 and 0.2 < s["within_target"]["ci_low"] < 0.6 < s["within_target"]["ci_high"]
    p50, p90 = s["percentiles"]
    assert (p50["percentile"], p50["estimate_s"]) == ("P50", 3.0)
    assert p90["estimate_s"] == "no answer"  # the nearest-rank P90 of five is the learner who never got there
    assert (p90["upper_bound_s"], p90["upper_needs_n"], p90["needs_n"]) == (None, 29, 36)
    assert p90["describe"].startswith("P90 = inf s, 95% CI needs n ≥ 36, upper bound needs n ≥ 29")


def test_summary_of_nobody_is_empty_not_an_error() -> None:
    s = ttfv_summary([], target_s=300, quantiles=[0.5])
    assert (s["n"], s["within_target"]["share"], s["percentiles"]) == (0, None, [])


def _phase() -> Any:
    return SimpleNamespace(name="07_activation_growth", params=load_params(ROOT / "params" / "sandbox.yaml"))


def _row(user: int, ttfv: float | None, signin: float | None = None) -> dict[str, Any]:
    ok = ttfv is not None
    return {"user": user, "trace_id": f"t{user}", "ok": ok, "failed_step": None if ok else "first_action",
            "ttfv_s": ttfv, "signin_to_answer_s": signin if signin is not None else (ttfv / 2 if ok else None),
            "steps": [] if ok else [{"step": "first_action", "status": "failed", "screenshot": "evidence/s.png"}]}


def _found(trace: str, seconds: float, *events: str) -> dict[str, Any]:
    arrival = {"received_s": 0.1, "seen_s": 0.5}
    facts = {"credit_decrement": {**arrival, "delta": -1},
             "activation_first_use": {**arrival, "seconds_since_signup": seconds}}
    return {trace: {e: facts[e] for e in events}}


def _checks(rows: list[dict[str, Any]], found: dict[str, Any], **log: Any) -> dict[str, Any]:
    journeys = {"window": {"start": "2024-05-01T00:00:00+00:00", "end": "2024-05-01T00:01:00+00:00"}, "rows": rows,
                **log}
    return {c.id: c for c in activation_checks(_phase(), journeys, {"found": found, "error": None}, EVIDENCE)}


def test_ten_fast_learners() -> None:
    rows = [_row(i, 2.0 + i / 10) for i in range(1, 11)]
    found: dict[str, Any] = {}
    for r in rows:
        found |= _found(r["trace_id"], r["signin_to_answer_s"] - 0.05, "credit_decrement", "activation_first_use")
    checks = _checks(rows, found)
    assert checks["activation.ttfv.p50"].status is Status.PASS and checks["activation.ttfv.p50"].unit == "ms"
    p90 = checks["activation.ttfv.p90"]
    assert p90.status is Status.INCONCLUSIVE and "95% upper bound needs n ≥ 29" in p90.detail
    assert checks["activation.journeys"].detail.endswith("a PASS needs n ≥ 29 with zero failures")
    cross = checks["activation.ttfv.crosscheck"]
    assert cross.status is Status.PASS and cross.observed == pytest.approx(0.05) and cross.n == 10
    assert all(c.tags for c in checks.values()) and set(checks) == {
        "activation.journeys", "activation.events.credit_decrement", "activation.events.activation_first_use",
        "activation.ttfv.within_target", "activation.ttfv.p50", "activation.ttfv.p90", "activation.ttfv.crosscheck"}


def test_missing_events_slow_learners_and_a_disagreeing_clock_fail() -> None:
    # slow learners in no particular order (a sorted series would read as a trend, i.e. serial dependence)
    rows = [_row(i, 400.0 + (5 * i) % 9) for i in range(1, 9)] + [_row(9, None)]
    found = _found("t1", 100.0, "credit_decrement")  # one event of one learner; its app clock disagrees
    found |= _found("t2", (400 + (5 * 2) % 9) / 2, "credit_decrement", "activation_first_use")
    checks = _checks(rows, found)
    assert checks["activation.events.activation_first_use"].status is Status.FAIL  # 1 of 8
    assert checks["activation.ttfv.within_target"].status is Status.FAIL  # 0 of 9 within 300 s
    assert checks["activation.ttfv.p50"].status is Status.FAIL  # lower bound above 300 000 ms
    assert checks["activation.journeys"].observed == pytest.approx(8 / 9)
    assert "evidence/s.png" in checks["activation.journeys"].evidence
    assert checks["activation.ttfv.crosscheck"].status is Status.PASS  # only learners with the event compare


def test_crosscheck_beyond_tolerance_fails_and_no_learner_is_inconclusive() -> None:
    checks = _checks([_row(1, 20.0, signin=10.0)], _found("t1", 3.0, "credit_decrement", "activation_first_use"))
    assert checks["activation.ttfv.crosscheck"].status is Status.FAIL and checks["activation.ttfv.crosscheck"].observed == 7
    nobody = _checks([], {})
    assert {c.status for c in nobody.values()} == {Status.INCONCLUSIVE}


def test_an_event_without_its_contract_fields_does_not_count() -> None:
    found = _found("t1", 1.0, "credit_decrement", "activation_first_use")
    found["t1"]["credit_decrement"]["contract_errors"] = ["p95_ms: required field is missing"]
    checks = _checks([_row(1, 2.0, signin=1.0)], found)
    events = checks["activation.events.credit_decrement"]
    # 0 of 1: below the target, but one learner cannot show it (exact one-sided p > 5%)
    assert (events.observed, events.n) == (0.0, 1) and events.status is Status.INCONCLUSIVE
    assert "a FAIL is not shown" in events.detail
    assert "contract field errors: p95_ms: required field is missing" in events.detail
    assert checks["activation.events.activation_first_use"].observed == 1.0


def test_refused_journeys_block_every_check() -> None:
    checks = _checks([], {}, blocked="no production_write approval")
    assert {c.status for c in checks.values()} == {Status.BLOCKED}
    assert checks["activation.journeys"].detail == "no production_write approval"


def test_chart_is_small_and_says_when_there_is_nothing_to_draw() -> None:
    ttfv = [2.5, 3.1, None, 4.0]
    chart = ttfv_distribution_chart(ttfv, ttfv_summary(ttfv, 300, [0.5, 0.9]))
    spec = chart.to_dict()
    assert embedded_rows(spec) < 20 and "1 never got an answer" in str(spec["title"])
    empty = ttfv_distribution_chart([None, None], ttfv_summary([None, None], 300, [0.5]))
    assert "no learner reached first value (n = 2)" in json.dumps(empty.to_dict())


def test_prod_without_approval_drives_nobody_and_blocks_every_check(tmp_path: Path) -> None:
    from readiness.core.runfolder import RunFolder
    from readiness.phasekit.context import Phase
    from readiness.phases.activation import activation

    params_file = ROOT / "params" / "staging.example.yaml"
    env = {f"A{i}_BASE_URL": f"https://a{i}.staging.example.com" for i in range(1, 9)}
    params = load_params(params_file, env=env).model_copy(update={"environment": "prod", "approvals": []})
    run = RunFolder.create(tmp_path, params, params_file, mode="interactive")
    phase = Phase(name="07_activation_growth", params=params, params_file=params_file, run=run)
    assert activation.run_onboarding(phase)["status"].tolist() == ["BLOCKED"]
    assert activation.verify_events(phase)["status"].tolist() == ["BLOCKED"]
    frame = activation.evaluate(phase)
    assert set(frame["status"]) == {"BLOCKED"} and len(frame) == 7
    assert "production_write" in run.path("reports/hitl_approvals.log").read_text()
