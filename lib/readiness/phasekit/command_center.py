"""Fixes C and D on the command center: incident banners and demo mode (docs/phases.md#02-latency-profile).

Two phase functions, called one per notebook cell:

* :func:`check_banners` raises banners for a synthetic incident on one app and watches
  how they end: one must expire after its TTL, one must auto-clear once the app has
  looked healthy for its recovery window (the check keeps the app's ``/health`` busy
  meanwhile), and the admin clear must refuse a caller with no credential (401) or the
  wrong one (403) while the admin token works.
* :func:`check_demo_mode` posts synthetic revenue (tagged ``namespace=simulated_audit``,
  ``test_run=true``, ``stripe_mode=test``) and verifies from the tile exports that it is
  absent from the live revenue tile, present in the diagnostics tile and labelled, and
  that ``/dashboard`` carries the demo badge (a Chromium screenshot is kept).

On the sandbox each runs three times — flag OFF (``before``, expected to FAIL: that is
the defect the fix removes), ON (``after``), OFF again (``rollback``: the old behaviour
must be back at once) — then restores the flag the params configure. On an external ecosystem
flags are not ours to switch: the functions only observe (before/after/rollback SKIPPED), and
in ``prod`` demo mode's synthetic revenue is posted only under a ``production_write`` approval
(else BLOCKED). Banner timings: TTL = ``sustained_s``, recovery = ``burn_in_s`` (active profile).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from readiness.core import aio
from readiness.core.check import DEMONSTRATION, Check, Status
from readiness.core.verdict import combine, value_check
from readiness.params.model import App
from readiness.phasekit.context import Phase, part, production_writes_allowed
from readiness.probe.client import GuardedClient
from readiness.probe.sandbox_control import admin_headers, set_flag
from readiness.report.markdown import checks_frame

BANNER_FLAG = "a8_banner_ttl"
DEMO_FLAG = "a8_demo_mode"
FLIPS = (("before", False), ("after", True), ("rollback", False))
SCREENSHOTS = "evidence/a8_demo_mode_screenshots"
EXPORTS = "evidence/finance_tile_exports"
LIVE, DIAGNOSTICS = "finance_revenue_live", "finance_revenue_diagnostics"
POLL_S = 0.25
TRAFFIC_RPS = 5.0
SYNTHETIC_REVENUE_EVENTS = 3
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TAGS = ("security", "observability", "release_engineering")


@dataclasses.dataclass(frozen=True)
class BannerTiming:
    """How long banners live in the check, and how long the check waits for them."""

    ttl_s: float
    recovery_s: float
    grace_s: float

    @classmethod
    def of(cls, phase: Phase) -> BannerTiming:
        w = phase.params.windows.active
        return cls(ttl_s=w.sustained_s, recovery_s=w.burn_in_s, grace_s=max(2.0, 0.2 * max(w.sustained_s,
                                                                                           w.burn_in_s)))


def _a8(phase: Phase) -> App:
    return phase.params.app(phase.params.telemetry_app)


def _incident_app(phase: Phase) -> App:
    """The app the synthetic incident is about: the first one that is not the command center."""
    others = [a for a in phase.params.apps if a.id != phase.params.telemetry_app]
    return others[0] if others else _a8(phase)



def _check(phase: Phase, id: str, title: str, observed: Any, expected: Any, evidence: tuple[str, ...],
           detail: str = "", unit: str = "") -> Check:
    return value_check(id=id, phase=phase.name, title=title, observed=observed, expected=expected, unit=unit,
                       app=phase.params.telemetry_app, tags=TAGS, evidence=evidence, severity="P1",
                       detail=detail)


def _skipped(phase: Phase, prefix: str, why: str) -> list[Check]:
    return [Check(id=f"{prefix}.{state}", phase=phase.name, title=f"{prefix} {state}", status=Status.SKIPPED,
                  app=phase.params.telemetry_app, tags=TAGS, detail=why) for state, _ in FLIPS]


def _broken(phase: Phase, id: str, title: str, exc: Exception, evidence: str) -> Check:
    """The scenario could not run (the API refused to set it up): ERROR, never a verdict on the fix."""
    return Check(id=id, phase=phase.name, title=title, status=Status.ERROR, app=phase.params.telemetry_app,
                 tags=TAGS, evidence=(evidence,), severity="P1", detail=str(exc))


def _demonstration(check: Check) -> Check:
    return dataclasses.replace(check, tags=(*check.tags, DEMONSTRATION))


class ScenarioError(RuntimeError):
    """A step the scenario depends on failed (e.g. the banner or the events were refused)."""


def _flipped(phase: Phase, flag: str, run_state: Any) -> list[Check]:
    """Run ``run_state(state, flag_value)`` for before/after/rollback, then restore the configured flag."""
    configured = phase.params.sandbox.flags[flag]
    a8 = phase.params.telemetry_app
    checks: list[Check] = []
    try:
        for state, value in FLIPS:
            set_flag(phase.params, a8, flag, value)
            got = run_state(state, value)
            # the flag OFF on purpose plants the defect: evidence about the fix, not a verdict
            checks += [_demonstration(c) for c in got] if state == "before" else got
    finally:
        set_flag(phase.params, a8, flag, configured)
    return checks


# --- fix C: incident banners ------------------------------------------------------------


async def _raise(phase: Phase, client: GuardedClient, app: App, ttl_s: float, recovery_s: float,
                 purpose: str) -> dict[str, Any]:
    a8 = _a8(phase)
    body = {"app_id": app.id, "severity": "major", "ttl_s": ttl_s, "recovery_s": recovery_s,
            "message": f"synthetic incident raised by the readiness audit ({purpose})"}
    sample = await client.post(a8.url("/api/banners"), json=body, app=a8.id, route="/api/banners",
                               headers=phase.telemetry_auth() or admin_headers(), idempotency_key=True, keep_body=True,
                               synthetic_identity=phase.synthetic_identity)
    if sample.status != 201:
        raise ScenarioError(f"POST /api/banners → {sample.status or sample.error}: "
                           f"{(sample.body or b'')[:200].decode(errors='replace')}")
    return {**sample.json()["banner"], "raised_monotonic": time.monotonic()}


async def _wait_cleared(phase: Phase, client: GuardedClient, banner: dict[str, Any], bound_s: float) -> dict[str, Any]:
    """Poll the banner until it is cleared or ``bound_s`` after it was raised; its last state."""
    a8 = _a8(phase)
    path = f"/api/banners/{banner['id']}"
    while True:
        sample = await client.get(a8.url(path), app=a8.id, route="/api/banners/{id}", keep_body=True)
        elapsed = time.monotonic() - banner["raised_monotonic"]
        state = sample.json()["banner"] if sample.status == 200 else {"active": None, "error": sample.status}
        if state.get("active") is False or elapsed >= bound_s:
            return {**state, "observed_after_s": round(elapsed, 3), "bound_s": bound_s}
        await asyncio.sleep(POLL_S)


async def _keep_healthy(client: GuardedClient, app: App, stop: asyncio.Event) -> int:
    """Steady GETs of the app's health path, so the command center sees it answering."""
    sent = 0
    while not stop.is_set():
        await client.get(app.url(app.health_path), app=app.id, route=app.health_path)
        sent += 1
        try:
            await asyncio.wait_for(stop.wait(), timeout=1 / TRAFFIC_RPS)
        except TimeoutError:
            pass
    return sent


