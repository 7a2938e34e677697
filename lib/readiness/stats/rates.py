"""Binomial proportions: the Wilson score interval and the sample sizes a rate verdict needs.

The parallel of :mod:`readiness.quantiles` for rates: pure statistics, no verdicts.
:mod:`readiness.verdict` turns these numbers into a :class:`~readiness.check.Status`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from numbers import Real
from typing import Any

from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

__all__ = ["as_count", "as_counts", "as_unit", "min_n_for_error_rate", "min_n_for_rate",
           "newcombe_interval", "wilson_interval"]


def as_count(value: Any, name: str, where: str) -> int:
    """``value`` as a count >= 0, or a ValueError naming ``name`` at ``where``."""
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{where}: {name} must be an integer, got {value!r}") from None
    if count < 0:
        raise ValueError(f"{where}: {name} must be >= 0, got {count}")
    return count


def as_counts(k: Any, n: Any, k_name: str, where: str) -> tuple[int, int]:
    """``(k, n)`` as counts with 0 <= k <= n, or a ValueError naming the culprit."""
    k_i, n_i = as_count(k, k_name, where), as_count(n, "n", where)
    if k_i > n_i:
        raise ValueError(f"{where}: {k_name} must be between 0 and n={n_i}, got {k_i}")
    return k_i, n_i


def as_unit(value: Any, name: str, where: str) -> float:
    """``value`` strictly between 0 and 1 (a rate or a confidence), or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < value < 1.0:
        raise ValueError(f"{where}: {name} must be strictly between 0 and 1, got {value!r}")
    return float(value)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (statsmodels), within [0, 1].

    Chosen over the normal approximation because it never leaves [0, 1] and keeps close
    to nominal coverage at 0/n and n/n, where readiness checks mostly live.
    """
    where = "wilson_interval"
    successes, n = as_counts(successes, n, "successes", where)
    confidence = as_unit(confidence, "confidence", where)
    if n == 0:
        raise ValueError("wilson_interval: no trials (n=0), a proportion has no interval without data")
    low, high = proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
    # The score interval reaches 0 exactly at x = 0 and 1 exactly at x = n; pin those ends
    # so rounding (0.9999999999999999) cannot make a perfect record look imperfect.
    low = 0.0 if successes == 0 else max(0.0, float(low))
    high = 1.0 if successes == n else min(1.0, float(high))
    return low, high


def _z(confidence: float) -> float:
    return float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))


def _settle(start: int, ok: Callable[[int], bool]) -> int:
    """Smallest n >= 1 with ok(n), starting from a closed-form guess; ok is monotone."""
    n = max(1, start)
    while not ok(n):
        n += 1
    while n > 1 and ok(n - 1):
        n -= 1
    return n


def min_n_for_rate(target: float, confidence: float = 0.95, *, exact_alpha: float | None = None) -> int:
    """Smallest n at which a perfect record (n/n) has a Wilson lower bound >= target.

    Closed form: the lower bound of n/n is n / (n + z^2), so n >= target z^2 / (1 - target);
    settled against :func:`wilson_interval` so it agrees with the rule exactly. With
    ``exact_alpha`` the record must also pass the exact binomial test at that one-sided
    level, target^n <= α (59 for a 95% target at 5%, where the Wilson 90% bound alone says 52).
    """
    target = as_unit(target, "target", "min_n_for_rate")
    z2 = _z(confidence) ** 2
    wilson = _settle(math.ceil(target * z2 / (1.0 - target)),
                     lambda n: wilson_interval(n, n, confidence)[0] >= target)
    return wilson if exact_alpha is None else max(wilson, _zero_defect_n(target, exact_alpha))


def min_n_for_error_rate(max_rate: float, confidence: float = 0.95, *, exact_alpha: float | None = None) -> int:
    """Smallest n at which zero errors give a Wilson upper bound < max_rate.

    Closed form: the upper bound of 0/n is z^2 / (n + z^2), so n > z^2 (1 - max) / max. With
    ``exact_alpha``, zero errors must also pass the exact test, (1 − max)^n <= α (299 for 1%).
    """
    max_rate = as_unit(max_rate, "max_rate", "min_n_for_error_rate")
    z2 = _z(confidence) ** 2
    wilson = _settle(math.floor(z2 * (1.0 - max_rate) / max_rate) + 1,
                     lambda n: wilson_interval(0, n, confidence)[1] < max_rate)
    return wilson if exact_alpha is None else max(wilson, _zero_defect_n(1.0 - max_rate, exact_alpha))


def _zero_defect_n(p: float, alpha: float) -> int:
    """Smallest n with p^n <= α (+ a rounding tolerance), i.e. a clean record of n shows p < 1 exactly."""
    return _settle(math.ceil(math.log(alpha) / math.log(p)), lambda n: p ** n <= alpha + 1e-12)


def newcombe_interval(x_after: int, n_after: int, x_before: int, n_before: int,
                      confidence: float = 0.90) -> tuple[float, float]:
    """Interval for the difference of two proportions, after − before (Newcombe's method 10).

    Built from the two Wilson intervals, so it inherits their good behaviour at 0/n and n/n
    (100/100 against 101/101 gives a narrow interval around 0, where the Wald interval
    collapses to a point) and never needs a pooled variance. Both samples need n > 0.
    """
    where = "newcombe_interval"
    x_after, n_after = as_counts(x_after, n_after, "x_after", where)
    x_before, n_before = as_counts(x_before, n_before, "x_before", where)
    if n_after == 0 or n_before == 0:
        raise ValueError(f"{where}: both samples need trials (n_after={n_after}, n_before={n_before})")
    p1, p2 = x_after / n_after, x_before / n_before
    l1, u1 = wilson_interval(x_after, n_after, confidence)
    l2, u2 = wilson_interval(x_before, n_before, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)
