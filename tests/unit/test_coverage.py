"""Coverage of the percentile intervals and of the before/after difference, measured.

Three true latency distributions with exactly known quantiles stand in for real
services: a lognormal (the textbook skew), a bimodal mixture (a cache hit path and a
miss path) and a shifted exponential (a fixed floor plus a memoryless wait). For each,
many seeded runs are drawn at once (one matrix), every run goes through the library
exactly as a notebook would call it, and the share of runs whose interval contains the
true value is the measured coverage. The order-statistic intervals guarantee >= 95%;
the tests accept >= 93%, which leaves room for Monte Carlo error (a few standard errors
at these replication counts) while still failing on any real loss of coverage. Each
assertion message reports the coverage measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from readiness.core.check import Status
from readiness.core.verdict import latency_check
from readiness.stats.latency import percentile_summary, quantile_difference

FLOOR = 0.93
REPLICATIONS = 4000


@dataclass(frozen=True)
class Truth:
    """A latency distribution: a seeded sampler and its exact quantile function."""

    name: str
    seed: int
    draw: Callable[[np.random.Generator, tuple[int, int]], np.ndarray]
    quantile: Callable[[float], float]


def _lognormal_draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.lognormal(3.0, 0.6, shape)


def _bimodal_draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    slow = rng.random(shape) < 0.15
    x = np.where(slow, rng.normal(120.0, 15.0, shape), rng.normal(20.0, 3.0, shape))
    return np.maximum(x, 0.01)  # clipping moves mass ~1e-11 below 0.01 ms: no quantile tested moves


def _bimodal_quantile(q: float) -> float:
    def cdf(x: float) -> float:
        return 0.85 * norm.cdf(x, 20.0, 3.0) + 0.15 * norm.cdf(x, 120.0, 15.0)
    return brentq(lambda x: cdf(x) - q, 0.0, 500.0, xtol=1e-12)


def _exponential_draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return 15.0 + rng.exponential(10.0, shape)


TRUTHS = [
    Truth("lognormal", 1, _lognormal_draw, lambda q: math.exp(3.0 + 0.6 * norm.ppf(q))),
    Truth("bimodal", 2, _bimodal_draw, _bimodal_quantile),
    Truth("shifted-exponential", 3, _exponential_draw, lambda q: 15.0 - 10.0 * math.log1p(-q)),
]
IDS = [t.name for t in TRUTHS]


def _report(what: str, covered: np.ndarray) -> str:
    p = covered.mean()
    return f"{what}: coverage {p:.3f} over {covered.size} runs (Monte Carlo s.e. {math.sqrt(p * (1 - p) / covered.size):.3f})"


def test_bimodal_truth_is_exact() -> None:
    # the mixture's quantiles by root finding agree with a huge seeded sample
    big = _bimodal_draw(np.random.default_rng(0), (1, 4_000_000))[0]
    for q in (0.5, 0.95, 0.99):
        assert np.quantile(big, q) == pytest.approx(_bimodal_quantile(q), rel=0.01)


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
@pytest.mark.parametrize(("qs", "n"), [((0.5, 0.95), 200), ((0.99,), 2000)], ids=["P50+P95-n200", "P99-n2000"])
def test_two_sided_intervals_cover(truth: Truth, qs: tuple[float, ...], n: int) -> None:
    runs = truth.draw(np.random.default_rng([truth.seed, n]), (REPLICATIONS, n))
    rows = [percentile_summary(run, qs=qs) for run in runs]
    for i, q in enumerate(qs):
        true = truth.quantile(q)
        assert all(r[i].exists for r in rows)
        covered = np.array([r[i].low <= true <= r[i].high for r in rows])
        message = _report(f"{truth.name} P{q * 100:g} n={n} (true {true:.2f} ms)", covered)
        print(message)
        assert covered.mean() >= FLOOR, message


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
def test_p99_at_n200_has_no_upper_bound_and_never_passes(truth: Truth) -> None:
    runs = truth.draw(np.random.default_rng([truth.seed, 99]), (300, 200))
    true = truth.quantile(0.99)
    statuses: set[Status] = set()
    for run in runs:
        (row,) = percentile_summary(run, qs=(0.99,))
        assert (row.upper, row.upper_needs_n, row.needs_n) == (None, 299, 368)
        # however generous the threshold, without an upper bound the check cannot PASS
        for threshold in (0.5 * true, true, 10 * true):
            check = latency_check(id="latency.p99", phase="latency", title="P99", samples_ms=run,
                                  threshold_ms=threshold, q=0.99)
            statuses.add(check.status)
    assert Status.PASS not in statuses
    assert statuses == {Status.INCONCLUSIVE, Status.FAIL}  # FAIL does occur: below-P50 thresholds are refuted


@pytest.mark.parametrize("truth", TRUTHS, ids=IDS)
@pytest.mark.parametrize("q", [0.5, 0.95], ids=["P50", "P95"])
def test_difference_interval_covers(truth: Truth, q: float) -> None:
    # after = 1.25 x before in distribution: every quantile scales, so the true
    # difference is 0.25 x the quantile and the true ratio exactly 1.25
    rng = np.random.default_rng([truth.seed, round(q * 100)])
    before, after = truth.draw(rng, (REPLICATIONS, 200)), 1.25 * truth.draw(rng, (REPLICATIONS, 200))
    true_diff, true_ratio = 0.25 * truth.quantile(q), 1.25
    diffs = [quantile_difference(b, a, q) for b, a in zip(before, after, strict=True)]
    assert all(d.exists for d in diffs)
    diff_cov = np.array([d.diff_low <= true_diff <= d.diff_high for d in diffs])
    ratio_cov = np.array([d.ratio_low <= true_ratio <= d.ratio_high for d in diffs])
    messages = [_report(f"{truth.name} P{q * 100:g} difference n=200/run (true {true_diff:.2f} ms)", diff_cov),
                _report(f"{truth.name} P{q * 100:g} ratio n=200/run (true 1.25)", ratio_cov)]
    print("\n".join(messages))
    assert diff_cov.mean() >= FLOOR, messages[0]
    assert ratio_cov.mean() >= FLOOR, messages[1]
