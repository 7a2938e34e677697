"""A1's OpenID Connect authorization-code flow: authorize, login form, token, userinfo, JWKS.

The flow a relying party (A2) runs against A1, following RFC 6749 §4.1, RFC 7636 (PKCE)
and OpenID Connect Core §3.1:

1. ``GET /oauth2/authorize`` — the client and its ``redirect_uri`` are checked against the
   allowlist in SQLite (``clients``, ``client_redirect_uris``) *before* anything else: an
   unknown client or an unregistered redirect URI gets a 400 page and no redirect, so
   A1 can never be used to bounce a browser (or a code) to a foreign site. Other
   request errors are redirected back with ``error=...``. A browser that already holds
   an A1 session is sent straight back with a code; otherwise the sign-in form is shown.
2. ``POST /oauth2/login`` — the form: ``action=signup`` creates a synthetic user,
   ``action=login`` checks the password. Either way A1 opens a session (the cookie of
   :mod:`sandbox.apps.a1_policy`), emits ``identity_ok`` (``signup`` true/false,
   ``user_id``) and redirects to the client with a single-use code (120 s). A wrong
   email or password answers 401 and emits ``auth_failure`` (the reason shown, a digest
   of the address; never the password).
3. ``POST /oauth2/token`` and ``GET /oauth2/userinfo``: see :mod:`sandbox.apps.a1_tokens`.
4. ``GET /.well-known/jwks.json``: the public half of the key of :mod:`sandbox.apps.a1_keys`.

Codes, sessions and access tokens are stored as SHA-256 digests, never in clear.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a1_keys import SigningKeys
from sandbox.apps.a1_policy import KNOB, SESSION_COOKIE, SESSION_TTL_S, IdentityPolicy
from sandbox.common.context import AppContext, ctx_of
from sandbox.common.events import emit_event, request_tags
from sandbox.common.web import utc_now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS client_redirect_uris (
    client_id TEXT NOT NULL REFERENCES clients (client_id),
    redirect_uri TEXT NOT NULL,
    PRIMARY KEY (client_id, redirect_uri)
);
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    salt TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_requests (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    state TEXT,
    nonce TEXT,
    code_challenge TEXT,
    expires_epoch REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id),
    scope TEXT NOT NULL,
    nonce TEXT,
    code_challenge TEXT,
    auth_time INTEGER NOT NULL,
    expires_epoch REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    auth_time INTEGER NOT NULL,
    expires_epoch REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    expires_epoch REAL NOT NULL
);
"""

CLIENT_ID = "sandbox-student-app"
CLIENT_NAME = "Student app (A2)"
CALLBACK_PATH = "/oauth2/callback"
SECRET_NAME = "OIDC_CLIENT_SECRET"  # pragma: allowlist secret (a name, not a value)
REQUEST_TTL_S, CODE_TTL_S, ID_TOKEN_TTL_S, ACCESS_TOKEN_TTL_S = 600, 120, 300, 3600
PBKDF2_ROUNDS = 20_000  # synthetic users only: enough to be a real hash, cheap enough for load tests
MIN_PASSWORD = 8
WRONG_CREDENTIALS = "email or password is wrong"
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
PKCE_VALUE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of a verifier (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def seed_clients(ctx: AppContext) -> None:
    """Register the student app with exactly one redirect URI: A2's callback on its current URL."""
    a2 = ctx.config.app_urls.get("A2")
    with ctx.db.transaction() as conn:
        conn.execute("INSERT OR IGNORE INTO clients (client_id, name) VALUES (?, ?)", (CLIENT_ID, CLIENT_NAME))
        conn.execute("DELETE FROM client_redirect_uris WHERE client_id = ?", (CLIENT_ID,))
        if a2:
            conn.execute("INSERT INTO client_redirect_uris (client_id, redirect_uri) VALUES (?, ?)",
                         (CLIENT_ID, f"{a2}{CALLBACK_PATH}"))


def setup_oidc(ctx: AppContext) -> None:
    ctx.services["keys"] = SigningKeys(ctx.config.state_dir / "keys")
    policy = IdentityPolicy()
    ctx.faults.register(KNOB, policy)
    ctx.services["identity_policy"] = policy


def keys_of(ctx: AppContext) -> SigningKeys:
    keys: SigningKeys = ctx.services["keys"]
    return keys


def policy_of(ctx: AppContext) -> IdentityPolicy:
    policy: IdentityPolicy = ctx.services["identity_policy"]
    return policy


# -- pages ------------------------------------------------------------------------------
def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
                        f"</title></head><body>{body}</body></html>", status_code=status,
                        headers={"Cache-Control": "no-store"})


def error_page(status: int, message: str) -> HTMLResponse:
    """A refusal shown to the browser instead of a redirect (the redirect target is not trusted)."""
    return _page("Sign-in error", f'<h1>Sign-in error</h1><p id="error">{html.escape(message)}</p>', status)


