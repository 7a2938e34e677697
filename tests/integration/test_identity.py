"""A1's OIDC flow, A2's onboarding and AI actions, over HTTP against a real sandbox (ports 28711–28718).

Each test drives the endpoints the way a relying party or a learner's browser would and
checks the result with the library's own validators (:mod:`readiness.probe.oidc`), so the
sandbox and the audit are held to the same rules.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import stat
import time
import uuid
from collections.abc import Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from readiness.probe.oidc import check_session_cookie, validate_id_token
from sandbox import launcher

pytestmark = pytest.mark.integration

BASE_PORT = 28711
SECRET = "oidc-test-" + secrets.token_urlsafe(12)
CLIENT = "sandbox-student-app"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.SandboxState]:
    state_dir = tmp_path_factory.mktemp("identity-sandbox")
    state = launcher.up(launcher.default_apps(BASE_PORT), state_dir, timeout_s=20,
                        env={"OIDC_CLIENT_SECRET": SECRET, "A8_TELEMETRY_KEY": "tk-" + secrets.token_urlsafe(8)})
    try:
        yield state
    finally:
        launcher.down(state_dir)


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """No redirects followed and no cookie jar: every test sends exactly the cookies it means to."""
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    with httpx.Client(timeout=10, follow_redirects=False, cookies=jar) as client:
        yield client


@pytest.fixture
def admin(sandbox: launcher.SandboxState) -> Iterator[dict[str, str]]:
    headers = {"Authorization": f"Bearer {sandbox.admin_token}"}
    yield headers
    httpx.delete(f"{sandbox.apps['A1']}/admin/faults", headers=headers)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize(http: httpx.Client, sandbox: launcher.SandboxState, challenge: str | None = None,
              cookie: str | None = None, **overrides: str) -> httpx.Response:
    query = {"response_type": "code", "client_id": CLIENT, "scope": "openid email",
             "redirect_uri": f"{sandbox.apps['A2']}/oauth2/callback", "state": "st-1", "nonce": "n-1"}
    if challenge:
        query.update(code_challenge=challenge, code_challenge_method="S256")
    query.update(overrides)
    return http.get(f"{sandbox.apps['A1']}/oauth2/authorize?{urlencode(query)}",
                    headers={"Cookie": cookie} if cookie else None)


def sign_up(http: httpx.Client, sandbox: launcher.SandboxState, email: str, challenge: str | None = None,
            action: str = "signup", trace: str | None = None) -> httpx.Response:
    form = authorize(http, sandbox, challenge)
    assert form.status_code == 200, form.text
    request_id = re.search(r'name="request_id" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    return http.post(f"{sandbox.apps['A1']}/oauth2/login", headers={"X-Trace-Id": trace or uuid.uuid4().hex},
                     data={"request_id": request_id, "email": email, "name": "QA", "password": "correct-horse",
                           "action": action})


def code_of(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return parse_qs(urlsplit(response.headers["location"]).query)["code"][0]


def redeem(http: httpx.Client, sandbox: launcher.SandboxState, code: str, verifier: str | None,
           auth: tuple[str, str] | None = (CLIENT, SECRET), **form: str) -> httpx.Response:
    body = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": f"{sandbox.apps['A2']}/oauth2/callback", **form}
    if verifier:
        body["code_verifier"] = verifier
    return http.post(f"{sandbox.apps['A1']}/oauth2/token", data=body, auth=auth)


def email() -> str:
    return f"qa+{uuid.uuid4().hex[:10]}@example.test"


def test_discovery_and_persisted_jwks(http: httpx.Client, sandbox: launcher.SandboxState) -> None:
    a1 = sandbox.apps["A1"]
    doc = http.get(f"{a1}/.well-known/openid-configuration").json()
    assert doc["issuer"] == a1 and doc["token_endpoint"] == f"{a1}/oauth2/token"
    assert doc["grant_types_supported"] == ["authorization_code"]
    keys = http.get(doc["jwks_uri"]).json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256" and keys[0]["kid"]
    assert "d" not in keys[0]
    stored = Path(sandbox.state_dir) / "keys" / "a1_signing.jwk.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(("overrides", "message"), [
    ({"redirect_uri": "https://evil.example/cb"}, "redirect_uri is not registered for client sandbox-student-app"),
    ({"redirect_uri": "CALLBACK-evil"}, "redirect_uri is not registered for client sandbox-student-app"),
    ({"client_id": "nobody"}, "unknown client_id: nobody"),
    ({"redirect_uri": ""}, "redirect_uri is required"),
])
def test_allowlist_refusals_never_redirect(http: httpx.Client, sandbox: launcher.SandboxState,
                                           overrides: dict[str, str], message: str) -> None:
    callback = f"{sandbox.apps['A2']}/oauth2/callback"
    overrides = {k: v.replace("CALLBACK", callback) for k, v in overrides.items()}
    answer = authorize(http, sandbox, **overrides)
    assert answer.status_code == 400 and "location" not in answer.headers
    assert f'<p id="error">{message}</p>' in answer.text


@pytest.mark.parametrize(("overrides", "error", "description"), [
    ({"scope": "email"}, "invalid_scope", "scope must include openid"),
    ({"response_type": "token"}, "unsupported_response_type", "response_type must be code"),
    ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, "invalid_request",
     "code_challenge_method must be S256"),
])
def test_request_errors_go_back_to_the_registered_client(http: httpx.Client, sandbox: launcher.SandboxState,
                                                         overrides: dict[str, str], error: str,
                                                         description: str) -> None:
    answer = authorize(http, sandbox, **overrides)
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{sandbox.apps['A2']}/oauth2/callback"
    query = parse_qs(target.query)
    assert query["error"] == [error] and query["error_description"] == [description] and query["state"] == ["st-1"]


def test_code_flow_with_pkce_issues_a_valid_id_token(http: httpx.Client, sandbox: launcher.SandboxState) -> None:
    verifier, challenge = pkce()
    who = email()
    login = sign_up(http, sandbox, who, challenge)
    assert parse_qs(urlsplit(login.headers["location"]).query)["iss"] == [sandbox.apps["A1"]]
    code = code_of(login)
    tokens = redeem(http, sandbox, code, verifier)
    assert tokens.status_code == 200 and tokens.headers["cache-control"] == "no-store"
    body = tokens.json()
    jwks = http.get(f"{sandbox.apps['A1']}/.well-known/jwks.json").json()
    claims, findings = validate_id_token(body["id_token"], jwks, issuer=sandbox.apps["A1"], audience=CLIENT)
    assert findings == []
    assert claims is not None and claims["email"] == who and claims["nonce"] == "n-1"
    assert claims["exp"] - claims["iat"] == 300
    info = http.get(f"{sandbox.apps['A1']}/oauth2/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.json()["sub"] == claims["sub"]
    replay = redeem(http, sandbox, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert http.get(f"{sandbox.apps['A1']}/oauth2/userinfo").status_code == 401


@pytest.mark.parametrize(("verifier", "description"), [
    (None, "code_verifier is required (PKCE)"),
    ("wrong-" + "v" * 50, "code_verifier does not match the code_challenge"),
])
def test_pkce_is_enforced(http: httpx.Client, sandbox: launcher.SandboxState, verifier: str | None,
                          description: str) -> None:
    _right, challenge = pkce()
    answer = redeem(http, sandbox, code_of(sign_up(http, sandbox, email(), challenge)), verifier)
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_grant", "error_description": description}


def test_client_authentication(http: httpx.Client, sandbox: launcher.SandboxState) -> None:
    post = redeem(http, sandbox, code_of(sign_up(http, sandbox, email())), None, auth=None,
                  client_id=CLIENT, client_secret=SECRET)
    assert post.status_code == 200 and "id_token" in post.json()  # client_secret_post, no PKCE
    wrong = redeem(http, sandbox, code_of(sign_up(http, sandbox, email())), None, auth=(CLIENT, "nope"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    both = redeem(http, sandbox, "x", None, client_secret=SECRET)
    assert both.json() == {"error": "invalid_request", "error_description": "use one client authentication method, "
                                                                            "not two"}


def test_session_cookie_and_single_sign_on(http: httpx.Client, sandbox: launcher.SandboxState) -> None:
    login = sign_up(http, sandbox, email())
    line = login.headers["set-cookie"]
    assert check_session_cookie(line, ttl_s=3600, host="127.0.0.1") == []
    assert line.startswith("a1_session=") and "; Secure; HttpOnly; SameSite=None" in line
    again = authorize(http, sandbox, cookie=f"a1_session={login.cookies['a1_session']}")
    assert again.status_code == 303 and "code=" in again.headers["location"]  # no form: the session signs in


def test_login_errors(http: httpx.Client, sandbox: launcher.SandboxState) -> None:
    who = email()
    assert sign_up(http, sandbox, who).status_code == 303
    duplicate = sign_up(http, sandbox, who)
    assert duplicate.status_code == 409
    assert '<p id="error" role="alert">an account with this email already exists; sign in instead</p>' in duplicate.text
    assert sign_up(http, sandbox, who, action="login").status_code == 303
    form = authorize(http, sandbox)
    request_id = re.search(r'name="request_id" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    bad = http.post(f"{sandbox.apps['A1']}/oauth2/login", data={"request_id": request_id, "email": who,
                                                                "password": "not-the-password", "action": "login"})
    assert bad.status_code == 401 and "email or password is wrong" in bad.text
    stale = http.post(f"{sandbox.apps['A1']}/oauth2/login", data={"request_id": "gone", "email": who})
    assert stale.status_code == 400 and "unknown or expired" in stale.text


def events(http: httpx.Client, sandbox: launcher.SandboxState, trace: str, wanted: int,
           apps: tuple[str, ...] = ("A1", "A2", "A3")) -> list[dict]:
    """Business events of ``apps`` under ``trace`` once ``wanted`` of them arrived (or after 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in http.get(f"{sandbox.apps['A8']}/api/telemetry/events", params={"trace_id": trace}).json()[
            "events"] if e["event_type"] != "http_request" and e["app_id"] in apps]
        if len(found) >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_identity_ok_events(http: httpx.Client, sandbox: launcher.SandboxState) -> None:
    who, first, second = email(), uuid.uuid4().hex, uuid.uuid4().hex
    user = code_of(sign_up(http, sandbox, who, trace=first))
    assert user
    code_of(sign_up(http, sandbox, who, action="login", trace=second))
    signup = events(http, sandbox, first, 1)
    login = events(http, sandbox, second, 1)
    assert [(e["event_type"], e["signup"], e["app_id"]) for e in signup] == [("identity_ok", True, "A1")]
    assert [(e["event_type"], e["signup"]) for e in login] == [("identity_ok", False)]
    assert signup[0]["user_id"] == login[0]["user_id"] and signup[0]["user_id"].startswith("usr_")
    assert signup[0]["route"] == "/oauth2/login" and signup[0]["status"] == 303


