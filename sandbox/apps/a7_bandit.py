"""A7's live CTA policy: validation, allocation, seeded draws, and the visitor simulator.

A policy is ``{policy_version, arm_weights, exploration_rate ε}``. Each call to action is
drawn from its *allocation* ``p(arm) = (1 − ε)·w/Σw + ε/K`` over the ``K`` known arms, and
the propensity logged next to the draw is that same ``p(arm)`` — the float the draw used —
so an offline evaluation (inverse propensity scoring) of any other policy is unbiased.
An arm left out of ``arm_weights`` has weight 0: it is still shown ε/K of the time.

Draws come from seeded :class:`random.Random` streams (the sandbox seed + the app id, plus
a request's own seed for a simulation), so a fresh app given the same requests makes the
same choices, and a seeded simulation replays exactly.

The simulator stands in for visitors an offline sandbox does not have. Each simulated
visit is assigned an arm exactly as ``POST /api/cta/assign`` assigns one (same live
policy, same ``cta_impression`` event, same propensity); its outcomes are then drawn,
independently, from :data:`OUTCOME_PROBABILITIES` — hidden from every API, so an audit
has to *learn* which arm is best from the telemetry, as it would in production. Events
leave through the app's bounded emitter queue: the simulator emits in chunks and waits
for the queue to drain between them, so a large simulation never overflows it (an
overflow would drop events, counted but lost).
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from sandbox.common.context import AppContext
from sandbox.common.events import emit_event
from sandbox.common.web import FieldError

ARMS = ("signup_hero", "pricing_banner", "provider_invite")
DEFAULT_VERSION = "cta-2024-05-01"
DEFAULT_WEIGHTS = {"signup_hero": 0.5, "pricing_banner": 0.3, "provider_invite": 0.2}
DEFAULT_EXPLORATION = 0.1
MAX_VERSION = 100
POLICY_FIELDS = ("arm_weights", "exploration_rate", "policy_version")

#: Per-visit probability of each outcome, drawn independently (documented, never served).
OUTCOME_PROBABILITIES: Mapping[str, Mapping[str, float]] = {
    "signup_hero": {"page_view": 0.60, "lead": 0.10, "checkout": 0.04, "complaint": 0.02},
    "pricing_banner": {"page_view": 0.50, "lead": 0.06, "checkout": 0.08, "complaint": 0.01},
    "provider_invite": {"page_view": 0.40, "lead": 0.05, "checkout": 0.01, "complaint": 0.05},
}
OUTCOME_EVENTS = {"page_view": "cta_page_view", "lead": "cta_lead", "checkout": "cta_checkout",
                  "complaint": "cta_complaint"}
MAX_VISITS = 20_000
VISITS_MESSAGE = f"visits must be an integer between 1 and {MAX_VISITS}"
SEED_MESSAGE = "seed must be an integer"
SIMULATION_FIELDS = ("visits", "seed")
SIMULATED_PAGE = "/get-started"
SIMULATOR_SOURCE = "sandbox_simulator"
EVENTS_PER_VISIT_MAX = 1 + len(OUTCOME_EVENTS)
CHUNK_VISITS = 500
MAX_SIMULATION_S = 60.0
DRAIN_POLL_S = 0.005


class PolicyError(FieldError):
    """A policy body A7 cannot serve; ``field`` names the culprit."""


@dataclasses.dataclass(frozen=True)
class Policy:
    """One immutable policy with its allocation computed once, so a draw and the propensity
    logged with it can never come from two different computations."""

    policy_version: str
    arm_weights: Mapping[str, float]
    exploration_rate: float
    allocation: Mapping[str, float]

    def as_json(self) -> dict[str, Any]:
        return {"policy_version": self.policy_version, "arm_weights": dict(self.arm_weights),
                "exploration_rate": self.exploration_rate, "allocation": dict(self.allocation)}

    def draw(self, u: float) -> str:
        """The arm a uniform ``u`` in [0, 1) selects (inverse CDF over :data:`ARMS` order).

        An arm of probability 0 is never returned, even when float rounding leaves the
        cumulative sum a hair below 1 and ``u`` falls in that gap.
        """
        cumulative = 0.0
        last = None
        for arm in ARMS:
            p = self.allocation[arm]
            if p <= 0:
                continue
            cumulative += p
            last = arm
            if u < cumulative:
                return arm
        assert last is not None  # a validated policy has at least one arm with p > 0
        return last


def make_policy(policy_version: str, arm_weights: Mapping[str, float], exploration_rate: float) -> Policy:
    """The policy with every known arm's weight (absent ones 0) and its allocation."""
    weights = {arm: float(arm_weights.get(arm, 0.0)) for arm in ARMS}
    total = math.fsum(weights.values())
    eps = float(exploration_rate)
    allocation = {arm: (1.0 - eps) * w / total + eps / len(ARMS) for arm, w in weights.items()}
    return Policy(policy_version, weights, eps, allocation)


