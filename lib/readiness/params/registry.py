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

It is also the one place that names a phase: its notebook, its library package, its
check-id prefixes, the attestation claims its checks evidence, and the roles other code
looks it up by (the Go/No-Go gate, the latency profile, the score). The runner, the
gates, the attestation and the closing report read these instead of naming phases.
Adding a phase is a notebook, a phase package, one entry here and its rubric lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["CAPABILITIES", "CLAIMS", "PARTS", "PHASES", "REGISTRY", "ROLES", "RUNNER_CLAIMS", "PhaseSpec",
           "claim_phases", "claim_prefixes", "missing", "not_applicable_reason", "phase_of_check", "phase_spec",
           "phase_with", "phases_with"]

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


#: The attestation's claims, in the order the attestation states them. Which checks evidence a
#: claim is said by the phases (``PhaseSpec.claims``) and by :data:`RUNNER_CLAIMS`.
CLAIMS: Mapping[str, str] = MappingProxyType({
    "live": "Services are live and ready, confirmed by direct probes and by the telemetry store",
    "latency": "Latency SLOs hold at a low request rate, with no regression against the baseline",
    "load": "SLOs hold under baseline load and the autonomy signals reach the telemetry store",
    "funnels": "The B2C and B2B funnels work end to end",
    "hardening": "Mutating routes enforce idempotency and trace headers",
    "payments": "Payments verified in test mode, with revenue lineage to the finance tiles",
    "command_center": "Synthetic revenue stays out of live tiles and incident banners clear themselves",
    "telemetry": "The telemetry contract holds",
    "activation": "Activation and growth hygiene hold",
    "learning": "Error correction and learning are evidenced",
    "resiliency": "Resiliency verified under injected faults",
    "security": "Security and operations controls hold",
    "gates": "Changes to staging waited for a human approval, with every flag's rollback rehearsed",
})
#: Claims evidenced by checks the runner records itself (the approval gates), not by a phase.
RUNNER_CLAIMS: Mapping[str, tuple[str, ...]] = MappingProxyType({"gates": ("gate.",)})

#: What other code looks a phase up by, instead of naming it.
ROLES: Mapping[str, str] = MappingProxyType({
    "gate": "records the Go/No-Go gate; a FAIL stops the phases after it",
    "score": "computes the readiness score; runs even after a stop",
    "latency_profile": "records the latency SLO snapshot the gates and the hot-path report read",
    "telemetry_contract": "judges the telemetry contract (a8_validation_after.json)",
    "security": "records the security checks the closing report links",
    "monitoring_rules": "replays the monitoring rules the rules-change gate shows",
    "journey": "an end-to-end journey phase (e2e_results_after.json)",
    "command_center": "records command-center checks (tiles, banners, demo mode)",
})


@dataclass(frozen=True)
class PhaseSpec:
    """One phase of the suite.

    ``needs``: every one of these must be declared for the phase to apply.
    ``needs_any``: at least one must be declared (a phase made of independent parts,
    each with its own needs in :data:`PARTS`). ``mutates``: what the phase changes in the
    audited ecosystem, or None when it only reads. ``package``: the phase's library package,
    ``readiness.phases.<package>``. ``prefixes``: every check id the phase records starts with
    one of these (besides the runner's ``run.<phase>``). ``claims``: attestation claim → the
    check-id prefixes that evidence it. ``roles``: what other code finds the phase by (:data:`ROLES`).
    """

    name: str
    title: str
    package: str
    prefixes: tuple[str, ...] = ()
    claims: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    needs_any: tuple[str, ...] = ()
    mutates: str | None = None
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    roles: tuple[str, ...] = ()

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]

    @property
    def notebook(self) -> str:
        """The notebook's file name in ``notebooks/``."""
        return f"{self.name}.ipynb"

    @property
    def module(self) -> str:
        """The phase's library package."""
        return f"readiness.phases.{self.package}"


