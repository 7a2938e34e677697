"""A1's token and userinfo endpoints: where a relying party redeems the code of the login flow.

``POST /oauth2/token`` authenticates the client (``client_secret_basic`` or
``client_secret_post`` with the ``OIDC_CLIENT_SECRET`` A1 was started with — never both),
then redeems a code once: it must be unexpired, unused, issued to this client, presented
with the exact ``redirect_uri`` of the authorization request and, when a
``code_challenge`` (S256) was sent, with the matching PKCE ``code_verifier``. A known code
is marked used before its redirect URI and verifier are compared, so a guessing attempt
burns it: the code cannot be tried again with another verifier. The answer carries an access token and an RS256 id token
(``iss``, ``sub``, ``aud``, ``iat``, ``exp``, ``auth_time``, ``email``, ``nonce``) signed with
the published key — or, when the ``identity`` knob says so, with an unlisted one.
Errors use the RFC 6749 §5.2 shape (``error``, ``error_description``) OAuth clients parse.

``GET|POST /oauth2/userinfo`` answers the subject of a valid access token (bearer).
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any
from urllib.parse import unquote_plus

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a1_oidc import (
    ACCESS_TOKEN_TTL_S,
    ID_TOKEN_TTL_S,
    PKCE_VALUE,
    SECRET_NAME,
    digest,
    keys_of,
    policy_of,
    read_form,
    s256,
)
from sandbox.common.context import AppContext, ctx_of
from sandbox.common.web import bearer_token, token_matches


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    """The RFC 6749 §5.2 error shape that OAuth clients parse."""
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="A1"' if error == "invalid_client" else 'Bearer error="invalid_token"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _client_credentials(request: Request, form: dict[str, str]) -> tuple[str, str] | JSONResponse:
    header = request.headers.get("authorization", "")
    basic = header[:6].lower() == "basic "
    if basic and "client_secret" in form:
        return oauth_error(400, "invalid_request", "use one client authentication method, not two")
    if basic:
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return oauth_error(401, "invalid_client", "the Basic credentials are not valid base64")
        client_id, _, secret = decoded.partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    return form.get("client_id", ""), form.get("client_secret", "")


def _exchange(ctx: AppContext, form: dict[str, str], client_id: str) -> dict[str, Any] | JSONResponse:
    code = form.get("code", "")
    with ctx.db.transaction() as conn:
        row = conn.execute("SELECT * FROM auth_codes WHERE code_hash = ?", (digest(code),)).fetchone()
        if row is None or row["used"] or row["expires_epoch"] <= time.time() or row["client_id"] != client_id:
            return oauth_error(400, "invalid_grant", "the code is unknown, expired, already used or not this client's")
        conn.execute("UPDATE auth_codes SET used = 1 WHERE code_hash = ?", (row["code_hash"],))
    if form.get("redirect_uri") != row["redirect_uri"]:
        return oauth_error(400, "invalid_grant", "redirect_uri does not match the authorization request")
    verifier = form.get("code_verifier")
    if row["code_challenge"] is not None:
        if not verifier:
            return oauth_error(400, "invalid_grant", "code_verifier is required (PKCE)")
        if not PKCE_VALUE.match(verifier) or not secrets.compare_digest(s256(verifier), row["code_challenge"]):
            return oauth_error(400, "invalid_grant", "code_verifier does not match the code_challenge")
    elif verifier:
        return oauth_error(400, "invalid_grant", "code_verifier sent but the authorization request had no challenge")
    user = ctx.db.query("SELECT id, email, name FROM users WHERE id = ?", (row["user_id"],))[0]
    now = int(time.time())
    claims = {"iss": ctx.config.base_url, "sub": user["id"], "aud": client_id, "iat": now,
              "exp": now + ID_TOKEN_TTL_S, "auth_time": row["auth_time"], "email": user["email"],
              "email_verified": False, "name": user["name"]}
    if row["nonce"]:
        claims["nonce"] = row["nonce"]
    access = secrets.token_urlsafe(32)
    ctx.db.execute("INSERT INTO access_tokens (token_hash, user_id, client_id, scope, expires_epoch) "
                   "VALUES (?, ?, ?, ?, ?)", (digest(access), user["id"], client_id, row["scope"],
                                              now + ACCESS_TOKEN_TTL_S))
    id_token = keys_of(ctx).sign(claims, unlisted=policy_of(ctx).unlisted_key)
    return {"access_token": access, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_TTL_S,
            "scope": row["scope"], "id_token": id_token}


async def token(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await read_form(request)
    if form is None:
        return oauth_error(400, "invalid_request", "body must be application/x-www-form-urlencoded")
    expected = ctx.config.secrets.get(SECRET_NAME)
    if not expected:
        return oauth_error(503, "temporarily_unavailable", f"{SECRET_NAME} is not configured on A1")
    creds = _client_credentials(request, form)
    if isinstance(creds, JSONResponse):
        return creds
    client_id, secret = creds
    known = ctx.db.query("SELECT 1 FROM clients WHERE client_id = ?", (client_id,))
    if not known or not token_matches(secret, expected):
        return oauth_error(401, "invalid_client", "client authentication failed")
    if form.get("grant_type") != "authorization_code":
        return oauth_error(400, "unsupported_grant_type", "grant_type must be authorization_code")
    issued = await run_in_threadpool(_exchange, ctx, form, client_id)
    if isinstance(issued, JSONResponse):
        return issued
    return JSONResponse(issued, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def userinfo(request: Request) -> Response:
    ctx = ctx_of(request)
    access = bearer_token(request)
    rows = ctx.db.query(
        "SELECT u.id, u.email, u.name FROM access_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE t.token_hash = ? AND t.expires_epoch > ?", (digest(access or ""), time.time()))
    if not access or not rows:
        return oauth_error(401, "invalid_token", "a valid access token is required")
    user = rows[0]
    return JSONResponse({"sub": user["id"], "email": user["email"], "email_verified": False, "name": user["name"]},
                        headers={"Cache-Control": "no-store"})


def token_routes() -> list[BaseRoute]:
    return [Route("/oauth2/token", token, methods=["POST"]),
            Route("/oauth2/userinfo", userinfo, methods=["GET", "POST"])]
