"""Thompson-sampling bandit: reward handling, learning, exploration, offline evaluation, change risk."""

from __future__ import annotations

import math

import numpy as np
import pytest

from readiness.core.verdict import wilson_interval
from readiness.stats.bandit import (
    LOW_RISK_MAX_TV,
    MEDIUM_RISK_MAX_TV,
    RewardWeights,
    ThompsonBandit,
    change_risk,
    compare_with_uniform,
    ips_estimate,
    total_variation,
)

W = RewardWeights()
# Per-arm probabilities of (page_view, lead, checkout, complaint); expected rewards differ clearly.
ENV = {"hero": (0.9, 0.30, 0.20, 0.02), "banner": (0.8, 0.10, 0.05, 0.05), "popup": (0.6, 0.05, 0.01, 0.30)}


def _expected(probs: tuple[float, float, float, float]) -> float:
    pv, lead, checkout, complaint = probs
    return W.page_view * pv + W.lead * lead + W.checkout * checkout + W.complaint * complaint


def _interaction(rng: np.random.Generator, probs: tuple[float, float, float, float]) -> float:
    pv, lead, checkout, complaint = (bool(rng.random() < p) for p in probs)
    return W.reward(page_view=pv, lead=lead, checkout=checkout, complaint=complaint)


# ---------------------------------------------------------------- reward

def test_reward_formula_and_bounds():
    assert W.reward(page_view=True) == pytest.approx(0.05)
    assert W.reward(page_view=True, lead=True, checkout=True) == pytest.approx(1.0)
    assert W.reward(complaint=True) == pytest.approx(-0.4)
    assert W.reward(page_view=1, lead=1, complaint=1) == pytest.approx(0.05 + 0.3 - 0.4)
    assert (W.low, W.high) == (pytest.approx(-0.4), pytest.approx(1.0))
    assert W.rescale(-0.4) == 0.0 and W.rescale(1.0) == 1.0
    assert W.rescale(0.0) == pytest.approx(0.4 / 1.4)
    assert W.unscale(W.rescale(0.35)) == pytest.approx(0.35)
    custom = RewardWeights(page_view=0.1, lead=0.2, checkout=0.5, complaint=-1.0)
    assert (custom.low, custom.high) == (pytest.approx(-1.0), pytest.approx(0.8))


@pytest.mark.parametrize(("value", "message"), [
    (1.2, "RewardWeights.rescale: reward must be in [-0.4, 1], got 1.2"),
    (-0.5, "RewardWeights.rescale: reward must be in [-0.4, 1], got -0.5"),
    (math.nan, "RewardWeights.rescale: reward must be in [-0.4, 1], got nan"),
])
def test_rescale_refuses_out_of_range(value, message):
    with pytest.raises(ValueError) as err:
        W.rescale(value)
    assert str(err.value) == message


def test_reward_refuses_non_binary_signal():
    with pytest.raises(ValueError) as err:
        W.reward(lead=2)
    assert str(err.value) == "RewardWeights.reward: lead must be 0/1 or a bool, got 2"


def test_negative_rewards_lower_the_posterior():
    bandit = ThompsonBandit(["complainy", "checkouty"], seed=7)
    for _ in range(200):
        bandit.update("complainy", W.reward(page_view=True, complaint=True))  # -0.35
        bandit.update("checkouty", W.reward(page_view=True, checkout=True))  # 0.70
    post = bandit.posterior()
    assert post["complainy"]["mean"] < post["checkouty"]["mean"]
    assert post["complainy"]["expected_reward"] < 0 < post["checkouty"]["expected_reward"]
    # the binarized mean estimates the rescaled reward: (−0.35 + 0.4) / 1.4 ≈ 0.036
    assert post["complainy"]["ci_low"] <= W.rescale(-0.35) <= post["complainy"]["ci_high"]
    assert post["checkouty"]["ci_low"] <= W.rescale(0.70) <= post["checkouty"]["ci_high"]
    assert post["checkouty"]["ci_low"] < post["checkouty"]["mean"] < post["checkouty"]["ci_high"]


# ---------------------------------------------------------------- learning

def test_simulation_finds_best_arm_with_shrinking_regret():
    rng = np.random.default_rng(2024)
    bandit = ThompsonBandit(list(ENV), exploration_rate=0.05, seed=11)
    means = {arm: _expected(p) for arm, p in ENV.items()}
    best = max(means, key=means.__getitem__)
    regret = []
    for _ in range(2000):
        arm = bandit.choose().arm
        regret.append(means[best] - means[arm])
        bandit.update(arm, _interaction(rng, ENV[arm]))
    alloc = bandit.allocation()
    assert max(alloc, key=alloc.__getitem__) == best
    assert alloc[best] > 0.9
    assert np.mean(regret[-500:]) < 0.5 * np.mean(regret[:500])
    assert bandit.pulls[bandit.arms.index(best)] > 1500


