"""The three endpoints every app shares: base page, liveness and deep readiness.

Liveness (``/health``) answers as long as the process serves HTTP and touches nothing
else: a restart loop keyed on it must not be triggered by a sick dependency. Readiness
(``/ready``) is the deep check a load balancer would use to route traffic away: it runs
a real query on the app's database, pushes a probe job through its work queue and asks
the declared upstream's ``/health`` with a short timeout. Any failure → 503
``unready`` with the failing check named. The ``dependencies_down`` fault knob fails a
check without running it, to rehearse an outage. An app whose upstream is not part of
this sandbox has no ``upstream`` check (there is nothing to call).
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from sandbox.common.context import AppContext, ctx_of

CheckResult = dict[str, Any]


async def base_page(request: Request) -> Response:
    """A minimal HTML page naming the app and its role."""
    ctx = ctx_of(request)
    role = ctx.role
    title = html.escape(f"{role.app_id} · {role.title}")
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><h1>{title}</h1><p>{html.escape(role.summary)}</p>"
        f'<ul><li><a href="/health">/health</a></li><li><a href="/ready">/ready</a></li>'
        f'<li><a href="{role.smoke_path}">{role.smoke_path}</a></li></ul></body></html>'
    )
    return HTMLResponse(body)


async def health(request: Request) -> Response:
    ctx = ctx_of(request)
    return JSONResponse({"status": "ok", "app_id": ctx.config.app_id})


async def _timed(name: str, ctx: AppContext, run: Callable[[], Awaitable[None]]) -> CheckResult:
    if ctx.faults.dependency_down(name):
        return {"ok": False, "latency_ms": 0.0, "error": f"{name} marked down by fault knob dependencies_down"}
    start = time.perf_counter()
    try:
        await run()
    except Exception as exc:  # any failure of a dependency is a failed check, reported as such
        error: str | None = f"{type(exc).__name__}: {exc}"[:300]
    else:
        error = None
    return {"ok": error is None, "latency_ms": round((time.perf_counter() - start) * 1000, 3), "error": error}


async def deep_checks(ctx: AppContext, client: httpx.AsyncClient) -> dict[str, CheckResult]:
    """Run the db, queue and upstream checks concurrently."""

    async def db() -> None:
        await run_in_threadpool(ctx.db.scalar, "SELECT count(*) FROM meta")

    async def queue() -> None:
        await run_in_threadpool(ctx.queue.probe)

    async def upstream() -> None:
        url = f"{ctx.config.upstream_url}/health"
        response = await client.get(url, timeout=ctx.config.upstream_timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"{ctx.config.upstream_id} /health answered {response.status_code}")

    checks: dict[str, Callable[[], Awaitable[None]]] = {"db": db, "queue": queue}
    if ctx.config.upstream_url:
        checks["upstream"] = upstream
    results = await asyncio.gather(*(_timed(name, ctx, run) for name, run in checks.items()))
    return dict(zip(checks, results, strict=True))


async def ready(request: Request) -> Response:
    ctx = ctx_of(request)
    flag = ctx.definition.ready_flag
    if flag is not None and not ctx.flags.enabled(flag):
        return PlainTextResponse("Not Found", status_code=404)
    checks = await deep_checks(ctx, request.app.state.http)
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unready", "app_id": ctx.config.app_id, "checks": checks},
        status_code=200 if ok else 503,
    )
