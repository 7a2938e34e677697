"""A5 — checkout: prices, checkout sessions, their payment on Stripe, and credits.

Creating a checkout session (``POST /api/checkout/sessions``) is a payment side effect
and follows the shared idempotency contract (:mod:`sandbox.common.idempotency`): without
``X-Idempotency-Key`` or ``X-Trace-Id`` the answer is 428 naming what is missing; a
replay of the same key with the same body (compared in canonical JSON form, so
whitespace or key order do not make a request "different") gets the stored 201 again
with ``Idempotent-Replayed: true`` and creates nothing; the same key with a different
body is 422, and while the first request is still running, 409. A body the route refuses
(422: unknown price, bad quantity…) does not use up its key — nothing was created, so the
caller may correct the body and retry with the same key, as on Stripe. A key belongs to
its caller (two callers using one key get two sessions) and is new again after the dedupe
window. Each session created emits ``checkout_session_created`` with the request's trace
id and idempotency key, so an audit can count sessions in A8 instead of trusting the
answers. A session names a price of the catalogue (``GET /api/prices``) or any active
one-time price of the Stripe account, which then joins the catalogue; ``user_id`` says
whose ledger its credits go to.

``POST /api/checkout/sessions/{id}/complete`` pays a pending session with a payment
method (``{"payment_method": "pm_card_visa"}``): A5 confirms a PaymentIntent for the
session's amount on Stripe through stripe-python, with its ``STRIPE_SECRET_KEY`` and,
in the sandbox, the local Stripe API (``SANDBOX_STRIPE_URL``) — never Stripe itself,
which the sandbox cannot reach. The request's telemetry tags (``test_run``, ``source``,
``namespace``…) go into the payment's metadata. On success, in one transaction, the
session becomes ``complete`` and the buyer's ledger is credited (:mod:`.a5_ledger`);
then ``checkout_completed`` and ``revenue_settled`` are emitted with
``finance_metrics`` ``{amount_cents, currency, stripe_mode}`` and the same
``revenue_event_id``. A session is paid at most once: it is claimed before Stripe is
called (a second payer meets 409) and the PaymentIntent's Stripe idempotency key is
derived from the session and payment method, so a retried completion cannot charge
twice. A declined card answers 402 and leaves the session pending for another attempt.
The completion route follows the same idempotency contract as the creation.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import stripe
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps import a5_ledger
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.idempotency import IdempotencyStore, Outcome, run_idempotent
from sandbox.common.synthetic_tables import owned_by, tagged
from sandbox.common.web import BadBody, json_error, utc_now_iso

MAX_QUANTITY = 100
MAX_PAYMENT_METHOD = 100
SESSIONS_ROUTE = "/api/checkout/sessions"
COMPLETE_ROUTE = "/api/checkout/sessions/{session_id}/complete"
SESSION_CREATED = "checkout_session_created"
STRIPE_SERVICE = "stripe"
KEYS_SERVICE = "idempotency_keys"
STRIPE_RETRIES = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS prices (
    id TEXT PRIMARY KEY,
    nickname TEXT NOT NULL,
    unit_amount INTEGER NOT NULL CHECK (unit_amount >= 0),  -- minor units (cents)
    currency TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
);
-- Idempotency lives in the shared store, per caller and route: the key is kept here only
-- to join a session to the request that created it, and is not unique (two callers, or
-- one caller after the dedupe window, may create two sessions with one key). Older state
-- folders may still hold a checkout_sessions table whose key was unique across callers:
-- it is no longer read.
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL,
    price_id TEXT NOT NULL REFERENCES prices (id),
    quantity INTEGER NOT NULL,
    amount_total INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    response TEXT NOT NULL,        -- the session as created (the 201 body)
    created_at TEXT NOT NULL,
    namespace TEXT                 -- X-Namespace of the request (synthetic traffic), else NULL
);
""" + a5_ledger.SCHEMA

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


def setup(ctx: AppContext) -> None:
    """The Stripe client (only with a local Stripe URL and a secret key) and the idempotency keys."""
    key = ctx.config.secrets.get("STRIPE_SECRET_KEY")
    if ctx.config.stripe_url and key:
        ctx.services[STRIPE_SERVICE] = stripe.StripeClient(
            key, base_addresses={"api": ctx.config.stripe_url}, http_client=stripe.HTTPXClient(),
            max_network_retries=STRIPE_RETRIES)
    ctx.services[KEYS_SERVICE] = IdempotencyStore(ctx.config.db_path("idempotency"), ctx.config.dedupe_window_s)


