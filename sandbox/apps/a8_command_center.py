"""A8 — command center: telemetry ingest and queries, tiles, incident banners, dashboard.

Ingest (``POST /api/telemetry/events``) checks, in order: the telemetry key when
``A8_TELEMETRY_KEY`` is configured (401), the contract headers (428), the body shape,
then each event on its own (see :mod:`sandbox.telemetry.schema`); it answers 202 with
accepted, duplicate and rejected counts. Requests refused at the door (401, 428, a body
that is not JSON) are not ingest attempts and are not counted in ``/api/telemetry/stats``.

Two kinds of dedupe work together. Each *event* is deduplicated on its own
``idempotency_key`` + ``trace_id`` within the window, whoever sends it (the store). Each
*batch* follows the shared idempotency contract on its ``X-Idempotency-Key``
(:mod:`sandbox.common.idempotency`): a replay of the same batch gets the stored answer
(status and body, ``Idempotent-Replayed: true``) without a second ingest attempt, the
same key with another body is 422, and 409 while the first is still being ingested. Batch
keys belong to their caller and expire with the same dedupe window, which
``PUT /admin/config`` changes for both at once. An emitter retrying a batch whose answer
it lost therefore sees the original 202 and counts the batch as delivered.

A8 records its own served requests straight into the store through :class:`StoreSink`,
with the same event shape the other apps send over HTTP. The query API is read-only and
needs no key.

The rest of the command center lives in one module per concept: tiles and their exports
(:mod:`sandbox.apps.a8_tiles`, demo mode included), incident banners
(:mod:`sandbox.apps.a8_banners`, fix C), read-only cards posted by an audit run
(:mod:`sandbox.apps.a8_cards`) and the ``/dashboard`` page (:mod:`sandbox.apps.a8_dashboard`).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps import a8_banners, a8_cards, a8_tile_exports, a8_tiles
from sandbox.apps.a8_dashboard import dashboard
from sandbox.common.admin import require_admin
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.emitter import Event
from sandbox.common.idempotency import IdempotencyStore, Outcome, PurgedKeys, run_idempotent_purged
from sandbox.common.synthetic_tables import tagged_json
from sandbox.common.web import (
    BadBody,
    bearer_token,
    json_error,
    parse_iso8601,
    read_json,
    token_matches,
)
from sandbox.telemetry.store import SCHEMA as STORE_SCHEMA
from sandbox.telemetry.store import TelemetryStore

MAX_EVENTS_PER_REQUEST = 1000
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_DEDUPE_WINDOW_S = 86_400.0
INGEST_ROUTE = "/api/telemetry/events"

SCHEMA = STORE_SCHEMA + a8_tiles.SCHEMA + a8_banners.SCHEMA


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


def batch_keys_of(request: Request) -> PurgedKeys:
    keys: PurgedKeys = ctx_of(request).services["batch_keys"]
    return keys


def setup(ctx: AppContext) -> None:
    store = TelemetryStore(ctx.db, ctx.config.dedupe_window_s)
    ctx.services["store"] = store
    ctx.services["batch_keys"] = PurgedKeys(IdempotencyStore(ctx.config.db_path("idempotency"),
                                                            ctx.config.dedupe_window_s))
    board = a8_banners.BannerBoard(ctx, store)
    board.start()
    ctx.services["banners"] = board


def _events_of(body: Any) -> list[Any] | Outcome:
    """The events of a batch (``{"events": [...]}``) or of a single event, or the 422 refusing the shape."""
    if isinstance(body, dict) and "events" in body:
        events = body["events"]
        if not isinstance(events, list):
            return Outcome(422, {"error": "events must be a list"})
    elif isinstance(body, dict):
        events = [body]
    else:
        return Outcome(422, {"error": 'body must be an event object or {"events": [...]}'})
    if len(events) > MAX_EVENTS_PER_REQUEST:
        return Outcome(422, {"error": f"events must hold at most {MAX_EVENTS_PER_REQUEST} events"})
    return events


async def ingest(request: Request) -> Response:
    """``POST /api/telemetry/events`` (see the module docstring): 401, then the batch contract."""
    ctx = ctx_of(request)
    key = ctx.config.telemetry_key
    if key and not token_matches(bearer_token(request), key):
        return json_error(401, "telemetry key required: Authorization: Bearer <A8_TELEMETRY_KEY>")
    store, keys = store_of(request), batch_keys_of(request)

    async def work(body: Any) -> Outcome:
        events = _events_of(body)
        if isinstance(events, Outcome):
            return events
        result = await run_in_threadpool(store.ingest, events, "http")
        return Outcome(202, result.as_json())

    return await run_idempotent_purged(request, keys, INGEST_ROUTE, work)


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


@require_admin
async def admin_config(request: Request) -> Response:
    """``GET``/``PUT /admin/config``: A8's runtime settings (today: the dedupe window of events and batches)."""
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
            batch_keys_of(request).store.window_s = float(value)
    return JSONResponse({"dedupe_window_s": store.dedupe_window_s})


def routes() -> list[BaseRoute]:
    return [
        Route(INGEST_ROUTE, ingest, methods=["POST"]),
        Route("/api/telemetry/events", query_events, methods=["GET"]),
        Route("/api/telemetry/summary", summary, methods=["GET"]),
        Route("/api/telemetry/stats", stats, methods=["GET"]),
        Route("/api/tiles", a8_tiles.tiles_endpoint, methods=["GET"]),
        Route("/api/tiles/{tile_id}/export", a8_tile_exports.export_endpoint, methods=["GET"]),
        Route("/api/banners", a8_banners.raise_endpoint, methods=["POST"]),
        Route("/api/banners", a8_banners.list_endpoint, methods=["GET"]),
        Route("/api/banners/{banner_id}", a8_banners.get_endpoint, methods=["GET"]),
        Route("/api/banners/{banner_id}", a8_banners.clear_endpoint, methods=["DELETE"]),
        Route(a8_cards.ROUTE, a8_cards.post_endpoint, methods=["POST"]),
        Route(a8_cards.ROUTE, a8_cards.list_endpoint, methods=["GET"]),
        Route("/dashboard", dashboard, methods=["GET"]),
    ]


def admin_routes() -> list[BaseRoute]:
    return [Route("/admin/config", admin_config, methods=["GET", "PUT"])]


DEFINITION = AppDefinition(
    app_id="A8",
    schema=SCHEMA,
    seed=a8_tiles.seed,
    routes=routes,
    admin_routes=admin_routes,
    setup=setup,
    make_sink=lambda ctx: StoreSink(ctx.services["store"]),
    # events keep their producer's tags in the stored body; a banner keeps its request's tags
    synthetic_tables=(tagged_json("events", "body", "$.tags.namespace"), tagged_json("banners", "tags", "$.namespace")),
)
