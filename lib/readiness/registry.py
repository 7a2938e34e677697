"""The phase registry: every phase, in run order, with what it needs and what it changes.

One table answers three questions the runner, the gates and the phases used to answer
each on their own:

* **Which phases exist, in which order.** :data:`PHASES` is derived from :data:`REGISTRY`.
* **What a phase changes.** ``mutates`` says it in a sentence; a phase that changes
  nothing only reads, and no human approval gate stands before it.
* **What a phase, or one part of it, needs from the ecosystem.** An ecosystem declares what
  it provides in ``params.capabilities`` (a telemetry store, a payments API, an identity
  provider, the sandbox-style admin API, …). A phase whose needs are not declared is
  *not applicable*: the runner records it SKIPPED with the reason and never opens its
  notebook. Inside a phase that does run, each part (a notebook cell's library function)
  names its own needs in :data:`PARTS`; an undeclared part records SKIPPED checks instead of
  FAIL, BLOCKED or ERROR. What is declared and does not answer is a FAIL with evidence:
  declaring a thing is a claim the audit then tests.

This is the model of Lighthouse's ``requiredArtifacts``: an audit lists the artifacts it
reads, and an audit whose artifacts the page cannot provide is "not applicable", which
says something different from "failed".

The module is pure data with no imports from the rest of the library, so every layer may
read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["CAPABILITIES", "PARTS", "PHASES", "REGISTRY", "PhaseSpec", "missing", "not_applicable_reason",
           "phase_spec"]

#: What an ecosystem can declare that it provides, and what each one means.
CAPABILITIES: Mapping[str, str] = MappingProxyType({
    "telemetry_store": "a telemetry store that accepts and serves events (the app named by telemetry_app)",
    "payments": "a Stripe-compatible payments API",
    "identity_provider": "OIDC sign-in at the identity app (funnels.identity_app)",
    "idempotency_contract": "mutating routes that enforce X-Idempotency-Key / X-Trace-Id (428 without them)",
    "admin_api": "the sandbox-style admin API: feature flags, fault knobs, synthetic-data cleanup",
    "orchestration": "an orchestration loop with retries and a circuit breaker",
    "cta_bandit": "a call-to-action assignment and impression API",
    "command_center": "a command center with tiles and cards",
    "provider_portal": "a provider portal with sign-up, listings and billing",
    "marketing_site": "a marketing site with a sitemap, robots.txt and public pages",
    "guided_onboarding": "a guided first AI action for new learners",
})


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of the suite.

    ``needs``: every one of these must be declared for the phase to apply.
    ``needs_any``: at least one must be declared (a phase made of independent parts,
    each with its own needs in :data:`PARTS`). ``mutates``: what the phase changes in the
    audited ecosystem, or None when it only reads.
    """

    name: str
    title: str
    needs: tuple[str, ...] = ()
    needs_any: tuple[str, ...] = ()
    mutates: str | None = None
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]


