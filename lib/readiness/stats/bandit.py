"""Thompson sampling over CTA arms, offline evaluation of a policy, and the risk of changing it.

The reward of one interaction is ``0.05·page_view + 0.3·lead + 0.65·checkout − 0.4·complaint``
(:class:`RewardWeights`): non-binary and possibly negative, in ``[−0.4, 1.0]``. A Beta-Bernoulli
posterior needs 0/1 outcomes, so each reward is handled in two explicit steps:

1. rescale to ``[0, 1]`` with the *known* bounds of the formula (the sum of the negative
   weights and the sum of the positive ones), never with bounds seen in the data, so the
   mapping does not drift as data arrives;
2. Bernoulli-binarize: draw one success with probability equal to the rescaled reward
   (Agrawal & Goyal 2012). The success probability of an arm is then exactly its expected
   rescaled reward, so the Beta posterior stays exact and conjugate and keeps Thompson
   sampling's regret guarantees for any bounded reward.

A Gaussian posterior was not chosen: the reward is bounded and a normal likelihood puts mass
outside the bounds; with the few dozen interactions a CTA arm sees, its variance estimate is
unstable; and a Beta posterior reads directly as a success propensity with a credible interval
inside [0, 1]. Every random draw (binarization, choice, allocation) comes from a generator
seeded from ``seed``, so a run replays exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import norm

#: Total-variation distance between old and new allocations below which a change is "low" risk.
LOW_RISK_MAX_TV = 0.1
#: Below this (and at least LOW_RISK_MAX_TV) a change is "medium"; at or above it, "high".
MEDIUM_RISK_MAX_TV = 0.3
#: Risk levels at which a policy change needs an approval before it ships.
APPROVAL_RISKS = ("medium", "high")
ALLOCATION_DRAWS = 10_000
CREDIBLE_LEVEL = 0.95
_SUM_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    """Signed weight of each interaction signal; ``complaint`` is negative (a penalty)."""

    page_view: float = 0.05
    lead: float = 0.3
    checkout: float = 0.65
    complaint: float = -0.4

    def __post_init__(self) -> None:
        values = dataclasses.astuple(self)
        if not all(isinstance(v, Real) and math.isfinite(v) for v in values):
            raise ValueError(f"RewardWeights: weights must be finite numbers, got {values}")
        if self.low == self.high:
            raise ValueError("RewardWeights: all weights are zero, the reward cannot tell arms apart")

    @property
    def low(self) -> float:
        """Smallest possible reward: every negative signal on, every positive one off."""
        return math.fsum(min(0.0, v) for v in dataclasses.astuple(self))

    @property
    def high(self) -> float:
        """Largest possible reward: every positive signal on, every negative one off."""
        return math.fsum(max(0.0, v) for v in dataclasses.astuple(self))

    def reward(self, *, page_view: bool = False, lead: bool = False, checkout: bool = False,
               complaint: bool = False) -> float:
        """The reward of one interaction from its 0/1 signals."""
        signals = {"page_view": page_view, "lead": lead, "checkout": checkout, "complaint": complaint}
        for name, value in signals.items():
            if value not in (0, 1):
                raise ValueError(f"RewardWeights.reward: {name} must be 0/1 or a bool, got {value!r}")
        return math.fsum(getattr(self, name) * int(value) for name, value in signals.items())

    def rescale(self, reward: float) -> float:
        """``reward`` mapped linearly from ``[low, high]`` onto ``[0, 1]``."""
        if not (isinstance(reward, Real) and self.low - 1e-12 <= reward <= self.high + 1e-12):
            raise ValueError(f"RewardWeights.rescale: reward must be in [{self.low:g}, {self.high:g}], got {reward!r}")
        return min(1.0, max(0.0, (reward - self.low) / (self.high - self.low)))

    def unscale(self, unit: float) -> float:
        """Inverse of :meth:`rescale`: a success propensity back in reward units."""
        return self.low + unit * (self.high - self.low)


@dataclasses.dataclass(frozen=True)
class Choice:
    """One decision: the arm shown and whether it came from the ε-uniform exploration branch."""

    arm: str
    explored: bool


class ThompsonBandit:
    """Beta-Bernoulli Thompson sampling over named arms, with an optional ε-uniform floor.

    The ε floor keeps every arm's logging propensity >= ε/K, which is what makes the log
    usable for offline evaluation (:func:`ips_estimate`) of any later policy.
    """

    def __init__(self, arms: Sequence[str], *, prior: tuple[float, float] = (1.0, 1.0),
                 exploration_rate: float = 0.0, seed: int, weights: RewardWeights | None = None) -> None:
        arms = list(arms)
        if len(arms) < 2 or not all(isinstance(a, str) and a for a in arms):
            raise ValueError(f"ThompsonBandit: arms must be at least two non-empty names, got {arms!r}")
        if len(set(arms)) != len(arms):
            raise ValueError(f"ThompsonBandit: arm names must be unique, got {arms!r}")
        if len(prior) != 2 or not all(isinstance(p, Real) and math.isfinite(p) and p > 0 for p in prior):
            raise ValueError(f"ThompsonBandit: prior must be two finite numbers > 0 (alpha, beta), got {prior!r}")
        if not (isinstance(exploration_rate, Real) and 0.0 <= exploration_rate <= 1.0):
            raise ValueError(f"ThompsonBandit: exploration_rate must be in [0, 1], got {exploration_rate!r}")
        self.arms = arms
        self.prior = (float(prior[0]), float(prior[1]))
        self.exploration_rate = float(exploration_rate)
        self.seed = int(seed)
        self.weights = weights or RewardWeights()
        self.alpha = np.full(len(arms), self.prior[0])
        self.beta = np.full(len(arms), self.prior[1])
        self.pulls = np.zeros(len(arms), dtype=int)
        self.reward_sum = np.zeros(len(arms))
        self.rounds = 0
        self.explored = 0
        # Separate streams: how many choices were made never shifts the binarization draws.
        self._binarize_rng = np.random.default_rng([self.seed, 1])
        self._choice_rng = np.random.default_rng([self.seed, 2])

    def _index(self, arm: str, where: str) -> int:
        try:
            return self.arms.index(arm)
        except ValueError:
            raise ValueError(f"{where}: unknown arm {arm!r} (known: {', '.join(self.arms)})") from None

    def update(self, arm: str, reward: float) -> bool:
        """Fold one observed reward into ``arm``'s posterior; returns the binarized outcome."""
        i = self._index(arm, "ThompsonBandit.update")
        unit = self.weights.rescale(reward)
        success = bool(self._binarize_rng.random() < unit)
        self.alpha[i] += success
        self.beta[i] += not success
        self.pulls[i] += 1
        self.reward_sum[i] += reward
        return success

    def choose(self) -> Choice:
        """With probability ε a uniform arm (marked explored), otherwise the argmax of one
        posterior draw per arm — which picks each arm with its probability of being best."""
        self.rounds += 1
        if self.exploration_rate > 0 and self._choice_rng.random() < self.exploration_rate:
            self.explored += 1
            return Choice(self.arms[int(self._choice_rng.integers(len(self.arms)))], explored=True)
        draws = self._choice_rng.beta(self.alpha, self.beta)
        return Choice(self.arms[int(np.argmax(draws))], explored=False)

    def allocation(self, draws: int = ALLOCATION_DRAWS) -> dict[str, float]:
        """Monte Carlo probability that each arm is best under the posterior.

        Seeded from ``seed`` and the number of updates, so the same history always gives the
        same allocation (a saved policy file can be regenerated bit for bit)."""
        if not isinstance(draws, int) or draws < 1:
            raise ValueError(f"ThompsonBandit.allocation: draws must be an integer >= 1, got {draws!r}")
        rng = np.random.default_rng([self.seed, 3, int(self.pulls.sum())])
        samples = rng.beta(self.alpha, self.beta, size=(draws, len(self.arms)))
        wins = np.bincount(np.argmax(samples, axis=1), minlength=len(self.arms))
        return {arm: float(w) / draws for arm, w in zip(self.arms, wins, strict=True)}

    def propensity(self, arm: str, draws: int = ALLOCATION_DRAWS) -> float:
        """Probability that :meth:`choose` returns ``arm`` now: (1−ε)·P(best) + ε/K — the
        number to log next to the action for inverse-propensity evaluation."""
        i = self._index(arm, "ThompsonBandit.propensity")
        p_best = self.allocation(draws)[self.arms[i]]
        return (1.0 - self.exploration_rate) * p_best + self.exploration_rate / len(self.arms)

    def propensities(self, draws: int = ALLOCATION_DRAWS) -> dict[str, float]:
        """:meth:`propensity` of every arm from one allocation (they sum to 1)."""
        k, eps = len(self.arms), self.exploration_rate
        return {arm: (1.0 - eps) * p + eps / k for arm, p in self.allocation(draws).items()}

    def posterior(self) -> dict[str, dict[str, float]]:
        """Per arm: alpha, beta, mean success propensity, its 95% equal-tailed credible
        interval, the same mean in reward units, and the raw observation counts."""
        tail = (1.0 - CREDIBLE_LEVEL) / 2.0
        out: dict[str, dict[str, float]] = {}
        for i, arm in enumerate(self.arms):
            a, b = float(self.alpha[i]), float(self.beta[i])
            mean = a / (a + b)
            n = int(self.pulls[i])
            out[arm] = {"alpha": a, "beta": b, "mean": mean,
                        "ci_low": float(beta_dist.ppf(tail, a, b)), "ci_high": float(beta_dist.ppf(1 - tail, a, b)),
                        "expected_reward": self.weights.unscale(mean), "n": n,
                        "mean_observed_reward": float(self.reward_sum[i] / n) if n else None}
        return out

    def to_policy_json(self, draws: int = ALLOCATION_DRAWS) -> dict[str, Any]:
        """Everything needed to audit or replay the policy (the content of rl_policy.json)."""
        return {"algorithm": "thompson_sampling_beta_bernoulli",
                "binarization": "Bernoulli(rescaled reward), Agrawal & Goyal 2012",
                "reward_weights": dataclasses.asdict(self.weights),
                "reward_range": [self.weights.low, self.weights.high],
                "prior": list(self.prior), "seed": self.seed, "updates": int(self.pulls.sum()),
                "credible_level": CREDIBLE_LEVEL, "posterior": self.posterior(),
                "allocation": self.allocation(draws), "exploration_rate": self.exploration_rate}

    def config_json(self, draws: int = ALLOCATION_DRAWS) -> dict[str, Any]:
        """The serving configuration (bandit_config.json): weights and exploration only."""
        return {"arm_weights": self.allocation(draws), "exploration_rate": self.exploration_rate}


