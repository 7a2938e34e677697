"""A7 calls to action: the live bandit policy, assignments, impressions, clicks, simulation.

Marketing pages show one call to action (CTA) per view, chosen among *arms* by a bandit
policy A7 holds live (:mod:`sandbox.apps.a7_bandit`: weights, exploration rate, the
allocation they imply, seeded draws, the visitor simulator). Routes and their telemetry
contract events:

* ``GET /api/cta/config`` → the live policy and its ``allocation``, and a ``bandit_config``
  event recording which policy version a page was handed;
* ``POST /api/cta/assign`` → A7 draws the arm itself and answers ``{arm_id, propensity,
  policy_version}``; the ``cta_impression`` it emits carries the same propensity, so the
  log supports offline evaluation of any other policy. A replayed key gets the stored
  assignment (same arm) and emits nothing again;
* ``POST /api/cta/impressions`` → a ``cta_impression`` per CTA a page chose and showed
  itself (no propensity: A7 did not draw it). A page that failed to render its CTA
  reports it with an ``error`` field: such an event is an error and is always shipped;
* ``POST /api/cta/clicks`` → a ``cta_emitted`` event: the CTA sent a visitor on;
* ``GET``/``PUT /admin/cta/policy`` (admin token) → the live policy / replace it at once
  (validated; emits ``bandit_config``); a restart restores the default policy;
* ``POST /admin/cta/simulate`` (admin token) → simulated visitors through the live policy
  (one simulation at a time: 409 while one runs; 503 with the visits done when the
  telemetry queue does not drain in time).

``cta_impression`` is the high-volume success event the emitter samples at 10% (the rate
travels on the event as ``sample_rate``). Side-effect routes demand ``X-Idempotency-Key``
and ``X-Trace-Id`` (428 otherwise). Beacons store nothing: the event carries the request's
key and trace id, so a client's retry yields the same (key, trace) pair and A8 keeps it
once — the dedupe lives where the counting happens.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a7_bandit import (
    ARMS,
    MAX_SIMULATION_S,
    SIMULATOR_SOURCE,
    LivePolicy,
    PolicyError,
    Simulation,
    emit_impression,
    parse_policy,
    parse_simulation,
    simulate,
)
from sandbox.common.admin import require_admin
from sandbox.common.context import AppContext, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.idempotency import IdempotencyStore, Outcome, PurgedKeys, run_idempotent_purged
from sandbox.common.web import BadBody, FieldError, contract_json, json_error, read_json

CONFIG_ROUTE = "/api/cta/config"
ASSIGN_ROUTE = "/api/cta/assign"
IMPRESSIONS_ROUTE = "/api/cta/impressions"
CLICKS_ROUTE = "/api/cta/clicks"
POLICY_ROUTE = "/admin/cta/policy"
SIMULATE_ROUTE = "/admin/cta/simulate"
POLICY_SERVICE = "cta_policy"
KEYS_SERVICE = "cta_idempotency"
MAX_TEXT = 200
MAX_KEY = 255
BODY_FIELDS = {"arm_id", "page", "error", "target", "tags"}


class CtaError(FieldError):
    """A CTA beacon body the route cannot accept; ``field`` names the culprit."""


def _text(body: dict[str, Any], name: str, *, required: bool, path: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise CtaError(name, f"{name} must be a non-empty string of at most {MAX_TEXT} characters")
    if path and not value.startswith("/"):
        raise CtaError(name, f"{name} must be a path starting with '/'")
    return value


def validate_beacon(body: Any, *, clicks: bool) -> dict[str, str]:
    """The beacon's fields, or :class:`CtaError` naming the first bad one."""
    if not isinstance(body, dict):
        raise CtaError("body", "body must be a JSON object")
    allowed = BODY_FIELDS - ({"error"} if clicks else {"target"})
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise CtaError(unknown[0], f"unknown field: {unknown[0]}")
    arm = _text(body, "arm_id", required=True)
    if arm not in ARMS:
        raise CtaError("arm_id", f"unknown arm_id {arm!r} (known: {', '.join(ARMS)})")
    out = {"arm_id": arm, "page": _text(body, "page", required=True, path=True)}
    extra = _text(body, "target", required=False, path=True) if clicks else _text(body, "error", required=False)
    if extra is not None:
        out["target" if clicks else "error"] = extra
    return {k: v for k, v in out.items() if v is not None}


def setup_cta(ctx: AppContext) -> None:
    """The live policy (default after every start) and the assignments' idempotency keys."""
    ctx.services[POLICY_SERVICE] = LivePolicy(f"{ctx.config.seed}:{ctx.config.app_id}")
    store = IdempotencyStore(ctx.config.db_path("idempotency"), ctx.config.dedupe_window_s)
    ctx.services[KEYS_SERVICE] = PurgedKeys(store)


def live_of(ctx: AppContext) -> LivePolicy:
    live: LivePolicy = ctx.services[POLICY_SERVICE]
    return live


def validate_assign(body: Any) -> str:
    """The page of an assignment request, or :class:`CtaError` naming the bad field."""
    if not isinstance(body, dict):
        raise CtaError("body", "body must be a JSON object")
    unknown = sorted(set(body) - {"page"})
    if unknown:
        raise CtaError(unknown[0], f"unknown field: {unknown[0]}")
    page = _text(body, "page", required=True, path=True)
    assert page is not None
    return page


