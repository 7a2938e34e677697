"""Synthetic sign-up journeys in the system Chromium, shared by the B2C funnel and activation.

A journey is what a new learner does: the landing page (A7 in the sandbox) → its call to
action → sign-up at the identity provider (A1) → the student app's callback (A2) →
checkout (A5) → the first page built by orchestration (A3). :class:`JourneyRunner` drives
it in a fresh browser context per journey, under the journey's own ``X-Trace-Id`` (sent on
every request, so every service's telemetry of that journey shares it) and the
synthetic-traffic headers of the student identity, confined to the ecosystem's hosts.
Every step is timed (duration and wall clock), a failed step keeps a screenshot and the
page's own error message, and the ``Set-Cookie`` lines seen on the way are kept (names and
attributes only) for the cookie audit.

Phase 04 (:mod:`readiness.phases.funnels.b2c`) runs the five steps; Phase 07 (:mod:`readiness.phases.activation.activation`)
appends its own after the first page (``extra_steps``). Which apps play which part, and
the selectors of their pages, come from ``params.funnels``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from playwright.async_api import Browser, BrowserContext, Page, Response

from readiness.params.model import App, Params
from readiness.phasekit.context import Phase
from readiness.probe.browser import guard_context, set_cookie_lines, strip_query
from readiness.probe.client import GuardedClient
from readiness.probe.oidc import check_session_cookie, parse_set_cookie

SHOTS = "evidence/screenshots"
STEPS = ("landing", "cta", "signup", "checkout", "first_page")


class StepFailed(Exception):
    """A journey step reached a page that says it failed (the page's own error message)."""


@dataclasses.dataclass(frozen=True)
class FunnelApps:
    """Which apps play which part in the B2C path (from ``params.funnels``)."""

    landing: App
    identity: App
    student: App
    telemetry: App


def funnel_apps(params: Params) -> FunnelApps:
    """The apps named by ``funnels`` (checked against ``apps`` when the params were loaded)."""
    f = params.funnels
    return FunnelApps(params.app(f.landing_app), params.app(f.identity_app), params.app(f.student_app),
                      params.app(params.telemetry_app))


def write_apps(params: Params) -> tuple[str, ...]:
    """The apps the browser journeys write to (sign-up form, callback, checkout click)."""
    apps = funnel_apps(params)
    return tuple(sorted({apps.landing.id, apps.identity.id, apps.student.id}))


def allowed_hosts(params: Params) -> set[str]:
    """The hosts a browser context may reach: the ecosystem's own."""
    return {a.host for a in params.apps}


def synthetic_headers(phase: Phase, client: GuardedClient) -> dict[str, str]:
    """The synthetic-traffic headers of the student identity, sent on every browser request."""
    return client.synthetic.headers(phase.synthetic_identity)


@dataclasses.dataclass
class Journey:
    """What one synthetic sign-up went through (the JSON of one ``auth_trace_log`` entry).

    Each step record holds its name, status, error, screenshot, duration (``ms``) and wall
    clock (``started_at``/``ended_at``, epoch seconds); ``step_names`` are the steps the
    journey was meant to take, so ``ok`` means all of them passed.
    """

    index: int
    trace_id: str
    step_names: tuple[str, ...] = STEPS
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    set_cookies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    signup_epoch: float | None = None
    attribution: dict[str, Any] | None = None
    stored_cookies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    blocked: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.steps) == len(self.step_names) and all(s["status"] == "ok" for s in self.steps)

    def step(self, name: str) -> dict[str, Any] | None:
        """The record of step ``name``, if the journey got that far."""
        return next((s for s in self.steps if s["step"] == name), None)


#: An extra step after the first page: ``(runner, journey, page) -> HTTP status or None``; it raises to fail.
ExtraStep = Callable[["JourneyRunner", Journey, Page], Awaitable[int | None]]


