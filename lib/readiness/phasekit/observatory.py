"""Security-header grading modelled on the Mozilla/MDN HTTP Observatory.

A header grade is only comparable across services (and with what an outside scanner
would say) when it follows a published rule, so this module does not invent weights: the
modifiers, the grade chart and the bonus rule are those of the HTTP Observatory.

Sources (scoring table and analyzers):

- ``mdn/mdn-http-observatory``, ``src/grader/charts.js`` (``SCORE_TABLE``,
  ``GRADE_CHART``, ``MINIMUM_SCORE_FOR_EXTRA_CREDIT = 90``) and
  ``src/analyzer/tests/{csp,cookies}.js`` (which sources count as unsafe, which cookies
  count as session cookies);
- ``mozilla/http-observatory``, ``httpobs/docs/scoring.md`` ("All websites start with a
  baseline score of 100 … Bonus points are only awarded if the site's score without them
  is 90 (A) or greater") and ``httpobs/scanner/grader/grade.py``.

Scoring: start at 100, add every negative modifier; only when that is still >= 90 are
the positive modifiers (bonuses) added; the floor is 0. The grade is looked up on the
score rounded down to a multiple of 5 (100+ A+, 90 A, 85 A-, 80 B+, 70 B, 65 B-,
60 C+, 50 C, 45 C-, 40 D+, 30 D, 25 D-, below F).

Implemented from response headers alone: Content-Security-Policy, Cookies,
Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options (or CSP
``frame-ancestors``), Referrer-Policy, Cross-Origin-Resource-Policy and redirection (an
http response must redirect to https). Not graded here: Subresource Integrity (needs the
HTML body), CORS (needs a probe origin; :mod:`readiness.phases.security_ops.web_security` probes it as its own
check) and the HSTS preload list (needs the list; a header alone never earns the
preload bonus). An https response says nothing about the http→https redirect of the
same host, so that test is recorded as not probed with modifier 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

MINIMUM_SCORE_FOR_EXTRA_CREDIT = 90
#: (lowest score, grade), best first; the score is rounded down to a multiple of 5 first.
GRADE_CHART: tuple[tuple[int, str], ...] = (
    (100, "A+"), (90, "A"), (85, "A-"), (80, "B+"), (70, "B"), (65, "B-"), (60, "C+"),
    (50, "C"), (45, "C-"), (40, "D+"), (30, "D"), (25, "D-"), (0, "F"))
GRADES: tuple[str, ...] = tuple(g for _, g in GRADE_CHART)

#: Observatory expectation → (modifier, description), as published in SCORE_TABLE.
SCORE_TABLE: Mapping[str, tuple[int, str]] = {
    "csp-implemented-with-no-unsafe-default-src-none": (10, "CSP implemented with default-src 'none' and no unsafe sources"),
    "csp-implemented-with-no-unsafe": (5, "CSP implemented without 'unsafe-inline' or 'unsafe-eval'"),
    "csp-implemented-with-unsafe-inline-in-style-src-only": (0, "CSP allows unsafe sources inside style-src only"),
    "csp-implemented-with-insecure-scheme-in-passive-content-only":
        (-10, "CSP on a secure site allows images or media over http"),
    "csp-implemented-with-unsafe-eval": (-10, "CSP allows 'unsafe-eval'"),
    "csp-implemented-with-unsafe-inline": (-20, "CSP allows 'unsafe-inline', data: or overly broad script/object "
                                                "sources, or leaves script-src/object-src unrestricted"),
    "csp-implemented-with-insecure-scheme": (-20, "CSP on a secure site allows resources over http"),
    "csp-header-invalid": (-25, "CSP header cannot be parsed"),
    "csp-not-implemented": (-25, "CSP header not implemented"),
    "csp-not-implemented-but-reporting-enabled": (-25, "only Content-Security-Policy-Report-Only is set"),
    "cookies-secure-with-httponly-sessions-and-samesite":
        (5, "all cookies Secure, session cookies HttpOnly, SameSite set"),
    "cookies-secure-with-httponly-sessions": (0, "all cookies Secure and session cookies HttpOnly, SameSite missing"),
    "cookies-not-found": (0, "no cookies set"),
    "cookies-without-secure-flag-but-protected-by-hsts": (-5, "cookies without Secure, but HSTS prevents http"),
    "cookies-session-without-secure-flag-but-protected-by-hsts":
        (-10, "session cookie without Secure, but HSTS prevents http"),
    "cookies-without-secure-flag": (-20, "cookies set without Secure or over http"),
    "cookies-samesite-flag-invalid": (-20, "SameSite set to something other than Strict or Lax (or None without "
                                           "Secure)"),
    "cookies-anticsrf-without-samesite-flag": (-20, "anti-CSRF token set without SameSite"),
    "cookies-session-without-httponly-flag": (-30, "session cookie set without HttpOnly"),
    "cookies-session-without-secure-flag": (-40, "session cookie set without Secure or over http"),
    "hsts-implemented-max-age-at-least-six-months": (0, "HSTS max-age of at least six months (15768000)"),
    "hsts-implemented-max-age-less-than-six-months": (-10, "HSTS max-age below six months (15768000)"),
    "hsts-not-implemented": (-20, "HSTS header not implemented"),
    "hsts-header-invalid": (-20, "HSTS header cannot be recognized"),
    "hsts-not-implemented-no-https": (-20, "HSTS cannot be set for a site not served over https"),
    "x-content-type-options-nosniff": (0, "X-Content-Type-Options set to nosniff"),
    "x-content-type-options-not-implemented": (-5, "X-Content-Type-Options not implemented"),
    "x-content-type-options-header-invalid": (-5, "X-Content-Type-Options cannot be recognized"),
    "x-frame-options-implemented-via-csp": (5, "framing restricted by the CSP frame-ancestors directive"),
    "x-frame-options-sameorigin-or-deny": (0, "X-Frame-Options set to SAMEORIGIN or DENY"),
    "x-frame-options-allow-from-origin": (0, "X-Frame-Options uses ALLOW-FROM"),
    "x-frame-options-not-implemented": (-20, "X-Frame-Options not implemented"),
    "x-frame-options-header-invalid": (-20, "X-Frame-Options cannot be recognized"),
    "referrer-policy-private": (5, "Referrer-Policy no-referrer, same-origin, strict-origin or "
                                   "strict-origin-when-cross-origin"),
    "referrer-policy-not-implemented": (0, "Referrer-Policy not implemented"),
    "referrer-policy-unsafe": (-5, "Referrer-Policy origin, origin-when-cross-origin, unsafe-url or "
                                   "no-referrer-when-downgrade"),
    "referrer-policy-header-invalid": (-5, "Referrer-Policy cannot be recognized"),
    "cross-origin-resource-policy-implemented-with-same-origin": (10, "CORP same-origin"),
    "cross-origin-resource-policy-implemented-with-same-site": (10, "CORP same-site"),
    "cross-origin-resource-policy-implemented-with-cross-origin": (0, "CORP cross-origin"),
    "cross-origin-resource-policy-not-implemented": (0, "CORP not implemented (defaults to cross-origin)"),
    "cross-origin-resource-policy-header-invalid": (-5, "CORP cannot be recognized"),
    "redirection-to-https": (0, "the http response redirects to https"),
    "redirection-missing": (-20, "does not redirect to an https site"),
    "redirection-not-probed": (0, "served over https; the http→https redirect was not probed"),
}

_PASSING = frozenset({
    "csp-implemented-with-no-unsafe-default-src-none", "csp-implemented-with-no-unsafe",
    "csp-implemented-with-unsafe-inline-in-style-src-only", "csp-implemented-with-insecure-scheme-in-passive-content-only",
    "cookies-secure-with-httponly-sessions-and-samesite", "cookies-secure-with-httponly-sessions", "cookies-not-found",
    "hsts-implemented-max-age-at-least-six-months", "x-content-type-options-nosniff",
    "x-frame-options-implemented-via-csp", "x-frame-options-sameorigin-or-deny", "x-frame-options-allow-from-origin",
    "referrer-policy-private", "referrer-policy-not-implemented",
    "cross-origin-resource-policy-implemented-with-same-origin", "cross-origin-resource-policy-implemented-with-same-site",
    "cross-origin-resource-policy-implemented-with-cross-origin", "cross-origin-resource-policy-not-implemented",
    "redirection-to-https", "redirection-not-probed",
})

_BROAD = frozenset({"ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*"})
_INLINE = frozenset({"'unsafe-inline'", "data:"})
_NONCE_HASH = ("'sha256-", "'sha384-", "'sha512-", "'nonce-")
_DIRECTIVE = re.compile(r"^[a-z][a-z-]*$")
_SIX_MONTHS_S = 15_768_000
_MAX_AGE = re.compile(r"^\s*max-age\s*=\s*\"?(\d+)\"?\s*$", re.IGNORECASE)
_PRIVATE_REFERRER = frozenset({"no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin"})
_UNSAFE_REFERRER = frozenset({"origin", "origin-when-cross-origin", "unsafe-url", "no-referrer-when-downgrade"})


class TestOutcome(NamedTuple):
    """One Observatory test: its name, whether it passed, its modifier, and why."""

    test: str
    passed: bool
    modifier: int
    reason: str


@dataclass(frozen=True)
class ObservatoryResult:
    """The score (>= 0, may exceed 100 with bonuses), its grade and every test behind it."""

    score: int
    grade: str
    tests: list[TestOutcome]

    @property
    def failing(self) -> list[TestOutcome]:
        return [t for t in self.tests if not t.passed]


def _outcome(test: str, expectation: str, note: str = "") -> TestOutcome:
    modifier, description = SCORE_TABLE[expectation]
    reason = f"{expectation}: {description}" + (f" ({note})" if note else "")
    return TestOutcome(test, expectation in _PASSING, modifier, reason)


def grade_for_score(score: int) -> str:
    """The Observatory letter for a score (rounded down to a multiple of 5, capped at 100)."""
    bucket = min(max(score, 0) // 5 * 5, 100)
    return next(g for low, g in GRADE_CHART if bucket >= low)


class CspError(ValueError):
    """A Content-Security-Policy value that cannot be parsed."""


def parse_csp(value: str) -> dict[str, set[str]]:
    """Directives → source sets of a (possibly comma-joined) CSP header value.

    Within one policy the first occurrence of a directive wins, as in browsers; when
    several policies set the same directive every one applies, so the effective source
    set is their intersection.
    """
    merged: dict[str, set[str]] = {}
    for policy in (p.strip() for p in value.split(",")):
        seen: dict[str, set[str]] = {}
        for part in (d.strip() for d in policy.split(";")):
            if not part:
                continue
            name, *sources = part.split()
            name = name.lower()
            if not _DIRECTIVE.match(name):
                raise CspError(f"invalid directive name {name!r}")
            seen.setdefault(name, {s if s.startswith("'nonce-") or s.startswith("'sha") else s.lower()
                                   for s in sources})
        for name, sources in seen.items():
            merged[name] = merged[name] & sources if name in merged else set(sources)
    return merged


def _csp(csp: dict[str, set[str]] | None, report_only: bool, https: bool) -> TestOutcome:
    if csp is None:
        return _outcome("content-security-policy", "csp-header-invalid")
    if not csp:
        return _outcome("content-security-policy",
                        "csp-not-implemented-but-reporting-enabled" if report_only else "csp-not-implemented")
    default = csp.get("default-src")
    script = set(csp.get("script-src", default if default is not None else {"*"}))
    obj = set(csp.get("object-src", default if default is not None else {"*"}))
    style = set(csp.get("style-src", default if default is not None else {"*"}))
    for sources in (script, style):
        if any(s.startswith(_NONCE_HASH) for s in sources):
            sources.discard("'unsafe-inline'")
    if "'strict-dynamic'" in script:
        if not any(s.startswith(_NONCE_HASH) for s in script):
            return _outcome("content-security-policy", "csp-header-invalid", "'strict-dynamic' without a nonce or hash")
        script = {s for s in script if not (s.startswith(tuple(_BROAD)) or s in ("'self'", "'unsafe-inline'"))}
    passive = {"img-src", "media-src"}
    active = [s for d, srcs in csp.items() if d not in passive and d != "script-src" for s in srcs] + list(script)
    passive_sources = [s for d in passive for s in csp.get(d, default or set())]
    insecure = ("http:", "ftp:")
    if script & (_BROAD | _INLINE) or obj & _BROAD:
        expectation = "csp-implemented-with-unsafe-inline"
    elif https and any(s.startswith(insecure) for s in active):
        expectation = "csp-implemented-with-insecure-scheme"
    elif "'unsafe-eval'" in script | style:
        expectation = "csp-implemented-with-unsafe-eval"
    elif https and any(s.startswith(insecure) for s in passive_sources):
        expectation = "csp-implemented-with-insecure-scheme-in-passive-content-only"
    elif style & (_BROAD | _INLINE):
        expectation = "csp-implemented-with-unsafe-inline-in-style-src-only"
    elif default == {"'none'"}:
        expectation = "csp-implemented-with-no-unsafe-default-src-none"
    else:
        expectation = "csp-implemented-with-no-unsafe"
    return _outcome("content-security-policy", expectation)


def _hsts(value: str | None, https: bool) -> tuple[TestOutcome, bool]:
    """The HSTS outcome and whether it protects cookies (a valid policy of >= six months)."""
    if not https:
        return _outcome("strict-transport-security", "hsts-not-implemented-no-https"), False
    if value is None:
        return _outcome("strict-transport-security", "hsts-not-implemented"), False
    ages = [m.group(1) for d in value.split(";") if (m := _MAX_AGE.match(d))]
    if len(ages) != 1:
        return _outcome("strict-transport-security", "hsts-header-invalid", "exactly one max-age is required"), False
    if int(ages[0]) < _SIX_MONTHS_S:
        return _outcome("strict-transport-security", "hsts-implemented-max-age-less-than-six-months",
                        f"max-age={ages[0]}"), False
    return _outcome("strict-transport-security", "hsts-implemented-max-age-at-least-six-months"), True


# Worst last: a cookie finding replaces the current one only when it is worse (onlyIfWorse).
_COOKIE_ORDER = ("cookies-without-secure-flag-but-protected-by-hsts", "cookies-without-secure-flag",
                 "cookies-session-without-secure-flag-but-protected-by-hsts", "cookies-samesite-flag-invalid",
                 "cookies-anticsrf-without-samesite-flag", "cookies-session-without-httponly-flag",
                 "cookies-session-without-secure-flag")


def _cookies(set_cookies: Iterable[str], https: bool, hsts: bool) -> TestOutcome:
    worst: str | None = None
    culprits: list[str] = []
    missing_samesite = False
    lines = [line for raw in set_cookies for line in raw.splitlines() if line.strip()]

    def worse(expectation: str, name: str) -> None:
        nonlocal worst
        if worst is None or _COOKIE_ORDER.index(expectation) > _COOKIE_ORDER.index(worst):
            worst = expectation
        culprits.append(f"{name}: {expectation}")

    for line in lines:
        first, *attributes = (p.strip() for p in line.split(";"))
        name = first.partition("=")[0].strip()
        attrs = {k.strip().lower(): v.strip() for k, _, v in (a.partition("=") for a in attributes)}
        secure = "secure" in attrs and https  # a cookie set over http is not secure, whatever its flags
        samesite = attrs.get("samesite")
        session, anticsrf = any(k in name.lower() for k in ("login", "sess")), "csrf" in name.lower()
        if samesite is not None and (samesite.lower() not in ("lax", "strict", "none")
                                     or (samesite.lower() == "none" and not secure)):
            worse("cookies-samesite-flag-invalid", name)
        if not secure:
            worse("cookies-without-secure-flag-but-protected-by-hsts" if hsts else "cookies-without-secure-flag", name)
        if anticsrf and samesite is None:
            worse("cookies-anticsrf-without-samesite-flag", name)
        if session and not secure:
            worse("cookies-session-without-secure-flag-but-protected-by-hsts" if hsts
                  else "cookies-session-without-secure-flag", name)
        if session and "httponly" not in attrs:
            worse("cookies-session-without-httponly-flag", name)
        missing_samesite |= samesite is None
    if not lines:
        return _outcome("cookies", "cookies-not-found")
    if worst is None:
        return _outcome("cookies", "cookies-secure-with-httponly-sessions" if missing_samesite
                        else "cookies-secure-with-httponly-sessions-and-samesite")
    return _outcome("cookies", worst, "; ".join(culprits))


def _xcto(value: str | None) -> TestOutcome:
    if value is None:
        return _outcome("x-content-type-options", "x-content-type-options-not-implemented")
    ok = value.strip().lower() == "nosniff"
    return _outcome("x-content-type-options", "x-content-type-options-nosniff" if ok
                    else "x-content-type-options-header-invalid", "" if ok else f"value {value!r}")


def _xfo(value: str | None, csp: dict[str, set[str]] | None) -> TestOutcome:
    ancestors = (csp or {}).get("frame-ancestors")
    if ancestors is not None and not ancestors & _BROAD:
        return _outcome("x-frame-options", "x-frame-options-implemented-via-csp")
    if value is None:
        return _outcome("x-frame-options", "x-frame-options-not-implemented")
    v = value.strip().lower()
    if v in ("deny", "sameorigin"):
        return _outcome("x-frame-options", "x-frame-options-sameorigin-or-deny")
    if v.startswith("allow-from "):
        return _outcome("x-frame-options", "x-frame-options-allow-from-origin")
    return _outcome("x-frame-options", "x-frame-options-header-invalid", f"value {value!r}")


def _referrer(value: str | None) -> TestOutcome:
    if value is None:
        return _outcome("referrer-policy", "referrer-policy-not-implemented")
    known = [t for t in (p.strip().lower() for p in value.split(",")) if t in _PRIVATE_REFERRER | _UNSAFE_REFERRER]
    if not known:  # browsers use the last policy they recognise; none recognised is invalid
        return _outcome("referrer-policy", "referrer-policy-header-invalid", f"value {value!r}")
    return _outcome("referrer-policy", "referrer-policy-private" if known[-1] in _PRIVATE_REFERRER
                    else "referrer-policy-unsafe", f"effective {known[-1]}")


def _corp(value: str | None) -> TestOutcome:
    if value is None:
        return _outcome("cross-origin-resource-policy", "cross-origin-resource-policy-not-implemented")
    v = value.strip().lower()
    if v in ("same-origin", "same-site", "cross-origin"):
        return _outcome("cross-origin-resource-policy", f"cross-origin-resource-policy-implemented-with-{v}")
    return _outcome("cross-origin-resource-policy", "cross-origin-resource-policy-header-invalid", f"value {value!r}")


def _redirection(location: str | None, https: bool) -> TestOutcome:
    if https:
        return _outcome("redirection", "redirection-not-probed")
    if location is not None and location.strip().lower().startswith("https://"):
        return _outcome("redirection", "redirection-to-https")
    return _outcome("redirection", "redirection-missing")


def grade(headers: Mapping[str, str], set_cookies: list[str], https: bool) -> ObservatoryResult:
    """Score one response's headers the Observatory way (see the module docstring).

    ``headers`` maps names (any case) to values; repeated headers joined with ``", "``.
    ``set_cookies`` holds the ``Set-Cookie`` lines (values may be redacted: only the
    name and attributes are read). ``https`` is whether the response came over https.
    """
    if isinstance(set_cookies, str):
        raise TypeError("set_cookies must be a list of Set-Cookie lines, not one string")
    h = {str(k).lower(): str(v) for k, v in headers.items()}
    raw_csp = h.get("content-security-policy")
    try:
        csp: dict[str, set[str]] | None = parse_csp(raw_csp) if raw_csp is not None else {}
    except CspError:
        csp = None
    hsts_outcome, hsts_protects = _hsts(h.get("strict-transport-security"), https)
    tests = [_csp(csp, "content-security-policy-report-only" in h, https),
             _cookies(set_cookies, https, hsts_protects), hsts_outcome,
             _xcto(h.get("x-content-type-options")), _xfo(h.get("x-frame-options"), csp),
             _referrer(h.get("referrer-policy")), _corp(h.get("cross-origin-resource-policy")),
             _redirection(h.get("location"), https)]
    base = 100 + sum(t.modifier for t in tests if t.modifier < 0)
    bonus = sum(t.modifier for t in tests if t.modifier > 0)
    score = max(0, base + bonus if base >= MINIMUM_SCORE_FOR_EXTRA_CREDIT else base)
    return ObservatoryResult(score=score, grade=grade_for_score(score), tests=tests)
