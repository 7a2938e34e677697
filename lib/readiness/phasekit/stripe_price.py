"""The micro price step: resolve-or-create the configured Stripe price and judge it.

Two phases run it: ``00_inventory`` as one step of the Go/No-Go gate, and
``05_monetization`` before its checkout. Each records the result under its own check id.
It lives below both so that neither phase package imports the other.
"""

from __future__ import annotations

from typing import Any

from readiness.core import aio
from readiness.core.approvals import log_event
from readiness.core.check import Check, Status
from readiness.core.verdict import combine, value_check
from readiness.phasekit.context import Phase, production_writes_allowed
from readiness.probe.payments import (
    CreationRefused,
    LiveModeRefused,
    PaymentsError,
    PriceResolution,
    open_stripe,
    resolve_or_create_price,
)

__all__ = ["PRICE", "TAGS", "price_step"]

PRICE = "evidence/stripe_price.json"
TAGS = ("dependency_health", "monetization")


def price_step(phase: Phase, check_id: str, *, tags: tuple[str, ...] = TAGS,
               severity: str = "P1") -> tuple[list[Check], PriceResolution | None]:
    """Resolve-or-create the micro price; its checks (amount, currency, active, combined) and the price.

    A live-mode key without approval makes the check BLOCKED; a Stripe failure is
    recorded as an escalation and FAILs the check: the price is part of the Go/No-Go gate.
    """
    p = phase.params.stripe
    title = f"Stripe price '{p.product_name}' ({p.micro_amount_cents} {p.currency} cents) resolved"

    async def go() -> tuple[Any, PriceResolution]:
        async with phase.client() as client:
            access = open_stripe(phase.params, phase.run, client, phase=phase.name,
                                 purpose="resolve the micro price", synthetic_identity=phase.synthetic_identity)
            return access, await resolve_or_create_price(
                access, p, creation_refused=lambda: production_writes_allowed(phase, "create the micro price", ()))

    try:
        access, res = aio.run(go())
    except (LiveModeRefused, CreationRefused) as exc:
        phase.run.write_json(PRICE, {"status": "blocked", "reason": str(exc)})
        return [Check(id=check_id, phase=phase.name, title=title, status=Status.BLOCKED, tags=tags,
                      severity=severity, evidence=(PRICE,), detail=str(exc))], None
    except PaymentsError as exc:
        log_event(phase.run, "escalated", action="stripe_failure", phase=phase.name, reason=str(exc))
        phase.run.write_json(PRICE, {"status": "failed", "reason": str(exc)})
        return [value_check(id=check_id, phase=phase.name, title=title, observed=False, expected=True, tags=tags,
                            severity=severity, evidence=(PRICE,), detail=f"{exc} (escalated)")], None
    phase.run.write_json(PRICE, {"status": "resolved", "price": res.to_record(), "stripe_mode": access.mode,
                                 "api_base": access.api_base, "approval_id": access.approval_id,
                                 "stripe_calls": access.http.calls()})
    common = {"phase": phase.name, "tags": tags, "severity": severity, "evidence": (PRICE,)}
    parts = [
        value_check(id=f"{check_id}.amount", title="micro price amount is the configured amount",
                    observed=res.unit_amount, expected=p.micro_amount_cents, unit="cents", **common),
        value_check(id=f"{check_id}.currency", title="micro price currency is the configured currency",
                    observed=res.currency, expected=p.currency.lower(), **common),
        value_check(id=f"{check_id}.active", title="micro price is active", observed=res.active, expected=True,
                    **common),
    ]
    whole = combine(check_id, phase.name, title, parts, tags=tags, severity=severity, evidence=(PRICE,),
                    detail=f"{res.price_id} found by {res.how} ({'live' if res.livemode else 'test'} mode)")
    return [*parts, whole], res
