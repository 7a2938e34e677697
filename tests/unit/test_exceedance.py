"""The one-sided exceedance test behind the before/after latency rule: its size at the
boundary, its power, the planning figures that predict that power, its handling of NaN,
``+inf`` and empty runs, and :func:`readiness.core.comparison_rule.compare` built on it.

Every simulation is seeded. Figures measured here (n = 200 per run, P95, +20% allowance,
lognormal sigma 0.6, one-sided α = 5%, 1000-1500 replications): P(FAIL) at x1.2 ≈ 0.02,
power at x1.78 ≈ 0.8, P(PASS) with no change ≈ 0.24 (0.93 at n = 1000 per run).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import fisher_exact

from readiness.core.check import Status
from readiness.core.comparison_rule import compare
from readiness.stats.exceedance import (
    allowance,
    detectable_ratio,
    exceedance_power,
    exceedance_test,
    min_n_to_fail,
    plan_exceedance_sample_size,
)

SIGMA, N, Q, LIMIT, ALPHA = 0.6, 200, 0.95, 1.2, 0.05
ENDINGS = {Status.PASS: ": within", Status.FAIL: ": beyond", Status.INCONCLUSIVE: ": undecided"}


def _rates(ratio: float, reps: int, seed: int, *, n: int = N, limit: float = LIMIT) -> tuple[float, float]:
    """Share of FAILs (p_worse <= α) and PASSes (p_better <= α) when after = ratio x a fresh
    lognormal run and before is another, both of size n."""
    rng = np.random.default_rng(seed)
    fail = passed = 0
    for _ in range(reps):
        before = rng.lognormal(3.0, SIGMA, n)
        after = ratio * rng.lognormal(3.0, SIGMA, n)
        t = exceedance_test(before, after, Q, limit=limit)
        assert t.p_worse is not None and t.p_better is not None
        fail += t.p_worse <= ALPHA
        passed += t.p_better <= ALPHA
    return fail / reps, passed / reps


# ---------------------------------------------------------------- operating characteristics

def test_size_at_the_boundary_is_at_most_alpha() -> None:
    """after = 1.2 x before is the edge of "a rise of at most +20%": the test is exact
    there, so it FAILs at most α of the time (Fisher's discreteness makes it ≈ 2%)."""
    fail, passed = _rates(LIMIT, 1500, seed=1)
    assert fail <= ALPHA + 0.01
    assert passed <= ALPHA + 0.01  # the PASS side is exact at the boundary too
    assert fail == pytest.approx(exceedance_power(LIMIT, N, N, Q, limit=LIMIT), abs=0.015)


@pytest.mark.parametrize(("ratio", "least"), [(1.5, 0.25), (1.78, 0.7), (2.0, 0.9)])
def test_power_of_the_fail_side(ratio: float, least: float) -> None:
    fail, passed = _rates(ratio, 1000, seed=2)
    assert fail >= least and passed == 0.0
    assert fail == pytest.approx(exceedance_power(ratio, N, N, Q, limit=LIMIT), abs=0.05)


def test_no_change_passes_far_more_often_than_the_interval_rule() -> None:
    """The interval rule PASSed an unchanged run ~3% of the time at n = 200; the test does
    ~24%, and most of the time from n = 1000 per run on."""
    fail, passed = _rates(1.0, 1000, seed=3)
    assert fail == 0.0 and 0.18 <= passed <= 0.32
    fail_1000, passed_1000 = _rates(1.0, 300, seed=4, n=1000)
    assert fail_1000 == 0.0 and passed_1000 >= 0.85


def test_detectable_ratio_agrees_with_simulated_power() -> None:
    ratio = detectable_ratio(N, N, Q, limit=LIMIT, sigma=SIGMA)
    assert ratio is not None and 1.65 <= ratio <= 1.85
    fail, _ = _rates(ratio, 1000, seed=5)
    assert fail == pytest.approx(0.80, abs=0.05)
    # from a before sample's own shape: a large one recovers the lognormal figure
    big = np.random.default_rng(6).lognormal(3.0, SIGMA, 5000)
    assert detectable_ratio(N, N, Q, limit=LIMIT, before_ms=big) == pytest.approx(ratio, abs=0.05)
    # a short one is noisier but in the same region
    small = np.random.default_rng(7).lognormal(3.0, SIGMA, N)
    from_small = detectable_ratio(N, N, Q, limit=LIMIT, before_ms=small)
    assert from_small is not None and 1.4 <= from_small <= 2.2


def test_planned_n_reaches_the_power() -> None:
    n = plan_exceedance_sample_size(1.44, Q, limit=LIMIT, sigma=SIGMA)
    assert n is not None and 500 <= n <= 800
    assert exceedance_power(1.44, n, n, Q, limit=LIMIT) >= 0.8 > exceedance_power(1.44, n // 2, n // 2, Q, limit=LIMIT)
    fail, _ = _rates(1.44, 300, seed=8, n=n)
    assert fail == pytest.approx(0.80, abs=0.07)
    assert plan_exceedance_sample_size(1.1, Q, limit=LIMIT, max_n=100_000) is None  # within the allowance


def test_power_planning_edges() -> None:
    assert detectable_ratio(N, N, 0.99, limit=LIMIT) is None  # even all 4 exceedances after: p = 0.062
    assert (min_n_to_fail(0.95), min_n_to_fail(0.99), min_n_to_fail(0.5)) == (50, 250, 4)
    assert detectable_ratio(0, N, Q) is None and exceedance_power(2.0, N, 0, Q) == 0.0
    assert detectable_ratio(N, N, Q, before_ms=[math.inf, math.nan]) is None  # no finite shape
    powers = [exceedance_power(r, N, N, Q, limit=LIMIT) for r in (1.0, 1.2, 1.5, 2.0, 3.0)]
    assert powers == sorted(powers) and powers[0] < 0.001 and powers[-1] > 0.999
    with pytest.raises(ValueError, match="median_ms must give the scale"):
        detectable_ratio(N, N, Q, floor_ms=5.0)
    # a noise floor makes a fast endpoint's rise harder to detect
    fast = np.random.default_rng(9).lognormal(1.0, SIGMA, N)  # median ~2.7 ms
    with_floor = detectable_ratio(N, N, Q, before_ms=fast, limit=LIMIT, floor_ms=10.0)
    without = detectable_ratio(N, N, Q, before_ms=fast, limit=LIMIT)
    assert with_floor is not None and without is not None and with_floor > 1.5 * without


# ---------------------------------------------------------------- the test itself

def test_p_values_are_fishers_exact_test_at_the_pooled_quantile() -> None:
    rng = np.random.default_rng(10)
    before, after = rng.lognormal(3.0, SIGMA, 150), 1.6 * rng.lognormal(3.0, SIGMA, 250)
    t = exceedance_test(before, after, 0.9, limit=1.2, floor_ms=3.0)
    moved = allowance(before, 1.2, 3.0)
    pooled = np.sort(np.concatenate((after, moved)))
    assert t.threshold == pooled[math.ceil(0.9 * 400) - 1] and t.tie_rule == ">"
    assert (t.exceed_after, t.exceed_before) == (int((after > t.threshold).sum()), int((moved > t.threshold).sum()))
    assert t.exceedances == 400 - 360
    table = [[t.exceed_after, 250 - t.exceed_after], [t.exceed_before, 150 - t.exceed_before]]
    assert t.p_worse == pytest.approx(fisher_exact(table, alternative="greater").pvalue, rel=1e-9)
    assert t.p_better == pytest.approx(fisher_exact(table, alternative="less").pvalue, rel=1e-9)


def test_allowance_is_the_larger_of_the_ratio_and_the_floor() -> None:
    assert allowance(np.array([1.0, 100.0, math.inf]), 1.2, 10.0).tolist() == [11.0, 120.0, math.inf]
    assert allowance(np.array([5.0]), 1.0, 0.0).tolist() == [5.0]


def test_nan_is_dropped_and_counted_inf_is_kept() -> None:
    rng = np.random.default_rng(11)
    before = np.r_[rng.lognormal(3.0, SIGMA, 200), [math.nan] * 3]
    after = np.r_[rng.lognormal(3.0, SIGMA, 170), [math.inf] * 30, [math.nan]]
    t = exceedance_test(before, after, Q, limit=LIMIT)
    assert (t.n_before, t.n_after, t.dropped_before, t.dropped_after) == (200, 200, 3, 1)
    assert (t.unanswered_before, t.unanswered_after) == (0, 30)
    # 15% unanswered after: its P95 is inf; the 20 pooled exceedances are all unanswered
    # after-requests, counted at the threshold (+inf) since nothing is strictly above it
    assert (t.threshold, t.tie_rule, t.exceed_after, t.exceed_before) == (math.inf, ">=", 30, 0)
    assert t.p_worse is not None and t.p_worse < 1e-6


def test_all_unanswered_and_empty_runs_never_raise() -> None:
    inf = [math.inf] * 50
    both = exceedance_test(inf, inf, Q)
    assert both.degenerate and (both.p_worse, both.p_better) == (1.0, 1.0)
    after_dead = exceedance_test(np.arange(1.0, 51.0), inf, Q)
    assert after_dead.p_worse is not None and after_dead.p_worse < 1e-6 and after_dead.exceed_after == 50
    zeros = exceedance_test(np.zeros(30), np.zeros(30), 0.5)
    assert zeros.degenerate and zeros.p_worse == 1.0
    for before, after, reason in (([], [1.0], "no baseline"), ([1.0], [math.nan], "no data"),
                                  ([], [], "no baseline")):
        t = exceedance_test(before, after, Q)
        assert t.missing() == reason and t.p_worse is None and t.p_better is None and t.threshold is None
        assert t.smallest_p_worse() is None and t.degenerate


def test_ties_at_the_threshold_keep_the_size() -> None:
    """Latencies rounded to the ms: many samples sit at the pooled threshold, and only
    those strictly above count. The classification depends on the pooled values only, so
    the test stays exact: no change FAILs at most α of the time."""
    rng = np.random.default_rng(12)
    fails = 0
    for _ in range(600):
        before, after = np.round(rng.lognormal(1.5, 0.4, N)), np.round(rng.lognormal(1.5, 0.4, N))
        t = exceedance_test(before, after, Q)
        assert t.p_worse is not None
        fails += t.p_worse <= ALPHA
    assert fails / 600 <= ALPHA


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"q": 0.0}, "exceedance_test: q must be strictly between 0 and 1, got 0.0"),
    ({"q": 1}, "exceedance_test: q must be strictly between 0 and 1, got 1"),
    ({"limit": 0.9}, "exceedance_test: limit must be a finite number >= 1, got 0.9"),
    ({"floor_ms": -1.0}, "exceedance_test: floor_ms must be a finite number >= 0, got -1.0"),
    ({"floor_ms": math.nan}, "exceedance_test: floor_ms must be a finite number >= 0, got nan"),
    ({"before_ms": [[1.0, 2.0]]}, "exceedance_test: before_ms must be one-dimensional, got shape (1, 2)"),
    ({"after_ms": ["fast"]}, "exceedance_test: after_ms must be numbers (latencies in ms)"),
])
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    call = {"before_ms": [1.0, 2.0], "after_ms": [1.0, 2.0], "q": Q, **kwargs}
    with pytest.raises(ValueError) as err:
        exceedance_test(**call)
    assert str(err.value) == message


