"""Params sections of the load and autonomy phases: baseline load, learning, resiliency.

Split from :mod:`readiness.params.sections` like :mod:`readiness.params.contracts`;
:class:`readiness.params.model.Params` composes them and checks their references to apps.
Every load or fault loop these sections drive is bounded twice: in count (requests,
cycles, visits) and in time (``max_duration_s``-style ceilings).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from readiness.params.sections import StrictModel, UrlPath

AUTONOMY_SIGNALS = ("run_progress", "cta_emitted", "page_published", "orchestration_cycle_complete")
MAX_UNAPPROVED_VUS = 60  # docs/phases.md#guardrails: more virtual users than this needs a load_over_60_vus approval
MAX_PHASE_CONCURRENCY = 20  # docs/phases.md#03-baseline-load and #09-resiliency: concurrency <= 20


class VuScenario(StrictModel):
    """The closed-model scenario: a fixed number of virtual users looping for a while."""

    vus: int = Field(default=10, ge=1, le=1_000)
    duration_s: float = Field(default=10, ge=1, le=3_600)  # k6 runs no scenario shorter than 1 s


class Load(StrictModel):
    """Phase 03 baseline load with k6 (``03_baseline_load``).

    ``rate_per_s`` iterations per second (one request each, spread over the apps'
    critical GET routes) in a constant-arrival-rate scenario whose VU pool is ``vus``;
    then the ``vu_scenario``. ``vus`` and ``vu_scenario.vus`` above 60 need a
    ``load_over_60_vus`` approval; the phase itself never exceeds ``max_concurrency``
    unless approved. ``thresholds`` are k6 threshold expressions per metric, passed to
    k6 verbatim (its summary export marks a crossed one ``true``; exit code 99).
    ``segments`` > 1 runs the arrival-rate scenario as that many k6 execution segments
    in as many local processes, and merges their raw points.
    """

    rate_per_s: float = Field(default=40, gt=0, le=10_000)
    duration_s: float = Field(default=20, ge=1, le=3_600)  # k6 runs no scenario shorter than 1 s
    vus: int = Field(default=20, ge=1, le=1_000)
    max_concurrency: int = Field(default=MAX_PHASE_CONCURRENCY, ge=1, le=1_000)
    vu_scenario: VuScenario = Field(default_factory=VuScenario)
    thresholds: dict[str, list[str]] = Field(default_factory=lambda: {
        "http_req_failed": ["rate<0.01"], "http_req_duration": ["p(95)<150"]})
    segments: int = Field(default=1, ge=1, le=32)
    apps: list[str] = Field(default_factory=list)  # empty: every app's critical GET routes
    autonomy_app: str = "A3"
    autonomy_signals: list[str] = Field(default_factory=lambda: list(AUTONOMY_SIGNALS), min_length=1)
    stop_poll_s: float = Field(default=1.0, gt=0, le=60)  # how often the stop conditions are evaluated
    grace_s: float = Field(default=30, gt=0, le=600)  # extra time k6 may take beyond the scenarios

    @model_validator(mode="after")
    def _bounded(self) -> Load:
        if self.vus > self.max_concurrency or self.vu_scenario.vus > self.max_concurrency:
            raise ValueError(f"vus ({self.vus}) and vu_scenario.vus ({self.vu_scenario.vus}) must be "
                             f"<= max_concurrency ({self.max_concurrency})")
        return self

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        empty = [m for m, exprs in v.items() if not exprs or any(not e.strip() for e in exprs)]
        if empty:
            raise ValueError(f"thresholds of {empty} must be non-empty k6 expressions such as 'p(95)<150'")
        return v


class CycleSeconds(StrictModel):
    """How long one fault cycle lasts per window profile (full profile: 2 min; the quick profile: seconds)."""

    full: float = Field(default=120, gt=0, le=3_600)
    quick: float = Field(default=6, gt=0, le=3_600)


class Resiliency(StrictModel):
    """Phase 09 fault injection (``09_resiliency``), run only under a ``fault_injection_503`` approval.

    503s are injected into ``upstream_app`` (the service ``app`` depends on) for
    ``cycles`` cycles of ``cycle_s`` each, separated by ``recovery_s``, while
    ``concurrency`` workers (<= 20) call ``app``'s ``route`` at ``rate_per_s``.
    """

    app: str = "A3"
    upstream_app: str = "A4"
    route: UrlPath = "/api/pages/preview"
    cycles: int = Field(default=3, ge=1, le=10)
    cycle_s: CycleSeconds = Field(default_factory=CycleSeconds)
    recovery_s: float = Field(default=8, gt=0, le=1_800)  # after each cycle: time allowed to heal
    steady_state_s: float = Field(default=5, gt=0, le=1_800)  # measured before and after the experiment
    concurrency: int = Field(default=10, ge=1, le=MAX_PHASE_CONCURRENCY)
    rate_per_s: float = Field(default=20, gt=0, le=1_000)
    breaker_event: str = "breaker_transition"  # telemetry event of the target's circuit breaker
    max_time_to_open_s: float = Field(default=10, gt=0)
    max_time_to_recover_s: float = Field(default=15, gt=0)
    # a shed answer skips the upstream, so it must come back well inside one upstream timeout
    # (it may include a retry wait when the breaker opened between two attempts)
    max_shed_p95_ms: float = Field(default=250, gt=0)
    # auto-heal: success after recovery may be lower than before the faults by at most this
    # much (a non-inferiority test of the two rates, one-sided α 5%)
    auto_heal_margin: float = Field(default=0.05, gt=0, lt=1)


class Reward(StrictModel):
    """Bandit reward = Σ weight × outcome count of an impression (docs/phases.md#08-learning-and-autonomy)."""

    page_view: float = 0.05
    lead: float = 0.3
    checkout: float = 0.65
    complaint: float = -0.4


class Learning(StrictModel):
    """Phase 08 learning and autonomy (``08_learning_autonomy``).

    Error correction is read from ``retry_app``'s telemetry over ``lookback_s`` (waiting
    up to ``observe_max_s`` for ``min_retry_gaps``); the bandit learns from the CTA
    impressions ``cta_app`` logged with their propensities. In the sandbox the phase
    first drives ``simulate_visits`` visits through the app's bounded admin simulator.
    """

    retry_app: str = "A3"
    lookback_s: float = Field(default=900, gt=0, le=86_400)
    observe_max_s: float = Field(default=60, gt=0, le=3_600)
    min_retry_gaps: int = Field(default=20, ge=5, le=100_000)
    cta_app: str = "A7"
    reward: Reward = Field(default_factory=Reward)
    simulate_visits: int = Field(default=3_000, ge=0, le=50_000)
    allocation_visits: int = Field(default=2_000, ge=0, le=50_000)  # visits observed after a policy is applied
    exploration_rate: float = Field(default=0.1, ge=0, le=1)
    posterior_draws: int = Field(default=20_000, ge=1_000, le=1_000_000)
    seed: int = 20_240_501
    apply_policy: Literal["never", "if_approved"] = "if_approved"
    restore_policy: bool = True  # put the previous policy back after observing the new one
