"""Phase 05: monetization — the micro price, a synthetic micro-checkout and its credits.

Each function is one cell of ``05_monetization``; they run in order and hand over through
the run folder (``evidence/b2c_checkout_trace.json``), so any one can be re-run alone.
The money's way downstream (telemetry, finance tiles) and the phase's reports are in
:mod:`readiness.phases.monetization.revenue_lineage`.

The checkout is driven through the payments app's own API (role ``payments``: create a
session for the micro price, complete it with Stripe's test payment method) as the
synthetic student, so every request carries the synthetic tags. What the app says is
then checked against independent sources: Stripe itself (the PaymentIntent, through
:mod:`readiness.probe.payments`), the app's credit ledger, the telemetry store's events
(``checkout_completed``, ``revenue_settled``: arrival time and finance fields) and the
finance tiles (synthetic revenue visible in diagnostics, absent from the live tile).
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from readiness.core import aio
from readiness.core.approvals import log_event
from readiness.core.check import Check, Status
from readiness.core.verdict import value_check
from readiness.params.model import App, Params
from readiness.phasekit.context import Phase, production_writes_allowed
from readiness.phasekit.stripe_price import TAGS, price_step
from readiness.probe.client import GuardedClient, Sample
from readiness.probe.payments import (
    TEST_PAYMENT_METHOD,
    LiveModeRefused,
    PaymentsError,
    fetch_payment,
    open_stripe,
    resolve_or_create_price,
)

TRACE = "evidence/b2c_checkout_trace.json"
CHECKOUT_PATH = "/api/checkout/sessions"
COMPLETE_PATH = "/api/checkout/sessions/{session_id}/complete"
LEDGER_PATH = "/api/ledger/{user_id}"
CHECKOUT_CHECKS = ("session_created", "completed", "stripe_confirmed", "amount", "tagged")


def payments_app(params: Params) -> App:
    """The app with role ``payments`` (A5 in the sandbox)."""
    for app in params.apps:
        if app.role == "payments":
            return app
    raise PaymentsError("no app with role 'payments' in params.apps: the checkout has no target")


def resolve_price(phase: Phase) -> pd.DataFrame:
    """Resolve-or-create the micro price and record ``monetization.price*``."""
    checks, res = price_step(phase, "monetization.price")
    phase.record(checks)
    return pd.DataFrame([{"price_id": res.price_id if res else None, "found_by": res.how if res else None,
                          "amount_cents": res.unit_amount if res else None, "currency": res.currency if res else None,
                          "status": str(checks[-1].status)}])


# -- the micro-checkout --------------------------------------------------------------------
def _step(name: str, s: Sample) -> dict[str, Any]:
    return {"step": name, "method": s.method, "route": s.route, "status": s.status, "error": s.error,
            "total_ms": round(s.total_ms, 2) if s.total_ms is not None else None, "trace_id": s.trace_id,
            "idempotency_key": s.idempotency_key, "started_at": s.started_at}


def json_body(s: Sample | None, status: int) -> dict[str, Any] | None:
    """The JSON object of a response with the expected status, else None."""
    if s is None or s.status != status:
        return None
    try:
        body = s.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _checkout(phase: Phase, client: GuardedClient, app: App) -> dict[str, Any]:
    access = open_stripe(phase.params, phase.run, client, phase=phase.name, apps=(app.id,),
                         purpose="confirm the synthetic micro-checkout", synthetic_identity=phase.synthetic_identity)
    price = await resolve_or_create_price(access, phase.params.stripe)
    user = phase.synthetic_identity
    kw = {"app": app.id, "keep_body": True, "synthetic_identity": user}
    ledger = await client.get(app.url(LEDGER_PATH.format(user_id=user)), route=LEDGER_PATH, **kw)
    created = await client.post(app.url(CHECKOUT_PATH), route=CHECKOUT_PATH, idempotency_key=True,
                                json={"price_id": price.price_id, "quantity": 1, "user_id": user}, **kw)
    steps, session = [_step("create_session", created)], json_body(created, 201)
    completion, payment = None, None
    if session is not None:
        done = await client.post(app.url(COMPLETE_PATH.format(session_id=session["id"])), route=COMPLETE_PATH,
                                 idempotency_key=True, json={"payment_method": TEST_PAYMENT_METHOD}, **kw)
        steps.append(_step("complete_session", done))
        completion = json_body(done, 200)
        if completion is not None:
            completion["completed_epoch"] = done.started_at + (done.total_ms or 0.0) / 1000
            if completion.get("payment_intent"):
                payment = (await fetch_payment(access, str(completion["payment_intent"]))).to_record()
    before = json_body(ledger, 200)
    return {"user_id": user, "app": app.id, "price": price.to_record(), "steps": steps, "session": session,
            "completion": completion, "payment_at_stripe": payment,
            "payment_method": f"{TEST_PAYMENT_METHOD} (a Stripe test payment method id; no card number is used)",
            "ledger_before": {"status": ledger.status, "balance": before.get("balance") if before else None},
            "stripe": {"mode": access.mode, "api_base": access.api_base, "approval_id": access.approval_id,
                       "calls": access.http.calls()}}


def _blocked(phase: Phase, status: Status, reason: str) -> pd.DataFrame:
    phase.record([Check(id=f"monetization.checkout.{name}", phase=phase.name, status=status, tags=TAGS,
                        severity="P1", title=f"micro-checkout: {name.replace('_', ' ')}", detail=reason)
                  for name in CHECKOUT_CHECKS])
    return pd.DataFrame([{"status": str(status), "reason": reason}])


def run_micro_checkout(phase: Phase) -> pd.DataFrame:
    """Create and pay a checkout session for the micro price as the synthetic student; check it at Stripe."""
    try:
        app = payments_app(phase.params)
    except PaymentsError as exc:
        return _blocked(phase, Status.INCONCLUSIVE, str(exc))
    refusal = production_writes_allowed(phase, "synthetic micro-checkout", (app.id,))
    if refusal:
        return _blocked(phase, Status.BLOCKED, refusal)

    async def go() -> dict[str, Any]:
        async with phase.client() as client:
            return await _checkout(phase, client, app)

    try:
        trace = aio.run(go())
    except LiveModeRefused as exc:
        return _blocked(phase, Status.BLOCKED, str(exc))
    except PaymentsError as exc:
        log_event(phase.run, "escalated", action="stripe_failure", phase=phase.name, reason=str(exc))
        return _blocked(phase, Status.INCONCLUSIVE, f"{exc} (escalated)")
    phase.run.write_json(TRACE, trace)
    phase.record(_checkout_checks(phase, app, trace))
    return pd.DataFrame(trace["steps"]).drop(columns=["started_at"]).set_index("step")


def _checkout_checks(phase: Phase, app: App, trace: dict[str, Any]) -> list[Check]:
    steps = {s["step"]: s for s in trace["steps"]}
    paid = trace["payment_at_stripe"] or {}
    wanted = dict(phase.params.synthetic.tags)
    metadata = paid.get("metadata", {})
    tagged = sum(metadata.get(k) == v for k, v in wanted.items()) if paid else None
    common = {"phase": phase.name, "app": app.id, "tags": TAGS, "severity": "P1", "evidence": (TRACE,)}
    created, done = steps.get("create_session", {}), steps.get("complete_session", {})
    return [
        value_check(id="monetization.checkout.session_created", title="checkout session created (201)",
                    observed=created.get("status"), expected=201, detail=f"{created.get('error') or ''}", **common),
        value_check(id="monetization.checkout.completed", title="checkout completed with the test card (200)",
                    observed=done.get("status"), expected=200,
                    detail="" if done else "no session to complete", **common),
        value_check(id="monetization.checkout.stripe_confirmed", title="Stripe reports the payment succeeded",
                    observed=paid.get("status"), expected="succeeded",
                    detail=f"PaymentIntent {paid.get('payment_intent')}" if paid else "no payment to look up",
                    **common),
        value_check(id="monetization.checkout.amount", title="Stripe charged the micro price amount",
                    observed=paid.get("amount"), expected=phase.params.stripe.micro_amount_cents, unit="cents",
                    **common),
        value_check(id="monetization.checkout.tagged", title="the payment carries the synthetic tags at Stripe",
                    observed=tagged, expected=len(wanted), unit="tags",
                    detail=f"required {wanted}; found {({k: metadata.get(k) for k in wanted})}", **common),
    ]


# -- ledger ---------------------------------------------------------------------------------
def load_trace(phase: Phase) -> dict[str, Any] | None:
    """The checkout trace this run recorded, or None before :func:`run_micro_checkout`."""
    path = phase.run.path(TRACE)
    return json.loads(path.read_text()) if path.exists() else None


def no_checkout(phase: Phase, ids: tuple[str, ...] | list[str], tags: tuple[str, ...] = TAGS) -> list[Check]:
    """Checks that follow the checkout when there is none: BLOCKED when the checkout was refused
    (its refusal carried over), else INCONCLUSIVE."""
    refused = next((c for c in phase.run.read_checks(phase.name)
                    if c.id == "monetization.checkout.completed" and c.status is Status.BLOCKED), None)
    status, why = ((Status.BLOCKED, refused.detail) if refused is not None
                   else (Status.INCONCLUSIVE, "no completed micro-checkout in this run (run_micro_checkout first)"))
    return [Check(id=cid, phase=phase.name, status=status, tags=tags, title=cid, detail=why) for cid in ids]


def verify_ledger(phase: Phase) -> pd.DataFrame:
    """The buyer's credit ledger holds one grant for the session, and the balance rose by it."""
    trace = load_trace(phase)
    completion = (trace or {}).get("completion")
    ids = ("monetization.ledger.credited", "monetization.ledger.balance_delta")
    if not completion:
        phase.record(no_checkout(phase, ids))
        return pd.DataFrame()
    app = phase.params.app(trace["app"])

    async def go() -> Sample:
        async with phase.client() as client:
            return await client.get(app.url(LEDGER_PATH.format(user_id=trace["user_id"])), app=app.id,
                                    route=LEDGER_PATH, keep_body=True, synthetic_identity=phase.synthetic_identity)

    ledger = json_body(aio.run(go()), 200)
    granted = max(1, int(completion.get("credits_granted") or 0))
    entry = next((e for e in (ledger or {}).get("entries", []) if e.get("session_id") == completion["session_id"]),
                 None)
    before = trace["ledger_before"]["balance"]
    after = ledger.get("balance") if ledger else None
    evidence = "evidence/b2c_ledger_after.json"
    phase.run.write_json(evidence, {"ledger": ledger, "session_id": completion["session_id"], "before": before})
    common = {"phase": phase.name, "app": app.id, "tags": TAGS, "severity": "P1", "evidence": (TRACE, evidence)}
    checks = [
        value_check(id=ids[0], title="the ledger holds the session's grant", unit="credits",
                    observed=(entry or {}).get("credits", 0) if ledger else None, expected=granted,
                    detail=f"session {completion['session_id']}", **common),
        value_check(id=ids[1], title="the buyer's balance rose by the grant", unit="credits",
                    observed=after - before if after is not None and before is not None else None, expected=granted,
                    detail=f"balance {before} → {after}; another purchase by the same synthetic user in between "
                           "would also count", **common),
    ]
    phase.record(checks)
    return pd.DataFrame([{"balance_before": before, "balance_after": after, "granted": granted,
                          "entry_found": entry is not None}])
