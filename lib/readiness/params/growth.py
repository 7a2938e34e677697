"""Params sections of Phase 07 (``07_activation_growth``): activation and web hygiene.

Split from :mod:`readiness.params.sections` like :mod:`readiness.params.autonomy`;
:class:`readiness.params.model.Params` composes them as ``activation`` and ``growth``.

``activation`` drives synthetic learners through the B2C path of ``funnels`` (same apps,
same selectors for the shared steps) and on through the student app's guided onboarding
to the first AI action; the time-to-first-value target itself is
``thresholds.ttfv_s`` (one number, used wherever TTFV is judged). ``growth`` names the
marketing app whose public pages are audited and the marker of its analytics tag.
"""

from __future__ import annotations

import soupsieve
from pydantic import Field, field_validator

from readiness.params.contracts import attribution_keys, exact_selectors
from readiness.params.sections import StrictModel, UrlPath

ACTIVATION_SELECTORS = ("first_action_link", "action", "topic", "submit", "result")
ACTIVATION_EVENTS = ("credit_decrement", "activation_first_use")
OPEN_GRAPH = ("og:title", "og:description", "og:image", "og:url")
MAX_ACTIVATION_USERS = 50  # each user is a real browser journey with a real sign-up: bounded on purpose


def _css(value: str) -> str:
    """A CSS selector the page checks can evaluate (the engine BeautifulSoup uses)."""
    try:
        soupsieve.compile(value)
    except soupsieve.SelectorSyntaxError as exc:
        raise ValueError(f"not a valid CSS selector: {value!r} ({str(exc).splitlines()[0]})") from None
    return value


class Activation(StrictModel):
    """Guided onboarding to the first AI action, in Chromium (docs/phases.md#07-activation-and-growth).

    ``users`` synthetic learners each go landing → sign-up → checkout → first page →
    ``first_action_path`` (reached through the first page's ``first_action_link``), pick
    ``action``, type ``topic`` and submit; the step ends when ``result`` shows. Time to
    first value runs from the click that starts sign-up to that moment. ``events`` must
    reach the telemetry store under each learner's trace id; the browser's view of
    sign-in → answer must agree with the seconds the student app reports in
    ``activation_first_use`` within ``crosscheck_tolerance_s``.
    """

    users: int = Field(default=8, ge=1, le=MAX_ACTIVATION_USERS)
    concurrency: int = Field(default=2, ge=1, le=8)  # browser contexts driven at once
    first_action_path: UrlPath = "/onboarding/first-action"
    actions_path: UrlPath = "/api/ai/actions"  # on the student app: the request the page's submit sends
    action: str = Field(default="explain", min_length=1, max_length=64)
    topic: str = Field(default="confidence intervals", min_length=1, max_length=200)
    selectors: dict[str, str] = Field(default_factory=lambda: {
        "first_action_link": "[data-testid=first-action-link]", "action": "#action-kind", "topic": "#action-input",
        "submit": "#action-submit", "result": "[data-testid=ai-result]"})
    utm: dict[str, str] = Field(default_factory=lambda: {"utm_source": "readiness_audit", "utm_medium": "synthetic",
                                                         "utm_campaign": "activation"})
    events: list[str] = Field(default_factory=lambda: list(ACTIVATION_EVENTS), min_length=1)
    within_target_min: float = Field(default=0.90, gt=0, lt=1)  # share of learners at first value within target
    quantiles: list[float] = Field(default_factory=lambda: [0.5, 0.9], min_length=1, max_length=5)
    crosscheck_tolerance_s: float = Field(default=5, gt=0, le=300)
    poll_s: float = Field(default=0.5, gt=0, le=10)  # how often the telemetry store is asked while events arrive

    @field_validator("selectors")
    @classmethod
    def _selectors(cls, v: dict[str, str]) -> dict[str, str]:
        for value in exact_selectors(v, ACTIVATION_SELECTORS).values():
            _css(value)
        return v

    @field_validator("utm")
    @classmethod
    def _utm(cls, v: dict[str, str]) -> dict[str, str]:
        return attribution_keys(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        dupes = sorted({e for e in v if v.count(e) > 1})
        if dupes or any(not e.strip() for e in v):
            raise ValueError(f"events must be distinct non-empty event types, got {v}")
        return v

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, v: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in v) or len(set(v)) != len(v):
            raise ValueError(f"quantiles must be distinct numbers strictly between 0 and 1, got {v}")
        return sorted(v)


class Growth(StrictModel):
    """Web hygiene of the marketing app's public pages (docs/phases.md#07-activation-and-growth).

    Every ``<loc>`` of ``app``'s ``sitemap_path`` (at most ``max_pages``) plus
    ``extra_pages`` is fetched and checked: canonical link, no stray ``noindex``, the
    ``open_graph`` properties, the analytics tag — the element matching the CSS selector
    ``analytics_marker`` (the sandbox's tag is ``<script src="/assets/analytics.js"
    data-analytics-site="…">``; for a tag manager, e.g.
    ``script[src*="googletagmanager.com"]``), whose ``src``, when it has one, must load —
    and ``robots_path`` must allow the pages to every one of ``crawlers`` and name the
    sitemap.
    """

    app: str = "A7"
    sitemap_path: UrlPath = "/sitemap.xml"
    robots_path: UrlPath = "/robots.txt"
    extra_pages: list[UrlPath] = Field(default_factory=list)  # indexable pages the sitemap does not list
    max_pages: int = Field(default=50, ge=1, le=1_000)
    analytics_marker: str = "script[data-analytics-site]"
    open_graph: list[str] = Field(default_factory=lambda: list(OPEN_GRAPH), min_length=1)
    fetch_og_image: bool = True  # og:image must answer 200 with an image/* type
    crawlers: list[str] = Field(default_factory=lambda: ["*", "Googlebot"], min_length=1)  # robots.txt user agents

    @field_validator("analytics_marker")
    @classmethod
    def _marker(cls, v: str) -> str:
        return _css(v)

    @field_validator("open_graph")
    @classmethod
    def _open_graph(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if not p.startswith("og:") or len(p) < 4]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"open_graph must list distinct properties such as 'og:title', got {v}")
        return v
