"""The verdict rules: the one place where numbers become a :class:`Status`.

Every phase hands its measurements to one of these functions and records the
:class:`Check` it returns, so a rule (what counts as PASS for a success rate, for a
latency percentile) is written once and reads the same in every report. The rules are
built to avoid false positives: a PASS needs the *whole* confidence interval on the right
side of the threshold, a FAIL needs the whole interval on the wrong side, and anything
in between — including no data at all — is INCONCLUSIVE with the reason and, where it
helps, the sample size that would decide it.

One significance level for every decision: PASS and FAIL are each a *one-sided* test at
α = :data:`ALPHA` (5%), and the interval a check records is the two-sided 1 − 2α = 90%
interval whose ends are exactly those one-sided bounds. A "95%" that meant one-sided in one
rule and two-sided (97.5% per side) in another would make the same evidence PASS under one
rule and INCONCLUSIVE under the next. Every statistical check records its ``rule``, its
``sided``-ness, ``alpha`` and the one-sided p-value of its FAIL side (``p_value``), which the
run-wide multiplicity correction (:mod:`readiness.core.multiplicity`) reads.

- Rates use the Wilson score interval: unlike the normal approximation it stays inside
  [0, 1] and keeps near-nominal coverage at 0/n and n/n, where readiness checks live. The
  p-value is the exact binomial tail at the threshold.
- Latency percentiles use the distribution-free order-statistic bounds of
  :mod:`readiness.stats.quantiles`; the p-value is the exact binomial tail of the count of
  samples at or below the threshold.
- Shares that must *equal* a rate are equivalence tests (TOST); a rate that must not have
  dropped is a Newcombe non-inferiority test.
- Before/after comparisons of a percentile are one-sided exceedance tests
  (:mod:`readiness.core.comparison_rule`), with the smallest regression each can detect.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
from scipy.stats import binom

from readiness.core.check import Check, Status
from readiness.core.comparison_rule import compare
from readiness.stats.dependence import dependence_adjusted_interval
from readiness.stats.design import P_TOLERANCE, planned_n
from readiness.stats.formatting import format_against, format_number, format_p, format_percent, format_ratio
from readiness.stats.latency import Samples
from readiness.stats.quantiles import quantile_label
from readiness.stats.rates import (
    as_count,
    as_counts,
    as_unit,
    min_n_for_error_rate,
    min_n_for_rate,
    newcombe_interval,
    wilson_interval,
)

NO_DATA = "no data"


def _join(computed: str, extra: str) -> str:
    return f"{computed}; {extra}" if extra else computed


def _fields(id: str, phase: str, title: str, app: str | None, window: str | None,
            severity: str, tags: Iterable[str], evidence: Iterable[str]) -> dict[str, Any]:
    """The identity and provenance every check carries, whatever its rule."""
    return {"id": id, "phase": phase, "title": title, "app": app, "window": window,
            "severity": severity, "tags": tuple(tags), "evidence": tuple(evidence)}


#: The one-sided significance level of every PASS and FAIL decision.
ALPHA = 0.05
#: The one-sided confidence of the bounds that decide (1 − α); rules take it as ``confidence``.
DECISION_CONFIDENCE = 1.0 - ALPHA
ONE_SIDED, TOST = "one-sided", "TOST"


def two_sided_level(confidence: float) -> float:
    """The two-sided level whose ends are the one-sided bounds at ``confidence`` (0.95 → 0.90)."""
    return round(1.0 - 2.0 * (1.0 - confidence), 12)


#: The two-sided level of the intervals checks record (90%): their ends decide.
DECISION_LEVEL = two_sided_level(DECISION_CONFIDENCE)


def _design(rule: str, sided: str, alpha: float, p_value: float | None, q: float | None = None) -> dict[str, Any]:
    """The statistical-design fields a check records (see :class:`readiness.core.check.Check`)."""
    return {"rule": rule, "sided": sided, "alpha": round(alpha, 12),
            "p_value": None if p_value is None else float(min(1.0, max(0.0, p_value))), "q": q}


def _wilson_check(*, where: str, count: int, n: int, count_name: str, threshold: float,
                  threshold_name: str, higher_is_better: bool, confidence: float,
                  fields: dict[str, Any], detail: str) -> Check:
    """The Wilson rule shared by success rates (must reach a target) and error rates
    (must stay below a maximum): the one-sided bound on the good side decides PASS, the one
    on the bad side decides FAIL, each at level ``confidence`` (the ends of the two-sided
    1 − 2α interval); an interval across the threshold is INCONCLUSIVE.

    Each side also needs its exact binomial tail at the threshold to be at most α: the
    score bound alone errs more often than α at some n (one error in 20 against a 1%
    maximum has a Wilson lower bound above 1%, yet a system at exactly 1% shows it 18% of
    the time; 52 clean requests pass a 95% target on the Wilson bound, yet a system at
    exactly 95% shows them 6.9% of the time). So PASS and FAIL are each wrong at most α of
    the time at the threshold, for every n. The FAIL side's tail is the recorded
    ``p_value``: P(X <= successes) at the target rate, or P(X >= errors) at the maximum."""
    count, n = as_counts(count, n, count_name, where)
    threshold = as_unit(threshold, threshold_name, where)
    confidence = as_unit(confidence, "confidence", where)
    alpha, level = 1.0 - confidence, two_sided_level(confidence)
    common = {**fields, "threshold": threshold, "comparator": ">=" if higher_is_better else "<",
              "unit": "ratio", "n": n}
    rule = "success_rate" if higher_is_better else "error_rate"
    if n == 0:
        return Check(status=Status.INCONCLUSIVE, detail=_join(NO_DATA, detail),
                     **_design(rule, ONE_SIDED, alpha, None), **common)
    low, high = wilson_interval(count, n, level)
    p_value = (binom.cdf(count, n, threshold) if higher_is_better else binom.sf(count - 1, n, threshold))
    p_pass = (binom.sf(count - 1, n, threshold) if higher_is_better else binom.cdf(count, n, threshold))
    conf, word, limit = format_percent(confidence), "target" if higher_is_better else "max", format_percent(threshold)

    def bound(side: str, value: float, op: str) -> str:
        return f"one-sided {conf} Wilson {side} bound {format_percent(value, threshold)} {op} {word} {limit}"

    if higher_is_better:
        passed, failed = low >= threshold, high < threshold
        pass_text, fail_text = bound("lower", low, ">="), bound("upper", high, "<")
    else:
        passed, failed = high < threshold, low >= threshold
        pass_text, fail_text = bound("upper", high, "<"), bound("lower", low, ">=")
    record = f"({count}/{n})"
    if passed and p_pass <= alpha + P_TOLERANCE:
        status, text = Status.PASS, f"{pass_text} {record}"
    elif passed:  # the score bound is liberal at some n; the exact tail decides a PASS too
        status = Status.INCONCLUSIVE
        text = (f"{pass_text} {record}, but the exact one-sided p = {format_against(p_pass, alpha)} > α "
                f"{format_percent(alpha)}: a PASS is not shown")
    elif failed and p_value <= alpha + P_TOLERANCE:
        status, text = Status.FAIL, f"{fail_text} {record}; exact one-sided {format_p(p_value)}"
    elif failed:  # the score bound over-rejects at small n; the exact tail decides a FAIL
        status = Status.INCONCLUSIVE
        text = (f"{fail_text} {record}, but the exact one-sided p = {format_against(p_value, alpha)} > α "
                f"{format_percent(alpha)}: a FAIL is not shown")
    else:
        status = Status.INCONCLUSIVE
        interval = f"[{format_percent(low, threshold)}, {format_percent(high, threshold)}]"
        text = f"Wilson {format_percent(level)} interval {interval} straddles {word} {limit} {record}"
        needed = (min_n_for_rate(threshold, level, exact_alpha=alpha) if higher_is_better
                  else min_n_for_error_rate(threshold, level, exact_alpha=alpha))
        if n < needed:
            text += f"; a PASS needs n ≥ {needed} with zero {'failures' if higher_is_better else 'errors'}"
    return Check(status=status, observed=count / n, ci_low=low, ci_high=high, ci_level=level,
                 detail=_join(text, detail), **_design(rule, ONE_SIDED, alpha, p_value), **common)


def rate_check(*, id: str, phase: str, title: str, successes: int, n: int, target: float,
               confidence: float = DECISION_CONFIDENCE, app: str | None = None, tags: Iterable[str] = (),
               evidence: Iterable[str] = (), severity: str = "P2", window: str | None = None,
               detail: str = "") -> Check:
    """A success rate that must reach ``target``: PASS when the one-sided Wilson lower bound
    at ``confidence`` (1 − α) is >= target, FAIL when the one-sided upper bound is < target,
    INCONCLUSIVE otherwise. When n is too small for even a perfect record to pass, the
    detail states the n that would."""
    return _wilson_check(where=f"rate_check {id}", count=successes, n=n, count_name="successes",
                         threshold=target, threshold_name="target", higher_is_better=True,
                         confidence=confidence, detail=detail,
                         fields=_fields(id, phase, title, app, window, severity, tags, evidence))


def share_check(*, id: str, phase: str, title: str, arrived: int, n: int, rate: float, margin: float,
                alpha: float = ALPHA, app: str | None = None, tags: Iterable[str] = (),
                evidence: Iterable[str] = (), severity: str = "P2", window: str | None = None,
                detail: str = "") -> Check:
    """A share that must *equal* ``rate`` within ``margin`` (a 10% sampling policy, a bandit
    arm's allocation): an equivalence test (two one-sided tests, TOST).

    PASS when the two-sided 1 − 2α Wilson interval lies inside ``rate ± margin`` (the share
    is shown to be neither below nor above the band, each at one-sided level α). FAIL when
    the interval lies wholly outside the band (a deviation larger than ``margin`` is shown).
    INCONCLUSIVE otherwise, with about the n that would decide for a share on target.

    A point null ("the interval contains ``rate``") would FAIL a correct system α of the
    time and a deviation of no consequence almost always at large n; the band says what
    deviation matters, and the rule can only FAIL when one is shown.
    """
    where = f"share_check {id}"
    arrived, n = as_counts(arrived, n, "arrived", where)
    rate, margin = as_unit(rate, "rate", where), as_unit(margin, "margin", where)
    alpha = as_unit(alpha, "alpha", where)
    band_low, band_high = max(0.0, rate - margin), min(1.0, rate + margin)
    fields = {**_fields(id, phase, title, app, window, severity, tags, evidence), "threshold": rate,
              "comparator": "==", "unit": "ratio", "n": n}
    if n == 0:
        return Check(status=Status.INCONCLUSIVE, detail=_join(NO_DATA, detail),
                     **_design("share", TOST, alpha, None), **fields)
    confidence = 1.0 - 2.0 * alpha
    low, high = wilson_interval(arrived, n, confidence)
    # FAIL side: a share beyond the band, tested exactly against the nearer band edge.
    p_value = min(float(binom.sf(arrived - 1, n, band_high)) if band_high < 1.0 else 1.0,
                  float(binom.cdf(arrived, n, band_low)) if band_low > 0.0 else 1.0)
    band = f"{format_percent(rate)} ± {format_percent(margin)} [{format_percent(band_low)}, {format_percent(band_high)}]"
    shown = (f"Wilson {format_percent(confidence)} interval [{format_percent(low, band_low)}, "
             f"{format_percent(high, band_high)}]")
    record = f"({arrived}/{n} arrived; equivalence test, one-sided α {format_percent(alpha)} each side)"
    # PASS side: both one-sided tests exact as well (above the lower edge, below the upper)
    p_pass = max(float(binom.sf(arrived - 1, n, band_low)) if band_low > 0.0 else 0.0,
                 float(binom.cdf(arrived, n, band_high)) if band_high < 1.0 else 0.0)
    if band_low <= low and high <= band_high and p_pass <= alpha + P_TOLERANCE:
        status, text = Status.PASS, f"{shown} inside {band} {record}"
    elif (high < band_low or low > band_high) and p_value <= alpha + P_TOLERANCE:
        status, text = Status.FAIL, f"{shown} outside {band} {record}; exact one-sided {format_p(p_value)}"
    else:
        status = Status.INCONCLUSIVE
        needed = planned_n("share", rate, rate, 1, beta_level=0.10, alpha=alpha, margin=margin)
        text = (f"{shown} not inside {band} {record}; "
                + (f"n ≥ {needed} pass a share on target with 90% probability" if needed is not None
                   else "no n within reach passes a share on target"))
    return Check(status=status, observed=arrived / n, ci_low=low, ci_high=high, ci_level=confidence,
                 detail=_join(text, detail), **_design("share", TOST, alpha, p_value), **fields)


def noninferiority_check(*, id: str, phase: str, title: str, successes: int, n: int, successes_before: int,
                         n_before: int, margin: float, alpha: float = ALPHA, app: str | None = None,
                         tags: Iterable[str] = (), evidence: Iterable[str] = (), severity: str = "P2",
                         window: str | None = None, detail: str = "") -> Check:
    """A success rate that must be no worse than an earlier one by more than ``margin``.

    Two samples, compared on the difference of their rates (after − before) with Newcombe's
    interval at two-sided 1 − 2α. PASS when the lower bound is above −``margin`` (not
    worse by the margin, at one-sided level α); FAIL when the upper bound is below
    −``margin`` (worse by more than the margin); INCONCLUSIVE otherwise. Either sample may
    be 0/n or n/n; an empty sample is INCONCLUSIVE "no data", never an exception.
    """
    where = f"noninferiority_check {id}"
    successes, n = as_counts(successes, n, "successes", where)
    successes_before, n_before = as_counts(successes_before, n_before, "successes_before", where)
    margin, alpha = as_unit(margin, "margin", where), as_unit(alpha, "alpha", where)
    fields = {**_fields(id, phase, title, app, window, severity, tags, evidence), "threshold": -margin,
              "comparator": ">", "unit": "ratio", "n": n}
    if n == 0 or n_before == 0:
        which = " and ".join(w for w, k in (("after", n), ("before", n_before)) if k == 0)
        return Check(status=Status.INCONCLUSIVE, detail=_join(f"{NO_DATA} ({which})", detail),
                     **_design("noninferiority", ONE_SIDED, alpha, None), **fields)
    confidence = 1.0 - 2.0 * alpha
    low, high = newcombe_interval(successes, n, successes_before, n_before, confidence)
    p_value = _newcombe_p(successes, n, successes_before, n_before, -margin)
    diff = successes / n - successes_before / n_before
    shown = (f"after − before {format_percent(diff)}, Newcombe {format_percent(confidence)} interval "
             f"[{format_percent(low, -margin)}, {format_percent(high, -margin)}]")
    record = (f"({successes}/{n} after, {successes_before}/{n_before} before; non-inferiority, one-sided "
              f"α {format_percent(alpha)})")
    if low > -margin:
        status, text = Status.PASS, f"{shown}: lower bound above -{format_percent(margin)} {record}"
    elif high < -margin:
        status, text = Status.FAIL, f"{shown}: upper bound below -{format_percent(margin)} {record}"
    else:
        status, text = Status.INCONCLUSIVE, f"{shown} straddles -{format_percent(margin)} {record}"
    return Check(status=status, observed=diff, ci_low=low, ci_high=high, ci_level=confidence,
                 detail=_join(text, detail), **_design("noninferiority", ONE_SIDED, alpha, p_value), **fields)


def _newcombe_p(x_after: int, n_after: int, x_before: int, n_before: int, bar: float) -> float:
    """The one-sided p-value of "after − before is worse than ``bar``" read off Newcombe's
    interval: the α at which its upper bound (at two-sided 1 − 2α) just reaches ``bar``
    (bisection; the bound widens as α shrinks). 1.0 when even the point estimate is above it."""
    def upper(alpha: float) -> float:
        return newcombe_interval(x_after, n_after, x_before, n_before, 1.0 - 2.0 * alpha)[1]
    if upper(0.4999) >= bar:
        return 1.0
    lo, hi = 1e-12, 0.4999  # upper(lo) >= bar > upper(hi) unless the evidence is overwhelming
    if upper(lo) < bar:
        return lo
    for _ in range(60):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if upper(mid) >= bar else (lo, mid)
    return hi


def error_rate_check(*, id: str, phase: str, title: str, errors: int, n: int, max_rate: float,
                     confidence: float = DECISION_CONFIDENCE, app: str | None = None, tags: Iterable[str] = (),
                     evidence: Iterable[str] = (), severity: str = "P2",
                     window: str | None = None, detail: str = "") -> Check:
    """An error rate that must stay below ``max_rate``: PASS when the one-sided Wilson upper
    bound at ``confidence`` (1 − α) is < max_rate, FAIL when the one-sided lower bound is
    >= max_rate, INCONCLUSIVE otherwise. When n is too small for even zero errors to pass,
    the detail states the n that would."""
    return _wilson_check(where=f"error_rate_check {id}", count=errors, n=n, count_name="errors",
                         threshold=max_rate, threshold_name="max_rate", higher_is_better=False,
                         confidence=confidence, detail=detail,
                         fields=_fields(id, phase, title, app, window, severity, tags, evidence))


#: The level of the serial-dependence pre-test in front of a latency bound. Not a verdict's
#: α: a series flagged here only gets wider bounds. The exact runs test is conservative on
#: sparse exceedances, so at 5% it misses much moderate dependence: on log-AR(1) series
#: (ρ 0.5, n 200) the FAIL side then errs 6.8% of the time at its boundary; gating at 10%
#: brings that to 4.8%, for 1.5 points of P(PASS) on independent series at the design point
#: (0.949 → 0.933), measured with 1500 series each.
DEPENDENCE_GATE = 0.10


def latency_check(*, id: str, phase: str, title: str, samples_ms: Sequence[float] | np.ndarray,
                  threshold_ms: float, q: float = 0.95, confidence: float = DECISION_CONFIDENCE,
                  app: str | None = None, tags: Iterable[str] = (), evidence: Iterable[str] = (),
                  severity: str = "P2", window: str | None = None, detail: str = "") -> Check:
    """A latency percentile that must stay at or below ``threshold_ms``.

    PASS when the one-sided upper confidence bound of the q-quantile is <= threshold,
    FAIL when the one-sided lower bound is > threshold, INCONCLUSIVE otherwise. Where n
    is too small for an upper bound to exist the check cannot PASS and says which n it
    needs. ``ci_low``/``ci_high`` record the two-sided 1 − 2α interval (90% for the default
    one-sided 95%) when it exists: its ends are the bounds the decision used.

    ``samples_ms`` must be in the order they were measured: the series is tested for serial
    dependence first (:mod:`readiness.stats.dependence`), and where the samples above the
    percentile cluster in time the bounds are widened to the effective sample size, or
    withheld with the n that this dependence needs; the detail then says so with the
    measured autocorrelation. Bounds for independent samples would claim a precision a
    clustered series does not have.
    """
    where = f"latency_check {id}"
    if isinstance(threshold_ms, bool) or not isinstance(threshold_ms, Real) \
            or not math.isfinite(threshold_ms):
        raise ValueError(f"{where}: threshold_ms must be a finite number, got {threshold_ms!r}")
    up = dependence_adjusted_interval(samples_ms, q, confidence, "upper", alpha=DEPENDENCE_GATE)
    n, estimate = up.n, up.estimate
    common = {**_fields(id, phase, title, app, window, severity, tags, evidence),
              "threshold": float(threshold_ms), "comparator": "<=", "unit": "ms", "n": n}
    plural = "" if up.dropped == 1 else "s"
    dropped = f"; {up.dropped} NaN sample{plural} dropped" if up.dropped else ""
    alpha = 1.0 - confidence
    if n == 0:
        return Check(status=Status.INCONCLUSIVE, detail=_join(NO_DATA + dropped, detail),
                     **_design("latency", ONE_SIDED, alpha, None, q), **common)
    lo = dependence_adjusted_interval(samples_ms, q, confidence, "lower", alpha=DEPENDENCE_GATE)
    upper, lower = up.high, lo.low
    # FAIL side: "the q-quantile is at most the threshold" means each sample is <= it with
    # probability >= q, so the count at or below it is at least Binomial(n, q); few of them
    # is the evidence, and its exact tail the p-value (the same event as the lower bound
    # lying above the threshold). Under serial dependence the count is read at n_eff.
    values = np.asarray(samples_ms, dtype=float)
    at_or_below = int(np.count_nonzero(values[~np.isnan(values)] <= threshold_ms))
    dependent = up.dependent and up.n_eff < n
    if dependent:
        n_eff = max(1, math.floor(up.n_eff + 1e-9))
        p_value = float(binom.cdf(math.floor(at_or_below * n_eff / n), n_eff, q))
    else:
        p_value = float(binom.cdf(at_or_below, n, q))
    conf, thr = f"one-sided {format_percent(confidence)}", f"{format_number(threshold_ms)} ms"
    if upper is not None and upper <= threshold_ms:
        status, text = Status.PASS, f"{conf} upper bound {format_against(upper, threshold_ms)} ms <= {thr}"
    elif lower is not None and lower > threshold_ms:
        status, text = Status.FAIL, f"{conf} lower bound {format_against(lower, threshold_ms)} ms > {thr}"
    else:
        status = Status.INCONCLUSIVE
        upper_part = (f"{conf} upper bound needs n ≥ {up.needs_n}"
                      if upper is None else f"{conf} upper bound {format_against(upper, threshold_ms)} ms > {thr}")
        lower_part = (f"{conf} lower bound needs n ≥ {lo.needs_n}"
                      if lower is None else f"{conf} lower bound {format_against(lower, threshold_ms)} ms <= {thr}")
        text = f"{upper_part}; {lower_part}"
    text = f"{quantile_label(q)}: {text} (n={n}){dropped}"
    if status is Status.FAIL:
        text += f"; exact one-sided {format_p(p_value)}"
    if dependent:
        text += f"; {up.describe()}"
    # The recorded interval is the two-sided one whose ends are the one-sided bounds the
    # decision used (1 − 2α: 90% for one-sided 95%), so a PASS never shows ci_high above its
    # threshold and a FAIL never shows ci_low at or below it.
    both = upper is not None and lower is not None
    return Check(status=status, observed=estimate, ci_low=lower if both else None, ci_high=upper if both else None,
                 ci_level=two_sided_level(confidence) if both else None, detail=_join(text, detail),
                 **_design("latency", ONE_SIDED, alpha, p_value, q), **common)


def _comparison(where: str, before_ms: Samples, after_ms: Samples, q: float, confidence: float,
                fields: dict[str, Any], detail: str, *, ratio: bool, limit: float,
                endings: dict[Status, str], floor_ms: float = 0.0, design_ratio: float | None = None) -> Check:
    """:func:`readiness.core.comparison_rule.compare` recorded as a check (unit ratio or ms)."""
    c = compare(before_ms, after_ms, q, confidence, where=where, ratio=ratio, limit=limit, endings=endings,
                floor_ms=floor_ms, design_ratio=design_ratio)
    return Check(status=c.status, observed=c.observed, ci_low=c.low, ci_high=c.high, ci_level=c.level, n=c.n_after,
                 threshold=limit, comparator="<=" if ratio else "<", unit="ratio" if ratio else "ms",
                 detail=_join(c.text, detail), **_design("comparison", ONE_SIDED, 1.0 - confidence, c.p_value, q),
                 **fields)


def regression_check(*, id: str, phase: str, title: str, before_ms: Samples, after_ms: Samples, q: float = 0.95,
                     max_increase_pct: float = 20.0, min_increase_ms: float = 0.0, confidence: float = DECISION_CONFIDENCE,
                     design_ratio: float | None = None, app: str | None = None, tags: Iterable[str] = (), evidence: Iterable[str] = (),
                     severity: str = "P1", window: str | None = None, detail: str = "") -> Check:
    """The q-quantile may grow by at most ``max_increase_pct`` from before to after, judged
    by a one-sided exceedance test (:mod:`readiness.core.comparison_rule`): FAIL when the
    after run exceeds the pooled q-quantile of (after, before × allowance) significantly
    more often (a regression beyond the allowance, at one-sided α), PASS when it does so
    significantly less often (the non-inferiority mirror), INCONCLUSIVE otherwise and
    without a baseline or after data. The detail states the smallest rise the test detects
    with 80% power at these sizes. ``n`` counts the after run.

    ``min_increase_ms`` is the noise floor: the allowance is before × (1 + pct/100) or
    before + floor, whichever is larger, so a 3 ms endpoint answering in 6 ms is +100% but
    no regression. ``design_ratio`` is the rise the comparison must catch with 80% power
    (``design.regression_detect_ratio``); when this n cannot, the detail says which n can."""
    where = f"regression_check {id}"
    for name, value in (("max_increase_pct", max_increase_pct), ("min_increase_ms", min_increase_ms)):
        if isinstance(value, bool) or not isinstance(value, Real) or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{where}: {name} must be a finite number >= 0, got {value!r}")
    limit = 1.0 + max_increase_pct / 100.0
    rise, bar = f"+{format_number(float(max_increase_pct))}%", format_ratio(limit)
    return _comparison(where, before_ms, after_ms, q, confidence,
                       _fields(id, phase, title, app, window, severity, tags, evidence), detail,
                       ratio=True, limit=limit,
                       endings={Status.FAIL: f": a rise beyond {rise} (×{bar}) is shown",
                                Status.PASS: f": a rise of at most {rise} (×{bar}) is shown",
                                Status.INCONCLUSIVE: f": neither a rise beyond {rise} (×{bar}) nor one within it "
                                                     "is shown"},
                       floor_ms=float(min_increase_ms), design_ratio=design_ratio)


def improvement_check(*, id: str, phase: str, title: str, before_ms: Samples, after_ms: Samples, q: float = 0.95,
                      confidence: float = DECISION_CONFIDENCE, app: str | None = None, tags: Iterable[str] = (),
                      evidence: Iterable[str] = (), severity: str = "P1", window: str | None = None,
                      detail: str = "") -> Check:
    """The after run must be faster at the q-quantile: PASS when the after run exceeds the
    pooled q-quantile of both runs significantly less often than the before run (one-sided
    exceedance test at α), FAIL when significantly more often, INCONCLUSIVE otherwise and
    without a baseline or after data. ``n`` counts the after run."""
    return _comparison(f"improvement_check {id}", before_ms, after_ms, q, confidence,
                       _fields(id, phase, title, app, window, severity, tags, evidence), detail,
                       ratio=False, limit=0.0,
                       endings={Status.PASS: ": after is faster", Status.FAIL: ": after is slower",
                                Status.INCONCLUSIVE: ": neither faster nor slower is shown"})


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
}


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def value_check(*, id: str, phase: str, title: str, observed: float | str | bool | None,
                expected: float | str | bool, comparator: str = "==", unit: str = "",
                n: int = 1, app: str | None = None, tags: Iterable[str] = (),
                evidence: Iterable[str] = (), severity: str = "P2", window: str | None = None,
                detail: str = "") -> Check:
    """A deterministic fact (a status code, a header value, a flag): no interval, the
    observation either meets ``comparator expected`` or not. ``==`` is exact, also for
    floats. No observation (None or NaN) is INCONCLUSIVE with n=0."""
    where = f"value_check {id}"
    if comparator not in _COMPARE:
        raise ValueError(f"{where}: comparator must be one of {tuple(_COMPARE)}, got {comparator!r}")
    n = as_count(n, "n", where)
    common = {**_fields(id, phase, title, app, window, severity, tags, evidence),
              "threshold": expected, "comparator": comparator, "unit": unit}
    if observed is None or (isinstance(observed, float) and math.isnan(observed)):
        return Check(status=Status.INCONCLUSIVE, n=0, detail=_join(NO_DATA, detail), **common)
    try:
        ok = bool(_COMPARE[comparator](observed, expected))
    except TypeError:
        raise ValueError(f"{where}: cannot compare {observed!r} {comparator} {expected!r}") from None
    suffix = f" {unit}" if unit else ""
    verb = "meets" if ok else "does not meet"
    text = f"observed {_show(observed)}{suffix} {verb} {comparator} {_show(expected)}{suffix}"
    return Check(status=Status.PASS if ok else Status.FAIL, observed=observed, n=n,
                 detail=_join(text, detail), **common)


#: Failures without an HTTP answer. Each is an observation about the target, not missing
#: data: nothing listening, a name that does not resolve, a TLS handshake that fails, a
#: reset, a timeout — a user would see the same failure, so the check FAILs.
NO_ANSWER = "no answer"


def response_check(*, id: str, phase: str, title: str, status: int | None, error: str | None,
                   error_detail: str | None = None, expected: int = 200, app: str | None = None,
                   tags: Iterable[str] = (), evidence: Iterable[str] = (), severity: str = "P2",
                   window: str | None = None, detail: str = "") -> Check:
    """One request that must answer ``expected``: a wrong status FAILs, and so does no answer.

    A refused connection, a DNS or TLS failure, a reset or a timeout is evidence that the
    endpoint does not serve, so it is a FAIL whose observed value is the error class; so is
    a response whose body was cut short after the status line (a reset mid-body). Only a
    check that never sent anything has no data (use :func:`value_check` with None).
    """
    cut_short = status is not None and error is not None and error != "too_large"  # a body that did not arrive
    if status is not None and not cut_short:
        return value_check(id=id, phase=phase, title=title, observed=status, expected=expected, comparator="==",
                           app=app, tags=tags, evidence=evidence, severity=severity, window=window, detail=detail)
    cls = error or "unknown_error"
    head = f"HTTP {status}, then the body was cut short: {cls}" if cut_short else f"{NO_ANSWER}: {cls}"
    text = head + (f" ({error_detail})" if error_detail else "") + f"; expected HTTP {expected}"
    return Check(status=Status.FAIL, observed=cls, n=1, threshold=expected, comparator="==",
                 detail=_join(text, detail), **_fields(id, phase, title, app, window, severity, tags, evidence))


#: How an all-of verdict is decided, strongest first. A FAIL is measured proof that the
#: whole cannot pass, so it wins over everything. Next come the reasons the whole could
#: not be judged, most urgent first: ERROR (the suite itself broke), STOPPED (a stop
#: condition fired while it ran), BLOCKED (a gate or approval kept it from running).
#: Otherwise any INCONCLUSIVE part — or a SKIPPED part next to parts that ran — leaves
#: the whole INCONCLUSIVE: an all-of with a piece missing is unproven, not passed. Only
#: when every part was SKIPPED is the whole SKIPPED, and only when every part passed
#: is it PASS.
COMBINE_PRECEDENCE: tuple[Status, ...] = (Status.FAIL, Status.ERROR, Status.STOPPED,
                                          Status.BLOCKED, Status.INCONCLUSIVE)


def _union(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for group in groups for item in group))


def combine(id: str, phase: str, title: str, parts: Sequence[Check], *, app: str | None = None,
            tags: Iterable[str] = (), evidence: Iterable[str] = (), severity: str = "P2",
            window: str | None = None, detail: str = "") -> Check:
    """All-of verdict over ``parts`` (e.g. liveness = agreement AND p95 AND error rate
    AND success AND stable), decided by :data:`COMBINE_PRECEDENCE`.

    The combined check records how many parts passed (``observed``) out of how many
    (``threshold``, ``n``); its tags and evidence are the union of its own and the
    parts'; its detail names every part that did not pass.
    """
    parts = list(parts)
    statuses = {part.status for part in parts}
    passed = sum(part.status is Status.PASS for part in parts)
    decisive = [s for s in COMBINE_PRECEDENCE if s in statuses]
    if decisive:
        status = decisive[0]
    elif statuses == {Status.PASS}:
        status = Status.PASS
    elif statuses == {Status.SKIPPED}:
        status = Status.SKIPPED
    else:  # no parts, or PASS mixed with SKIPPED
        status = Status.INCONCLUSIVE
    if not parts:
        text = NO_DATA
    elif status is Status.PASS:
        text = f"all {len(parts)} parts PASS"
    else:
        failing = ", ".join(f"{p.id} ({p.status})" for p in parts if p.status is not Status.PASS)
        text = f"{passed}/{len(parts)} parts PASS; not passing: {failing}"
    return Check(id=id, phase=phase, title=title, status=status, app=app, observed=float(passed),
                 threshold=float(len(parts)), comparator="==", unit="parts", n=len(parts),
                 **_all_of_design(parts, status),
                 window=window, severity=severity,
                 tags=_union(tags, *(p.tags for p in parts)),
                 evidence=_union(evidence, *(p.evidence for p in parts)),
                 detail=_join(text, detail))


def _all_of_design(parts: Sequence[Check], status: Status) -> dict[str, Any]:
    """An all-of check as one test for the run-wide correction: its statistical parts'
    smallest p-value times their number (Bonferroni inside; FAIL parts only when it FAILs).
    A FAIL resting on a fact (or a rule without a p-value) has none: a fact is not corrected."""
    tested = [p for p in parts if p.p_value is not None and p.rule]
    if not tested:
        return {}
    failing = [p for p in parts if p.status is Status.FAIL]
    if status is Status.FAIL and any(p.p_value is None or not p.rule for p in failing):
        return {}
    pool = failing if status is Status.FAIL else tested
    return _design("all_of", ONE_SIDED, ALPHA, min(1.0, len(tested) * min(float(p.p_value or 0.0) for p in pool)))


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval (e.g. a percentile bootstrap), the n behind it and the bar."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    threshold: float
    #: Two-sided level of [ci_low, ci_high]: 90%, so that each end is a one-sided 95% bound
    #: like every other rule's.
    level: float = DECISION_LEVEL


def interval_check(*, id: str, phase: str, title: str, estimate: Interval | None, unit: str,
                   tags: Iterable[str], evidence: Iterable[str], severity: str = "P2", app: str | None = None,
                   window: str | None = None, missing: str = "no data", detail: str = "") -> Check:
    """Higher is better: PASS when the whole interval lies above ``estimate.threshold``, FAIL
    when it lies entirely below, INCONCLUSIVE across it or without an estimate (``missing``).

    The interval is a resampling one (a bootstrap), so each end is a one-sided bound at
    (1 + level)/2 and the rule records α = (1 − level)/2; it has no exact p-value, so its
    FAIL stays outside the run-wide multiplicity correction (which says so)."""
    common = dict(id=id, phase=phase, title=title, app=app, unit=unit, window=window, severity=severity,
                  tags=tuple(tags), evidence=tuple(evidence), comparator=">")
    if estimate is None:
        return Check(status=Status.INCONCLUSIVE, n=0, detail="; ".join(x for x in (missing, detail) if x),
                     **_design("interval", ONE_SIDED, ALPHA, None), **common)
    e = estimate
    shown = (f"{e.value:.4g} {unit}, {format_percent(e.level)} interval "
             f"[{e.ci_low:.4g}, {e.ci_high:.4g}]").replace(" ,", ",")
    if e.ci_low > e.threshold:
        status, text = Status.PASS, f"{shown} lies above {e.threshold:.4g}"
    elif e.ci_high < e.threshold:
        status, text = Status.FAIL, f"{shown} lies below {e.threshold:.4g}"
    else:
        status, text = Status.INCONCLUSIVE, f"{shown} straddles {e.threshold:.4g}"
    return Check(status=status, observed=e.value, ci_low=e.ci_low, ci_high=e.ci_high, ci_level=e.level,
                 threshold=e.threshold, n=e.n, detail="; ".join(x for x in (text, detail) if x),
                 **_design("interval", ONE_SIDED, (1.0 - e.level) / 2.0, None), **common)
