"""A7 calls to action: the bandit's arm configuration, impressions and clicks.

Marketing pages show one call to action (CTA) per view, chosen among *arms* by a
bandit whose configuration (``arm_weights``, ``exploration_rate``) A7 serves to its
pages. Three routes, three telemetry contract events:

* ``GET /api/cta/config`` → the configuration, and a ``bandit_config`` event recording
  which policy version a page was handed;
* ``POST /api/cta/impressions`` → a ``cta_impression`` event per CTA shown: the
  high-volume success event the emitter samples at 10% (the rate travels on the event
  as ``sample_rate``). A page that failed to render its CTA reports it with an ``error``
  field: such an event is an error and is always shipped;
* ``POST /api/cta/clicks`` → a ``cta_emitted`` event: the CTA sent a visitor on.

Impressions and clicks are side effects, so both demand ``X-Idempotency-Key`` and
``X-Trace-Id`` (428 otherwise). Nothing is stored here: the event carries the request's
key and trace id, so a client's retry yields the same (key, trace) pair and A8 keeps it
once — the dedupe lives where the counting happens.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.context import ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.web import contract_json, json_error

CONFIG_ROUTE = "/api/cta/config"
IMPRESSIONS_ROUTE = "/api/cta/impressions"
CLICKS_ROUTE = "/api/cta/clicks"
POLICY_VERSION = "cta-2024-05-01"
ARM_WEIGHTS = {"signup_hero": 0.5, "pricing_banner": 0.3, "provider_invite": 0.2}
EXPLORATION_RATE = 0.1
MAX_TEXT = 200
MAX_KEY = 255
BODY_FIELDS = {"arm_id", "page", "error", "target", "tags"}


class CtaError(ValueError):
    """A CTA beacon body the route cannot accept; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


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
    if arm not in ARM_WEIGHTS:
        raise CtaError("arm_id", f"unknown arm_id {arm!r} (known: {', '.join(ARM_WEIGHTS)})")
    out = {"arm_id": arm, "page": _text(body, "page", required=True, path=True)}
    extra = _text(body, "target", required=False, path=True) if clicks else _text(body, "error", required=False)
    if extra is not None:
        out["target" if clicks else "error"] = extra
    return {k: v for k, v in out.items() if v is not None}


def config(request: Request) -> Response:
    ctx = ctx_of(request)
    body = {"policy_version": POLICY_VERSION, "arm_weights": ARM_WEIGHTS, "exploration_rate": EXPLORATION_RATE}
    emit_event(ctx, "bandit_config", route=CONFIG_ROUTE, status=200, trace_id=request.state.trace_id,
               idempotency_key=request.headers.get("x-idempotency-key", "").strip() or uuid.uuid4().hex,
               tags=request_tags(request), **body)
    return JSONResponse(body)


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
               policy_version=POLICY_VERSION, **fields)
    return JSONResponse({"accepted": True, "event_type": event_type, "trace_id": trace_id, **fields}, status_code=202)


async def impression(request: Request) -> Response:
    return await _beacon(request, "cta_impression", IMPRESSIONS_ROUTE, clicks=False)


async def click(request: Request) -> Response:
    return await _beacon(request, "cta_emitted", CLICKS_ROUTE, clicks=True)


def cta_routes() -> list[BaseRoute]:
    return [
        Route(CONFIG_ROUTE, config, methods=["GET"]),
        Route(IMPRESSIONS_ROUTE, impression, methods=["POST"]),
        Route(CLICKS_ROUTE, click, methods=["POST"]),
    ]