class JourneyRunner:
    """Drives the sign-up journeys of one phase call (B2C funnel, activation).

    ``utm`` is the attribution of the landing link (default ``funnels.utm``); ``tag`` goes
    into the synthetic e-mail addresses and screenshot names, so each phase's learners
    can be told apart.
    """

    def __init__(self, phase: Phase, client: GuardedClient, *, utm: Mapping[str, str] | None = None,
                 tag: str = "b2c") -> None:
        self.phase, self.params = phase, phase.params
        self.f, self.apps = self.params.funnels, funnel_apps(self.params)
        self.headers = synthetic_headers(phase, client)
        self.origins = {f"{urlsplit(a.base_url).scheme}://{urlsplit(a.base_url).netloc}": a.id
                        for a in self.params.apps}
        self.run_tag = uuid.uuid4().hex[:8]
        self.utm = dict(self.f.utm if utm is None else utm)
        self.tag = tag

    def _app_of(self, url: str) -> str | None:
        parts = urlsplit(url)
        return self.origins.get(f"{parts.scheme}://{parts.netloc}")

    async def _on_response(self, journey: Journey, response: Response) -> None:
        url = response.url
        if strip_query(url) == self.apps.student.url(self.f.callback_path) and journey.signup_epoch is None:
            journey.signup_epoch = time.time()
        for line in await set_cookie_lines(response):
            try:
                cookie = parse_set_cookie(line)
            except ValueError:
                continue
            journey.set_cookies.append({"app": self._app_of(url), "url": strip_query(url), "status": response.status,
                                        "date": response.headers.get("date"), "name": cookie.name,
                                        "set_cookie": cookie.describe()})

    async def settle(self, page: Page, expected: str) -> None:
        """Wait for the next page's ``expected`` element, or fail at once on an error page."""
        error = self.f.selectors["error"]
        await page.wait_for_selector(f"{expected}, {error}")
        shown = page.locator(error)
        if await shown.count():
            raise StepFailed(f"page shows an error: {(await shown.first.inner_text())[:300]}")

    async def _step(self, journey: Journey, page: Page, name: str, action: Any) -> bool:
        started = time.perf_counter()
        record: dict[str, Any] = {"step": name, "status": "ok", "error": None, "screenshot": None,
                                  "started_at": round(time.time(), 3)}
        try:
            record["http_status"] = await action()
        except Exception as exc:  # a failed step is data about the target
            record["status"] = "failed"
            record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) \
                else type(exc).__name__
            try:
                shot = await page.screenshot(full_page=True)
                rel = f"{SHOTS}/{self.tag}_{self.run_tag}_{journey.index:03d}_{name}.png"
                self.phase.run.write_bytes(rel, shot)
                record["screenshot"] = rel
            except Exception as shot_exc:  # a page too broken to capture is still a recorded failure
                record["screenshot_error"] = type(shot_exc).__name__
        record["ms"] = round((time.perf_counter() - started) * 1000, 1)
        record["ended_at"] = round(time.time(), 3)
        record["url"] = strip_query(page.url)
        journey.steps.append(record)
        return record["status"] == "ok"

    async def journey(self, browser: Browser, index: int, on_signup: Any,
                      extra_steps: Sequence[tuple[str, ExtraStep]] = ()) -> Journey:
        """One journey in a fresh context under its own trace id: the B2C steps, then ``extra_steps``."""
        journey = Journey(index=index, trace_id=uuid.uuid4().hex,
                          step_names=STEPS + tuple(name for name, _ in extra_steps))
        context = await browser.new_context(extra_http_headers={**self.headers, "X-Trace-Id": journey.trace_id})
        try:
            journey.blocked = await guard_context(context, allowed_hosts(self.params))
            page = await context.new_page()
            page.set_default_timeout(self.f.step_timeout_s * 1000)
            page.on("response", lambda r: self._on_response(journey, r))
            await self._drive(journey, page, extra_steps)
            if journey.signup_epoch is not None and journey.ok:
                on_signup(journey.trace_id, journey.signup_epoch)
            await self._read_back(journey, context)
        finally:
            await context.close()
        return journey

    async def _drive(self, journey: Journey, page: Page, extra_steps: Sequence[tuple[str, ExtraStep]]) -> None:
        s, f, apps = self.f.selectors, self.f, self.apps
        landing = apps.landing.url(f.landing_path) + (f"?{urlencode(self.utm)}" if self.utm else "")

        async def settle(expected: str) -> None:
            await self.settle(page, expected)

        async def open_landing() -> int | None:
            response = await page.goto(landing)
            await settle(s["cta"])
            return response.status if response else None

        async def follow_cta() -> None:
            await page.click(s["cta"])
            await settle(s["email"])

        async def sign_up() -> None:
            await page.fill(s["email"], f"qa+{self.tag}-{self.run_tag}-{journey.index:03d}@example.test")
            await page.fill(s["name"], f"QA Learner {journey.index}")
            await page.fill(s["password"], uuid.uuid4().hex)
            await page.click(s["signup"])
            await settle(s["checkout"])

        async def check_out() -> None:
            await page.click(s["checkout"])
            await settle(s["first_page"])

        async def first_page() -> None:
            await page.wait_for_selector(s["first_page"], state="visible")
            if not strip_query(page.url).startswith(apps.student.url(f.first_page_path)):
                raise StepFailed(f"first page shown at {strip_query(page.url)}, expected {f.first_page_path}")

        actions: list[tuple[str, Callable[[], Awaitable[int | None]]]] = list(
            zip(STEPS, (open_landing, follow_cta, sign_up, check_out, first_page), strict=True))
        actions += [(name, functools.partial(step, self, journey, page)) for name, step in extra_steps]
        for name, action in actions:
            if not await self._step(journey, page, name, action):
                break

    async def _read_back(self, journey: Journey, context: BrowserContext) -> None:
        """What the browser kept (cookie names and flags, no values) and the attribution A2 stored."""
        journey.stored_cookies = [{"name": c["name"], "domain": c["domain"], "secure": c["secure"],
                                   "http_only": c["httpOnly"], "same_site": c["sameSite"]}
                                  for c in await context.cookies()]
        if not journey.ok:
            return
        try:
            answer = await context.request.get(self.apps.student.url(self.f.profile_path))
            body = await answer.json() if answer.ok else None
        except Exception as exc:  # unreadable profile: attribution unknown, not a crash
            journey.attribution = {"error": type(exc).__name__}
            return
        recorded = body.get("attribution") if isinstance(body, dict) else None
        journey.attribution = {"status": answer.status, "recorded": recorded}

    def cookie_audit(self, journey: Journey) -> list[dict[str, Any]]:
        """Each expected session cookie of this journey with its findings (attribute and jar checks)."""
        rows = []
        for expect in self.f.session_cookies:
            app = self.params.app(expect.app)
            sent = [c for c in journey.set_cookies if c["app"] == expect.app and c["name"] == expect.name]
            stored = any(c["name"] == expect.name for c in journey.stored_cookies)
            findings: list[str] = []
            for c in sent:
                findings += [x.message for x in check_session_cookie(c["set_cookie"], ttl_s=expect.ttl_s,
                                                                     host=app.host, expected_domain=expect.domain,
                                                                     date=c["date"])]
            if sent and not stored:
                findings.append(f"the browser did not keep cookie {expect.name}")
            rows.append({"app": expect.app, "name": expect.name, "seen": bool(sent), "stored": stored,
                         "set_cookie": sent[-1]["set_cookie"] if sent else None,
                         "findings": list(dict.fromkeys(findings))})
        return rows