async def _clear(phase: Phase, client: GuardedClient, banner_id: str, auth: dict[str, str]) -> int | None:
    a8 = _a8(phase)
    sample = await client.delete(a8.url(f"/api/banners/{banner_id}"), app=a8.id, route="/api/banners/{id}",
                                 headers=auth, idempotency_key=True)
    return sample.status


async def _banner_scenario(phase: Phase, full: bool) -> dict[str, Any]:
    """Expiry and recovery banners side by side; with ``full`` also the clear-auth probes."""
    t, app = BannerTiming.of(phase), _incident_app(phase)
    async with phase.client() as client:
        expiry = await _raise(phase, client, app, t.ttl_s, min(3600.0, 4 * t.ttl_s + t.grace_s), "ttl")
        waits = [_wait_cleared(phase, client, expiry, t.ttl_s + t.grace_s)]
        recovery = None
        if full:
            recovery = await _raise(phase, client, app, min(86_400.0, 4 * t.recovery_s + 2 * t.grace_s),
                                    t.recovery_s, "recovery")
            waits.append(_wait_cleared(phase, client, recovery, t.recovery_s + t.grace_s))
        stop = asyncio.Event()
        traffic = asyncio.create_task(_keep_healthy(client, app, stop))
        ended = await asyncio.gather(*waits)
        stop.set()
        out: dict[str, Any] = {"app": app.id, "timing": dataclasses.asdict(t), "health_requests": await traffic,
                               "expiry": ended[0], "recovery": ended[1] if full else None}
        ours = [expiry] + ([recovery] if recovery else [])
        wrong = {"Authorization": f"Bearer wrong-{uuid.uuid4().hex}"}
        for key, auth in [("no_credential", {}), *([("wrong_credential", wrong)] if full else [])]:
            probe = await _raise(phase, client, app, 4 * t.ttl_s, 3600.0, f"clear {key}")
            ours.append(probe)
            out[f"clear_{key}"] = await _clear(phase, client, probe["id"], auth)
        # the admin path, on the last probe (still active when the refusals worked); also the cleanup
        admin = [await _clear(phase, client, b["id"], admin_headers()) for b in ours]
        out["clear_admin"] = admin[-1]
        out["banner_ids"] = [b["id"] for b in ours]
    return out