def test_improvement_mode() -> None:
    """limit=1, floor_ms=0: PASS side = after faster, FAIL side = after slower."""
    rng = np.random.default_rng(13)
    faster = slower = 0
    for _ in range(300):
        before = rng.lognormal(3.0, SIGMA, N)
        t = exceedance_test(before, rng.lognormal(3.0, SIGMA, N) / 1.5, Q)
        faster += t.p_better is not None and t.p_better <= ALPHA
        u = exceedance_test(before, 1.5 * rng.lognormal(3.0, SIGMA, N), Q)
        slower += u.p_worse is not None and u.p_worse <= ALPHA
    assert faster / 300 >= 0.8 and slower / 300 >= 0.8


# ---------------------------------------------------------------- compare()

def test_compare_decides_with_the_test_and_says_so() -> None:
    rng = np.random.default_rng(14)
    before = rng.lognormal(3.0, SIGMA, N)
    c = compare(before, 2.0 * rng.lognormal(3.0, SIGMA, N), Q, 0.95, where="w", ratio=True, limit=LIMIT,
                endings=ENDINGS)
    assert c.status is Status.FAIL and c.p_value is not None and c.p_value <= 0.05
    assert (c.alpha, c.level, c.n_after) == (0.05, 0.90, N)
    assert c.detectable is not None and 1.3 < c.detectable < 2.5
    assert c.low is not None and c.high is not None and c.low < c.observed < c.high
    t = c.test
    assert t is not None and t.exceed_after is not None and t.exceed_before is not None
    assert "one-sided exceedance test at the pooled P95" in c.text
    assert f"{t.exceed_after}/200 after vs {t.exceed_before}/200 before ×1.2 above it" in c.text
    assert "(one-sided α = 0.05): beyond; detects a rise to ×" in c.text
    assert c.text.endswith("at 80% power at n=200 (n=200 before, 200 after)")