# ---------------------------------------------------------------- offline policy evaluation

@dataclasses.dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float


@dataclasses.dataclass(frozen=True)
class IpsResult:
    """IPS and self-normalized IPS estimates of a target policy's mean reward."""

    ips: Estimate
    snips: Estimate
    n: int
    effective_sample_size: float
    confidence: float
    method: str = "CLT (IPS: sample mean; SNIPS: delta method)"


def _check_probs(probs: Mapping[str, float], name: str, where: str) -> dict[str, float]:
    if not probs:
        raise ValueError(f"{where}: {name} is empty")
    for arm, p in probs.items():
        if not (isinstance(p, Real) and 0.0 <= p <= 1.0):
            raise ValueError(f"{where}: {name}[{arm!r}] must be a probability in [0, 1], got {p!r}")
    total = math.fsum(probs.values())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"{where}: {name} must sum to 1, got {total:.6g}")
    return {str(a): float(p) for a, p in probs.items()}


def _weighted_terms(logged: Iterable[Mapping[str, Any]], target: Mapping[str, float],
                    where: str) -> tuple[np.ndarray, np.ndarray]:
    """Importance weights π(a)/μ(a) and rewards of the log, after validating every row."""
    weights: list[float] = []
    rewards: list[float] = []
    for i, row in enumerate(logged):
        missing = [k for k in ("arm", "reward", "propensity") if k not in row]
        if missing:
            raise ValueError(f"{where}: row {i} lacks {', '.join(missing)} (rows need arm, reward, propensity)")
        arm, reward, prop = row["arm"], row["reward"], row["propensity"]
        if arm not in target:
            raise ValueError(f"{where}: row {i} has unknown arm {arm!r} (known: {', '.join(target)})")
        if not (isinstance(prop, Real) and 0.0 < prop <= 1.0):
            raise ValueError(f"{where}: row {i} has propensity {prop!r}, a logged propensity must be in (0, 1]")
        if not (isinstance(reward, Real) and math.isfinite(reward)):
            raise ValueError(f"{where}: row {i} has reward {reward!r}, a reward must be a finite number")
        weights.append(target[arm] / prop)
        rewards.append(float(reward))
    if not weights:
        raise ValueError(f"{where}: the log is empty, there is nothing to evaluate")
    if len(weights) < 2:
        raise ValueError(f"{where}: an interval needs at least 2 logged rows, got 1")
    return np.asarray(weights), np.asarray(rewards)


