"""A2 onboarding: sign-in with A1 (OIDC relying party), checkout on A5, first page from A3.

The learner's path after the marketing landing page (A7):

1. ``GET /signup/start?utm_source=…`` — A2 records the attribution of the landing link
   with a fresh ``state``, ``nonce`` and PKCE verifier, then redirects the browser to A1's
   authorize endpoint (client ``sandbox-student-app``, redirect URI A2's callback). The
   state and verifier stay server-side, so the callback can prove it answers a request
   A2 made (CSRF) and only A2 can redeem the code.
2. ``GET /oauth2/callback`` — the code is exchanged at A1's token endpoint
   (``client_secret_basic`` with ``OIDC_CLIENT_SECRET``, plus the PKCE verifier) and the
   id token is validated: RS256 signature against A1's JWKS (fetched, cached, fetched
   again once for an unknown ``kid``), ``iss``, ``aud``, ``exp``, ``nonce``. The learner is
   stored with the attribution, ``signup_attributed`` is emitted, and the A2 session
   cookie is set (same attributes as A1's: ``Secure; HttpOnly; SameSite=None``, host
   domain, ``Max-Age`` = the one-hour session TTL).
3. ``GET/POST /onboarding/checkout`` — the page's form (with a per-session CSRF token)
   makes A2 call A5 ``POST /api/checkout/sessions`` for the micro price, with
   ``X-Idempotency-Key`` derived from the learner and price (a double submit replays,
   it never charges twice) and the request's ``X-Trace-Id``. The call is made by A2's
   server rather than by page script: A5 is another origin and serves no CORS.
4. ``GET /onboarding/first-page`` — A2 asks A3 ``POST /api/pages`` to build the learner's
   first page (idempotency key derived from the learner, so reloading the page shows
   the same page instead of building another) and shows it, with the way on to
5. ``GET /onboarding/first-action`` — the guided first AI action
   (:mod:`sandbox.apps.a2_guide`).

Every upstream call forwards the request's trace id and synthetic-traffic tags.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.context import AppContext, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.middleware import TAG_HEADERS
from sandbox.common.web import utc_now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS login_attempts (
    state TEXT PRIMARY KEY,
    nonce TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    attribution TEXT NOT NULL,  -- JSON
    expires_epoch REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS learners (
    user_id TEXT PRIMARY KEY,  -- A1's sub
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    attribution TEXT NOT NULL,  -- JSON, from the landing link of the first sign-in
    credits INTEGER NOT NULL CHECK (credits >= 0),
    signed_up_at TEXT NOT NULL,
    signed_up_epoch REAL NOT NULL,
    checkout_session_id TEXT,
    first_page TEXT,  -- JSON as A3 answered it
    namespace TEXT    -- X-Namespace of the sign-in (synthetic learners), else NULL
);
CREATE TABLE IF NOT EXISTS learner_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES learners (user_id),
    csrf TEXT NOT NULL,
    expires_epoch REAL NOT NULL
);
"""

CLIENT_ID = "sandbox-student-app"
CALLBACK_PATH = "/oauth2/callback"
SECRET_NAME = "OIDC_CLIENT_SECRET"  # pragma: allowlist secret (a name, not a value)
SESSION_COOKIE = "a2_session"
SESSION_TTL_S = 3600
ATTEMPT_TTL_S = 600
STARTER_CREDITS = 3
CHECKOUT_PRICE = "price_micro_qa"
ATTRIBUTION_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "ref")
LEEWAY_S = 30
MAX_ATTRIBUTION = 100
FIRST_ACTION_PATH = "/onboarding/first-action"  # served by sandbox.apps.a2_guide


