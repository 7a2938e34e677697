"""Sample sizes from the design point: planned n, the profile's budget, and what a check and a level say."""

from __future__ import annotations

import pytest

from readiness.core.check import Check, Status
from readiness.core.sizing import annotate, design_n, sample_size
from readiness.core.verdict import error_rate_check, latency_check, rate_check, share_check, value_check
from readiness.params.sections import Design
from readiness.score.rubric import parse_rubric
from readiness.score.scoring import score_checks, undersized
from readiness.stats.design import operating_characteristic

DESIGN = Design()
WHERE = {"phase": "01_smoke", "title": "t", "evidence": ("evidence/x.json",)}


@pytest.mark.parametrize(("rule", "threshold", "q", "value", "family"), [
    ("success_rate", 0.95, None, 0.99, "success"),
    ("error_rate", 0.01, None, 0.0025, "error"),
    ("latency", 120.0, 0.95, 0.01, "latency"),
])
def test_the_planned_n_passes_a_good_system_with_the_level_probability(rule: str, threshold: float, q: float | None,
                                                                       value: float, family: str) -> None:
    n = design_n(DESIGN, rule, threshold, q=q)
    assert n is not None
    goal = 1 - DESIGN.beta_level / DESIGN.checks_per_level
    at = q if family == "latency" else threshold
    assert operating_characteristic(family, n, at, value, q=q).p_pass >= goal
    # m = 1 needs fewer samples than m = 50
    assert design_n(Design(checks_per_level=1), rule, threshold, q=q) < n


def test_the_run_takes_the_planned_n_or_the_budget_whichever_is_smaller() -> None:
    planned = design_n(DESIGN, "latency", 120.0, q=0.95)
    assert planned == 336
    small = sample_size(DESIGN, 200, "latency", 120.0, q=0.95)
    assert (small.n, small.planned, small.budget) == (200, 336, 200)
    assert "the design point needs n ≥ 336" in small.describe()
    big = sample_size(DESIGN, 5000, "latency", 120.0, q=0.95)
    assert (big.n, big.planned) == (336, 336) and "the design point's size" in big.describe()
    assert sample_size(DESIGN, 70, "share", 0.1).n == 70  # no one-sample design point: the budget


def test_an_undersized_undecided_check_says_what_n_its_design_point_needs() -> None:
    short = rate_check(id="funnels.x", **WHERE, successes=38, n=40, target=0.90)
    assert short.status is Status.INCONCLUSIVE
    stamped = annotate(short, DESIGN)
    assert stamped.design_n == design_n(DESIGN, "success_rate", 0.90) and stamped.design_n > 40
    assert stamped.detail.endswith(f"needs n ≥ {stamped.design_n} for the design point")
    passed = annotate(error_rate_check(id="smoke.A1.error_rate", **WHERE, errors=0, n=400, max_rate=0.01), DESIGN)
    assert passed.status is Status.PASS and passed.design_n == 2064 and "design point" not in passed.detail
    for other in (value_check(id="v", **WHERE, observed=1, expected=1),
                  share_check(id="s", **WHERE, arrived=40, n=400, rate=0.1, margin=0.05),
                  rate_check(id="r", **WHERE, successes=0, n=0, target=0.9)):
        assert annotate(other, DESIGN).design_n in (None, design_n(DESIGN, "success_rate", 0.9))
        assert "design point" not in annotate(other, DESIGN).detail
    lat = annotate(latency_check(id="l", **WHERE, samples_ms=[5.0] * 30, threshold_ms=100, q=0.99), DESIGN)
    assert lat.design_n == design_n(DESIGN, "latency", 100, q=0.99) and "for the design point" in lat.detail


RUBRIC = {
    "categories": [{"key": "reliability", "title": "Reliability", "weight": 100, "levels": [
        {"level": k, "description": f"L{k}", "require": [f"smoke.*.l{k}"]} for k in range(1, 6)]}],
    "grade": {"green": 85, "yellow": 70},
    "eta_by_severity": {"P0": "1d", "P1": "3d", "P2": "1w", "P3": "1m"},
    "risk_by_severity": {"P0": "critical", "P1": "high", "P2": "medium", "P3": "low"},
}


def test_a_level_held_back_by_undersized_checks_says_it_cannot_be_evidenced_in_this_profile() -> None:
    good = [annotate(rate_check(id="smoke.A1.l1", **WHERE, successes=100, n=100, target=0.9), DESIGN)]
    short = annotate(rate_check(id="smoke.A1.l2", **WHERE, successes=19, n=20, target=0.9), DESIGN)
    assert undersized([short]) == [short]
    score = score_checks([*good, short], parse_rubric(RUBRIC))
    cat = score.category("reliability")
    assert cat.score == 1
    assert cat.gaps[0].startswith("level 2 (basic): cannot be evidenced in this profile: 1 undecided check took "
                                  f"fewer samples than the design point needs (smoke.A1.l2 needs n ≥ {short.design_n}, "
                                  "has 20)")
    assert cat.actions[0]["action"].startswith(f"Run with a sample of n ≥ {short.design_n}")
    failed = annotate(rate_check(id="smoke.A1.l2", **WHERE, successes=10, n=20, target=0.9), DESIGN)
    assert failed.status is Status.FAIL and not undersized([failed])  # a FAIL is shown, not unevidenced


def test_checks_from_files_without_design_fields_are_left_alone() -> None:
    old = Check.from_dict({"id": "smoke.A1.error_rate", "phase": "p", "title": "t", "status": "INCONCLUSIVE",
                           "threshold": 0.01, "comparator": "<", "unit": "ratio", "n": 5})
    assert annotate(old, DESIGN) == old
