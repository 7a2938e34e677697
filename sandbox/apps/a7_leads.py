"""A7 lead capture: ``POST /api/leads``, ``GET /api/leads/{lead_id}``, ``GET /admin/mailer``.

A lead form must answer fast, yet each lead triggers a welcome mail through a slow
third-party provider (the simulated :class:`~sandbox.common.mailer.MailRelay`). The flag
``a7_async_leads`` chooses between the two designs an audit compares:

* OFF (the original design): the handler calls the relay on the request path and
  answers ``201 {"lead_id", "delivery": "sent"}`` — or ``502`` when the relay fails —
  so every request pays the provider's latency.
* ON (fix B): the handler stores the lead and its delivery job in one transaction and
  answers ``202 {"lead_id", "delivery": "queued"}`` at once; background workers deliver
  with the lead's idempotency key, retry with backoff and respect a circuit breaker.

The flag is read on every request, so switching it OFF restores the synchronous path on
the next request, while jobs already queued still drain.

Both paths demand ``X-Idempotency-Key`` and ``X-Trace-Id`` (428 otherwise). Keys are
scoped by caller — the ``X-Synthetic-Identity`` header, else a digest of the
``Authorization`` credential (the credential stands for its subject without being
trusted for anything else), else one global scope — so two callers cannot collide. A
replay within the dedupe window gets the stored response (status and body) and creates
nothing; the same key with another body is a 422.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import sqlite3
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a7_lead_store import Answer, LeadLedger, LeadStore, NewLead
from sandbox.common.admin import require_admin
from sandbox.common.context import AppContext, ctx_of
from sandbox.common.delivery import KIND, DeliveryWorkers
from sandbox.common.events import request_tags
from sandbox.common.idempotency import idempotency_scope
from sandbox.common.mailer import KNOB, Delivery, MailerError, MailRelay
from sandbox.common.web import BadBody, FieldError, json_error, missing_contract_headers, read_json, utc_now_iso

FLAG = "a7_async_leads"
LEADS_ROUTE = "/api/leads"
MAX_KEY = 255
MAX_EMAIL, MAX_NAME, MAX_SOURCE, MAX_TAGS, MAX_TAG_CHARS = 254, 200, 100, 20, 50
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
FIELDS = ("email", "name", "source", "tags")


class LeadError(FieldError):
    """A lead body the route cannot accept; ``field`` names the culprit."""


@dataclasses.dataclass(frozen=True)
class LeadForm:
    email: str
    name: str
    source: str | None
    tags: list[str] | dict[str, str]


def _valid_tags(tags: Any) -> bool:
    """Labels (a list of strings) or key/value tags such as the synthetic-traffic convention
    ``{"test_run": "true", "source": "qa", "namespace": "simulated_audit"}``."""
    if isinstance(tags, dict):
        items = [*tags.keys(), *tags.values()]
    elif isinstance(tags, list):
        items = tags
    else:
        return False
    return len(tags) <= MAX_TAGS and all(isinstance(t, str) and 0 < len(t) <= MAX_TAG_CHARS for t in items)


def validate_lead(body: Any) -> LeadForm:
    """The lead of a parsed JSON body, or :class:`LeadError` naming the first bad field."""
    body = LeadError.json_object(body, FIELDS)
    for required in ("email", "name"):
        if required not in body:
            raise LeadError(required, f"{required} is required")
    email, name = body["email"], body["name"]
    if not isinstance(email, str) or len(email) > MAX_EMAIL or not EMAIL.match(email):
        raise LeadError("email", f"email must be an email address (name@domain.tld) of at most {MAX_EMAIL} characters")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise LeadError("name", f"name must be a non-empty string of at most {MAX_NAME} characters")
    source = body.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > MAX_SOURCE):
        raise LeadError("source", f"source must be a string of at most {MAX_SOURCE} characters")
    tags = body.get("tags", [])
    if not _valid_tags(tags):
        raise LeadError(
            "tags", f"tags must be a list or an object of at most {MAX_TAGS} non-empty strings "
            f"of at most {MAX_TAG_CHARS} characters"
        )
    return LeadForm(email=email, name=name.strip(), source=source,
                    tags=dict(tags) if isinstance(tags, dict) else list(tags))


@dataclasses.dataclass
class LeadCapture:
    """The live parts of lead capture held in ``ctx.services["leads"]``."""

    relay: MailRelay
    store: LeadStore
    workers: DeliveryWorkers

    def close(self) -> None:
        self.workers.close()


def emit(ctx: AppContext, event_type: str, trace_id: str, key: str, tags: dict[str, str], **fields: Any) -> None:
    """One lead event through the app's emitter, with the lead's own trace id."""
    if ctx.emitter is None:
        return
    ctx.emitter.emit(
        {
            "event_type": event_type,
            "timestamp": utc_now_iso(),
            "app_id": ctx.config.app_id,
            "route": LEADS_ROUTE,
            "trace_id": trace_id,
            "idempotency_key": key,
            "tags": tags,
            **fields,
        }
    )


def setup_leads(ctx: AppContext) -> None:
    """Create the relay (and its ``mailer`` knob), the store and the started delivery workers."""
    seed = f"{ctx.config.seed}:{ctx.config.app_id}"
    relay = MailRelay(random.Random(f"{seed}:mailer"))
    ctx.faults.register(KNOB, relay)
    store = LeadStore(ctx.db, ctx.config.db_path("queue"), ctx.config.dedupe_window_s, KIND)

    def on_outcome(event_type: str, row: sqlite3.Row, extra: dict[str, Any]) -> None:
        emit(
            ctx,
            event_type,
            row["trace_id"],
            f"{row['id']}:{event_type}",
            json.loads(row["request_tags"]),
            lead_id=row["id"],
            mode=row["mode"],
            **extra,
        )

    workers = DeliveryWorkers(ctx.queue, relay, LeadLedger(store, on_outcome), random.Random(f"{seed}:backoff"))
    ctx.services["leads"] = LeadCapture(relay=relay, store=store, workers=workers)
    workers.start()


def capture_of(request: Request) -> LeadCapture:
    capture: LeadCapture = ctx_of(request).services["leads"]
    return capture


def respond(answer: Answer) -> Response:
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    lead_id = answer.body.get("lead_id")
    if answer.status in (201, 202) and lead_id:
        headers["Location"] = f"{LEADS_ROUTE}/{lead_id}"
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


async def capture_lead(request: Request) -> Response:
    refused = missing_contract_headers(request)
    if refused is not None:
        return refused
    key = request.headers["x-idempotency-key"].strip()
    if len(key) > MAX_KEY:
        return json_error(422, f"X-Idempotency-Key must be at most {MAX_KEY} characters", field="X-Idempotency-Key")
    try:
        body = await read_json(request)
        form = validate_lead(body)
    except BadBody as exc:
        return json_error(400, str(exc), field="body")
    except LeadError as exc:
        return json_error(422, exc.message, field=exc.field)
    ctx, capture = ctx_of(request), capture_of(request)
    lead = NewLead(
        email=form.email,
        name=form.name,
        source=form.source,
        tags=form.tags,
        scope=idempotency_scope(request),
        idempotency_key=key,
        request_hash=hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),
        trace_id=request.state.trace_id,
        request_tags=request_tags(request),
    )
    if ctx.flags.enabled(FLAG):
        answer = await run_in_threadpool(capture.store.create_queued, lead)
        if answer.lead_id is not None:
            capture.workers.notify()
            emit(
                ctx,
                "lead_captured",
                lead.trace_id,
                key,
                lead.request_tags,
                lead_id=answer.lead_id,
                mode="async",
                delivery="queued",
                status=answer.status,
            )
        return respond(answer)
    reserved = await run_in_threadpool(capture.store.create_sending, lead)
    if isinstance(reserved, Answer):
        return respond(reserved)
    return respond(await _deliver_now(ctx, capture, lead, reserved))


async def _deliver_now(ctx: AppContext, capture: LeadCapture, lead: NewLead, lead_id: str) -> Answer:
    """The synchronous path: the relay call happens while the caller waits."""
    delivery: Delivery | None = None
    error: str | None = None
    try:
        delivery = await capture.relay.send(lead_id, lead.email)
        answer = Answer(201, {"lead_id": lead_id, "delivery": "sent"}, lead_id=lead_id)
    except MailerError as exc:
        error = str(exc)
        answer = Answer(
            502, {"error": f"mailer failed: {exc}", "lead_id": lead_id, "delivery": "failed"}, lead_id=lead_id
        )
    except BaseException:  # cancelled mid-call: free the key so the caller can retry it
        capture.store.abandon(lead, lead_id, "request ended before the mailer answered")
        raise
    await run_in_threadpool(capture.store.finish_sync, lead, lead_id, answer, delivery, error)
    emit(
        ctx,
        "lead_captured",
        lead.trace_id,
        lead.idempotency_key,
        lead.request_tags,
        lead_id=lead_id,
        mode="sync",
        delivery=answer.body["delivery"],
        status=answer.status,
    )
    outcome = "lead_delivered" if delivery else "lead_delivery_failed"
    extra: dict[str, Any] = {"message_id": delivery.message_id} if delivery else {"error": error}
    emit(
        ctx,
        outcome,
        lead.trace_id,
        f"{lead_id}:{outcome}",
        lead.request_tags,
        lead_id=lead_id,
        mode="sync",
        attempts=1,
        **extra,
    )
    return answer


async def lead_status(request: Request) -> Response:
    lead_id = request.path_params["lead_id"]
    row = await run_in_threadpool(capture_of(request).store.get, lead_id)
    if row is None:
        return json_error(404, f"unknown lead: {lead_id}")
    return JSONResponse(
        {
            "lead_id": row["id"],
            "status": row["status"],
            "attempts": row["attempts"],
            "delivered_at": row["delivered_at"],
            "mode": row["mode"],
            "last_error": row["last_error"],
        }
    )


@require_admin
async def mailer_admin(request: Request) -> Response:
    """Relay counters and settings, breaker state, worker counters; ``?key=`` adds one delivery.

    ``DELETE`` forces the breaker closed (an operator's override after fixing the
    provider) and answers the same view; the relay's counters are never reset, as a
    provider's own records would not be.
    """
    capture = capture_of(request)
    if request.method == "DELETE":
        capture.workers.breaker.reset()
    body: dict[str, Any] = {
        "app_id": ctx_of(request).config.app_id,
        **capture.relay.stats(),
        "settings": capture.relay.snapshot(),
        "breaker": capture.workers.breaker.snapshot(),
        "worker": await run_in_threadpool(capture.workers.stats),
    }
    key = request.query_params.get("key")
    if key is not None:
        delivery = capture.relay.lookup(key)
        body["delivery"] = delivery.as_json() if delivery else None
    return JSONResponse(body)


def lead_routes() -> list[BaseRoute]:
    return [
        Route(LEADS_ROUTE, capture_lead, methods=["POST"]),
        Route(f"{LEADS_ROUTE}/{{lead_id}}", lead_status, methods=["GET"]),
    ]


def lead_admin_routes() -> list[BaseRoute]:
    return [Route("/admin/mailer", mailer_admin, methods=["GET", "DELETE"])]
