"""Phase 3, B2C funnel (SPEC §2): synthetic sign-ups driven in Chromium, checked end to end.

The path a learner takes — landing page (A7) → sign-up at the identity provider (A1) →
the student app's callback (A2) → checkout (A5) → first page built by orchestration (A3)
and shown by A2 → the growth tile of the command center (A8) — is driven in the system
Chromium, ``funnels.b2c_signups`` times, each journey in a fresh browser context under
its own ``X-Trace-Id`` (sent on every request, so every service's telemetry of that
journey shares it) and the synthetic-traffic headers of the student identity.

Notebook cells call, in order:

1. :func:`probe_identity` — discovery, JWKS, redirect allowlist, PKCE, id token, code
   replay, userinfo (:mod:`readiness.oidc_probe`), recorded as ``funnels.b2c.oidc.*``;
2. :func:`run_signups` — the journeys, while the growth tile is polled for their trace
   ids; writes ``evidence/auth_trace_log.json`` (steps, statuses, timings, cookie
   attributes; never a token, code, cookie value or secret), screenshots of failed
   steps and ``evidence/b2c_tile_watch.json``;
3. :func:`evaluate` — the verdicts (:mod:`readiness.b2c_checks`) and
   ``reports/b2c_funnel_results.json``;
4. :func:`write_recovery` — ``reports/b2c_recovery.md`` from the checks that did not pass.

All browser traffic is confined to the ecosystem's hosts (loopback for the sandbox).
The browser bypasses the guarded client, so the prod policy is applied here: code flow and
journeys (sign-ups, token requests) need a ``production_write`` approval for their apps;
without one their checks are BLOCKED and only the read-only OIDC probes are sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import time
import uuid
from typing import Any
from urllib.parse import urlencode, urlsplit

import pandas as pd
from IPython.display import Markdown
from playwright.async_api import Browser, BrowserContext, Page, Response

from readiness import aio, b2c_checks
from readiness.browser import chromium, guard_context, set_cookie_lines, strip_query
from readiness.client import GuardedClient
from readiness.inventory import production_writes_allowed
from readiness.oidc import check_session_cookie, parse_set_cookie
from readiness.oidc_probe import OidcTarget, discover, probe_code_flow, probe_redirects
from readiness.params import App, Params
from readiness.phase import Phase

TRACE_LOG = "evidence/auth_trace_log.json"
TILE_WATCH = "evidence/b2c_tile_watch.json"
OIDC_PROBE = "evidence/b2c_oidc_probe.json"
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


def oidc_target(params: Params) -> OidcTarget:
    f, apps = params.funnels, funnel_apps(params)
    return OidcTarget(app_id=apps.identity.id, issuer=apps.identity.base_url, client_id=f.oidc_client_id,
                      redirect_uri=apps.student.url(f.callback_path), scope=f.oidc_scope,
                      algorithms=tuple(f.id_token_algorithms), leeway_s=float(f.id_token_leeway_s))


def write_apps(params: Params) -> tuple[str, ...]:
    """The apps the browser journeys write to (sign-up form, callback, checkout click)."""
    apps = funnel_apps(params)
    return tuple(sorted({apps.landing.id, apps.identity.id, apps.student.id}))


def _allowed_hosts(params: Params) -> set[str]:
    return {a.host for a in params.apps}


def _synthetic_headers(phase: Phase, client: GuardedClient) -> dict[str, str]:
    return client.synthetic.headers(phase.synthetic_identity)


# -- 1. identity provider --------------------------------------------------------------------
def probe_identity(phase: Phase) -> pd.DataFrame:
    """Discovery, JWKS, redirect allowlist and two code flows; records ``funnels.b2c.oidc.*``."""
    params, target = phase.params, oidc_target(phase.params)
    secret = os.environ.get(params.funnels.oidc_client_secret)
    stamp = uuid.uuid4().hex[:10]
    refusal = production_writes_allowed(phase, "OIDC code-flow probe: two synthetic sign-ups and their token "
                                        "requests", (target.app_id,)) if secret else None

    async def go() -> dict[str, Any]:
        async with phase.client() as client:
            found = await discover(client, target)
            doc = found.get("discovery") or {}
            out: dict[str, Any] = {"discovery": {k: v for k, v in found.items() if k != "discovery"},
                                   "redirects": [], "code_flow": None}
            if doc.get("authorization_endpoint"):
                out["redirects"] = await probe_redirects(client, target, str(doc["authorization_endpoint"]),
                                                         [target.redirect_uri])
            if not secret:
                out["code_flow"] = {"skipped": f"secret {params.funnels.oidc_client_secret} is not set"}
            elif refusal:
                out["code_flow"] = {"blocked": refusal}
            elif found.get("jwks") and doc.get("token_endpoint"):
                async with chromium() as browser:
                    out["code_flow"] = await probe_code_flow(
                        browser, client, target, doc, found["jwks"], secret,
                        headers=_synthetic_headers(phase, client), allowed_hosts=_allowed_hosts(params),
                        selectors=params.funnels.selectors, email_prefix=f"qa+oidc-{stamp}",
                        timeout_s=params.funnels.step_timeout_s, synthetic_identity=phase.synthetic_identity)
            return out

    result = aio.run(go())
    phase.run.write_json(OIDC_PROBE, result)
    checks = phase.record(b2c_checks.identity_checks(phase, result, OIDC_PROBE))
    return b2c_checks.frame(checks)


# -- 2. journeys --------------------------------------------------------------------------------
@dataclasses.dataclass
class _Journey:
    """What one synthetic sign-up went through (the JSON of one ``auth_trace_log`` entry)."""

    index: int
    trace_id: str
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    set_cookies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    signup_epoch: float | None = None
    attribution: dict[str, Any] | None = None
    stored_cookies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    blocked: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return len(self.steps) == len(STEPS) and all(s["status"] == "ok" for s in self.steps)


class _Runner:
    """Drives the journeys of one :func:`run_signups` call."""

    def __init__(self, phase: Phase, client: GuardedClient) -> None:
        self.phase, self.params = phase, phase.params
        self.f, self.apps = self.params.funnels, funnel_apps(self.params)
        self.headers = _synthetic_headers(phase, client)
        self.origins = {f"{urlsplit(a.base_url).scheme}://{urlsplit(a.base_url).netloc}": a.id
                        for a in self.params.apps}
        self.run_tag = uuid.uuid4().hex[:8]

    def _app_of(self, url: str) -> str | None:
        parts = urlsplit(url)
        return self.origins.get(f"{parts.scheme}://{parts.netloc}")

    async def _on_response(self, journey: _Journey, response: Response) -> None:
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

    async def _step(self, journey: _Journey, page: Page, name: str, action: Any) -> bool:
        started = time.perf_counter()
        record: dict[str, Any] = {"step": name, "status": "ok", "error": None, "screenshot": None}
        try:
            record["http_status"] = await action()
        except Exception as exc:  # a failed step is data about the target
            record["status"] = "failed"
            record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) \
                else type(exc).__name__
            try:
                shot = await page.screenshot(full_page=True)
                rel = f"{SHOTS}/b2c_{self.run_tag}_{journey.index:03d}_{name}.png"
                self.phase.run.write_bytes(rel, shot)
                record["screenshot"] = rel
            except Exception as shot_exc:  # a page too broken to capture is still a recorded failure
                record["screenshot_error"] = type(shot_exc).__name__
        record["ms"] = round((time.perf_counter() - started) * 1000, 1)
        record["url"] = strip_query(page.url)
        journey.steps.append(record)
        return record["status"] == "ok"

    async def journey(self, browser: Browser, index: int, on_signup: Any) -> _Journey:
        journey = _Journey(index=index, trace_id=uuid.uuid4().hex)
        context = await browser.new_context(extra_http_headers={**self.headers, "X-Trace-Id": journey.trace_id})
        try:
            journey.blocked = await guard_context(context, _allowed_hosts(self.params))
            page = await context.new_page()
            page.set_default_timeout(self.f.step_timeout_s * 1000)
            page.on("response", lambda r: self._on_response(journey, r))
            await self._drive(journey, page)
            if journey.signup_epoch is not None and journey.ok:
                on_signup(journey.trace_id, journey.signup_epoch)
            await self._read_back(journey, context)
        finally:
            await context.close()
        return journey

    async def _drive(self, journey: _Journey, page: Page) -> None:
        s, f, apps = self.f.selectors, self.f, self.apps
        landing = apps.landing.url(f.landing_path) + (f"?{urlencode(f.utm)}" if f.utm else "")

        async def settle(expected: str) -> None:
            """Wait for the next page's ``expected`` element, or fail at once on an error page."""
            await page.wait_for_selector(f"{expected}, {s['error']}")
            shown = page.locator(s["error"])
            if await shown.count():
                raise StepFailed(f"page shows an error: {(await shown.first.inner_text())[:300]}")

        async def open_landing() -> int | None:
            response = await page.goto(landing)
            await settle(s["cta"])
            return response.status if response else None

        async def follow_cta() -> None:
            await page.click(s["cta"])
            await settle(s["email"])

        async def sign_up() -> None:
            await page.fill(s["email"], f"qa+b2c-{self.run_tag}-{journey.index:03d}@example.test")
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

        for name, action in zip(STEPS, (open_landing, follow_cta, sign_up, check_out, first_page), strict=True):
            if not await self._step(journey, page, name, action):
                break

    async def _read_back(self, journey: _Journey, context: BrowserContext) -> None:
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

    def cookie_audit(self, journey: _Journey) -> list[dict[str, Any]]:
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


