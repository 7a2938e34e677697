"""Operating characteristics and sample-size planning (readiness.stats.design).

Everything is exact and deterministic: the OC of each rule is checked against a brute force
that classifies every count 0..n with the interval functions the rules use
(``wilson_interval``, and ``quantile_interval`` on constructed samples, ties at the
threshold included), weighted by its binomial probability; the planned sample sizes are
checked against their goal at n and over the whole saw-tooth window, and against n − 1.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy.stats import binom

from readiness.core.verdict import error_rate_check, rate_check, share_check
from readiness.stats.design import (
    CountRegions,
    DesignPoint,
    count_regions,
    design_error_rate,
    design_exceedance,
    design_success_rate,
    error_rate_oc,
    latency_oc,
    level_block_risk,
    operating_characteristic,
    planned_n,
    planning_window,
    share_oc,
    success_rate_oc,
)
from readiness.stats.quantiles import quantile_interval

ALPHA = 0.05
WILSON = 1.0 - 2.0 * ALPHA  # the two-sided 90% interval of the rate and share rules
SMALL_N = range(1, 61)
TRUE_VALUES = (0.0, 0.002, 0.01, 0.05, 0.1, 0.3, 0.5, 0.9, 0.95, 0.99, 1.0)


# ------------------------------------------------------------------ brute force
def rate_status(family: str, k: int, n: int, threshold: float, margin: float | None = None) -> str:
    """The verdict rule itself (readiness.core.verdict) on a count k of n: the OC must match it."""
    where = {"id": "x.y", "phase": "p", "title": "t"}
    if family == "success":
        return rate_check(**where, successes=k, n=n, target=threshold).status.value
    if family == "error":
        return error_rate_check(**where, errors=k, n=n, max_rate=threshold).status.value
    assert margin is not None
    return share_check(**where, arrived=k, n=n, rate=threshold, margin=margin).status.value


def latency_samples(n: int, exceeding: int, threshold: float, rng: np.random.Generator) -> np.ndarray:
    """n samples of which exactly ``exceeding`` are > threshold: the rest are at most the
    threshold and include ties with it; the tail includes a timeout (+inf); two NaNs are
    added, which the rule drops."""
    within = np.concatenate([[threshold] * min(2, n - exceeding),
                             rng.uniform(0.0, threshold, size=max(0, n - exceeding - 2))])
    above = threshold + rng.exponential(50.0, size=exceeding) + 1e-9
    if exceeding:
        above[0] = math.inf
    return rng.permutation(np.concatenate([within, above, [math.nan, math.nan]]))


def latency_status(samples: np.ndarray, q: float, threshold: float) -> str:
    upper = quantile_interval(samples, q, 1.0 - ALPHA, "upper").high
    lower = quantile_interval(samples, q, 1.0 - ALPHA, "lower").low
    if upper is not None and upper <= threshold:
        return "PASS"
    return "FAIL" if lower is not None and lower > threshold else "INCONCLUSIVE"


def brute_oc(statuses: list[str], n: int, value: float) -> tuple[float, float]:
    pmf = binom.pmf(np.arange(n + 1), n, value)
    return (math.fsum(p for p, s in zip(pmf, statuses, strict=True) if s == "PASS"),
            math.fsum(p for p, s in zip(pmf, statuses, strict=True) if s == "FAIL"))


def assert_oc_matches(family: str, threshold: float, statuses: list[str], n: int, margin: float | None = None,
                      q: float | None = None) -> None:
    """The regions give every count its brute-force status; the OC at two true values per n
    (all of TRUE_VALUES over the n's) is the brute-force mass."""
    regions = count_regions(family, n, threshold, q=q, margin=margin)
    assert [regions.status(k) for k in range(n + 1)] == statuses, (family, n)
    for value in (TRUE_VALUES[n % len(TRUE_VALUES)], TRUE_VALUES[(n + 5) % len(TRUE_VALUES)]):
        oc = operating_characteristic(family, n, threshold, value, q=q, margin=margin)
        p_pass, p_fail = brute_oc(statuses, n, value)
        assert oc.p_pass == pytest.approx(p_pass, abs=1e-12)
        assert oc.p_fail == pytest.approx(p_fail, abs=1e-12)
        assert oc.p_pass + oc.p_not_pass == pytest.approx(1.0, abs=1e-12)
        assert oc.p_inconclusive == pytest.approx(1.0 - p_pass - p_fail, abs=1e-12)


# --------------------------------------------------- OC against brute force, n <= 60
@pytest.mark.parametrize(("family", "threshold"), [("success", 0.95), ("success", 0.5), ("error", 0.01),
                                                   ("error", 0.3)])
def test_rate_oc_matches_every_count_for_small_n(family: str, threshold: float) -> None:
    for n in SMALL_N:
        assert_oc_matches(family, threshold, [rate_status(family, k, n, threshold) for k in range(n + 1)], n)


@pytest.mark.parametrize(("rate", "margin"), [(0.10, 0.05), (0.04, 0.05), (0.95, 0.1)])
def test_share_oc_matches_every_count_for_small_n(rate: float, margin: float) -> None:
    """Bands clipped at 0 or 1 included (0.04 ± 0.05, 0.95 ± 0.1)."""
    for n in SMALL_N:
        statuses = [rate_status("share", k, n, rate, margin) for k in range(n + 1)]
        assert_oc_matches("share", rate, statuses, n, margin=margin)


@pytest.mark.parametrize("q", [0.5, 0.95])
def test_latency_oc_matches_constructed_samples_for_small_n(q: float) -> None:
    """The count of samples above T decides, whatever the samples are: ties at T are within
    it, +inf is above it, NaN is dropped (n counts the samples kept)."""
    rng = np.random.default_rng(7)
    threshold = 120.0
    for n in SMALL_N:
        statuses = [latency_status(latency_samples(n, e, threshold, rng), q, threshold) for e in range(n + 1)]
        assert_oc_matches("latency", q, statuses, n)
        # the T-in-ms spelling gives the same figures
        assert count_regions("latency", n, threshold, q=q) == count_regions("latency", n, q)


def test_family_functions_are_the_generic_one() -> None:
    assert success_rate_oc(300, 0.99, 0.95) == operating_characteristic("success", 300, 0.95, 0.99)
    assert error_rate_oc(2000, 0.0025, 0.01) == operating_characteristic("error", 2000, 0.01, 0.0025)
    assert latency_oc(300, 0.01, 0.95) == operating_characteristic("latency", 300, 0.95, 0.01)
    assert share_oc(400, 0.1, 0.1, 0.05) == operating_characteristic("share", 400, 0.1, 0.1, margin=0.05)


def test_no_data_neither_passes_nor_fails() -> None:
    for family, threshold, margin in (("success", 0.95, None), ("error", 0.01, None), ("latency", 0.95, None),
                                      ("share", 0.1, 0.05)):
        oc = operating_characteristic(family, 0, threshold, 0.5, margin=margin)
        assert (oc.p_pass, oc.p_fail, oc.p_inconclusive) == (0.0, 0.0, 1.0)
        assert oc.regions == CountRegions(n=0, passing=None, failing=())


# --------------------------------------------------------------- large n, fast
@pytest.mark.parametrize(("family", "threshold", "margin"), [("success", 0.95, None), ("error", 0.01, None),
                                                              ("share", 0.10, 0.02)])
def test_regions_at_large_n_have_exact_boundaries(family: str, threshold: float, margin: float | None) -> None:
    """At n = 20,000 each boundary count has the rule's status and its neighbour outside the
    region has another; the whole OC takes well under a second."""
    n = 20_000
    start = time.perf_counter()
    oc = operating_characteristic(family, n, threshold, 0.1 if family == "share" else 0.97, margin=margin)
    assert time.perf_counter() - start < 0.5
    regions = oc.regions
    assert regions.passing is not None
    for low, high in (regions.passing, *regions.failing):
        for k in (low, high):
            assert rate_status(family, k, n, threshold, margin) == regions.status(k) != "INCONCLUSIVE"
        for k in (low - 1, high + 1):
            if 0 <= k <= n:
                assert rate_status(family, k, n, threshold, margin) != regions.status(low)


def test_latency_regions_at_large_n_are_fast_and_exact() -> None:
    n, threshold, rng = 20_000, 120.0, np.random.default_rng(11)
    start = time.perf_counter()
    oc = latency_oc(n, 0.04, 0.95)
    assert time.perf_counter() - start < 0.5
    (low, high), ((fail_low, fail_high),) = oc.regions.passing, oc.regions.failing
    assert low == 0 and fail_high == n
    for e, expected in ((high, "PASS"), (high + 1, "INCONCLUSIVE"), (fail_low - 1, "INCONCLUSIVE"),
                        (fail_low, "FAIL")):
        assert latency_status(latency_samples(n, e, threshold, rng), 0.95, threshold) == expected
    assert 0.5 < oc.p_pass < 1.0 and oc.p_fail < 1e-15


def test_the_rules_hold_their_level_at_the_threshold() -> None:
    """At the threshold itself each rule PASSes about α of the time (a discrete test's size
    may exceed α a little)."""
    for n in (200, 1000, 5000):
        assert success_rate_oc(n, 0.95, 0.95).p_pass <= ALPHA + 0.02
        assert error_rate_oc(n, 0.01, 0.01).p_pass <= ALPHA + 0.02
        assert latency_oc(n, 0.05, 0.95).p_pass <= ALPHA  # exact binomial ranks: never above α
        assert latency_oc(n, 0.05, 0.95).p_fail <= ALPHA


# ------------------------------------------------------------- design points
def test_design_helpers() -> None:
    assert design_success_rate(0.95, 0.2) == pytest.approx(0.99)
    assert design_success_rate(0.90, 0.2) == pytest.approx(0.98)
    assert design_error_rate(0.01, 0.25) == pytest.approx(0.0025)
    assert design_exceedance(0.95, 0.2) == pytest.approx(0.01)
    assert design_success_rate(0.95, 0.0) == 1.0
    point = DesignPoint.latency(0.95, 0.2)
    assert (point.family, point.threshold, point.value) == ("latency", 0.95, pytest.approx(0.01))
    assert DesignPoint.share(0.1, 0.05) == DesignPoint("share", 0.1, 0.1, 0.05)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="allowance"):
            design_error_rate(0.01, bad)


