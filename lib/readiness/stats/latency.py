"""Latency statistics that hold at any n: percentile tables, before/after differences,
sample-size planning, and histogram/ECDF aggregates whose size does not grow with n.

Everything here rests on the distribution-free order-statistic bounds of
:mod:`readiness.stats.quantiles`, so no latency shape is assumed. Conventions shared by every
function:

- samples are latencies in ms, so they must be >= 0 (a negative latency is a measurement
  bug, not data, and is refused with a message);
- NaN means "no timing" and is dropped and counted;
- ``+inf`` means "no answer" (a timeout, a refused connection): it is kept, as a request
  slower than any threshold, so it moves the tail exactly as far as it should.

Scale: a probe run has hundreds of samples, an imported access log can have tens of
millions. Only a handful of order statistics are ever needed, so they are selected by
partitioning one copy of the data (linear time) instead of sorting it; the caller's
array is never modified.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from readiness.stats.formatting import format_number
from readiness.stats.quantiles import (
    Sided,
    min_n_for_bound,
    nearest_rank,
    order_statistic_ranks,
    quantile_label,
    validate_quantile_args,
)

Samples = Sequence[float] | np.ndarray | pd.Series
#: Up to this many ranks, one partition pass per rank beats a sort; beyond it (an ECDF
#: grid) a single sort is cheaper.
PARTITION_MAX_RANKS = 16
MAX_BINS = 1000
MAX_POINTS = 10_001
DIFFERENCE_METHOD = "order-statistic interval per run at confidence √c, combined"


def clean_latencies(samples: Samples, where: str, name: str) -> tuple[np.ndarray, int]:
    """Samples as a float array (no copy when already float64) and the number of NaNs
    removed; refuses negative latencies."""
    try:
        data = np.asarray(samples, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be numbers (latencies in ms)") from None
    if data.ndim != 1:
        raise ValueError(f"{where}: {name} must be one-dimensional, got shape {data.shape}")
    nan = np.isnan(data)
    dropped = int(np.count_nonzero(nan))
    if dropped:
        data = data[~nan]
    if data.size and (smallest := float(data.min())) < 0:
        raise ValueError(f"{where}: {name} must be >= 0 (latencies in ms), got {format_number(smallest)}")
    return data, dropped


def _checked(where: str, q: float, confidence: float, sided: str = "two") -> None:
    try:
        validate_quantile_args(q, confidence, sided)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _order_statistics(data: np.ndarray, ranks: Iterable[int | None]) -> dict[int, float]:
    """The r-th smallest value of ``data`` for every 1-based rank given (None ignored).

    Selection, not sorting: ranks are placed one at a time with a single-pivot partition
    of a shrinking part of one copy (numpy's single-pivot partition is far faster than
    its several-pivots-at-once form). Walking up suits high ranks (each pass only covers
    what lies above the last rank placed), walking down suits low ones; the cheaper walk
    is chosen. Past :data:`PARTITION_MAX_RANKS` ranks one sort costs less.
    """
    wanted = sorted({r for r in ranks if r is not None})
    if not wanted:
        return {}
    if len(wanted) > PARTITION_MAX_RANKS:
        ordered = np.sort(data)
    else:
        ordered, n, kth = data.copy(), data.size, [r - 1 for r in wanted]
        if sum(n - k for k in kth) <= sum(kth):
            low = 0  # invariant: ordered[:low] holds the `low` smallest values
            for k in kth:
                ordered[low:].partition(k - low)
                low = k + 1
        else:
            high = n  # invariant: ordered[high:] holds the n - high largest values
            for k in reversed(kth):
                ordered[:high].partition(k)
                high = k
    return {r: float(ordered[r - 1]) for r in wanted}


@dataclasses.dataclass(frozen=True)
class PercentileRow:
    """One line of a percentile table.

    ``low``/``high`` form the two-sided interval and are both None unless it exists;
    ``upper`` is the one-sided upper bound a verdict uses. ``needs_n`` / ``upper_needs_n``
    give the sample size at which the missing interval / bound would exist.
    ``unanswered`` counts the ``+inf`` samples inside ``n``; ``dropped`` the NaNs outside it.
    """

    q: float
    n: int
    estimate: float | None
    low: float | None
    high: float | None
    upper: float | None
    confidence: float
    needs_n: int | None
    upper_needs_n: int | None
    unanswered: int = 0
    dropped: int = 0

    @property
    def label(self) -> str:
        return quantile_label(self.q)

    @property
    def exists(self) -> bool:
        """True when there is data and the two-sided interval exists."""
        return self.n > 0 and self.needs_n is None

    def describe(self, unit: str = "ms") -> str:
        """``P99 = 80.3 ms, 95% CI needs n ≥ 368, upper bound needs n ≥ 299 (n=200)``:
        a bound that does not exist is never printed as a number."""
        sfx = f" {unit}" if unit else ""
        conf = f"{round(self.confidence * 100, 6):g}%"
        head = (f"{self.label}: no data" if self.estimate is None
                else f"{self.label} = {format_number(self.estimate)}{sfx}")
        ci = (f"{conf} CI needs n ≥ {self.needs_n}" if self.low is None or self.high is None
              else f"{conf} CI [{format_number(self.low)}, {format_number(self.high)}]{sfx}")
        up = (f"upper bound needs n ≥ {self.upper_needs_n}" if self.upper is None
              else f"upper bound {format_number(self.upper)}{sfx}")
        count = f"n={self.n}" + (f" incl. {self.unanswered} unanswered" if self.unanswered else "")
        count += f", {self.dropped} NaN dropped" if self.dropped else ""
        return f"{head}, {ci}, {up} ({count})"

    def to_dict(self) -> dict[str, Any]:
        """A flat record for a table or CSV, labelled ``P95`` etc."""
        return {"percentile": self.label, **dataclasses.asdict(self)}


def percentile_summary(samples_ms: Samples, qs: Iterable[float] = (0.5, 0.95, 0.99),
                       confidence: float = 0.95) -> list[PercentileRow]:
    """Nearest-rank estimate, two-sided interval and one-sided upper bound of each
    q-quantile, from one selection over the data (no full sort)."""
    where = "percentile_summary"
    qs = list(qs)
    if not qs:
        raise ValueError(f"{where}: qs must name at least one quantile")
    for q in qs:
        _checked(where, q, confidence)
    data, dropped = clean_latencies(samples_ms, where, "samples_ms")
    return _rows(data, dropped, [float(q) for q in qs], float(confidence))


def _rows(data: np.ndarray, dropped: int, qs: list[float], confidence: float) -> list[PercentileRow]:
    n = int(data.size)
    plans = []
    for q in qs:
        low, high = order_statistic_ranks(n, q, confidence, "two")
        if low is None or high is None:
            low = high = None
        plans.append((q, nearest_rank(n, q) if n else None, low, high,
                      order_statistic_ranks(n, q, confidence, "upper")[1]))
    values = _order_statistics(data, (r for plan in plans for r in plan[1:]))
    unanswered = int(np.count_nonzero(np.isposinf(data)))
    rows = []
    for q, est, low, high, upper in plans:
        rows.append(PercentileRow(
            q=q, n=n, estimate=values.get(est), low=values.get(low), high=values.get(high),
            upper=values.get(upper), confidence=confidence,
            needs_n=None if low is not None else min_n_for_bound(q, confidence, "two"),
            upper_needs_n=None if upper is not None else min_n_for_bound(q, confidence, "upper"),
            unanswered=unanswered, dropped=dropped))
    return rows


@dataclasses.dataclass(frozen=True)
class QuantileDifference:
    """The q-quantile of an *after* run against a *before* run.

    ``diff`` = after - before (ms) and ``ratio`` = after / before, each with its interval
    at joint confidence ``confidence``. Interval fields are None when n is too small for
    an interval to exist; ``needs_n`` then gives the per-run n that would make it exist.
    Unbounded ends are ``±inf`` (e.g. when unanswered requests reach the quantile).
    """

    q: float
    confidence: float
    n_before: int
    n_after: int
    before: float | None
    after: float | None
    diff: float | None
    diff_low: float | None
    diff_high: float | None
    ratio: float | None
    ratio_low: float | None
    ratio_high: float | None
    needs_n: int | None
    method: str = DIFFERENCE_METHOD
    dropped_before: int = 0
    dropped_after: int = 0

    @property
    def label(self) -> str:
        return quantile_label(self.q)

    @property
    def exists(self) -> bool:
        """True when both runs have data and the intervals exist."""
        return self.n_before > 0 and self.n_after > 0 and self.needs_n is None

    def missing(self) -> str | None:
        """Why there is no interval (``no baseline``, ``no data``, ``P99: 95% CI needs n ≥
        435 per run``), or None when there is one."""
        if self.n_before == 0:
            return "no baseline"
        if self.n_after == 0:
            return "no data"
        if self.needs_n is not None:
            return f"{self.label}: {round(self.confidence * 100, 6):g}% CI needs n ≥ {self.needs_n} per run"
        return None

    def counts(self) -> str:
        """``(n=200 before, 200 after)``, plus the NaN samples dropped if any."""
        dropped = self.dropped_before + self.dropped_after
        text = f"(n={self.n_before} before, {self.n_after} after)"
        return text + (f"; {dropped} NaN sample{'' if dropped == 1 else 's'} dropped" if dropped else "")

    def describe(self, unit: str = "ms") -> str:
        """``P95 after - before = -42.1 ms, 95% CI [-60, -20.5] ms; after/before = 0.6,
        95% CI [0.5, 0.72] (n=200 before, 200 after)``."""
        sfx = f" {unit}" if unit else ""
        conf = f"{round(self.confidence * 100, 6):g}%"
        if (reason := self.missing()) is not None:
            return f"{reason} {self.counts()}"
        diff = "undefined" if self.diff is None else f"{format_number(self.diff)}{sfx}"
        ratio = "undefined" if self.ratio is None else f"{self.ratio:.3g}"
        return (f"{self.label} after - before = {diff}, {conf} CI [{format_number(self.diff_low)}, "
                f"{format_number(self.diff_high)}]{sfx}; after/before = {ratio}, {conf} CI "
                f"[{self.ratio_low:.3g}, {self.ratio_high:.3g}] {self.counts()}")

    def to_dict(self) -> dict[str, Any]:
        """A flat record for comparison.csv, labelled ``P95`` etc."""
        return {"percentile": self.label, **dataclasses.asdict(self)}


def _combine(op: str, a: float, b: float, undefined: float | None) -> float | None:
    """a - b or a / b in IEEE arithmetic; inf - inf, inf / inf and 0 / 0 are undefined and
    become ``undefined`` (the uninformative end for a bound, None for an estimate)."""
    with np.errstate(all="ignore"):
        x = np.float64(a) - np.float64(b) if op == "-" else np.float64(a) / np.float64(b)
    return undefined if math.isnan(x) else float(x)


def quantile_difference(before_ms: Samples, after_ms: Samples, q: float, confidence: float = 0.95,
                        *, where: str = "quantile_difference") -> QuantileDifference:
    """Difference and ratio of the q-quantile between two independent runs, with intervals.

    Method: each run gets its own distribution-free order-statistic interval at confidence
    √c, and the two are combined as [lo_after - hi_before, hi_after - lo_before] (for the
    ratio [lo_after / hi_before, hi_after / lo_before], latencies being >= 0). The runs are
    independent, so both intervals hold at once with probability >= √c · √c = c, and
    whenever both hold the true difference lies in the combined interval: coverage >= c
    for any continuous distribution, any n, any q, with no resampling.

    Why not a bootstrap (resample each run, take the spread of the resampled
    differences): it is narrower, and on smooth distributions it covers about as it
    should. In a seeded simulation (lognormal runs with sigma 0.6, after = 1.25 x before,
    n = 200 per run, 400 replications, B = 1000) its 95% interval of the P95 difference
    covered 96% of the time at 55% of the width of this one, which covered 99.75%.
    It was not chosen because its coverage is only asymptotic: nothing guarantees it at
    the n of a probe run, and it falters on ties (latencies rounded to the ms) and where
    the density near the quantile is thin, as between the modes of a bimodal service; it
    prints an interval where none is supported (for P99 at n = 200 it rests on the top two
    or three samples of each run, where this method says "needs n ≥ 435"); it is
    random (two renders of the same data differ unless seeded) and costs B resamples per
    endpoint, which at 10M samples is out of reach. The price paid here is width: the
    interval is conservative, so a modest true change can read INCONCLUSIVE where a
    bootstrap would claim it. For a verdict that must not raise false alarms, and whose
    stop condition halts a run, that is the side to err on. When either run is too small
    for its interval, ``needs_n`` gives the per-run n (:func:`plan_difference_sample_size`).

    ``where`` names the caller in error messages.
    """
    _checked(where, q, confidence)
    q, confidence = float(q), float(confidence)
    before, dropped_b = clean_latencies(before_ms, where, "before_ms")
    after, dropped_a = clean_latencies(after_ms, where, "after_ms")
    (b,), (a,) = (_rows(run, 0, [q], math.sqrt(confidence)) for run in (before, after))
    est_b, lo_b, hi_b, est_a, lo_a, hi_a = b.estimate, b.low, b.high, a.estimate, a.low, a.high
    both, point = a.exists and b.exists, est_a is not None and est_b is not None
    return QuantileDifference(
        q=q, confidence=confidence, n_before=int(before.size), n_after=int(after.size),
        before=est_b, after=est_a,
        diff=_combine("-", est_a, est_b, None) if point else None,
        diff_low=_combine("-", lo_a, hi_b, -math.inf) if both else None,
        diff_high=_combine("-", hi_a, lo_b, math.inf) if both else None,
        ratio=_combine("/", est_a, est_b, None) if point else None,
        ratio_low=_combine("/", lo_a, hi_b, 0.0) if both else None,
        ratio_high=_combine("/", hi_a, lo_b, math.inf) if both else None,
        needs_n=None if both else plan_difference_sample_size(q, confidence),
        dropped_before=dropped_b, dropped_after=dropped_a)


def plan_sample_size(q: float, confidence: float = 0.95, sided: Sided = "upper") -> int:
    """Smallest n at which the order-statistic bound of the q-quantile exists.

    ``sided="upper"`` is what a latency SLO verdict needs to be able to PASS (P99 at 95%:
    299); ``"two"`` what a reported two-sided interval needs (P99 at 95%: 368). Existence
    is the floor: more samples narrow the bound and make a close call decidable.
    """
    _checked("plan_sample_size", q, confidence, sided)
    return min_n_for_bound(q, confidence, sided)


def plan_difference_sample_size(q: float, confidence: float = 0.95) -> int:
    """Smallest n *per run* at which :func:`quantile_difference` has an interval: each
    run needs its two-sided bound at confidence √c (P95 at 95%: 86, P99: 435)."""
    _checked("plan_difference_sample_size", q, confidence)
    return min_n_for_bound(q, math.sqrt(confidence), "two")


def _finite_range(data: np.ndarray, finite: np.ndarray) -> tuple[float, float, float | None]:
    """(smallest, largest, smallest positive) finite sample, without copying the samples."""
    lo = float(np.min(data, where=finite, initial=np.inf))
    hi = float(np.max(data, where=finite, initial=-np.inf))
    pos = float(np.min(data, where=finite & (data > 0), initial=np.inf))
    return lo, hi, pos if math.isfinite(pos) else None


def histogram(samples_ms: Samples, bins: int = 50, log: bool = False) -> pd.DataFrame:
    """Counts per bin over the finite samples, plus a last open bin for "no answer".

    Returns columns ``bin_low_ms, bin_high_ms, count``: ``bins`` equal-width bins (equal
    ratio with ``log=True``) from the smallest to the largest finite sample, each closed
    on the left (the last on both sides), then one row ``(largest finite, +inf]`` counting
    the ``+inf`` samples. With ``log=True`` the bins start at the smallest positive
    sample; zeros, if any, widen the first bin down to 0. All finite samples equal: the
    bins span [v, v + 1 ms]. No finite sample: only the open row (``bin_low_ms`` = +inf).
    No sample at all: an empty frame. NaN samples are left out. The row count never
    depends on n.
    """
    where = "histogram"
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not 1 <= bins <= MAX_BINS:
        raise ValueError(f"{where}: bins must be an integer between 1 and {MAX_BINS}, got {bins!r}")
    data, _ = clean_latencies(samples_ms, where, "samples_ms")
    columns = ["bin_low_ms", "bin_high_ms", "count"]
    if data.size == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "count" else "float64") for c in columns})
    finite = np.isfinite(data)
    unanswered = int(data.size - np.count_nonzero(finite))
    lo, hi, pos = _finite_range(data, finite)
    if not math.isfinite(lo):
        return pd.DataFrame({"bin_low_ms": [math.inf], "bin_high_ms": [math.inf], "count": [unanswered]})
    if log and pos is not None and hi > pos:
        edges = np.geomspace(pos, hi, int(bins) + 1)
        edges[0], edges[-1] = (0.0 if lo < pos else pos), hi
        counts, edges = np.histogram(data, bins=edges)  # +inf lies beyond the last edge
    else:
        counts, edges = np.histogram(data, bins=int(bins), range=(lo, hi if hi > lo else lo + 1.0))
    return pd.DataFrame({"bin_low_ms": np.append(edges[:-1], edges[-1]),
                         "bin_high_ms": np.append(edges[1:], math.inf),
                         "count": np.append(counts, unanswered).astype("int64")})


def ecdf(samples_ms: Samples, points: int = 101) -> pd.DataFrame:
    """The empirical CDF on a fixed grid of probabilities: columns ``p, value_ms``.

    ``p`` runs evenly from 0 to 1; ``value_ms`` is the nearest-rank p-quantile (the
    minimum at p = 0, the maximum at p = 1), so the curve is made of observed latencies
    and the row count is ``points`` whatever n is. Unanswered requests show as ``+inf``
    at the top of the curve. No sample: an empty frame.
    """
    where = "ecdf"
    if isinstance(points, bool) or not isinstance(points, int | np.integer) or not 2 <= points <= MAX_POINTS:
        raise ValueError(f"{where}: points must be an integer between 2 and {MAX_POINTS}, got {points!r}")
    data, _ = clean_latencies(samples_ms, where, "samples_ms")
    n = int(data.size)
    if n == 0:
        return pd.DataFrame({"p": pd.Series(dtype="float64"), "value_ms": pd.Series(dtype="float64")})
    grid = np.linspace(0.0, 1.0, points)
    ranks = [1 if p == 0.0 else nearest_rank(n, float(p)) for p in grid]
    values = _order_statistics(data, ranks)
    return pd.DataFrame({"p": grid, "value_ms": [values[r] for r in ranks]})
