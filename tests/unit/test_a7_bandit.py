"""A7's CTA policy logic without a server: allocation, validation, draws, the simulator.

The simulator is driven through a stand-in for the app context whose "emitter" records
events and reports a backlog the test controls, so chunking, draining and the time bound
are exercised exactly, with no network and no threads.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from readiness.core.verdict import wilson_interval
from sandbox.apps.a7_bandit import (
    ARMS,
    EVENTS_PER_VISIT_MAX,
    OUTCOME_EVENTS,
    OUTCOME_PROBABILITIES,
    LivePolicy,
    PolicyError,
    Simulation,
    assign,
    default_policy,
    make_policy,
    parse_policy,
    parse_simulation,
    simulate,
)

ROUTE = "/admin/cta/simulate"
#: The documented outcome probabilities, written out so the module's table is checked against them.
DOCUMENTED = {
    "signup_hero": {"page_view": 0.60, "lead": 0.10, "checkout": 0.04, "complaint": 0.02},
    "pricing_banner": {"page_view": 0.50, "lead": 0.06, "checkout": 0.08, "complaint": 0.01},
    "provider_invite": {"page_view": 0.40, "lead": 0.05, "checkout": 0.01, "complaint": 0.05},
}
GOOD = {"policy_version": "v2", "arm_weights": {"pricing_banner": 2.0, "signup_hero": 1.0, "provider_invite": 1.0},
        "exploration_rate": 0.2}


class Emitter:
    """Records events; its backlog grows with each event and shrinks by ``drain`` per poll."""

    def __init__(self, drain: int | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.backlog = 0
        self.peak = 0
        self.drain = drain  # None: the queue empties at every poll

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.backlog += 1
        self.peak = max(self.peak, self.backlog)

    def counters(self) -> dict[str, int]:
        self.backlog = 0 if self.drain is None else max(0, self.backlog - self.drain)
        return {"queued": self.backlog}


def context(emitter: Emitter, queue_max: int = 10_000) -> Any:
    return SimpleNamespace(config=SimpleNamespace(app_id="A7", telemetry_queue_max=queue_max), emitter=emitter)


def run(visits: int, *, policy: dict[str, Any] | None = None, seed: int = 1, emitter: Emitter | None = None,
        queue_max: int = 10_000, **kwargs: Any) -> tuple[Simulation, Emitter]:
    live = LivePolicy("test:A7")
    if policy is not None:
        live.replace(parse_policy(policy))
    emitter = emitter or Emitter()
    done = simulate(context(emitter, queue_max), live, visits, live.simulator_rng(seed), {"source": "sandbox_simulator"},
                    route=ROUTE, **kwargs)
    return done, emitter


# --- allocation and draws ------------------------------------------------------------------


def test_the_default_policy_allocates_by_the_formula() -> None:
    policy = default_policy()
    assert policy.policy_version == "cta-2024-05-01" and policy.exploration_rate == 0.1
    for arm, w in {"signup_hero": 0.5, "pricing_banner": 0.3, "provider_invite": 0.2}.items():
        assert policy.allocation[arm] == pytest.approx(0.9 * w + 0.1 / 3, abs=1e-15)
    assert math.fsum(policy.allocation.values()) == pytest.approx(1.0, abs=1e-12)


def test_an_arm_left_out_gets_only_the_exploration_share() -> None:
    policy = make_policy("v", {"pricing_banner": 5.0}, 0.3)
    assert policy.arm_weights == {"signup_hero": 0.0, "pricing_banner": 5.0, "provider_invite": 0.0}
    assert policy.allocation == pytest.approx({"signup_hero": 0.1, "pricing_banner": 0.8, "provider_invite": 0.1})


@pytest.mark.parametrize(("u", "arm"), [(0.0, "signup_hero"), (0.4833, "signup_hero"), (0.4834, "pricing_banner"),
                                        (0.7866, "pricing_banner"), (0.7867, "provider_invite"),
                                        (1 - 1e-16, "provider_invite")])
def test_draw_is_the_inverse_cdf_over_the_allocation(u: float, arm: str) -> None:
    assert default_policy().draw(u) == arm


def test_an_arm_of_probability_zero_is_never_drawn_even_in_the_rounding_gap() -> None:
    policy = make_policy("v", {"signup_hero": 1.0, "pricing_banner": 2.0}, 0.0)
    assert policy.allocation["provider_invite"] == 0.0
    assert policy.draw(1 - 1e-16) == "pricing_banner"
    rng = random.Random(3)
    assert "provider_invite" not in {assign(policy, rng).arm_id for _ in range(5000)}


def test_the_propensity_is_the_allocation_of_the_drawn_arm() -> None:
    policy, rng = parse_policy(GOOD), random.Random(5)
    for _ in range(200):
        a = assign(policy, rng)
        assert a.propensity == policy.allocation[a.arm_id] and a.policy_version == "v2"


def test_draws_follow_the_allocation() -> None:
    policy, rng, n = parse_policy(GOOD), random.Random(8), 50_000
    counts = Counter(assign(policy, rng).arm_id for _ in range(n))
    for arm in ARMS:
        low, high = wilson_interval(counts[arm], n, 0.999)
        assert low <= policy.allocation[arm] <= high, (arm, counts)


def test_live_draws_and_seeded_simulations_are_reproducible() -> None:
    a, b = LivePolicy("s:A7"), LivePolicy("s:A7")
    assert [a.assign() for _ in range(50)] == [b.assign() for _ in range(50)]
    assert a.simulator_rng(9).random() == b.simulator_rng(9).random() != b.simulator_rng(10).random()
    other = LivePolicy("other:A7")
    assert [other.assign() for _ in range(50)] != [LivePolicy("s:A7").assign() for _ in range(50)]


def test_replacing_the_policy_applies_to_the_next_draw() -> None:
    live = LivePolicy("s:A7")
    live.replace(make_policy("only-hero", {"signup_hero": 1.0}, 0.0))
    assert {live.assign().arm_id for _ in range(100)} == {"signup_hero"}
    assert live.assign().propensity == 1.0


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field", "message"), [
    ([], "body", "body must be a JSON object"),
    ({**GOOD, "extra": 1}, "extra", "unknown field: extra"),
    ({"arm_weights": {"signup_hero": 1}, "policy_version": "v"}, "exploration_rate", "exploration_rate is required"),
    ({**GOOD, "policy_version": 3}, "policy_version", "policy_version must be a non-empty string of at most 100 characters"),
    ({**GOOD, "policy_version": "v" * 101}, "policy_version",
     "policy_version must be a non-empty string of at most 100 characters"),
    ({**GOOD, "arm_weights": [1, 2]}, "arm_weights", "arm_weights must be a non-empty object of arm id to weight"),
    ({**GOOD, "arm_weights": {"x": 1}}, "arm_weights",
     "unknown arm_id 'x' in arm_weights (known: signup_hero, pricing_banner, provider_invite)"),
    ({**GOOD, "arm_weights": {"signup_hero": float("nan")}}, "arm_weights",
     "arm_weights['signup_hero'] must be a finite number >= 0"),
    ({**GOOD, "arm_weights": {"signup_hero": float("inf")}}, "arm_weights",
     "arm_weights['signup_hero'] must be a finite number >= 0"),
    ({**GOOD, "arm_weights": {"signup_hero": "1"}}, "arm_weights", "arm_weights['signup_hero'] must be a finite number >= 0"),
    ({**GOOD, "arm_weights": {"signup_hero": 0.0}}, "arm_weights", "arm_weights must sum to more than 0"),
    ({**GOOD, "exploration_rate": -0.01}, "exploration_rate", "exploration_rate must be a number between 0 and 1"),
    ({**GOOD, "exploration_rate": False}, "exploration_rate", "exploration_rate must be a number between 0 and 1"),
])
def test_parse_policy_names_the_first_bad_field(body: Any, field: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(body)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_parse_policy_accepts_the_bounds() -> None:
    assert parse_policy({**GOOD, "exploration_rate": 0}).exploration_rate == 0.0
    uniform = parse_policy({**GOOD, "exploration_rate": 1})
    assert uniform.allocation == pytest.approx(dict.fromkeys(ARMS, 1 / 3))
    assert parse_policy({**GOOD, "policy_version": "  v3 "}).policy_version == "v3"


@pytest.mark.parametrize(("body", "field", "message"), [
    ("10", "body", "body must be a JSON object"),
    ({}, "visits", "visits must be an integer between 1 and 20000"),
    ({"visits": 20_001}, "visits", "visits must be an integer between 1 and 20000"),
    ({"visits": 2.0}, "visits", "visits must be an integer between 1 and 20000"),
    ({"visits": 5, "seed": "1"}, "seed", "seed must be an integer"),
    ({"visits": 5, "seed": True}, "seed", "seed must be an integer"),
    ({"visits": 5, "n": 1}, "n", "unknown field: n"),
])
def test_parse_simulation_names_the_first_bad_field(body: Any, field: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_simulation(body)
    assert (caught.value.field, caught.value.message) == (field, message)


def test_parse_simulation_returns_visits_and_seed() -> None:
    assert parse_simulation({"visits": 20_000}) == (20_000, None)
    assert parse_simulation({"visits": 1, "seed": -4}) == (1, -4)


# --- the simulator ---------------------------------------------------------------------------


def test_each_visit_is_one_impression_and_its_outcomes_under_one_fresh_trace() -> None:
    done, emitter = run(400)
    assert done.complete and done.drained and done.visits == 400 and sum(done.assigned.values()) == 400
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for e in emitter.events:
        by_trace.setdefault(e["trace_id"], []).append(e)
    assert len(by_trace) == 400
    for visit in by_trace.values():
        first, outcomes = visit[0], visit[1:]
        assert first["event_type"] == "cta_impression" and first["route"] == ROUTE and first["status"] == 200
        assert first["propensity"] == default_policy().allocation[first["arm_id"]]
        assert first["page"] == "/get-started" and first["tags"] == {"source": "sandbox_simulator"}
        assert {e["event_type"] for e in outcomes} <= set(OUTCOME_EVENTS.values())
        for e in outcomes:
            assert (e["arm_id"], e["policy_version"], e["propensity"]) == (
                first["arm_id"], first["policy_version"], first["propensity"])
            assert e["idempotency_key"] == f"{first['idempotency_key']}:{e['event_type']}"
    assert Counter(v[0]["arm_id"] for v in by_trace.values()) == Counter(done.assigned)
    assert done.as_json() == {"visits": 400, "policy_version": "cta-2024-05-01", "assigned": done.assigned}


def test_outcomes_are_drawn_from_the_hidden_probabilities() -> None:
    uniform = {"policy_version": "u", "arm_weights": {"signup_hero": 1}, "exploration_rate": 1}
    counts: Counter[tuple[str, str]] = Counter()
    assigned: Counter[str] = Counter()
    for seed in range(3):  # 60 000 visits: at most 20 000 per simulation
        done, emitter = run(20_000, policy=uniform, seed=seed)
        counts.update((e["arm_id"], e["event_type"]) for e in emitter.events)
        assigned.update(done.assigned)
    checks = [(arm, outcome) for arm in ARMS for outcome in OUTCOME_EVENTS]
    level = 1 - 0.01 / len(checks)  # 99% for the whole family of intervals
    for arm, outcome in checks:
        low, high = wilson_interval(counts[arm, OUTCOME_EVENTS[outcome]], assigned[arm], level)
        assert low <= DOCUMENTED[arm][outcome] <= high, (arm, outcome, counts)


def test_the_expected_rewards_make_pricing_banner_the_best_arm() -> None:
    weights = {"page_view": 0.05, "lead": 0.3, "checkout": 0.65, "complaint": -0.4}
    assert OUTCOME_PROBABILITIES == DOCUMENTED
    reward = {arm: math.fsum(weights[o] * p for o, p in probs.items()) for arm, probs in DOCUMENTED.items()}
    assert reward == pytest.approx({"signup_hero": 0.078, "pricing_banner": 0.091, "provider_invite": 0.0215})
    assert max(reward, key=reward.__getitem__) == "pricing_banner"
    assert max(default_policy().allocation, key=default_policy().allocation.__getitem__) == "signup_hero"


def test_the_same_seed_replays_the_same_simulation() -> None:
    (a, ea), (b, eb) = run(500, seed=4), run(500, seed=4)
    assert a.assigned == b.assigned
    assert [e["event_type"] for e in ea.events] == [e["event_type"] for e in eb.events]
    assert {e["trace_id"] for e in ea.events}.isdisjoint({e["trace_id"] for e in eb.events})  # fresh ids each run
    assert run(500, seed=5)[0].assigned != a.assigned


def test_chunks_never_overflow_a_slowly_draining_queue() -> None:
    emitter = Emitter(drain=40)
    done, _ = run(1000, emitter=emitter, queue_max=200)
    assert done.complete and done.drained
    assert emitter.peak <= 200 - 200 // 10  # the queue's last tenth stays free for request telemetry
    assert len({e["trace_id"] for e in emitter.events}) == 1000


def test_a_queue_that_never_drains_stops_the_run_at_its_time_bound() -> None:
    ticks = iter(range(10**6))
    emitter = Emitter(drain=0)
    done, _ = run(5000, emitter=emitter, queue_max=1000, max_seconds=50.0, clock=lambda: float(next(ticks)))
    assert not done.complete and not done.drained
    assert 0 < done.visits < 5000 and sum(done.assigned.values()) == done.visits
    assert emitter.peak <= 1000 - 100
    assert done.as_json()["visits"] == done.visits


def test_simulate_refuses_a_count_out_of_bounds() -> None:
    with pytest.raises(ValueError, match="^visits must be an integer between 1 and 20000$"):
        run(0)
    with pytest.raises(ValueError, match="^visits must be an integer between 1 and 20000$"):
        run(20_001)


def test_a_policy_change_mid_run_is_reported_per_version() -> None:
    run_ = Simulation(requested=3, visits=3, assigned={"signup_hero": 3, "pricing_banner": 0, "provider_invite": 0},
                      policy_versions={"v1": 1, "v2": 2}, complete=True)
    assert run_.as_json() == {"visits": 3, "policy_version": "v2", "assigned": run_.assigned,
                              "policy_versions": {"v1": 1, "v2": 2}}
    assert EVENTS_PER_VISIT_MAX == 5
