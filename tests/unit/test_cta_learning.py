"""The bandit loop's pure parts on synthetic telemetry: joining logged impressions to their
outcomes on the trace id, scoring them, and checking logged propensities against a policy."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from readiness.phases.learning.cta_bandit import allocation_of, fit, holdout, join_rewards, propensity_mismatches
from readiness.stats.bandit import RewardWeights

W = RewardWeights()


def imp(trace: str, arm: str = "signup_hero", propensity: float | None = 0.5, version: str = "v1") -> dict:
    return {"event_type": "cta_impression", "trace_id": trace, "arm_id": arm, "propensity": propensity,
            "policy_version": version, "sample_rate": 0.1}


def out(kind: str, trace: str, arm: str | None = "signup_hero") -> dict:
    return {"event_type": f"cta_{kind}", "trace_id": trace, "arm_id": arm}


def test_outcomes_join_on_the_trace_and_score_with_the_weights() -> None:
    rows, skipped = join_rewards(
        [imp("t1"), imp("t2"), imp("t3", "pricing_banner", 0.3)],
        [out("page_view", "t1"), out("lead", "t1"), out("checkout", "t1"),
         out("page_view", "t2"), out("complaint", "t2"),
         out("lead", "t-unlogged"),  # the impression of this visit was sampled out: ignored
         out("page_view", "t3", "pricing_banner")], W)
    got = rows.set_index("trace_id")["reward"].to_dict()
    assert got == pytest.approx({"t1": 0.05 + 0.3 + 0.65, "t2": 0.05 - 0.4, "t3": 0.05})
    assert rows.set_index("trace_id").loc["t3", "propensity"] == 0.3
    assert skipped == {"not_policy_decisions": 0, "invalid_impressions": 0, "repeated_impressions": 0,
                       "arm_mismatch": 0}


def test_an_impression_without_outcomes_scores_zero() -> None:
    rows, _ = join_rewards([imp("t1")], [], W)
    assert rows["reward"].tolist() == [0.0] and not rows[["page_view", "lead", "checkout", "complaint"]].any(axis=None)


def test_duplicate_outcome_events_count_once() -> None:
    rows, _ = join_rewards([imp("t1")], [out("lead", "t1"), out("lead", "t1")], W)
    assert rows["reward"].tolist() == [pytest.approx(0.3)]


def test_bad_impressions_and_conflicting_outcomes_are_left_out_and_counted() -> None:
    rows, skipped = join_rewards(
        [imp("t1", propensity=None), imp("t2", propensity=0.0), imp("t3", propensity=1.5), imp("t4"), imp("t4"),
         imp("t5"), {"arm_id": "signup_hero", "propensity": 0.5}, imp("t6", propensity="0.5")],
        [out("lead", "t5", "pricing_banner"), out("page_view", "t4", None)], W)
    assert rows["trace_id"].tolist() == ["t4"] and rows["reward"].tolist() == [pytest.approx(0.05)]
    # t1 has no propensity: a page-chosen impression, not a policy decision (left out, not a defect)
    assert skipped == {"not_policy_decisions": 1, "invalid_impressions": 4, "repeated_impressions": 1,
                       "arm_mismatch": 1}


def test_serving_rule_and_propensity_audit() -> None:
    alloc = allocation_of({"a": 0.5, "b": 0.3, "c": 0.2}, 0.1)
    assert alloc == pytest.approx({"a": 0.9 * 0.5 + 0.1 / 3, "b": 0.9 * 0.3 + 0.1 / 3, "c": 0.9 * 0.2 + 0.1 / 3})
    rows = pd.DataFrame({"arm": ["a", "b", "c", "a"], "propensity": [alloc["a"], alloc["b"], 0.2, 0.9],
                         "policy_version": ["v1", "v1", "v1", "v0"]})
    assert propensity_mismatches(rows, "v1", alloc) == 1  # c logged 0.2 under v1; the v0 row is not judged
    with pytest.raises(ValueError, match=r"^allocation_of: arm weights must sum to more than 0, got \{'a': 0\}$"):
        allocation_of({"a": 0}, 0.1)


def test_holdout_is_a_fixed_half_and_fit_learns_the_better_arm() -> None:
    traces = [f"t{i}" for i in range(400)]
    rows = pd.DataFrame({"trace_id": traces, "arm": ["a", "b"] * 200,
                         "reward": [1.0 if i % 2 == 0 else -0.4 for i in range(400)]})
    held = holdout(rows)
    assert held.equals(holdout(rows)) and 150 < held.sum() < 250
    bandit = fit(rows, ["a", "b"], exploration_rate=0.1, seed=7, weights=W)
    assert bandit.allocation()["a"] > 0.99 and bandit.propensities()["b"] == pytest.approx(0.05, abs=0.01)


def test_a_policy_learned_from_no_rows_is_still_valid_json() -> None:
    rows, _ = join_rewards([], [], W)
    policy = fit(rows, ["signup_hero", "pricing_banner"], exploration_rate=0.1, seed=1, weights=W).to_policy_json(1000)
    json.dumps(policy, allow_nan=False)  # an arm with no data has no observed mean: null, never NaN
    assert policy["posterior"]["signup_hero"]["mean_observed_reward"] is None
