"""The before/after rule for one latency percentile, apart from how a check records it.

:func:`compare` turns two runs' samples into a status and its sentence; the checks that
use it (:func:`readiness.core.verdict.regression_check`, :func:`readiness.core.verdict.improvement_check`)
give it their limit and their wording.

The decision is the one-sided exceedance test of :mod:`readiness.stats.exceedance` (Mood's
median test generalised to the q-quantile, exact Fisher p-values), each side at
α = 1 − ``confidence``. It replaced a rule that decided on the whole interval of
:func:`readiness.stats.latency.quantile_difference`: valid for any distribution, but so
conservative that at n = 200 per run, with the +20% allowance, the smallest P95 regression
it FAILed with 80% power was about +115%, and a run with no change read PASS only ~3% of
the time. The test FAILs a x1.78 rise at that n with 80% power and still FAILs an after run
at exactly the allowance (a x1.2-scaled copy) under 5% of the time. The interval is still
shown, at 90%, for the reader; it no longer decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

from readiness.core.check import Status
from readiness.stats.exceedance import (
    DEFAULT_POWER,
    MAX_PLAN_N,
    ExceedanceTest,
    detectable_ratio,
    exceedance_test,
    min_n_to_fail,
    plan_exceedance_sample_size,
)
from readiness.stats.formatting import format_against, format_number, format_p, format_percent, format_ratio
from readiness.stats.latency import Samples, quantile_difference
from readiness.stats.quantiles import validate_quantile_args

#: The largest run a design-ratio plan looks for (a plan is a sentence, not worth a long search).
DESIGN_PLAN_MAX_N = 100_000
#: Two-sided level of the interval shown beside the decision (display only).
DISPLAY_LEVEL = 0.90


@dataclass(frozen=True)
class Comparison:
    """One before/after verdict: its status, the point estimate and the 90% interval shown
    with it (None where there is none), the sentence that says why, and the test's design:
    ``p_value`` is the FAIL side's one-sided p-value (None when the test did not run),
    ``p_better`` the PASS side's, ``alpha`` the one-sided level each side is tested at,
    ``detectable`` the smallest after/before ratio the FAIL side catches with 80% power at
    these run sizes (None when not computable or none is), ``level`` the two-sided level of
    ``low``/``high`` (None when there is no interval)."""

    status: Status
    observed: float | None
    low: float | None
    high: float | None
    n_after: int
    text: str
    p_value: float | None = None
    alpha: float | None = None
    detectable: float | None = None
    level: float | None = None
    p_better: float | None = None
    test: ExceedanceTest | None = None


def _allowance_text(ratio: bool, limit: float, floor_ms: float) -> str:
    """How the before run is moved to the edge of what is allowed: ``before ×1.2``,
    ``before ×1.2 (at least +10 ms)``, ``before`` or ``before +5 ms``."""
    if ratio:
        text = f"before ×{format_ratio(limit)}" if limit != 1.0 else "before"
        if floor_ms > 0:
            text += f" (at least +{format_number(floor_ms)} ms)" if limit != 1.0 else f" +{format_number(floor_ms)} ms"
        return text
    return f"before +{format_number(floor_ms)} ms" if floor_ms > 0 else "before"


def compare(before_ms: Samples, after_ms: Samples, q: float, confidence: float, *, where: str, ratio: bool,
            limit: float, endings: dict[Status, str], floor_ms: float = 0.0,
            design_ratio: float | None = None) -> Comparison:
    """FAIL when the one-sided exceedance test finds the after run's q-quantile above the
    allowance (``p_worse`` <= α), PASS when it finds it within (``p_better`` <= α),
    INCONCLUSIVE otherwise, with α = 1 − ``confidence`` (the one-sided confidence; callers
    pass 0.95). No baseline, no after data, or a pooled threshold that splits nothing (every
    sample unanswered) is INCONCLUSIVE with the reason.

    The allowance is g(before): for ``ratio=True`` ``limit`` is the allowed ratio (>= 1,
    e.g. 1.2) and g(x) = max(limit · x, x + floor_ms); for ``ratio=False`` (the improvement
    check) ``limit`` is an allowed difference in ms (>= 0, callers pass 0) and
    g(x) = x + max(limit, floor_ms). So with ``floor_ms`` > 0 a rise must exceed both the
    ratio allowance and the noise floor to FAIL — on an endpoint answering in a few ms,
    doubling is a scheduler hiccup, not a regression anyone feels — and a rise within either
    can PASS.

    ``observed`` is the ratio (or difference) of the two runs' nearest-rank quantiles;
    ``low``/``high`` the two-sided 90% interval of :func:`quantile_difference`, for the
    reader only. The sentence gives the estimate and that interval, then the test: the
    pooled threshold, the exceedance counts above it in each run, both one-sided p-values
    and α; then the caller's ``endings[status]``; then the rise the test detects with 80%
    power at this n (a planning figure that assumes after = r × before), or why no rise
    can FAIL at these sizes.
    """
    try:
        validate_quantile_args(q, confidence, "two")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if isinstance(limit, bool) or not isinstance(limit, Real) or not math.isfinite(limit) or (
            limit < 1.0 if ratio else limit < 0.0):
        bar = "an allowed ratio >= 1" if ratio else "an allowed difference >= 0 ms"
        raise ValueError(f"{where}: limit must be {bar}, got {limit!r}")
    alpha = round(1.0 - float(confidence), 12)
    diff = quantile_difference(before_ms, after_ms, q, DISPLAY_LEVEL, where=where)
    point, low, high = ((diff.ratio, diff.ratio_low, diff.ratio_high) if ratio
                        else (diff.diff, diff.diff_low, diff.diff_high))
    level = DISPLAY_LEVEL if low is not None and high is not None else None
    if diff.n_before == 0 or diff.n_after == 0:
        reason = "no baseline" if diff.n_before == 0 else "no data"
        return Comparison(Status.INCONCLUSIVE, point, None, None, diff.n_after, f"{reason} {diff.counts()}",
                          alpha=alpha)
    g_limit, g_floor = (float(limit), float(floor_ms)) if ratio else (1.0, max(float(limit), float(floor_ms)))
    test = exceedance_test(before_ms, after_ms, q, limit=g_limit, floor_ms=g_floor, where=where)
    assert test.p_worse is not None and test.p_better is not None and test.threshold is not None
    design = {"alpha": alpha, "level": level, "test": test}
    if test.degenerate:
        why = (f"{diff.label} undefined: no successful answer in either series at this quantile"
               if point is None else
               f"{diff.label}: all {test.n_before + test.n_after} samples equal the pooled threshold "
               f"{format_number(test.threshold)} ms, the exceedance test has nothing to compare")
        return Comparison(Status.INCONCLUSIVE, point, low, high, diff.n_after, f"{why} {diff.counts()}",
                          p_value=test.p_worse, p_better=test.p_better, **design)
    detectable = detectable_ratio(test.n_before, test.n_after, q, before_ms=before_ms, limit=g_limit,
                                  floor_ms=g_floor, alpha=alpha, power=DEFAULT_POWER)
    status = (Status.FAIL if test.p_worse <= alpha else Status.PASS if test.p_better <= alpha
              else Status.INCONCLUSIVE)
    fmt, unit = (format_ratio, "") if ratio else (format_number, " ms")
    name = "after/before" if ratio else "after - before"
    shown = (f"{format_percent(DISPLAY_LEVEL)} CI [{format_against(low, limit, fmt)}, "
             f"{format_against(high, limit, fmt)}]{unit}" if level is not None
             else f"{format_percent(DISPLAY_LEVEL)} CI needs n ≥ {diff.needs_n} per run")
    estimate = "undefined" if point is None else f"{format_against(point, limit, fmt)}{unit}"
    above = "at or above" if test.tie_rule == ">=" else "above"
    head = (f"{diff.label} {name} {estimate}, {shown}; one-sided exceedance test at the pooled {diff.label} "
            f"{format_number(test.threshold)} ms: {test.exceed_after}/{test.n_after} after vs "
            f"{test.exceed_before}/{test.n_before} {_allowance_text(ratio, g_limit, g_floor)} {above} it, "
            f"{format_p(test.p_worse)} for worse, {format_p(test.p_better)} for better (one-sided α = {alpha:g})")
    power = format_percent(DEFAULT_POWER)
    sizes = f"n={test.n_after}" if test.n_after == test.n_before else "these run sizes"
    if detectable is not None:
        tail = f"; detects a rise to ×{format_ratio(detectable)} at {power} power at {sizes}"
        if design_ratio is not None and detectable > design_ratio:
            need_n = plan_exceedance_sample_size(design_ratio, q, before_ms=before_ms, limit=g_limit,
                                                 floor_ms=g_floor, alpha=alpha, power=DEFAULT_POWER,
                                                 max_n=DESIGN_PLAN_MAX_N)
            tail += (f"; a rise to ×{format_ratio(design_ratio)} needs n ≥ {need_n} per run" if need_n is not None
                     else f"; no run of up to {DESIGN_PLAN_MAX_N} samples detects a rise to "
                          f"×{format_ratio(design_ratio)} (within the allowance or the noise floor here)")
    else:
        smallest = test.smallest_p_worse()
        if smallest is not None and smallest > alpha:
            try:
                need = f"equal runs need n ≥ {min_n_to_fail(q, alpha)} each"
            except ValueError:  # a quantile so high that no planned run could reach it
                need = f"no run of up to {MAX_PLAN_N} samples could"
            tail = (f"; cannot FAIL at these sizes (all {test.exceedances} exceedances in the after run would "
                    f"give {format_p(smallest)}): {need}")
        else:
            tail = f"; detects no rise at {power} power at {sizes}"
    return Comparison(status, point, low, high, diff.n_after, f"{head}{endings[status]}{tail} {diff.counts()}",
                      p_value=test.p_worse, p_better=test.p_better, detectable=detectable, **design)