def _stripe(ctx: AppContext) -> stripe.StripeClient | None:
    client: stripe.StripeClient | None = ctx.services.get(STRIPE_SERVICE)
    return client


def _not_configured(ctx: AppContext) -> str:
    missing = [what for what, ok in (("SANDBOX_STRIPE_URL", ctx.config.stripe_url),
                                     ("STRIPE_SECRET_KEY", ctx.config.secrets.get("STRIPE_SECRET_KEY"))) if not ok]
    return f"payments are not configured: {' and '.join(missing)} not set"


def _validate(body: Any) -> tuple[str, int]:
    if not isinstance(body, dict):
        raise BadBody("body must be a JSON object")
    price_id = body.get("price_id")
    if not isinstance(price_id, str) or not price_id:
        raise ValueError("price_id is required")
    quantity = body.get("quantity", 1)
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
        raise ValueError(f"quantity must be an integer between 1 and {MAX_QUANTITY}")
    if "user_id" in body and a5_ledger.valid_user_id(body["user_id"]) is None:
        raise ValueError(f"user_id must be a string of 1 to {a5_ledger.MAX_USER_ID} characters")
    return price_id, quantity


async def _adopt_stripe_price(ctx: AppContext, body: Any) -> Outcome | None:
    """Add the body's price to the catalogue when it is an active one-time price on Stripe.

    Returns a refusal only when Stripe cannot be asked (a 502, which frees the key for a
    retry); an unknown price is left for the session's own validation to refuse (422).
    """
    client = _stripe(ctx)
    price_id = body.get("price_id") if isinstance(body, dict) else None
    if client is None or not isinstance(price_id, str) or not price_id.startswith("price_"):
        return None
    if ctx.db.query("SELECT 1 FROM prices WHERE id = ?", (price_id,)):
        return None
    try:
        price = await client.v1.prices.retrieve_async(price_id)
    except stripe.InvalidRequestError:
        return None
    except stripe.StripeError as exc:
        return Outcome(502, {"error": f"payment provider error: {exc.user_message or type(exc).__name__}"})
    if price.active and price.type == "one_time" and price.unit_amount is not None:
        ctx.db.execute("INSERT OR IGNORE INTO prices (id, nickname, unit_amount, currency, active)"
                       " VALUES (?, ?, ?, ?, 1)",
                       (price.id, price.nickname or price.lookup_key or price.id, price.unit_amount, price.currency))
    return None


