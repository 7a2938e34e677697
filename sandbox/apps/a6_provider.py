"""A6 — provider portal: the B2B side where providers sign up, publish listings and are billed.

Its smoke action lists the published listings with their provider, read from SQLite.
Prices are stored in minor units (cents) as a payment system would.

The B2B funnel's writes — ``POST /api/providers`` (event ``provider_registered``),
``POST /api/listings`` (event ``provider_listing_published`` when published) and
``POST /api/billing/usage`` (:mod:`sandbox.apps.a6_billing`) — all run under the shared
idempotency contract of :mod:`sandbox.common.idempotency`: 428 without
``X-Idempotency-Key``/``X-Trace-Id``, replay of the stored response, 422 for a reused key
with another body, 409 while the first request runs, keys scoped per caller. Each write
has a read-back route (``GET /api/providers/{id}``, ``GET /api/listings/{id}``,
``GET /api/billing/charges/{id}``) so an audit can confirm what was stored.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a6_billing import KNOB, Portal, PortalPolicy, billing_routes, guarded, validate_tags
from sandbox.apps.a6_billing import SCHEMA as BILLING_SCHEMA
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.idempotency import IdempotencyStore, Outcome
from sandbox.common.synthetic_tables import owned_by, tagged
from sandbox.common.web import json_error, utc_now_iso

PROVIDERS_ROUTE = "/api/providers"
LISTINGS_ROUTE = "/api/listings"
MAX_NAME = 200
MAX_PRICE_CENTS = 10_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS providers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    namespace TEXT  -- X-Namespace of the request (synthetic traffic), else NULL
);
CREATE TABLE IF NOT EXISTS listings (
    id TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL REFERENCES providers (id),
    title TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    updated_at TEXT NOT NULL,
    namespace TEXT
);
"""


def seed(ctx: AppContext) -> None:
    now = utc_now_iso()
    ctx.db.seed(
        "providers",
        ("id", "name", "created_at"),
        [("prov-northwind", "Northwind Academy", now), ("prov-contoso", "Contoso Learning", now)],
    )
    ctx.db.seed(
        "listings",
        ("id", "provider_id", "title", "price_cents", "currency", "status", "updated_at"),
        [
            ("lst-0001", "prov-northwind", "Applied statistics bootcamp", 24_900, "usd", "published", now),
            ("lst-0002", "prov-northwind", "Career coaching, 4 sessions", 19_900, "usd", "published", now),
            ("lst-0003", "prov-contoso", "Cloud fundamentals", 14_900, "usd", "published", now),
            ("lst-0004", "prov-contoso", "Security essentials (draft)", 9_900, "usd", "draft", now),
        ],
    )


def list_listings(request: Request) -> Response:
    rows = ctx_of(request).db.query(
        "SELECT l.id, l.title, l.price_cents, l.currency, l.provider_id, p.name AS provider_name, l.updated_at"
        " FROM listings AS l JOIN providers AS p ON p.id = l.provider_id"
        " WHERE l.status = 'published' ORDER BY l.id"
    )
    listings = [dict(r) for r in rows]
    return JSONResponse({"listings": listings, "count": len(listings)})


def setup(ctx: AppContext) -> None:
    """The portal's idempotency store (its own SQLite file) and its policy knob."""
    policy = PortalPolicy()
    ctx.faults.register(KNOB, policy)
    store = IdempotencyStore(ctx.config.db_path("idempotency"), ctx.config.dedupe_window_s)
    ctx.services["portal"] = Portal(idempotency=store, policy=policy)


