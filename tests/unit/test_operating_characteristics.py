"""Operating characteristics of the verdict rules, measured by calling the rules themselves.

Each rule is driven at its boundary (the truth exactly at the threshold), at its design point
(a good system) and at a stated bad effect. Rate rules are exact: the verdict depends only on
a count, so the rule is called once per count and weighted by the count's binomial
probability. Latency and before/after rules are simulated with small, seeded replication
counts; a simulated figure is held to its bound plus three binomial standard errors of the
replication count. The benchmark ``python -m benchmarks verdicts`` measures the same figures
with many more replications (benchmarks/README.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy.special import ndtr, ndtri
from scipy.stats import binom

from readiness.core.check import Check, Status
from readiness.core.verdict import (
    ALPHA,
    error_rate_check,
    improvement_check,
    latency_check,
    noninferiority_check,
    rate_check,
    regression_check,
    share_check,
)
from readiness.stats.design import latency_oc, planned_n
from readiness.stats.exceedance import detectable_ratio, exceedance_power

KW = {"id": "oc.test", "phase": "test", "title": "operating characteristic"}
M, BETA_LEVEL = 16, 0.10
TAIL = 1e-14
RHO = 0.5


def tolerance(p: float, reps: int) -> float:
    """Three binomial standard errors of a share estimated from ``reps`` replications."""
    return 3.0 * math.sqrt(p * (1.0 - p) / reps)


def verdict_probabilities(rule: Callable[[int, int], Status], n: int, p: float) -> dict[Status, float]:
    """Exact P(PASS), P(FAIL), P(INCONCLUSIVE) of a count rule when the count is Binomial(n, p)
    (counts holding less than 1e-14 in either tail are left out)."""
    low, high = int(binom.ppf(TAIL, n, p)), min(n, int(binom.isf(TAIL, n, p)) + 1)
    out = dict.fromkeys(Status, 0.0)
    ks = np.arange(max(0, low), high + 1)
    for k, w in zip(ks.tolist(), binom.pmf(ks, n, p).tolist(), strict=True):
        out[rule(k, n)] += w
    return out


@functools.cache
def _verdict(family: str, threshold: float, margin: float | None, k: int, n: int) -> Status:
    """One rate rule's verdict for one count, each (rule, count, n) computed once per session."""
    if family == "success":
        return rate_check(**KW, successes=k, n=n, target=threshold).status
    if family == "error":
        return error_rate_check(**KW, errors=k, n=n, max_rate=threshold).status
    return share_check(**KW, arrived=k, n=n, rate=threshold, margin=margin).status


def success(target: float) -> Callable[[int, int], Status]:
    return functools.partial(_verdict, "success", target, None)


def error(max_rate: float) -> Callable[[int, int], Status]:
    return functools.partial(_verdict, "error", max_rate, None)


def share(rate: float, margin: float) -> Callable[[int, int], Status]:
    return functools.partial(_verdict, "share", rate, margin)


# ----------------------------------------------------------------------- rate rules, exact
@pytest.mark.parametrize(("rule", "threshold", "n"), [
    (success(0.95), 0.95, 400),   # smoke, per app
    (success(0.95), 0.95, 133),   # health / ready probes
    (success(0.95), 0.95, 24),    # the Wilson bound alone FAILed 12% here
    (success(0.90), 0.90, 35),    # funnels
    (success(0.99), 0.99, 446),   # telemetry acceptance
    (error(0.01), 0.01, 400),
    (error(0.01), 0.01, 1818),    # the planned n at m = 16
    (error(0.01), 0.01, 20),      # 1 error in 20: Wilson above 1%, exact p 0.18
])
def test_rate_rule_fails_a_system_at_its_threshold_at_most_alpha(rule, threshold, n):
    """Size: at the boundary a FAIL is a false FAIL; exact, so no tolerance."""
    assert verdict_probabilities(rule, n, threshold)[Status.FAIL] <= ALPHA + 1e-12


@pytest.mark.parametrize(("rule", "threshold", "n"), [
    (success(0.95), 0.95, 400), (success(0.95), 0.95, 133), (success(0.90), 0.90, 35), (error(0.01), 0.01, 400),
    (success(0.95), 0.95, 52),    # the Wilson bound alone PASSed 6.9% here
    (success(0.95), 0.95, 280),   # 5.7%
    (success(0.99), 0.99, 446),   # 6.2%
    (error(0.01), 0.01, 268),     # 6.8%
])
def test_rate_rule_passes_a_system_at_its_threshold_at_most_alpha(rule, threshold, n):
    """The other error at the boundary: a PASS there is a false PASS; exact, so no tolerance."""
    assert verdict_probabilities(rule, n, threshold)[Status.PASS] <= ALPHA + 1e-12