def test_compare_passes_unchanged_large_runs_and_is_undecided_at_the_limit() -> None:
    rng = np.random.default_rng(15)
    before = rng.lognormal(3.0, SIGMA, 2000)
    same = compare(before, rng.lognormal(3.0, SIGMA, 2000), Q, 0.95, where="w", ratio=True, limit=LIMIT,
                   endings=ENDINGS)
    assert same.status is Status.PASS and same.p_better is not None and same.p_better <= 0.05
    edge = compare(np.arange(1.0, 201.0), 1.2 * np.arange(1.0, 201.0), Q, 0.95, where="w", ratio=True,
                   limit=LIMIT, endings=ENDINGS)
    assert edge.status is Status.INCONCLUSIVE and "10/200 after vs 10/200 before ×1.2" in edge.text


def test_compare_noise_floor() -> None:
    """A 3 ms endpoint answering in 6 ms is +100% but within a +10 ms floor: PASS; the
    same doubling at 100 ms FAILs through the floor."""
    x = np.arange(1.0, 201.0)
    fast = compare(0.02 * x, 0.04 * x, Q, 0.95, where="w", ratio=True, limit=LIMIT, endings=ENDINGS, floor_ms=10.0)
    assert fast.status is Status.PASS and "before ×1.2 (at least +10 ms)" in fast.text
    slow = compare(x, 2 * x, Q, 0.95, where="w", ratio=True, limit=LIMIT, endings=ENDINGS, floor_ms=100.0)
    assert slow.status is Status.FAIL


