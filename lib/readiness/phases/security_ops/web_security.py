"""Phase ``10_security_ops``: read-only web security probes of every app.

Four probes, each a function a notebook cell calls, each recording ``security.*`` checks:

- :func:`observatory_grades` — the security headers of each app's base page and smoke
  action, graded by :mod:`readiness.phasekit.observatory` (``security.headers.<APP>``);
- :func:`cors` — whether an app hands its responses to a foreign origin
  (``security.cors.<APP>``);
- :func:`admin_endpoints` — whether admin paths refuse a caller without credentials
  (``security.admin.<APP>``);
- :func:`tls` — certificate lifetime and negotiated protocol of https apps
  (``security.tls.<APP>``).

Every HTTP request is a GET or an OPTIONS through the guarded client, so the probes are
safe against production. The TLS probe is a bare handshake (no HTTP request) with the
standard library, limited to the hosts named in the params.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
from typing import Any

import pandas as pd

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import combine, value_check
from readiness.params.model import App
from readiness.phasekit.context import Phase
from readiness.phasekit.observatory import grade, grade_for_score
from readiness.probe.client import GuardedClient, Sample
from readiness.report.markdown import checks_frame

TAGS = ("security",)
HEADERS_EVIDENCE = "evidence/security_headers.json"
CORS_EVIDENCE = "evidence/security_cors.json"
ADMIN_EVIDENCE = "evidence/security_admin.json"
TLS_EVIDENCE = "evidence/security_tls.json"
#: The lowest passing header score: the bottom of grade B. A header score is a deterministic
#: function of the headers (no sampling error), so there is no band where the data cannot
#: decide: at or above B passes, anything lower fails and names the failing tests.
MIN_HEADER_SCORE = 70
_TLS_RANK = {"TLSv1.2": 2, "TLSv1.3": 3}


def _https(app: App) -> bool:
    return app.base_url.lower().startswith("https://")


def _answer(sample: Sample) -> str:
    return str(sample.status) if sample.status is not None else f"{sample.error} ({sample.error_detail})"


async def _per_app(phase: Phase, probe: Any) -> list[Any]:
    """``probe(client, app)`` for every app concurrently on one guarded client."""
    async with phase.client() as client:
        return list(await asyncio.gather(*(probe(client, app) for app in phase.params.apps)))


# -- security headers --------------------------------------------------------------------
def _graded(sample: Sample, https: bool) -> dict[str, Any]:
    cookies = sample.headers.get("set-cookie", "")
    result = grade(sample.headers, cookies.split("\n") if cookies else [], https)
    return {"url": sample.url, "status": sample.status, "score": result.score, "grade": result.grade,
            "failing": [t.test for t in result.failing], "tests": [t._asdict() for t in result.tests],
            "headers": dict(sample.headers)}


def headers_check(phase_name: str, app: App, pages: list[dict[str, Any]], unanswered: list[str]) -> Check:
    """The app's weakest graded response decides: headers must be on every response, and the
    weakest page is the one an attacker picks. An app that answered nothing FAILs: no answer
    (refused, TLS, timeout) is what a visitor gets, and it is recorded as the evidence."""
    if not pages:
        return value_check(id=f"security.headers.{app.id}", phase=phase_name, app=app.id, observed=None,
                           title=f"{app.id} security headers grade at least B", expected=MIN_HEADER_SCORE,
                           comparator=">=", unit="points", n=0, tags=TAGS, evidence=(HEADERS_EVIDENCE,),
                           severity="P1").with_status(
            Status.FAIL if unanswered else Status.INCONCLUSIVE,
            ("no answer to grade: " + "; ".join(unanswered)) if unanswered else "no response to grade")
    worst = min(pages, key=lambda p: p["score"])
    failing = sorted({t for p in pages for t in p["failing"]})
    parts = [f"grade {worst['grade']} ({worst['score']}) at {worst['url']}",
             *(f"{p['grade']} ({p['score']}) at {p['url']}" for p in pages if p is not worst),
             "failing tests: " + (", ".join(failing) if failing else "none")]
    if unanswered:
        parts.append("not graded: " + "; ".join(unanswered))
    return value_check(id=f"security.headers.{app.id}", phase=phase_name, app=app.id, observed=worst["score"],
                       title=f"{app.id} security headers grade at least {grade_for_score(MIN_HEADER_SCORE)}",
                       expected=MIN_HEADER_SCORE, comparator=">=", unit="points", n=len(pages), tags=TAGS,
                       evidence=(HEADERS_EVIDENCE,), severity="P1", detail="; ".join(parts))


def observatory_grades(phase: Phase) -> pd.DataFrame:
    """GET each app's ``/`` and smoke action path, grade the headers, record ``security.headers.<APP>``."""
    async def probe(client: GuardedClient, app: App) -> list[Sample]:
        paths = list(dict.fromkeys(["/", app.smoke_action.path]))
        return [await client.get(app.url(p), app=app.id, route=p) for p in paths]

    results = aio.run(_per_app(phase, probe))
    evidence: dict[str, Any] = {"min_score": MIN_HEADER_SCORE, "apps": {}}
    checks, rows = [], []
    for app, samples in zip(phase.params.apps, results, strict=True):
        pages = [_graded(s, _https(app)) for s in samples if s.status is not None]
        unanswered = [f"{s.url}: {_answer(s)}" for s in samples if s.status is None]
        check = headers_check(phase.name, app, pages, unanswered)
        checks.append(check)
        evidence["apps"][app.id] = {"pages": pages, "unanswered": unanswered, "status": str(check.status)}
        worst = min(pages, key=lambda p: p["score"]) if pages else None
        rows.append({"app": app.id, "score": worst["score"] if worst else None,
                     "grade": worst["grade"] if worst else None, "status": str(check.status),
                     "failing tests": ", ".join(sorted({t for p in pages for t in p["failing"]}))})
    phase.run.write_json(HEADERS_EVIDENCE, evidence)
    phase.record(checks)
    return pd.DataFrame(rows).set_index("app")


