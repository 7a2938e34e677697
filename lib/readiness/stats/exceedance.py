"""A one-sided exceedance test for a before/after latency percentile, and its power.

Why this exists: the before/after rule used to decide on the interval of
:func:`readiness.stats.latency.quantile_difference` (two independent order-statistic
intervals, each at confidence √c, combined). That interval is valid for any distribution
but hugely conservative as a *test*: at n = 200 per run, with the +20% allowance, the
smallest P95 regression it FAILed with 80% power was about +115%, and a run with no change
at all read PASS only ~3% of the time. The test here asks the same question with the
power the data allow.

The test (Mood's median test generalised to the q-quantile): the before run is first moved
to the edge of what is allowed, g(x) = max(limit · x, x + floor_ms) (a rise of ``limit``
as a ratio, but at least ``floor_ms`` ms; ``limit = 1, floor_ms = 0`` for "no rise at
all"). The q-quantile of g(before) is g(Q_before(q)) because g is increasing. Pool the
after run with g(before), take the pooled nearest-rank q-quantile t as the threshold and
count the samples of each run above it. If the after run were distributed exactly like
g(before) (the boundary of the hypothesis "no rise beyond the allowance"), every labelling
of the pooled samples would be equally likely, so given the pooled values the after run's
count is hypergeometric: Fisher's exact test on the 2x2 table (run x above/not above t).

- ``p_worse``: P(after has at least as many exceedances) — small when Q_after(q) >
  g(Q_before(q)), the evidence a FAIL needs;
- ``p_better``: P(after has at most as many) — small when Q_after(q) < g(Q_before(q)),
  the non-inferiority mirror a PASS needs.

Exactness: the test is exact (conditionally on the pooled values, hence also
unconditionally) when the after run is g(before) in distribution — for ``floor_ms = 0``
that is "after is a ``limit``-scaled copy of before", the boundary of the regression
hypothesis in a scale family. When the two runs differ in shape but share the quantile
(e.g. after narrower and slower in the middle), the exceedance probabilities at the pooled
threshold are only approximately equal and the size is approximately α, as for Mood's test.
Unlike the interval rule it is not guaranteed for every distribution; it is exact at the
scale-family boundary and powerful, which is what a regression gate needs.

Measured (seeded simulation, lognormal runs with sigma 0.6, n = 200 per run, P95, +20%
allowance, one-sided α = 5%, 4000 replications; the interval rule in brackets): P(FAIL) at
x1.2 (the boundary) 0.015 [0.0003]; power at x1.5 0.35 [0.06], at x1.78 0.82 [0.37], at
x2 0.96 [0.66]; P(PASS) with no change 0.25 [0.036], 0.93 at n = 1000 per run. The size
stays under α because Fisher's test is discrete (about 15 of the 20 pooled exceedances
must fall in the after run), not because the test is loose.

Conventions (those of :mod:`readiness.stats.latency`): NaN is "no timing" and is dropped and
counted; ``+inf`` is "no answer" and is kept, as slower than any threshold. Ties at the
threshold: a sample counts as an exceedance when it is *strictly* above t (so latencies
rounded to the ms that sit exactly at t do not count), except when that leaves no
exceedance at all — t is then the pooled maximum, typically ``+inf`` because at least a
share 1 - q of the pooled requests went unanswered — and the samples *at* t count instead
(an after run that is mostly unanswered must still be able to FAIL). Either classification
depends only on the pooled values, not on which run a sample came from, so the test stays
exact; ties only cost power.

Power: the planning functions assume a *scale family*, after = r x before, with the before
run's own shape (its empirical distribution, or a lognormal of shape ``sigma`` when there
is no sample). They are planning figures, not guarantees — see :func:`exceedance_power`.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Real
from typing import Any

import numpy as np
from scipy.stats import hypergeom, nchypergeom_fisher, norm

from readiness.stats.latency import Samples, clean_latencies
from readiness.stats.quantiles import nearest_rank, quantile_label

#: The one-sided level a comparison decides at unless told otherwise.
DEFAULT_ALPHA = 0.05
#: The power the detectable ratio and the planned n are quoted at.
DEFAULT_POWER = 0.80
#: Lognormal shape assumed for planning when there is no before sample. Latencies of a
#: healthy service typically have sigma 0.3-0.8; 0.6 is the shape the power figures quoted
#: in this module's docstring were simulated with.
DEFAULT_SIGMA = 0.6
#: Ratios searched by :func:`detectable_ratio`: a rise beyond x1000 is "not detectable".
MAX_RATIO = 1000.0
#: Per-run sizes searched by :func:`plan_exceedance_sample_size`.
MAX_PLAN_N = 10_000_000
#: Above this many samples the before shape is summarised by about this many weighted
#: order statistics (denser in the upper tail) instead of being used whole.
SHAPE_MAX_POINTS = 2_000
METHOD = "one-sided exceedance test (Fisher) at the pooled quantile"


# ---------------------------------------------------------------- arguments

def _number(value: Any, name: str, where: str, *, low: float, inclusive: bool = True,
            high: float | None = None) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
          and (value >= low if inclusive else value > low) and (high is None or value < high))
    if not ok:
        bound = f"{'>=' if inclusive else '>'} {low:g}" + (f" and < {high:g}" if high is not None else "")
        raise ValueError(f"{where}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_q(q: Any, where: str) -> float:
    if isinstance(q, bool) or not (isinstance(q, Real) and 0.0 < q < 1.0):
        raise ValueError(f"{where}: q must be strictly between 0 and 1, got {q!r}")
    return float(q)


def _check_unit(value: Any, name: str, where: str) -> float:
    if isinstance(value, bool) or not (isinstance(value, Real) and 0.0 < value < 1.0):
        raise ValueError(f"{where}: {name} must be strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_size(n: Any, name: str, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"{where}: {name} must be a non-negative integer, got {n!r}")
    return int(n)


def allowance(samples_ms: np.ndarray | float, limit: float = 1.0, floor_ms: float = 0.0) -> np.ndarray:
    """g(x) = max(limit · x, x + floor_ms): the largest after latency still allowed for a
    before latency x. Increasing in x, so the q-quantile of g(before) is g of the before
    q-quantile. ``+inf`` stays ``+inf`` (no answer before, anything goes after)."""
    x = np.asarray(samples_ms, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.maximum(limit * x, x + floor_ms)


def _allowance_inverse(t: float, limit: float, floor_ms: float) -> float:
    """g⁻¹(t) = min(t / limit, t - floor_ms): the inverse of a max of increasing maps is
    the min of their inverses."""
    return min(t / limit, t - floor_ms)


# ---------------------------------------------------------------- the test

@dataclasses.dataclass(frozen=True)
class ExceedanceTest:
    """The result of :func:`exceedance_test`.

    ``threshold`` is the pooled nearest-rank q-quantile of after ∪ g(before);
    ``exceed_after`` / ``exceed_before`` count the samples above it in the after run and
    in g(before); ``tie_rule`` is ``">"`` (strictly above, the rule) or ``">="`` (at or
    above, used only when nothing is strictly above). ``p_worse`` / ``p_better`` are the
    exact one-sided p-values (see the module docstring). Every computed field is None when
    a run has no data (:meth:`missing` says which).
    """

    q: float
    limit: float
    floor_ms: float
    n_before: int
    n_after: int
    threshold: float | None
    exceed_before: int | None
    exceed_after: int | None
    tie_rule: str | None
    p_worse: float | None
    p_better: float | None
    dropped_before: int = 0
    dropped_after: int = 0
    unanswered_before: int = 0
    unanswered_after: int = 0
    method: str = METHOD

    @property
    def label(self) -> str:
        return quantile_label(self.q)

    @property
    def exceedances(self) -> int | None:
        """Exceedances in both runs together (the margin the test conditions on)."""
        if self.exceed_after is None or self.exceed_before is None:
            return None
        return self.exceed_after + self.exceed_before

    @property
    def expected_after(self) -> float | None:
        """The after run's expected count under the null: its share of all exceedances."""
        k = self.exceedances
        return None if k is None else k * self.n_after / (self.n_after + self.n_before)

    def missing(self) -> str | None:
        """``no baseline`` (no before sample), ``no data`` (no after sample), or None."""
        if self.n_before == 0:
            return "no baseline"
        if self.n_after == 0:
            return "no data"
        return None

    @property
    def degenerate(self) -> bool:
        """True when the pooled threshold splits nothing (no exceedance, or every sample
        at it): the test has no information and both p-values are 1."""
        k = self.exceedances
        return k is None or k == 0 or k == self.n_after + self.n_before

    def smallest_p_worse(self) -> float | None:
        """The FAIL-side p-value of the most extreme table with these margins (every
        exceedance in the after run): when it exceeds α no data of this size can FAIL."""
        k = self.exceedances
        if k is None:
            return None
        return _fisher_tail(min(k, self.n_after), self.n_after + self.n_before, k, self.n_after)

    def to_dict(self) -> dict[str, Any]:
        return {"percentile": self.label, **dataclasses.asdict(self)}


