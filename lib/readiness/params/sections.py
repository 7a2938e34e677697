"""Sections of the params model (thresholds, windows, identities, approvals, tooling).

Split from :mod:`readiness.params.model` only to keep each module to one screenful of concepts;
:class:`readiness.params.model.Params` is still the single model that composes them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

SANDBOX_FLAGS = ("a2_readiness", "a7_async_leads", "a8_banner_ttl", "a8_demo_mode")
SANDBOX_APP_IDS = tuple(f"A{i}" for i in range(1, 9))
RESTRICTED_ACTIONS = (
    "load_over_60_vus",
    "fault_injection_503",
    "production_write",
    "oidc_cookie_policy_change",
    "secret_rotation",
    "stripe_live_charge",
    "bandit_policy_change",
    "gate_1_staging_mutation",  # the run may go past Gate 1: phases that change staging (docs/phases.md#guardrails)
    "gate_2_production_action",  # the run may go past Gate 2: phases that act on production
)

#: Active ISO 4217 alphabetic codes (list one: currencies, funds and precious metals), kept
#: here as data so validation needs no network and no extra package. Source: the ISO 4217
#: list as maintained by Debian's iso-codes, with the 2023–2024 amendments applied (HRK and
#: ZWL withdrawn; ZWG and XCG added). ANG, CUC and SLL are being phased out but stay: a
#: payment account may still hold them, and refusing one would block a real audit for no
#: gain. XTS (testing) and XXX (no currency) are left out: nothing can be priced in them.
ISO_4217_CODES: frozenset[str] = frozenset("""
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN
    BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
    KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV
    MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG
    SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN
    UYI UYU UYW UZS VED VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU
    XUA YER ZAR ZMW ZWG