def test_identity_knob_breaks_cookie_and_signing(http: httpx.Client, sandbox: launcher.SandboxState,
                                                 admin: dict[str, str]) -> None:
    a1 = sandbox.apps["A1"]
    assert http.put(f"{a1}/admin/faults", json={"identity": {"signing_key": "x"}}).status_code == 401
    bad = http.put(f"{a1}/admin/faults", headers=admin, json={"identity": {"signing_key": "x"}})
    assert bad.status_code == 422 and bad.json() == {"error": "identity.signing_key must be one of published, unlisted",
                                                     "field": "identity.signing_key"}
    knob = {"cookie_secure": False, "cookie_max_age_s": 86400, "signing_key": "unlisted"}
    assert http.put(f"{a1}/admin/faults", headers=admin, json={"identity": knob}).json()["identity"]["cookie_secure"] \
        is False
    login = sign_up(http, sandbox, email())
    assert [f.message for f in check_session_cookie(login.headers["set-cookie"], ttl_s=3600, host="127.0.0.1")] == [
        "cookie a1_session has no Secure attribute", "cookie a1_session has Max-Age=86400, expected 3600 "
                                                     "(the session TTL)"]
    token = redeem(http, sandbox, code_of(login), None).json()["id_token"]
    jwks = http.get(f"{a1}/.well-known/jwks.json").json()
    _claims, findings = validate_id_token(token, jwks, issuer=a1, audience=CLIENT)
    assert len(findings) == 1 and findings[0].code == "kid" and "is not in the JWKS" in findings[0].message
    http.delete(f"{a1}/admin/faults", headers=admin)
    assert check_session_cookie(sign_up(http, sandbox, email()).headers["set-cookie"], ttl_s=3600,
                                host="127.0.0.1") == []


