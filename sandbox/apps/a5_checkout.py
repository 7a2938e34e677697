"""A5 — checkout: the price list and the creation of pending checkout sessions.

Creating a checkout session is a payment side effect, so it demands the two contract
headers: without ``X-Idempotency-Key`` or ``X-Trace-Id`` the answer is 428 naming what is
missing. With both, the session is stored as ``pending`` together with the exact response
sent, keyed by the idempotency key: a replay of the same key with the same body gets the
stored response again (``Idempotent-Replayed: true``) and creates nothing; the same key
with a different body is refused with 422. Bodies are compared in canonical JSON form,
so whitespace or key order do not make a request "different".
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.web import BadBody, contract_json, json_error, utc_now_iso

MAX_QUANTITY = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS prices (
    id TEXT PRIMARY KEY,
    nickname TEXT NOT NULL,
    unit_amount INTEGER NOT NULL CHECK (unit_amount >= 0),  -- minor units (cents)
    currency TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS checkout_sessions (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL,
    price_id TEXT NOT NULL REFERENCES prices (id),
    quantity INTEGER NOT NULL,
    amount_total INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

PRICES = [
    ("price_micro_qa", "Micro QA Charge", 50, "usd", 1),
    ("price_credits_100", "100 AI credits", 900, "usd", 1),
    ("price_pro_monthly", "Pro monthly", 1900, "usd", 1),
]


def seed(ctx: AppContext) -> None:
    ctx.db.seed("prices", ("id", "nickname", "unit_amount", "currency", "active"), PRICES)


def list_prices(request: Request) -> Response:
    rows = ctx_of(request).db.query(
        "SELECT id, nickname, unit_amount, currency FROM prices WHERE active = 1 ORDER BY unit_amount"
    )
    prices = [dict(r) for r in rows]
    return JSONResponse({"prices": prices, "count": len(prices)})


def _validate(body: Any) -> tuple[str, int]:
    if not isinstance(body, dict):
        raise BadBody("body must be a JSON object")
    price_id = body.get("price_id")
    if not isinstance(price_id, str) or not price_id:
        raise ValueError("price_id is required")
    quantity = body.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
        raise ValueError(f"quantity must be an integer between 1 and {MAX_QUANTITY}")
    return price_id, quantity


def _replay(row: sqlite3.Row, request_hash: str) -> Response:
    if row["request_hash"] != request_hash:
        return json_error(422, "X-Idempotency-Key was already used with a different request body")
    return JSONResponse(json.loads(row["response"]), status_code=201, headers={"Idempotent-Replayed": "true"})


def _create(ctx: AppContext, key: str, trace_id: str, request_hash: str, body: Any) -> Response:
    existing = ctx.db.query("SELECT * FROM checkout_sessions WHERE idempotency_key = ?", (key,))
    if existing:
        return _replay(existing[0], request_hash)
    try:
        price_id, quantity = _validate(body)
    except ValueError as exc:  # BadBody included: a JSON body of the wrong shape
        return json_error(422, str(exc))
    price = ctx.db.query("SELECT * FROM prices WHERE id = ? AND active = 1", (price_id,))
    if not price:
        return json_error(422, f"unknown price_id: {price_id}")
    session = {
        "id": f"cs_test_{secrets.token_hex(12)}",
        "object": "checkout.session",
        "status": "pending",
        "price_id": price_id,
        "quantity": quantity,
        "amount_total": price[0]["unit_amount"] * quantity,
        "currency": price[0]["currency"],
        "trace_id": trace_id,
        "created": utc_now_iso(),
    }
    try:
        ctx.db.execute(
            "INSERT INTO checkout_sessions (id, idempotency_key, request_hash, price_id, quantity,"
            " amount_total, currency, status, trace_id, response, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session["id"],
                key,
                request_hash,
                price_id,
                quantity,
                session["amount_total"],
                session["currency"],
                "pending",
                trace_id,
                json.dumps(session),
                session["created"],
            ),
        )
    except sqlite3.IntegrityError:  # a concurrent request with the same key won the insert
        row = ctx.db.query("SELECT * FROM checkout_sessions WHERE idempotency_key = ?", (key,))[0]
        return _replay(row, request_hash)
    return JSONResponse(session, status_code=201)


async def create_session(request: Request) -> Response:
    body, refused = await contract_json(request)
    if refused is not None:
        return refused
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    key = request.headers["x-idempotency-key"].strip()
    trace_id = request.headers["x-trace-id"].strip()
    return await run_in_threadpool(_create, ctx_of(request), key, trace_id, request_hash, body)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/prices", list_prices, methods=["GET"]),
        Route("/api/checkout/sessions", create_session, methods=["POST"]),
    ]


DEFINITION = AppDefinition(app_id="A5", schema=SCHEMA, seed=seed, routes=routes)