def _emit_config(request: Request, route: str, body: dict[str, Any]) -> None:
    emit_event(ctx_of(request), "bandit_config", route=route, status=200, trace_id=request.state.trace_id,
               idempotency_key=request.headers.get("x-idempotency-key", "").strip() or uuid.uuid4().hex,
               tags=request_tags(request), **body)


def config(request: Request) -> Response:
    """The live policy; the event records which version (and allocation) a page was handed."""
    body = live_of(ctx_of(request)).current.as_json()
    _emit_config(request, CONFIG_ROUTE, body)
    return JSONResponse(body)


async def assign(request: Request) -> Response:
    """Draw the CTA here rather than in the page, so the logged propensity is exact; under the
    idempotency contract, so a retried page load gets its first arm back and no second impression."""
    ctx = ctx_of(request)

    async def work(body: Any) -> Outcome:
        try:
            page = validate_assign(body)
        except CtaError as exc:
            return Outcome(422, {"error": exc.message, "field": exc.field})
        assignment = live_of(ctx).assign()
        emit_impression(ctx, assignment, route=ASSIGN_ROUTE, status=200, trace_id=request.state.trace_id,
                        idempotency_key=request.headers["x-idempotency-key"].strip(), tags=request_tags(request),
                        page=page)
        return Outcome(200, assignment.as_json())

    keys: PurgedKeys = ctx.services[KEYS_SERVICE]
    return await run_idempotent_purged(request, keys, ASSIGN_ROUTE, work)


async def _beacon(request: Request, event_type: str, route: str, *, clicks: bool) -> Response:
    body, refused = await contract_json(request)
    if refused is not None:
        return refused
    try:
        fields = validate_beacon(body, clicks=clicks)
    except CtaError as exc:
        return json_error(422, exc.message, field=exc.field)
    key = request.headers["x-idempotency-key"].strip()
    if len(key) > MAX_KEY:
        return json_error(422, f"X-Idempotency-Key must be at most {MAX_KEY} characters", field="X-Idempotency-Key")
    ctx = ctx_of(request)
    trace_id = request.state.trace_id  # the caller's, as the middleware adopted it
    emit_event(ctx, event_type, route=route, status=202, trace_id=trace_id,
               idempotency_key=key, tags=request_tags(request),
               policy_version=live_of(ctx).current.policy_version, **fields)
    return JSONResponse({"accepted": True, "event_type": event_type, "trace_id": trace_id, **fields}, status_code=202)


async def impression(request: Request) -> Response:
    return await _beacon(request, "cta_impression", IMPRESSIONS_ROUTE, clicks=False)


async def click(request: Request) -> Response:
    return await _beacon(request, "cta_emitted", CLICKS_ROUTE, clicks=True)


@require_admin
async def policy(request: Request) -> Response:
    """``GET`` the live policy; ``PUT`` a new one, applied to the very next draw."""
    live = live_of(ctx_of(request))
    if request.method == "PUT":
        try:
            new = parse_policy(await read_json(request))
        except BadBody as exc:
            return json_error(400, str(exc), field="body")
        except PolicyError as exc:
            return json_error(422, exc.message, field=exc.field)
        _emit_config(request, POLICY_ROUTE, live.replace(new).as_json())
    return JSONResponse(live.current.as_json())


@require_admin
async def simulate_visits(request: Request) -> Response:
    """Simulated visitors through the live policy (bounded in count and time), one at a time."""
    try:
        visits, seed = parse_simulation(await read_json(request))
    except BadBody as exc:
        return json_error(400, str(exc), field="body")
    except PolicyError as exc:
        return json_error(422, exc.message, field=exc.field)
    ctx = ctx_of(request)
    live = live_of(ctx)
    tags = {**request_tags(request), "source": SIMULATOR_SOURCE}

    def run() -> Simulation | None:
        if not live.simulation_lock.acquire(blocking=False):
            return None
        try:
            return simulate(ctx, live, visits, live.simulator_rng(seed), tags, route=SIMULATE_ROUTE)
        finally:
            live.simulation_lock.release()

    done = await run_in_threadpool(run)
    if done is None:
        return json_error(409, "a simulation is already running on this app")
    if not done.complete:
        return json_error(503, f"the telemetry queue did not drain within {MAX_SIMULATION_S:g} s: stopped after "
                               f"{done.visits} of {visits} visits so that no event is dropped", **done.as_json())
    return JSONResponse(done.as_json())


def cta_routes() -> list[BaseRoute]:
    return [
        Route(CONFIG_ROUTE, config, methods=["GET"]),
        Route(ASSIGN_ROUTE, assign, methods=["POST"]),
        Route(IMPRESSIONS_ROUTE, impression, methods=["POST"]),
        Route(CLICKS_ROUTE, click, methods=["POST"]),
    ]


def cta_admin_routes() -> list[BaseRoute]:
    return [
        Route(POLICY_ROUTE, policy, methods=["GET", "PUT"]),
        Route(SIMULATE_ROUTE, simulate_visits, methods=["POST"]),
    ]
