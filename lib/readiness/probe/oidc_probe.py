"""Probe an identity provider as its registered client would: discovery, JWKS, redirects, code flow.

The B2C funnel proves that sign-ups work; this module proves that the identity provider
behind them is configured safely, by acting as the registered client itself:

* discovery and JWKS are fetched and checked (:func:`discover`);
* ``/authorize`` is asked to redirect to URIs that are *not* registered — another host,
  and the registered callback with a suffix (a prefix-matching allowlist lets that one
  through) — and must refuse without redirecting (:func:`probe_redirects`);
* two authorization-code flows with PKCE are run in Chromium up to the redirect, which is
  intercepted so the relying party never sees the code (:func:`probe_code_flow`): one
  code is redeemed with a wrong ``code_verifier`` (must be refused), the other with the
  right one; its id token is validated with :mod:`readiness.probe.oidc`, the access token is
  used once at userinfo, and the same code is redeemed again (must be refused).

Tokens, codes and the client secret stay in memory: results hold statuses, claim names,
subjects and findings only.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import secrets
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from playwright.async_api import Browser, Route

from readiness.probe.browser import guard_context, strip_query
from readiness.probe.client import GuardedClient
from readiness.probe.oidc import check_jwks, check_redirect_uri, validate_id_token

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclasses.dataclass(frozen=True)
class OidcTarget:
    """The identity provider under audit and the client registration the audit uses."""

    app_id: str
    issuer: str  # the identity app's base URL, which must be the id tokens' iss
    client_id: str
    redirect_uri: str  # the registered callback of the relying party
    scope: str
    algorithms: tuple[str, ...]
    leeway_s: float


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(endpoint: str, target: OidcTarget, *, redirect_uri: str, state: str, challenge: str) -> str:
    query = {"response_type": "code", "client_id": target.client_id, "redirect_uri": redirect_uri,
             "scope": target.scope, "state": state, "nonce": secrets.token_urlsafe(12),
             "code_challenge": challenge, "code_challenge_method": "S256"}
    return f"{endpoint}?{urlencode(query, quote_via=quote)}"


async def discover(client: GuardedClient, target: OidcTarget) -> dict[str, Any]:
    """Discovery document and JWKS, with findings about both (public data, safe to keep)."""
    url = f"{target.issuer}/.well-known/openid-configuration"
    doc_sample = await client.get(url, app=target.app_id, route="/.well-known/openid-configuration", keep_body=True)
    out: dict[str, Any] = {"discovery_status": doc_sample.status, "findings": [], "jwks": None, "discovery": None}
    try:
        doc = doc_sample.json() if doc_sample.ok else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        out["findings"].append(f"discovery document unavailable at {url} ({doc_sample.status or doc_sample.error})")
        return out
    out["discovery"] = doc
    if doc.get("issuer") != target.issuer:
        out["findings"].append(f"discovery issuer {doc.get('issuer')!r} is not the identity app's URL "
                               f"{target.issuer!r}")
    unsupported = [a for a in target.algorithms if a not in doc.get("id_token_signing_alg_values_supported", [])]
    if unsupported:
        out["findings"].append(f"discovery does not list id token algorithms {unsupported}")
    jwks_uri = str(doc.get("jwks_uri", ""))
    jwks_sample = await client.get(jwks_uri, app=target.app_id, route=urlsplit(jwks_uri).path, keep_body=True) \
        if jwks_uri.startswith(("http://", "https://")) else None
    try:
        jwks = jwks_sample.json() if jwks_sample is not None and jwks_sample.ok else None
    except ValueError:
        jwks = None
    if jwks is None:
        out["findings"].append(f"JWKS unavailable at {jwks_uri or '(no jwks_uri)'}")
        return out
    out["jwks"] = jwks
    out["findings"] += [f.message for f in check_jwks(jwks)]
    return out


async def probe_redirects(client: GuardedClient, target: OidcTarget, endpoint: str,
                          allowlist: Collection[str]) -> list[dict[str, Any]]:
    """Ask ``/authorize`` for the registered callback and for unregistered ones; record what it did.

    An unregistered URI is *refused* when the answer is a 4xx and no ``Location`` points
    at it. The registered one must be accepted (2xx form, or 3xx back to the callback).
    """
    probes = [(target.redirect_uri, True), ("https://redirect-probe.invalid/callback", False),
              (f"{target.redirect_uri}-unlisted", False)]
    rows = []
    for uri, registered in probes:
        _verifier, challenge = pkce_pair()
        url = authorize_url(endpoint, target, redirect_uri=uri, state=secrets.token_urlsafe(12), challenge=challenge)
        sample = await client.get(url, app=target.app_id, route=urlsplit(endpoint).path)
        location = sample.headers.get("location", "")
        bounced = bool(location) and location.startswith(uri)
        refused = sample.status is not None and 400 <= sample.status < 500 and not bounced
        accepted = sample.status is not None and sample.status < 400 and "error=" not in location
        rows.append({"redirect_uri": uri, "registered": registered, "status": sample.status,
                     "error": sample.error, "redirected_to": strip_query(location) if location else None,
                     "refused": refused, "accepted": accepted,
                     "findings": [f.message for f in check_redirect_uri(uri, allowlist)]})
    return rows


async def _authorize_in_browser(browser: Browser, target: OidcTarget, endpoint: str, headers: Mapping[str, str],
                                allowed_hosts: Collection[str], selectors: Mapping[str, str], email: str,
                                timeout_ms: float) -> tuple[str | None, str, str]:
    """One sign-up through the identity provider's form; returns (code or None, verifier, what happened)."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    context = await browser.new_context(extra_http_headers=dict(headers))
    captured: list[str] = []
    try:
        await guard_context(context, allowed_hosts)

        async def catch(route: Route) -> None:
            # A route never sees the target of a redirect, so the identity provider's answers are
            # fetched here without following redirects: a redirect to the callback is kept and
            # replaced by a blank page, so the relying party never receives (and redeems) the code.
            response = await route.fetch(max_redirects=0)
            location = response.headers.get("location", "")
            if location.startswith(target.redirect_uri):
                captured.append(location)
                await route.fulfill(status=200, content_type="text/html", body="<p>code captured by the audit</p>")
            else:
                await route.fulfill(response=response)

        await context.route(f"{target.issuer}/**", catch)  # registered last: runs before the guard
        page = await context.new_page()
        page.set_default_timeout(timeout_ms)
        await page.goto(authorize_url(endpoint, target, redirect_uri=target.redirect_uri, state=state,
                                      challenge=challenge))
        await page.fill(selectors["email"], email)
        await page.fill(selectors["name"], "Audit Probe")
        await page.fill(selectors["password"], secrets.token_urlsafe(12))
        await page.click(selectors["signup"])
        await page.wait_for_function("() => document.body.innerText.includes('code captured by the audit')")
    except Exception as exc:  # a broken page is a finding of the probe, not a crash of the phase
        return None, verifier, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        await context.close()
    query = parse_qs(urlsplit(captured[-1]).query) if captured else {}
    if query.get("state", [None])[0] != state:
        return None, verifier, "redirect did not carry the request's state"
    code = query.get("code", [None])[0]
    return code, verifier, "code received" if code else f"redirect without a code ({query.get('error', ['?'])[0]})"


