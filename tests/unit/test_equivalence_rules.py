"""The equivalence (share) and non-inferiority (auto-heal) rules, and their operating characteristics.

The operating characteristics are exact: every possible count is weighted by its binomial
probability, so the figures are the rule's own, not a simulation's estimate of them.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from readiness.core.check import Status
from readiness.core.verdict import noninferiority_check, share_check
from readiness.stats.design import planned_n
from readiness.stats.rates import newcombe_interval

ALPHA = 0.05
TOLERANCE = 0.01  # a discrete test's size may exceed α slightly at a boundary


def share_oc(true: float, n: int, rate: float, margin: float) -> dict[Status, float]:
    """P(status) of ``share_check`` when the true share is ``true``, over every count 0..n."""
    out = dict.fromkeys(Status, 0.0)
    for k, p in zip(range(n + 1), binom.pmf(np.arange(n + 1), n, true), strict=True):
        if p > 1e-12:
            out[share_check(id="t", phase="p", title="t", arrived=k, n=n, rate=rate, margin=margin).status] += p
    return out


def noninferiority_oc(after: float, before: float, n: int, n_before: int, margin: float) -> dict[Status, float]:
    out = dict.fromkeys(Status, 0.0)
    pa, pb = binom.pmf(np.arange(n + 1), n, after), binom.pmf(np.arange(n_before + 1), n_before, before)
    for i in np.nonzero(pa > 1e-12)[0]:
        for j in np.nonzero(pb > 1e-12)[0]:
            c = noninferiority_check(id="t", phase="p", title="t", successes=int(i), n=n, successes_before=int(j),
                                     n_before=n_before, margin=margin)
            out[c.status] += pa[i] * pb[j]
    return out


# -- the share rule (sampling policy 10% ± 5 points at 400 probes; bandit arms ± 5 points) ----
def test_a_share_exactly_on_target_passes_at_the_planned_n_and_practically_never_fails() -> None:
    n = planned_n("share", 0.10, 0.10, 1, beta_level=0.10, margin=0.05)
    assert n == 423
    oc = share_oc(0.10, n, 0.10, 0.05)
    assert oc[Status.PASS] >= 0.90 and oc[Status.FAIL] < 1e-5
    assert share_oc(0.10, 400, 0.10, 0.05)[Status.PASS] >= 0.85


@pytest.mark.parametrize("boundary", [0.05, 0.15])
def test_a_share_at_the_edge_of_the_band_passes_at_most_alpha_of_the_time(boundary: float) -> None:
    assert share_oc(boundary, 400, 0.10, 0.05)[Status.PASS] <= ALPHA + TOLERANCE


def test_a_share_twice_the_margin_away_is_caught() -> None:
    # 0.825: a FAIL also needs the exact binomial tail beyond the band edge at most α
    assert share_oc(0.20, 400, 0.10, 0.05)[Status.FAIL] >= 0.80
    assert share_oc(1.0 - 1e-9, 400, 0.10, 0.05)[Status.FAIL] > 0.999  # a leak: every success shipped


def test_a_harmless_deviation_is_not_a_fail() -> None:
    """12% against 10% ± 5: a point-null rule FAILs it about 29% of the time at n=400."""
    assert share_oc(0.12, 400, 0.10, 0.05)[Status.FAIL] < 0.001


def test_three_bandit_arms_on_target_do_not_fail_by_chance() -> None:
    for share in (0.4032, 0.5447, 0.0521):  # a learned allocation, 2000 visits
        oc = share_oc(share, 2000, share, 0.05)
        assert oc[Status.FAIL] < 1e-6 and oc[Status.PASS] > 0.99


# -- the non-inferiority rule (auto-heal: success after recovery vs before, margin 5 points) --
def test_newcombe_matches_the_published_example() -> None:
    """Newcombe (1998), method 10: 56/70 − 48/80 = 0.1833, 95% interval 0.0524 to 0.3339."""
    low, high = newcombe_interval(56, 70, 48, 80, 0.95)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_equal_near_perfect_rates_pass_and_a_perfect_record_before_is_no_obstacle() -> None:
    c = noninferiority_check(id="t", phase="p", title="t", successes=100, n=100, successes_before=101,
                             n_before=101, margin=0.05)
    assert c.status is Status.PASS and c.ci_low > -0.05
    zero_before = noninferiority_check(id="t", phase="p", title="t", successes=90, n=100, successes_before=0,
                                       n_before=40, margin=0.05)
    assert zero_before.status is Status.PASS  # a before of 0/n is data, not a ValueError
    empty = noninferiority_check(id="t", phase="p", title="t", successes=0, n=0, successes_before=5, n_before=5,
                                 margin=0.05)
    assert empty.status is Status.INCONCLUSIVE and empty.detail == "no data (after)"


def test_noninferiority_operating_characteristic() -> None:
    design = noninferiority_oc(0.995, 0.995, 100, 100, 0.05)
    assert design[Status.PASS] >= 0.90 and design[Status.FAIL] < 1e-6
    boundary = noninferiority_oc(0.945, 0.995, 100, 100, 0.05)
    assert boundary[Status.PASS] <= ALPHA + TOLERANCE
    worse = noninferiority_oc(0.80, 0.995, 100, 100, 0.05)
    assert worse[Status.FAIL] >= 0.95


def test_reports_show_the_90_percent_interval_and_mark_any_other_level() -> None:
    import dataclasses

    from readiness.report.markdown import INTERVAL_COLUMN, checks_table, fmt_interval

    share = share_check(id="t.share", phase="p", title="t", arrived=40, n=400, rate=0.10, margin=0.05)
    assert (share.ci_level, share.alpha, share.sided, share.rule) == (pytest.approx(0.90), 0.05, "TOST", "share")
    assert fmt_interval(share) == "[7.8%, 12.7%]"
    assert fmt_interval(dataclasses.replace(share, ci_level=0.95)) == "[7.8%, 12.7%] 95%"
    table = checks_table([share])
    assert INTERVAL_COLUMN in table and "90%" in INTERVAL_COLUMN
