"""A3's page preview (through the orchestration breaker) and the breaker's admin view.

``GET /api/pages/preview`` renders a preview by calling the content upstream through the
*same* breaker the orchestration loop uses, with the loop's retry policy for transient
failures (at most 4 attempts, ≲ 0.4 s of waits) but never a retry of a breaker refusal:
while the upstream is down a visitor gets a fast 503 instead of a slow failure. That
makes it the route an audit loads while it injects upstream faults — the answer tells
which of the three things happened, and ``X-Breaker-State`` is on every answer:

* 200 ``{"preview": …, "breaker": "closed"}`` — the upstream answered;
* 503 ``{"shed": true, "breaker": "open"}`` — the breaker refused, no upstream call was made;
* 502 ``{"error": …, "breaker": <state>}`` — every attempt was made and failed.

``GET /admin/breaker`` (admin token) shows the breaker's state and counters, its last
transitions and the loop's cycle outcomes.
"""

from __future__ import annotations

import pybreaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a3_loop import Orchestrator, UpstreamError, UpstreamRejected
from sandbox.common.admin import require_admin
from sandbox.common.context import ctx_of
from sandbox.common.web import json_error

PREVIEW_ROUTE = "/api/pages/preview"
BREAKER_HEADER = "X-Breaker-State"


def orchestrator_of(request: Request) -> Orchestrator:
    orchestrator: Orchestrator = ctx_of(request).services["orchestration"]
    return orchestrator


async def preview(request: Request) -> Response:
    orchestrator = orchestrator_of(request)
    try:
        content = await run_in_threadpool(orchestrator.preview_render, request.state.trace_id)
    except pybreaker.CircuitBreakerError:
        state = orchestrator.state()
        return JSONResponse({"shed": True, "breaker": state}, status_code=503, headers={BREAKER_HEADER: state})
    except (UpstreamError, UpstreamRejected) as exc:
        state = orchestrator.state()
        response = json_error(502, str(exc), breaker=state)
        response.headers[BREAKER_HEADER] = state
        return response
    state = orchestrator.state()
    return JSONResponse({"preview": content, "breaker": state}, headers={BREAKER_HEADER: state})


@require_admin
async def breaker_admin(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(orchestrator_of(request).snapshot))


def preview_routes() -> list[BaseRoute]:
    """Listed before ``/api/pages/{page_id}``, which would otherwise take ``preview`` for an id."""
    return [Route(PREVIEW_ROUTE, preview, methods=["GET"])]


def breaker_admin_routes() -> list[BaseRoute]:
    return [Route("/admin/breaker", breaker_admin, methods=["GET"])]
