"""Latency statistics: percentile tables, before/after differences, sample-size planning,
histogram/ECDF aggregates, and the regression/improvement verdicts built on them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from readiness.core.check import Status
from readiness.core.verdict import improvement_check, regression_check
from readiness.stats.latency import (
    DIFFERENCE_METHOD,
    ecdf,
    histogram,
    percentile_summary,
    plan_difference_sample_size,
    plan_sample_size,
    quantile_difference,
)
from readiness.stats.quantiles import min_n_for_bound, order_statistic_ranks, quantile_interval

WHERE = {"id": "latency.A7.lead", "phase": "latency", "title": "t"}
ONE_TO_200 = np.random.default_rng(3).permutation(np.arange(1.0, 201.0))  # order must not matter


# ---------------------------------------------------------------- percentile_summary

# high ranks (selection walks up), low ranks (walks down), and more ranks than a
# partition per rank is worth (one sort)
QS_SETS = [(0.5, 0.9, 0.95, 0.99), (0.01, 0.05, 0.1), tuple(np.linspace(0.05, 0.95, 19))]


@pytest.mark.parametrize("qs", QS_SETS, ids=["high", "low", "many"])
@pytest.mark.parametrize("n", [1, 5, 59, 72, 200, 299, 368, 1000, 20_000])
def test_summary_agrees_with_quantile_interval(n: int, qs: tuple[float, ...]) -> None:
    rng = np.random.default_rng(n)
    x = rng.lognormal(3.0, 0.7, size=n)
    x[rng.random(n) < 0.02] = math.inf
    x[rng.random(n) < 0.02] = math.nan
    for row in percentile_summary(x, qs=qs):
        two = quantile_interval(x, row.q, 0.95, "two")
        upper = quantile_interval(x, row.q, 0.95, "upper")
        assert (row.n, row.dropped, row.estimate, row.upper) == (two.n, two.dropped, two.estimate, upper.high)
        assert (row.low, row.high) == ((two.low, two.high) if two.exists else (None, None))
        assert row.needs_n == two.needs_n and row.upper_needs_n == upper.needs_n
        assert row.unanswered == int(np.isposinf(x).sum())


def test_summary_rows_on_known_data() -> None:
    p50, p95, p99 = percentile_summary(ONE_TO_200)
    assert (p95.estimate, p95.low, p95.high, p95.upper, p95.needs_n, p95.upper_needs_n) == (
        190.0, 184.0, 197.0, 196.0, None, None)
    assert (p50.estimate, p50.low, p50.high, p50.upper) == (100.0, 86.0, 115.0, 113.0)
    # P99 at n=200: a two-sided 95% interval needs n >= 368, a one-sided upper bound n >= 299.
    assert (p99.estimate, p99.low, p99.high, p99.upper, p99.needs_n, p99.upper_needs_n) == (
        198.0, None, None, None, 368, 299)
    assert p95.exists and not p99.exists
    assert p95.describe() == "P95 = 190 ms, 95% CI [184, 197] ms, upper bound 196 ms (n=200)"
    assert p99.describe() == "P99 = 198 ms, 95% CI needs n ≥ 368, upper bound needs n ≥ 299 (n=200)"
    assert p95.describe(unit="") == "P95 = 190, 95% CI [184, 197], upper bound 196 (n=200)"
    assert p95.to_dict() == {"percentile": "P95", "q": 0.95, "n": 200, "estimate": 190.0, "low": 184.0,
                             "high": 197.0, "upper": 196.0, "confidence": 0.95, "needs_n": None,
                             "upper_needs_n": None, "unanswered": 0, "dropped": 0}


def test_summary_counts_unanswered_and_dropped() -> None:
    x = np.concatenate([np.arange(1.0, 191.0), np.full(10, math.inf), [math.nan] * 3])
    p50, p95 = percentile_summary(x, qs=(0.5, 0.95))
    # 10 of 200 requests got no answer: P95 is the 190th value, the last answered one, and
    # its upper bound (rank 196) is an unanswered request.
    assert (p95.estimate, p95.high, p95.upper) == (190.0, math.inf, math.inf)
    assert p95.describe() == ("P95 = 190 ms, 95% CI [184, inf] ms, upper bound inf ms "
                              "(n=200 incl. 10 unanswered, 3 NaN dropped)")
    assert p50.estimate == 100.0


def test_summary_without_data_states_the_n_needed() -> None:
    (row,) = percentile_summary([math.nan], qs=(0.95,))
    assert (row.n, row.estimate, row.dropped, row.exists) == (0, None, 1, False)
    assert row.describe() == "P95: no data, 95% CI needs n ≥ 72, upper bound needs n ≥ 59 (n=0, 1 NaN dropped)"


def test_summary_leaves_the_input_untouched() -> None:
    x = np.random.default_rng(1).lognormal(3.0, 0.5, 1000)
    before = x.copy()
    percentile_summary(x)
    histogram(x)
    ecdf(x)
    quantile_difference(x, x, 0.95)
    assert np.array_equal(x, before)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"samples_ms": [1.0], "qs": ()}, "percentile_summary: qs must name at least one quantile"),
    ({"samples_ms": [1.0], "qs": (0.5, 1.0)}, "percentile_summary: q must be strictly between 0 and 1, got 1.0"),
    ({"samples_ms": [1.0], "confidence": 95}, "percentile_summary: confidence must be strictly between 0 and 1, got 95"),
    ({"samples_ms": [[1.0, 2.0]]}, "percentile_summary: samples_ms must be one-dimensional, got shape (1, 2)"),
    ({"samples_ms": [1.0, -0.5]}, "percentile_summary: samples_ms must be >= 0 (latencies in ms), got -0.5"),
    ({"samples_ms": [1.0, -math.inf]}, "percentile_summary: samples_ms must be >= 0 (latencies in ms), got -inf"),
    ({"samples_ms": ["fast"]}, "percentile_summary: samples_ms must be numbers (latencies in ms)"),
])
def test_summary_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        percentile_summary(**kwargs)
    assert str(err.value) == message


# ---------------------------------------------------------------- quantile_difference

def test_difference_combines_per_run_intervals_at_root_confidence() -> None:
    # Each run's interval is at confidence sqrt(0.95): for n=200 and P95 that is ranks 183..197.
    assert order_statistic_ranks(200, 0.95, math.sqrt(0.95), "two") == (183, 197)
    d = quantile_difference(ONE_TO_200, 2 * ONE_TO_200, 0.95)
    assert (d.before, d.after, d.diff, d.diff_low, d.diff_high) == (190.0, 380.0, 190.0, 366 - 197, 394 - 183)
    assert (d.ratio, d.ratio_low, d.ratio_high) == (2.0, 366 / 197, 394 / 183)
    assert (d.n_before, d.n_after, d.needs_n, d.exists, d.method) == (200, 200, None, True, DIFFERENCE_METHOD)
    assert d.describe() == ("P95 after - before = 190 ms, 95% CI [169, 211] ms; after/before = 2, "
                            "95% CI [1.86, 2.15] (n=200 before, 200 after)")
    assert d.to_dict()["percentile"] == "P95" and d.to_dict()["diff_low"] == 169.0


def test_difference_needs_n_per_run() -> None:
    # P99 per run at sqrt(0.95) two-sided: 0.99^n <= (1 - sqrt(0.95)) / 2 from n = 435 on.
    assert plan_difference_sample_size(0.99) == 435
    x = np.random.default_rng(5).lognormal(3.0, 0.5, 435)
    short = quantile_difference(x[:434], x, 0.99)
    assert (short.needs_n, short.diff_low, short.ratio_high, short.exists) == (435, None, None, False)
    assert short.diff is not None  # the point estimate exists without an interval
    assert short.missing() == "P99: 95% CI needs n ≥ 435 per run"
    assert quantile_difference(x, x, 0.99).exists


def test_difference_with_unanswered_and_zero_latencies() -> None:
    slow = np.concatenate([np.arange(1.0, 151.0), np.full(50, math.inf)])  # 25% never answered
    d = quantile_difference(ONE_TO_200, slow, 0.95)
    assert (d.after, d.diff, d.diff_high, d.ratio, d.ratio_high) == (math.inf,) * 5
    assert d.diff_low == math.inf and d.ratio_low == math.inf  # even the best case is unbounded
    both = quantile_difference(np.full(200, math.inf), np.full(200, math.inf), 0.5)
    # inf - inf has no value: no estimate, and bounds at their uninformative ends
    assert (both.diff, both.ratio, both.diff_low, both.diff_high, both.ratio_low, both.ratio_high) == (
        None, None, -math.inf, math.inf, 0.0, math.inf)
    zeros = quantile_difference(np.zeros(200), np.zeros(200), 0.5)
    assert (zeros.diff, zeros.ratio, zeros.ratio_low, zeros.ratio_high) == (0.0, None, 0.0, math.inf)


def test_difference_without_data() -> None:
    d = quantile_difference([], [math.nan, 5.0], 0.5)
    assert (d.n_before, d.n_after, d.before, d.after, d.diff, d.dropped_after) == (0, 1, None, 5.0, None, 1)
    assert d.missing() == "no baseline"
    assert d.describe() == "no baseline (n=0 before, 1 after); 1 NaN sample dropped"
    assert quantile_difference([1.0], [], 0.5).missing() == "no data"


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (([1.0], [-1.0], 0.5), {}, "quantile_difference: after_ms must be >= 0 (latencies in ms), got -1"),
    (([1.0], [1.0], 0.0), {}, "quantile_difference: q must be strictly between 0 and 1, got 0.0"),
    (([[1.0]], [1.0], 0.5), {"where": "me"}, "me: before_ms must be one-dimensional, got shape (1, 1)"),
])
def test_difference_rejects_bad_input(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        quantile_difference(*args, **kwargs)
    assert str(err.value) == message


# ---------------------------------------------------------------- planning

@pytest.mark.parametrize(("q", "sided", "expected"), [
    (0.99, "upper", 299), (0.99, "two", 368), (0.95, "upper", 59), (0.5, "two", 6), (0.999, "upper", 2995),
])
def test_plan_sample_size(q: float, sided: str, expected: int) -> None:
    assert plan_sample_size(q, 0.95, sided) == expected  # type: ignore[arg-type]


def test_plan_difference_is_the_per_run_two_sided_bound_at_root_confidence() -> None:
    for q in (0.5, 0.9, 0.95, 0.99):
        n = plan_difference_sample_size(q)
        assert n == min_n_for_bound(q, math.sqrt(0.95), "two")
        x = np.arange(1.0, n + 1.0)
        assert quantile_difference(x, x, q).exists and not quantile_difference(x[:-1], x, q).exists
    assert plan_difference_sample_size(0.95) == 86


@pytest.mark.parametrize(("call", "message"), [
    (lambda: plan_sample_size(0.95, 0.95, "both"),
     "plan_sample_size: sided must be one of 'two', 'upper', 'lower', got 'both'"),
    (lambda: plan_sample_size(1.5), "plan_sample_size: q must be strictly between 0 and 1, got 1.5"),
    (lambda: plan_difference_sample_size(0.95, 1.0),
     "plan_difference_sample_size: confidence must be strictly between 0 and 1, got 1.0"),
])
def test_planners_reject_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


# ---------------------------------------------------------------- histogram and ECDF

def test_histogram_has_fixed_size_and_an_open_no_answer_bin() -> None:
    rng = np.random.default_rng(2)
    for n in (10, 1000, 100_000):
        x = rng.lognormal(3.0, 0.6, n)
        x[:3] = math.inf
        frame = histogram(np.append(x, math.nan), bins=20)
        assert list(frame.columns) == ["bin_low_ms", "bin_high_ms", "count"]
        assert len(frame) == 21 and frame["count"].sum() == n
        last = frame.iloc[-1]
        finite = x[np.isfinite(x)]
        assert (last.bin_low_ms, last.bin_high_ms, last["count"]) == (finite.max(), math.inf, 3)
        counts, edges = np.histogram(finite, bins=20)
        assert frame["count"].iloc[:-1].tolist() == counts.tolist()
        assert np.array_equal(frame.bin_low_ms.iloc[:-1], edges[:-1])


def test_log_histogram_bins_have_equal_ratio() -> None:
    x = np.array([1.0, 2.0, 10.0, 100.0, 1000.0])
    frame = histogram(x, bins=3, log=True)
    assert frame.bin_low_ms.tolist() == pytest.approx([1.0, 10.0, 100.0, 1000.0])
    assert frame.bin_high_ms.tolist()[:3] == pytest.approx([10.0, 100.0, 1000.0])
    assert frame["count"].tolist() == [2, 1, 2, 0]  # the last bin is closed on both sides
    with_zero = histogram(np.append(x, 0.0), bins=3, log=True)
    assert with_zero.bin_low_ms.iloc[0] == 0.0 and with_zero["count"].iloc[0] == 3


def test_histogram_edge_cases() -> None:
    empty = histogram([math.nan])
    assert list(empty.columns) == ["bin_low_ms", "bin_high_ms", "count"] and len(empty) == 0
    all_lost = histogram([math.inf, math.inf], bins=5)
    assert all_lost.to_dict("list") == {"bin_low_ms": [math.inf], "bin_high_ms": [math.inf], "count": [2]}
    same = histogram([7.0, 7.0, 7.0], bins=2)
    assert same.to_dict("list") == {"bin_low_ms": [7.0, 7.5, 8.0], "bin_high_ms": [7.5, 8.0, math.inf],
                                     "count": [3, 0, 0]}


def test_ecdf_is_nearest_rank_on_a_fixed_grid() -> None:
    x = np.concatenate([np.arange(1.0, 191.0), np.full(10, math.inf)])
    frame = ecdf(x, points=21)
    assert list(frame.columns) == ["p", "value_ms"] and len(frame) == 21
    assert frame.p.tolist() == pytest.approx([i / 20 for i in range(21)])
    assert frame.value_ms.iloc[0] == 1.0 and frame.value_ms.iloc[10] == 100.0
    assert frame.value_ms.iloc[19] == 190.0 and frame.value_ms.iloc[20] == math.inf
    big = np.random.default_rng(4).lognormal(3.0, 0.5, 50_000)
    curve = ecdf(big)
    assert len(curve) == 101 and curve.value_ms.is_monotonic_increasing
    assert curve.value_ms.iloc[95] == percentile_summary(big, qs=(0.95,))[0].estimate
    assert len(ecdf([])) == 0 and list(ecdf([]).columns) == ["p", "value_ms"]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: histogram([1.0], bins=0), "histogram: bins must be an integer between 1 and 1000, got 0"),
    (lambda: histogram([1.0], bins=True), "histogram: bins must be an integer between 1 and 1000, got True"),
    (lambda: histogram([1.0], bins=2.5), "histogram: bins must be an integer between 1 and 1000, got 2.5"),
    (lambda: histogram([-3.0]), "histogram: samples_ms must be >= 0 (latencies in ms), got -3"),
    (lambda: ecdf([1.0], points=1), "ecdf: points must be an integer between 2 and 10001, got 1"),
    (lambda: ecdf(pd.Series([1.0, -2.0])), "ecdf: samples_ms must be >= 0 (latencies in ms), got -2"),
])
def test_aggregates_reject_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


# ---------------------------------------------------------------- regression_check

TEST_AT_1_2 = "one-sided exceedance test at the pooled P95"


@pytest.mark.parametrize(("factor", "status", "counts", "ending"), [
    (1.0, Status.PASS, "216 ms: 0/200 after vs 20/200 before ×1.2 above it, p = 1 for worse, p < 1e-6 for better",
     "a rise of at most +20% (×1.2) is shown"),
    (1.2, Status.INCONCLUSIVE, "228 ms: 10/200 after vs 10/200 before ×1.2 above it, p = 0.59 for worse, "
                               "p = 0.59 for better", "neither a rise beyond +20% (×1.2) nor one within it is shown"),
    (2.0, Status.FAIL, "360 ms: 20/200 after vs 0/200 before ×1.2 above it, p < 1e-6 for worse, p = 1 for better",
     "a rise beyond +20% (×1.2) is shown"),
])
def test_regression_check(factor: float, status: Status, counts: str, ending: str) -> None:
    """Decided by the exceedance test; the ratio and its 90% interval are shown for the reader."""
    check = regression_check(**WHERE, before_ms=ONE_TO_200, after_ms=factor * ONE_TO_200, app="A7")
    interval = {1.0: "1, 90% CI [0.934, 1.07]", 1.2: "1.2, 90% CI [1.12, 1.28]", 2.0: "2, 90% CI [1.87, 2.14]"}
    assert (check.status, check.detail) == (status, (
        f"P95 after/before {interval[factor]}; {TEST_AT_1_2} {counts} (one-sided α = 0.05): {ending}; "
        "detects a rise to ×1.51 at 80% power at n=200 (n=200 before, 200 after)"))
    assert (check.unit, check.comparator, check.threshold, check.n) == ("ratio", "<=", 1.2, 200)
    assert (check.observed, check.ci_low, check.ci_high, check.ci_level) == pytest.approx(
        (factor, factor * 184 / 197, factor * 197 / 184, 0.9))
    assert (check.severity, check.app, check.rule, check.sided, check.alpha) == ("P1", "A7", "comparison",
                                                                                  "one-sided", 0.05)
    assert (check.p_value <= 0.05) is (status is Status.FAIL)


def test_regression_check_cannot_judge_without_enough_data() -> None:
    no_base = regression_check(**WHERE, before_ms=[], after_ms=ONE_TO_200)
    assert (no_base.status, no_base.detail, no_base.observed) == (
        Status.INCONCLUSIVE, "no baseline (n=0 before, 200 after)", None)
    no_after = regression_check(**WHERE, before_ms=ONE_TO_200, after_ms=[math.nan, math.nan], detail="flag OFF")
    assert (no_after.status, no_after.detail, no_after.n) == (
        Status.INCONCLUSIVE, "no data (n=200 before, 0 after); 2 NaN samples dropped; flag OFF", 0)
    # P99 at n=200: even all four exceedances in the after run are not significant, and the check says
    # which n per run could FAIL at all
    p99 = regression_check(**WHERE, before_ms=ONE_TO_200, after_ms=3 * ONE_TO_200, q=0.99)
    assert (p99.status, p99.ci_low, p99.ci_high, p99.observed) == (Status.INCONCLUSIVE, None, None, 3.0)
    assert p99.detail.startswith("P99 after/before 3, 90% CI needs n ≥ 365 per run; ")
    assert "cannot FAIL at these sizes (all 4 exceedances in the after run would give p = 0.062): " \
           "equal runs need n ≥ 250 each" in p99.detail


def test_regression_allowance_is_a_parameter() -> None:
    check = regression_check(**WHERE, before_ms=ONE_TO_200, after_ms=2 * ONE_TO_200, max_increase_pct=150)
    assert (check.status, check.threshold) == (Status.PASS, 2.5)
    assert "before ×2.5 above it" in check.detail and ": a rise of at most +150% (×2.5) is shown" in check.detail


@pytest.mark.parametrize(("scale", "factor", "floor", "status"), [
    (0.02, 2.0, 10, Status.PASS),          # 3.8 ms → 7.6 ms: doubled, but within the +10 ms floor
    (1.0, 2.0, 180, Status.INCONCLUSIVE),  # +190 ms against a +180 ms floor: not shown beyond it
    (1.0, 2.0, 100, Status.FAIL),          # +190 ms, well beyond a +100 ms floor
    (1.0, 1.2, 10, Status.INCONCLUSIVE),   # at the allowance
    (1.0, 1.2, 300, Status.PASS),          # +38 ms, within a +300 ms floor
])
def test_regression_needs_a_rise_beyond_the_noise_floor(scale: float, factor: float, floor: float,
                                                         status: Status) -> None:
    """A few-ms endpoint that doubles is no regression; a real rise still FAILs; the ratio stays the headline.
    The allowance is before × 1.2 or before + floor, whichever is larger."""
    check = regression_check(**WHERE, before_ms=scale * ONE_TO_200, after_ms=factor * scale * ONE_TO_200,
                             min_increase_ms=floor)
    assert check.status is status, check.detail
    assert f"before ×1.2 (at least +{floor:g} ms) above it" in check.detail
    assert (check.unit, check.threshold, check.observed) == ("ratio", 1.2, pytest.approx(factor))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_increase_ms": -1}, "regression_check latency.A7.lead: min_increase_ms must be a finite number >= 0, "
                              "got -1"),
    ({"max_increase_pct": -5}, "regression_check latency.A7.lead: max_increase_pct must be a finite number >= 0, "
                               "got -5"),
    ({"max_increase_pct": math.inf}, "regression_check latency.A7.lead: max_increase_pct must be a finite number "
                                     ">= 0, got inf"),
    ({"max_increase_pct": "20"}, "regression_check latency.A7.lead: max_increase_pct must be a finite number >= 0, "
                                 "got '20'"),
    ({"q": 95}, "regression_check latency.A7.lead: q must be strictly between 0 and 1, got 95"),
    ({"after_ms": [-1.0]}, "regression_check latency.A7.lead: after_ms must be >= 0 (latencies in ms), got -1"),
])
def test_regression_check_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        regression_check(**WHERE, **{"before_ms": ONE_TO_200, "after_ms": ONE_TO_200, **kwargs})
    assert str(err.value) == message


# ---------------------------------------------------------------- improvement_check

@pytest.mark.parametrize(("after", "status", "detail"), [
    (ONE_TO_200 / 2, Status.PASS, "P95 after - before -95 ms, 90% CI [-105, -85.5] ms; one-sided exceedance test "
                                  "at the pooled P95 180 ms: 0/200 after vs 20/200 before above it, p = 1 for worse, "
                                  "p < 1e-6 for better (one-sided α = 0.05): after is faster"),
    (ONE_TO_200, Status.INCONCLUSIVE, "P95 after - before 0 ms, 90% CI [-13, 13] ms; one-sided exceedance test at "
                                      "the pooled P95 190 ms: 10/200 after vs 10/200 before above it, p = 0.59 for "
                                      "worse, p = 0.59 for better (one-sided α = 0.05): neither faster nor slower is "
                                      "shown"),
    (ONE_TO_200 + 20, Status.FAIL, "P95 after - before 20 ms, 90% CI [7, 33] ms; one-sided exceedance test at the "
                                   "pooled P95 200 ms: 20/200 after vs 0/200 before above it, p < 1e-6 for worse, "
                                   "p = 1 for better (one-sided α = 0.05): after is slower"),
])
def test_improvement_check(after: np.ndarray, status: Status, detail: str) -> None:
    check = improvement_check(**WHERE, before_ms=ONE_TO_200, after_ms=after)
    assert (check.status, check.unit, check.comparator, check.threshold) == (status, "ms", "<", 0.0)
    assert check.detail == f"{detail}; detects a rise to ×1.26 at 80% power at n=200 (n=200 before, 200 after)"
    assert check.ci_low is not None and check.ci_high is not None and check.ci_low < check.observed < check.ci_high


def test_improvement_check_without_enough_data() -> None:
    check = improvement_check(**WHERE, before_ms=ONE_TO_200[:50], after_ms=ONE_TO_200, q=0.95)
    assert check.status is Status.INCONCLUSIVE
    assert "90% CI needs n ≥ 72 per run" in check.detail and "equal runs need n ≥ 50 each" in check.detail
    assert improvement_check(**WHERE, before_ms=[], after_ms=[]).detail == "no baseline (n=0 before, 0 after)"
    with pytest.raises(ValueError) as err:
        improvement_check(**WHERE, before_ms=ONE_TO_200, after_ms=ONE_TO_200, confidence=0)
    assert str(err.value) == "improvement_check latency.A7.lead: confidence must be strictly between 0 and 1, got 0"


def test_comparison_of_two_series_without_good_answers_is_inconclusive() -> None:
    from readiness.core.check import Status
    from readiness.core.verdict import improvement_check, regression_check

    inf = [float("inf")] * 200
    for rule in (improvement_check, regression_check):
        c = rule(id="x.y", phase="p", title="t", before_ms=inf, after_ms=inf, q=0.95)
        assert c.status is Status.INCONCLUSIVE, c
        assert c.detail == "P95 undefined: no successful answer in either series at this quantile " \
                           "(n=200 before, 200 after)"


def test_a_gating_comparison_says_which_n_catches_the_rise_it_must_catch() -> None:
    """At 200 per run the test catches about ×1.5; a gate that must catch ×1.44 is told its n."""
    check = regression_check(**WHERE, before_ms=ONE_TO_200, after_ms=ONE_TO_200, design_ratio=1.44)
    assert "detects a rise to ×1.51 at 80% power at n=200" in check.detail
    need = int(check.detail.split("a rise to ×1.44 needs n ≥ ")[1].split(" ")[0])
    assert 200 < need < 2000  # 250 for this (uniform) shape
    enough = regression_check(**WHERE, before_ms=ONE_TO_200, after_ms=ONE_TO_200, design_ratio=1.6)
    assert "needs n ≥" not in enough.detail  # ×1.51 at this n already
