"""Params sections of the contract phases: funnels, header hardening, B2B, telemetry contract.

Split from :mod:`readiness.params.sections` to keep each module to one screenful of
concepts; :class:`readiness.params.model.Params` is still the single model that composes them,
and cross-references to apps and secrets are checked there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from readiness.params.sections import Currency, StrictModel, UrlPath

TELEMETRY_REQUIRED_EVENTS = (
    "identity_ok", "page_build_requested", "page_published", "bandit_config", "cta_emitted", "cta_impression",
    "checkout_completed", "provider_registered", "provider_listing_published", "revenue_settled",
    "credit_decrement", "activation_first_use",
)
TELEMETRY_CONTRACT_FIELDS = ("timestamp", "app_id", "route", "status", "p95_ms", "trace_id", "idempotency_key",
                             "finance_metrics", "revenue_event_id")


def _event_names(names: list[str]) -> list[str]:
    """Event type names: lower-case words joined by '_', unique, never the placeholder 'unknown'."""
    bad = [n for n in names if not n or not n.replace("_", "").isalnum() or not n[0].isalpha() or n != n.lower()]
    if bad:
        raise ValueError(f"event types must be lower-case words joined by '_', got {bad}")
    if "unknown" in names:
        raise ValueError("'unknown' is not an event type (it hides a wiring bug)")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate event types {dupes}")
    return names



def attribution_keys(v: dict[str, str]) -> dict[str, str]:
    """Landing-link attribution: only ``utm_*`` keys and ``ref`` (what the apps record)."""
    bad = sorted(k for k in v if not (k.startswith("utm_") or k == "ref"))
    if bad:
        raise ValueError(f"attribution keys must start with 'utm_' or be 'ref', got {bad}")
    return v


def exact_selectors(v: dict[str, str], names: tuple[str, ...] | list[str]) -> dict[str, str]:
    """A browser journey's selectors: exactly the steps it drives, none empty, none unknown."""
    missing = [k for k in names if not v.get(k)]
    unknown = sorted(set(v) - set(names))
    if missing or unknown:
        raise ValueError(f"selectors must name exactly {', '.join(names)} (missing {missing}, unknown {unknown})")
    return v

class TelemetryContract(StrictModel):
    """The telemetry contract (docs/phases.md#06-telemetry-contract): which events must arrive with which fields, how they
    may be sampled at the source, and how many probes the sampling and dedupe checks send.

    ``sampling_share_margin`` is the deviation from ``sampling_success_rate`` that matters:
    the sampling check is an equivalence test that PASSes when the arrival share is shown
    to lie within ``rate ± margin`` and FAILs only when it is shown to lie outside. With the
    defaults (10% ± 5 points, 400 probes) a policy sampling exactly 10% passes about 90% of
    the time; a leak (every success kept) or a broken sampler (none kept) FAILs.
    """

    required_events: list[str] = Field(default_factory=lambda: list(TELEMETRY_REQUIRED_EVENTS), min_length=1)
    contract_fields: list[str] = Field(default_factory=lambda: list(TELEMETRY_CONTRACT_FIELDS), min_length=1)
    finance_events: list[str] = Field(default_factory=lambda: ["checkout_completed", "revenue_settled"])
    high_volume_events: list[str] = Field(default_factory=lambda: ["cta_impression"], min_length=1)
    sampling_success_rate: float = Field(default=0.10, gt=0, le=1)
    sampling_share_margin: float = Field(default=0.05, gt=0, lt=1)
    sampling_probe_events: int = Field(default=400, ge=1, le=100_000)
    error_probe_events: int = Field(default=400, ge=1, le=100_000)
    burn_in_probe_events: int = Field(default=20, ge=0, le=10_000)
    dedupe_probe_pairs: int = Field(default=20, ge=1, le=1_000)
    probe_app: str = "A7"
    impression_path: UrlPath = "/api/cta/impressions"
    impression_body: dict[str, str] = Field(default_factory=lambda: {"arm_id": "signup_hero", "page": "/pricing"})
    error_field: str = Field(default="error", min_length=1)  # body field that turns an impression into an error
    drive_concurrency: int = Field(default=8, ge=1, le=64)
    arrival_quantile: float = Field(default=0.99, gt=0, lt=1)
    poll_interval_s: float = Field(default=0.5, gt=0, le=10)
    # Which phase of the suite drives the flow behind each event. A required event that is
    # missing while its producer did not run in this run (a run of selected phases) is
    # INCONCLUSIVE, not a wiring FAIL; events that arrive anyway are validated all the same.
    producers: dict[str, str] = Field(default_factory=lambda: {
        "identity_ok": "04_funnels", "page_build_requested": "04_funnels", "page_published": "04_funnels",
        "bandit_config": "04_funnels", "cta_emitted": "04_funnels", "cta_impression": "06_telemetry_contract",
        "checkout_completed": "05_monetization", "revenue_settled": "05_monetization",
        "provider_registered": "04_funnels", "provider_listing_published": "04_funnels",
        "credit_decrement": "07_activation_growth", "activation_first_use": "07_activation_growth"})

    @field_validator("required_events")
    @classmethod
    def _required(cls, v: list[str]) -> list[str]:
        return _event_names(v)

    @field_validator("finance_events")
    @classmethod
    def _finance(cls, v: list[str]) -> list[str]:
        return _event_names(v)

    @field_validator("high_volume_events")
    @classmethod
    def _high_volume(cls, v: list[str]) -> list[str]:
        return _event_names(v)

    @field_validator("contract_fields")
    @classmethod
    def _fields(cls, v: list[str]) -> list[str]:
        unknown = [f for f in v if f not in TELEMETRY_CONTRACT_FIELDS]
        if unknown:
            raise ValueError(f"unknown contract fields {unknown} (known: {', '.join(TELEMETRY_CONTRACT_FIELDS)})")
        if len(set(v)) != len(v):
            raise ValueError("duplicate contract fields")
        return v


    @model_validator(mode="after")
    def _consistent(self) -> TelemetryContract:
        stray = [e for e in self.finance_events if e not in self.required_events]
        if stray:
            raise ValueError(f"finance_events {stray} are not in required_events")
        both = sorted(set(self.finance_events) & set(self.high_volume_events))
        if both:
            raise ValueError(f"high_volume_events: finance events are never sampled, got {both}")
        return self