async def _watch_tile(client: GuardedClient, url: str, tile_id: str, wanted: dict[str, float],
                      done: asyncio.Event, budget_s: float, poll_s: float) -> dict[str, Any]:
    """Poll the tile until every signed-up trace id shows in ``recent_trace_ids`` or the budget ends."""
    seen: dict[str, float] = {}
    out: dict[str, Any] = {"tile_found": None, "error": None, "polls": 0}
    while True:
        sample = await client.get(url, app=None, route="/api/tiles", keep_body=True)
        out["polls"] += 1
        try:
            tiles = sample.json().get("tiles", []) if sample.ok else None
        except (ValueError, AttributeError):
            tiles = None
        if tiles is None:
            out["error"] = f"GET {strip_query(url)} → {sample.status or sample.error}"
            if sample.status == 404:
                out["tile_found"] = False
                break
        else:
            tile = next((t for t in tiles if isinstance(t, dict) and t.get("id") == tile_id), None)
            out["tile_found"] = tile is not None
            if tile is None:
                break
            now = time.time()
            for trace in tile.get("recent_trace_ids") or []:
                if trace in wanted and trace not in seen:
                    seen[trace] = now
        if done.is_set() and (not wanted or all(t in seen for t in wanted)
                              or time.time() > max(wanted.values()) + budget_s):
            break
        await asyncio.sleep(poll_s)
    out["arrival_s"] = {t: round(seen[t] - wanted[t], 3) if t in seen else None for t in wanted}
    return out