""".split())


def _url_path(v: str) -> str:
    if not v.startswith("/"):
        raise ValueError(f"path must start with '/', got {v!r}")
    return v


#: A path on an app ("/api/x"): the one rule every path field of the params shares.
UrlPath = Annotated[str, AfterValidator(_url_path)]


def http_url(v: str) -> str:
    """An http(s) URL of a service (``scheme://host[:port][/prefix]``), without a trailing '/'.

    One rule for every base URL of the params (apps, a Stripe-compatible API): a URL that
    would only fail at the first request is refused while the file is being validated.
    """
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {v!r}: expected http(s)://host[:port]")
    try:
        _ = parts.port  # urlsplit validates the port lazily
    except ValueError:
        raise ValueError(f"invalid URL {v!r}: bad port") from None
    if parts.query or parts.fragment:
        raise ValueError(f"invalid URL {v!r}: a base URL has no query or fragment")
    return v.rstrip("/")


#: An http(s) base URL (see :func:`http_url`).
HttpUrl = Annotated[str, AfterValidator(http_url)]


def _currency(v: str) -> str:
    """Lower case, as Stripe writes currencies, so that comparisons with its answers are exact."""
    if v.upper() not in ISO_4217_CODES:
        raise ValueError(f"{v!r} is not an ISO 4217 currency code (three letters, e.g. usd, eur, gbp)")
    return v.lower()


#: A currency: an ISO 4217 alphabetic code in any case, normalised to lower case.
Currency = Annotated[str, AfterValidator(_currency)]


class StrictModel(BaseModel):
    """Base of every configuration model: unknown keys are errors (a typo must not fall back
    to a default silently) and values are immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(StrictModel):
    """Global pass/fail thresholds (docs/phases.md#verdicts). Per-app SLOs override ``p95_ms``."""

    p95_ms: float = Field(default=120, gt=0)
    error_rate_max: float = Field(default=0.01, gt=0, lt=1)
    success_rate_min: float = Field(default=0.95, gt=0, lt=1)
    funnel_success_min: float = Field(default=0.90, gt=0, lt=1)
    hot_path_p95_ms: float = Field(default=150, gt=0)
    load_flag_p95_ms: float = Field(default=150, gt=0)
    stop_p95_ms: float = Field(default=200, gt=0)
    regression_max_pct: float = Field(default=20, gt=0)
    regression_min_ms: float = Field(default=10, ge=0)
    telemetry_acceptance_min: float = Field(default=0.99, gt=0, lt=1)
    telemetry_arrival_s: float = Field(default=60, gt=0)
    ttfv_s: float = Field(default=300, gt=0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    agreement_min: float = Field(default=0.95, gt=0, lt=1)


class Design(StrictModel):
    """What a good system looks like, so that sample sizes can be planned (docs/statistics.md).

    A check that only a perfect record can pass fails good systems by chance. Each family of
    statistical checks therefore declares its *design point*: the true value of a system that
    should pass, as a share of what the threshold allows. The planner
    (:mod:`readiness.stats.design`) sizes n so that a system at the design point PASSes
    with probability at least 1 − ``beta_level`` / ``checks_per_level``, and so that a rubric
    level of that many checks is blocked by chance at most ``beta_level`` of the time.
    """

    #: The chance that a rubric level of good checks is blocked by chance, at most.
    beta_level: float = Field(default=0.10, gt=0, lt=1)
    #: m: the number of statistical checks one rubric level holds (the largest level counts).
    checks_per_level: int = Field(default=64, ge=1, le=10_000)
    #: Good: failures at this share of what a success target allows (0.2: 99% against 95%).
    success_allowance_share: float = Field(default=0.2, gt=0, lt=1)
    #: Good: errors at this share of the maximum (0.25: 0.25% against 1%).
    error_allowance_share: float = Field(default=0.25, gt=0, lt=1)
    #: Good: requests above a Pq threshold at this share of 1 − q (0.2: 1% above a P95 threshold).
    latency_allowance_share: float = Field(default=0.2, gt=0, lt=1)
    #: The before/after regression a gating comparison must detect with 80% power (×1.44:
    #: +20% on top of the +20% allowance).
    regression_detect_ratio: float = Field(default=1.44, gt=1)


class WindowSet(StrictModel):
    """Durations in seconds. All must be > 0: a zero window would make stability vacuous."""

    stable_window_s: float = Field(gt=0)
    burn_in_s: float = Field(gt=0)
    dedupe_s: float = Field(gt=0)
    sustained_s: float = Field(gt=0)


def _human(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


class Windows(StrictModel):
    """Time windows. ``full`` is the reference; ``quick`` compresses them for the sandbox.

    The quick profile exists so that the whole suite runs end to end in minutes; its
    verdicts are real but over seconds-long windows, so every report says so (:meth:`note`).
    """

    profile: Literal["full", "quick"] = "full"
    full: WindowSet = WindowSet(stable_window_s=900, burn_in_s=900, dedupe_s=900, sustained_s=300)
    quick: WindowSet = WindowSet(stable_window_s=20, burn_in_s=5, dedupe_s=30, sustained_s=10)

    @property
    def active(self) -> WindowSet:
        return self.quick if self.profile == "quick" else self.full

    def note(self) -> str:
        full, quick = self.full, self.quick
        if self.profile == "full":
            return (f"Full profile: stable window {_human(full.stable_window_s)}, burn-in {_human(full.burn_in_s)}, "
                    f"dedupe window {_human(full.dedupe_s)}, sustained-breach window {_human(full.sustained_s)}.")
        pairs = [("stable window", quick.stable_window_s, full.stable_window_s),
                 ("burn-in", quick.burn_in_s, full.burn_in_s),
                 ("dedupe window", quick.dedupe_s, full.dedupe_s),
                 ("sustained-breach window", quick.sustained_s, full.sustained_s)]
        body = ", ".join(f"{name} {_human(q)} (full: {_human(f)})" for name, q, f in pairs)
        return (f"Quick profile: windows are compressed to seconds — {body}. "
                "Verdicts hold over these short windows only; they are not evidence of stability over the full windows.")


class Synthetic(StrictModel):
    """Known synthetic identities and the tags every synthetic event carries (docs/phases.md#targets-and-environments)."""

    identities: dict[str, str] = {"student": "test_student_e2e_01", "provider": "test_provider_e2e_01"}
    tags: dict[str, str] = {"test_run": "true", "source": "qa", "namespace": "simulated_audit"}

    @field_validator("tags")
    @classmethod
    def _required_tags(cls, v: dict[str, str]) -> dict[str, str]:
        if v.get("test_run") != "true" or v.get("source") != "qa":
            raise ValueError("synthetic tags must include test_run: 'true' and source: 'qa'")
        return v


class Secrets(StrictModel):
    """Names of secrets (environment variables). Values are never read into reports."""

    names: list[str] = ["STRIPE_PUBLISHABLE_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET",
                        "OIDC_CLIENT_SECRET", "A8_TELEMETRY_KEY"]
    required: list[str] = ["STRIPE_SECRET_KEY"]

    @field_validator("names")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not n or not n.replace("_", "").isalnum() or n[0].isdigit()]
        if bad:
            raise ValueError(f"secret names must be environment variable names, got {bad}")
        return v

    @model_validator(mode="after")
    def _required_subset(self) -> Secrets:
        extra = [n for n in self.required if n not in self.names]
        if extra:
            raise ValueError(f"secrets.required lists names not in secrets.names: {extra}")
        return self


class Approval(StrictModel):
    """A human approval for a restricted action (docs/phases.md#guardrails), with its scope."""

    id: str = Field(min_length=3)
    action: Literal[RESTRICTED_ACTIONS]  # type: ignore[valid-type]
    scope: str = Field(min_length=1)
    granted_by: str = Field(min_length=1)
    environment: Literal["staging", "prod", "any"] = "staging"
    apps: list[str] = Field(default_factory=list)
    max_vus: int | None = Field(default=None, gt=0)
    cycles: int | None = Field(default=None, gt=0)  # e.g. fault-injection cycles the approval allows
    expires: dt.date | None = None


class PrLink(StrictModel):
    """A change under review that the Gate 1 approval covers (a pull request or a patch)."""

    title: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith(("https://", "http://")) or v.startswith(("patches/", "./", "../"))):
            raise ValueError("must be an http(s) URL or a relative patch path (patches/…, ./…, ../…)")
        return v


class Release(StrictModel):
    """What the human approval gates bundle: the changes the Gate 1 approval is asked for."""

    pr_links: list[PrLink] = Field(default_factory=list, max_length=100)


class Smoke(StrictModel):
    """Dual-source smoke sampling (docs/phases.md#01-smoke)."""

    #: The most probes per app this profile affords over the stable window; the run takes fewer
    #: when the design point of the error-rate check needs fewer (:mod:`readiness.core.sizing`).
    samples_per_app: int = Field(default=400, ge=1, le=100_000)
    stable_slices: int = Field(default=2, ge=2, le=60)


class FlagComparison(StrictModel):
    """A route profiled with a sandbox flag OFF (the run's state), then ON, then OFF again."""

    flag: str
    app: str
    route: str  # the name of one of the app's critical routes

    @field_validator("flag")
    @classmethod
    def _flag(cls, v: str) -> str:
        if v not in SANDBOX_FLAGS:
            raise ValueError(f"unknown sandbox flag {v!r} (known: {', '.join(SANDBOX_FLAGS)})")
        return v


class Latency(StrictModel):
    """Latency profiling (docs/phases.md#02-latency-profile): >= 200 samples per critical endpoint."""

    #: The most samples per endpoint and mode this profile affords; the run takes fewer when
    #: the design point needs fewer (:mod:`readiness.core.sizing`).
    samples_per_endpoint: int = Field(default=200, ge=1, le=1_000_000)
    qps: float = Field(default=2.0, gt=0)  # per endpoint; at most http.max_qps
    modes: list[Literal["warm", "cold"]] = Field(default_factory=lambda: ["warm", "cold"], min_length=1)
    rollback_samples: int = Field(default=60, ge=1, le=100_000)
    #: The profile runs in this many blocks, the modes alternating within each, so that one
    #: host state (a GC pause, a noisy neighbour) does not land on one mode's whole series.
    interleave_blocks: int = Field(default=4, ge=1, le=100)
    histogram_bins: int = Field(default=50, ge=5, le=200)
    compare_flags: list[FlagComparison] = Field(default_factory=list)


class EnforcementRoute(StrictModel):
    app: str
    method: Literal["POST", "PUT", "PATCH", "DELETE"] = "POST"
    path: str


class Gate(StrictModel):
    """Phase 0 Go/No-Go gate settings."""

    enforcement_routes: list[EnforcementRoute] = Field(default_factory=list)
    burn_in_events: int = Field(default=400, ge=1, le=100_000)


class Stripe(StrictModel):
    """The micro price resolved or created in Phase 00/05, and where the Stripe API is.

    ``api_base`` is the http(s) URL of a Stripe-compatible API (localstripe on loopback,
    a company's Stripe proxy). None means Stripe's public API for an external target and
    the sandbox's own local Stripe for the sandbox. Whether the ecosystem takes payments
    at all is the ``payments`` capability, not a setting here.
    """

    price_id_micro_sku: str = "AUTO_RESOLVE_OR_CREATE"
    micro_amount_cents: int = Field(default=50, ge=50)
    currency: Currency = "usd"
    product_name: str = "Micro QA Charge"
    lookup_key: str = "micro_qa_charge"
    api_base: HttpUrl | None = None


class HttpLimits(StrictModel):
    """Timeouts and caps of the guarded client, plus the rate ceiling for probers.

    ``max_qps`` is the most requests per second the quiet phases (smoke, latency
    profiling) may send to one endpoint; a phase configured above it is refused.
    """

    connect_timeout_s: float = Field(default=2.0, gt=0)
    read_timeout_s: float = Field(default=5.0, gt=0)
    total_timeout_s: float = Field(default=10.0, gt=0)
    max_response_bytes: int = Field(default=1_048_576, gt=0)
    max_qps: float = Field(default=2.0, gt=0)




class Sandbox(StrictModel):
    """Settings of the bundled reference ecosystem (used when ``target: sandbox``).

    ``flags`` is the state every run starts from: the runner resets the sandbox's flags to
    it and clears its fault knobs, so that an earlier session cannot leak into a verdict.
    """

    state_dir: str | None = None
    startup_timeout_s: float = Field(default=10, gt=0)
    flags: dict[str, bool] = dict.fromkeys(SANDBOX_FLAGS, False)
    provides_secrets: list[str] = ["STRIPE_PUBLISHABLE_KEY", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET",
                                   "OIDC_CLIENT_SECRET", "A8_TELEMETRY_KEY"]

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, v: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(v) - set(SANDBOX_FLAGS))
        if unknown:
            raise ValueError(f"unknown sandbox flags {unknown} (known: {', '.join(SANDBOX_FLAGS)})")
        return {**dict.fromkeys(SANDBOX_FLAGS, False), **v}