def test_share_rule_is_an_equivalence_test_of_size_alpha_on_both_band_edges():
    rule = share(0.10, 0.05)
    for edge in (0.05, 0.15):
        at_edge = verdict_probabilities(rule, 400, edge)
        assert at_edge[Status.FAIL] <= ALPHA + 1e-12
        assert at_edge[Status.PASS] <= ALPHA + 0.002  # Wilson inside the band: 0.051 at n = 400
    assert verdict_probabilities(rule, 400, 0.10)[Status.PASS] >= 0.85
    assert verdict_probabilities(rule, 400, 0.20)[Status.FAIL] >= 0.80


def test_noninferiority_rule_at_its_margin_and_at_its_design_point():
    """Newcombe, before 0.995, margin 0.05, n = 100 per run: exact over both counts."""
    n = 100

    def probabilities(after: float, before: float) -> dict[Status, float]:
        out = dict.fromkeys(Status, 0.0)
        for kb in range(n + 1):
            wb = binom.pmf(kb, n, before)
            if wb < TAIL:
                continue
            for k in range(n + 1):
                w = wb * binom.pmf(k, n, after)
                if w >= TAIL:
                    out[noninferiority_check(**KW, successes=k, n=n, successes_before=kb, n_before=n,
                                             margin=0.05).status] += w
        return out

    boundary = probabilities(0.945, 0.995)
    assert boundary[Status.FAIL] <= ALPHA and boundary[Status.PASS] <= ALPHA
    assert probabilities(0.995, 0.995)[Status.PASS] >= 0.90


@pytest.mark.parametrize(("rule", "family", "threshold", "design", "margin"), [
    (success(0.95), "success", 0.95, 0.99, None),
    (success(0.90), "success", 0.90, 0.98, None),
    (error(0.01), "error", 0.01, 0.0025, None),
    (share(0.10, 0.05), "share", 0.10, 0.10, 0.05),
])
def test_rate_rule_passes_the_design_point_at_the_planned_n(rule, family, threshold, design, margin):
    """The planner's promise, checked against the rule itself: P(PASS) >= 1 − β/m, exactly."""
    n = planned_n(family, threshold, design, M, BETA_LEVEL, ALPHA, margin=margin)
    assert n is not None
    # P(PASS) from the counts that PASS, walking out from the most likely count on each side up
    # to the first that does not; any PASS further out is left uncounted, so P(not PASS) is
    # bounded from above (and undecided counts, whose detail is the costly part, are called twice).
    passing, mode = 0.0, int(n * design)
    for start, step in ((mode, 1), (mode - 1, -1)):
        k = start
        while 0 <= k <= n and rule(k, n) is Status.PASS:
            passing += float(binom.pmf(k, n, design))
            k += step
    assert 1.0 - passing <= BETA_LEVEL / M


# ------------------------------------------------------------------------- latency, simulated
def _bimodal() -> Callable[[np.ndarray], np.ndarray]:
    log_x = np.linspace(0.0, math.log(20_000.0), 200_001)
    cdf = 0.93 * ndtr((log_x - math.log(20.0)) / 0.25) + 0.07 * ndtr((log_x - math.log(200.0)) / 0.3)
    keep = np.r_[True, np.diff(cdf) > 0]
    return lambda z: np.interp(ndtr(z), cdf[keep], np.exp(log_x[keep]))


#: Latency marginals as transforms of a standard normal (an AR(1) normal series gives a
#: time-ordered series with that marginal).
MARGINALS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lognormal": lambda z: np.exp(math.log(50.0) + 0.6 * z),
    "pareto": lambda z: 20.0 * ndtr(-z) ** (-1.0 / 1.5),
    "bimodal": _bimodal(),
}


def normal_series(rng: np.random.Generator, reps: int, n: int, rho: float = 0.0) -> np.ndarray:
    z = rng.standard_normal((reps, n))
    if rho:
        for t in range(1, n):
            z[:, t] = rho * z[:, t - 1] + math.sqrt(1.0 - rho * rho) * z[:, t]
    return z


def latency_verdicts(samples: np.ndarray, threshold: float) -> list[Check]:
    return [latency_check(**KW, samples_ms=x, threshold_ms=threshold) for x in samples]


def share_of(checks: list[Check], status: Status) -> float:
    return sum(c.status is status for c in checks) / len(checks)


@pytest.mark.parametrize(("marginal", "rho"), [("lognormal", 0.0), ("pareto", 0.0), ("bimodal", 0.0),
                                               ("lognormal", RHO)])