def _ended(state: dict[str, Any]) -> str | None:
    if state.get("active") is None:
        return None
    return state["cleared_reason"] if state["active"] is False else "active"


def _banner_checks(phase: Phase, state: str, evidence: tuple[str, ...], seen: dict[str, Any]) -> list[Check]:
    p, t = f"banners.{state}", BannerTiming.of(phase)
    exp = seen["expiry"]
    when = f"{'cleared' if exp.get('active') is False else 'still active'} {exp['observed_after_s']:g} s after raise"
    if state == "rollback":
        parts = [_check(phase, f"{p}.ttl_ignored", f"{BANNER_FLAG} OFF again: banners no longer expire",
                        _ended(exp), "active", evidence, f"{when}; TTL {t.ttl_s:g} s"),
                 _check(phase, f"{p}.clear_open", f"{BANNER_FLAG} OFF again: the clear is unauthenticated again",
                        seen["clear_no_credential"], 200, evidence)]
        title = f"switching {BANNER_FLAG} OFF restores the previous banner behaviour at once"
    else:
        rec = seen["recovery"]
        parts = [
            _check(phase, f"{p}.ttl_expiry", f"a banner expires within its TTL ({t.ttl_s:g} s + {t.grace_s:g} s)",
                   _ended(exp), "expired", evidence, when),
            _check(phase, f"{p}.recovery_clear", f"a banner auto-clears within {t.recovery_s:g} s (+ "
                   f"{t.grace_s:g} s) of healthy telemetry", _ended(rec), "recovered", evidence,
                   f"observed {rec['observed_after_s']:g} s after raise; {seen['health_requests']} health requests"),
            _check(phase, f"{p}.clear_no_credential", "admin clear without a credential is refused",
                   seen["clear_no_credential"], 401, evidence),
            _check(phase, f"{p}.clear_wrong_credential", "admin clear with a wrong credential is refused",
                   seen["clear_wrong_credential"], 403, evidence),
            _check(phase, f"{p}.clear_admin", "admin clear with the admin token works", seen["clear_admin"], 200,
                   evidence)]
        title = f"incident banners with {BANNER_FLAG} {'ON' if state == 'after' else 'OFF'}"
    return [*parts, combine(p, phase.name, title, parts, app=phase.params.telemetry_app, severity="P1")]


def _observe_banners(phase: Phase) -> list[Check]:
    a8 = _a8(phase)

    async def go() -> Any:
        async with phase.client() as client:
            return await client.get(a8.url("/api/banners"), app=a8.id, route="/api/banners", keep_body=True)

    sample = aio.run(go())
    banners = sample.json().get("banners", []) if sample.status == 200 else None
    evidence = ("evidence/banners_observed.json",)
    phase.run.write_json(evidence[0], {"status": sample.status, "banners": banners})
    stale = None if banners is None else sum(1 for b in banners if b.get("age_s", 0) > b.get("ttl_s", float("inf")))
    return [_check(phase, "banners.observed.no_stale", "no active banner has outlived its TTL", stale, 0, evidence,
                   "" if banners is not None else f"GET /api/banners → {sample.status or sample.error}", "banners"),
            *_skipped(phase, "banners", "external ecosystem: flags are observed, never switched")]


