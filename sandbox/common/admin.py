"""The authenticated admin API every app exposes under ``/admin``.

``/admin/faults`` (GET, PUT, DELETE) drives the fault knobs, ``/admin/flags`` (GET, PUT)
the feature flags, ``/admin/telemetry`` (GET) shows the emitter's counters (sent,
dropped by fault, dropped because the queue was full…) so an audit can tell lost
telemetry from telemetry never produced. Every route needs
``Authorization: Bearer <admin token>``: 401 otherwise. A body that is not JSON is a 400;
a JSON body with a bad value is a 422 naming the field, and changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.common.context import ctx_of
from sandbox.common.knobs import KnobError
from sandbox.common.web import BadBody, bearer_token, json_error, read_json, token_matches

Handler = Callable[[Request], Awaitable[Response]]


def require_admin(handler: Handler) -> Handler:
    """Wrap an endpoint so it answers 401 unless the admin bearer token is presented."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        if not token_matches(bearer_token(request), ctx_of(request).config.admin_token):
            return json_error(401, "admin token required: Authorization: Bearer <admin token>")
        return await handler(request)

    return wrapped


async def apply_json(request: Request, apply: Callable[[object], None], snapshot: Callable[[], object]) -> Response:
    """Parse the body, hand it to ``apply``, answer with ``snapshot()`` or the error."""
    try:
        body = await read_json(request)
        apply(body)
    except BadBody as exc:
        return json_error(400, str(exc))
    except KnobError as exc:
        return json_error(422, exc.message, field=exc.field)
    return JSONResponse(snapshot())


@require_admin
async def faults(request: Request) -> Response:
    knobs = ctx_of(request).faults
    if request.method == "PUT":
        return await apply_json(request, knobs.update, knobs.snapshot)
    if request.method == "DELETE":
        knobs.clear()
    return JSONResponse(knobs.snapshot())


@require_admin
async def flags(request: Request) -> Response:
    state = ctx_of(request).flags
    if request.method == "PUT":
        return await apply_json(request, state.update, state.snapshot)
    return JSONResponse(state.snapshot())


@require_admin
async def telemetry(request: Request) -> Response:
    ctx = ctx_of(request)
    counters = ctx.emitter.counters() if ctx.emitter is not None else {}
    sink = ctx.emitter.sink if ctx.emitter is not None else None
    return JSONResponse({"app_id": ctx.config.app_id, "sink": type(sink).__name__ if sink else None, **counters})


def admin_routes() -> list[Route]:
    return [
        Route("/admin/faults", faults, methods=["GET", "PUT", "DELETE"]),
        Route("/admin/flags", flags, methods=["GET", "PUT"]),
        Route("/admin/telemetry", telemetry, methods=["GET"]),
    ]