def test_latency_rule_at_its_boundary(marginal, rho):
    """T = the true P95: P(FAIL) and P(PASS) at most α (plus the simulation's tolerance), for
    i.i.d. samples of three shapes and for an AR(1) series (ρ 0.5), whose bounds are widened."""
    transform, reps = MARGINALS[marginal], 300
    seed = 11 + list(MARGINALS).index(marginal) + (10 if rho else 0)
    samples = transform(normal_series(np.random.default_rng(seed), reps, 200, rho))
    checks = latency_verdicts(samples, float(transform(np.array([ndtri(0.95)]))[0]))
    assert share_of(checks, Status.FAIL) <= ALPHA + tolerance(ALPHA, reps)
    assert share_of(checks, Status.PASS) <= ALPHA + tolerance(ALPHA, reps)


def test_latency_rule_passes_the_design_point_at_the_planned_n():
    """1% of requests above T. Exact for the rule's count regions (checked against the rule on
    series whose exceedances are spread evenly, so no serial dependence is found), then simulated
    on i.i.d. lognormal samples, where the dependence test may withhold a bound by chance."""
    n = planned_n("latency", 0.95, 0.01, M, BETA_LEVEL, ALPHA)
    assert n is not None
    oc = latency_oc(n, 0.01, 0.95, ALPHA)
    assert oc.p_not_pass <= BETA_LEVEL / M
    base = 50.0 + np.random.default_rng(10).permutation(n) * 1e-3  # distinct, in no particular order
    for k in range(0, n // 10):  # k samples above T = 100 ms, every (n // k)-th one
        x = base.copy()
        if k:
            x[:: n // k][:k] = 200.0 + np.arange(k)
        assert latency_check(**KW, samples_ms=x, threshold_ms=100.0).status.value == oc.regions.status(k)
    reps = 300
    samples = MARGINALS["lognormal"](normal_series(np.random.default_rng(12), reps, n))
    checks = latency_verdicts(samples, float(MARGINALS["lognormal"](np.array([ndtri(0.99)]))[0]))
    assert 1.0 - share_of(checks, Status.PASS) <= BETA_LEVEL / M + tolerance(BETA_LEVEL / M, reps)


def test_latency_upper_bound_covers_p95_under_ar1_for_every_shape():
    """One-sided 95% upper bound of P95 on AR(1) series (ρ 0.5, n 200) with a lognormal, a
    heavy-tailed and a bimodal marginal; a withheld bound claims nothing and counts as covering.
    The rule is rank-based, so the same normal series give the same coverage for every shape."""
    reps = 600
    z = normal_series(np.random.default_rng(13), reps, 200, RHO)
    coverage = {}
    for name, transform in MARGINALS.items():
        truth = float(transform(np.array([ndtri(0.95)]))[0])
        checks = latency_verdicts(transform(z), 100.0)
        coverage[name] = sum(c.ci_high is None or c.ci_high >= truth for c in checks) / reps
    assert min(coverage.values()) >= 0.92, coverage
    assert len(set(coverage.values())) == 1, coverage


# ------------------------------------------------------------------- before/after, simulated
def _runs(seed: int, reps: int, ratio: float) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    before = rng.lognormal(math.log(50.0), 0.6, (reps, 200))
    after = rng.lognormal(math.log(50.0), 0.6, (reps, 200)) * ratio
    return list(zip(before, after, strict=True))


def test_regression_rule_size_at_the_allowance():
    """after = 1.2 × before (the +20% allowance exactly): a FAIL is false, and so is a PASS."""
    reps = 100
    checks = [regression_check(**KW, before_ms=b, after_ms=a) for b, a in _runs(21, reps, 1.2)]
    assert share_of(checks, Status.FAIL) <= ALPHA + tolerance(ALPHA, reps)
    assert share_of(checks, Status.PASS) <= ALPHA + tolerance(ALPHA, reps)


def test_regression_rule_power_is_the_power_it_states():
    """×1.78 at n = 200 per run: the rule states it detects about that rise with 80% power
    (detectable_ratio); the simulated FAIL share agrees with the planner's power there."""
    ratio, reps = 1.78, 150
    stated = detectable_ratio(200, 200, 0.95, limit=1.2, alpha=ALPHA)
    assert stated is not None and 1.6 <= stated <= ratio
    planned = exceedance_power(ratio, 200, 200, 0.95, limit=1.2, alpha=ALPHA)
    checks = [regression_check(**KW, before_ms=b, after_ms=a) for b, a in _runs(22, reps, ratio)]
    power = share_of(checks, Status.FAIL)
    assert power >= 0.70
    assert abs(power - planned) <= tolerance(planned, reps) + 0.03, (power, planned)


def test_improvement_rule_size_with_no_change():
    """after = before: neither faster (PASS) nor slower (FAIL) may be shown more than α of the time."""
    reps = 100
    checks = [improvement_check(**KW, before_ms=b, after_ms=a) for b, a in _runs(23, reps, 1.0)]
    assert share_of(checks, Status.FAIL) <= ALPHA + tolerance(ALPHA, reps)
    assert share_of(checks, Status.PASS) <= ALPHA + tolerance(ALPHA, reps)