_MUTATING = Literal["POST", "PUT", "PATCH", "DELETE"]


class HardeningRoute(StrictModel):
    """A mutating route whose header and idempotency contract Phase 04 audits.

    String values of ``body``/``alt_body`` may hold ``{uid}`` (unique per audited rule),
    ``{key}`` (that rule's idempotency key), ``{identity}`` (the synthetic identity the
    request is sent as) and ``{now}`` (its start, ISO-8601 UTC), so a
    body stays the same across a rule's requests yet never collides with an earlier run.
    ``alt_body`` is another *valid* request to the route (the same key with it must be a
    422). ``effect_event`` is the telemetry event each side effect emits carrying the
    request's idempotency key: without it, rules that must count side effects are
    INCONCLUSIVE. ``identity`` names one of ``synthetic.identities``.
    """

    app: str
    method: _MUTATING = "POST"
    path: UrlPath
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    body: dict[str, object]
    alt_body: dict[str, object] | None = None
    effect_event: str | None = Field(default=None, min_length=1)
    identity: str = "student"


    @model_validator(mode="after")
    def _distinct_alt(self) -> HardeningRoute:
        if self.alt_body is not None and self.alt_body == self.body:
            raise ValueError("alt_body must differ from body (it is the 'different payload' of the same key)")
        return self

    @property
    def label(self) -> str:
        """The route's token in check ids: ``name``, else the path without ``/api/`` (``checkout_sessions``)."""
        if self.name:
            return self.name
        parts = [p for p in self.path.removeprefix("/api/").split("/") if p and not p.startswith("{")]
        return "_".join(parts).replace("-", "_").replace(".", "_") or "root"


class Hardening(StrictModel):
    """Phase 04 header hardening: the routes audited and how hard the audit pushes.

    ``hold_ms`` asks the sandbox to hold a route's key that long while it works
    (``X-Sandbox-Hold-Ms``), so two concurrent duplicates overlap; an external target
    gets no hold. ``settle_s`` is waited after the last request before side effects are
    counted, so a late duplicate effect is still seen.
    """

    routes: list[HardeningRoute] = Field(default_factory=list)
    concurrency_attempts: int = Field(default=3, ge=1, le=20)
    hold_ms: float = Field(default=300, ge=0, le=10_000)
    settle_s: float = Field(default=2.0, ge=0, le=120)
    check_expiry: bool = True
    expiry_margin_s: float = Field(default=1.0, ge=0, le=600)

    @field_validator("routes")
    @classmethod
    def _unique_labels(cls, routes: list[HardeningRoute]) -> list[HardeningRoute]:
        labels = [f"{r.app}.{r.label}" for r in routes]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate route labels {dupes}; give each a distinct name")
        return routes


