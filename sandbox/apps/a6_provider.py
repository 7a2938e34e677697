"""A6 — provider portal: the B2B side where providers publish course listings.

Its smoke action lists the published listings with their provider, read from SQLite.
Prices are stored in minor units (cents) as a payment system would.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.web import utc_now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS providers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS listings (
    id TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL REFERENCES providers (id),
    title TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    currency TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    updated_at TEXT NOT NULL
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


def routes() -> list[BaseRoute]:
    return [Route("/api/listings", list_listings, methods=["GET"])]


DEFINITION = AppDefinition(app_id="A6", schema=SCHEMA, seed=seed, routes=routes)
