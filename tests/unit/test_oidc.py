"""readiness.probe.oidc: every broken id token, redirect URI and cookie yields its exact finding."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc import jwt
from joserfc.jwk import OctKey, RSAKey

from readiness.probe.oidc import (
    Finding,
    check_jwks,
    check_redirect_uri,
    check_session_cookie,
    parse_set_cookie,
    validate_id_token,
)

ISSUER = "http://127.0.0.1:28701"
CLIENT = "sandbox-student-app"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "published-1", "use": "sig", "alg": "RS256"})


@pytest.fixture(scope="module")
def other_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "published-1"})


@pytest.fixture(scope="module")
def jwks(key: RSAKey) -> dict:
    return {"keys": [key.as_dict(private=False)]}


def claims(**overrides: object) -> dict:
    base = {"iss": ISSUER, "aud": CLIENT, "sub": "usr_1", "email": "qa@example.test",
            "iat": int(NOW) - 10, "exp": int(NOW) + 290}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: RSAKey, body: dict, kid: str | None = "published-1", alg: str = "RS256") -> str:
    header = {"alg": alg, **({"kid": kid} if kid else {})}
    return jwt.encode(header, body, key, algorithms=[alg])


def codes(findings: list[Finding]) -> list[str]:
    return [f.message for f in findings]


def test_valid_token_has_no_findings(key: RSAKey, jwks: dict) -> None:
    got, findings = validate_id_token(sign(key, claims()), jwks, issuer=ISSUER, audience=CLIENT, now=NOW)
    assert findings == []
    assert got is not None and got["sub"] == "usr_1"


def test_audience_list_including_the_client_is_accepted(key: RSAKey, jwks: dict) -> None:
    token = sign(key, claims(aud=["other", CLIENT]))
    assert validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, now=NOW)[1] == []


def test_wrong_key_fails_the_signature(other_key: RSAKey, jwks: dict) -> None:
    got, findings = validate_id_token(sign(other_key, claims()), jwks, issuer=ISSUER, audience=CLIENT, now=NOW)
    assert got is None
    assert codes(findings) == ["signature does not verify with JWKS key 'published-1'"]


def test_unlisted_kid_is_refused_before_verification(other_key: RSAKey, jwks: dict) -> None:
    token = sign(other_key, claims(), kid="rogue")
    assert codes(validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, now=NOW)[1]) == [
        "kid 'rogue' is not in the JWKS (published: published-1)"]


def test_missing_kid(key: RSAKey, jwks: dict) -> None:
    token = sign(key, claims(), kid=None)
    assert codes(validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, now=NOW)[1]) == [
        "id token header has no kid"]


def test_wrong_issuer(key: RSAKey, jwks: dict) -> None:
    token = sign(key, claims(iss="https://evil.example"))
    assert codes(validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, now=NOW)[1]) == [
        f"iss 'https://evil.example' is not the expected issuer '{ISSUER}'"]


def test_wrong_audience(key: RSAKey, jwks: dict) -> None:
    token = sign(key, claims(aud="another-client"))
    assert codes(validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, now=NOW)[1]) == [
        f"aud 'another-client' does not include the client id '{CLIENT}'"]


def test_expired_beyond_leeway(key: RSAKey, jwks: dict) -> None:
    token = sign(key, claims(exp=int(NOW) - 100))
    findings = validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, leeway_s=30, now=NOW)[1]
    assert codes(findings) == ["id token expired 100 s ago (leeway 30 s)"]


def test_expired_within_leeway_passes(key: RSAKey, jwks: dict) -> None:
    token = sign(key, claims(exp=int(NOW) - 20))
    assert validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, leeway_s=30, now=NOW)[1] == []


def test_issued_in_the_future_and_missing_claims(key: RSAKey, jwks: dict) -> None:
    token = sign(key, claims(iat=int(NOW) + 500, sub=None))
    assert codes(validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, leeway_s=60, now=NOW)[1]) == [
        "required claims missing: sub", "iat is 500 s in the future (leeway 60 s)"]


def test_alg_none_is_refused(jwks: dict) -> None:
    def seg(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    token = f"{seg({'alg': 'none', 'kid': 'published-1'})}.{seg(claims())}."
    assert codes(validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, now=NOW)[1]) == [
        "alg 'none' is not in the allowed algorithms ['RS256']"]


def test_hs256_with_any_key_is_refused(jwks: dict) -> None:
    token = sign(OctKey.generate_key(256), claims(), alg="HS256")  # type: ignore[arg-type]
    assert codes(validate_id_token(token, jwks, issuer=ISSUER, audience=CLIENT, now=NOW)[1]) == [
        "alg 'HS256' is not in the allowed algorithms ['RS256']"]


def test_garbage_and_empty_jwks(key: RSAKey) -> None:
    assert codes(validate_id_token("not.a-token", {"keys": []}, issuer=ISSUER, audience=CLIENT)[1]) == [
        "id token is not a compact JWS (header.payload.signature)"]
    assert codes(validate_id_token(sign(key, claims()), {"keys": []}, issuer=ISSUER, audience=CLIENT)[1]) == [
        "JWKS has no keys"]


def test_bad_arguments_raise_clear_errors(key: RSAKey, jwks: dict) -> None:
    with pytest.raises(ValueError, match=r"^leeway_s must be a number of seconds between 0 and 600, got -1$"):
        validate_id_token(sign(key, claims()), jwks, issuer=ISSUER, audience=CLIENT, leeway_s=-1)
    with pytest.raises(ValueError, match=r"^algorithms must be a non-empty list without 'none', got \['none'\]$"):
        validate_id_token(sign(key, claims()), jwks, issuer=ISSUER, audience=CLIENT, algorithms=["none"])


def test_jwks_findings(key: RSAKey, jwks: dict) -> None:
    assert check_jwks(jwks) == []
    assert codes(check_jwks({"keys": []})) == ["JWKS has no keys"]
    leaked = {"keys": [key.as_dict(private=True)]}
    assert codes(check_jwks(leaked)) == ["JWKS key 'published-1' exposes private key material (d, p, q, dp, dq, qi)"]
    twice = {"keys": [jwks["keys"][0], jwks["keys"][0]]}
    assert "JWKS kid 'published-1' is used by more than one key" in codes(check_jwks(twice))
    no_kid = {"keys": [{k: v for k, v in jwks["keys"][0].items() if k != "kid"}]}
    assert codes(check_jwks(no_kid)) == ["JWKS has a key without a kid"]


def test_redirect_uri_findings() -> None:
    allow = ["http://127.0.0.1:28702/oauth2/callback", "https://app.example/cb"]
    assert check_redirect_uri("http://127.0.0.1:28702/oauth2/callback", allow) == []
    assert codes(check_redirect_uri("http://127.0.0.1:28702/oauth2/callback-evil", allow)) == [
        "redirect URI http://127.0.0.1:28702/oauth2/callback-evil is not in the allowlist"]
    assert codes(check_redirect_uri("http://evil.example/cb", allow)) == [
        "redirect URI http://evil.example/cb is not in the allowlist",
        "redirect URI http://evil.example/cb uses http on a non-loopback host"]
    assert codes(check_redirect_uri("https://*.example/cb#x", ["https://*.example/cb#x"])) == [
        "redirect URI https://*.example/cb#x contains a wildcard", "redirect URI https://*.example/cb#x has a fragment"]
    assert codes(check_redirect_uri("javascript:alert(1)", [])) == [
        "redirect URI javascript:alert(1) is not in the allowlist",
        "redirect URI javascript:alert(1) is not an http(s) URL"]


GOOD = ("a1_session=secret-value; Domain=127.0.0.1; Path=/; Max-Age=3600; "
        "Expires=Thu, 01 Jan 2026 01:00:00 GMT; Secure; HttpOnly; SameSite=None")


def test_parse_set_cookie_drops_the_value() -> None:
    cookie = parse_set_cookie(GOOD)
    assert cookie.name == "a1_session"
    assert "secret-value" not in cookie.describe()
    assert cookie.describe().startswith("a1_session=<redacted>; Domain=127.0.0.1")
    assert cookie.attributes["Secure"] is True and cookie.attributes["SameSite"] == "None"
    with pytest.raises(ValueError, match="^Set-Cookie line has no cookie name$"):
        parse_set_cookie("=x; Secure")


def test_good_cookie_and_case_insensitive_attributes() -> None:
    assert check_session_cookie(GOOD, ttl_s=3600, host="127.0.0.1") == []
    lower = "a2_session=v; domain=127.0.0.1; httponly; max-age=3600; path=/; samesite=none; secure"
    assert check_session_cookie(lower, ttl_s=3600, host="127.0.0.1") == []
    host_only = "s=v; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=None"
    assert check_session_cookie(host_only, ttl_s=3600, host="127.0.0.1") == []


def test_each_broken_cookie_attribute() -> None:
    def check(line: str, **kw: object) -> list[str]:
        return codes(check_session_cookie(line, **{"ttl_s": 3600, "host": "127.0.0.1", **kw}))  # type: ignore[arg-type]

    assert check(GOOD.replace("; Secure", "")) == ["cookie a1_session has no Secure attribute"]
    assert check(GOOD.replace("; HttpOnly", "")) == ["cookie a1_session has no HttpOnly attribute"]
    assert check(GOOD.replace("SameSite=None", "SameSite=Lax")) == [
        "cookie a1_session has SameSite=Lax, expected SameSite=None"]
    assert check(GOOD.replace("; SameSite=None", "")) == [
        "cookie a1_session has no SameSite attribute, expected SameSite=None"]
    assert check(GOOD.replace("Max-Age=3600", "Max-Age=86400")) == [
        "cookie a1_session has Max-Age=86400, expected 3600 (the session TTL)"]
    assert check(GOOD.replace("Domain=127.0.0.1", "Domain=.example.com")) == [
        "cookie a1_session has Domain=.example.com, expected 127.0.0.1 or no Domain (host-only)"]
    assert check(GOOD, expected_domain="auth.example.com") == [
        "cookie a1_session has Domain=127.0.0.1, expected Domain=auth.example.com"]
    assert check("s=v; Secure; HttpOnly; SameSite=None", expected_domain="example.com") == [
        "cookie s has no Domain attribute, expected Domain=example.com",
        "cookie s has neither Max-Age nor Expires: it ends with the browser session, not after the session TTL "
        "of 3600 s"]


def test_lifetime_from_expires_and_date() -> None:
    line = "s=v; Expires=Thu, 01 Jan 2026 02:00:00 GMT; Secure; HttpOnly; SameSite=None"
    date = "Thu, 01 Jan 2026 00:00:00 GMT"
    assert codes(check_session_cookie(line, ttl_s=3600, host="h", date=date)) == [
        "cookie s expires 7200 s after it was set, expected 3600 s (the session TTL)"]
    assert check_session_cookie(line, ttl_s=7200, host="h", date=date) == []
    with pytest.raises(ValueError, match=r"^ttl_s must be a positive number of seconds, got 0$"):
        check_session_cookie(line, ttl_s=0, host="h")
