"""A2's learner API: ``GET /api/me`` and ``POST /api/ai/actions`` (one AI credit per action).

An AI action is the first value a learner gets, so it carries the activation signals:
each accepted action takes one credit and emits ``credit_decrement`` (credits before and
after); the learner's first action also emits ``activation_first_use`` with the seconds
since sign-up (time to first value). A learner starts with three credits; with none left
the answer is 402 and nothing is consumed.

The caller is the learner of the A2 session cookie, or the holder of an A1 access token
(``Authorization: Bearer``, resolved through A1's userinfo endpoint) for API clients.
The route demands ``X-Idempotency-Key`` and ``X-Trace-Id`` (428 otherwise): a retried
action must not take a second credit. Keys are scoped per learner; a replay returns the
stored answer (``Idempotent-Replayed: true``) with no event, the same key with another
body is a 422. The custom headers also make a cross-site form post impossible (they
need a CORS preflight A2 never grants), which is what protects this cookie-authenticated
write.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a2_onboarding import current_learner
from sandbox.common.context import AppContext, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.web import bearer_token, contract_json, json_error, utc_now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS ai_actions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES learners (user_id),
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    response TEXT NOT NULL,  -- JSON sent to the caller, replayed on a retry
    created_at TEXT NOT NULL,
    namespace TEXT,  -- X-Namespace of the request (synthetic traffic), else NULL
    UNIQUE (user_id, idempotency_key)
);
"""

ACTIONS_ROUTE = "/api/ai/actions"
ACTIONS = {
    "explain": "Here is a plain-language explanation of: {input}",
    "quiz": "Three questions to check your understanding of: {input}",
    "summarize": "The key points of: {input}",
}
MAX_INPUT = 2000
MAX_KEY = 255


async def _learner(request: Request) -> dict[str, Any] | None:
    """The learner of the session cookie, else of an A1 access token (via A1's userinfo)."""
    learner = current_learner(request)
    if learner is not None:
        return learner
    token = bearer_token(request)
    ctx = ctx_of(request)
    a1 = ctx.config.app_urls.get("A1")
    if token is None or not a1:
        return None
    http: httpx.AsyncClient = request.app.state.http
    try:
        answer = await http.get(f"{a1}/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"}, timeout=2.0)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    rows = ctx.db.query("SELECT * FROM learners WHERE user_id = ?", (answer.json().get("sub", ""),))
    return dict(rows[0]) if rows else None


async def me(request: Request) -> Response:
    learner = await _learner(request)
    if learner is None:
        return json_error(401, "sign in first: A2 session cookie or an A1 access token required")
    return JSONResponse({
        "user_id": learner["user_id"], "email": learner["email"], "name": learner["name"],
        "credits": learner["credits"], "signed_up_at": learner["signed_up_at"],
        "attribution": json.loads(learner["attribution"]),
        "checkout_session_id": learner["checkout_session_id"],
        "first_page_id": (json.loads(learner["first_page"]) or {}).get("page_id") if learner["first_page"] else None,
    }, headers={"Cache-Control": "no-store"})


def _validate(body: Any) -> tuple[str, str] | str:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unexpected = sorted(set(body) - {"action", "input", "tags"})
    if unexpected:
        return f"unexpected field: {unexpected[0]}"
    action, text = body.get("action"), body.get("input")
    if action not in ACTIONS:
        return f"action must be one of {', '.join(sorted(ACTIONS))}"
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_INPUT:
        return f"input must be a non-empty string of at most {MAX_INPUT} characters"
    return action, text.strip()


def _perform(ctx: AppContext, user_id: str, key: str, request_hash: str, action: str, text: str,
             namespace: str | None = None) -> tuple[int, dict[str, Any], bool, dict[str, Any]]:
    """(status, body, replayed, facts) in one transaction: the credit and the record commit together."""
    with ctx.db.transaction() as conn:
        done = conn.execute("SELECT request_hash, response FROM ai_actions WHERE user_id = ? AND idempotency_key = ?",
                            (user_id, key)).fetchone()
        if done is not None:
            if done["request_hash"] != request_hash:
                return 422, {"error": "X-Idempotency-Key was already used with a different request body"}, False, {}
            return 201, json.loads(done["response"]), True, {}
        learner = conn.execute("SELECT credits, signed_up_epoch FROM learners WHERE user_id = ?",
                               (user_id,)).fetchone()
        if learner["credits"] < 1:
            return 402, {"error": "no credits left"}, False, {}
        first = conn.execute("SELECT count(*) FROM ai_actions WHERE user_id = ?", (user_id,)).fetchone()[0] == 0
        action_id = f"act_{secrets.token_hex(8)}"
        body = {"action_id": action_id, "action": action, "output": ACTIONS[action].format(input=text[:200]),
                "credits_left": learner["credits"] - 1, "first_use": first}
        conn.execute("UPDATE learners SET credits = credits - 1 WHERE user_id = ?", (user_id,))
        conn.execute("INSERT INTO ai_actions (id, user_id, idempotency_key, request_hash, response, created_at,"
                     " namespace) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (action_id, user_id, key, request_hash, json.dumps(body), utc_now_iso(), namespace))
    facts = {"credits_before": learner["credits"], "seconds_since_signup":
             round(time.time() - learner["signed_up_epoch"], 3)}
    return 201, body, False, facts


async def ai_action(request: Request) -> Response:
    body, refused = await contract_json(request)
    if refused is not None:
        return refused
    key = request.headers["x-idempotency-key"].strip()
    if len(key) > MAX_KEY:
        return json_error(422, f"X-Idempotency-Key must be at most {MAX_KEY} characters")
    learner = await _learner(request)
    if learner is None:
        return json_error(401, "sign in first: A2 session cookie or an A1 access token required")
    valid = _validate(body)
    if isinstance(valid, str):
        return json_error(422, valid)
    ctx = ctx_of(request)
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    status, answer, replayed, facts = await run_in_threadpool(_perform, ctx, learner["user_id"], key,
                                                              request_hash, *valid,
                                                              request_tags(request).get("namespace"))
    if status == 201 and not replayed:
        common = {"route": ACTIONS_ROUTE, "status": 201, "trace_id": request.state.trace_id,
                  "tags": request_tags(request), "user_id": learner["user_id"], "action_id": answer["action_id"]}
        emit_event(ctx, "credit_decrement", idempotency_key=f"{key}:credit_decrement", delta=-1,
                   credits_before=facts["credits_before"], credits_after=answer["credits_left"], **common)
        if answer["first_use"]:
            emit_event(ctx, "activation_first_use", idempotency_key=f"{key}:activation_first_use",
                       seconds_since_signup=facts["seconds_since_signup"], **common)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return JSONResponse(answer, status_code=status, headers=headers)


def action_routes() -> list[BaseRoute]:
    return [Route("/api/me", me, methods=["GET"]), Route(ACTIONS_ROUTE, ai_action, methods=["POST"])]
