"""Business events: what an app tells A8 happened, in the shape of the telemetry contract.

Every app reports its request traffic through the middleware (``http_request``); the
events the audit's telemetry contract names (``identity_ok``, ``checkout_completed``,
``revenue_settled``…) are emitted by the role modules through :func:`emit_event`, so
that all of them carry the same contract fields — ``timestamp``, ``app_id``, ``route``,
``status``, ``p95_ms``, ``trace_id``, ``idempotency_key``, ``finance_metrics``,
``revenue_event_id`` — whether or not a field has a value for that event (``None`` is
sent explicitly: a missing field and an empty one are different findings).

The trace id and idempotency key are the ones of the request that caused the event, so
the event can be joined to the request and deduplicated by A8 on replay. Tags of
synthetic traffic (``X-Test-Run``, ``X-Source``, ``X-Namespace``…) travel with it, so A8
can keep synthetic revenue out of business tiles.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from sandbox.common.context import AppContext
from sandbox.common.middleware import MAX_TAG, TAG_HEADERS
from sandbox.common.web import utc_now_iso

CONTRACT_FIELDS = ("timestamp", "app_id", "route", "status", "p95_ms", "trace_id", "idempotency_key",
                   "finance_metrics", "revenue_event_id")


def request_tags(request: Request) -> dict[str, str]:
    """The telemetry tags of the request, as the shared middleware records them."""
    return {tag: request.headers[name][:MAX_TAG] for name, tag in TAG_HEADERS.items() if name in request.headers}


def emit_event(ctx: AppContext, event_type: str, *, route: str, status: int, trace_id: str,
               idempotency_key: str, tags: Mapping[str, str] | None = None, p95_ms: float | None = None,
               finance_metrics: Mapping[str, Any] | None = None, revenue_event_id: str | None = None,
               **fields: Any) -> None:
    """Queue one business event through the app's emitter (never blocks, never raises).

    ``fields`` are event-specific extras (ids, amounts…), stored verbatim by A8; they may
    not replace a contract field.
    """
    clash = sorted(set(fields) & {"event_type", "tags", *CONTRACT_FIELDS})
    if clash:
        raise ValueError(f"extra event fields may not replace contract fields: {', '.join(clash)}")
    if ctx.emitter is None:
        return
    ctx.emitter.emit({
        "event_type": event_type,
        "timestamp": utc_now_iso(),
        "app_id": ctx.config.app_id,
        "route": route,
        "status": status,
        "p95_ms": p95_ms,
        "trace_id": trace_id,
        "idempotency_key": idempotency_key,
        "finance_metrics": dict(finance_metrics) if finance_metrics is not None else None,
        "revenue_event_id": revenue_event_id,
        "tags": dict(tags or {}),
        **fields,
    })