# ------------------------------------------------------------------ planned n
#: (family, threshold, design value, margin, m) -> planned n: the figures of the report.
PLANNED = [
    ("success", 0.95, 0.99, None, 1, 153),
    ("success", 0.95, 0.99, None, 16, 286),
    ("success", 0.95, 0.99, None, 48, 336),
    ("error", 0.01, 0.0025, None, 1, 1049),
    ("error", 0.01, 0.0025, None, 16, 1818),
    ("error", 0.01, 0.0025, None, 48, 2064),
    ("latency", 0.95, 0.01, None, 1, 153),
    ("latency", 0.95, 0.01, None, 16, 286),
    ("latency", 0.95, 0.01, None, 48, 336),
    ("success", 0.90, 0.98, None, 16, 142),  # funnels
    ("share", 0.10, 0.10, 0.05, 16, 771),
]


def goal_held(family: str, threshold: float, value: float, margin: float | None, m: int,
              sizes: range) -> dict[int, bool]:
    """P(PASS) >= 1 − β/m at each size, one OC at a time."""
    return {size: operating_characteristic(family, size, threshold, value, margin=margin).p_not_pass <= 0.10 / m
            for size in sizes}


def qualifies(held: dict[int, bool], n: int) -> bool:
    """The planning rule, written out: the goal holds at every n' in [n, n + window(n)]."""
    return all(held[size] for size in range(n, n + planning_window(n) + 1))