def default_policy() -> Policy:
    """What A7 serves after a (re)start."""
    return make_policy(DEFAULT_VERSION, DEFAULT_WEIGHTS, DEFAULT_EXPLORATION)


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def parse_policy(body: Any) -> Policy:
    """The policy of a ``PUT /admin/cta/policy`` body, or :class:`PolicyError` on the first bad field."""
    body = PolicyError.json_object(body, POLICY_FIELDS, unknown="unknown field")
    for name in POLICY_FIELDS:
        if name not in body:
            raise PolicyError(name, f"{name} is required")
    version = body["policy_version"]
    if not isinstance(version, str) or not version.strip() or len(version) > MAX_VERSION:
        raise PolicyError("policy_version", f"policy_version must be a non-empty string of at most {MAX_VERSION} "
                                            "characters")
    weights = body["arm_weights"]
    if not isinstance(weights, dict) or not weights:
        raise PolicyError("arm_weights", "arm_weights must be a non-empty object of arm id to weight")
    for arm, weight in weights.items():
        if arm not in ARMS:
            raise PolicyError("arm_weights", f"unknown arm_id {arm!r} in arm_weights (known: {', '.join(ARMS)})")
        if not _number(weight) or weight < 0:
            raise PolicyError("arm_weights", f"arm_weights[{arm!r}] must be a finite number >= 0")
    if math.fsum(weights.values()) <= 0:
        raise PolicyError("arm_weights", "arm_weights must sum to more than 0")
    eps = body["exploration_rate"]
    if not _number(eps) or not 0 <= eps <= 1:
        raise PolicyError("exploration_rate", "exploration_rate must be a number between 0 and 1")
    return make_policy(version.strip(), weights, eps)


def parse_simulation(body: Any) -> tuple[int, int | None]:
    """``(visits, seed)`` of a ``POST /admin/cta/simulate`` body, or :class:`PolicyError`."""
    body = PolicyError.json_object(body, SIMULATION_FIELDS, unknown="unknown field")
    visits, seed = body.get("visits"), body.get("seed")
    if isinstance(visits, bool) or not isinstance(visits, int) or not 1 <= visits <= MAX_VISITS:
        raise PolicyError("visits", VISITS_MESSAGE)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise PolicyError("seed", SEED_MESSAGE)
    return visits, seed


@dataclasses.dataclass(frozen=True)
class Assignment:
    """One drawn call to action and the probability the live policy gave it."""

    arm_id: str
    propensity: float
    policy_version: str

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def assign(policy: Policy, rng: random.Random) -> Assignment:
    """Draw an arm from ``policy``; the propensity is that arm's allocation probability."""
    arm = policy.draw(rng.random())
    return Assignment(arm, policy.allocation[arm], policy.policy_version)


class LivePolicy:
    """The policy A7 serves now, replaced at once by ``PUT /admin/cta/policy``.

    Reading ``current`` is one attribute load of an immutable :class:`Policy`, so a draw
    always sees one whole policy. Live assignments draw from one seeded stream under a
    lock; only one simulation runs at a time (``simulation_lock``).
    """

    def __init__(self, seed: str) -> None:
        self.seed = seed
        self.current = default_policy()
        self._rng = random.Random(f"{seed}:cta")
        self._simulator_rng = random.Random(f"{seed}:cta-simulator")
        self._lock = threading.Lock()
        self.simulation_lock = threading.Lock()

    def replace(self, policy: Policy) -> Policy:
        self.current = policy
        return policy

    def assign(self) -> Assignment:
        with self._lock:
            return assign(self.current, self._rng)

    def simulator_rng(self, seed: int | None) -> random.Random:
        """A stream of its own for a seeded simulation (replayable); else the shared one."""
        if seed is None:
            return self._simulator_rng
        return random.Random(f"{self.seed}:cta-simulator:{seed}")


