"""The before/after rule for one latency percentile, apart from how a check records it.

:func:`compare` turns two runs' samples into a status and its sentence; the checks that
use it (:func:`readiness.core.verdict.regression_check`, :func:`readiness.core.verdict.improvement_check`)
give it their limit and their wording. The rule decides on the whole interval of
:func:`readiness.stats.latency.quantile_difference` (coverage >= c for any distribution),
of the ratio after/before or of the difference in ms.
"""

from __future__ import annotations

from dataclasses import dataclass

from readiness.core.check import Status
from readiness.stats.formatting import format_against, format_number, format_percent, format_ratio
from readiness.stats.latency import Samples, quantile_difference


@dataclass(frozen=True)
class Comparison:
    """One before/after verdict: its status, the point estimate and interval it rests on
    (None where there is none) and the sentence that says why."""

    status: Status
    observed: float | None
    low: float | None
    high: float | None
    n_after: int
    text: str


def compare(before_ms: Samples, after_ms: Samples, q: float, confidence: float, *, where: str, ratio: bool,
            limit: float, endings: dict[Status, str], floor_ms: float = 0.0) -> Comparison:
    """PASS when the whole interval (of the ratio, or of the difference in ms) meets
    ``limit`` (``<=`` for a ratio, ``<`` for a difference), FAIL when it lies wholly above
    it, INCONCLUSIVE when it straddles it or does not exist.

    With ``floor_ms`` > 0 (ratios only) a rise also has to exceed that many ms to count:
    FAIL needs the difference's lower bound above the floor too, and a difference whose
    upper bound is within the floor PASSes whatever the ratio."""
    diff = quantile_difference(before_ms, after_ms, q, confidence, where=where)
    point, low, high = ((diff.ratio, diff.ratio_low, diff.ratio_high) if ratio
                        else (diff.diff, diff.diff_low, diff.diff_high))
    if (reason := diff.missing()) is not None:
        return Comparison(Status.INCONCLUSIVE, point, None, None, diff.n_after, f"{reason} {diff.counts()}")
    if point is None or low is None or high is None:  # inf - inf: neither series had a good answer there
        why = f"{diff.label} undefined: no successful answer in either series at this quantile {diff.counts()}"
        return Comparison(Status.INCONCLUSIVE, point, None, None, diff.n_after, why)
    fmt, unit = (format_ratio, "") if ratio else (format_number, " ms")
    shown = [format_against(x, limit, fmt) for x in (point, low, high)]
    head = (f"{diff.label} {'after/before' if ratio else 'after - before'} {shown[0]}{unit}, "
            f"{format_percent(confidence)} CI [{shown[1]}, {shown[2]}]{unit}")
    meets = high <= limit if ratio else high < limit
    status = Status.FAIL if low > limit else Status.PASS if meets else Status.INCONCLUSIVE
    ending = endings[status]
    if floor_ms > 0 and diff.diff_low is not None and diff.diff_high is not None:
        status, ending = _with_floor(status, ending, diff.diff, diff.diff_low, diff.diff_high, floor_ms)
    return Comparison(status, point, low, high, diff.n_after, f"{head}{ending} {diff.counts()}")


def _with_floor(status: Status, ending: str, diff: float | None, low: float, high: float,
                floor_ms: float) -> tuple[Status, str]:
    """A ratio verdict seen through a noise floor in ms: on an endpoint answering in a few
    ms, doubling is a scheduler hiccup, not a regression anyone feels, so a FAIL also
    needs the rise itself beyond ``floor_ms`` and a rise surely within it PASSes."""
    floor = f"+{format_number(floor_ms)} ms"
    shown = (f"after - before {format_number(diff) if diff is not None else 'n/a'} ms, "
             f"CI [{format_number(low)}, {format_number(high)}] ms")
    if high <= floor_ms:
        return Status.PASS, f"{ending}, but {shown} is within the {floor} noise floor"
    if status is Status.FAIL and low <= floor_ms:
        return Status.INCONCLUSIVE, f"{ending}, but {shown} straddles the {floor} noise floor"
    if status is Status.FAIL:
        return status, f"{ending}; {shown}, beyond the {floor} noise floor"
    return status, ending
