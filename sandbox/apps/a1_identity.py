"""A1 — identity: the OpenID Connect discovery document and the flow it announces.

The discovery document is the first thing a relying party fetches, so it is A1's safe
smoke action. Its issuer is the app's own base URL and every endpoint is derived from a
path stored in the ``oidc_settings`` table, so the document always agrees with where
the app actually listens. The endpoints it announces (authorize, token, userinfo, JWKS)
are served by :mod:`sandbox.apps.a1_oidc` and :mod:`sandbox.apps.a1_tokens`; the session cookie and the ``identity``
fault knob are described in :mod:`sandbox.apps.a1_policy`, the signing keys in
:mod:`sandbox.apps.a1_keys`.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a1_oidc import SCHEMA as OIDC_SCHEMA
from sandbox.apps.a1_oidc import oidc_routes, seed_clients, setup_oidc
from sandbox.apps.a1_tokens import token_routes
from sandbox.common.context import AppContext, AppDefinition, ctx_of

SCHEMA = """
CREATE TABLE IF NOT EXISTS oidc_settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL  -- JSON
);
"""

SETTINGS: dict[str, object] = {
    "authorization_path": "/oauth2/authorize",
    "token_path": "/oauth2/token",
    "userinfo_path": "/oauth2/userinfo",
    "jwks_path": "/.well-known/jwks.json",
    "response_types_supported": ["code"],
    "grant_types_supported": ["authorization_code"],
    "subject_types_supported": ["public"],
    "id_token_signing_alg_values_supported": ["RS256"],
    "scopes_supported": ["openid", "email", "profile"],
    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    "claims_supported": ["sub", "iss", "aud", "exp", "iat", "email", "email_verified", "name"],
    "code_challenge_methods_supported": ["S256"],
}

# Stored paths → the discovery field that carries the absolute URL.
ENDPOINT_FIELDS = {
    "authorization_path": "authorization_endpoint",
    "token_path": "token_endpoint",
    "userinfo_path": "userinfo_endpoint",
    "jwks_path": "jwks_uri",
}


def seed(ctx: AppContext) -> None:
    ctx.db.seed("oidc_settings", ("key", "value"), [(k, json.dumps(v)) for k, v in SETTINGS.items()])
    seed_clients(ctx)


def discovery(request: Request) -> Response:
    """``/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0, §3)."""
    ctx = ctx_of(request)
    issuer = ctx.config.base_url
    document: dict[str, object] = {"issuer": issuer}
    for row in ctx.db.query("SELECT key, value FROM oidc_settings ORDER BY key"):
        value = json.loads(row["value"])
        field = ENDPOINT_FIELDS.get(row["key"])
        if field is not None:
            document[field] = f"{issuer}{value}"
        else:
            document[row["key"]] = value
    return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})


def routes() -> list[BaseRoute]:
    return [Route("/.well-known/openid-configuration", discovery, methods=["GET"]), *oidc_routes(), *token_routes()]


DEFINITION = AppDefinition(app_id="A1", schema=SCHEMA + OIDC_SCHEMA, seed=seed, routes=routes, setup=setup_oidc)
