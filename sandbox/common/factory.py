"""Build a running Starlette app from an :class:`AppDefinition` and an :class:`AppConfig`.

Every app gets the same skeleton — SQLite file with the shared ``meta`` table, its own
work queue file, fault knobs, flags, a seeded RNG, a telemetry emitter, the shared
routes (``/``, ``/health``, ``/ready``, ``/admin/…`` including the synthetic-data
cleanup API of :mod:`sandbox.common.synthetic_cleanup`) and the middleware — so the role
modules hold only what is specific to their role. Route order matters: admin and probes
first, then the role's routes, then the shared base page, so that a role may serve its
own ``/`` and a role's catch-all route can never shadow a probe.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from sandbox.catalog import role
from sandbox.common import sampling
from sandbox.common.admin import admin_routes
from sandbox.common.config import AppConfig
from sandbox.common.context import AppContext, AppDefinition
from sandbox.common.emitter import Emitter, HttpSink, Sink
from sandbox.common.knobs import Faults, Flags
from sandbox.common.middleware import SandboxMiddleware
from sandbox.common.probes import base_page, health, ready
from sandbox.common.sqlite import META_SCHEMA, Database
from sandbox.common.synthetic_cleanup import migrate, synthetic_routes
from sandbox.common.web import utc_now_iso
from sandbox.common.workqueue import WorkQueue

INGEST_PATH = "/api/telemetry/events"


def default_sink(config: AppConfig) -> Sink | None:
    """HTTP to A8's ingest API; None (events counted, not sent) when A8 is not running."""
    if config.a8_url is None:
        return None
    return HttpSink(f"{config.a8_url}{INGEST_PATH}", config.telemetry_key, config.app_id)


def build_context(config: AppConfig, definition: AppDefinition) -> AppContext:
    """Open the app's files, seed them, and assemble the live parts."""
    rng = random.Random(f"{config.seed}:{config.app_id}")
    db = Database(config.db_path("main"), META_SCHEMA + definition.schema)
    migrate(db, definition.synthetic_tables)  # older state files: add the namespace columns
    db.seed("meta", ("key", "value"), [("app_id", config.app_id), ("created_at", utc_now_iso())])
    ctx = AppContext(
        config=config,
        role=role(config.app_id),
        definition=definition,
        db=db,
        queue=WorkQueue(config.db_path("queue")),
        faults=Faults(rng),
        flags=Flags(config.flags),
        rng=rng,
    )
    definition.seed(ctx)
    if definition.setup is not None:
        definition.setup(ctx)
    sink = definition.make_sink(ctx) if definition.make_sink is not None else default_sink(config)
    ctx.emitter = Emitter(
        sink,
        flush_interval_s=config.flush_interval_s,
        max_queue=config.telemetry_queue_max,
        should_drop=ctx.faults.drop_telemetry,
    )
    sampling.install(ctx)
    return ctx


def build_app(config: AppConfig, definition: AppDefinition) -> Starlette:
    """The ASGI app for one sandbox service, ready for uvicorn."""
    ctx = build_context(config, definition)
    routes: list[BaseRoute] = [
        *admin_routes(),
        *synthetic_routes(),
        *definition.admin_routes(),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        *definition.routes(),
        Route("/", base_page, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.http = httpx.AsyncClient(headers={"X-Source": f"readiness-check-{config.app_id}"})
        assert ctx.emitter is not None
        ctx.emitter.start()
        try:
            yield
        finally:
            await app.state.http.aclose()
            ctx.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SandboxMiddleware, ctx=ctx, routes=routes)],
    )
    app.state.ctx = ctx
    return app
