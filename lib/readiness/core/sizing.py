"""Sample sizes from the design point: what n each statistical check needs, and what a phase collects.

The params declare what a good system looks like (:class:`readiness.params.sections.Design`):
a true success rate of 99% against a 95% target, an error rate at a quarter of its maximum,
1% of requests above a P95 threshold. :mod:`readiness.stats.design` turns that into the
smallest n at which such a system PASSes with probability at least 1 − β/m, m being the
number of statistical checks a rubric level holds, so that a level of good checks is blocked
by chance at most β of the time.

Two uses, one rule:

- **before measuring**, a phase asks :func:`sample_size` how many samples to take: the
  planned n, or the profile's budget (the declared sample size) when that is smaller; the
  report says which;
- **when recording**, :func:`annotate` stamps each statistical check with the n its design
  point needs (``design_n``); an INCONCLUSIVE check that took fewer says "needs n ≥ N for
  the design point", and the rubric says its level cannot be evidenced in this profile
  rather than that it was missed.

Families without a one-sample design point are left unstamped: an equivalence share states
its own n (:func:`readiness.stats.design.planned_n` for a share on target), a before/after comparison
the smallest rise it detects, an all-of check inherits its parts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from readiness.core.check import Check, Status
from readiness.params.sections import Design
from readiness.stats.design import DesignPoint

#: The rules with a one-sample design point.
PLANNED_FAMILIES = ("success_rate", "error_rate", "latency")


def design_point(design: Design, rule: str, threshold: float, q: float | None = None) -> DesignPoint:
    """The good system for a check of ``rule`` held to ``threshold`` (a latency rule is
    distribution-free: its point is the share of requests above the threshold, from q)."""
    if rule == "success_rate":
        return DesignPoint.success(threshold, design.success_allowance_share)
    if rule == "error_rate":
        return DesignPoint.error(threshold, design.error_allowance_share)
    if rule == "latency":
        if q is None:
            raise ValueError("a latency design point needs the quantile q")
        return DesignPoint.latency(q, design.latency_allowance_share)
    raise ValueError(f"no one-sample design point for rule {rule!r} (known: {', '.join(PLANNED_FAMILIES)})")


def design_n(design: Design, rule: str, threshold: float, *, q: float | None = None,
             alpha: float = 0.05) -> int | None:
    """The n at which a system at the design point PASSes a ``rule`` check with probability
    ≥ 1 − β/m; None for a rule without a one-sample design point or when no n reaches it."""
    if rule not in PLANNED_FAMILIES:
        return None
    return design_point(design, rule, threshold, q).planned_n(design.checks_per_level, design.beta_level, alpha)


@dataclasses.dataclass(frozen=True)
class SampleSize:
    """How many samples a phase takes, and why."""

    n: int
    planned: int | None
    budget: int

    def describe(self) -> str:
        if self.planned is None:
            return f"n = {self.n} (the declared sample size; no design point applies)"
        if self.n >= self.planned:
            return f"n = {self.n}, the design point's size (declared budget {self.budget})"
        return (f"n = {self.n}, the profile's budget; the design point needs n ≥ {self.planned}, so a good system "
                f"may read INCONCLUSIVE here and the level says it cannot be evidenced in this profile")


def sample_size(design: Design, budget: int, rule: str, threshold: float, *, q: float | None = None,
                alpha: float = 0.05) -> SampleSize:
    """The n a phase collects for checks of ``rule``: the planned n, capped by the declared
    ``budget`` (what this profile affords)."""
    planned = design_n(design, rule, threshold, q=q, alpha=alpha)
    n = budget if planned is None else min(budget, planned)
    return SampleSize(n=n, planned=planned, budget=budget)


def annotate(check: Check, design: Design) -> Check:
    """``check`` stamped with its design n; an undecided check that took fewer samples says so."""
    if check.rule not in PLANNED_FAMILIES or not isinstance(check.threshold, int | float) \
            or isinstance(check.threshold, bool) or check.alpha is None:
        return check
    try:
        needed = design_n(design, check.rule, float(check.threshold), q=check.q, alpha=check.alpha)
    except ValueError:  # a threshold with no good side (a target of 100%): nothing to plan
        return check
    if needed is None:
        return check
    stamped = dataclasses.replace(check, design_n=needed)
    if check.status is Status.INCONCLUSIVE and check.n is not None and 0 < check.n < needed:
        stamped = dataclasses.replace(stamped, detail=f"{check.detail}; needs n ≥ {needed} for the design point")
    return stamped


def annotate_all(checks: Iterable[Check], design: Design) -> list[Check]:
    return [annotate(c, design) for c in checks]