@part("banners")
def check_banners(phase: Phase) -> pd.DataFrame:
    """Fix C: TTL expiry, auto-clear on recovery and an authenticated clear, before/after/rollback."""
    if phase.params.target != "sandbox":
        return checks_frame(phase.record(_observe_banners(phase)))

    def run_state(state: str, on: bool) -> list[Check]:
        evidence = f"evidence/banners_{state}.json"
        try:
            seen = aio.run(_banner_scenario(phase, full=state != "rollback"))
        except ScenarioError as exc:
            phase.run.write_json(evidence, {"state": state, BANNER_FLAG: on, "error": str(exc)})
            return [_broken(phase, f"banners.{state}", f"incident banners ({state})", exc, evidence)]
        phase.run.write_json(evidence, {"state": state, BANNER_FLAG: on, **seen})
        return _banner_checks(phase, state, (evidence,), seen)

    return checks_frame(phase.record(_flipped(phase, BANNER_FLAG, run_state)))


# --- fix D: demo mode -------------------------------------------------------------------


def _synthetic_revenue(phase: Phase, n: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    tags = {**phase.params.synthetic.tags, "env": "staging" if phase.params.environment == "staging"
            else "prod_observe", "synthetic_identity": phase.synthetic_identity}
    money = {"amount_cents": phase.params.stripe.micro_amount_cents, "currency": phase.params.stripe.currency,
             "stripe_mode": "test"}
    return [{"event_type": "revenue_settled", "timestamp": now, "app_id": "readiness-audit",
             "route": "/readiness/demo-mode", "status": 200, "p95_ms": None, "trace_id": uuid.uuid4().hex,
             "idempotency_key": uuid.uuid4().hex, "finance_metrics": money,
             "revenue_event_id": f"rev_qa_{uuid.uuid4().hex[:16]}", "tags": tags} for _ in range(n)]


async def _export(client: GuardedClient, a8: App, tile: str, fmt: str) -> Any:
    sample = await client.get(a8.url(f"/api/tiles/{tile}/export?format={fmt}"), app=a8.id,
                              route="/api/tiles/{id}/export", keep_body=True)
    if sample.status != 200:
        raise ScenarioError(f"export of {tile} → {sample.status or sample.error}")
    return sample.json() if fmt == "json" else sample.body or b""


async def _screenshot(url: str) -> tuple[bytes | None, bool | None, str]:
    """The dashboard in the system Chromium: (PNG, badge visible, note); None values when no browser."""
    if not CHROMIUM.exists():
        return None, None, f"no Chromium at {CHROMIUM}"
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                await page.goto(url, wait_until="load")
                visible = await page.locator("#demo-badge").is_visible()
                return await page.screenshot(full_page=True), visible, ""
            finally:
                await browser.close()
    except PlaywrightError as exc:
        return None, None, f"Chromium failed: {str(exc).splitlines()[0]}"


async def _demo_scenario(phase: Phase) -> dict[str, Any]:
    a8 = _a8(phase)
    events = _synthetic_revenue(phase, SYNTHETIC_REVENUE_EVENTS)
    wanted = {e["trace_id"] for e in events}
    async with phase.client() as client:
        posted = await client.post(a8.url("/api/telemetry/events"), json={"events": events}, app=a8.id,
                                   route="/api/telemetry/events", headers=phase.telemetry_auth(),
                                   idempotency_key=True, synthetic_identity=phase.synthetic_identity)
        if posted.status != 202:
            raise ScenarioError(f"POST /api/telemetry/events → {posted.status or posted.error}")
        deadline = time.monotonic() + phase.params.thresholds.telemetry_arrival_s
        while True:
            diagnostics = await _export(client, a8, DIAGNOSTICS, "json")
            seen = {r["trace_id"] for r in diagnostics["rows"]} & wanted
            if seen == wanted or time.monotonic() >= deadline:
                break
            await asyncio.sleep(POLL_S)
        live = await _export(client, a8, LIVE, "json")
        csvs = {tile: await _export(client, a8, tile, "csv") for tile in (LIVE, DIAGNOSTICS)}
    png, badge, note = await _screenshot(a8.url("/dashboard"))
    return {"posted_status": posted.status, "trace_ids": sorted(wanted), "live": live, "diagnostics": diagnostics,
            "csv": csvs, "png": png, "badge": badge, "browser_note": note}


def _demo_checks(phase: Phase, state: str, seen: dict[str, Any], exports: tuple[str, ...],
                 page: tuple[str, ...]) -> list[Check]:
    p, wanted, n = f"demo_mode.{state}", set(seen["trace_ids"]), len(seen["trace_ids"])
    in_live = sum(1 for r in seen["live"]["rows"] if r["trace_id"] in wanted)
    ours = [r for r in seen["diagnostics"]["rows"] if r["trace_id"] in wanted]
    labelled = any("excluded" in label for label in seen["live"]["tile"]["labels"]) and bool(ours) and all(
        r.get("label") == "simulated" for r in ours)
    old = state == "rollback"
    parts = [
        _check(phase, f"{p}.live_{'includes' if old else 'excludes'}_simulated",
               f"simulated revenue {'leaks into' if old else 'stays out of'} the live revenue tile",
               in_live, n if old else 0, exports, f"{in_live} of {n} posted synthetic events in {LIVE}", "events"),
        _check(phase, f"{p}.diagnostics_includes_simulated", "simulated revenue is visible in diagnostics",
               len(ours), n, exports, f"{len(ours)} of {n} posted synthetic events in {DIAGNOSTICS}", "events"),
        _check(phase, f"{p}.simulated_labelled", "simulated revenue is labelled as such", labelled, not old, exports),
        _check(phase, f"{p}.badge", f"/dashboard {'has no' if old else 'shows the'} demo badge", seen["badge"],
               not old, page, seen["browser_note"]),
    ]
    titles = {"rollback": f"switching {DEMO_FLAG} OFF restores the previous behaviour at once",
              "after": f"demo mode with {DEMO_FLAG} ON", "before": f"demo mode with {DEMO_FLAG} OFF",
              "observed": "demo mode as deployed"}
    return [*parts, combine(p, phase.name, titles[state], parts, app=phase.params.telemetry_app, severity="P1")]


def _demo_state(phase: Phase, state: str, on: bool | None) -> list[Check]:
    record = f"evidence/demo_mode_{state}.json"
    try:
        seen = aio.run(_demo_scenario(phase))
    except ScenarioError as exc:
        phase.run.write_json(record, {"state": state, DEMO_FLAG: on, "error": str(exc)})
        return [_broken(phase, f"demo_mode.{state}", f"demo mode ({state})", exc, record)]
    exports = []
    for tile, key in ((LIVE, "live"), (DIAGNOSTICS, "diagnostics")):
        exports += [f"{EXPORTS}/{state}_{tile}.json", f"{EXPORTS}/{state}_{tile}.csv"]
        phase.run.write_json(exports[-2], seen[key])
        phase.run.write_bytes(exports[-1], seen["csv"][tile])
    page = record
    if seen["png"] is not None:
        page = f"{SCREENSHOTS}/{state}_dashboard.png"
        phase.run.write_bytes(page, seen["png"])
    phase.run.write_json(record, {"state": state, DEMO_FLAG: on, "posted_status": seen["posted_status"],
                                  "trace_ids": seen["trace_ids"], "badge_visible": seen["badge"],
                                  "browser_note": seen["browser_note"], "files": [*exports, page]})
    return _demo_checks(phase, state, seen, (record, *exports), (page,))


@part("command_center")
def check_demo_mode(phase: Phase) -> pd.DataFrame:
    """Fix D: simulated revenue out of the live tile, in diagnostics, labelled, badge shown."""
    if phase.params.target != "sandbox":
        a8 = _a8(phase).id
        refusal = production_writes_allowed(phase, f"{SYNTHETIC_REVENUE_EVENTS} synthetic revenue events", (a8,))
        blocked = Check(id="demo_mode.observed", phase=phase.name, title="demo mode as deployed", app=a8, tags=TAGS,
                        status=Status.BLOCKED, severity="P1", detail=refusal or "")
        checks = [blocked] if refusal else _demo_state(phase, "observed", None)
        return checks_frame(phase.record([*checks, *_skipped(phase, "demo_mode", "external ecosystem: flags are "
                                                                                 "observed, never switched")]))
    return checks_frame(phase.record(_flipped(phase, DEMO_FLAG, lambda state, on: _demo_state(phase, state, on))))