def test_onboarding_checkout_first_page_and_ai_actions(http: httpx.Client, sandbox: launcher.SandboxState) -> None:
    a2, trace = sandbox.apps["A2"], uuid.uuid4().hex
    hdr = {"X-Trace-Id": trace, "X-Test-Run": "true", "X-Source": "qa"}
    start = http.get(f"{a2}/signup/start?utm_source=news&utm_campaign=spring&bogus=1", headers=hdr)
    assert start.status_code == 302 and start.headers["location"].startswith(f"{sandbox.apps['A1']}/oauth2/authorize?")
    form = http.get(start.headers["location"], headers=hdr)
    request_id = re.search(r'name="request_id" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    login = http.post(f"{sandbox.apps['A1']}/oauth2/login", headers=hdr, data={
        "request_id": request_id, "email": email(), "name": "Ada", "password": "correct-horse", "action": "signup"})
    callback = http.get(login.headers["location"], headers=hdr)
    assert callback.status_code == 303 and callback.headers["location"] == "/onboarding/checkout", callback.text
    assert check_session_cookie(callback.headers["set-cookie"], ttl_s=3600, host="127.0.0.1") == []
    jar = {"Cookie": f"a2_session={callback.cookies['a2_session']}"}
    page = http.get(f"{a2}/onboarding/checkout", headers={**hdr, **jar})
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert http.post(f"{a2}/onboarding/checkout", headers=jar, data={"csrf": "forged"}).status_code == 403
    paid = http.post(f"{a2}/onboarding/checkout", data={"csrf": csrf}, headers={**hdr, **jar})
    assert paid.status_code == 303 and paid.headers["location"] == "/onboarding/first-page"
    first = http.get(f"{a2}/onboarding/first-page", headers={**hdr, **jar})
    assert 'data-testid="first-page"' in first.text and "Welcome, Ada" in first.text
    me = http.get(f"{a2}/api/me", headers=jar).json()
    assert me["attribution"] == {"utm_source": "news", "utm_campaign": "spring"}
    assert me["checkout_session_id"].startswith("cs_") and me["first_page_id"].startswith("pg_")
    action = {"action": "explain", "input": "list comprehensions"}
    assert http.post(f"{a2}/api/ai/actions", headers=jar, json=action).status_code == 428
    answers = [http.post(f"{a2}/api/ai/actions", json=action, headers={**hdr, **jar, "X-Idempotency-Key": f"k{i}"})
               for i in (1, 1, 2, 3, 4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 201, 402]
    assert answers[1].headers["idempotent-replayed"] == "true" and answers[1].json() == answers[0].json()
    assert [a.json().get("credits_left") for a in answers[:4]] == [2, 2, 1, 0]
    assert answers[4].json() == {"error": "no credits left"}
    assert http.post(f"{a2}/api/ai/actions", json={**action, "input": "other"},
                     headers={**hdr, **jar, "X-Idempotency-Key": "k1"}).status_code == 422
    kinds = sorted(e["event_type"] for e in events(http, sandbox, trace, 8))
    assert kinds == ["activation_first_use", "credit_decrement", "credit_decrement", "credit_decrement", "identity_ok",
                     "page_build_requested", "page_published", "signup_attributed"]
    first_use = next(e for e in events(http, sandbox, trace, 8) if e["event_type"] == "activation_first_use")
    assert first_use["tags"]["test_run"] == "true" and first_use["seconds_since_signup"] >= 0