def _fisher_tail(k: int, total: int, exceedances: int, n_after: int) -> float:
    """P(X >= k) for X ~ Hypergeometric(total, exceedances, n_after), clipped to [0, 1]."""
    return float(min(1.0, max(0.0, hypergeom.sf(k - 1, total, exceedances, n_after))))


def exceedance_test(before_ms: Samples, after_ms: Samples, q: float, *, limit: float = 1.0,
                    floor_ms: float = 0.0, where: str = "exceedance_test") -> ExceedanceTest:
    """Is the after run's q-quantile above g(before's q-quantile)? (and its mirror).

    g(x) = max(``limit`` · x, x + ``floor_ms``) is the allowance (:func:`allowance`):
    ``limit`` >= 1 is the allowed ratio (1.2 for +20%), ``floor_ms`` >= 0 a noise floor in
    ms a rise must also exceed; ``limit=1, floor_ms=0`` tests "any rise" / "any fall"
    (an improvement). See the module docstring for the method, its exactness and ties.

    NaN samples are dropped and counted, ``+inf`` (no answer) is kept. A run without data
    gives a result whose :meth:`ExceedanceTest.missing` names it and whose p-values are
    None. Raises ValueError only on arguments (q outside (0, 1), limit < 1, floor_ms < 0,
    samples that are not a 1-D list of numbers), never on the data themselves.
    """
    q = _check_q(q, where)
    limit = _number(limit, "limit", where, low=1.0)
    floor_ms = _number(floor_ms, "floor_ms", where, low=0.0)
    before, dropped_b = clean_latencies(before_ms, where, "before_ms")
    after, dropped_a = clean_latencies(after_ms, where, "after_ms")
    n_b, n_a = int(before.size), int(after.size)
    common = {"q": q, "limit": limit, "floor_ms": floor_ms, "n_before": n_b, "n_after": n_a,
              "dropped_before": dropped_b, "dropped_after": dropped_a,
              "unanswered_before": int(np.count_nonzero(np.isposinf(before))),
              "unanswered_after": int(np.count_nonzero(np.isposinf(after)))}
    if n_b == 0 or n_a == 0:
        return ExceedanceTest(threshold=None, exceed_before=None, exceed_after=None, tie_rule=None,
                              p_worse=None, p_better=None, **common)
    moved = allowance(before, limit, floor_ms)
    total = n_a + n_b
    rank = nearest_rank(total, q)
    pooled = np.concatenate((after, moved))  # our own copy: partitioned in place, linear time
    pooled.partition(rank - 1)
    t = float(pooled[rank - 1])
    k_a, k_g, rule = int(np.count_nonzero(after > t)), int(np.count_nonzero(moved > t)), ">"
    if k_a + k_g == 0:  # t is the pooled maximum (typically +inf): count the samples at it
        k_a, k_g, rule = int(np.count_nonzero(after >= t)), int(np.count_nonzero(moved >= t)), ">="
    k = k_a + k_g
    p_worse = _fisher_tail(k_a, total, k, n_a)
    p_better = float(min(1.0, max(0.0, hypergeom.cdf(k_a, total, k, n_a))))
    return ExceedanceTest(threshold=t, exceed_before=k_g, exceed_after=k_a, tie_rule=rule,
                          p_worse=p_worse, p_better=p_better, **common)