def _text(body: dict[str, Any], name: str, limit: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValueError(f"{name} must be a non-empty string of at most {limit} characters")
    return value.strip()


def _only(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unexpected = sorted(set(body) - allowed)
    if unexpected:
        raise ValueError(f"unexpected field: {unexpected[0]}")
    validate_tags(body)
    return body


def _register(ctx: AppContext, body: Any, namespace: str | None = None) -> Outcome:
    try:
        name = _text(_only(body, {"name", "tags"}), "name", MAX_NAME)
    except ValueError as exc:
        return Outcome(422, {"error": str(exc)})
    provider = {"provider_id": f"prov_{secrets.token_hex(8)}", "name": name, "status": "active",
                "created_at": utc_now_iso()}
    ctx.db.execute("INSERT INTO providers (id, name, created_at, namespace) VALUES (?, ?, ?, ?)",
                   (provider["provider_id"], name, provider["created_at"], namespace))
    return Outcome(201, provider, headers={"Location": f"{PROVIDERS_ROUTE}/{provider['provider_id']}"})


def _listing_form(body: Any) -> tuple[str, str, int, str, str]:
    form = _only(body, {"provider_id", "title", "price_cents", "currency", "status", "tags"})
    provider_id = _text(form, "provider_id", MAX_NAME)
    title = _text(form, "title", MAX_NAME)
    price = form.get("price_cents")
    if isinstance(price, bool) or not isinstance(price, int) or not 0 <= price <= MAX_PRICE_CENTS:
        raise ValueError(f"price_cents must be an integer between 0 and {MAX_PRICE_CENTS}")
    currency = form.get("currency", "usd")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise ValueError("currency must be a three-letter ISO 4217 code")
    status = form.get("status", "published")
    if status not in ("draft", "published"):
        raise ValueError("status must be draft or published")
    return provider_id, title, price, currency.lower(), status


def _create_listing(ctx: AppContext, body: Any, namespace: str | None = None) -> Outcome:
    try:
        provider_id, title, price, currency, status = _listing_form(body)
    except ValueError as exc:
        return Outcome(422, {"error": str(exc)})
    if not ctx.db.query("SELECT 1 FROM providers WHERE id = ?", (provider_id,)):
        return Outcome(422, {"error": f"unknown provider_id: {provider_id}", "field": "provider_id"})
    listing = {"listing_id": f"lst_{secrets.token_hex(8)}", "provider_id": provider_id, "title": title,
               "price_cents": price, "currency": currency, "status": status, "updated_at": utc_now_iso()}
    ctx.db.execute(
        "INSERT INTO listings (id, provider_id, title, price_cents, currency, status, updated_at, namespace)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (listing["listing_id"], provider_id, title, price, currency, status, listing["updated_at"], namespace),
    )
    return Outcome(201, listing, headers={"Location": f"{LISTINGS_ROUTE}/{listing['listing_id']}"})


def _emit(request: Request, event_type: str, route: str, key: str | None, fallback_key: str, **extra: Any) -> None:
    """A funnel event with the request's trace id and idempotency key (A8 joins and dedupes on both)."""
    emit_event(ctx_of(request), event_type, route=route, status=201, trace_id=request.state.trace_id,
               idempotency_key=key or fallback_key, tags=request_tags(request), **extra)


async def register_provider(request: Request) -> Response:
    ctx = ctx_of(request)
    key = request.headers.get("x-idempotency-key", "").strip() or None

    async def work(body: Any) -> Outcome:
        outcome = await run_in_threadpool(_register, ctx, body, request_tags(request).get("namespace"))
        if outcome.status == 201:
            _emit(request, "provider_registered", PROVIDERS_ROUTE, key, outcome.body["provider_id"],
                  provider_id=outcome.body["provider_id"])
        return outcome

    return await guarded(request, PROVIDERS_ROUTE, work)


async def create_listing(request: Request) -> Response:
    ctx = ctx_of(request)
    key = request.headers.get("x-idempotency-key", "").strip() or None

    async def work(body: Any) -> Outcome:
        outcome = await run_in_threadpool(_create_listing, ctx, body, request_tags(request).get("namespace"))
        if outcome.status == 201 and outcome.body["status"] == "published":
            _emit(request, "provider_listing_published", LISTINGS_ROUTE, key, outcome.body["listing_id"],
                  provider_id=outcome.body["provider_id"], listing_id=outcome.body["listing_id"])
        return outcome

    return await guarded(request, LISTINGS_ROUTE, work)


def _one(request: Request, sql: str, what: str, param: str) -> Response:
    value = request.path_params[param]
    rows = ctx_of(request).db.query(sql, (value,))
    if not rows:
        return json_error(404, f"unknown {what}: {value}")
    return JSONResponse(dict(rows[0]))


def get_provider(request: Request) -> Response:
    return _one(request, "SELECT id AS provider_id, name, created_at FROM providers WHERE id = ?",
                "provider", "provider_id")


def get_listing(request: Request) -> Response:
    return _one(request, "SELECT id AS listing_id, provider_id, title, price_cents, currency, status, updated_at"
                " FROM listings WHERE id = ?", "listing", "listing_id")


def routes() -> list[BaseRoute]:
    return [
        Route(LISTINGS_ROUTE, list_listings, methods=["GET"]),
        Route(LISTINGS_ROUTE, create_listing, methods=["POST"]),
        Route(f"{LISTINGS_ROUTE}/{{listing_id}}", get_listing, methods=["GET"]),
        Route(PROVIDERS_ROUTE, register_provider, methods=["POST"]),
        Route(f"{PROVIDERS_ROUTE}/{{provider_id}}", get_provider, methods=["GET"]),
        *billing_routes(),
    ]


PROVIDERS = tagged("providers")
#: A synthetic provider goes with its charges and listings; tagged charges and listings of others go alone.
SYNTHETIC_TABLES = (owned_by("usage_charges", "provider_id", PROVIDERS, own_namespace=True),
                    owned_by("listings", "provider_id", PROVIDERS, own_namespace=True), PROVIDERS)

DEFINITION = AppDefinition(app_id="A6", schema=SCHEMA + BILLING_SCHEMA, seed=seed, routes=routes, setup=setup,
                           synthetic_tables=SYNTHETIC_TABLES)
