"""Order-statistic intervals for percentiles: ranks, sample-size thresholds, coverage."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy.stats import binom, norm

from readiness.stats.formatting import format_number
from readiness.stats.quantiles import (
    QuantileInterval,
    min_n_for_bound,
    order_statistic_ranks,
    quantile_interval,
    quantile_label,
)


def _binom_cdfs(n: int, q: float) -> list[float]:
    """[P(Binom(n, q) <= k) for k = 0..n], summed term by term, independent of scipy."""
    pmf = [math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(n + 1)]
    return [math.fsum(pmf[: k + 1]) for k in range(n + 1)]


def _brute_ranks(cdf: list[float], confidence: float, sided: str) -> tuple[int | None, int | None]:
    """Ranks straight from the definition P(X_(r) >= xi_q) = P(B <= r - 1), scanning all r."""
    n = len(cdf) - 1
    alpha = (1 - confidence) / 2 if sided == "two" else 1 - confidence
    # upper: smallest r whose miss probability P(X_(r) < xi_q) = P(B >= r) is <= alpha
    uppers = [r for r in range(1, n + 1) if 1 - cdf[r - 1] <= alpha]
    # lower: largest r whose miss probability P(X_(r) > xi_q) = P(B <= r - 1) is <= alpha
    lowers = [r for r in range(1, n + 1) if cdf[r - 1] <= alpha]
    low = max(lowers) if lowers and sided != "upper" else None
    high = min(uppers) if uppers and sided != "lower" else None
    return low, high


# ---------------------------------------------------------------- sample-size thresholds

@pytest.mark.parametrize(("q", "sided", "expected"), [
    (0.95, "upper", 59),   # 0.95^59 = 0.048 <= 0.05 < 0.95^58 = 0.051
    (0.99, "upper", 299),  # 0.99^299 = 0.0495 <= 0.05 < 0.99^298
    (0.99, "two", 368),    # 0.99^368 = 0.0248 <= 0.025 < 0.99^367
    (0.95, "two", 72),     # 0.95^72 = 0.0249 <= 0.025 < 0.95^71
    (0.50, "two", 6),      # 0.5^6 = 0.0156 <= 0.025 < 0.5^5 = 0.031
    (0.01, "lower", 299),  # mirror of the P99 upper bound
])
def test_min_n_for_bound_matches_closed_form(q: float, sided: str, expected: int) -> None:
    assert min_n_for_bound(q, 0.95, sided) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99, 0.999, 0.1, 0.01])
@pytest.mark.parametrize("sided", ["two", "upper", "lower"])
def test_min_n_for_bound_is_the_exact_boundary(q: float, sided: str) -> None:
    n = min_n_for_bound(q, 0.95, sided)  # type: ignore[arg-type]
    wanted = {"two": (True, True), "upper": (False, True), "lower": (True, False)}[sided]

    def exists(m: int) -> bool:
        low, high = order_statistic_ranks(m, q, 0.95, sided)  # type: ignore[arg-type]
        return (not wanted[0] or low is not None) and (not wanted[1] or high is not None)

    assert exists(n)
    assert n == 1 or not exists(n - 1)


# ---------------------------------------------------------------- ranks

@pytest.mark.parametrize("q", [0.05, 0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_ranks_match_brute_force_binomial(q: float, confidence: float) -> None:
    for n in [*range(1, 80), 99, 150, 200, 299, 368]:
        cdf = _binom_cdfs(n, q)
        for sided in ("two", "upper", "lower"):
            got = order_statistic_ranks(n, q, confidence, sided)  # type: ignore[arg-type]
            assert got == _brute_ranks(cdf, confidence, sided), (n, q, confidence, sided)


def test_ranks_known_values_at_n_200() -> None:
    # Classic table value: the 95% interval of the median at n=200 is X_(86)..X_(115).
    assert order_statistic_ranks(200, 0.5) == (86, 115)
    assert order_statistic_ranks(200, 0.95) == (184, 197)
    assert order_statistic_ranks(200, 0.99) == (195, None)
    assert order_statistic_ranks(200, 0.95, sided="upper") == (None, 196)
    assert order_statistic_ranks(200, 0.95, sided="lower") == (185, None)
    assert order_statistic_ranks(0, 0.95) == (None, None)


def test_two_sided_coverage_is_at_least_nominal() -> None:
    # Exact coverage of [X_(l), X_(u)] is P(l <= B <= u - 1) for B ~ Binom(n, q).
    for n in (20, 59, 200, 1000):
        for q in (0.5, 0.9, 0.95):
            low, high = order_statistic_ranks(n, q)
            if low is None or high is None:
                continue
            coverage = binom.cdf(high - 1, n, q) - binom.cdf(low - 1, n, q)
            assert coverage >= 0.95, (n, q, coverage)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 10, "q": 1.0}, "q must be strictly between 0 and 1, got 1.0"),
    ({"n": 10, "q": 0}, "q must be strictly between 0 and 1, got 0"),
    ({"n": 10, "q": 0.5, "confidence": 95}, "confidence must be strictly between 0 and 1, got 95"),
    ({"n": 10, "q": 0.5, "sided": "both"},
     "sided must be one of 'two', 'upper', 'lower', got 'both'"),
    ({"n": -1, "q": 0.5}, "n must be a non-negative integer, got -1"),
    ({"n": 2.5, "q": 0.5}, "n must be a non-negative integer, got 2.5"),
])
def test_ranks_reject_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        order_statistic_ranks(**kwargs)
    assert str(err.value) == message


# ---------------------------------------------------------------- intervals from samples

def test_estimate_is_nearest_rank() -> None:
    # Definition: the smallest sample x with #{x_i <= x} / n >= q, in exact arithmetic on
    # the decimal q (numpy's "inverted_cdf" picks rank 8 for n=100, q=0.07 because
    # 100 * 0.07 = 7.000000000000001 in floating point).
    rng = np.random.default_rng(7)
    for n in (1, 2, 7, 100, 200, 1001):
        x = rng.lognormal(3.0, 0.7, size=n)
        ordered = np.sort(x)
        for q in ("0.07", "0.29", "0.5", "0.57", "0.9", "0.95", "0.99"):
            rank = next(r for r in range(1, n + 1) if Fraction(r, n) >= Fraction(q))
            assert quantile_interval(x, float(q)).estimate == ordered[rank - 1], (n, q)
    assert quantile_interval(np.arange(1.0, 101.0), 0.07).estimate == 7.0


def test_bounds_are_the_ranked_samples() -> None:
    x = np.random.default_rng(3).permutation(np.arange(1.0, 201.0))  # order must not matter
    two = quantile_interval(x, 0.95)
    assert (two.estimate, two.low, two.high, two.n, two.needs_n) == (190.0, 184.0, 197.0, 200, None)
    assert two.exists
    upper = quantile_interval(x, 0.95, sided="upper")
    assert (upper.low, upper.high) == (None, 196.0)
    lower = quantile_interval(list(x), 0.95, sided="lower")
    assert (lower.low, lower.high) == (185.0, None)


def test_missing_bound_reports_the_n_it_needs() -> None:
    x = np.arange(1.0, 201.0)
    p99 = quantile_interval(x, 0.99)
    assert (p99.estimate, p99.low, p99.high, p99.needs_n) == (198.0, 195.0, None, 368)
    assert not p99.exists
    assert quantile_interval(x, 0.99, sided="upper").needs_n == 299
    assert quantile_interval(np.arange(1.0, 300.0), 0.99, sided="upper").needs_n is None


def test_nan_samples_are_dropped_and_counted() -> None:
    qi = quantile_interval([3.0, float("nan"), 1.0, 2.0, float("nan")], 0.5, sided="upper")
    assert (qi.n, qi.dropped, qi.estimate, qi.needs_n) == (3, 2, 2.0, 5)


def test_empty_input_has_no_estimate() -> None:
    qi = quantile_interval([], 0.99)
    assert qi == QuantileInterval(q=0.99, n=0, estimate=None, low=None, high=None,
                                  confidence=0.95, sided="two", needs_n=368, dropped=0)
    assert quantile_interval([float("nan")] * 4, 0.95, sided="upper").needs_n == 59


def test_infinite_samples_stay_in_the_tail() -> None:
    x = np.concatenate([np.arange(1.0, 200.0), [np.inf]])
    qi = quantile_interval(x, 0.95)
    assert qi.n == 200 and qi.high == 197.0
    assert quantile_interval(x, 0.995, confidence=0.5, sided="upper").high == math.inf


def test_samples_must_be_one_dimensional() -> None:
    with pytest.raises(ValueError) as err:
        quantile_interval(np.ones((2, 3)), 0.5)
    assert str(err.value) == "samples must be one-dimensional, got shape (2, 3)"


def test_monte_carlo_coverage_lognormal_n200() -> None:
    rng = np.random.default_rng(20240601)
    mu, sigma, n, reps = 3.0, 0.8, 200, 2000
    data = rng.lognormal(mu, sigma, size=(reps, n))
    for q in (0.5, 0.95):
        truth = math.exp(mu + sigma * float(norm.ppf(q)))
        hits = 0
        for row in data:
            qi = quantile_interval(row, q)
            assert qi.low is not None and qi.high is not None
            hits += qi.low <= truth <= qi.high
        coverage = hits / reps
        low, high = order_statistic_ranks(n, q)
        exact = binom.cdf(high - 1, n, q) - binom.cdf(low - 1, n, q)
        assert coverage >= 0.93, (q, coverage)
        assert abs(coverage - exact) < 4 * math.sqrt(exact * (1 - exact) / reps), (q, coverage, exact)


# ---------------------------------------------------------------- text for reports

def test_describe_never_prints_a_missing_bound() -> None:
    x = 21.5 + 0.1 * np.arange(200)  # X_(198) = 41.2
    assert quantile_interval(x, 0.99).describe() == "P99 = 41.2 ms, 95% CI needs n ≥ 368 (n=200)"
    assert (quantile_interval(x, 0.99, sided="upper").describe()
            == "P99 = 41.2 ms, 95% upper bound needs n ≥ 299 (n=200)")


def test_describe_formats() -> None:
    x = np.arange(1.0, 201.0)
    assert quantile_interval(x, 0.95).describe() == "P95 = 190 ms, 95% CI [184, 197] ms (n=200)"
    assert (quantile_interval(x, 0.95, sided="upper").describe("s")
            == "P95 = 190 s, 95% upper bound 196 s (n=200)")
    assert (quantile_interval(x, 0.95, 0.9, sided="lower").describe("")
            == "P95 = 190, 90% lower bound 186 (n=200)")
    assert (quantile_interval([np.nan, np.nan], 0.999).describe()
            == "P99.9: no data, 95% CI needs n ≥ 3688 (n=0, 2 NaN dropped)")


@pytest.mark.parametrize(("q", "label"), [(0.5, "P50"), (0.95, "P95"), (0.999, "P99.9"), (0.29, "P29")])
def test_quantile_label(q: float, label: str) -> None:
    assert quantile_label(q) == label


@pytest.mark.parametrize(("x", "text"), [
    (41.2, "41.2"), (120.0, "120"), (0.0, "0"), (0.01234, "0.0123"), (1234.56, "1234.6"),
    (math.inf, "inf"),
])
def test_format_number(x: float, text: str) -> None:
    assert format_number(x) == text
