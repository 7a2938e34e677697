"""The run-wide multiplicity correction: a FAIL must survive every other test the run made.

A run makes a few hundred statistical decisions, each a one-sided test at α = 5%. Taken one
by one, each FAIL is wrong at most 5% of the time at its boundary; taken together, a system
that meets every bar would still collect several chance FAILs per run, and one FAIL blocks a
rubric level. So the FAILs are held to Holm's step-down procedure over the whole family of
statistical decisions:

- the family is every check that carries an exact one-sided p-value for its FAIL side
  (``p_value``, recorded by the rules in :mod:`readiness.core.verdict`), whatever its
  status: m counts the tests made, not the FAILs found;
- sorted by p-value, the i-th smallest (i = 1..m) is significant while p_(i) <= α / (m − i + 1);
  the first that is not stops the procedure;
- a FAIL that is not significant becomes INCONCLUSIVE, "not significant after m comparisons",
  with its p-value and the bar it missed; a significant FAIL stays FAIL and says it survived.

Holm controls the family-wise error rate (the chance of *any* false FAIL in the run) at α
for any dependence between the tests, which a run's tests have (they share hosts and
windows); Benjamini–Hochberg controls only the expected share of false FAILs and needs
positive dependence to do so. A FAIL gates a release, so the stronger guarantee is the one
to give. PASS decisions are not corrected: a level needs *all* its checks to PASS, which a
correction could only make easier to reach by chance, never harder.

Left out of the family, and so never demoted: facts (a status code, a header, a count of
invalid events: no sampling error to correct) and rules without an exact p-value (the
bootstrap intervals of ``interval_check``). The summary names how many FAILs those are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from readiness.core.check import Check, Status
from readiness.stats.formatting import format_number, format_p

#: The family-wise error rate the FAILs of one run are held to.
FAMILY_ALPHA = 0.05
METHOD = "Holm step-down over every decision with an exact one-sided p-value"


@dataclasses.dataclass(frozen=True)
class Adjusted:
    """The run's checks after the correction, and what the correction did."""

    checks: list[Check]
    family_size: int
    kept: tuple[str, ...]
    demoted: tuple[str, ...]
    outside: tuple[str, ...]
    alpha: float = FAMILY_ALPHA

    def summary(self) -> dict[str, Any]:
        """What ``evidence/multiplicity.json`` and the score page say about the correction."""
        return {"method": METHOD, "family_alpha": self.alpha, "family_size": self.family_size,
                "fail_kept": list(self.kept), "fail_demoted": list(self.demoted),
                "fail_without_p_value": list(self.outside)}

    def sentence(self) -> str:
        """One line for a report."""
        return (f"Run-wide correction ({METHOD}, family-wise α {format_number(self.alpha * 100)}%, "
                f"m = {self.family_size} tests): {len(self.kept)} FAIL significant, "
                f"{len(self.demoted)} FAIL not significant and read INCONCLUSIVE, "
                f"{len(self.outside)} FAIL on facts or without an exact p-value, not corrected.")


def holm_thresholds(p_values: Sequence[float], alpha: float = FAMILY_ALPHA) -> list[tuple[bool, float]]:
    """For each p-value (in the given order): (significant under Holm at ``alpha``, the bar
    α/(m − i + 1) it was held to). Ties keep their order; the procedure stops at the first
    p-value above its bar, and every later one is not significant."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out: list[tuple[bool, float]] = [(False, 0.0)] * m
    going = True
    for rank, i in enumerate(order):
        bar = alpha / (m - rank)
        going = going and p_values[i] <= bar
        out[i] = (going, bar)
    return out


def adjust(checks: Sequence[Check], alpha: float = FAMILY_ALPHA) -> Adjusted:
    """The checks with every FAIL held to Holm over the run's family of statistical tests."""
    checks = list(checks)
    family = [i for i, c in enumerate(checks) if c.p_value is not None and c.rule]
    verdicts = holm_thresholds([float(checks[i].p_value or 0.0) for i in family], alpha)
    m = len(family)
    out = list(checks)
    kept: list[str] = []
    demoted: list[str] = []
    for i, (significant, bar) in zip(family, verdicts, strict=True):
        c = checks[i]
        if c.status is not Status.FAIL:
            continue
        p = float(c.p_value or 0.0)
        if significant:
            kept.append(c.id)
            out[i] = c.with_status(Status.FAIL, f"{c.detail}; significant after {m} comparisons "
                                                f"(Holm: {format_p(p)} <= {bar:.2g})")
        else:
            demoted.append(c.id)
            out[i] = c.with_status(Status.INCONCLUSIVE, f"{c.detail}; not significant after {m} comparisons "
                                                        f"(Holm: {format_p(p)} > {bar:.2g})")
    tested = set(family)
    outside = tuple(c.id for i, c in enumerate(checks) if c.status is Status.FAIL and i not in tested)
    return Adjusted(out, m, tuple(kept), tuple(demoted), outside, alpha)

