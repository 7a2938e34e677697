"""Retry statistics of 08_learning_autonomy on synthetic attempt logs: each test builds the
``upstream_attempt`` events a retry policy would emit and checks the verdict the
statistics reach, so a policy that does not back off, or does not jitter, is caught."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pytest

from readiness.core.check import Status
from readiness.core.verdict import interval_check
from readiness.phases.learning.error_correction import (
    MIN_GROWTH,
    bounded_attempts,
    breaker_history,
    enough_gaps,
    growth_factor,
    jitter_dispersion,
    retry_gaps,
    timer_noise,
)

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
Wait = Callable[[int, np.random.Generator], float]


def attempts_log(wait: Wait, *, runs: int = 120, fail_p: float = 0.45, max_attempts: int = 4,
                 seed: int = 1) -> tuple[list[dict], list[dict]]:
    """Attempt and retry events of ``runs`` runs whose attempts fail with ``fail_p``."""
    rng = np.random.default_rng(seed)
    attempts, retries = [], []
    for r in range(runs):
        t = T0 + dt.timedelta(seconds=r)
        for k in range(1, max_attempts + 1):
            elapsed = float(rng.uniform(2, 8))  # ms, varies on its own
            attempts.append({"run_id": f"orch-{r}", "attempt": k, "elapsed_ms": elapsed,
                             "started_at": t.isoformat(timespec="microseconds")})
            if k == max_attempts or rng.random() > fail_p:
                break
            chosen = wait(k, rng)
            retries.append({"run_id": f"orch-{r}", "attempt": k, "wait_s": chosen})
            overshoot = float(rng.uniform(0, 0.0003))  # the timer wakes a little late
            t += dt.timedelta(seconds=elapsed / 1000 + chosen + overshoot)
    return attempts, retries


def exp_jitter(k: int, rng: np.random.Generator) -> float:
    return 0.05 * 2 ** (k - 1) + float(rng.uniform(0, 0.05))


def constant_jitter(k: int, rng: np.random.Generator) -> float:
    return 0.1 + float(rng.uniform(0, 0.05))


def exp_plain(k: int, rng: np.random.Generator) -> float:
    return 0.05 * 2 ** (k - 1)


def verdict(estimate, id: str = "learning.retry.x"):
    return interval_check(id=id, phase="08_learning_autonomy", title="t", estimate=estimate, unit="×",
                          tags=(), evidence=())


def test_exponential_backoff_with_jitter_passes_both_tests() -> None:
    gaps = retry_gaps(*attempts_log(exp_jitter))
    assert enough_gaps(gaps, 20)
    growth = growth_factor(gaps, seed=3)
    assert growth is not None and MIN_GROWTH < growth.ci_low < growth.value < growth.ci_high < 2.1
    assert verdict(growth).status is Status.PASS
    jitter = jitter_dispersion(gaps, seed=3)
    assert jitter is not None and jitter.ci_low > jitter.threshold
    assert verdict(jitter).status is Status.PASS


def test_constant_backoff_fails_the_exponential_test() -> None:
    gaps = retry_gaps(*attempts_log(constant_jitter))
    growth = growth_factor(gaps, seed=3)
    assert growth is not None and growth.ci_high < MIN_GROWTH
    check = verdict(growth)
    assert check.status is Status.FAIL and "lies below 1.25" in check.detail
    assert verdict(jitter_dispersion(gaps, seed=3)).status is Status.PASS  # it is jittered, though


def test_deterministic_exponential_backoff_fails_the_jitter_test() -> None:
    gaps = retry_gaps(*attempts_log(exp_plain))
    assert verdict(growth_factor(gaps, seed=3)).status is Status.PASS
    jitter = jitter_dispersion(gaps, seed=3)
    assert jitter is not None and jitter.ci_high < jitter.threshold
    assert verdict(jitter).status is Status.FAIL


def test_timer_noise_is_measured_from_reported_waits() -> None:
    gaps = retry_gaps(*attempts_log(exp_plain))
    assert timer_noise(gaps) == pytest.approx(0.002)  # measured overshoot (≤ 0.3 ms) stays under the floor
    late, retries = attempts_log(exp_plain)
    for i, r in enumerate(retries):
        r["wait_s"] -= 0.02 * (i % 2)  # every other retry slept 20 ms longer than it said
    assert timer_noise(retry_gaps(late, retries)) == pytest.approx(0.02, abs=0.002)
    for r in retries:
        r["wait_s"] -= 0.05  # a constant offset is no dispersion: it does not raise the bound
    assert timer_noise(retry_gaps(late, retries)) == pytest.approx(0.02, abs=0.002)


def test_too_few_gaps_are_inconclusive_and_say_what_is_needed() -> None:
    gaps = retry_gaps(*attempts_log(exp_jitter, runs=12, fail_p=0.3))
    assert not enough_gaps(gaps, 20)
    only_first = gaps[gaps["index"] == 1]
    assert growth_factor(only_first, seed=3) is None
    check = interval_check(id="learning.retry.exponential", phase="p", title="t", estimate=None, unit="×", tags=(),
                           evidence=(), missing="needs ≥ 20 retry gaps")
    assert check.status is Status.INCONCLUSIVE and check.detail == "needs ≥ 20 retry gaps" and check.n == 0


def test_gaps_skip_a_missing_attempt_and_subtract_the_attempt_duration() -> None:
    t = T0.isoformat(timespec="microseconds")
    later = (T0 + dt.timedelta(seconds=0.1)).isoformat(timespec="microseconds")
    much_later = (T0 + dt.timedelta(seconds=0.5)).isoformat(timespec="microseconds")
    gaps = retry_gaps([{"run_id": "a", "attempt": 1, "started_at": t, "elapsed_ms": 20},
                       {"run_id": "a", "attempt": 2, "started_at": later, "elapsed_ms": 5},
                       {"run_id": "a", "attempt": 4, "started_at": much_later, "elapsed_ms": 5}])
    assert gaps["index"].tolist() == [1]
    assert gaps["gap_s"].iloc[0] == pytest.approx(0.1) and gaps["idle_s"].iloc[0] == pytest.approx(0.08)


@pytest.mark.parametrize(("row", "message"), [
    ({"attempt": 1, "started_at": "2024-05-01T12:00:00Z", "elapsed_ms": 1},
     "retry_gaps: upstream_attempt #0 lacks run_id"),
    ({"run_id": "a", "attempt": 0, "started_at": "2024-05-01T12:00:00Z", "elapsed_ms": 1},
     "retry_gaps: upstream_attempt #0 has attempt 0, expected an integer >= 1"),
    ({"run_id": "a", "attempt": 1, "started_at": "yesterday", "elapsed_ms": 1},
     "retry_gaps: upstream_attempt #0 has started_at 'yesterday', expected an ISO-8601 time"),
    ({"run_id": "a", "attempt": 1, "started_at": "2024-05-01T12:00:00Z", "elapsed_ms": -1},
     "retry_gaps: upstream_attempt #0 has elapsed_ms -1, expected a number >= 0"),
])
def test_bad_attempt_events_are_refused_by_name(row: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        retry_gaps([row])
    assert str(err.value) == message


def test_an_attempt_reported_twice_is_refused() -> None:
    row = {"run_id": "a", "attempt": 1, "started_at": "2024-05-01T12:00:00Z", "elapsed_ms": 1}
    with pytest.raises(ValueError, match="^retry_gaps: run a reports attempt 1 twice$"):
        retry_gaps([row, row])


def test_bounded_attempts_needs_a_run_that_gave_up() -> None:
    ok = [{"outcome": "ok", "attempts": k} for k in (1, 1, 2, 3)]
    assert bounded_attempts(ok)[0] is Status.INCONCLUSIVE
    assert bounded_attempts([*ok, {"outcome": "failed", "attempts": 4}])[:2] == (Status.PASS, 4)
    status, top, why = bounded_attempts([*ok, {"outcome": "failed", "attempts": 2}])
    assert status is Status.FAIL and top == 3 and "not consistent" in why
    assert bounded_attempts([])[0] is Status.INCONCLUSIVE


def transition(at_s: float, a: str, b: str) -> dict:
    return {"at": (T0 + dt.timedelta(seconds=at_s)).isoformat(), "from_state": a, "to_state": b}


def test_breaker_history_full_cycle_heals() -> None:
    rows = [transition(0, "closed", "open"), transition(2, "open", "half_open"), transition(2.1, "half_open", "open"),
            transition(4, "open", "half_open"), transition(4.2, "half_open", "closed")]
    hist = breaker_history(rows, T0 + dt.timedelta(seconds=60), 15)
    assert hist["problems"] == [] and hist["full_cycles"] == 1 and hist["opens"] == 1
    assert hist["heal_s"] == [pytest.approx(4.2)]


def test_breaker_history_flags_an_operator_reset_and_an_old_open() -> None:
    rows = [transition(0, "closed", "open"), transition(1, "open", "closed"), transition(5, "closed", "open")]
    hist = breaker_history(rows, T0 + dt.timedelta(seconds=60), 15)
    assert any("operator reset" in p for p in hist["problems"])
    assert hist["unhealed"] == [rows[2]["at"]]
