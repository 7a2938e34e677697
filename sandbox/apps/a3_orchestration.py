"""A3 — orchestration: the autonomous runs that build pages and refresh calls to action.

Its smoke action reports the state of those runs from SQLite: each run with its progress,
counts per state, and the depth of A3's work queue (the backlog an operator would watch).

``POST /api/pages`` builds and publishes a learner's page (the student app asks for the
first page right after checkout); see :mod:`sandbox.apps.a3_pages`.

The autonomous runs themselves are a background loop started with the app (see
:mod:`sandbox.apps.a3_loop`): one cycle every half second, each calling the content
upstream (A4) through retries and a circuit breaker. The smoke action reports them under
``orchestration`` (counts over the kept runs, the latest few); ``GET /api/pages/preview``
and ``GET /admin/breaker`` expose the breaker (see :mod:`sandbox.apps.a3_preview`).
"""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a3_loop import setup_orchestration
from sandbox.apps.a3_pages import SCHEMA as PAGES_SCHEMA
from sandbox.apps.a3_pages import page_routes
from sandbox.apps.a3_preview import breaker_admin_routes, orchestrator_of, preview_routes
from sandbox.apps.a3_runs import RUNS_SCHEMA
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.synthetic_tables import tagged
from sandbox.common.web import utc_now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'completed', 'failed')),
    progress REAL NOT NULL CHECK (progress BETWEEN 0 AND 1),
    updated_at TEXT NOT NULL
);
"""


def seed(ctx: AppContext) -> None:
    now = utc_now_iso()
    ctx.db.seed(
        "runs",
        ("id", "kind", "state", "progress", "updated_at"),
        [
            ("run-0001", "page_build", "completed", 1.0, now),
            ("run-0002", "cta_refresh", "running", 0.4, now),
            ("run-0003", "orchestration_cycle", "queued", 0.0, now),
        ],
    )


def runs_status(request: Request) -> Response:
    ctx = ctx_of(request)
    runs = [dict(r) for r in ctx.db.query("SELECT id, kind, state, progress, updated_at FROM runs ORDER BY id")]
    counts = Counter(run["state"] for run in runs)
    return JSONResponse(
        {
            "runs": runs,
            "counts": {state: counts.get(state, 0) for state in ("queued", "running", "completed", "failed")},
            "queue_depth": ctx.queue.depth(),
            "orchestration": orchestrator_of(request).runs.summary(),
        }
    )


def routes() -> list[BaseRoute]:
    return [Route("/api/runs/status", runs_status, methods=["GET"]), *preview_routes(), *page_routes()]


DEFINITION = AppDefinition(app_id="A3", schema=SCHEMA + PAGES_SCHEMA + RUNS_SCHEMA, seed=seed, routes=routes,
                           admin_routes=breaker_admin_routes, setup=setup_orchestration,
                           synthetic_tables=(tagged("pages"),))
