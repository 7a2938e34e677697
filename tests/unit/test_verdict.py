"""Verdict rules: Wilson intervals, rate/latency/value checks, and the all-of combination."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from readiness.core.check import Check, Status
from readiness.core.verdict import (
    COMBINE_PRECEDENCE,
    combine,
    error_rate_check,
    latency_check,
    min_n_for_error_rate,
    min_n_for_rate,
    rate_check,
    value_check,
    wilson_interval,
)

Z95 = 1.959963984540054  # standard normal 97.5% point
WHERE = {"id": "smoke.A3.x", "phase": "smoke", "title": "t"}


# ---------------------------------------------------------------- Wilson

@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (score).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_matches_published_values(successes: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(successes, n)
    assert (round(got[0], 4), round(got[1], 4)) == (low, high)


def test_wilson_extremes_match_closed_form() -> None:
    # At x = 0 the score interval is [0, z^2/(n+z^2)]; at x = n it is [n/(n+z^2), 1].
    z2 = Z95**2
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(z2 / (10 + z2), abs=1e-12)  # 0.2775
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / (10 + z2), abs=1e-12)  # 0.7225
    assert round(high, 4) == 1.0 and round(low, 4) == 0.7225


def test_wilson_is_wider_at_higher_confidence() -> None:
    low95, high95 = wilson_interval(40, 50)
    low99, high99 = wilson_interval(40, 50, confidence=0.99)
    assert low99 < low95 < 0.8 < high95 < high99


@pytest.mark.parametrize(("args", "message"), [
    ((0, 0), "wilson_interval: no trials (n=0), a proportion has no interval without data"),
    ((11, 10), "wilson_interval: successes must be between 0 and n=10, got 11"),
    ((-1, 10), "wilson_interval: successes must be >= 0, got -1"),
    ((1, 2.0), "wilson_interval: n must be an integer, got 2.0"),
    ((1, 2, 1.0), "wilson_interval: confidence must be strictly between 0 and 1, got 1.0"),
])
def test_wilson_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError) as err:
        wilson_interval(*args)
    assert str(err.value) == message


def test_sample_size_for_a_perfect_record() -> None:
    # n/(n+z^2) >= 0.95  <=>  n >= 19 z^2 = 72.99 (two-sided 95%), 51.4 (two-sided 90%, the rules' level)
    assert min_n_for_rate(0.95) == 73
    assert wilson_interval(72, 72)[0] < 0.95 <= wilson_interval(73, 73)[0]
    assert min_n_for_rate(0.95, 0.90) == 52
    assert min_n_for_error_rate(0.01, 0.90) == 268
    # with the exact binomial test as well (what the rules need): 0.95^n <= 5% and 0.99^n <= 5%
    assert min_n_for_rate(0.95, 0.90, exact_alpha=0.05) == 59
    assert min_n_for_error_rate(0.01, 0.90, exact_alpha=0.05) == 299
    # z^2/(n+z^2) < 0.01  <=>  n > 99 z^2 = 380.3
    assert min_n_for_error_rate(0.01) == 381
    assert wilson_interval(0, 381)[1] < 0.01 <= wilson_interval(0, 380)[1]


# ---------------------------------------------------------------- rate_check

@pytest.mark.parametrize(("successes", "n", "status", "detail"), [
    (199, 200, Status.PASS, "one-sided 95% Wilson lower bound 97.79% >= target 95% (199/200)"),
    (180, 200, Status.FAIL,
     "one-sided 95% Wilson upper bound 92.97% < target 95% (180/200); exact one-sided p = 0.0027"),
    (190, 200, Status.INCONCLUSIVE,
     "Wilson 90% interval [91.81%, 96.99%] straddles target 95% (190/200)"),
    (40, 40, Status.INCONCLUSIVE, "Wilson 90% interval [93.66%, 100%] straddles target 95% "
     "(40/40); a PASS needs n ≥ 59 with zero failures"),
    # the Wilson bound alone would PASS from 52; the exact tail, 0.95^58 = 0.051, does not
    (58, 58, Status.INCONCLUSIVE, "one-sided 95% Wilson lower bound 95.54% >= target 95% (58/58), but the exact "
     "one-sided p = 0.051 > α 5%: a PASS is not shown"),
    (59, 59, Status.PASS, "one-sided 95% Wilson lower bound 95.62% >= target 95% (59/59)"),
    (0, 0, Status.INCONCLUSIVE, "no data"),
])
def test_rate_check_branches(successes: int, n: int, status: Status, detail: str) -> None:
    check = rate_check(**WHERE, successes=successes, n=n, target=0.95)
    assert (check.status, check.detail) == (status, detail)


def test_rate_check_carries_its_evidence() -> None:
    check = rate_check(**WHERE, successes=199, n=200, target=0.95, app="A3", tags=("reliability",),
                       evidence=("evidence/A3_health.json",), severity="P1",
                       window="2025-01-01T00:00Z/PT15M", detail="probes via method A")
    low, high = wilson_interval(199, 200, 0.90)
    assert check == Check(
        id="smoke.A3.x", phase="smoke", title="t", status=Status.PASS, app="A3", observed=0.995,
        ci_low=low, ci_high=high, ci_level=0.9, rule="success_rate", sided="one-sided", alpha=0.05,
        p_value=check.p_value, threshold=0.95, comparator=">=", unit="ratio", n=200,
        window="2025-01-01T00:00Z/PT15M", severity="P1", tags=("reliability",),
        evidence=("evidence/A3_health.json",),
        detail="one-sided 95% Wilson lower bound 97.79% >= target 95% (199/200); probes via method A")
    # the FAIL side's exact p-value: P(X <= 199) for X ~ Binomial(200, 0.95)
    assert check.p_value == pytest.approx(1 - 0.95 ** 200, rel=1e-9)
    empty = rate_check(**WHERE, successes=0, n=0, target=0.95, window="w")
    assert (empty.observed, empty.ci_low, empty.ci_high, empty.n, empty.window) == (
        None, None, None, 0, "w")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"successes": 3, "n": 2, "target": 0.9},
     "rate_check smoke.A3.x: successes must be between 0 and n=2, got 3"),
    ({"successes": 1, "n": -2, "target": 0.9}, "rate_check smoke.A3.x: n must be >= 0, got -2"),
    ({"successes": 1, "n": 2, "target": 1.0},
     "rate_check smoke.A3.x: target must be strictly between 0 and 1, got 1.0"),
    ({"successes": 1, "n": 2, "target": 95},
     "rate_check smoke.A3.x: target must be strictly between 0 and 1, got 95"),
])
def test_rate_check_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        rate_check(**WHERE, **kwargs)
    assert str(err.value) == message


# ---------------------------------------------------------------- error_rate_check

@pytest.mark.parametrize(("errors", "n", "status", "detail"), [
    (0, 2000, Status.PASS, "one-sided 95% Wilson upper bound 0.14% < max 1% (0/2000)"),
    (30, 1000, Status.FAIL,
     "one-sided 95% Wilson lower bound 2.23% >= max 1% (30/1000); exact one-sided p < 1e-6"),
    (2, 200, Status.INCONCLUSIVE, "Wilson 90% interval [0.33%, 2.98%] straddles max 1% (2/200); "
     "a PASS needs n ≥ 299 with zero errors"),
    (5, 500, Status.INCONCLUSIVE, "Wilson 90% interval [0.49%, 2.04%] straddles max 1% (5/500)"),
    (0, 267, Status.INCONCLUSIVE, "Wilson 90% interval [0%, 1.003%] straddles max 1% (0/267); "
     "a PASS needs n ≥ 299 with zero errors"),
    (0, 298, Status.INCONCLUSIVE, "one-sided 95% Wilson upper bound 0.9% < max 1% (0/298), but the exact "
     "one-sided p = 0.05004 > α 5%: a PASS is not shown"),
    (0, 299, Status.PASS, "one-sided 95% Wilson upper bound 0.9% < max 1% (0/299)"),
    (0, 0, Status.INCONCLUSIVE, "no data"),
])
def test_error_rate_check_branches(errors: int, n: int, status: Status, detail: str) -> None:
    check = error_rate_check(**WHERE, errors=errors, n=n, max_rate=0.01, window="w")
    assert (check.status, check.detail) == (status, detail)
    assert (check.threshold, check.comparator, check.unit, check.n, check.window) == (
        0.01, "<", "ratio", n, "w")
    if n:
        assert check.observed == errors / n
        assert (check.ci_low, check.ci_high, check.ci_level) == (*wilson_interval(errors, n, 0.90), 0.9)


def test_error_rate_check_rejects_bad_input() -> None:
    with pytest.raises(ValueError) as err:
        error_rate_check(**WHERE, errors=1, n=10, max_rate=0)
    assert str(err.value) == (
        "error_rate_check smoke.A3.x: max_rate must be strictly between 0 and 1, got 0")
    with pytest.raises(ValueError) as err:
        error_rate_check(**WHERE, errors=1.5, n=10, max_rate=0.01)
    assert str(err.value) == "error_rate_check smoke.A3.x: errors must be an integer, got 1.5"


# ---------------------------------------------------------------- latency_check

# 1..200 ms in a shuffled (seeded) order: P95 estimate 190; one-sided 95% bounds 185 / 196 = the
# two-sided 90%. Sorted, the series would be one long trend, which the serial-dependence test flags.
SAMPLES = np.random.default_rng(0).permutation(np.arange(1.0, 201.0))


@pytest.mark.parametrize(("threshold", "status", "detail"), [
    (196, Status.PASS, "P95: one-sided 95% upper bound 196 ms <= 196 ms (n=200)"),
    (195.5, Status.INCONCLUSIVE,
     "P95: one-sided 95% upper bound 196 ms > 195.5 ms; one-sided 95% lower bound 185 ms <= 195.5 ms (n=200)"),
    (185, Status.INCONCLUSIVE,
     "P95: one-sided 95% upper bound 196 ms > 185 ms; one-sided 95% lower bound 185 ms <= 185 ms (n=200)"),
    (184.9, Status.FAIL, "P95: one-sided 95% lower bound 185 ms > 184.9 ms (n=200); exact one-sided p = 0.044"),
])
def test_latency_check_branches(threshold: float, status: Status, detail: str) -> None:
    check = latency_check(**WHERE, samples_ms=SAMPLES, threshold_ms=threshold, window="w")
    assert (check.status, check.detail) == (status, detail)
    # the recorded interval's ends are the bounds the decision used (a two-sided 95% interval,
    # 184..197, would show a PASS at 196 ms with ci_high above its threshold)
    assert (check.observed, check.ci_low, check.ci_high, check.ci_level) == (190.0, 185.0, 196.0, 0.9)
    assert (check.threshold, check.comparator, check.unit, check.n, check.window) == (
        threshold, "<=", "ms", 200, "w")


def test_latency_check_shows_digits_that_separate_bound_and_threshold() -> None:
    check = latency_check(**WHERE, samples_ms=SAMPLES + 0.04, threshold_ms=196)
    assert check.detail == (
        "P95: one-sided 95% upper bound 196.04 ms > 196 ms; one-sided 95% lower bound 185 ms <= 196 ms (n=200)")


def test_latency_p99_at_n200_needs_more_data() -> None:
    check = latency_check(**WHERE, samples_ms=SAMPLES, threshold_ms=1000, q=0.99)
    assert check.status is Status.INCONCLUSIVE
    assert check.detail == (
        "P99: one-sided 95% upper bound needs n ≥ 299; one-sided 95% lower bound 195 ms <= 1000 ms (n=200)")
    assert (check.observed, check.ci_low, check.ci_high) == (198.0, None, None)
    failed = latency_check(**WHERE, samples_ms=SAMPLES, threshold_ms=150, q=0.99)
    assert (failed.status, failed.detail) == (
        Status.FAIL, "P99: one-sided 95% lower bound 195 ms > 150 ms (n=200); exact one-sided p < 1e-6")
    passed = latency_check(**WHERE, samples_ms=np.random.default_rng(0).permutation(np.arange(1.0, 300.0)),
                           threshold_ms=1000, q=0.99)
    assert (passed.status, passed.detail) == (
        Status.PASS, "P99: one-sided 95% upper bound 299 ms <= 1000 ms (n=299)")


def test_latency_p99_at_n200_is_never_pass() -> None:
    rng = np.random.default_rng(11)
    for _ in range(50):
        samples = rng.lognormal(3.5, 0.6, size=200)
        for threshold in (10.0, 60.0, 120.0, 1e9):
            check = latency_check(**WHERE, samples_ms=samples, threshold_ms=threshold, q=0.99)
            assert check.status is not Status.PASS


def test_latency_check_small_and_missing_data() -> None:
    tiny = latency_check(**WHERE, samples_ms=[1.0, 2.0, float("nan")], threshold_ms=120, q=0.5)
    assert (tiny.status, tiny.n, tiny.observed) == (Status.INCONCLUSIVE, 2, 1.0)
    assert tiny.detail == ("P50: one-sided 95% upper bound needs n ≥ 5; one-sided 95% lower bound needs n ≥ 5 (n=2); "
                           "1 NaN sample dropped")
    empty = latency_check(**WHERE, samples_ms=[], threshold_ms=120)
    assert (empty.status, empty.detail, empty.n, empty.observed) == (
        Status.INCONCLUSIVE, "no data", 0, None)
    nans = latency_check(**WHERE, samples_ms=[math.nan] * 3, threshold_ms=120, detail="cold run")
    assert nans.detail == "no data; 3 NaN samples dropped; cold run"


def test_latency_check_rejects_bad_threshold() -> None:
    with pytest.raises(ValueError) as err:
        latency_check(**WHERE, samples_ms=SAMPLES, threshold_ms=math.inf)
    assert str(err.value) == "latency_check smoke.A3.x: threshold_ms must be a finite number, got inf"


# ---------------------------------------------------------------- value_check

@pytest.mark.parametrize(("observed", "expected", "comparator", "unit", "status", "detail"), [
    (200, 200, "==", "", Status.PASS, "observed 200 meets == 200"),
    (503, 200, "==", "", Status.FAIL, "observed 503 does not meet == 200"),
    ("Lax", "None", "==", "", Status.FAIL, "observed 'Lax' does not meet == 'None'"),
    (True, True, "==", "", Status.PASS, "observed True meets == True"),
    (0.5, 1.0, "<=", "s", Status.PASS, "observed 0.5 s meets <= 1 s"),
    (61.0, 60, "<=", "s", Status.FAIL, "observed 61 s does not meet <= 60 s"),
    (None, 200, "==", "", Status.INCONCLUSIVE, "no data"),
    (math.nan, 1.0, "<", "", Status.INCONCLUSIVE, "no data"),
])
def test_value_check_branches(observed: object, expected: object, comparator: str, unit: str,
                              status: Status, detail: str) -> None:
    check = value_check(**WHERE, observed=observed, expected=expected,  # type: ignore[arg-type]
                        comparator=comparator, unit=unit, window="w")
    assert (check.status, check.detail) == (status, detail)
    assert (check.threshold, check.comparator, check.unit, check.window) == (
        expected, comparator, unit, "w")
    assert check.n == (0 if status is Status.INCONCLUSIVE else 1)


def test_value_check_rejects_bad_input() -> None:
    with pytest.raises(ValueError) as err:
        value_check(**WHERE, observed=1, expected=1, comparator="!=")
    assert str(err.value) == (
        "value_check smoke.A3.x: comparator must be one of ('==', '<=', '<', '>=', '>'), got '!='")
    with pytest.raises(ValueError) as err:
        value_check(**WHERE, observed="abc", expected=3, comparator="<")
    assert str(err.value) == "value_check smoke.A3.x: cannot compare 'abc' < 3"


# ---------------------------------------------------------------- combine

def _part(name: str, status: Status, tags: tuple[str, ...] = (), evidence: tuple[str, ...] = ()
          ) -> Check:
    return Check(id=f"smoke.A3.{name}", phase="smoke", title=name, status=status, tags=tags,
                 evidence=evidence)


@pytest.mark.parametrize(("statuses", "expected"), [
    ((Status.PASS, Status.PASS), Status.PASS),
    ((Status.PASS, Status.FAIL, Status.ERROR, Status.STOPPED, Status.BLOCKED), Status.FAIL),
    ((Status.PASS, Status.ERROR, Status.STOPPED, Status.BLOCKED), Status.ERROR),
    ((Status.INCONCLUSIVE, Status.STOPPED, Status.BLOCKED), Status.STOPPED),
    ((Status.PASS, Status.INCONCLUSIVE, Status.BLOCKED), Status.BLOCKED),
    ((Status.PASS, Status.INCONCLUSIVE, Status.SKIPPED), Status.INCONCLUSIVE),
    ((Status.PASS, Status.SKIPPED), Status.INCONCLUSIVE),
    ((Status.SKIPPED, Status.SKIPPED), Status.SKIPPED),
])
def test_combine_precedence(statuses: tuple[Status, ...], expected: Status) -> None:
    parts = [_part(f"p{i}", s) for i, s in enumerate(statuses)]
    for order in itertools.permutations(parts):  # the order of the parts never matters
        assert combine("smoke.A3.live", "smoke", "live", order).status is expected


def test_combine_precedence_constant_is_documented_order() -> None:
    assert COMBINE_PRECEDENCE == (Status.FAIL, Status.ERROR, Status.STOPPED, Status.BLOCKED,
                                  Status.INCONCLUSIVE)


def test_combine_records_parts_union_and_detail() -> None:
    parts = [
        _part("agreement", Status.PASS, ("observability",), ("evidence/A3_health.json",)),
        _part("p95", Status.INCONCLUSIVE, ("performance",), ("charts/A3_p95.svg",)),
        _part("errors", Status.FAIL, ("reliability",), ("evidence/A3_health.json",)),
    ]
    check = combine("smoke.A3.live", "smoke", "A3 live", parts, app="A3", tags=("gate",),
                    evidence=("reports/ecosystem_double_confirm.md",), severity="P1",
                    window="w", detail="dual source")
    assert check == Check(
        id="smoke.A3.live", phase="smoke", title="A3 live", status=Status.FAIL, app="A3",
        observed=1.0, threshold=3.0, comparator="==", unit="parts", n=3, window="w",
        severity="P1", tags=("gate", "observability", "performance", "reliability"),
        evidence=("reports/ecosystem_double_confirm.md", "evidence/A3_health.json",
                  "charts/A3_p95.svg"),
        detail="1/3 parts PASS; not passing: smoke.A3.p95 (INCONCLUSIVE), "
               "smoke.A3.errors (FAIL); dual source")


def test_combine_all_pass_and_empty() -> None:
    ok = combine("c", "smoke", "t", [_part("a", Status.PASS), _part("b", Status.PASS)])
    assert (ok.status, ok.detail, ok.observed, ok.n) == (Status.PASS, "all 2 parts PASS", 2.0, 2)
    empty = combine("c", "smoke", "t", [])
    assert (empty.status, empty.detail, empty.n) == (Status.INCONCLUSIVE, "no data", 0)


def test_response_check_fails_on_no_answer_with_the_error_class_as_evidence() -> None:
    from readiness.core.verdict import response_check

    refused = response_check(id="x.base", phase="p", title="t", status=None, error="connect_error",
                             error_detail="connection refused (nothing accepted the connection)")
    assert refused.status is Status.FAIL and refused.observed == "connect_error" and refused.n == 1
    assert refused.detail == ("no answer: connect_error (connection refused (nothing accepted the connection)); "
                              "expected HTTP 200")
    tls = response_check(id="x.base", phase="p", title="t", status=None, error="tls_error", expected=204)
    assert tls.status is Status.FAIL and tls.detail == "no answer: tls_error; expected HTTP 204"
    assert response_check(id="x", phase="p", title="t", status=200, error=None).status is Status.PASS
    wrong = response_check(id="x", phase="p", title="t", status=503, error=None)
    assert wrong.status is Status.FAIL and wrong.observed == 503


def test_response_check_fails_a_body_cut_short_after_the_status_line() -> None:
    from readiness.core.verdict import response_check

    cut = response_check(id="x", phase="p", title="t", status=200, error="protocol_error",
                         error_detail="peer closed connection without sending complete message body")
    assert cut.status is Status.FAIL and cut.observed == "protocol_error"
    assert cut.detail.startswith("HTTP 200, then the body was cut short: protocol_error (peer closed")
    capped = response_check(id="x", phase="p", title="t", status=200, error="too_large")
    assert capped.status is Status.PASS  # an answer larger than the cap is still an answer


def test_a_latency_verdict_never_contradicts_the_interval_it_records() -> None:
    """PASS ⇒ ci_high ≤ threshold and FAIL ⇒ ci_low > threshold, whenever an interval is recorded."""
    rng = np.random.default_rng(20261207)
    for _ in range(300):
        n = int(rng.integers(1, 400))
        x = rng.lognormal(rng.uniform(0, 4), rng.uniform(0.1, 1.5), n)
        q = float(rng.choice([0.5, 0.9, 0.95, 0.99]))
        threshold = float(np.quantile(x, q) * rng.uniform(0.7, 1.3))
        c = latency_check(id="t", phase="p", title="t", samples_ms=x, threshold_ms=threshold, q=q)
        if c.status is Status.PASS and c.ci_high is not None:
            assert c.ci_high <= threshold
        if c.status is Status.FAIL and c.ci_low is not None:
            assert c.ci_low > threshold


def test_latency_check_widens_its_bounds_when_slow_requests_cluster_in_time() -> None:
    """A series whose slow requests arrive together carries less information about its tail
    than its n suggests: the check says so and its bounds widen (or are withheld)."""
    rng = np.random.default_rng(3)
    calm = rng.lognormal(3.0, 0.3, size=200)
    clustered = calm.copy()
    clustered[100:116] *= 6  # one slow spell of 16 consecutive requests
    shuffled = rng.permutation(clustered)
    spell = latency_check(**WHERE, samples_ms=clustered, threshold_ms=1000)
    spread = latency_check(**WHERE, samples_ms=shuffled, threshold_ms=1000)
    assert "serial dependence: exceedances of P95 cluster" in spell.detail
    assert "serial dependence" not in spread.detail
    assert spell.ci_high is None or spell.ci_high >= spread.ci_high
    assert spell.ci_low is None or spell.ci_low <= spread.ci_low