def _ips_from_terms(w: np.ndarray, r: np.ndarray, confidence: float, where: str) -> IpsResult:
    n, total = len(w), float(w.sum())
    if total == 0.0:
        raise ValueError(f"{where}: the target policy gives probability 0 to every logged action, "
                         "so the log says nothing about it")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    wr = w * r
    ips = float(wr.mean())
    ips_se = float(wr.std(ddof=1)) / math.sqrt(n)
    snips = float(wr.sum()) / total
    snips_se = math.sqrt(float(np.sum(w**2 * (r - snips) ** 2))) / total
    return IpsResult(ips=Estimate(ips, ips - z * ips_se, ips + z * ips_se),
                     snips=Estimate(snips, snips - z * snips_se, snips + z * snips_se),
                     n=n, effective_sample_size=total**2 / float(np.sum(w**2)), confidence=confidence)


def ips_estimate(logged: Iterable[Mapping[str, Any]], target_probs: Mapping[str, float], *,
                 confidence: float = 0.95) -> IpsResult:
    """Inverse-propensity estimate of the mean reward ``target_probs`` would have earned on
    the logged traffic, its self-normalized variant, and the effective sample size.

    IPS is unbiased when the logged propensities are the true ones; SNIPS trades a small
    bias for a much lower variance when weights are uneven. The intervals are CLT intervals:
    IPS is a mean of i.i.d. terms w·r and SNIPS a ratio of two means (delta method). Both are
    bounded — rewards lie in [−0.4, 1] and an ε-floored logging policy keeps w <= K/ε — so the
    CLT applies, the result is deterministic (the same log always reports the same interval),
    and it is cheap enough to check its coverage by replication. The effective sample size
    (Σw)²/Σw² shows how much of the log actually informs the estimate.
    """
    where = "ips_estimate"
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"{where}: confidence must be a float in (0, 1), got {confidence!r}")
    target = _check_probs(target_probs, "target_probs", where)
    w, r = _weighted_terms(logged, target, where)
    return _ips_from_terms(w, r, confidence, where)


