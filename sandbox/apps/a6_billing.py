"""A6 billing: providers are billed for the AI usage of their listings, with a fee and a markup.

The charge of one AI usage record, all amounts in integer minor units (cents):

=====================  ==========================================================
``base_cost_cents``    what the AI usage cost the platform (given by the caller)
``ai_charge_cents``    ``base_cost_cents × ai_markup_x`` (4x), rounded to the cent
``ai_markup_cents``    ``ai_charge_cents − base_cost_cents`` (the platform's margin)
``provider_fee_cents`` ``ai_charge_cents × provider_fee_pct / 100`` (3 %), rounded
``total_cents``        ``ai_charge_cents + provider_fee_cents`` (what is billed)
=====================  ==========================================================

Arithmetic is exact (:class:`decimal.Decimal`, never floats) and each rounded quantity is
rounded once, half up (``ROUND_HALF_UP``: 148.5 → 149), to whole cents; the other lines
are sums and differences of integers, so the lineage always adds up exactly. The response
returns every line (the *lineage*) so that an auditor can recompute it, and the
``provider_usage_billed`` event carries ``finance_metrics`` {provider_fee_cents,
ai_markup_cents, amount_cents, currency} for A8's ``b2b_billing`` tile.

The fee, the markup and two contract switches are the ``provider_portal`` fault knob
(``PUT /admin/faults``), so an audit can reproduce a broken portal: headers not enforced,
no dedupe, or a wrong fee (2.5 %). ``DELETE /admin/faults`` restores the defaults.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import threading
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.context import AppContext, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.idempotency import IdempotencyStore, Outcome, run_idempotent
from sandbox.common.knobs import KnobError
from sandbox.common.web import json_error, utc_now_iso

KNOB = "provider_portal"
BILLING_ROUTE = "/api/billing/usage"
BILLING_EVENT = "provider_usage_billed"
PROVIDER_FEE_PCT = Decimal("3")
AI_MARKUP_X = Decimal("4")
MAX_BASE_COST_CENTS = 100_000_000
ROUNDING = "ROUND_HALF_UP to whole cents, applied once to ai_charge_cents and once to provider_fee_cents"
CENT = Decimal(1)

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_charges (
    id TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL REFERENCES providers (id),
    listing_id TEXT,
    currency TEXT NOT NULL,
    base_cost_cents INTEGER NOT NULL,
    ai_markup_x TEXT NOT NULL,
    ai_charge_cents INTEGER NOT NULL,
    ai_markup_cents INTEGER NOT NULL,
    provider_fee_pct TEXT NOT NULL,
    provider_fee_cents INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    idempotency_key TEXT,
    created_at TEXT NOT NULL,
    namespace TEXT  -- X-Namespace of the request (synthetic traffic), else NULL
);
"""


def charge_lineage(base_cost_cents: int, provider_fee_pct: Decimal = PROVIDER_FEE_PCT,
                   ai_markup_x: Decimal = AI_MARKUP_X) -> dict[str, int | str]:
    """Every line of one charge (see the module docstring), exact in integer cents."""
    if isinstance(base_cost_cents, bool) or not isinstance(base_cost_cents, int) or base_cost_cents < 0:
        raise ValueError(f"base_cost_cents must be a non-negative integer, got {base_cost_cents!r}")
    ai_charge = int((Decimal(base_cost_cents) * ai_markup_x).quantize(CENT, rounding=ROUND_HALF_UP))
    fee = int((Decimal(ai_charge) * provider_fee_pct / 100).quantize(CENT, rounding=ROUND_HALF_UP))
    return {
        "base_cost_cents": base_cost_cents,
        "ai_markup_x": str(ai_markup_x),
        "ai_charge_cents": ai_charge,
        "ai_markup_cents": ai_charge - base_cost_cents,
        "provider_fee_pct": str(provider_fee_pct),
        "provider_fee_cents": fee,
        "total_cents": ai_charge + fee,
        "rounding": ROUNDING,
    }


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise KnobError(field, f"{field} must be true or false")
    return value


