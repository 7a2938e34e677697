"""A8 — command center: telemetry ingest and queries, and the tiles its dashboards show.

Ingest (``POST /api/telemetry/events``) checks, in order: the telemetry key when
``A8_TELEMETRY_KEY`` is configured (401), the contract headers (428), the body shape,
then each event on its own (see :mod:`sandbox.telemetry.schema`); it answers 202 with
accepted, duplicate and rejected counts. Requests refused at the door (401, 428, a body
that is not JSON) are not ingest attempts and are not counted in ``/api/telemetry/stats``.

A8 records its own served requests straight into the store through :class:`StoreSink`,
with the same event shape the other apps send over HTTP. Tiles are defined in the
``tile_defs`` table (id, title, metric, window) and computed from the store on request.
The query API is read-only and needs no key.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.admin import require_admin
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.emitter import Event
from sandbox.common.web import (
    BadBody,
    bearer_token,
    contract_json,
    json_error,
    parse_iso8601,
    read_json,
    token_matches,
    utc_now_iso,
)
from sandbox.telemetry.store import SCHEMA as STORE_SCHEMA
from sandbox.telemetry.store import TelemetryStore

MAX_EVENTS_PER_REQUEST = 1000
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_DEDUPE_WINDOW_S = 86_400.0

SCHEMA = (
    STORE_SCHEMA
    + """
CREATE TABLE IF NOT EXISTS tile_defs (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    metric TEXT NOT NULL CHECK (metric IN ('requests', 'errors', 'p95_ms', 'acceptance')),
    window_s REAL NOT NULL CHECK (window_s > 0),
    position INTEGER NOT NULL
);
"""
)

TILE_DEFS = [
    ("requests_per_app", "Requests per app (last minute)", "requests", 60, 1),
    ("errors_per_app", "Server errors per app (last minute)", "errors", 60, 2),
    ("p95_ms_per_app", "P95 latency per app, ms (last minute)", "p95_ms", 60, 3),
    ("telemetry_acceptance", "Telemetry acceptance (last 5 minutes)", "acceptance", 300, 4),
]


class StoreSink:
    """Emitter sink writing A8's own request events directly into its store."""

    def __init__(self, store: TelemetryStore) -> None:
        self.store = store

    def send(self, events: list[Event], batch_key: str, batch_trace: str) -> None:
        self.store.ingest(events, source="internal")

    def close(self) -> None:
        """Nothing to release: the store's database is closed with the app."""


def store_of(request: Request) -> TelemetryStore:
    store: TelemetryStore = ctx_of(request).services["store"]
    return store


def seed(ctx: AppContext) -> None:
    ctx.db.seed("tile_defs", ("id", "title", "metric", "window_s", "position"), TILE_DEFS)


def setup(ctx: AppContext) -> None:
    ctx.services["store"] = TelemetryStore(ctx.db, ctx.config.dedupe_window_s)


async def ingest(request: Request) -> Response:
    ctx = ctx_of(request)
    key = ctx.config.telemetry_key
    if key and not token_matches(bearer_token(request), key):
        return json_error(401, "telemetry key required: Authorization: Bearer <A8_TELEMETRY_KEY>")
    body, refused = await contract_json(request)
    if refused is not None:
        return refused
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list):
            return json_error(422, "events must be a list")
    elif isinstance(body, dict):
        events = [body]
    else:
        return json_error(422, 'body must be an event object or {"events": [...]}')
    if len(events) > MAX_EVENTS_PER_REQUEST:
        return json_error(422, f"events must hold at most {MAX_EVENTS_PER_REQUEST} events")
    result = await run_in_threadpool(store_of(request).ingest, events, "http")
    return JSONResponse(result.as_json(), status_code=202)


class QueryError(ValueError):
    """A query parameter the API cannot use."""