@pytest.mark.parametrize(("family", "threshold", "value", "margin", "m", "expected"), PLANNED)
def test_planned_n_figures(family: str, threshold: float, value: float, margin: float | None, m: int,
                           expected: int) -> None:
    n = planned_n(family, threshold, value, m, margin=margin)
    assert n == expected
    held = goal_held(family, threshold, value, margin, m, range(n - 1, n + planning_window(n) + 1))
    assert qualifies(held, n) and not qualifies(held, n - 1)
    assert operating_characteristic(family, n, threshold, value, margin=margin).p_pass >= 1.0 - 0.10 / m


@pytest.mark.parametrize(("family", "threshold", "value", "m"), [("success", 0.90, 0.98, 16),
                                                                 ("latency", 0.95, 0.01, 16)])
def test_planned_n_is_the_smallest_that_qualifies(family: str, threshold: float, value: float, m: int) -> None:
    """No smaller n qualifies, checked one n at a time with the OC function."""
    n = planned_n(family, threshold, value, m)
    assert n is not None
    held = goal_held(family, threshold, value, None, m, range(1, n + planning_window(n) + 1))
    assert qualifies(held, n)
    assert not any(qualifies(held, size) for size in range(1, n))


def test_the_saw_tooth_is_why_the_window_exists() -> None:
    """Success 0.99 vs 0.95 at m = 16: the goal first holds at n = 260 but is lost again at
    270–285, so 260 is no plan; 286 is."""
    goal = 1.0 - 0.10 / 16
    assert success_rate_oc(260, 0.99, 0.95).p_pass >= goal
    assert all(success_rate_oc(n, 0.99, 0.95).p_pass < goal for n in range(270, 286))
    assert planned_n("success", 0.95, 0.99, 16) == 286


