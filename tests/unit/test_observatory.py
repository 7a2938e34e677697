"""Observatory-style header grading: scores computed by hand from the published modifiers."""

from __future__ import annotations

import pytest

from readiness.phasekit.observatory import grade, grade_for_score, parse_csp

STRONG = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; form-action 'self'",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _by_test(result):
    return {t.test: t for t in result.tests}


def test_bare_http_response_scores_10_f() -> None:
    # CSP -25, HSTS (no https) -20, XCTO -5, XFO -20, redirection missing -20 → 100 - 90
    r = grade({}, [], https=False)
    assert (r.score, r.grade) == (10, "F")
    t = _by_test(r)
    assert t["content-security-policy"].modifier == -25 and not t["content-security-policy"].passed
    assert t["strict-transport-security"].reason.startswith("hsts-not-implemented-no-https")
    assert t["redirection"].modifier == -20
    assert t["cookies"].passed and t["referrer-policy"].passed
    assert {x.test for x in r.failing} == {"content-security-policy", "strict-transport-security",
                                          "x-content-type-options", "x-frame-options", "redirection"}


def test_bare_https_response_scores_30_d() -> None:
    # CSP -25, HSTS missing -20, XCTO -5, XFO -20; the http redirect is not probed (0)
    r = grade({}, [], https=True)
    assert (r.score, r.grade) == (30, "D")
    assert _by_test(r)["redirection"].reason.startswith("redirection-not-probed")


def test_strong_https_response_earns_every_bonus() -> None:
    # no penalty; bonuses CSP default-src none +10, XFO via frame-ancestors +5, referrer +5,
    # CORP +10, cookies Secure/HttpOnly/SameSite +5 → 135
    r = grade(STRONG, ["sessionid=<redacted>; Path=/; Secure; HttpOnly; SameSite=Strict"], https=True)
    assert (r.score, r.grade) == (135, "A+")
    assert not r.failing


def test_bonus_withheld_below_90() -> None:
    # HSTS missing -20 → 80 before bonuses; CSP +10 and referrer +5 are not added
    headers = {"content-security-policy": "default-src 'none'", "x-content-type-options": "nosniff",
               "x-frame-options": "DENY", "referrer-policy": "no-referrer"}
    r = grade(headers, [], https=True)
    assert (r.score, r.grade) == (80, "B+")


def test_bonus_added_at_exactly_90() -> None:
    # HSTS max-age below six months -10 → 90, then CSP default-src none +10 → 100
    headers = {"content-security-policy": "default-src 'none'", "x-content-type-options": "nosniff",
               "x-frame-options": "SAMEORIGIN", "strict-transport-security": "max-age=100"}
    r = grade(headers, [], https=True)
    assert (r.score, r.grade) == (100, "A+")
    assert _by_test(r)["strict-transport-security"].modifier == -10


def test_session_cookie_over_http_is_worst_cookie_finding() -> None:
    # CSP 'self' +5 (withheld), HSTS no-https -20, redirection -20, session cookie over http -40 → 20
    headers = {"content-security-policy": "default-src 'self'", "x-content-type-options": "nosniff",
               "x-frame-options": "sameorigin"}
    r = grade(headers, ["sessionid=<redacted>; Secure; HttpOnly; SameSite=Lax"], https=False)
    assert (r.score, r.grade) == (20, "F")
    assert _by_test(r)["cookies"].reason.startswith("cookies-session-without-secure-flag:")


@pytest.mark.parametrize(("cookie", "expectation", "modifier"), [
    ("sess=1; Secure; SameSite=Lax", "cookies-session-without-httponly-flag", -30),
    ("csrftoken=1; Secure", "cookies-anticsrf-without-samesite-flag", -20),
    ("pref=1; Secure; SameSite=Bogus", "cookies-samesite-flag-invalid", -20),
    ("pref=1; Secure", "cookies-secure-with-httponly-sessions", 0),
    ("pref=1", "cookies-without-secure-flag-but-protected-by-hsts", -5),
])
def test_cookie_expectations(cookie: str, expectation: str, modifier: int) -> None:
    t = _by_test(grade(STRONG, [cookie], https=True))["cookies"]
    assert t.reason.startswith(expectation) and t.modifier == modifier


@pytest.mark.parametrize(("csp", "expectation", "modifier"), [
    ("default-src 'self'; script-src 'self' 'unsafe-inline'", "csp-implemented-with-unsafe-inline", -20),
    ("default-src 'self'; script-src 'self' 'unsafe-inline' 'nonce-abc'", "csp-implemented-with-no-unsafe", 5),
    ("default-src 'self'; script-src 'self' 'unsafe-eval'", "csp-implemented-with-unsafe-eval", -10),
    ("img-src 'self'", "csp-implemented-with-unsafe-inline", -20),  # script-src/object-src unrestricted
    ("default-src 'self'; style-src 'unsafe-inline'", "csp-implemented-with-unsafe-inline-in-style-src-only", 0),
    ("default-src 'self'; img-src http://cdn.example", "csp-implemented-with-insecure-scheme-in-passive-content-only",
     -10),
    ("default-src 'self'; connect-src http://api.example", "csp-implemented-with-insecure-scheme", -20),
    ("default-src 'self'; bad_directive x", "csp-header-invalid", -25),
])
def test_csp_expectations(csp: str, expectation: str, modifier: int) -> None:
    t = _by_test(grade({"content-security-policy": csp}, [], https=True))["content-security-policy"]
    assert t.reason.startswith(expectation + ":") and t.modifier == modifier


def test_report_only_csp_is_not_a_policy() -> None:
    r = grade({"content-security-policy-report-only": "default-src 'none'"}, [], https=True)
    assert _by_test(r)["content-security-policy"].reason.startswith("csp-not-implemented-but-reporting-enabled")


def test_referrer_policy_last_known_token_wins() -> None:
    t = _by_test(grade({"referrer-policy": "unsafe-url, strict-origin-when-cross-origin"}, [], https=True))
    assert t["referrer-policy"].modifier == 5
    t = _by_test(grade({"referrer-policy": "sometimes"}, [], https=True))
    assert t["referrer-policy"].reason.startswith("referrer-policy-header-invalid") and not t["referrer-policy"].passed


def test_http_redirect_to_https_passes_redirection() -> None:
    t = _by_test(grade({"Location": "https://example.org/"}, [], https=False))["redirection"]
    assert t.passed and t.modifier == 0


def test_several_csp_policies_intersect() -> None:
    assert parse_csp("script-src 'self' https://a, script-src 'self'")["script-src"] == {"'self'"}


@pytest.mark.parametrize(("score", "letter"), [
    (135, "A+"), (100, "A+"), (99, "A"), (90, "A"), (89, "A-"), (85, "A-"), (84, "B+"), (80, "B+"), (79, "B"),
    (70, "B"), (69, "B-"), (65, "B-"), (64, "C+"), (60, "C+"), (59, "C"), (50, "C"), (49, "C-"), (45, "C-"),
    (44, "D+"), (40, "D+"), (39, "D"), (30, "D"), (29, "D-"), (25, "D-"), (24, "F"), (0, "F")])
def test_grade_chart(score: int, letter: str) -> None:
    assert grade_for_score(score) == letter


def test_cookie_string_instead_of_list_is_refused() -> None:
    with pytest.raises(TypeError, match="^set_cookies must be a list of Set-Cookie lines, not one string$"):
        grade({}, "sid=1; Secure", https=True)  # type: ignore[arg-type]