def _text(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


def _time(request: Request, name: str) -> float | None:
    raw = _text(request, name)
    if raw is None:
        return None
    epoch = parse_iso8601(raw)
    if epoch is None:
        raise QueryError(f"{name} must be an ISO-8601 date-time")
    return epoch


def _limit(request: Request) -> int:
    raw = _text(request, "limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise QueryError(f"limit must be an integer between 1 and {MAX_LIMIT}")
    return int(raw)


def query_events(request: Request) -> Response:
    try:
        params: dict[str, Any] = {
            "app_id": _text(request, "app_id"),
            "event_type": _text(request, "event_type"),
            "trace_id": _text(request, "trace_id"),
            "since": _time(request, "since"),
            "until": _time(request, "until"),
            "limit": _limit(request),
        }
    except QueryError as exc:
        return json_error(422, str(exc))
    events = store_of(request).events(**params)
    return JSONResponse({"events": events, "count": len(events), "limit": params["limit"]})


def summary(request: Request) -> Response:
    try:
        since, until = _time(request, "since"), _time(request, "until")
    except QueryError as exc:
        return json_error(422, str(exc))
    return JSONResponse(
        store_of(request).summary(
            app_id=_text(request, "app_id"),
            event_type=_text(request, "event_type") or "http_request",
            since=since,
            until=until,
        )
    )


def stats(request: Request) -> Response:
    try:
        since, until = _time(request, "since"), _time(request, "until")
    except QueryError as exc:
        return json_error(422, str(exc))
    return JSONResponse(store_of(request).stats(since=since, until=until))


TILE_REFRESH_S = 1.0
_tile_cache: dict[str, Any] = {"at": 0.0, "body": None}


def tiles(request: Request) -> Response:
    """Every tile in ``tile_defs`` order; acceptance = (accepted + duplicates) / received.

    Like a real dashboard backend, tiles are recomputed at most once per
    ``TILE_REFRESH_S``: each one scans a minute of events, and a page polled by many
    viewers must not scale that scan with the number of viewers.
    """
    now = time.time()
    if _tile_cache["body"] is not None and now - _tile_cache["at"] < TILE_REFRESH_S:
        return JSONResponse(_tile_cache["body"])
    ctx = ctx_of(request)
    store = store_of(request)
    out = []
    for d in ctx.db.query("SELECT id, title, metric, window_s FROM tile_defs ORDER BY position"):
        if d["metric"] == "acceptance":
            counts = store.stats(since=now - d["window_s"], until=None)
            received = counts["received"]
            ratio = (counts["accepted"] + counts["duplicates"]) / received if received else None
            values: dict[str, Any] = {**counts, "ratio": ratio}
        else:
            values = store.per_app(d["metric"], now - d["window_s"])
        out.append(
            {"id": d["id"], "title": d["title"], "metric": d["metric"], "window_s": d["window_s"], "values": values}
        )
    body = {"generated_at": utc_now_iso(), "refresh_s": TILE_REFRESH_S, "tiles": out}
    _tile_cache.update(at=now, body=body)
    return JSONResponse(body)


@require_admin
async def admin_config(request: Request) -> Response:
    """``GET``/``PUT /admin/config``: A8's runtime settings (today: the dedupe window)."""
    store = store_of(request)
    if request.method == "PUT":
        try:
            body = await read_json(request)
        except BadBody as exc:
            return json_error(400, str(exc))
        if not isinstance(body, dict):
            return json_error(422, "body must be a JSON object", field="body")
        for name in body:
            if name != "dedupe_window_s":
                return json_error(422, f"unknown config key: {name}", field=str(name))
        if "dedupe_window_s" in body:
            value = body["dedupe_window_s"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_DEDUPE_WINDOW_S:
                message = f"dedupe_window_s must be a number of seconds between 0 and {MAX_DEDUPE_WINDOW_S:g}"
                return json_error(422, message, field="dedupe_window_s")
            store.dedupe_window_s = float(value)
    return JSONResponse({"dedupe_window_s": store.dedupe_window_s})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/telemetry/events", ingest, methods=["POST"]),
        Route("/api/telemetry/events", query_events, methods=["GET"]),
        Route("/api/telemetry/summary", summary, methods=["GET"]),
        Route("/api/telemetry/stats", stats, methods=["GET"]),
        Route("/api/tiles", tiles, methods=["GET"]),
    ]


def admin_routes() -> list[BaseRoute]:
    return [Route("/admin/config", admin_config, methods=["GET", "PUT"])]


DEFINITION = AppDefinition(
    app_id="A8",
    schema=SCHEMA,
    seed=seed,
    routes=routes,
    admin_routes=admin_routes,
    setup=setup,
    make_sink=lambda ctx: StoreSink(ctx.services["store"]),
)