class B2B(StrictModel):
    """Phase 04 B2B funnel (k6): N provider journeys A7 landing → A6 signup → listing → billing.

    ``fee_pct`` and ``ai_markup_x`` are the billing rules the audit recomputes (exact
    decimal cents); ``base_costs_cents`` are the AI usage amounts billed, used in turn.
    """

    provider_signups: int = Field(default=40, ge=1, le=10_000)  # a PASS at 90% needs n >= 29
    vus: int = Field(default=4, ge=1, le=60)
    max_duration_s: float = Field(default=120, gt=0, le=3600)
    fee_pct: float = Field(default=3, ge=0, lt=100)
    ai_markup_x: float = Field(default=4, ge=1, le=100)
    base_costs_cents: list[int] = Field(default_factory=lambda: [1234, 37, 999, 5], min_length=1)
    currency: Currency = "usd"
    landing_app: str = "A7"
    landing_path: UrlPath = "/for-providers"
    portal_app: str = "A6"
    register_path: UrlPath = "/api/providers"
    listing_path: UrlPath = "/api/listings"
    billing_path: UrlPath = "/api/billing/usage"
    billing_event: str = Field(default="provider_usage_billed", min_length=1)
    tile_id: str = "b2b_billing"

    @field_validator("base_costs_cents")
    @classmethod
    def _costs(cls, v: list[int]) -> list[int]:
        bad = [c for c in v if c < 1 or c > 100_000_000]
        if bad:
            raise ValueError(f"base costs must be integers between 1 and 100000000 cents, got {bad}")
        return v



B2C_SELECTORS = ("cta", "email", "name", "password", "signup", "checkout", "first_page", "error")
_COOKIE_NAME = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"  # an RFC 6265 cookie-name token


class SessionCookie(StrictModel):
    """A session cookie an app must set with ``SameSite=None; Secure; HttpOnly`` and an aligned
    lifetime and domain. ``domain`` None means host-only (no Domain, or the app's own host)."""

    app: str
    name: str = Field(pattern=_COOKIE_NAME)
    ttl_s: int = Field(gt=0, le=400 * 86_400)
    domain: str | None = None


class Funnels(StrictModel):
    """Phase 04 B2C funnel (docs/phases.md#04-funnels): synthetic sign-ups driven in Chromium, landing → identity →
    checkout → first page, plus the OIDC and cookie checks along the way.

    ``oidc_client_secret`` is the *name* of the secret holding the client secret (the value is
    read from the environment in memory only). ``selectors`` are CSS selectors of the pages
    the browser drives; the defaults match the bundled sandbox.
    """

    b2c_signups: int = Field(default=10, ge=1, le=200)
    concurrency: int = Field(default=2, ge=1, le=8)  # browser contexts driven at once
    landing_app: str = "A7"
    landing_path: UrlPath = "/get-started"
    identity_app: str = "A1"
    student_app: str = "A2"
    callback_path: UrlPath = "/oauth2/callback"
    first_page_path: UrlPath = "/onboarding/first-page"
    profile_path: UrlPath = "/api/me"  # on the student app: the signed-in learner, with the attribution stored
    oidc_client_id: str = Field(default="sandbox-student-app", min_length=1)
    oidc_client_secret: str = "OIDC_CLIENT_SECRET"
    oidc_scope: str = "openid email profile"
    id_token_algorithms: list[str] = Field(default_factory=lambda: ["RS256"], min_length=1)
    id_token_leeway_s: int = Field(default=60, ge=0, le=600)
    utm: dict[str, str] = Field(default_factory=lambda: {"utm_source": "readiness_audit", "utm_medium": "synthetic",
                                                         "utm_campaign": "b2c_funnel"})
    session_cookies: list[SessionCookie] = Field(default_factory=lambda: [
        SessionCookie(app="A1", name="a1_session", ttl_s=3600), SessionCookie(app="A2", name="a2_session", ttl_s=3600)])
    selectors: dict[str, str] = Field(default_factory=lambda: {
        "cta": "[data-testid=signup-cta]", "email": "#email", "name": "#name", "password": "#password",
        "signup": "#signup", "checkout": "#checkout-button", "first_page": "[data-testid=first-page]",
        "error": "#error"})
    step_timeout_s: float = Field(default=15, gt=0, le=300)
    tile_id: str = "growth_signups"
    tile_poll_s: float = Field(default=0.5, gt=0, le=10)


    @field_validator("oidc_client_secret")
    @classmethod
    def _secret_name(cls, v: str) -> str:
        if not v or not v.replace("_", "").isalnum() or v[0].isdigit():
            raise ValueError(f"must be the name of an environment variable, got {v!r}")
        return v

    @field_validator("id_token_algorithms")
    @classmethod
    def _algorithms(cls, v: list[str]) -> list[str]:
        if any(a.lower() == "none" for a in v):
            raise ValueError("'none' is not an acceptable id token algorithm")
        return v

    @field_validator("utm")
    @classmethod
    def _utm(cls, v: dict[str, str]) -> dict[str, str]:
        return attribution_keys(v)

    @field_validator("selectors")
    @classmethod
    def _selectors(cls, v: dict[str, str]) -> dict[str, str]:
        return exact_selectors(v, B2C_SELECTORS)

    @model_validator(mode="after")
    def _unique_cookies(self) -> Funnels:
        pairs = [(c.app, c.name) for c in self.session_cookies]
        dupes = sorted({f"{a}:{n}" for a, n in pairs if pairs.count((a, n)) > 1})
        if dupes:
            raise ValueError(f"session_cookies: listed twice: {', '.join(dupes)}")
        return self