class Security(StrictModel):
    """Security and ops checks (``10_security_ops``): what to scan and which endpoints to probe.

    ``scan_paths`` are files or folders of source to scan for hard-coded secrets; relative
    ones resolve against the params file's folder, and each must exist when the params are
    validated (:meth:`readiness.params.model.Params.scan_roots` is the one place that resolves
    them). None (the default) means the suite's own sources on the sandbox target and
    nothing on an external one, whose code is not on this machine unless named here.
    ``admin_paths`` must answer 401/403 without credentials on every app;
    ``cors_probe_origin`` is an origin no app may reflect.
    """

    scan_paths: list[Annotated[str, Field(min_length=1)]] | None = None
    scan_exclude: list[str] = Field(default_factory=lambda: [r"\.venv/", r"__pycache__/", r"tests/"])
    admin_paths: list[UrlPath] = Field(default_factory=lambda: ["/admin/faults", "/admin/flags"])
    cors_probe_origin: str = "https://cors-probe.invalid"
    tls_min_days_left: int = Field(default=14, ge=0, le=3650)


class Attestation(StrictModel):
    """The signed "live and autonomous" attestation: where its Ed25519 key comes from.

    ``key_env`` names an environment variable holding a PEM (PKCS#8) Ed25519 private key;
    when it is unset the run makes a key of its own, signs with it, writes the public half
    beside the signature and never writes the private half.
    """

    key_env: str | None = "READINESS_ATTESTATION_KEY"