def test_a_level_at_its_planned_n_is_blocked_at_most_beta_of_the_time() -> None:
    n = planned_n("success", 0.95, 0.99, 16)
    p = success_rate_oc(n, 0.99, 0.95).p_pass
    risk = level_block_risk([p] * 16)
    assert risk.p_blocked <= risk.union_bound <= 0.10


def test_planned_n_design_point_and_latency_spellings_agree() -> None:
    assert DesignPoint("success", 0.95, 0.99).planned_n(16) == 286
    assert DesignPoint.success(0.90, 0.2).planned_n(16) == 142
    assert planned_n("latency", 120.0, 0.01, 16, q=0.95) == planned_n("latency", 0.95, 0.01, 16) == 286


def test_planned_n_beyond_n_max_is_none() -> None:
    assert planned_n("error", 0.01, 0.0025, 48, n_max=2063) is None
    assert planned_n("error", 0.01, 0.0025, 48, n_max=2064) == 2064  # the window may reach past n_max
    assert planned_n("success", 0.95, 0.99, 1, n_max=10) is None


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (("success", 0.95, 0.95, 1), {}, "good side"),
    (("error", 0.01, 0.02, 1), {}, "good side"),
    (("latency", 0.95, 0.05, 1), {}, "good side"),
    (("share", 0.10, 0.16, 1), {"margin": 0.05}, "good side"),
    (("share", 0.10, 0.10, 1), {}, "margin"),
    (("success", 0.95, 0.99, 0), {}, "m must"),
    (("rate", 0.95, 0.99, 1), {}, "family"),
    (("success", 0.95, 0.99, 1), {"alpha": 0.5}, "alpha"),
    (("success", 0.95, 1.2, 1), {}, "design_value"),
])
def test_planned_n_rejects_what_cannot_be_planned(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        planned_n(*args, **kwargs)


# ------------------------------------------------------------------- a level
def test_level_block_risk() -> None:
    risk = level_block_risk([0.99] * 16)
    assert risk.checks == 16
    assert risk.p_blocked == pytest.approx(1.0 - 0.99 ** 16, rel=1e-12)
    assert risk.union_bound == pytest.approx(0.16, rel=1e-12)
    assert level_block_risk([]).p_blocked == level_block_risk([]).union_bound == 0.0
    assert level_block_risk([0.5, 0.0]).p_blocked == 1.0
    assert level_block_risk([1 - 1e-12] * 3).p_blocked == pytest.approx(3e-12, rel=1e-6)
    assert level_block_risk([0.1] * 20).union_bound == pytest.approx(18.0)  # a bound, not a probability
    with pytest.raises(ValueError):
        level_block_risk([1.1])