# -- CORS --------------------------------------------------------------------------------
def cors_findings(headers: dict[str, str], origin: str) -> list[str]:
    """What a response grants a foreign ``origin``: reflecting it, or ``*`` with credentials."""
    allow = headers.get("access-control-allow-origin", "").strip()
    credentials = headers.get("access-control-allow-credentials", "").strip().lower() == "true"
    with_credentials = " with Access-Control-Allow-Credentials: true" if credentials else ""
    if allow == origin:
        return [f"Access-Control-Allow-Origin reflects the probe origin {origin}{with_credentials}"]
    if allow == "*" and credentials:
        return ["Access-Control-Allow-Origin: * with Access-Control-Allow-Credentials: true"]
    return []


def cors(phase: Phase) -> pd.DataFrame:
    """Send ``security.cors_probe_origin`` on the smoke action (plain and as an OPTIONS
    preflight); FAIL ``security.cors.<APP>`` when an answer hands it the response."""
    origin = phase.params.security.cors_probe_origin

    async def probe(client: GuardedClient, app: App) -> list[tuple[str, Sample]]:
        url, path = app.url(app.smoke_action.path), app.smoke_action.path
        simple = await client.get(url, app=app.id, route=path, headers={"Origin": origin})
        preflight = await client.options(url, app=app.id, route=path, headers={
            "Origin": origin, "Access-Control-Request-Method": app.smoke_action.method,
            "Access-Control-Request-Headers": "authorization, content-type"})
        return [("GET", simple), ("OPTIONS preflight", preflight)]

    results = aio.run(_per_app(phase, probe))
    evidence: dict[str, Any] = {"origin": origin, "apps": {}}
    checks = []
    for app, samples in zip(phase.params.apps, results, strict=True):
        answered = [(kind, s) for kind, s in samples if s.status is not None]
        findings = [f"{kind} {s.url}: {f}" for kind, s in answered for f in cors_findings(s.headers, origin)]
        unanswered = [f"{kind}: {_answer(s)}" for kind, s in samples if s.status is None]
        answers = ", ".join(f"{kind} {s.status}" for kind, s in answered)
        detail = "; ".join(findings) if findings else (f"origin not granted ({answers})" if answered
                                                       else "no answer: " + "; ".join(unanswered))
        check = value_check(id=f"security.cors.{app.id}", phase=phase.name, app=app.id,
                            title=f"{app.id} does not grant its responses to a foreign origin",
                            observed=len(findings) if answered else None, expected=0, unit="findings",
                            n=len(answered), tags=TAGS, evidence=(CORS_EVIDENCE,), severity="P1", detail=detail)
        checks.append(check if answered else check.with_status(Status.FAIL))  # no answer is observed, not unknown
        evidence["apps"][app.id] = [{"kind": kind, "url": s.url, "status": s.status, "error": s.error,
                                     "cors_headers": {k: v for k, v in s.headers.items()
                                                      if k.startswith("access-control-") or k == "vary"}}
                                    for kind, s in samples]
    phase.run.write_json(CORS_EVIDENCE, evidence)
    return checks_frame(phase.record(checks))


