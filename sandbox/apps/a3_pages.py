"""A3 page builds: ``POST /api/pages`` builds and publishes a page, ``GET /api/pages/{id}`` reads it.

A page build is a side effect the student app requests on a learner's behalf, so it
demands ``X-Idempotency-Key`` and ``X-Trace-Id`` (428 otherwise). A new key emits
``page_build_requested``, composes the page from its template, stores it as published
and emits ``page_published`` — both under the caller's trace id, so the build joins the
learner's sign-up journey in A8. A replay of the key returns the stored page
(``Idempotent-Replayed: true``) and emits nothing; the same key with another body is a
422. Bodies are compared in canonical JSON form.

Body: ``{"learner_id": str, "template": "first_page", "title": str}``.
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

from sandbox.common.context import AppContext, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.web import contract_json, json_error, utc_now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL,
    learner_id TEXT NOT NULL,
    template TEXT NOT NULL,
    response TEXT NOT NULL,  -- JSON sent to the caller, replayed on a retry
    trace_id TEXT NOT NULL,
    published_at TEXT NOT NULL,
    namespace TEXT  -- X-Namespace of the request (synthetic traffic), else NULL
);
"""

PAGES_ROUTE = "/api/pages"
MAX_KEY, MAX_TITLE, MAX_ID = 255, 200, 128
TEMPLATES: dict[str, list[str]] = {
    "first_page": [
        "Your Micro QA pack is ready: three AI credits to spend on explanations, quizzes or summaries.",
        "Start with 'Python foundations' — twelve short lessons, about ten minutes each.",
        "Ask the assistant to explain any lesson in plain words; each answer uses one credit.",
    ],
}


def _validate(body: Any) -> tuple[str, str, str] | str:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unexpected = sorted(set(body) - {"learner_id", "template", "title", "tags"})
    if unexpected:
        return f"unexpected field: {unexpected[0]}"
    learner, template, title = body.get("learner_id"), body.get("template"), body.get("title")
    if not isinstance(learner, str) or not learner or len(learner) > MAX_ID:
        return f"learner_id must be a non-empty string of at most {MAX_ID} characters"
    if template not in TEMPLATES:
        return f"template must be one of {', '.join(sorted(TEMPLATES))}"
    if not isinstance(title, str) or not title.strip() or len(title) > MAX_TITLE:
        return f"title must be a non-empty string of at most {MAX_TITLE} characters"
    return learner, template, title.strip()


def _stored(ctx: AppContext, key: str) -> sqlite3.Row | None:
    rows = ctx.db.query("SELECT request_hash, response FROM pages WHERE idempotency_key = ?", (key,))
    return rows[0] if rows else None


def _replay(row: sqlite3.Row, request_hash: str) -> Response:
    if row["request_hash"] != request_hash:
        return json_error(422, "X-Idempotency-Key was already used with a different request body")
    return JSONResponse(json.loads(row["response"]), status_code=201, headers={"Idempotent-Replayed": "true"})


def _publish(ctx: AppContext, key: str, request_hash: str, trace_id: str, learner: str, template: str,
             title: str, namespace: str | None = None) -> dict[str, Any] | sqlite3.Row:
    """Store the published page; the existing row when a concurrent request won the key."""
    page = {"page_id": f"pg_{secrets.token_hex(8)}", "status": "published", "learner_id": learner,
            "template": template, "title": title, "blocks": [{"type": "text", "text": t} for t in TEMPLATES[template]],
            "published_at": utc_now_iso()}
    try:
        ctx.db.execute("INSERT INTO pages (id, idempotency_key, request_hash, learner_id, template, response,"
                       " trace_id, published_at, namespace) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (page["page_id"], key, request_hash, learner, template, json.dumps(page), trace_id,
                        page["published_at"], namespace))
    except sqlite3.IntegrityError:
        row = _stored(ctx, key)
        assert row is not None
        return row
    return page


async def build_page(request: Request) -> Response:
    body, refused = await contract_json(request)
    if refused is not None:
        return refused
    ctx = ctx_of(request)
    key, trace_id = request.headers["x-idempotency-key"].strip(), request.state.trace_id
    if len(key) > MAX_KEY:
        return json_error(422, f"X-Idempotency-Key must be at most {MAX_KEY} characters")
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    existing = await run_in_threadpool(_stored, ctx, key)
    if existing is not None:
        return _replay(existing, request_hash)
    valid = _validate(body)
    if isinstance(valid, str):
        return json_error(422, valid)
    learner, template, title = valid
    tags = request_tags(request)
    emit_event(ctx, "page_build_requested", route=PAGES_ROUTE, status=202, trace_id=trace_id,
               idempotency_key=f"{key}:page_build_requested", tags=tags, learner_id=learner, template=template)
    page = await run_in_threadpool(_publish, ctx, key, request_hash, trace_id, learner, template, title,
                                   tags.get("namespace"))
    if isinstance(page, sqlite3.Row):
        return _replay(page, request_hash)
    emit_event(ctx, "page_published", route=PAGES_ROUTE, status=201, trace_id=trace_id,
               idempotency_key=f"{key}:page_published", tags=tags, page_id=page["page_id"], learner_id=learner,
               template=template)
    return JSONResponse(page, status_code=201, headers={"Location": f"{PAGES_ROUTE}/{page['page_id']}"})


async def read_page(request: Request) -> Response:
    rows = ctx_of(request).db.query("SELECT response FROM pages WHERE id = ?", (request.path_params["page_id"],))
    if not rows:
        return json_error(404, "no such page")
    return JSONResponse(json.loads(rows[0]["response"]))


def page_routes() -> list[BaseRoute]:
    return [Route(PAGES_ROUTE, build_page, methods=["POST"]),
            Route(PAGES_ROUTE + "/{page_id}", read_page, methods=["GET"])]