class Refused(Exception):
    """A body the route will not act on; raised so that the key it reserved is released, not stored."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.body.get("error"))
        self.outcome = outcome


def _create(ctx: AppContext, key: str, trace_id: str, body: Any, namespace: str | None = None) -> dict[str, Any]:
    """Validate the body and store a pending session: the session, or :class:`Refused`."""
    try:
        price_id, quantity = _validate(body)
    except ValueError as exc:  # BadBody included: a JSON body of the wrong shape
        raise Refused(Outcome(422, {"error": str(exc)})) from None
    price = ctx.db.query("SELECT * FROM prices WHERE id = ? AND active = 1", (price_id,))
    if not price:
        raise Refused(Outcome(422, {"error": f"unknown price_id: {price_id}"}))
    session = {
        "id": f"cs_test_{secrets.token_hex(12)}",
        "object": "checkout.session",
        "status": "pending",
        "price_id": price_id,
        "quantity": quantity,
        "amount_total": price[0]["unit_amount"] * quantity,
        "currency": price[0]["currency"],
        "user_id": a5_ledger.valid_user_id(body.get("user_id")),
        "trace_id": trace_id,
        "created": utc_now_iso(),
    }
    ctx.db.execute(
        "INSERT INTO sessions (id, idempotency_key, price_id, quantity, amount_total, currency, status, trace_id,"
        " response, created_at, namespace) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)",
        (session["id"], key, price_id, quantity, session["amount_total"], session["currency"], trace_id,
         json.dumps(session), session["created"], namespace),
    )
    return session


async def create_session(request: Request) -> Response:
    """``POST /api/checkout/sessions`` (see the module docstring)."""
    ctx = ctx_of(request)

    async def work(body: Any) -> Outcome:
        key = request.headers["x-idempotency-key"].strip()
        trace_id = request.headers["x-trace-id"].strip()
        failed = await _adopt_stripe_price(ctx, body)
        if failed is not None:
            return failed
        session = await run_in_threadpool(_create, ctx, key, trace_id, body, request_tags(request).get("namespace"))
        emit_event(ctx, SESSION_CREATED, route=SESSIONS_ROUTE, status=201, trace_id=trace_id, idempotency_key=key,
                   tags=request_tags(request), session_id=session["id"], price_id=session["price_id"],
                   quantity=session["quantity"], amount_total=session["amount_total"], currency=session["currency"],
                   user_id=session["user_id"])
        return Outcome(201, session)

    try:
        return await run_idempotent(request, ctx.services[KEYS_SERVICE], SESSIONS_ROUTE, work)
    except Refused as refused:  # the store freed the key on the way out: the caller may fix the body and retry
        return refused.outcome.response()


def _session(ctx: AppContext, session_id: str) -> dict[str, Any] | None:
    rows = ctx.db.query("SELECT * FROM sessions WHERE id = ?", (session_id,))
    if not rows:
        return None
    created = json.loads(rows[0]["response"])
    return {**created, "status": rows[0]["status"]}


def read_session(request: Request) -> Response:
    """``GET /api/checkout/sessions/{session_id}``: the session now, with its payment once complete."""
    session_id = request.path_params["session_id"]
    session = _session(ctx_of(request), session_id)
    if session is None:
        return json_error(404, f"unknown checkout session: {session_id}")
    return JSONResponse({**session, "completion": a5_ledger.completion_of(request, session_id)})


def _claim(ctx: AppContext, session_id: str) -> Outcome | None:
    """Move the session from pending to paying; the refusal when it is not pending."""
    if ctx.db.execute("UPDATE sessions SET status = 'paying' WHERE id = ? AND status = 'pending'",
                      (session_id,)).rowcount == 1:
        return None
    rows = ctx.db.query("SELECT status FROM sessions WHERE id = ?", (session_id,))
    if not rows:
        return Outcome(404, {"error": f"unknown checkout session: {session_id}"})
    if rows[0]["status"] == "paying":
        return Outcome(409, {"error": f"checkout session {session_id} is being paid by another request"})
    return Outcome(409, {"error": f"checkout session {session_id} is already {rows[0]['status']}"})


def _release(ctx: AppContext, session_id: str) -> None:
    ctx.db.execute("UPDATE sessions SET status = 'pending' WHERE id = ? AND status = 'paying'",
                   (session_id,))


def _metadata(session: dict[str, Any], user_id: str, trace_id: str, tags: dict[str, str]) -> dict[str, str]:
    """What the payment carries on Stripe: the session, the buyer, the trace and the telemetry tags."""
    return {**{k: v[:500] for k, v in tags.items()}, "session_id": session["id"], "price_id": session["price_id"],
            "user_id": user_id, "trace_id": trace_id[:500], "app": "A5"}


async def _pay(ctx: AppContext, session: dict[str, Any], payment_method: str,
               metadata: dict[str, str]) -> Outcome | Any:
    """Confirm a PaymentIntent for the session; the PaymentIntent, or the refusal to send."""
    client = _stripe(ctx)
    if client is None:
        return Outcome(503, {"error": _not_configured(ctx)})
    try:
        intent = await client.v1.payment_intents.create_async(
            {"amount": session["amount_total"], "currency": session["currency"], "payment_method": payment_method,
             "payment_method_types": ["card"], "confirm": True, "metadata": metadata},
            {"idempotency_key": f"a5-{session['id']}-{payment_method}"})
    except stripe.CardError as exc:
        return Outcome(402, {"error": f"payment declined: {exc.user_message}", "code": exc.code})
    except stripe.InvalidRequestError as exc:
        return Outcome(422, {"error": f"payment refused by the provider: {exc.user_message}"})
    except stripe.StripeError as exc:
        return Outcome(502, {"error": f"payment provider error: {exc.user_message or type(exc).__name__}"})
    if intent.status != "succeeded":
        return Outcome(402, {"error": f"payment not completed: PaymentIntent {intent.id} is {intent.status}"})
    return intent


def _complete(ctx: AppContext, completion: dict[str, Any], credits: int) -> None:
    with ctx.db.transaction() as conn:
        conn.execute("UPDATE sessions SET status = 'complete' WHERE id = ?", (completion["session_id"],))
        a5_ledger.record_completion(conn, completion, credits, f"checkout {completion['session_id']}")


async def complete_session(request: Request) -> Response:
    """``POST /api/checkout/sessions/{session_id}/complete`` (see the module docstring)."""
    ctx = ctx_of(request)
    session_id = request.path_params["session_id"]
    tags = request_tags(request)
    trace_id = request.headers.get("x-trace-id", "").strip()

    async def work(body: Any) -> Outcome:
        if not isinstance(body, dict):
            return Outcome(422, {"error": "body must be a JSON object"})
        method = body.get("payment_method")
        if not isinstance(method, str) or not method.startswith("pm_") or len(method) > MAX_PAYMENT_METHOD:
            return Outcome(422, {"error": "payment_method must be a payment method id (pm_…)",
                                 "field": "payment_method"})
        session = _session(ctx, session_id)
        if session is None:
            return Outcome(404, {"error": f"unknown checkout session: {session_id}"})
        user_id = session.get("user_id") or a5_ledger.valid_user_id(body.get("user_id"))
        if user_id is None:
            return Outcome(422, {"error": "user_id is required: give it when creating or completing the session",
                                 "field": "user_id"})
        refused = await run_in_threadpool(_claim, ctx, session_id)
        if refused is not None:
            return refused
        try:
            paid = await _pay(ctx, session, method, _metadata(session, user_id, trace_id, tags))
            if isinstance(paid, Outcome):
                await run_in_threadpool(_release, ctx, session_id)
                return paid
            completion = {"session_id": session_id, "user_id": user_id, "payment_intent": paid.id,
                          "amount_cents": paid.amount, "currency": paid.currency,
                          "stripe_mode": "live" if paid.livemode else "test",
                          "revenue_event_id": f"rev_{paid.id}", "trace_id": trace_id,
                          "completed_at": utc_now_iso()}
            credits = a5_ledger.credits_for(session["price_id"], session["quantity"])
            await run_in_threadpool(_complete, ctx, completion, credits)
        except BaseException:
            await run_in_threadpool(_release, ctx, session_id)
            raise
        _emit(ctx, request, completion, session, credits, tags)
        return Outcome(200, {"id": session_id, "object": "checkout.session", "status": "complete",
                             "payment_status": "paid", "price_id": session["price_id"],
                             "quantity": session["quantity"], "credits_granted": credits, **completion})

    # Keys are scoped by the concrete path: the same key paying another session is another request.
    return await run_idempotent(request, ctx.services[KEYS_SERVICE], request.url.path, work)


def _emit(ctx: AppContext, request: Request, completion: dict[str, Any], session: dict[str, Any], credits: int,
          tags: dict[str, str]) -> None:
    """``checkout_completed`` then ``revenue_settled``, joined by trace id and revenue event id.

    A8 dedupes on (idempotency key, trace id), so the two events of one request cannot
    share both: the checkout event carries the request's key, the revenue event the
    revenue event id — stable across a replay, unique per payment.
    """
    finance = {"amount_cents": completion["amount_cents"], "currency": completion["currency"],
               "stripe_mode": completion["stripe_mode"]}
    route = COMPLETE_ROUTE
    common = {"route": route, "status": 200, "trace_id": completion["trace_id"], "tags": tags,
              "finance_metrics": finance, "revenue_event_id": completion["revenue_event_id"],
              "session_id": completion["session_id"], "user_id": completion["user_id"],
              "payment_intent": completion["payment_intent"]}
    emit_event(ctx, "checkout_completed", idempotency_key=request.headers["x-idempotency-key"].strip(),
               price_id=session["price_id"], quantity=session["quantity"], credits_granted=credits, **common)
    emit_event(ctx, "revenue_settled", idempotency_key=completion["revenue_event_id"], **common)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/prices", list_prices, methods=["GET"]),
        Route(SESSIONS_ROUTE, create_session, methods=["POST"]),
        Route("/api/checkout/sessions/{session_id}", read_session, methods=["GET"]),
        Route(COMPLETE_ROUTE, complete_session, methods=["POST"]),
        Route("/api/ledger/{user_id}", a5_ledger.read_ledger, methods=["GET"]),
    ]


SESSIONS = tagged("sessions")
#: A synthetic session goes with what its payment created: the ledger grant, then the completion.
SYNTHETIC_TABLES = (owned_by("credit_ledger", "session_id", SESSIONS),
                    owned_by("checkout_completions", "session_id", SESSIONS, key="session_id"), SESSIONS)

DEFINITION = AppDefinition(app_id="A5", schema=SCHEMA, seed=seed, routes=routes, setup=setup,
                           synthetic_tables=SYNTHETIC_TABLES)