# -- admin endpoints ---------------------------------------------------------------------
def admin_check(phase_name: str, app: App, answers: dict[str, Sample]) -> Check:
    """401/403 everywhere PASS; any other answer FAIL; a 404 means the path is not there
    (only 404s: SKIPPED); a path without an answer (refused, TLS, timeout) FAILs with that evidence."""
    findings = [f"{p} answered {s.status} without credentials" for p, s in answers.items()
                if s.status is not None and s.status not in (401, 403, 404)]
    absent = [p for p, s in answers.items() if s.status == 404]
    silent = [f"{p}: {_answer(s)}" for p, s in answers.items() if s.status is None]
    shown = ", ".join(f"{p} {s.status}" for p, s in answers.items() if s.status is not None)
    common = dict(id=f"security.admin.{app.id}", phase=phase_name, app=app.id, expected=0, unit="findings",
                  title=f"{app.id} admin paths refuse callers without credentials (401/403)", tags=TAGS,
                  evidence=(ADMIN_EVIDENCE,), severity="P1")
    if findings:
        return value_check(observed=len(findings), n=len(answers), detail="; ".join(findings), **common)
    if absent and len(absent) == len(answers):
        return value_check(observed=None, n=0, **common).with_status(
            Status.SKIPPED, f"no admin path exists on {app.id}: {', '.join(absent)} answered 404")
    if silent:
        return value_check(observed=None, n=len(answers) - len(silent), **common).with_status(
            Status.FAIL, f"answered: {shown or 'none'}; no answer: {'; '.join(silent)}")
    note = f"; not present (404): {', '.join(absent)}" if absent else ""
    return value_check(observed=0, n=len(answers), detail=f"{shown}{note}", **common)


def admin_endpoints(phase: Phase) -> pd.DataFrame:
    """GET every ``security.admin_paths`` entry on every app without credentials."""
    paths = list(phase.params.security.admin_paths)

    async def probe(client: GuardedClient, app: App) -> dict[str, Sample]:
        return {p: await client.get(app.url(p), app=app.id, route=p) for p in paths}

    results = aio.run(_per_app(phase, probe))
    checks = [admin_check(phase.name, app, answers) for app, answers in zip(phase.params.apps, results, strict=True)]
    phase.run.write_json(ADMIN_EVIDENCE, {"paths": paths, "apps": {
        app.id: {p: {"status": s.status, "error": s.error} for p, s in answers.items()}
        for app, answers in zip(phase.params.apps, results, strict=True)}})
    return checks_frame(phase.record(checks))


