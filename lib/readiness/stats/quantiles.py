"""Distribution-free confidence intervals for latency percentiles.

Latency distributions are skewed, multi-modal and heavy-tailed, so an interval that
assumes a shape (normal, lognormal) would be a guess dressed up as a number. Order
statistics need no shape: for n i.i.d. samples from a continuous distribution with
q-quantile xi_q, each sample falls below xi_q with probability q, so the count B of
samples below xi_q is Binomial(n, q) and

    P(X_(r) >= xi_q) = P(B <= r - 1)        (X_(r): the r-th smallest sample, 1-based).

An upper bound at confidence c is therefore the smallest rank r with P(B <= r - 1) >= c,
a lower bound the largest rank r with P(B >= r) >= c. Such a rank only exists once n is
large enough: the upper bound needs P(B <= n - 1) = 1 - q^n >= c, i.e. q^n <= 1 - c, which
is why a one-sided 95% upper bound of P99 needs n >= 299 and a two-sided one (2.5% per
tail) n >= 368. Below that the honest answer is "needs n >= N", never a number, and
:class:`QuantileInterval` carries that N. For discrete data (ties) the same ranks stay
conservative: coverage is at least the nominal level.

Point estimator: the nearest-rank quantile X_(ceil(n*q)) (Hyndman & Fan type 1, numpy's
``method="inverted_cdf"``). It is an observed latency, not an interpolation between two;
at least a fraction q of the samples are <= it, which is the literal reading of an SLO
such as "95% of requests within 120 ms"; and it always lies inside the order-statistic
interval (both bounds are ranks around ceil(n*q)). It can differ from numpy's default
linear interpolation (type 7, also what k6 reports) by at most one gap between adjacent
order statistics. Verdicts never rest on the point estimate, only on the bounds.

NaN samples (e.g. requests with no timing) are dropped before anything is computed and
counted in ``QuantileInterval.dropped`` so a report can say so; ``+inf`` is kept, since a
timed-out request is slower than any threshold and belongs in the tail.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from numbers import Real
from typing import Literal

import numpy as np
from scipy.stats import binom

from readiness.stats.formatting import format_number

Sided = Literal["two", "upper", "lower"]
SIDES: tuple[str, ...] = ("two", "upper", "lower")


def validate_quantile_args(q: float, confidence: float, sided: str) -> None:
    """Raise ValueError naming the first argument outside its domain."""
    if not (isinstance(q, Real) and 0.0 < q < 1.0):
        raise ValueError(f"q must be strictly between 0 and 1, got {q!r}")
    if not (isinstance(confidence, Real) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if sided not in SIDES:
        raise ValueError(f"sided must be one of 'two', 'upper', 'lower', got {sided!r}")


def _alpha_per_tail(confidence: float, sided: str) -> float:
    """Two-sided intervals split the miss probability equally between the tails."""
    alpha = 1.0 - confidence
    return alpha / 2.0 if sided == "two" else alpha


@functools.lru_cache(maxsize=4096)
def _upper_rank(n: int, q: float, alpha: float) -> int | None:
    """Smallest rank r with P(B > r - 1) <= alpha, or None when even r = n misses.

    Comparing the small tail probability (``sf``) with alpha rather than ``cdf`` with
    1 - alpha keeps full floating-point precision near the boundary. ``sf`` is
    decreasing in k and ``sf(n) = 0``, so a binary search over k in [0, n] finds it.
    Cached because notebooks ask for the same (n, q) for every endpoint.
    """
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if binom.sf(mid, n, q) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    rank = lo + 1
    return rank if rank <= n else None


@functools.lru_cache(maxsize=4096)
def _lower_rank(n: int, q: float, alpha: float) -> int | None:
    """Largest rank r with P(B <= r - 1) <= alpha, or None when even r = 1 misses."""
    lo, hi = -1, n - 1  # cdf(-1) = 0 always satisfies the condition
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if binom.cdf(mid, n, q) <= alpha:
            lo = mid
        else:
            hi = mid - 1
    rank = lo + 1
    return rank if rank >= 1 else None


def order_statistic_ranks(
    n: int, q: float, confidence: float = 0.95, sided: Sided = "two"
) -> tuple[int | None, int | None]:
    """1-based ranks (lower, upper) of the order statistics bounding the q-quantile.

    ``sided="upper"`` returns ``(None, r_upper)``, ``"lower"`` returns ``(r_lower, None)``;
    ``"two"`` returns both, each tail at (1 - confidence) / 2. A None inside a requested
    position means n is too small for that bound to exist at this confidence.
    """
    validate_quantile_args(q, confidence, sided)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    n = int(n)
    if n == 0:
        return None, None
    alpha = _alpha_per_tail(confidence, sided)
    low = _lower_rank(n, float(q), alpha) if sided in ("two", "lower") else None
    high = _upper_rank(n, float(q), alpha) if sided in ("two", "upper") else None
    return low, high


def _bounds_exist(n: int, q: float, confidence: float, sided: Sided) -> bool:
    low, high = order_statistic_ranks(n, q, confidence, sided)
    return (sided == "upper" or low is not None) and (sided == "lower" or high is not None)


def min_n_for_bound(q: float, confidence: float = 0.95, sided: Sided = "upper") -> int:
    """Smallest n for which the requested bound(s) of the q-quantile exist.

    Closed form: an upper bound needs q^n <= alpha, a lower bound (1 - q)^n <= alpha
    (alpha per tail), so n = ceil(log(alpha) / log(q)) and its mirror. The logarithms can
    land a hair off an integer, so the result is settled against
    :func:`order_statistic_ranks`, which is what the intervals actually use.
    """
    validate_quantile_args(q, confidence, sided)
    alpha = _alpha_per_tail(confidence, sided)
    need_upper = math.ceil(math.log(alpha) / math.log(q))
    need_lower = math.ceil(math.log(alpha) / math.log1p(-q))
    n = {"upper": need_upper, "lower": need_lower, "two": max(need_upper, need_lower)}[sided]
    n = max(n, 1)
    while not _bounds_exist(n, q, confidence, sided):
        n += 1
    while n > 1 and _bounds_exist(n - 1, q, confidence, sided):
        n -= 1
    return n


def quantile_label(q: float) -> str:
    """``0.95 -> "P95"``, ``0.999 -> "P99.9"``: the name a reader expects."""
    return f"P{round(q * 100, 6):g}"


def nearest_rank(n: int, q: float) -> int:
    """1-based rank of the nearest-rank estimate of the q-quantile among n samples:
    ceil(n*q) with the product rounded first, so that 100 * 0.07 = 7.000000000000001
    gives rank 7, not 8."""
    return max(1, math.ceil(round(n * q, 9)))


@dataclasses.dataclass(frozen=True)
class QuantileInterval:
    """A percentile with its distribution-free confidence bounds.

    ``low``/``high`` are each present only when that bound exists (``low`` is always
    None for ``sided="upper"``, ``high`` for ``"lower"``). ``needs_n`` is the sample size
    at which every requested bound would exist, or None when they all do. ``n`` counts
    the samples used; ``dropped`` the NaN samples removed before.
    """

    q: float
    n: int
    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    sided: Sided
    needs_n: int | None
    dropped: int = 0

    @property
    def exists(self) -> bool:
        """True when there is data and every requested bound exists."""
        return self.n > 0 and self.needs_n is None

    def describe(self, unit: str = "ms") -> str:
        """One line for a report, e.g. ``P99 = 41.2 ms, 95% CI needs n ≥ 368 (n=200)``.

        A bound that does not exist is never shown as a number; the line states the n
        that would make it exist instead.
        """
        suffix = f" {unit}" if unit else ""
        conf = f"{round(self.confidence * 100, 6):g}%"
        what = {"two": "CI", "upper": "upper bound", "lower": "lower bound"}[self.sided]
        label = quantile_label(self.q)
        head = f"{label}: no data" if self.estimate is None else (
            f"{label} = {format_number(self.estimate)}{suffix}")
        if not self.exists:
            bounds = f"{conf} {what} needs n ≥ {self.needs_n}"
        elif self.sided == "two":
            assert self.low is not None and self.high is not None
            bounds = f"{conf} CI [{format_number(self.low)}, {format_number(self.high)}]{suffix}"
        else:
            value = self.high if self.sided == "upper" else self.low
            assert value is not None
            bounds = f"{conf} {what} {format_number(value)}{suffix}"
        count = f"n={self.n}" + (f", {self.dropped} NaN dropped" if self.dropped else "")
        return f"{head}, {bounds} ({count})"


def clean_samples(samples: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
    """Sorted finite-or-infinite samples as floats, plus the number of NaNs removed."""
    arr = np.asarray(samples, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"samples must be one-dimensional, got shape {arr.shape}")
    nan = np.isnan(arr)
    return np.sort(arr[~nan]), int(nan.sum())


def quantile_interval(
    samples: Sequence[float] | np.ndarray,
    q: float,
    confidence: float = 0.95,
    sided: Sided = "two",
) -> QuantileInterval:
    """Nearest-rank estimate of the q-quantile with its order-statistic bound(s)."""
    validate_quantile_args(q, confidence, sided)
    q, confidence = float(q), float(confidence)
    data, dropped = clean_samples(samples)
    n = int(data.size)
    if n == 0:
        return QuantileInterval(q=q, n=0, estimate=None, low=None, high=None,
                                confidence=confidence, sided=sided,
                                needs_n=min_n_for_bound(q, confidence, sided), dropped=dropped)
    low_rank, high_rank = order_statistic_ranks(n, q, confidence, sided)
    missing = (sided != "upper" and low_rank is None) or (sided != "lower" and high_rank is None)
    return QuantileInterval(
        q=q,
        n=n,
        estimate=float(data[nearest_rank(n, q) - 1]),
        low=float(data[low_rank - 1]) if low_rank is not None else None,
        high=float(data[high_rank - 1]) if high_rank is not None else None,
        confidence=confidence,
        sided=sided,
        needs_n=min_n_for_bound(q, confidence, sided) if missing else None,
        dropped=dropped,
    )