def test_exploration_rate_respected():
    eps, n = 0.2, 4000
    bandit = ThompsonBandit(["a", "b", "c"], exploration_rate=eps, seed=3)
    for _ in range(50):
        bandit.update("a", 1.0)  # 'a' dominates the exploitation branch
    choices = [bandit.choose() for _ in range(n)]
    explored = sum(c.explored for c in choices)
    assert explored == bandit.explored and bandit.rounds == n
    low, high = wilson_interval(explored, n)
    assert low <= eps <= high
    explored_arms = [c.arm for c in choices if c.explored]
    for arm in "abc":  # the explored branch is uniform
        low, high = wilson_interval(explored_arms.count(arm), len(explored_arms))
        assert low <= 1 / 3 <= high
    assert ThompsonBandit(["a", "b"], seed=1).explored == 0


def test_propensities_sum_to_one_and_match_formula():
    bandit = ThompsonBandit(["a", "b", "c"], exploration_rate=0.1, seed=5)
    for reward, arm in [(1.0, "a"), (0.3, "b"), (-0.4, "c"), (0.65, "a")]:
        bandit.update(arm, reward)
    props = bandit.propensities()
    assert math.fsum(props.values()) == pytest.approx(1.0)
    alloc = bandit.allocation()
    assert math.fsum(alloc.values()) == pytest.approx(1.0)
    for arm in "abc":
        assert bandit.propensity(arm) == pytest.approx(0.9 * alloc[arm] + 0.1 / 3)
        assert props[arm] >= 0.1 / 3
    assert bandit.allocation() == alloc  # seeded: same history, same allocation


def test_policy_and_config_json():
    bandit = ThompsonBandit(["a", "b"], exploration_rate=0.1, seed=9)
    bandit.update("a", 0.7)
    policy, config = bandit.to_policy_json(), bandit.config_json()
    assert set(config) == {"arm_weights", "exploration_rate"}
    assert config["arm_weights"] == policy["allocation"]
    assert config["exploration_rate"] == policy["exploration_rate"] == 0.1
    assert policy["reward_weights"] == {"page_view": 0.05, "lead": 0.3, "checkout": 0.65, "complaint": -0.4}
    assert set(policy["posterior"]["a"]) >= {"alpha", "beta", "mean", "ci_low", "ci_high"}
    assert policy["posterior"]["a"]["alpha"] + policy["posterior"]["a"]["beta"] == 3.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"arms": ["a"]}, "ThompsonBandit: arms must be at least two non-empty names, got ['a']"),
    ({"arms": ["a", "a"]}, "ThompsonBandit: arm names must be unique, got ['a', 'a']"),
    ({"prior": (0, 1)}, "ThompsonBandit: prior must be two finite numbers > 0 (alpha, beta), got (0, 1)"),
    ({"exploration_rate": 1.5}, "ThompsonBandit: exploration_rate must be in [0, 1], got 1.5"),
])
def test_bandit_bad_input(kwargs, message):
    args = {"arms": ["a", "b"], "seed": 0, **kwargs}
    with pytest.raises(ValueError) as err:
        ThompsonBandit(args.pop("arms"), **args)
    assert str(err.value) == message


def test_update_unknown_arm():
    with pytest.raises(ValueError) as err:
        ThompsonBandit(["a", "b"], seed=0).update("z", 0.5)
    assert str(err.value) == "ThompsonBandit.update: unknown arm 'z' (known: a, b)"


# ---------------------------------------------------------------- offline evaluation

ARM_MEANS = {"a": 0.1, "b": 0.45, "c": -0.1}


def _uniform_log(rng: np.random.Generator, n: int) -> list[dict]:
    arms = rng.integers(0, 3, size=n)
    names = list(ARM_MEANS)
    rows = []
    for i in arms:
        arm = names[i]
        reward = ARM_MEANS[arm] + rng.uniform(-0.3, 0.3)
        rows.append({"arm": arm, "reward": float(reward), "propensity": 1 / 3})
    return rows


def test_ips_intervals_cover_true_value():
    rng = np.random.default_rng(42)
    target = {"a": 0.0, "b": 1.0, "c": 0.0}  # deterministic: always 'b'
    truth = ARM_MEANS["b"]
    ips_cover = snips_cover = 0
    estimates = []
    for _ in range(200):
        log = _uniform_log(rng, 300)
        res = ips_estimate(log, target)
        ips_cover += res.ips.ci_low <= truth <= res.ips.ci_high
        snips_cover += res.snips.ci_low <= truth <= res.snips.ci_high
        estimates.append(res.ips.value)
        # weights are 3 on the 'b' rows and 0 elsewhere, so exactly those rows inform the estimate
        assert res.effective_sample_size == pytest.approx(sum(row["arm"] == "b" for row in log))
    assert ips_cover >= 180 and snips_cover >= 180
    # unbiased: the mean of 200 estimates is within 4 standard errors of the truth
    assert abs(np.mean(estimates) - truth) < 4 * np.std(estimates) / math.sqrt(200)