def login_form(request_id: str, client_name: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    notice = f'<p id="error" role="alert">{html.escape(error)}</p>' if error else ""
    return _page("Sign in", (
        f'<h1>Create your account or sign in</h1><p>to continue to {html.escape(client_name)}</p>{notice}'
        '<form method="post" action="/oauth2/login" id="login-form">'
        f'<input type="hidden" name="request_id" value="{html.escape(request_id)}">'
        '<label>Email <input type="email" name="email" id="email" required></label> '
        '<label>Name <input type="text" name="name" id="name"></label> '
        f'<label>Password <input type="password" name="password" id="password" minlength="{MIN_PASSWORD}" '
        'required></label> '
        '<button type="submit" name="action" value="signup" id="signup">Create account</button> '
        '<button type="submit" name="action" value="login" id="login">Sign in</button></form>'), status)


def _redirect(uri: str, **params: str | None) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(f"{uri}{'&' if '?' in uri else '?'}{query}", status_code=303,
                            headers={"Cache-Control": "no-store"})


async def read_form(request: Request) -> dict[str, str] | None:
    """An ``application/x-www-form-urlencoded`` body as a dict (first value wins); None otherwise."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    try:
        return dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return None


# -- authorize ----------------------------------------------------------------------------
def _validate_authorize(ctx: AppContext, q: dict[str, str]) -> Response | dict[str, Any]:
    """The accepted request, or the answer refusing it (400 page, or redirect with ``error``)."""
    client_id, redirect_uri = q.get("client_id", ""), q.get("redirect_uri", "")
    if not client_id:
        return error_page(400, "client_id is required")
    client = ctx.db.query("SELECT name FROM clients WHERE client_id = ?", (client_id,))
    if not client:
        return error_page(400, f"unknown client_id: {client_id}")
    if not redirect_uri:
        return error_page(400, "redirect_uri is required")
    allowed = {r["redirect_uri"] for r in ctx.db.query(
        "SELECT redirect_uri FROM client_redirect_uris WHERE client_id = ?", (client_id,))}
    if redirect_uri not in allowed:  # exact string match, no prefix or pattern
        return error_page(400, f"redirect_uri is not registered for client {client_id}")
    state = q.get("state") or None

    def refuse(error: str, description: str) -> Response:
        return _redirect(redirect_uri, error=error, error_description=description, state=state,
                         iss=ctx.config.base_url)

    if q.get("response_type") != "code":
        return refuse("unsupported_response_type", "response_type must be code")
    scope = q.get("scope", "")
    if "openid" not in scope.split():
        return refuse("invalid_scope", "scope must include openid")
    challenge = q.get("code_challenge") or None
    if challenge is not None:
        if q.get("code_challenge_method") != "S256":
            return refuse("invalid_request", "code_challenge_method must be S256")
        if not PKCE_VALUE.match(challenge):
            return refuse("invalid_request", "code_challenge must be 43-128 characters of [A-Za-z0-9._~-]")
    return {"client_id": client_id, "client_name": client[0]["name"], "redirect_uri": redirect_uri,
            "scope": scope, "state": state, "nonce": q.get("nonce") or None, "code_challenge": challenge}


def _session_user(ctx: AppContext, request: Request) -> tuple[str, int] | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    rows = ctx.db.query("SELECT user_id, auth_time FROM sessions WHERE id_hash = ? AND expires_epoch > ?",
                        (digest(raw), time.time()))
    return (rows[0]["user_id"], rows[0]["auth_time"]) if rows else None


def _issue_code(ctx: AppContext, req: dict[str, Any], user_id: str, auth_time: int) -> str:
    code = secrets.token_urlsafe(32)
    ctx.db.execute(
        "INSERT INTO auth_codes (code_hash, client_id, redirect_uri, user_id, scope, nonce, code_challenge,"
        " auth_time, expires_epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (digest(code), req["client_id"], req["redirect_uri"], user_id, req["scope"], req["nonce"],
         req["code_challenge"], auth_time, time.time() + CODE_TTL_S))
    return code


def _identity_ok(ctx: AppContext, request: Request, route: str, code: str, user_id: str, signup: bool) -> None:
    emit_event(ctx, "identity_ok", route=route, status=303, trace_id=request.state.trace_id,
               idempotency_key=f"identity_ok:{digest(code)[:32]}", tags=request_tags(request),
               signup=signup, user_id=user_id)


def _auth_failure(ctx: AppContext, request: Request, client_id: str, email: str, reason: str) -> None:
    """One ``auth_failure`` event per refused sign-in: what monitoring rules alert on.

    It carries the reason the user was shown and a digest of the address (so a burst
    over many accounts — credential stuffing — is visible without storing addresses);
    never the password. Each attempt is its own fact, hence its own idempotency key.
    """
    emit_event(ctx, "auth_failure", route="/oauth2/login", status=401, trace_id=request.state.trace_id,
               idempotency_key=f"auth_failure:{secrets.token_hex(16)}", tags=request_tags(request),
               reason=reason, client_id=client_id, subject_digest=digest(email.strip().lower())[:16])


async def authorize(request: Request) -> Response:
    ctx = ctx_of(request)
    req = _validate_authorize(ctx, dict(request.query_params))
    if isinstance(req, Response):
        return req
    signed_in = _session_user(ctx, request)
    if signed_in is not None:  # single sign-on: the browser already has an A1 session
        code = await run_in_threadpool(_issue_code, ctx, req, *signed_in)
        _identity_ok(ctx, request, "/oauth2/authorize", code, signed_in[0], signup=False)
        return _redirect(req["redirect_uri"], code=code, state=req["state"], iss=ctx.config.base_url)
    request_id = secrets.token_urlsafe(24)
    ctx.db.execute(
        "INSERT INTO auth_requests (id, client_id, redirect_uri, scope, state, nonce, code_challenge, expires_epoch)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (request_id, req["client_id"], req["redirect_uri"], req["scope"], req["state"], req["nonce"],
         req["code_challenge"], time.time() + REQUEST_TTL_S))
    return login_form(request_id, req["client_name"])


# -- login form ---------------------------------------------------------------------------
def _hash_password(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), PBKDF2_ROUNDS).hex()


def _authenticate(ctx: AppContext, form: dict[str, str]) -> tuple[str, bool] | str:
    """(user_id, created) for a good signup or login; otherwise the sentence shown on the form."""
    email, password = form.get("email", "").strip().lower(), form.get("password", "")
    if not EMAIL.match(email) or len(email) > 254:
        return "email must be an email address (name@domain.tld)"
    if len(password) < MIN_PASSWORD:
        return f"password must be at least {MIN_PASSWORD} characters"
    existing = ctx.db.query("SELECT id, salt, password_hash FROM users WHERE email = ?", (email,))
    if form.get("action") == "signup":
        if existing:
            return "an account with this email already exists; sign in instead"
        name = form.get("name", "").strip() or email.split("@")[0]
        salt, user_id = secrets.token_hex(16), f"usr_{secrets.token_hex(10)}"
        ctx.db.execute("INSERT INTO users (id, email, name, salt, password_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                       (user_id, email, name[:200], salt, _hash_password(password, salt), utc_now_iso()))
        return user_id, True
    if form.get("action") != "login":
        return "action must be signup or login"
    if not existing or not secrets.compare_digest(_hash_password(password, existing[0]["salt"]),
                                                  existing[0]["password_hash"]):
        return WRONG_CREDENTIALS
    return existing[0]["id"], False


def _open_session(ctx: AppContext, user_id: str, auth_time: int) -> str:
    session = secrets.token_urlsafe(32)
    ctx.db.execute("INSERT INTO sessions (id_hash, user_id, auth_time, expires_epoch) VALUES (?, ?, ?, ?)",
                   (digest(session), user_id, auth_time, auth_time + SESSION_TTL_S))
    return session


async def login(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    if form is None:
        return error_page(415, "the sign-in form must be posted as application/x-www-form-urlencoded")
    rows = ctx.db.query("SELECT * FROM auth_requests WHERE id = ? AND expires_epoch > ?",
                        (form.get("request_id", ""), time.time()))
    if not rows:
        return error_page(400, "this sign-in request is unknown or expired; start again from the application")
    req = dict(rows[0])
    outcome = await run_in_threadpool(_authenticate, ctx, form)
    if isinstance(outcome, str):
        client = ctx.db.query("SELECT name FROM clients WHERE client_id = ?", (req["client_id"],))
        status = 401 if outcome == WRONG_CREDENTIALS else 409 if "exists" in outcome else 422
        if status == 401:
            _auth_failure(ctx, request, req["client_id"], form.get("email", ""), outcome)
        return login_form(req["id"], client[0]["name"] if client else req["client_id"], outcome, status)
    user_id, created = outcome
    now = int(time.time())
    session = await run_in_threadpool(_open_session, ctx, user_id, now)
    code = await run_in_threadpool(_issue_code, ctx, req, user_id, now)
    ctx.db.execute("DELETE FROM auth_requests WHERE id = ?", (req["id"],))
    _identity_ok(ctx, request, "/oauth2/login", code, user_id, signup=created)
    response = _redirect(req["redirect_uri"], code=code, state=req["state"], iss=ctx.config.base_url)
    response.headers.append("Set-Cookie", policy_of(ctx).session_cookie(session, ctx.config.host, time.time()))
    return response


async def jwks(request: Request) -> Response:
    return JSONResponse(keys_of(ctx_of(request)).jwks(), headers={"Cache-Control": "public, max-age=300"})


def oidc_routes() -> list[BaseRoute]:
    return [
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/oauth2/authorize", authorize, methods=["GET"]),
        Route("/oauth2/login", login, methods=["POST"]),
    ]
