"""The ASGI middleware every app runs behind: timing, trace ids, faults, telemetry.

For each HTTP request it

1. adopts the caller's ``X-Trace-Id`` (or makes one when it is missing or longer than
   ``MAX_TRACE_ID`` characters) and echoes it on the response;
2. resolves the route *template* (``/api/runs/status``, not the raw path) so that fault
   knobs and telemetry speak of routes, not URLs;
3. applies the fault knobs — forced 503 window, per-request fault headers (only with
   the right ``X-Sandbox-Token``), injected latency, injected 500s — to every route
   except ``/admin/…``, which must stay reachable to undo a fault;
4. adds ``Server-Timing: app;dur=<ms>`` (time from arrival to response start,
   injected latency included, since that is what the server spent);
5. emits one ``http_request`` event after the response, off the request path.

It is plain ASGI rather than ``BaseHTTPMiddleware`` so that it adds no task hop and no
body buffering to the requests it measures.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.common.context import AppContext
from sandbox.common.knobs import MAX_DELAY_MS
from sandbox.common.web import iso_from_epoch, json_error, token_matches

UNMATCHED_ROUTE = "unmatched"
MAX_TRACE_ID = 128  # A8 refuses longer ids; an oversized one is replaced, not forwarded
MAX_TAG = 128
TAG_HEADERS = {
    "x-test-run": "test_run",
    "x-source": "source",
    "x-synthetic-identity": "synthetic_identity",
    "x-env": "env",
    "x-namespace": "namespace",
}


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The path template of the route that will handle ``scope`` (method ignored)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


class SandboxMiddleware:
    """Wraps the Starlette router of one app (see module docstring)."""

    def __init__(self, app: ASGIApp, ctx: AppContext, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.ctx = ctx
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wall_start = time.time()
        start = time.perf_counter()
        headers = Headers(scope=scope)
        given_trace = headers.get("x-trace-id", "").strip()
        if len(given_trace) > MAX_TRACE_ID:
            given_trace = ""
        trace_id = given_trace or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["trace_id"] = trace_id
        state["trace_id_provided"] = bool(given_trace)
        route = route_template(self.routes, scope)
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = MutableHeaders(scope=message)
                out["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.2f}"
                out["X-Trace-Id"] = trace_id
            await send(message)

        try:
            fault = None if is_admin_path(scope["path"]) else await self._fault_response(route, headers)
            if fault is not None:
                await fault(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self._emit(scope, headers, route, status, trace_id, wall_start, start)

    async def _fault_response(self, route: str, headers: Headers) -> Response | None:
        """A response standing in for the app, or None to let the app answer."""
        faults = self.ctx.faults
        left = faults.forced_503_left_s()
        if left > 0:
            return JSONResponse(
                {"error": "service unavailable (fault knob force_503_s)"},
                status_code=503,
                headers={"Retry-After": str(max(1, round(left)))},
            )
        if token_matches(headers.get("x-sandbox-token"), self.ctx.config.admin_token):
            forced = await self._header_faults(headers)
            if forced is not None:
                return forced
        delay = faults.delay_ms(route)
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        if faults.inject_error(route):
            return json_error(500, "internal error (fault knob error_rate)")
        return None

    @staticmethod
    async def _header_faults(headers: Headers) -> Response | None:
        raw_delay = headers.get("x-sandbox-delay-ms")
        raw_status = headers.get("x-sandbox-status")
        if raw_delay is not None:
            try:
                delay = float(raw_delay)
            except ValueError:
                delay = -1.0
            if not 0 <= delay <= MAX_DELAY_MS:
                return json_error(422, f"X-Sandbox-Delay-Ms must be a number between 0 and {MAX_DELAY_MS:g}")
            await asyncio.sleep(delay / 1000)
        if raw_status is not None:
            if not raw_status.isdigit() or not 200 <= int(raw_status) <= 599:
                return json_error(422, "X-Sandbox-Status must be an integer between 200 and 599")
            code = int(raw_status)
            return JSONResponse({"forced_status": code, "source": "X-Sandbox-Status"}, status_code=code)
        return None

    def _emit(
        self, scope: Scope, headers: Headers, route: str, status: int, trace_id: str, wall: float, start: float
    ) -> None:
        emitter = self.ctx.emitter
        if emitter is None:
            return
        tags = {tag: headers[name][:MAX_TAG] for name, tag in TAG_HEADERS.items() if name in headers}
        emitter.emit(
            {
                "event_type": "http_request",
                "timestamp": iso_from_epoch(wall),
                "app_id": self.ctx.config.app_id,
                "route": route,
                "method": scope["method"],
                "status": status,
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                "trace_id": trace_id,
                "idempotency_key": uuid.uuid4().hex,
                "tags": tags,
            }
        )
