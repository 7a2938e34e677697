"""OIDC and session-cookie checks as pure functions: evidence in, findings out.

The B2C funnel phase collects what an identity provider sent — the JWKS, an id token,
the redirect URI it bounced a browser to, the ``Set-Cookie`` lines of a login — and asks
this module what is wrong with it. Each function returns a list of :class:`Finding`
(empty means nothing wrong), never a verdict: turning findings into PASS/FAIL is
:mod:`readiness.core.verdict`'s job, and keeping these functions free of I/O lets the unit
tests feed them every broken case with locally generated keys.

Messages never contain a token, a code or a cookie value; they name claims, attributes
and key ids only, so a finding can go into a report as is.

What is checked, and why:

* id token (:func:`validate_id_token`, via joserfc): the ``alg`` is on the allowlist
  *before* any verification (``none`` and HS256-with-the-public-key tricks are refused
  up front); the ``kid`` names a key of the JWKS; the signature verifies with that key;
  ``iss`` and ``aud`` are the expected issuer and client; ``exp`` is not past (with a
  small leeway for clock skew) and ``iat`` is not in the future; required claims exist.
* JWKS (:func:`check_jwks`): keys present, each with a unique ``kid``, none exposing
  private members.
* redirect URI (:func:`check_redirect_uri`): exact membership in the allowlist (no
  prefix or pattern matching), no fragment, no wildcard, https unless loopback.
* session cookie (:func:`check_session_cookie`): ``Secure``, ``HttpOnly``,
  ``SameSite=None``, a ``Domain`` aligned with the expected one, and a lifetime
  (``Max-Age``, else ``Expires`` against the response ``Date``) equal to the session TTL.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import ipaddress
import json
import math
import time
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

__all__ = ["Finding", "SetCookie", "check_jwks", "check_redirect_uri", "check_session_cookie",
           "parse_set_cookie", "validate_id_token"]

PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One thing wrong: ``code`` is stable (``iss``, ``cookie.secure``…), ``message`` a sentence."""

    code: str
    message: str


