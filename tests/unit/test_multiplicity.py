"""The run-wide multiplicity correction: Holm over every decision with an exact p-value."""

from __future__ import annotations

import numpy as np
import pytest

from readiness.core.check import Check, Status
from readiness.core.multiplicity import adjust, holm_thresholds
from readiness.core.verdict import combine, error_rate_check, latency_check, rate_check, value_check

WHERE = {"phase": "p", "title": "t"}


def test_holm_steps_down_and_stops_at_the_first_miss() -> None:
    # m = 4: bars 0.0125, 0.0167, 0.025, 0.05 for the sorted p-values
    got = holm_thresholds([0.03, 0.001, 0.012, 0.2])
    assert [sig for sig, _ in got] == [False, True, True, False]
    assert [round(bar, 4) for _, bar in got] == [0.025, 0.0125, 0.0167, 0.05]
    # the procedure stops: 0.03 misses its bar (0.025), so 0.031 fails too though it is below 0.05
    assert [sig for sig, _ in holm_thresholds([0.001, 0.03, 0.031])] == [True, False, False]
    assert holm_thresholds([]) == []


def test_a_marginal_fail_among_many_tests_reads_inconclusive_and_a_clear_one_stays() -> None:
    clear = error_rate_check(id="a.clear", **WHERE, errors=40, n=400, max_rate=0.01)
    marginal = rate_check(id="a.marginal", **WHERE, successes=181, n=200, target=0.95)
    assert clear.status is marginal.status is Status.FAIL
    assert 1e-3 < marginal.p_value < 0.05 and clear.p_value < 1e-6
    passing = [rate_check(id=f"a.ok{i}", **WHERE, successes=400, n=400, target=0.95) for i in range(40)]
    fact = value_check(id="a.fact", **WHERE, observed=500, expected=200)
    out = adjust([clear, marginal, fact, *passing])
    by_id = {c.id: c for c in out.checks}
    assert out.family_size == 42  # the fact is not a test
    assert by_id["a.clear"].status is Status.FAIL and "significant after 42 comparisons" in by_id["a.clear"].detail
    assert by_id["a.marginal"].status is Status.INCONCLUSIVE
    assert "not significant after 42 comparisons" in by_id["a.marginal"].detail
    assert by_id["a.fact"].status is Status.FAIL  # facts are not corrected
    assert (out.kept, out.demoted, out.outside) == (("a.clear",), ("a.marginal",), ("a.fact",))
    assert all(by_id[c.id] == c for c in passing)  # PASS is never touched
    alone = adjust([marginal])
    assert alone.checks[0].status is Status.FAIL  # one test: the bar is α itself


def test_an_all_of_check_is_tested_as_one_bonferroni_test_of_its_statistical_parts() -> None:
    parts = [rate_check(id="c.part0", **WHERE, successes=181, n=200, target=0.95),
             rate_check(id="c.ok", **WHERE, successes=200, n=200, target=0.95)]
    whole = combine("c.whole", "p", "t", parts)
    assert whole.status is Status.FAIL and whole.rule == "all_of"
    assert whole.p_value == pytest.approx(min(1.0, 2 * parts[0].p_value))
    with_fact = combine("c.fact", "p", "t", [*parts, value_check(id="c.v", **WHERE, observed=1, expected=2)])
    assert with_fact.status is Status.FAIL and with_fact.p_value is None  # a failed fact is a fact


def test_under_the_global_null_the_run_fails_a_good_system_at_most_alpha_of_the_time() -> None:
    """100 latency checks of a system exactly at its thresholds: without the correction
    nearly every run shows a chance FAIL; with it, a run with any FAIL is rare (≤ α + 2 sd)."""
    rng = np.random.default_rng(5)
    runs, any_fail_raw, any_fail_holm = 80, 0, 0
    for _ in range(runs):
        checks = []
        for i in range(100):
            samples = rng.lognormal(3.0, 0.5, size=200)
            threshold = float(np.exp(3.0 + 0.5 * 1.6448536269514722))  # the true P95
            checks.append(latency_check(id=f"l.{i}", **WHERE, samples_ms=samples, threshold_ms=threshold))
        any_fail_raw += any(c.status is Status.FAIL for c in checks)
        any_fail_holm += any(c.status is Status.FAIL for c in adjust(checks).checks)
    assert any_fail_raw / runs > 0.9
    assert any_fail_holm / runs <= 0.05 + 2 * (0.05 * 0.95 / runs) ** 0.5


def test_checks_without_p_values_round_trip_and_old_files_still_load() -> None:
    old = {"id": "x.y", "phase": "p", "title": "t", "status": "FAIL"}
    check = Check.from_dict(old)
    assert (check.p_value, check.rule, check.alpha, check.design_n) == (None, "", None, None)
    assert adjust([check]).outside == ("x.y",)