@dataclasses.dataclass(frozen=True)
class PolicyComparison:
    """Learned policy versus uniform on the same log; differences are learned − uniform."""

    learned: IpsResult
    uniform: IpsResult
    ips_difference: Estimate
    snips_difference: Estimate
    resamples: int


def compare_with_uniform(logged: Iterable[Mapping[str, Any]], learned_probs: Mapping[str, float], *,
                         confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> PolicyComparison:
    """Both policies evaluated on the same rows, and their difference with a paired bootstrap
    interval: resampling rows once for both policies keeps the strong positive correlation of
    the two estimates (same rewards), which separate intervals would ignore and so overstate
    the uncertainty of the difference; the bootstrap also avoids deriving the delta-method
    variance of a difference of two ratio estimators."""
    where = "compare_with_uniform"
    if not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"{where}: resamples must be an integer >= 100, got {resamples!r}")
    learned = _check_probs(learned_probs, "learned_probs", where)
    uniform = {arm: 1.0 / len(learned) for arm in learned}
    rows = list(logged)
    w_l, r = _weighted_terms(rows, learned, where)
    w_u, _ = _weighted_terms(rows, uniform, where)
    res_l, res_u = _ips_from_terms(w_l, r, confidence, where), _ips_from_terms(w_u, r, confidence, where)
    rng = np.random.default_rng(seed)
    n, chunk = len(r), max(1, 2_000_000 // len(r))
    ips_d: list[np.ndarray] = []
    snips_d: list[np.ndarray] = []
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        rb, wl, wu = r[idx], w_l[idx], w_u[idx]
        ips_d.append((wl * rb).mean(axis=1) - (wu * rb).mean(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            snips_d.append((wl * rb).sum(axis=1) / wl.sum(axis=1) - (wu * rb).sum(axis=1) / wu.sum(axis=1))
    tails = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]

    def interval(point: float, boot: list[np.ndarray]) -> Estimate:
        values = np.concatenate(boot)
        low, high = np.nanpercentile(values, tails)
        return Estimate(point, float(low), float(high))

    return PolicyComparison(learned=res_l, uniform=res_u,
                            ips_difference=interval(res_l.ips.value - res_u.ips.value, ips_d),
                            snips_difference=interval(res_l.snips.value - res_u.snips.value, snips_d),
                            resamples=resamples)


# ---------------------------------------------------------------- change risk

def total_variation(old_alloc: Mapping[str, float], new_alloc: Mapping[str, float]) -> float:
    """½·Σ|p − q| over the union of arms (an arm absent from one side has weight 0 there):
    the largest share of traffic whose treatment can change between the two policies."""
    old = _check_probs(old_alloc, "old_alloc", "change_risk")
    new = _check_probs(new_alloc, "new_alloc", "change_risk")
    return 0.5 * math.fsum(abs(old.get(a, 0.0) - new.get(a, 0.0)) for a in set(old) | set(new))


def change_risk(old_alloc: Mapping[str, float], new_alloc: Mapping[str, float]) -> str:
    """"low" below LOW_RISK_MAX_TV of traffic moved, "medium" below MEDIUM_RISK_MAX_TV,
    "high" otherwise; a change in APPROVAL_RISKS needs an approval before it ships. The
    distance is rounded to 12 decimals so a move of exactly 0.1 is not "low" by float noise."""
    tv = round(total_variation(old_alloc, new_alloc), 12)
    if tv < LOW_RISK_MAX_TV:
        return "low"
    return "medium" if tv < MEDIUM_RISK_MAX_TV else "high"
