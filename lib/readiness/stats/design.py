"""Operating characteristics of the verdict rules, and the sample size a design point needs.

Every PASS and FAIL of a rate, a latency percentile or a share is a one-sided test at level
α (0.05). How often such a rule PASSes a *good* system — one whose true value sits well on
the right side of its threshold — is its operating characteristic (OC), and it is exact:
the rule's verdict depends only on a binomial count, so weighting each possible count by its
binomial probability gives P(PASS) and P(FAIL) with no simulation.

The count and the rule of each family (``n`` trials, two-sided level 1 − 2α = 90%):

============  ==========================  ====================================================
family        count (true value)          PASS / FAIL
============  ==========================  ====================================================
``success``   successes (success rate)    Wilson lower bound >= target / upper bound < target
``error``     errors (error rate)         Wilson upper bound < max / lower bound >= max
``latency``   samples > T (P(X > T))      one-sided 1 − α order-statistic upper bound of the
                                          q-quantile <= T / lower bound > T
``share``     arrivals (true share)       Wilson interval inside [rate − δ, rate + δ] /
                                          wholly outside it (TOST)
============  ==========================  ====================================================

The latency rule is distribution-free: with the ranks ``r_u``, ``r_l`` of
:func:`readiness.stats.quantiles.order_statistic_ranks`, the upper bound X_(r_u) is <= T
exactly when at least r_u samples are <= T, i.e. when at most n − r_u samples exceed T; the
lower bound X_(r_l) is > T exactly when fewer than r_l samples are <= T, i.e. when at least
n − r_l + 1 exceed T. A sample *equal* to T counts as within it (the rule's ``<=``), so the
exceedance share is P(X > T), strictly. NaN samples are dropped by the rule and are not part
of n; ``+inf`` (a timeout) is an exceedance.

The Wilson bounds are increasing in the count, so each rule's PASS counts form one interval
and its FAIL counts at most two (both tails for a share). They are found by binary search
over the count with :func:`readiness.stats.rates.wilson_interval` itself (about 2 log2 n
calls per boundary), so the regions are the rule's own, not an approximation of them.

Planning: :func:`planned_n` is the smallest n at which a system at its design point PASSes
with probability >= 1 − β/m, where m is the number of statistical checks of a rubric level
that must all pass (a Bonferroni split: the level is then blocked by chance with probability
<= β, see :func:`level_block_risk`). Pure statistics: imports ``readiness.stats`` only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from numbers import Real
from typing import Literal

from scipy.stats import binom

from readiness.stats.quantiles import order_statistic_ranks
from readiness.stats.rates import as_count, as_unit, wilson_interval

__all__ = ["DEFAULT_ALPHA", "DEFAULT_BETA_LEVEL", "DEFAULT_N_MAX", "FAMILIES", "CountRegions", "DesignPoint",
           "Family", "LevelRisk", "OperatingCharacteristic", "count_regions", "design_error_rate",
           "design_exceedance", "design_success_rate", "error_rate_oc", "latency_oc", "level_block_risk",
           "operating_characteristic", "planned_n", "planning_window", "share_oc", "success_rate_oc"]

Family = Literal["success", "error", "latency", "share"]
FAMILIES: tuple[str, ...] = ("success", "error", "latency", "share")

#: One-sided level of every PASS and FAIL (the Wilson rules use the two-sided 1 − 2α interval).
DEFAULT_ALPHA = 0.05
#: Chance that a rubric level of good systems is blocked by sampling alone, split over its m checks.
DEFAULT_BETA_LEVEL = 0.10
#: Largest n :func:`planned_n` considers by default; a design that needs more returns None.
DEFAULT_N_MAX = 100_000

Range = tuple[int, int]  # inclusive range of counts


# ------------------------------------------------------------------------------ results
@dataclass(frozen=True)
class CountRegions:
    """Which counts out of ``n`` PASS and which FAIL, for one rule at one n.

    The count is the family's (successes, errors, samples above T, arrivals). ``passing``
    is an inclusive range ``(low, high)`` or None when no count passes; ``failing`` holds
    zero, one or two inclusive ranges (two only for a share: below and above the band).
    Every other count is INCONCLUSIVE.
    """

    n: int
    passing: Range | None
    failing: tuple[Range, ...] = ()

    def status(self, count: int) -> str:
        """``"PASS"``, ``"FAIL"`` or ``"INCONCLUSIVE"`` for one count (the rule's verdict)."""
        if self.passing is not None and self.passing[0] <= count <= self.passing[1]:
            return "PASS"
        if any(low <= count <= high for low, high in self.failing):
            return "FAIL"
        return "INCONCLUSIVE"


@dataclass(frozen=True)
class OperatingCharacteristic:
    """P(PASS) and P(FAIL) of a rule at ``n`` when the true value is ``value``.

    ``p_not_pass`` is 1 − P(PASS) computed from the binomial tails directly, so it keeps its
    precision when P(PASS) is close to 1 (it is what :func:`planned_n` compares with β/m).
    """

    n: int
    value: float
    p_pass: float
    p_fail: float
    p_not_pass: float
    regions: CountRegions

    @property
    def p_inconclusive(self) -> float:
        return max(0.0, self.p_not_pass - self.p_fail)


@dataclass(frozen=True)
class LevelRisk:
    """How likely a level whose checks must all PASS is blocked by chance.

    ``p_blocked`` = 1 − Π P(PASS_i) assumes independent checks; ``union_bound`` = Σ(1 − P_i)
    holds for any dependence and may exceed 1 (it is a bound, not a probability).
    """

    checks: int
    p_blocked: float
    union_bound: float


# ------------------------------------------------------------------------ validation
def _alpha(alpha: float, where: str) -> float:
    alpha = as_unit(alpha, "alpha", where)
    if alpha >= 0.5:
        raise ValueError(f"{where}: alpha is one-sided and must be below 0.5, got {alpha!r}")
    return alpha


def _probability(value: float, name: str, where: str) -> float:
    """A true value: a probability in [0, 1] (0 and 1 allowed, unlike a threshold)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: {name} must be between 0 and 1, got {value!r}")
    return float(value)


def _allowance(s: float, where: str) -> float:
    if isinstance(s, bool) or not isinstance(s, Real) or not 0.0 <= s < 1.0:
        raise ValueError(f"{where}: allowance share must be in [0, 1), got {s!r}")
    return float(s)


# --------------------------------------------------------------------- binary search
def _first_true(pred: Callable[[int], bool], lo: int, hi: int, guess: int | None = None) -> int:
    """Smallest k in [lo, hi] with pred(k), or hi + 1 when there is none.

    ``pred`` is monotone (False ... False True ... True). Without ``guess`` a plain binary
    search; with one, a galloping search out from the guess, which costs two calls when the
    answer is the guess (the common case when walking n upwards).
    """
    if lo > hi:
        return lo
    if guess is not None:
        g = min(max(guess, lo), hi)
        if pred(g):
            top, step = g, 1
            while top - step >= lo:
                if not pred(top - step):
                    lo = top - step + 1
                    break
                top -= step
                step *= 2
            hi = top
        else:
            bottom, step = g, 1
            while True:
                if bottom + step > hi:
                    lo, hi = bottom + 1, hi + 1
                    break
                if pred(bottom + step):
                    lo, hi = bottom + 1, bottom + step
                    break
                bottom += step
                step *= 2
        sentinel = hi
    else:
        hi += 1
        sentinel = hi
    # invariant: the answer is in [lo, hi]; pred is treated as True at the sentinel
    while lo < hi:
        mid = (lo + hi) // 2
        if mid != sentinel and not pred(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo


# ---------------------------------------------------------------------------- rules
class _Wilson:
    """wilson_interval(k, n, confidence) for one n, each count computed once."""

    def __init__(self, n: int, confidence: float) -> None:
        self.n, self.confidence, self._cache = n, confidence, {}

    def __call__(self, k: int) -> tuple[float, float]:
        bounds = self._cache.get(k)
        if bounds is None:
            bounds = self._cache[k] = wilson_interval(k, self.n, self.confidence)
        return bounds


@dataclass(frozen=True)
class _Rule:
    """One family's rule at fixed threshold and α: its count regions at any n."""

    family: str
    threshold: float  # target / max rate / q / rate
    alpha: float
    margin: float | None = None
    confidence: float = field(init=False)

    def __post_init__(self) -> None:
        # the same expressions as the rules: 1 − 2α for a Wilson interval, 1 − α for a rank
        conf = 1.0 - self.alpha if self.family == "latency" else 1.0 - 2.0 * self.alpha
        object.__setattr__(self, "confidence", conf)

    @property
    def band(self) -> tuple[float, float]:
        assert self.margin is not None
        return max(0.0, self.threshold - self.margin), min(1.0, self.threshold + self.margin)

    def pass_range(self, n: int, hint: Range | None = None) -> Range | None:
        """The counts that PASS at n (``hint``: the range at a nearby n, a search start)."""
        if n == 0:
            return None
        if self.family == "latency":
            r_upper = order_statistic_ranks(n, self.threshold, self.confidence, "upper")[1]
            return None if r_upper is None else (0, n - r_upper)
        # the Wilson bound and the exact tail must both show it (as in the rules)
        w, t, a = _Wilson(n, self.confidence), self.threshold, self.alpha
        low_hint, high_hint = (None, None) if hint is None else (hint[0], hint[1] + 1)
        if self.family == "success":
            low, high = max(_first_true(lambda k: w(k)[0] >= t, 0, n, low_hint), _exact_high(n, t, a)), n
        elif self.family == "error":
            low, high = 0, min(_first_true(lambda k: not w(k)[1] < t, 0, n, high_hint) - 1, _exact_low(n, t, a))
        else:
            band_low, band_high = self.band
            low = _first_true(lambda k: w(k)[0] >= band_low, 0, n, low_hint)
            high = _first_true(lambda k: w(k)[1] > band_high, 0, n, high_hint) - 1
            if band_low > 0.0:
                low = max(low, _exact_high(n, band_low, a))
            if band_high < 1.0:
                high = min(high, _exact_low(n, band_high, a))
        return (low, high) if low <= high else None

    def regions(self, n: int) -> CountRegions:
        failing: list[Range] = []
        if n > 0:
            if self.family == "latency":
                r_lower = order_statistic_ranks(n, self.threshold, self.confidence, "lower")[0]
                if r_lower is not None:
                    failing.append((n - r_lower + 1, n))
            else:
                # A rate FAILs when its Wilson bound is beyond the threshold *and* the exact
                # binomial tail there is at most α (the Wilson bound alone over-rejects at
                # small n: 1 error in 20 against a 1% maximum has p = 0.18).
                w, t, a = _Wilson(n, self.confidence), self.threshold, self.alpha
                if self.family == "success":
                    failing.append((0, min(_first_true(lambda k: not w(k)[1] < t, 0, n) - 1, _exact_low(n, t, a))))
                elif self.family == "error":
                    failing.append((max(_first_true(lambda k: w(k)[0] >= t, 0, n), _exact_high(n, t, a)), n))
                else:
                    band_low, band_high = self.band
                    if band_low > 0.0:
                        failing.append((0, min(_first_true(lambda k: not w(k)[1] < band_low, 0, n) - 1,
                                               _exact_low(n, band_low, a))))
                    if band_high < 1.0:
                        failing.append((max(_first_true(lambda k: w(k)[0] > band_high, 0, n),
                                            _exact_high(n, band_high, a)), n))
        return CountRegions(n=n, passing=self.pass_range(n),
                            failing=tuple(r for r in failing if r[0] <= r[1]))

    def on_good_side(self, value: float) -> bool:
        if self.family == "success":
            return value > self.threshold
        if self.family == "error":
            return value < self.threshold
        if self.family == "latency":
            return value + self.threshold < 1.0  # not value < 1 − q: 1 − 0.95 is 0.050000000000000044
        band_low, band_high = self.band
        return band_low < value < band_high


#: An exact tail equal to α up to rounding (1 − 0.95 is 0.050000000000000044) counts as α,
#: here and in the verdict rules.
P_TOLERANCE = 1e-12


def _exact_low(n: int, p: float, alpha: float) -> int:
    """The largest count k with P(Binomial(n, p) <= k) <= α (−1 when none)."""
    alpha += P_TOLERANCE
    k = int(binom.ppf(alpha, n, p))
    while k >= 0 and binom.cdf(k, n, p) > alpha:
        k -= 1
    while k + 1 <= n and binom.cdf(k + 1, n, p) <= alpha:
        k += 1
    return k


def _exact_high(n: int, p: float, alpha: float) -> int:
    """The smallest count k with P(Binomial(n, p) >= k) <= α (n + 1 when none)."""
    alpha += P_TOLERANCE
    k = int(binom.isf(alpha, n, p)) + 1
    while k > 0 and binom.sf(k - 2, n, p) <= alpha:
        k -= 1
    while k <= n and binom.sf(k - 1, n, p) > alpha:
        k += 1
    return k


def _rule(family: str, threshold: float, alpha: float, q: float | None, margin: float | None,
          where: str) -> _Rule:
    if family not in FAMILIES:
        raise ValueError(f"{where}: family must be one of {FAMILIES}, got {family!r}")
    alpha = _alpha(alpha, where)
    if family == "latency":
        if q is None:
            q = threshold
        elif threshold is not None and not (isinstance(threshold, Real) and math.isfinite(threshold)):
            raise ValueError(f"{where}: threshold must be a finite number, got {threshold!r}")
        return _Rule("latency", as_unit(q, "q", where), alpha)
    name = {"success": "target", "error": "max_rate", "share": "rate"}[family]
    threshold = as_unit(threshold, name, where)
    if family == "share":
        if margin is None:
            raise ValueError(f"{where}: a share needs its margin")
        return _Rule("share", threshold, alpha, as_unit(margin, "margin", where))
    return _Rule(family, threshold, alpha)


# ----------------------------------------------------------- operating characteristics
def _mass(rng: Range | None, n: int, p: float) -> tuple[float, float]:
    """(P(K in rng), P(K not in rng)) for K ~ Binomial(n, p), each from the side that
    keeps its precision."""
    if rng is None:
        return 0.0, 1.0
    a, b = rng
    below = float(binom.cdf(a - 1, n, p)) if a > 0 else 0.0
    above = float(binom.sf(b, n, p)) if b < n else 0.0
    outside = below + above
    inside = 1.0 - outside
    if inside < 0.5:  # a small mass: compute it directly rather than as 1 − (almost 1)
        if a == 0:
            inside = float(binom.cdf(b, n, p))
        elif b == n:
            inside = float(binom.sf(a - 1, n, p))
        elif below >= 0.5:
            inside = float(binom.sf(a - 1, n, p) - binom.sf(b, n, p))
        else:
            inside = float(binom.cdf(b, n, p) - binom.cdf(a - 1, n, p))
        inside = max(0.0, inside)
        outside = 1.0 - inside
    return inside, outside


def _oc(rule: _Rule, n: int, value: float) -> OperatingCharacteristic:
    regions = rule.regions(n)
    p_pass, p_not_pass = _mass(regions.passing, n, value)
    p_fail = math.fsum(_mass(r, n, value)[0] for r in regions.failing)
    return OperatingCharacteristic(n=n, value=value, p_pass=p_pass, p_fail=min(p_fail, p_not_pass),
                                   p_not_pass=p_not_pass, regions=regions)


def operating_characteristic(family: Family, n: int, threshold: float, value: float, alpha: float = DEFAULT_ALPHA,
                             q: float | None = None, margin: float | None = None) -> OperatingCharacteristic:
    """Exact P(PASS), P(FAIL) of ``family``'s rule at ``n`` when the true value is ``value``.

    ``threshold`` is the target (success), the maximum (error), the rate (share, with
    ``margin``) or, for latency, the percentile q — or pass ``q`` and any finite latency
    threshold T, which the figure does not depend on (the rule is distribution-free);
    ``value`` is then the true exceedance share P(X > T). n = 0 gives 0 and 0 (no data is
    INCONCLUSIVE).
    """
    where = "operating_characteristic"
    rule = _rule(family, threshold, alpha, q, margin, where)
    return _oc(rule, as_count(n, "n", where), _probability(value, "value", where))


def count_regions(family: Family, n: int, threshold: float, alpha: float = DEFAULT_ALPHA,
                  q: float | None = None, margin: float | None = None) -> CountRegions:
    """The counts that PASS and FAIL at ``n`` (arguments as :func:`operating_characteristic`)."""
    where = "count_regions"
    return _rule(family, threshold, alpha, q, margin, where).regions(as_count(n, "n", where))


def success_rate_oc(n: int, true_rate: float, target: float, alpha: float = DEFAULT_ALPHA) -> OperatingCharacteristic:
    """The success-rate rule (PASS: Wilson 1 − 2α lower bound >= target; FAIL: upper < target)."""
    return operating_characteristic("success", n, target, true_rate, alpha)


def error_rate_oc(n: int, true_rate: float, max_rate: float, alpha: float = DEFAULT_ALPHA) -> OperatingCharacteristic:
    """The error-rate rule (PASS: Wilson 1 − 2α upper bound < max; FAIL: lower >= max)."""
    return operating_characteristic("error", n, max_rate, true_rate, alpha)


def latency_oc(n: int, exceedance: float, q: float, alpha: float = DEFAULT_ALPHA) -> OperatingCharacteristic:
    """The latency rule for the q-quantile against T when P(X > T) = ``exceedance``.

    PASS iff at most n − r_u samples exceed T, FAIL iff at least n − r_l + 1 do (one-sided
    1 − α ranks), whatever the distribution of the latencies.
    """
    return operating_characteristic("latency", n, q, exceedance, alpha)


def share_oc(n: int, true_share: float, rate: float, margin: float,
             alpha: float = DEFAULT_ALPHA) -> OperatingCharacteristic:
    """The share (TOST) rule: PASS iff the Wilson 1 − 2α interval lies in the band
    [rate − margin, rate + margin] (clipped to [0, 1]), FAIL iff it lies wholly outside."""
    return operating_characteristic("share", n, rate, true_share, alpha, margin=margin)


# ------------------------------------------------------------------- design points
def design_success_rate(target: float, allowance: float) -> float:
    """A good system's success rate: it fails ``allowance`` of what the target allows,
    1 − s (1 − target); 0.95 and s = 0.2 give 0.99."""
    where = "design_success_rate"
    return 1.0 - _allowance(allowance, where) * (1.0 - as_unit(target, "target", where))


def design_error_rate(max_rate: float, allowance: float) -> float:
    """A good system's error rate, s × max; 0.01 and s = 0.25 give 0.0025."""
    where = "design_error_rate"
    return _allowance(allowance, where) * as_unit(max_rate, "max_rate", where)


def design_exceedance(q: float, allowance: float) -> float:
    """A good system's share of samples above the threshold of a q-quantile, s × (1 − q);
    a P95 and s = 0.2 give 0.01 (20% of the 5% a P95 allows)."""
    where = "design_exceedance"
    return _allowance(allowance, where) * (1.0 - as_unit(q, "q", where))


@dataclass(frozen=True)
class DesignPoint:
    """A rule's threshold and the true value of a good system it should PASS.

    ``threshold``: target (success), maximum (error), percentile q (latency), rate (share,
    with ``margin``). ``value``: true success rate, error rate, exceedance share P(X > T),
    share. Build one with :meth:`success`, :meth:`error`, :meth:`latency` or :meth:`share`.
    """

    family: Family
    threshold: float
    value: float
    margin: float | None = None

    @classmethod
    def success(cls, target: float, allowance: float) -> DesignPoint:
        return cls("success", target, design_success_rate(target, allowance))

    @classmethod
    def error(cls, max_rate: float, allowance: float) -> DesignPoint:
        return cls("error", max_rate, design_error_rate(max_rate, allowance))

    @classmethod
    def latency(cls, q: float, allowance: float) -> DesignPoint:
        return cls("latency", q, design_exceedance(q, allowance))

    @classmethod
    def share(cls, rate: float, margin: float) -> DesignPoint:
        """A share exactly on its rate."""
        return cls("share", rate, rate, margin)

    def oc(self, n: int, alpha: float = DEFAULT_ALPHA) -> OperatingCharacteristic:
        return operating_characteristic(self.family, n, self.threshold, self.value, alpha, margin=self.margin)

    def planned_n(self, m: int, beta_level: float = DEFAULT_BETA_LEVEL, alpha: float = DEFAULT_ALPHA,
                  n_max: int = DEFAULT_N_MAX) -> int | None:
        return planned_n(self.family, self.threshold, self.value, m, beta_level, alpha, margin=self.margin,
                         n_max=n_max)


# ------------------------------------------------------------------------ planning
def planning_window(n: int) -> int:
    """How far beyond n the goal must keep holding for n to be planned: max(10, n // 10)."""
    return max(10, n // 10)


@functools.lru_cache(maxsize=1024)  # a run asks for the same few plans for every check
def planned_n(family: Family, threshold: float, design_value: float, m: int,
              beta_level: float = DEFAULT_BETA_LEVEL, alpha: float = DEFAULT_ALPHA, q: float | None = None,
              margin: float | None = None, n_max: int = DEFAULT_N_MAX) -> int | None:
    """Smallest n at which a system at the design point PASSes with probability >= 1 − β/m.

    ``m`` is the number of statistical checks of a rubric level that must all PASS; with
    each blocked by chance at most β/m of the time, the level is blocked at most
    ``beta_level`` of the time (union bound). Arguments as :func:`operating_characteristic`
    (``design_value`` is the true value of the good system, strictly on the good side of the
    threshold, else ValueError).

    Saw-tooth: counts are discrete, so P(PASS) is not monotone in n — one more sample can
    move the PASS boundary by a whole count and drop P(PASS) below the goal again. The
    planned n is therefore the smallest n at which the goal holds at n *and at every n'
    in [n, n + max(10, n // 10)]* (:func:`planning_window`), so a run that collects a few
    more samples than planned does not fall below it. (The window may reach past ``n_max``;
    the returned n never does.)

    Returns None when no n <= ``n_max`` meets this — a value, not an exception, so a report
    can say "not reachable by n_max".

    The answer is exact, yet not every n is evaluated: a qualifying n has the goal holding on
    at least window(n) + 1 consecutive sizes, so probing at steps of window(p) + 1 lands in
    every such stretch; from a probe where the goal holds, the stretch is walked back to its
    start and forward over the window. A plan in the hundreds takes milliseconds, one in the
    thousands about 0.1 s, one in the tens of thousands (a share within ±1 point) seconds.
    """
    where = "planned_n"
    rule = _rule(family, threshold, alpha, q, margin, where)
    value = _probability(design_value, "design_value", where)
    if not rule.on_good_side(value):
        raise ValueError(f"{where}: design_value {value!r} is not on the good side of the {family} threshold; "
                         f"such a system cannot be planned to PASS")
    m = as_count(m, "m", where)
    if m < 1:
        raise ValueError(f"{where}: m must be >= 1, got {m}")
    budget = as_unit(beta_level, "beta_level", where) / m
    n_max = as_count(n_max, "n_max", where)

    memo: dict[int, bool] = {}
    hint: Range | None = None

    def goal(size: int) -> bool:
        """P(not PASS) <= β/m at n = size (the tails of the PASS range, each computed once)."""
        nonlocal hint
        if size not in memo:
            rng = rule.pass_range(size, hint)
            if rng is not None:
                hint = rng
            memo[size] = _mass(rng, size, value)[1] <= budget
        return memo[size]

    probe, last = 1, n_max + planning_window(n_max)
    while probe <= last:
        if not goal(probe):
            probe += planning_window(probe) + 1
            continue
        start = probe
        while start > 1 and goal(start - 1):
            start -= 1
        if start > n_max:
            return None
        end, stop = probe, start + planning_window(start)
        while end < stop and goal(end + 1):
            end += 1
        if end == stop:
            return start
        # this stretch [start, end] is too short for any n in it; end + 1 misses the goal
        probe = end + 1
        probe += planning_window(probe) + 1
    return None


# ------------------------------------------------------------------------ a level
def level_block_risk(p_pass: Iterable[float]) -> LevelRisk:
    """P(a level is blocked) from the P(PASS) of each of its checks.

    ``p_blocked`` = 1 − Π P_i for independent checks (computed as −expm1(Σ log P_i));
    ``union_bound`` = Σ (1 − P_i), valid whatever the dependence. No checks: 0 and 0.
    """
    values = [_probability(p, "P(PASS)", "level_block_risk") for p in p_pass]
    if any(p == 0.0 for p in values):
        p_blocked = 1.0
    else:
        p_blocked = -math.expm1(math.fsum(math.log(p) for p in values))
    return LevelRisk(checks=len(values), p_blocked=p_blocked, union_bound=math.fsum(1.0 - p for p in values))