async def _redeem(client: GuardedClient, target: OidcTarget, endpoint: str, code: str, verifier: str,
                  secret: str, synthetic_identity: str | None) -> tuple[int | None, dict[str, Any]]:
    """POST the code to the token endpoint as the registered client (a write: tagged synthetic)."""
    basic = base64.b64encode(f"{quote(target.client_id, safe='')}:{quote(secret, safe='')}".encode()).decode()
    body = urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": target.redirect_uri,
                      "code_verifier": verifier})
    sample = await client.post(endpoint, content=body, headers={**FORM, "Authorization": f"Basic {basic}"},
                               app=target.app_id, route=urlsplit(endpoint).path, keep_body=True,
                               synthetic_identity=synthetic_identity)
    try:
        answer = sample.json() if sample.body else {}
    except ValueError:
        answer = {}
    return sample.status, answer if isinstance(answer, dict) else {}


async def probe_code_flow(browser: Browser, client: GuardedClient, target: OidcTarget, discovery: Mapping[str, Any],
                          jwks: Any, secret: str, *, headers: Mapping[str, str], allowed_hosts: Collection[str],
                          selectors: Mapping[str, str], email_prefix: str, timeout_s: float,
                          synthetic_identity: str | None = None) -> dict[str, Any]:
    """The two code flows described in the module docstring; a JSON-safe record of the outcome.

    ``headers`` label the browser's sign-ups as synthetic; ``synthetic_identity`` does the
    same for the token requests, which a ``prod`` client refuses to send untagged.
    """
    authorize = str(discovery.get("authorization_endpoint", ""))
    token = str(discovery.get("token_endpoint", ""))
    userinfo = str(discovery.get("userinfo_endpoint", ""))
    out: dict[str, Any] = {"pkce": None, "id_token": None, "replay": None, "userinfo": None}
    ms = timeout_s * 1000
    code, _verifier, what = await _authorize_in_browser(browser, target, authorize, headers, allowed_hosts, selectors,
                                                        f"{email_prefix}-pkce@example.test", ms)
    if code is None:
        out["pkce"] = {"ran": False, "detail": what}
    else:
        wrong, _ = pkce_pair()
        status, answer = await _redeem(client, target, token, code, wrong, secret, synthetic_identity)
        out["pkce"] = {"ran": True, "status": status, "error": answer.get("error"),
                       "refused": status is not None and 400 <= status < 500 and "id_token" not in answer}
    code, verifier, what = await _authorize_in_browser(browser, target, authorize, headers, allowed_hosts, selectors,
                                                       f"{email_prefix}-token@example.test", ms)
    if code is None:
        out["id_token"] = {"ran": False, "detail": what}
        return out
    status, answer = await _redeem(client, target, token, code, verifier, secret, synthetic_identity)
    id_token, access = answer.get("id_token"), answer.get("access_token")
    if status != 200 or not isinstance(id_token, str):
        out["id_token"] = {"ran": False, "detail": f"token endpoint answered {status} {answer.get('error', '')}"}
        return out
    claims, findings = validate_id_token(id_token, jwks, issuer=target.issuer, audience=target.client_id,
                                         algorithms=target.algorithms, leeway_s=target.leeway_s)
    out["id_token"] = {"ran": True, "claims_present": sorted(claims) if claims else [],
                       "subject": claims.get("sub") if claims else None, "findings": [f.message for f in findings]}
    status, answer = await _redeem(client, target, token, code, verifier, secret, synthetic_identity)
    out["replay"] = {"status": status, "error": answer.get("error"),
                     "refused": status is not None and 400 <= status < 500 and "id_token" not in answer}
    if isinstance(access, str) and userinfo.startswith(("http://", "https://")):
        sample = await client.get(userinfo, headers={"Authorization": f"Bearer {access}"}, app=target.app_id,
                                  route=urlsplit(userinfo).path, keep_body=True)
        try:
            sub = sample.json().get("sub") if sample.ok else None
        except (ValueError, AttributeError):
            sub = None
        out["userinfo"] = {"status": sample.status, "subject_matches": sub is not None and claims is not None
                           and sub == claims.get("sub")}
    return out