def test_ips_known_values_and_ess():
    log = [{"arm": "a", "reward": 1.0, "propensity": 0.5}, {"arm": "b", "reward": 0.0, "propensity": 0.5},
           {"arm": "a", "reward": 0.5, "propensity": 0.25}, {"arm": "b", "reward": -0.4, "propensity": 0.75}]
    res = ips_estimate(log, {"a": 1.0, "b": 0.0})
    w = np.array([2.0, 0.0, 4.0, 0.0])
    r = np.array([1.0, 0.0, 0.5, -0.4])
    assert res.ips.value == pytest.approx(np.mean(w * r))  # (2 + 2) / 4 = 1.0
    assert res.snips.value == pytest.approx(4.0 / 6.0)
    assert res.effective_sample_size == pytest.approx(36 / 20)
    assert res.ips.ci_low < res.ips.value < res.ips.ci_high and res.n == 4


@pytest.mark.parametrize(("log", "target", "message"), [
    ([], {"a": 1.0}, "ips_estimate: the log is empty, there is nothing to evaluate"),
    ([{"arm": "a", "reward": 1, "propensity": 0.0}], {"a": 1.0},
     "ips_estimate: row 0 has propensity 0.0, a logged propensity must be in (0, 1]"),
    ([{"arm": "a", "reward": 1, "propensity": 0.5}, {"arm": "a", "reward": 1, "propensity": 1.5}], {"a": 1.0},
     "ips_estimate: row 1 has propensity 1.5, a logged propensity must be in (0, 1]"),
    ([{"arm": "z", "reward": 1, "propensity": 0.5}], {"a": 0.5, "b": 0.5},
     "ips_estimate: row 0 has unknown arm 'z' (known: a, b)"),
    ([{"arm": "a", "reward": 1}], {"a": 1.0},
     "ips_estimate: row 0 lacks propensity (rows need arm, reward, propensity)"),
    ([{"arm": "a", "reward": 1, "propensity": 0.5}], {"a": 0.5, "b": 0.4},
     "ips_estimate: target_probs must sum to 1, got 0.9"),
    ([{"arm": "a", "reward": 1, "propensity": 0.5}], {"a": 1.0},
     "ips_estimate: an interval needs at least 2 logged rows, got 1"),
])
def test_ips_bad_input(log, target, message):
    with pytest.raises(ValueError) as err:
        ips_estimate(log, target)
    assert str(err.value) == message


def test_compare_with_uniform_paired_difference():
    rng = np.random.default_rng(8)
    log = _uniform_log(rng, 600)
    cmp = compare_with_uniform(log, {"a": 0.1, "b": 0.8, "c": 0.1}, seed=1)
    true_learned = 0.1 * 0.1 + 0.8 * 0.45 + 0.1 * -0.1
    true_uniform = sum(ARM_MEANS.values()) / 3
    assert cmp.learned.ips.ci_low <= true_learned <= cmp.learned.ips.ci_high
    assert cmp.uniform.snips.ci_low <= true_uniform <= cmp.uniform.snips.ci_high
    for diff in (cmp.ips_difference, cmp.snips_difference):
        assert 0 < diff.ci_low < diff.value < diff.ci_high  # learned is clearly better
    assert cmp.snips_difference.ci_low <= true_learned - true_uniform <= cmp.snips_difference.ci_high
    same = compare_with_uniform(log, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, seed=1)
    assert same.ips_difference.value == 0.0 and same.ips_difference.ci_low == same.ips_difference.ci_high == 0.0


# ---------------------------------------------------------------- change risk

@pytest.mark.parametrize(("new", "risk"), [
    ({"a": 0.5, "b": 0.5}, "low"),
    ({"a": 0.55, "b": 0.45}, "low"),
    ({"a": 0.6, "b": 0.4}, "medium"),  # TV exactly 0.1
    ({"a": 0.75, "b": 0.25}, "medium"),
    ({"a": 0.8, "b": 0.2}, "high"),  # TV exactly 0.3
    ({"c": 1.0}, "high"),  # a new arm takes all traffic: TV 1
])
def test_change_risk_thresholds(new, risk):
    assert (LOW_RISK_MAX_TV, MEDIUM_RISK_MAX_TV) == (0.1, 0.3)
    assert change_risk({"a": 0.5, "b": 0.5}, new) == risk


def test_total_variation_and_bad_alloc():
    assert total_variation({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    with pytest.raises(ValueError) as err:
        change_risk({"a": 0.5}, {"a": 1.0})
    assert str(err.value) == "change_risk: old_alloc must sum to 1, got 0.5"


def test_binarization_is_seeded_and_tracks_rescaled_reward():
    def outcomes(seed: int) -> list[bool]:
        bandit = ThompsonBandit(["a", "b"], seed=seed)
        return [bandit.update("a", 0.3) for _ in range(2000)]

    assert outcomes(4) == outcomes(4) != outcomes(5)
    successes = sum(outcomes(4))
    low, high = wilson_interval(successes, 2000)
    assert low <= W.rescale(0.3) <= high  # P(success) = (0.3 + 0.4) / 1.4 = 0.5