def emit_impression(ctx: AppContext, assignment: Assignment, *, route: str, status: int, trace_id: str,
                    idempotency_key: str, tags: Mapping[str, str], page: str) -> None:
    """The ``cta_impression`` of one assignment (sampled at the source like every impression)."""
    emit_event(ctx, "cta_impression", route=route, status=status, trace_id=trace_id,
               idempotency_key=idempotency_key, tags=tags, arm_id=assignment.arm_id,
               propensity=assignment.propensity, policy_version=assignment.policy_version, page=page)


@dataclasses.dataclass
class Simulation:
    """What a simulation did: the visits run, the arms assigned, whether it ran to the end."""

    requested: int
    visits: int = 0
    assigned: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(ARMS, 0))
    policy_versions: dict[str, int] = dataclasses.field(default_factory=dict)
    complete: bool = False
    drained: bool = False
    elapsed_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The contract's answer; ``policy_versions`` only when the policy changed mid-run."""
        versions = list(self.policy_versions)
        body: dict[str, Any] = {"visits": self.visits, "policy_version": versions[-1] if versions else None,
                                "assigned": dict(self.assigned)}
        if len(versions) > 1:
            body["policy_versions"] = dict(self.policy_versions)
        return body


def _backlog(ctx: AppContext) -> int:
    return ctx.emitter.counters()["queued"] if ctx.emitter is not None else 0


def _wait_for_room(ctx: AppContext, limit: int, deadline: float, clock: Callable[[], float]) -> bool:
    """Wait until the emitter queue holds at most ``limit`` events; False at the deadline."""
    while _backlog(ctx) > limit:
        if clock() >= deadline:
            return False
        time.sleep(DRAIN_POLL_S)
    return True


def _visit(ctx: AppContext, live: LivePolicy, rng: random.Random, tags: Mapping[str, str], route: str,
           run: Simulation) -> None:
    """One visitor: assigned like a live request, then its outcomes, all under one fresh trace id."""
    assignment = assign(live.current, rng)
    trace_id, key = uuid.uuid4().hex, uuid.uuid4().hex
    emit_impression(ctx, assignment, route=route, status=200, trace_id=trace_id, idempotency_key=key,
                    tags=tags, page=SIMULATED_PAGE)
    for outcome, p in OUTCOME_PROBABILITIES[assignment.arm_id].items():
        if rng.random() < p:
            event_type = OUTCOME_EVENTS[outcome]
            emit_event(ctx, event_type, route=route, status=200, trace_id=trace_id,
                       idempotency_key=f"{key}:{event_type}", tags=tags, arm_id=assignment.arm_id,
                       policy_version=assignment.policy_version, propensity=assignment.propensity,
                       page=SIMULATED_PAGE)
    run.assigned[assignment.arm_id] += 1
    run.policy_versions[assignment.policy_version] = run.policy_versions.get(assignment.policy_version, 0) + 1
    run.visits += 1


def simulate(ctx: AppContext, live: LivePolicy, visits: int, rng: random.Random, tags: Mapping[str, str], *,
             route: str, max_seconds: float = MAX_SIMULATION_S,
             clock: Callable[[], float] = time.monotonic) -> Simulation:
    """Run ``visits`` simulated visits in chunks that always fit the emitter queue.

    Before each chunk the queue must have room for the chunk's worst case (every visit
    shipping its impression and all four outcomes) plus a tenth of the queue kept for
    the app's own request telemetry. At the end the queue is drained too, so the events
    are on their way to A8 when the answer goes out (``drained``). Past ``max_seconds``
    (the queue does not drain: A8 unreachable) the run stops at a chunk boundary,
    ``complete`` False, and no event has been dropped for lack of room.
    """
    if isinstance(visits, bool) or not isinstance(visits, int) or not 1 <= visits <= MAX_VISITS:
        raise ValueError(VISITS_MESSAGE)
    capacity = ctx.config.telemetry_queue_max
    reserve = capacity // 10
    chunk = max(1, min(CHUNK_VISITS, (capacity - reserve) // (2 * EVENTS_PER_VISIT_MAX)))
    room = capacity - reserve - chunk * EVENTS_PER_VISIT_MAX
    run = Simulation(requested=visits)
    started = clock()
    deadline = started + max_seconds
    while run.visits < visits:
        if not _wait_for_room(ctx, room, deadline, clock):
            break
        for _ in range(min(chunk, visits - run.visits)):
            _visit(ctx, live, rng, tags, route, run)
    run.complete = run.visits == visits
    run.drained = run.complete and _wait_for_room(ctx, 0, deadline, clock)
    run.elapsed_s = clock() - started
    return run