REGISTRY: tuple[PhaseSpec, ...] = (
    PhaseSpec("00_inventory", "Inventory and the Phase 0 gate", "inventory",
              prefixes=("inventory.",), claims={"live": ("inventory.",)}, roles=("gate",),
              parts={"enforcement": ("idempotency_contract",), "telemetry_burn_in": ("telemetry_store",),
                     "stripe_price": ("payments",), "stripe_key": ("payments",)}),
    PhaseSpec("01_smoke", "Dual-source smoke", "smoke",
              prefixes=("smoke.",), claims={"live": ("smoke.",)},
              parts={"telemetry_corroboration": ("telemetry_store",)}),
    PhaseSpec("02_latency_profile", "Latency profiles", "latency",
              prefixes=("latency.",), claims={"latency": ("latency.",)}, roles=("latency_profile",),
              mutates="switches the fix flags on and off again; posts synthetic leads to the hot path",
              parts={"flag_comparison": ("admin_api",)}),
    PhaseSpec("03_baseline_load", "Baseline load", "load",
              prefixes=("load.",), claims={"load": ("load.",)},
              parts={"autonomy_signals": ("telemetry_store", "orchestration")}),
    PhaseSpec("04_funnels", "Funnels and idempotency hardening", "funnels",
              prefixes=("funnels.", "hardening."), claims={"funnels": ("funnels.",), "hardening": ("hardening.",)},
              roles=("journey", "command_center"),
              needs_any=("identity_provider", "provider_portal", "idempotency_contract"),
              mutates="signs up synthetic learners and providers, creates listings, replays idempotent writes",
              parts={"b2c": ("identity_provider",), "b2b": ("provider_portal",),
                     "hardening": ("idempotency_contract",)}),
    PhaseSpec("05_monetization", "Payments and revenue lineage", "monetization",
              prefixes=("monetization.", "demo_mode."),
              claims={"payments": ("monetization.",), "command_center": ("demo_mode.",)},
              roles=("journey", "command_center"), needs=("payments",),
              mutates="creates test-mode checkouts and credits; posts synthetic revenue; raises banners",
              parts={"command_center": ("command_center",)}),  # finance tiles, demo mode
    PhaseSpec("06_telemetry_contract", "Telemetry contract", "telemetry",
              prefixes=("telemetry.", "banners."),
              claims={"command_center": ("banners.",), "telemetry": ("telemetry.",)},
              roles=("telemetry_contract", "command_center"), needs=("telemetry_store",),
              mutates="posts tagged sample events to the telemetry ingest",
              parts={"sampling": ("cta_bandit",), "banners": ("command_center",)}),
    PhaseSpec("07_activation_growth", "Activation and growth hygiene", "activation",
              prefixes=("activation.", "growth."), claims={"activation": ("activation.", "growth.")},
              roles=("journey",), needs_any=("guided_onboarding", "marketing_site"),
              mutates="onboards synthetic learners and spends their first AI credit",
              parts={"activation": ("guided_onboarding", "identity_provider", "payments", "telemetry_store"),
                     "growth": ("marketing_site",)}),
    PhaseSpec("08_learning_autonomy", "Learning and autonomy", "learning",
              prefixes=("learning.",), claims={"learning": ("learning.",)},
              needs=("orchestration", "cta_bandit", "telemetry_store"),
              mutates="applies a learned CTA policy (under its own approval), then restores it"),
    PhaseSpec("09_resiliency", "Resiliency under injected faults", "resiliency",
              prefixes=("resiliency.",), claims={"resiliency": ("resiliency.",)}, needs=("orchestration", "admin_api"),
              mutates="injects 503 faults (under its own approval) and removes them"),
    PhaseSpec("10_security_ops", "Security and operations", "security_ops",
              prefixes=("security.", "ops.", "cleanup."), claims={"security": ("security.", "ops.", "cleanup.")},
              roles=("security", "monitoring_rules"),
              mutates="drives failed sign-ins; deletes the audit's synthetic data (namespace-tagged only)",
              parts={"cleanup": ("admin_api",), "monitoring": ("telemetry_store",),
                     "failed_logins": ("identity_provider", "admin_api")}),
    PhaseSpec("11_readiness_score", "Enterprise Readiness Score", "readiness_score",
              prefixes=("closing.",), roles=("score",)),
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


def phases_with(role: str) -> tuple[str, ...]:
    """The phases that play ``role``, in run order."""
    if role not in ROLES:
        raise KeyError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
    return tuple(p.name for p in REGISTRY if role in p.roles)


def phase_with(role: str) -> str:
    """The one phase that plays ``role``."""
    found = phases_with(role)
    if len(found) != 1:
        raise LookupError(f"role {role!r} is played by {len(found)} phases, not one: {found}")
    return found[0]


def claim_phases(claim: str) -> tuple[str, ...]:
    """The phases whose checks evidence ``claim``, in run order."""
    return tuple(p.name for p in REGISTRY if claim in p.claims)


def claim_prefixes(claim: str) -> tuple[str, ...]:
    """The check-id prefixes that evidence ``claim``: the phases' and the runner's, without repeats."""
    if claim not in CLAIMS:
        raise KeyError(f"unknown claim {claim!r}; known: {', '.join(CLAIMS)}")
    found = [prefix for p in REGISTRY for prefix in p.claims.get(claim, ())]
    return tuple(dict.fromkeys([*found, *RUNNER_CLAIMS.get(claim, ())]))


def phase_of_check(check_id: str) -> str | None:
    """The phase that records checks with this id's prefix; None for an id no phase owns.

    Where two phases share a prefix (the command-center checks), the first in run order.
    """
    return next((p.name for p in REGISTRY if check_id.startswith(p.prefixes)), None)