def run_signups(phase: Phase) -> pd.DataFrame:
    """``funnels.b2c_signups`` journeys in Chromium, with the growth tile watched meanwhile."""
    params, f = phase.params, phase.params.funnels
    tile_url = funnel_apps(params).telemetry.url("/api/tiles")
    refusal = production_writes_allowed(phase, f"{f.b2c_signups} synthetic browser sign-ups (B2C funnel)",
                                        write_apps(params))
    if refusal:
        return _blocked_signups(phase, refusal)

    async def go() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with phase.client() as client, chromium() as browser:
            runner = _Runner(phase, client)
            wanted: dict[str, float] = {}
            done = asyncio.Event()
            watcher = asyncio.create_task(_watch_tile(client, tile_url, f.tile_id, wanted, done,
                                                      params.thresholds.telemetry_arrival_s, f.tile_poll_s))
            gate = asyncio.Semaphore(f.concurrency)

            async def one(i: int) -> _Journey:
                async with gate:
                    return await runner.journey(browser, i, wanted.__setitem__)

            try:
                journeys = await asyncio.gather(*(one(i) for i in range(1, f.b2c_signups + 1)))
            finally:
                done.set()
            watch = await watcher
            rows = [{**{k: v for k, v in dataclasses.asdict(j).items() if k not in ("signup_epoch", "set_cookies")},
                     "ok": j.ok, "signup_at": dt.datetime.fromtimestamp(j.signup_epoch, dt.UTC).isoformat()
                     if j.signup_epoch else None, "cookies": runner.cookie_audit(j)} for j in journeys]
            return rows, watch

    started = dt.datetime.now(dt.UTC)
    rows, watch = aio.run(go())
    window = {"start": started.isoformat(), "end": dt.datetime.now(dt.UTC).isoformat()}
    phase.run.write_json(TRACE_LOG, {"window": window, "signups": f.b2c_signups, "utm": f.utm, "journeys": rows,
                                     "note": "no token, code, cookie value or secret is recorded"})
    phase.run.write_json(TILE_WATCH, {"tile_id": f.tile_id, "budget_s": params.thresholds.telemetry_arrival_s,
                                      **watch})
    return pd.DataFrame([{"journey": r["index"], "ok": r["ok"],
                          "failed_step": next((s["step"] for s in r["steps"] if s["status"] != "ok"), None),
                          "total_ms": round(sum(s["ms"] for s in r["steps"]), 1),
                          "tile_arrival_s": watch["arrival_s"].get(r["trace_id"])} for r in rows]).set_index("journey")


def _blocked_signups(phase: Phase, refusal: str) -> pd.DataFrame:
    """No journey may run: empty evidence saying why, and the journey checks BLOCKED."""
    params, f = phase.params, phase.params.funnels
    now = dt.datetime.now(dt.UTC).isoformat()
    phase.run.write_json(TRACE_LOG, {"window": {"start": now, "end": now}, "signups": f.b2c_signups, "utm": f.utm,
                                     "journeys": [], "blocked": refusal,
                                     "note": "no journey was run: production writes are not approved"})
    phase.run.write_json(TILE_WATCH, {"tile_id": f.tile_id, "budget_s": params.thresholds.telemetry_arrival_s,
                                      "tile_found": None, "polls": 0, "arrival_s": {}, "error": None,
                                      "blocked": refusal})
    phase.record(b2c_checks.journey_checks(phase, TRACE_LOG, TILE_WATCH))
    return pd.DataFrame([{"status": "BLOCKED", "reason": refusal}])


# -- 3. and 4. verdicts and reports -------------------------------------------------------------
def evaluate(phase: Phase) -> pd.DataFrame:
    """Record the funnel checks and write ``reports/b2c_funnel_results.json``."""
    return b2c_checks.evaluate(phase, TRACE_LOG, TILE_WATCH)


def write_recovery(phase: Phase) -> Markdown:
    """``reports/b2c_recovery.md``: each B2C check that did not pass, its evidence and the likely fix."""
    return b2c_checks.write_recovery(phase)