def _b64json(segment: str) -> Any:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and payload of a compact JWS, without verification; None when it is not one."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        return None
    try:
        header, payload = _b64json(parts[0]), _b64json(parts[1])
    except (ValueError, UnicodeError):
        return None
    return (header, payload) if isinstance(header, dict) and isinstance(payload, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def check_jwks(jwks: Any) -> list[Finding]:
    """Findings about a JWKS document (``{"keys": [...]}``)."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list) or not keys:
        return [Finding("jwks.empty", "JWKS has no keys")]
    findings: list[Finding] = []
    kids = [k.get("kid") if isinstance(k, Mapping) else None for k in keys]
    if any(not isinstance(kid, str) or not kid for kid in kids):
        findings.append(Finding("jwks.kid", "JWKS has a key without a kid"))
    duplicates = sorted({k for k in kids if isinstance(k, str) and kids.count(k) > 1})
    if duplicates:
        findings.append(Finding("jwks.kid", f"JWKS kid {duplicates[0]!r} is used by more than one key"))
    for key, kid in zip(keys, kids, strict=True):
        exposed = [m for m in PRIVATE_JWK_MEMBERS if isinstance(key, Mapping) and m in key]
        if exposed:
            findings.append(Finding("jwks.private", f"JWKS key {kid!r} exposes private key material "
                                                    f"({', '.join(exposed)})"))
    try:
        KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        findings.append(Finding("jwks.invalid", f"JWKS is not a valid key set: {type(exc).__name__}"))
    return findings


def validate_id_token(token: str, jwks: Any, *, issuer: str, audience: str,
                      algorithms: Collection[str] = ("RS256",), leeway_s: float = 60.0,
                      required_claims: Collection[str] = ("sub", "iat"),
                      now: float | None = None) -> tuple[dict[str, Any] | None, list[Finding]]:
    """Validate an id token; returns (claims when the signature verified, findings).

    Claims are only checked once the signature holds: an unverified payload says
    nothing about the issuer.
    """
    if isinstance(leeway_s, bool) or not isinstance(leeway_s, int | float) or not 0 <= leeway_s <= 600:
        raise ValueError(f"leeway_s must be a number of seconds between 0 and 600, got {leeway_s!r}")
    allowed = list(algorithms)
    if not allowed or "none" in (a.lower() for a in allowed):
        raise ValueError(f"algorithms must be a non-empty list without 'none', got {allowed!r}")
    parsed = _unverified(token)
    if parsed is None:
        return None, [Finding("format", "id token is not a compact JWS (header.payload.signature)")]
    header, _payload = parsed
    alg = header.get("alg")
    if alg not in allowed:
        return None, [Finding("alg", f"alg {alg!r} is not in the allowed algorithms {allowed}")]
    if not isinstance(jwks, Mapping) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        return None, [Finding("jwks.empty", "JWKS has no keys")]
    published = [k for k in jwks["keys"] if isinstance(k, Mapping)]
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        return None, [Finding("kid", "id token header has no kid")]
    matching = [k for k in published if k.get("kid") == kid]
    if not matching:
        known = ", ".join(sorted(str(k.get("kid")) for k in published))
        return None, [Finding("kid", f"kid {kid!r} is not in the JWKS (published: {known})")]
    try:
        key_set = KeySet.import_key_set({"keys": [dict(matching[0])]})
        verified = jwt.decode(token, key_set, algorithms=[alg])
    except BadSignatureError:
        return None, [Finding("signature", f"signature does not verify with JWKS key {kid!r}")]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        return None, [Finding("signature", f"signature cannot be verified with JWKS key {kid!r}: "
                                           f"{type(exc).__name__}")]
    claims = dict(verified.claims)
    return claims, _claim_findings(claims, issuer, audience, leeway_s, required_claims,
                                   time.time() if now is None else now)


def _claim_findings(claims: Mapping[str, Any], issuer: str, audience: str, leeway_s: float,
                    required: Collection[str], now: float) -> list[Finding]:
    findings: list[Finding] = []
    missing = [c for c in required if c not in claims or claims[c] in (None, "")]
    if missing:
        findings.append(Finding("claims", f"required claims missing: {', '.join(missing)}"))
    if claims.get("iss") != issuer:
        findings.append(Finding("iss", f"iss {claims.get('iss')!r} is not the expected issuer {issuer!r}"))
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        findings.append(Finding("aud", f"aud {aud!r} does not include the client id {audience!r}"))
    exp = _number(claims.get("exp"))
    if exp is None:
        findings.append(Finding("exp", "exp is missing or not a number"))
    elif exp + leeway_s < now:
        findings.append(Finding("exp", f"id token expired {now - exp:.0f} s ago (leeway {leeway_s:g} s)"))
    iat = _number(claims.get("iat"))
    if iat is not None and iat - leeway_s > now:
        findings.append(Finding("iat", f"iat is {iat - now:.0f} s in the future (leeway {leeway_s:g} s)"))
    return findings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_redirect_uri(uri: str, allowlist: Collection[str]) -> list[Finding]:
    """Findings about a redirect URI an identity provider accepted (or was asked to accept)."""
    findings: list[Finding] = []
    if uri not in set(allowlist):  # exact string comparison, as OAuth 2.1 requires
        findings.append(Finding("redirect_uri.unlisted", f"redirect URI {uri} is not in the allowlist"))
    parts = urlsplit(uri)
    if "*" in uri:
        findings.append(Finding("redirect_uri.wildcard", f"redirect URI {uri} contains a wildcard"))
    if parts.fragment:
        findings.append(Finding("redirect_uri.fragment", f"redirect URI {uri} has a fragment"))
    if parts.scheme == "http" and not _loopback(parts.hostname or ""):
        findings.append(Finding("redirect_uri.scheme", f"redirect URI {uri} uses http on a non-loopback host"))
    elif parts.scheme not in ("http", "https"):
        findings.append(Finding("redirect_uri.scheme", f"redirect URI {uri} is not an http(s) URL"))
    return findings


@dataclasses.dataclass(frozen=True)
class SetCookie:
    """A ``Set-Cookie`` line without its value: the name and the attributes (lower-case keys)."""

    name: str
    attributes: Mapping[str, str | bool]

    def describe(self) -> str:
        """``name=<redacted>; Attr=value; Flag`` — safe for evidence files."""
        attrs = [k if v is True else f"{k}={v}" for k, v in self.attributes.items()]
        return "; ".join([f"{self.name}=<redacted>", *attrs])


_CANONICAL = {"secure": "Secure", "httponly": "HttpOnly", "samesite": "SameSite", "domain": "Domain",
              "path": "Path", "max-age": "Max-Age", "expires": "Expires", "partitioned": "Partitioned"}


def parse_set_cookie(line: str) -> SetCookie:
    """Parse one ``Set-Cookie`` value; the cookie value itself is dropped at once."""
    first, *rest = line.split(";")
    name = first.partition("=")[0].strip()
    if not name:
        raise ValueError("Set-Cookie line has no cookie name")
    attributes: dict[str, str | bool] = {}
    for part in rest:
        key, eq, value = part.strip().partition("=")
        if key:
            attributes[_CANONICAL.get(key.lower(), key)] = value.strip() if eq else True
    return SetCookie(name, attributes)


def _lifetime_findings(cookie: SetCookie, ttl_s: float, date: str | None, tolerance_s: float) -> list[Finding]:
    name, attrs = cookie.name, cookie.attributes
    if "Max-Age" in attrs:
        raw = str(attrs["Max-Age"])
        if not raw.lstrip("-").isdigit():
            return [Finding("cookie.max_age", f"cookie {name} has Max-Age={raw}, which is not a number of seconds")]
        if abs(int(raw) - ttl_s) > tolerance_s:
            return [Finding("cookie.max_age", f"cookie {name} has Max-Age={raw}, expected {ttl_s:g} "
                                              "(the session TTL)")]
        return []
    if "Expires" not in attrs:
        return [Finding("cookie.max_age", f"cookie {name} has neither Max-Age nor Expires: it ends with the "
                                          f"browser session, not after the session TTL of {ttl_s:g} s")]
    try:
        expires = email.utils.parsedate_to_datetime(str(attrs["Expires"])).timestamp()
        sent = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return [Finding("cookie.max_age", f"cookie {name} has an Expires date that cannot be parsed")]
    if abs(expires - sent - ttl_s) > tolerance_s:
        return [Finding("cookie.max_age", f"cookie {name} expires {expires - sent:.0f} s after it was set, "
                                          f"expected {ttl_s:g} s (the session TTL)")]
    return []


def check_session_cookie(set_cookie: str | SetCookie, *, ttl_s: float, host: str,
                         expected_domain: str | None = None, date: str | None = None,
                         tolerance_s: float = 5.0) -> list[Finding]:
    """Findings about a session cookie's attributes (docs/phases.md#04-funnels: ``SameSite=None; Secure``, aligned TTL/domain).

    ``expected_domain`` None means host-only: no ``Domain``, or ``Domain`` equal to ``host``
    (what a browser keeps for an IP address). ``date`` is the response ``Date`` header,
    used when the lifetime is given by ``Expires`` only.
    """
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
        raise ValueError(f"ttl_s must be a positive number of seconds, got {ttl_s!r}")
    cookie = parse_set_cookie(set_cookie) if isinstance(set_cookie, str) else set_cookie
    name, attrs = cookie.name, cookie.attributes
    findings: list[Finding] = []
    if attrs.get("Secure") is not True:
        findings.append(Finding("cookie.secure", f"cookie {name} has no Secure attribute"))
    if attrs.get("HttpOnly") is not True:
        findings.append(Finding("cookie.httponly", f"cookie {name} has no HttpOnly attribute"))
    samesite = attrs.get("SameSite")
    if samesite is None or samesite is True:
        findings.append(Finding("cookie.samesite", f"cookie {name} has no SameSite attribute, expected SameSite=None"))
    elif str(samesite).lower() != "none":
        findings.append(Finding("cookie.samesite", f"cookie {name} has SameSite={samesite}, expected SameSite=None"))
    domain = attrs.get("Domain")
    got = str(domain).lstrip(".").lower() if isinstance(domain, str) and domain else None
    if expected_domain is None:
        if got is not None and got != host.lower():
            findings.append(Finding("cookie.domain", f"cookie {name} has Domain={domain}, expected {host} "
                                                     "or no Domain (host-only)"))
    elif got is None:
        findings.append(Finding("cookie.domain", f"cookie {name} has no Domain attribute, "
                                                 f"expected Domain={expected_domain}"))
    elif got != expected_domain.lstrip(".").lower():
        findings.append(Finding("cookie.domain", f"cookie {name} has Domain={domain}, expected Domain={expected_domain}"))
    return findings + _lifetime_findings(cookie, float(ttl_s), date, tolerance_s)