def _decimal(field: str, value: Any, low: float, high: float) -> str:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise KnobError(field, f"{field} must be a number between {low:g} and {high:g}")
    return str(Decimal(str(value)).normalize())


def default_policy() -> dict[str, Any]:
    return {"enforce_contract_headers": True, "dedupe": True,
            "provider_fee_pct": str(PROVIDER_FEE_PCT), "ai_markup_x": str(AI_MARKUP_X)}


class PortalPolicy:
    """The ``provider_portal`` knob (an :class:`~sandbox.common.knobs.ExtraKnob`): contract and pricing.

    Percentages travel as decimal strings (``"2.5"``) so no float rounding reaches a bill.
    """

    FIELDS = ("enforce_contract_headers", "dedupe", "provider_fee_pct", "ai_markup_x")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = default_policy()

    def validate(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise KnobError(KNOB, f"{KNOB} must be an object with {', '.join(self.FIELDS)}")
        extra = sorted(set(value) - set(self.FIELDS))
        if extra:
            raise KnobError(f"{KNOB}.{extra[0]}", f"{KNOB}: unexpected field {extra[0]}")
        out = self.snapshot()
        for name in ("enforce_contract_headers", "dedupe"):
            if name in value:
                out[name] = _bool(f"{KNOB}.{name}", value[name])
        if "provider_fee_pct" in value:
            out["provider_fee_pct"] = _decimal(f"{KNOB}.provider_fee_pct", value["provider_fee_pct"], 0, 100)
        if "ai_markup_x" in value:
            out["ai_markup_x"] = _decimal(f"{KNOB}.ai_markup_x", value["ai_markup_x"], 1, 100)
        return out

    def apply(self, value: Any) -> None:
        with self._lock:
            self._value = dict(value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._value)

    def reset(self) -> None:
        self.apply(default_policy())


@dataclasses.dataclass
class Portal:
    """The live parts of A6 in ``ctx.services["portal"]``: its idempotency store and policy."""

    idempotency: IdempotencyStore
    policy: PortalPolicy

    def close(self) -> None:
        self.idempotency.close()


def portal_of(request: Request) -> Portal:
    portal: Portal = ctx_of(request).services["portal"]
    return portal


async def guarded(request: Request, route: str, work: Any) -> Response:
    """Run ``work`` under the shared idempotency contract, as the portal policy says."""
    portal = portal_of(request)
    policy = portal.policy.snapshot()
    return await run_idempotent(request, portal.idempotency, route, work,
                                enforce_headers=policy["enforce_contract_headers"], dedupe=policy["dedupe"])


def validate_tags(body: dict[str, Any]) -> None:
    """Optional ``tags``: an object of short strings (the synthetic-traffic labels)."""
    tags = body.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 128
                                             for k, v in tags.items()):
        raise ValueError("tags must be an object of strings")


def _billing_form(body: Any) -> tuple[str, str | None, int, str]:
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    unexpected = sorted(set(body) - {"provider_id", "listing_id", "base_cost_cents", "currency", "tags"})
    if unexpected:
        raise ValueError(f"unexpected field: {unexpected[0]}")
    provider_id, listing_id = body.get("provider_id"), body.get("listing_id")
    if not isinstance(provider_id, str) or not provider_id:
        raise ValueError("provider_id is required")
    if listing_id is not None and not isinstance(listing_id, str):
        raise ValueError("listing_id must be a string")
    cost = body.get("base_cost_cents")
    if isinstance(cost, bool) or not isinstance(cost, int) or not 1 <= cost <= MAX_BASE_COST_CENTS:
        raise ValueError(f"base_cost_cents must be an integer between 1 and {MAX_BASE_COST_CENTS}")
    currency = body.get("currency", "usd")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise ValueError("currency must be a three-letter ISO 4217 code")
    validate_tags(body)
    return provider_id, listing_id, cost, currency.lower()


