"""Phase 04, B2C funnel (docs/phases.md#04-funnels): synthetic sign-ups driven in Chromium, checked end to end.

The path a learner takes — landing page (A7) → sign-up at the identity provider (A1) →
the student app's callback (A2) → checkout (A5) → first page built by orchestration (A3)
and shown by A2 → the growth tile of the command center (A8) — is driven in the system
Chromium, ``funnels.b2c_signups`` times, each journey in a fresh browser context under
its own ``X-Trace-Id`` (sent on every request, so every service's telemetry of that
journey shares it) and the synthetic-traffic headers of the student identity.

Notebook cells call, in order:

1. :func:`probe_identity` — discovery, JWKS, redirect allowlist, PKCE, id token, code
   replay, userinfo (:mod:`readiness.probe.oidc_probe`), recorded as ``funnels.b2c.oidc.*``;
2. :func:`run_signups` — the journeys, while the growth tile is polled for their trace
   ids; writes ``evidence/auth_trace_log.json`` (steps, statuses, timings, cookie
   attributes; never a token, code, cookie value or secret), screenshots of failed
   steps and ``evidence/b2c_tile_watch.json``;
3. :func:`evaluate` — the verdicts (:mod:`readiness.phases.funnels.b2c_verdicts`) and
   ``reports/b2c_funnel_results.json``;
4. :func:`write_recovery` — ``reports/b2c_recovery.md`` from the checks that did not pass.

The journeys themselves (contexts, steps, timings, screenshots, cookie audit) are driven by
:class:`readiness.phasekit.signup_journey.JourneyRunner`, shared with Phase 07
(:mod:`readiness.phases.activation.activation`), which appends its own steps after the first page.

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

import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.params.model import Params
from readiness.phasekit.context import Phase, part, production_writes_allowed
from readiness.phasekit.signup_journey import (
    SHOTS,
    STEPS,
    FunnelApps,
    Journey,
    JourneyRunner,
    StepFailed,
    allowed_hosts,
    funnel_apps,
    synthetic_headers,
    write_apps,
)
from readiness.phases.funnels import b2c_verdicts
from readiness.probe.browser import chromium, strip_query
from readiness.probe.client import GuardedClient
from readiness.probe.oidc_probe import OidcTarget, discover, probe_code_flow, probe_redirects

__all__ = ["OIDC_PROBE", "SHOTS", "STEPS", "TILE_WATCH", "TRACE_LOG", "FunnelApps", "Journey", "JourneyRunner",
           "StepFailed", "evaluate", "funnel_apps", "oidc_target", "probe_identity", "run_signups", "write_apps",
           "write_recovery"]

TRACE_LOG = "evidence/auth_trace_log.json"
TILE_WATCH = "evidence/b2c_tile_watch.json"
OIDC_PROBE = "evidence/b2c_oidc_probe.json"
def oidc_target(params: Params) -> OidcTarget:
    f, apps = params.funnels, funnel_apps(params)
    return OidcTarget(app_id=apps.identity.id, issuer=apps.identity.base_url, client_id=f.oidc_client_id,
                      redirect_uri=apps.student.url(f.callback_path), scope=f.oidc_scope,
                      algorithms=tuple(f.id_token_algorithms), leeway_s=float(f.id_token_leeway_s))


# -- 1. identity provider --------------------------------------------------------------------
@part("b2c")
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
                        headers=synthetic_headers(phase, client), allowed_hosts=allowed_hosts(params),
                        selectors=params.funnels.selectors, email_prefix=f"qa+oidc-{stamp}",
                        timeout_s=params.funnels.step_timeout_s, synthetic_identity=phase.synthetic_identity)
            return out

    result = aio.run(go())
    phase.run.write_json(OIDC_PROBE, result)
    checks = phase.record(b2c_verdicts.identity_checks(phase, result, OIDC_PROBE))
    return b2c_verdicts.frame(checks)


# -- 2. journeys --------------------------------------------------------------------------------

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


@part("b2c")
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
            runner = JourneyRunner(phase, client)
            wanted: dict[str, float] = {}
            done = asyncio.Event()
            watcher = asyncio.create_task(_watch_tile(client, tile_url, f.tile_id, wanted, done,
                                                      params.thresholds.telemetry_arrival_s, f.tile_poll_s))
            gate = asyncio.Semaphore(f.concurrency)

            async def one(i: int) -> Journey:
                async with gate:
                    return await runner.journey(browser, i, wanted.__setitem__)

            try:
                journeys = await asyncio.gather(*(one(i) for i in range(1, f.b2c_signups + 1)))
            finally:
                done.set()
            watch = await watcher
            rows = [{**{k: v for k, v in dataclasses.asdict(j).items()
                        if k not in ("signup_epoch", "set_cookies", "step_names")},
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
    phase.record(b2c_verdicts.journey_checks(phase, TRACE_LOG, TILE_WATCH))
    return pd.DataFrame([{"status": "BLOCKED", "reason": refusal}])


# -- 3. and 4. verdicts and reports -------------------------------------------------------------
@part("b2c")
def evaluate(phase: Phase) -> pd.DataFrame:
    """Record the funnel checks and write ``reports/b2c_funnel_results.json``."""
    return b2c_verdicts.evaluate(phase, TRACE_LOG, TILE_WATCH)


@part("b2c")
def write_recovery(phase: Phase) -> Markdown:
    """``reports/b2c_recovery.md``: each B2C check that did not pass, its evidence and the likely fix."""
    return b2c_verdicts.write_recovery(phase)