class OnboardingError(Exception):
    """A step that cannot go on; ``status`` and ``message`` are shown to the learner."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
                        f"</title></head><body>{body}</body></html>", status_code=status,
                        headers={"Cache-Control": "no-store"})


def error_page(status: int, message: str) -> HTMLResponse:
    return page("Onboarding error", f'<h1>Something went wrong</h1><p id="error">{html.escape(message)}</p>'
                '<p><a href="/signup/start">Start again</a></p>', status)


def upstream_headers(request: Request, key: str) -> dict[str, str]:
    """Contract headers for a call made on behalf of ``request``: its trace id and tags, and ``key``."""
    headers = {name: request.headers[name] for name in TAG_HEADERS if name in request.headers}
    return {**headers, "X-Trace-Id": request.state.trace_id, "X-Idempotency-Key": key}


def _http(request: Request) -> httpx.AsyncClient:
    client: httpx.AsyncClient = request.app.state.http
    return client


def _a1(ctx: AppContext) -> str:
    url = ctx.config.app_urls.get("A1")
    if not url:
        raise OnboardingError(503, "identity (A1) is not part of this sandbox")
    return url


# -- sessions -----------------------------------------------------------------------------
def current_learner(request: Request) -> dict[str, Any] | None:
    """The learner of the request's A2 session cookie, with the session's CSRF token."""
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    rows = ctx_of(request).db.query(
        "SELECT l.*, s.csrf FROM learner_sessions s JOIN learners l ON l.user_id = s.user_id "
        "WHERE s.id_hash = ? AND s.expires_epoch > ?", (digest(raw), time.time()))
    return dict(rows[0]) if rows else None


def _signed_out() -> HTMLResponse:
    return error_page(401, "you are not signed in to the student app")


# -- 1. start -----------------------------------------------------------------------------
def _attribution(request: Request) -> dict[str, str]:
    found = {k: request.query_params[k][:MAX_ATTRIBUTION] for k in ATTRIBUTION_KEYS if request.query_params.get(k)}
    referer = request.headers.get("referer")
    if referer:
        found["landing"] = referer.split("?")[0][:MAX_ATTRIBUTION * 2]
    return found


async def signup_start(request: Request) -> Response:
    ctx = ctx_of(request)
    try:
        a1 = _a1(ctx)
    except OnboardingError as exc:
        return error_page(exc.status, exc.message)
    state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(16), secrets.token_urlsafe(48)
    ctx.db.execute("INSERT INTO login_attempts (state, nonce, code_verifier, attribution, expires_epoch) "
                   "VALUES (?, ?, ?, ?, ?)", (state, nonce, verifier, json.dumps(_attribution(request)),
                                              time.time() + ATTEMPT_TTL_S))
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"response_type": "code", "client_id": CLIENT_ID, "scope": "openid email profile",
                       "redirect_uri": f"{ctx.config.base_url}{CALLBACK_PATH}", "state": state, "nonce": nonce,
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    return RedirectResponse(f"{a1}/oauth2/authorize?{query}", status_code=302, headers={"Cache-Control": "no-store"})


# -- 2. callback --------------------------------------------------------------------------
async def _key_set(request: Request, refresh: bool) -> KeySet:
    ctx = ctx_of(request)
    cached: KeySet | None = ctx.services.get("a1_jwks")
    if cached is not None and not refresh:
        return cached
    response = await _http(request).get(f"{_a1(ctx)}/.well-known/jwks.json", timeout=2.0)
    if response.status_code != 200:
        raise OnboardingError(502, f"A1 JWKS answered {response.status_code}")
    key_set = KeySet.import_key_set(response.json())
    ctx.services["a1_jwks"] = key_set
    return key_set


async def validate_id_token(request: Request, id_token: str, nonce: str) -> dict[str, Any]:
    """The claims of an id token A1 signed for this client, or :class:`OnboardingError` saying why not."""
    ctx = ctx_of(request)
    for refresh in (False, True):  # an unknown kid may be a rotated key: fetch the JWKS once more
        try:
            claims = dict(jwt.decode(id_token, await _key_set(request, refresh), algorithms=["RS256"]).claims)
            break
        except (JoseError, ValueError):
            continue
    else:
        raise OnboardingError(401, "the id token signature does not verify against A1's JWKS")
    now = time.time()
    audience = claims.get("aud")
    if claims.get("iss") != _a1(ctx):
        raise OnboardingError(401, f"id token issuer {claims.get('iss')!r} is not A1")
    if audience != CLIENT_ID and not (isinstance(audience, list) and CLIENT_ID in audience):
        raise OnboardingError(401, "id token audience is not this client")
    if not isinstance(claims.get("exp"), int | float) or claims["exp"] < now - LEEWAY_S:
        raise OnboardingError(401, "id token has expired")
    if claims.get("nonce") != nonce:
        raise OnboardingError(401, "id token nonce does not match the sign-in request")
    return claims


async def _redeem(request: Request, code: str, verifier: str) -> dict[str, Any]:
    ctx = ctx_of(request)
    secret = ctx.config.secrets.get(SECRET_NAME)
    if not secret:
        raise OnboardingError(503, f"{SECRET_NAME} is not configured on A2")
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "redirect_uri": f"{ctx.config.base_url}{CALLBACK_PATH}"}
    try:
        response = await _http(request).post(f"{_a1(ctx)}/oauth2/token", data=form, auth=(CLIENT_ID, secret),
                                             headers={"X-Trace-Id": request.state.trace_id}, timeout=3.0)
    except httpx.HTTPError as exc:
        raise OnboardingError(502, f"A1 token endpoint unreachable: {type(exc).__name__}") from None
    if response.status_code != 200:
        try:
            error = response.json().get("error", "")
        except ValueError:
            error = ""
        raise OnboardingError(502, f"A1 refused the code: {response.status_code} {error}".rstrip())
    tokens: dict[str, Any] = response.json()
    return tokens


def _store_learner(ctx: AppContext, claims: dict[str, Any], attribution: dict[str, str],
                   namespace: str | None = None) -> tuple[bool, str, str]:
    """Create the learner on first sign-in (with the sign-in's namespace tag); open a session.
    Returns (new, session, csrf)."""
    session, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(16), time.time()
    with ctx.db.transaction() as conn:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO learners (user_id, email, name, attribution, credits, signed_up_at, signed_up_epoch,"
            " namespace) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (claims["sub"], claims.get("email", ""), claims.get("name") or claims.get("email", ""),
             json.dumps(attribution), STARTER_CREDITS, utc_now_iso(), now, namespace))
        conn.execute("INSERT INTO learner_sessions (id_hash, user_id, csrf, expires_epoch) VALUES (?, ?, ?, ?)",
                     (digest(session), claims["sub"], csrf, now + SESSION_TTL_S))
    return cursor.rowcount == 1, session, csrf


async def callback(request: Request) -> Response:
    ctx, q = ctx_of(request), request.query_params
    if q.get("error"):
        return error_page(400, f"A1 refused the sign-in: {q['error']} {q.get('error_description', '')}".rstrip())
    rows = ctx.db.query("SELECT * FROM login_attempts WHERE state = ? AND expires_epoch > ?",
                        (q.get("state", ""), time.time()))
    if not rows or not q.get("code"):
        return error_page(400, "unknown or expired sign-in state; start again from the landing page")
    attempt = rows[0]
    ctx.db.execute("DELETE FROM login_attempts WHERE state = ?", (attempt["state"],))
    try:
        tokens = await _redeem(request, q["code"], attempt["code_verifier"])
        claims = await validate_id_token(request, str(tokens.get("id_token", "")), attempt["nonce"])
    except OnboardingError as exc:
        return error_page(exc.status, exc.message)
    attribution = json.loads(attempt["attribution"])
    new, session, _csrf = await run_in_threadpool(_store_learner, ctx, claims, attribution,
                                                  request_tags(request).get("namespace"))
    if new:
        emit_event(ctx, "signup_attributed", route=CALLBACK_PATH, status=303, trace_id=request.state.trace_id,
                   idempotency_key=f"signup_attributed:{claims['sub']}", tags=request_tags(request),
                   user_id=claims["sub"], attribution=attribution)
    response = RedirectResponse("/onboarding/checkout", status_code=303, headers={"Cache-Control": "no-store"})
    response.set_cookie(SESSION_COOKIE, session, max_age=SESSION_TTL_S, path="/", domain=ctx.config.host,
                        secure=True, httponly=True, samesite="none")
    return response


# -- 3. checkout --------------------------------------------------------------------------
async def checkout_page(request: Request) -> Response:
    learner = current_learner(request)
    if learner is None:
        return _signed_out()
    if request.method == "GET":
        return page("Checkout", (
            f'<h1>Welcome, {html.escape(learner["name"])}</h1><p>Unlock the Micro QA pack to start learning.</p>'
            '<form method="post" action="/onboarding/checkout" id="checkout-form">'
            f'<input type="hidden" name="csrf" value="{html.escape(learner["csrf"])}">'
            '<button type="submit" id="checkout-button">Buy the Micro QA pack ($0.50)</button></form>'))
    form = read_form(await request.body())
    if not secrets.compare_digest(str(form.get("csrf", "")), learner["csrf"]):
        return error_page(403, "the checkout form is stale or forged (CSRF token mismatch)")
    ctx = ctx_of(request)
    a5 = ctx.config.app_urls.get("A5")
    if not a5:
        return error_page(503, "checkout (A5) is not part of this sandbox")
    key = f"a2-checkout:{learner['user_id']}:{CHECKOUT_PRICE}"
    try:
        answer = await _http(request).post(f"{a5}/api/checkout/sessions", json={"price_id": CHECKOUT_PRICE,
                                                                               "quantity": 1,
                                                                               "user_id": learner["user_id"]},
                                           headers=upstream_headers(request, key), timeout=3.0)
    except httpx.HTTPError as exc:
        return error_page(502, f"checkout (A5) unreachable: {type(exc).__name__}")
    if answer.status_code not in (200, 201):
        return error_page(502, f"checkout (A5) answered {answer.status_code}")
    ctx.db.execute("UPDATE learners SET checkout_session_id = ? WHERE user_id = ?",
                   (str(answer.json().get("id", "")), learner["user_id"]))
    return RedirectResponse("/onboarding/first-page", status_code=303, headers={"Cache-Control": "no-store"})


def read_form(raw: bytes) -> dict[str, str]:
    """A urlencoded form body (first value wins); empty when it is not UTF-8."""
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


# -- 4. first page ------------------------------------------------------------------------
async def _build_first_page(request: Request, learner: dict[str, Any]) -> dict[str, Any]:
    ctx = ctx_of(request)
    a3 = ctx.config.app_urls.get("A3")
    if not a3:
        raise OnboardingError(503, "orchestration (A3) is not part of this sandbox")
    body = {"learner_id": learner["user_id"], "template": "first_page", "title": f"Welcome, {learner['name']}"}
    try:
        answer = await _http(request).post(f"{a3}/api/pages", json=body, timeout=3.0,
                                           headers=upstream_headers(request, f"a2-first-page:{learner['user_id']}"))
    except httpx.HTTPError as exc:
        raise OnboardingError(502, f"orchestration (A3) unreachable: {type(exc).__name__}") from None
    if answer.status_code not in (200, 201):
        raise OnboardingError(502, f"orchestration (A3) answered {answer.status_code}")
    built: dict[str, Any] = answer.json()
    ctx.db.execute("UPDATE learners SET first_page = ? WHERE user_id = ?", (json.dumps(built), learner["user_id"]))
    return built


async def first_page(request: Request) -> Response:
    learner = current_learner(request)
    if learner is None:
        return _signed_out()
    try:
        built = json.loads(learner["first_page"]) if learner["first_page"] else \
            await _build_first_page(request, learner)
    except OnboardingError as exc:
        return error_page(exc.status, exc.message)
    blocks = "".join(f"<li>{html.escape(str(b.get('text', '')))}</li>" for b in built.get("blocks", []))
    return page(str(built.get("title", "Your first page")), (
        f'<main data-testid="first-page" data-page-id="{html.escape(str(built.get("page_id", "")))}">'
        f'<h1>{html.escape(str(built.get("title", "")))}</h1><ul>{blocks}</ul>'
        f'<p id="credits">{learner["credits"]} AI credits left</p>'
        f'<p><a id="first-action-link" data-testid="first-action-link" href="{FIRST_ACTION_PATH}">'
        "Next: ask your AI tutor</a></p></main>"))


def onboarding_routes() -> list[BaseRoute]:
    return [
        Route("/signup/start", signup_start, methods=["GET"]),
        Route(CALLBACK_PATH, callback, methods=["GET"]),
        Route("/onboarding/checkout", checkout_page, methods=["GET", "POST"]),
        Route("/onboarding/first-page", first_page, methods=["GET"]),
    ]