# -- TLS -----------------------------------------------------------------------------------
def handshake(host: str, port: int, *, timeout_s: float, cafile: str | None = None) -> dict[str, Any]:
    """One verified TLS handshake: negotiated protocol and days until the certificate expires.

    Returns ``{"error": ...}`` with ``"kind"`` ``untrusted`` (verification failed: a
    finding), ``handshake`` (no common protocol or cipher: a finding) or ``unreachable``
    (no connection: no data).
    """
    context = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls_sock:
            cert = tls_sock.getpeercert() or {}
            protocol = tls_sock.version()
    except ssl.SSLCertVerificationError as exc:
        return {"kind": "untrusted", "error": f"certificate not trusted: {exc.verify_message or exc}"}
    except ssl.SSLError as exc:
        return {"kind": "handshake", "error": f"TLS handshake failed: {exc.reason or exc}"}
    except OSError as exc:
        return {"kind": "unreachable", "error": f"no connection: {exc.strerror or exc}"}
    not_after = str(cert.get("notAfter", ""))
    expires = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), dt.UTC) if not_after else None
    days = (expires - dt.datetime.now(dt.UTC)).total_seconds() / 86400 if expires else None
    return {"protocol": protocol, "not_after": expires.isoformat() if expires else None,
            "days_left": None if days is None else round(days, 2)}


def tls_check(phase_name: str, app: App, result: dict[str, Any] | None, min_days: int) -> list[Check]:
    """Expiry and protocol parts and their all-of ``security.tls.<APP>``; http apps SKIPPED."""
    cid = f"security.tls.{app.id}"
    common = dict(phase=phase_name, app=app.id, tags=TAGS, evidence=(TLS_EVIDENCE,), severity="P1")
    title = f"{app.id} certificate valid ≥ {min_days} days and TLS ≥ 1.2"
    if result is None:
        return [value_check(id=cid, title=title, observed=None, expected=True, n=0, **common).with_status(
            Status.SKIPPED, f"not https ({app.base_url})")]
    error = result.get("error")
    if error and result["kind"] == "unreachable":  # nothing accepted the connection: observed, so FAIL
        return [value_check(id=cid, title=title, observed=None, expected=True, n=0, **common).with_status(
            Status.FAIL, error)]
    if error:
        return [value_check(id=cid, title=title, observed=False, expected=True, detail=error, **common)]
    expiry = value_check(id=f"{cid}.expiry", title=f"{app.id} certificate valid for ≥ {min_days} more days",
                         observed=result["days_left"], expected=float(min_days), comparator=">=", unit="days",
                         detail=f"notAfter {result['not_after']}", **common)
    protocol = result["protocol"]
    proto = value_check(id=f"{cid}.protocol", title=f"{app.id} negotiates TLS 1.2 or later",
                        observed=_TLS_RANK.get(protocol or "", 0), expected=2, comparator=">=", unit="rank",
                        detail=f"negotiated {protocol} (rank 2 = TLSv1.2, 3 = TLSv1.3, 0 = older)", **common)
    parts = [expiry, proto]
    return [*parts, combine(id=cid, title=title, parts=parts, **common)]


def tls(phase: Phase, *, cafile: str | None = None) -> pd.DataFrame:
    """Handshake with every https app (``cafile`` trusts a private CA besides the system
    store); record ``security.tls.<APP>``, SKIPPED for http apps."""
    p = phase.params
    results = {app.id: handshake(app.host, app.port, timeout_s=p.http.connect_timeout_s + p.http.read_timeout_s,
                                 cafile=cafile) if _https(app) else None for app in p.apps}
    checks = [c for app in p.apps for c in tls_check(phase.name, app, results[app.id], p.security.tls_min_days_left)]
    phase.run.write_json(TLS_EVIDENCE, {"min_days_left": p.security.tls_min_days_left, "apps": {
        app_id: r if r is not None else {"skipped": "not https"} for app_id, r in results.items()}})
    return checks_frame(phase.record(checks))