def test_compare_improvement_and_missing_sides() -> None:
    x = np.arange(1.0, 201.0)
    faster = compare(x, x / 2, Q, 0.95, where="w", ratio=False, limit=0.0, endings=ENDINGS)
    assert (faster.status, faster.observed) == (Status.PASS, -95.0)
    assert "after - before -95 ms, 90% CI [" in faster.text and "0/200 after vs 20/200 before above it" in faster.text
    slower = compare(x, x + 20, Q, 0.95, where="w", ratio=False, limit=0.0, endings=ENDINGS)
    assert slower.status is Status.FAIL
    none = compare([], x, Q, 0.95, where="w", ratio=True, limit=LIMIT, endings=ENDINGS)
    assert (none.status, none.text, none.p_value, none.detectable) == (
        Status.INCONCLUSIVE, "no baseline (n=0 before, 200 after)", None, None)
    gone = compare(x, [math.nan], Q, 0.95, where="w", ratio=True, limit=LIMIT, endings=ENDINGS)
    assert gone.text == "no data (n=200 before, 0 after); 1 NaN sample dropped"
    dead = compare([math.inf] * 200, [math.inf] * 200, Q, 0.95, where="w", ratio=True, limit=LIMIT,
                   endings=ENDINGS)
    assert dead.status is Status.INCONCLUSIVE and dead.text.startswith("P95 undefined")
    small = compare(x, 3 * x, 0.99, 0.95, where="w", ratio=True, limit=LIMIT, endings=ENDINGS)
    assert small.status is Status.INCONCLUSIVE and small.detectable is None
    assert "cannot FAIL at these sizes (all 4 exceedances in the after run would give p = 0.062): " \
           "equal runs need n ≥ 250 each" in small.text
    with pytest.raises(ValueError, match="w: limit must be an allowed difference >= 0 ms, got -5"):
        compare(x, x, Q, 0.95, where="w", ratio=False, limit=-5, endings=ENDINGS)
    with pytest.raises(ValueError, match="w: confidence must be strictly between 0 and 1, got 1"):
        compare(x, x, Q, 1, where="w", ratio=True, limit=LIMIT, endings=ENDINGS)