# ---------------------------------------------------------------- the before shape, for power

class _Shape:
    """The survival function S(x) = P(before > x) that the power calculation reads.

    From a sample: its empirical distribution, smoothed in log-latency by a Gaussian kernel
    (Silverman's bandwidth). The power at P95 turns on the spacing of the before run's top
    decile, which 200 samples pin down only roughly; smoothing halves the sample-to-sample
    spread of the detectable ratio (lognormal sigma 0.6, n = 200, 40 samples: sd 0.11
    against 0.18 for the raw ECDF, both centred on the true x1.76) and makes S continuous
    so the threshold equation has a root. Zero latencies are an atom at 0 and ``+inf``
    (no answer) one above every finite x. Large samples are summarised by weighted order
    statistics (denser in the upper tail) so the cost does not grow with n. Without a
    sample: a lognormal with the given shape and median.
    """

    GRID = 1024

    def __init__(self, *, top: float, zero: float = 0.0, grid: np.ndarray | None = None,
                 sf_grid: np.ndarray | None = None, sigma: float | None = None,
                 median: float | None = None, largest: float = math.inf) -> None:
        self.top, self.zero, self.grid, self.sf_grid = top, zero, grid, sf_grid
        self.sigma, self.median, self.largest = sigma, median, largest

    @classmethod
    def from_sample(cls, data: np.ndarray) -> _Shape | None:
        n = int(data.size)
        positive = data[np.isfinite(data) & (data > 0)]
        m = int(positive.size)
        unanswered = int(np.count_nonzero(np.isposinf(data)))
        if m == 0:
            return None  # no positive finite latency: no shape to scale
        if m <= SHAPE_MAX_POINTS:
            logs, weights = np.log(np.sort(positive)), np.full(m, 1.0 / m)
        else:
            probs = np.concatenate((np.linspace(0.0, 1.0, SHAPE_MAX_POINTS // 2),
                                    1.0 - np.geomspace(0.5, 0.5 / m, SHAPE_MAX_POINTS // 2)))
            ranks = np.unique(np.clip(np.ceil(probs * m).astype(np.int64), 1, m))
            logs = np.log(np.partition(positive, ranks - 1)[ranks - 1])
            weights = np.diff(np.r_[0, ranks]) / m
        spread = float(np.sqrt(np.sum(weights * (logs - np.sum(weights * logs)) ** 2)))
        iqr = float(np.subtract(*np.interp([0.75, 0.25], np.cumsum(weights), logs)))
        width = min(spread, iqr / 1.34) if iqr > 0 else spread
        h = max(0.9 * width * m ** -0.2, 1e-3)
        grid = np.linspace(logs[0] - 6.0 * h, logs[-1] + 6.0 * h, cls.GRID)
        sf_grid = np.zeros(cls.GRID)
        for chunk in range(0, logs.size, 512):  # bounded memory: GRID x 512 at a time
            part = slice(chunk, chunk + 512)
            sf_grid += norm.cdf((logs[part][None, :] - grid[:, None]) / h) @ weights[part]
        return cls(top=1.0 - unanswered / n, zero=(n - m - unanswered) / n, grid=grid,
                   sf_grid=np.clip(sf_grid, 0.0, 1.0), largest=float(math.exp(grid[-1])))

    @classmethod
    def lognormal(cls, sigma: float, median: float) -> _Shape:
        return cls(top=1.0, sigma=sigma, median=median, largest=median * math.exp(12.0 * sigma))

    def sf(self, x: float) -> float:
        """P(before > x)."""
        if x < 0:
            return 1.0
        if math.isinf(x):
            return 0.0
        positive = self.top - self.zero  # share of positive finite latencies
        if x == 0:
            return 1.0 - self.zero
        unanswered = 1.0 - self.top
        if self.grid is None:
            assert self.sigma is not None and self.median is not None
            return float(norm.sf((math.log(x) - math.log(self.median)) / self.sigma))
        assert self.sf_grid is not None
        inside = float(np.interp(math.log(x), self.grid, self.sf_grid, left=1.0, right=0.0))
        return unanswered + positive * inside

    def upper(self) -> float:
        """A finite x beyond which S no longer changes."""
        return self.largest


def _shape(before_ms: Samples | None, sigma: float, median_ms: float | None, floor_ms: float,
           where: str) -> _Shape | None:
    if before_ms is not None:
        data, _ = clean_latencies(before_ms, where, "before_ms")
        return _Shape.from_sample(data)
    if floor_ms > 0 and median_ms is None:
        raise ValueError(f"{where}: with floor_ms > 0 and no before sample, median_ms must give the scale")
    return _Shape.lognormal(sigma, 1.0 if median_ms is None else median_ms)


def _critical(total: int, exceedances: int, n_after: int, alpha: float) -> int | None:
    """The smallest after count whose FAIL-side p-value is <= alpha, or None: the
    quantile function's guess, settled against the tail itself."""
    top = min(exceedances, n_after)
    crit = int(hypergeom.isf(alpha, total, exceedances, n_after)) + 1
    crit = min(max(crit, 0), top + 1)
    while crit > 0 and _fisher_tail(crit - 1, total, exceedances, n_after) <= alpha:
        crit -= 1
    while crit <= top and _fisher_tail(crit, total, exceedances, n_after) > alpha:
        crit += 1
    return crit if crit <= top else None


def _odds(shape: _Shape, ratio: float, n_before: int, n_after: int, share: float, limit: float,
          floor_ms: float) -> float:
    """The odds ratio of exceeding the pooled threshold, after against g(before), when the
    after run is ``ratio`` x before and a ``share`` of the pooled samples (weighted by the run
    sizes) lies above the threshold. At most 1: the after run exceeds no more often than the
    allowance, so no n can FAIL it."""
    total = n_before + n_after

    def exceed(t: float) -> float:  # the pooled exceedance share at threshold t, decreasing
        return (n_after * shape.sf(t / ratio) + n_before * shape.sf(_allowance_inverse(t, limit, floor_ms))) / total

    lo, hi = 0.0, shape.upper() * max(ratio, limit) + floor_ms + 1.0
    if exceed(hi) >= share:  # unanswered requests alone fill the tail: the runs look alike there
        p1 = p0 = max(1.0 - shape.top, 1e-300)
    else:
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if exceed(mid) > share:
                lo = mid
            else:
                hi = mid
            if hi - lo <= 1e-12 * max(1.0, hi):
                break
        t = 0.5 * (lo + hi)
        p1, p0 = shape.sf(t / ratio), shape.sf(_allowance_inverse(t, limit, floor_ms))
    if p1 <= 0.0:
        return 0.0
    if p0 <= 0.0 or p1 >= 1.0:
        return math.inf
    return p1 * (1.0 - p0) / (p0 * (1.0 - p1))


def _power(shape: _Shape, ratio: float, n_before: int, n_after: int, q: float, limit: float,
           floor_ms: float, alpha: float) -> float:
    """See :func:`exceedance_power` (arguments already checked, sizes > 0)."""
    total = n_before + n_after
    k0 = total - nearest_rank(total, q)
    crit = _critical(total, k0, n_after, alpha)
    if crit is None:
        return 0.0
    odds = _odds(shape, ratio, n_before, n_after, k0 / total, limit, floor_ms)
    if odds <= 0.0:
        return 0.0
    if math.isinf(odds) or odds > 1e12:
        return 1.0  # every exceedance lands in the after run
    return float(min(1.0, max(0.0, nchypergeom_fisher.sf(crit - 1, total, n_after, k0, odds))))


def exceedance_power(ratio: float, n_before: int, n_after: int, q: float, *, before_ms: Samples | None = None,
                     sigma: float = DEFAULT_SIGMA, median_ms: float | None = None, limit: float = 1.0,
                     floor_ms: float = 0.0, alpha: float = DEFAULT_ALPHA) -> float:
    """Probability that :func:`exceedance_test` FAILs (``p_worse`` <= ``alpha``) when the
    after run is ``ratio`` x the before run (a scale alternative), at these run sizes.

    The before distribution is ``before_ms``'s empirical one (its size is not used: the
    sizes are ``n_before``/``n_after``), or a lognormal of shape ``sigma`` (median
    ``median_ms``, needed only with a floor) when no sample is given.

    Computation (distribution-free in the sense that it reads the before shape, not a
    model): the pooled threshold settles near the t* where the pooled exceedance share
    equals the test's K0 / N (K0 = N - ceil(N q) exceedances, N = n_before + n_after).
    There the after run exceeds with p1 = P(before > t*/ratio) and g(before) with
    p0 = P(g(before) > t*) (≈ 1 - q when the alternative is small). The test conditions
    on K0 exceedances, and two independent binomial counts conditioned on their sum follow
    Fisher's noncentral hypergeometric law with odds ratio p1(1 - p0) / (p0(1 - p1)); the
    power is its exact tail beyond the test's exact critical count. So the rejection region
    is exactly the test's (discreteness included) and the only approximation is the
    threshold fixed at its limit t*; simulations agree to within a few points of power at
    n = 200 per run. It is a *planning figure*: it assumes the after run is a scaled copy
    of the before (a regression that only fattens the tail is detected sooner or later
    than this says).
    """
    where = "exceedance_power"
    ratio = _number(ratio, "ratio", where, low=0.0, inclusive=False)
    n_before, n_after = _check_size(n_before, "n_before", where), _check_size(n_after, "n_after", where)
    q, alpha = _check_q(q, where), _check_unit(alpha, "alpha", where)
    limit = _number(limit, "limit", where, low=1.0)
    floor_ms = _number(floor_ms, "floor_ms", where, low=0.0)
    sigma = _number(sigma, "sigma", where, low=0.0, inclusive=False)
    if median_ms is not None:
        median_ms = _number(median_ms, "median_ms", where, low=0.0, inclusive=False)
    shape = _shape(before_ms, sigma, median_ms, floor_ms, where)
    if shape is None or n_before == 0 or n_after == 0:
        return 0.0
    return _power(shape, ratio, n_before, n_after, q, limit, floor_ms, alpha)


def _smallest_ratio(shape: _Shape, n_before: int, n_after: int, q: float, limit: float, floor_ms: float,
                    alpha: float, power: float, max_ratio: float) -> float | None:
    def enough(r: float) -> bool:
        return _power(shape, r, n_before, n_after, q, limit, floor_ms, alpha) >= power

    if not enough(max_ratio):
        return None
    lo, hi = 1.0, max(2.0, limit)
    while not enough(hi):
        lo, hi = hi, min(hi * 2.0, max_ratio)
    if enough(lo):
        return lo
    while hi / lo > 1.0 + 1e-4:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def detectable_ratio(n_before: int, n_after: int, q: float, *, before_ms: Samples | None = None,
                     sigma: float = DEFAULT_SIGMA, median_ms: float | None = None, limit: float = 1.0,
                     floor_ms: float = 0.0, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
                     max_ratio: float = MAX_RATIO) -> float | None:
    """The smallest ratio r such that, when after = r x before, the FAIL side rejects
    with probability >= ``power`` at these run sizes (:func:`exceedance_power`); None when
    no ratio up to ``max_ratio`` reaches it (e.g. P99 at n = 200 per run, where even every
    exceedance in the after run is not significant at 5%).

    With the +20% allowance, lognormal before samples (sigma 0.6) and n = 200 per run this
    is about x1.78 for P95 (the interval rule needed about x2.15). A planning figure: it
    assumes a scale family, see :func:`exceedance_power`.
    """
    where = "detectable_ratio"
    n_before, n_after = _check_size(n_before, "n_before", where), _check_size(n_after, "n_after", where)
    q, alpha, power = _check_q(q, where), _check_unit(alpha, "alpha", where), _check_unit(power, "power", where)
    limit = _number(limit, "limit", where, low=1.0)
    floor_ms = _number(floor_ms, "floor_ms", where, low=0.0)
    sigma = _number(sigma, "sigma", where, low=0.0, inclusive=False)
    max_ratio = _number(max_ratio, "max_ratio", where, low=1.0, inclusive=False)
    if median_ms is not None:
        median_ms = _number(median_ms, "median_ms", where, low=0.0, inclusive=False)
    shape = _shape(before_ms, sigma, median_ms, floor_ms, where)
    if shape is None or n_before == 0 or n_after == 0:
        return None
    return _smallest_ratio(shape, n_before, n_after, q, limit, floor_ms, alpha, power, max_ratio)


def min_n_to_fail(q: float, alpha: float = DEFAULT_ALPHA) -> int:
    """The smallest n per run (equal runs, continuous data) at which the test can FAIL at
    all: the most extreme table, every one of the K0 pooled exceedances in the after run
    (or the whole after run above the threshold, when K0 > n),
    has p <= ``alpha`` (P95 at 5%: 50; P99 at 5%: 250). Below it no regression, however
    large, is significant."""
    where = "min_n_to_fail"
    q, alpha = _check_q(q, where), _check_unit(alpha, "alpha", where)
    n = 1
    while n <= MAX_PLAN_N:
        total = 2 * n
        k0 = total - nearest_rank(total, q)
        if k0 > 0 and _fisher_tail(min(k0, n), total, k0, n) <= alpha:
            return n
        # While K0 stays the same the extreme p only grows with n (C(n, K)/C(2n, K) rises
        # towards 2^-K): go on where K0 next grows, about (K0 + 1) / (2 (1 - q)).
        n = max(n + 1, math.floor((k0 + 1) / (2.0 * (1.0 - q))) - 1)
    raise ValueError(f"{where}: no n up to {MAX_PLAN_N} per run can FAIL at q={q!r}, alpha={alpha!r}")


def plan_exceedance_sample_size(ratio: float, q: float, *, before_ms: Samples | None = None,
                                sigma: float = DEFAULT_SIGMA, median_ms: float | None = None,
                                limit: float = 1.0, floor_ms: float = 0.0, alpha: float = DEFAULT_ALPHA,
                                power: float = DEFAULT_POWER, max_n: int = MAX_PLAN_N) -> int | None:
    """The n per run (equal sizes) at which a rise to ``ratio`` x before is FAILed with
    probability >= ``power`` (:func:`exceedance_power`), or None when ``ratio`` is within
    the allowance or not reached by ``max_n``.

    The before shape is ``before_ms``'s (its own size is irrelevant) or a lognormal of
    shape ``sigma``. Power is not quite monotone in n (the test is discrete), so this is
    the n found by bisection between the first power of two that suffices and half of it:
    a planning figure (e.g. P95, +20% allowance, sigma 0.6, x1.44: about 640 per run).
    """
    where = "plan_exceedance_sample_size"
    ratio = _number(ratio, "ratio", where, low=0.0, inclusive=False)
    q, alpha, power = _check_q(q, where), _check_unit(alpha, "alpha", where), _check_unit(power, "power", where)
    limit = _number(limit, "limit", where, low=1.0)
    floor_ms = _number(floor_ms, "floor_ms", where, low=0.0)
    sigma = _number(sigma, "sigma", where, low=0.0, inclusive=False)
    max_n = _check_size(max_n, "max_n", where)
    if median_ms is not None:
        median_ms = _number(median_ms, "median_ms", where, low=0.0, inclusive=False)
    shape = _shape(before_ms, sigma, median_ms, floor_ms, where)
    if shape is None or max_n < 1:
        return None

    if _odds(shape, ratio, 1, 1, 1.0 - q, limit, floor_ms) <= 1.0 + 1e-9:
        return None  # the rise is within the allowance (or the noise floor): no n catches it

    def enough(n: int) -> bool:
        return _power(shape, ratio, n, n, q, limit, floor_ms, alpha) >= power

    hi = 1
    while not enough(hi):
        if hi >= max_n:
            return None
        hi = min(hi * 2, max_n)
    lo = hi // 2  # lo = 0 or a size found too small
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