def _bill(ctx: AppContext, body: Any, policy: dict[str, Any], trace_id: str, key: str | None,
          namespace: str | None = None) -> Outcome:
    try:
        provider_id, listing_id, cost, currency = _billing_form(body)
    except ValueError as exc:
        return Outcome(422, {"error": str(exc)})
    if not ctx.db.query("SELECT 1 FROM providers WHERE id = ?", (provider_id,)):
        return Outcome(422, {"error": f"unknown provider_id: {provider_id}", "field": "provider_id"})
    if listing_id is not None and not ctx.db.query(
            "SELECT 1 FROM listings WHERE id = ? AND provider_id = ?", (listing_id, provider_id)):
        return Outcome(422, {"error": f"unknown listing_id for this provider: {listing_id}", "field": "listing_id"})
    lineage = charge_lineage(cost, Decimal(policy["provider_fee_pct"]), Decimal(policy["ai_markup_x"]))
    charge = {"charge_id": f"chg_{secrets.token_hex(8)}", "provider_id": provider_id, "listing_id": listing_id,
              "currency": currency, "lineage": lineage, "trace_id": trace_id, "created_at": utc_now_iso()}
    ctx.db.execute(
        "INSERT INTO usage_charges (id, provider_id, listing_id, currency, base_cost_cents, ai_markup_x,"
        " ai_charge_cents, ai_markup_cents, provider_fee_pct, provider_fee_cents, total_cents, trace_id,"
        " idempotency_key, created_at, namespace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (charge["charge_id"], provider_id, listing_id, currency, cost, lineage["ai_markup_x"],
         lineage["ai_charge_cents"], lineage["ai_markup_cents"], lineage["provider_fee_pct"],
         lineage["provider_fee_cents"], lineage["total_cents"], trace_id, key, charge["created_at"], namespace),
    )
    return Outcome(201, charge, headers={"Location": f"/api/billing/charges/{charge['charge_id']}"})


async def bill_usage(request: Request) -> Response:
    """``POST /api/billing/usage``: one AI usage charge, its lineage, one billing event."""
    ctx = ctx_of(request)
    trace_id = request.state.trace_id
    key = request.headers.get("x-idempotency-key", "").strip() or None

    async def work(body: Any) -> Outcome:
        policy = portal_of(request).policy.snapshot()
        outcome = await run_in_threadpool(_bill, ctx, body, policy, trace_id, key,
                                          request_tags(request).get("namespace"))
        if outcome.status == 201:
            lineage = outcome.body["lineage"]
            emit_event(ctx, BILLING_EVENT, route=BILLING_ROUTE, status=201, trace_id=trace_id,
                       idempotency_key=key or outcome.body["charge_id"], tags=request_tags(request),
                       finance_metrics={"provider_fee_cents": lineage["provider_fee_cents"],
                                        "ai_markup_cents": lineage["ai_markup_cents"],
                                        "amount_cents": lineage["total_cents"],
                                        "currency": outcome.body["currency"]},
                       charge_id=outcome.body["charge_id"], provider_id=outcome.body["provider_id"],
                       listing_id=outcome.body["listing_id"], lineage=lineage)
        return outcome

    return await guarded(request, BILLING_ROUTE, work)


def get_charge(request: Request) -> Response:
    charge_id = request.path_params["charge_id"]
    rows = ctx_of(request).db.query("SELECT * FROM usage_charges WHERE id = ?", (charge_id,))
    if not rows:
        return json_error(404, f"unknown charge: {charge_id}")
    return JSONResponse(dict(rows[0]))


def billing_routes() -> list[BaseRoute]:
    return [
        Route(BILLING_ROUTE, bill_usage, methods=["POST"]),
        Route("/api/billing/charges/{charge_id}", get_charge, methods=["GET"]),
    ]