REGISTRY: tuple[PhaseSpec, ...] = (
    PhaseSpec("00_inventory", "Inventory and the Phase 0 gate", parts={
        "enforcement": ("idempotency_contract",),
        "telemetry_burn_in": ("telemetry_store",),
        "stripe_price": ("payments",),
        "stripe_key": ("payments",),
    }),
    PhaseSpec("01_smoke", "Dual-source smoke", parts={
        "telemetry_corroboration": ("telemetry_store",),
    }),
    PhaseSpec("02_latency_profile", "Latency profiles",
              mutates="switches the fix flags on and off again; posts synthetic leads to the hot path",
              parts={"flag_comparison": ("admin_api",)}),
    PhaseSpec("03_baseline_load", "Baseline load", parts={
        "autonomy_signals": ("telemetry_store", "orchestration"),
    }),
    PhaseSpec("04_funnels", "Funnels and idempotency hardening",
              needs_any=("identity_provider", "provider_portal", "idempotency_contract"),
              mutates="signs up synthetic learners and providers, creates listings, replays idempotent writes",
              parts={"b2c": ("identity_provider",), "b2b": ("provider_portal",),
                     "hardening": ("idempotency_contract",)}),
    PhaseSpec("05_monetization", "Payments and revenue lineage", needs=("payments",),
              mutates="creates test-mode checkouts and credits; posts synthetic revenue; raises banners",
              parts={"command_center": ("command_center",)}),  # finance tiles, demo mode
    PhaseSpec("06_telemetry_contract", "Telemetry contract", needs=("telemetry_store",),
              mutates="posts tagged sample events to the telemetry ingest",
              parts={"sampling": ("cta_bandit",), "banners": ("command_center",)}),
    PhaseSpec("07_activation_growth", "Activation and growth hygiene",
              needs_any=("guided_onboarding", "marketing_site"),
              mutates="onboards synthetic learners and spends their first AI credit",
              parts={"activation": ("guided_onboarding", "identity_provider", "payments", "telemetry_store"),
                     "growth": ("marketing_site",)}),
    PhaseSpec("08_learning_autonomy", "Learning and autonomy",
              needs=("orchestration", "cta_bandit", "telemetry_store"),
              mutates="applies a learned CTA policy (under its own approval), then restores it"),
    PhaseSpec("09_resiliency", "Resiliency under injected faults", needs=("orchestration", "admin_api"),
              mutates="injects 503 faults (under its own approval) and removes them"),
    PhaseSpec("10_security_ops", "Security and operations",
              mutates="drives failed sign-ins; deletes the audit's synthetic data (namespace-tagged only)",
              parts={"cleanup": ("admin_api",), "monitoring": ("telemetry_store",),
                     "failed_logins": ("identity_provider", "admin_api")}),
    PhaseSpec("11_readiness_score", "Enterprise Readiness Score"),
)

PHASES: tuple[str, ...] = tuple(p.name for p in REGISTRY)
_BY_NAME: Mapping[str, PhaseSpec] = MappingProxyType({p.name: p for p in REGISTRY})
#: Part name → the capabilities that part needs. A part is named once in the whole suite, so
#: a part's function asks the same question whichever phase calls it (an analyst may run
#: 05's demo-mode check from a 06 notebook).
PARTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {part: needs for p in REGISTRY for part, needs in p.parts.items()})
_OWNER: Mapping[str, str] = MappingProxyType({part: p.name for p in REGISTRY for part in p.parts})
if len(PARTS) != sum(len(p.parts) for p in REGISTRY):
    raise RuntimeError("a part name is registered under two phases; part names must be unique")


def phase_spec(name: str) -> PhaseSpec:
    """The registry entry of ``name``; a KeyError names the known phases."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown phase {name!r}; known: {', '.join(PHASES)}") from None


def missing(needs: Iterable[str], provided: Iterable[str]) -> list[str]:
    """The needs that ``provided`` does not declare, in the order they were asked for."""
    have = set(provided)
    return [n for n in needs if n not in have]


def _reason(lacking: list[str], what: str) -> str:
    named = "; ".join(f"{c} ({CAPABILITIES[c]})" for c in lacking)
    return f"not applicable: {what} needs what the ecosystem does not declare in params capabilities: {named}"


def not_applicable_reason(phase: str, provided: Iterable[str], part: str | None = None) -> str | None:
    """None when the phase (or one part of it) applies; otherwise the SKIPPED reason."""
    spec = phase_spec(phase)
    have = list(provided)
    if part is not None:
        if part not in PARTS:
            raise KeyError(f"unknown part {part!r}; known: {', '.join(PARTS)}")
        lacking = missing(PARTS[part], have)
        return _reason(lacking, f"{_OWNER[part]} ({part})") if lacking else None
    lacking = missing(spec.needs, have)
    if lacking:
        return _reason(lacking, phase)
    if spec.needs_any and not any(n in have for n in spec.needs_any):
        return _reason(list(spec.needs_any), f"{phase} (any one of its parts)")
    return None
