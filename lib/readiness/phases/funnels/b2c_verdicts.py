"""Verdicts and reports of the B2C funnel, from the evidence files :mod:`readiness.phases.funnels.b2c` wrote.

Kept apart from the browser driving so that the rules can be read (and re-run by an
analyst against an earlier run folder) without starting Chromium. Every verdict comes
from :mod:`readiness.core.verdict`: the sign-up rate is a Wilson ``rate_check`` against
``thresholds.funnel_success_min``; configuration facts (cookie attributes, id token,
redirect allowlist) are ``value_check`` on the number of findings, whose sentences go
into the detail. No data — no journey reached the cookie, the code flow could not run,
A8 has no growth tile — is INCONCLUSIVE with the reason, never PASS. A write the
environment policy refused (``prod`` without a ``production_write`` approval) is BLOCKED
under the id it would have had, with the refusal as its detail.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from IPython.display import Markdown

from readiness.core.check import Check, Status
from readiness.core.verdict import rate_check, value_check
from readiness.phasekit.context import Phase
from readiness.report.markdown import checks_frame, checks_table, header

PREFIX = "funnels.b2c"
RESULTS = "reports/b2c_funnel_results.json"
RECOVERY = "reports/b2c_recovery.md"
SECURITY = ("security",)
#: The identity checks that need the code flow, i.e. synthetic sign-ups and token requests.
CODE_FLOW_CHECKS = tuple(f"{PREFIX}.oidc.{name}" for name in ("pkce", "id_token", "code_replay", "userinfo"))

#: Likely fixes, by check id suffix; cookie and id-token findings add their own below.
FIXES: dict[str, str] = {
    "signup_rate": "Open the screenshots of the failed steps: the step that fails names the service to fix first "
                   "(landing → marketing app, cta/signup → identity provider and the student app's callback, "
                   "checkout → checkout service, first_page → orchestration).",
    "attribution": "Carry the landing link's utm_* parameters through the sign-up start and store them with the "
                   "learner on first sign-in.",
    "growth_tile": "Check that the identity provider emits identity_ok with signup=true under the request's "
                   "trace id, and that the command center's growth_signups tile lists recent trace ids.",
    "growth_tile_arrival": "Telemetry arrives late: check the emitters' flush interval, queue depth and the "
                           "command center's tile refresh.",
    "oidc.jwks": "Publish a discovery document whose issuer is the identity app's URL and a JWKS with one public "
                 "key per kid (never private members).",
    "oidc.redirect_allowlist": "Compare redirect_uri by exact string against the client's registered list and "
                               "answer 400 without redirecting when it does not match.",
    "oidc.pkce": "Verify code_verifier against the stored S256 code_challenge at the token endpoint.",
    "oidc.id_token": "Sign id tokens only with a key published in the JWKS (publish a new key before signing with "
                     "it), with iss = the issuer URL, aud = the client id and a future exp.",
    "oidc.code_replay": "Make authorization codes single-use (mark them used in the same transaction that issues "
                        "the tokens).",
    "oidc.userinfo": "Resolve the access token to the same subject as the id token at the userinfo endpoint.",
    "cookie": "Set the session cookie with Secure; HttpOnly; SameSite=None, the expected Domain, and Max-Age "
              "equal to the server-side session TTL (SameSite=None without Secure is dropped by browsers).",
}


def _findings_check(id: str, title: str, phase: Phase, findings: Sequence[str] | None, *, evidence: str,
                    severity: str, tags: Iterable[str] = SECURITY, n: int = 1, app: str | None = None,
                    why_none: str = "") -> Check:
    """PASS with no findings, FAIL naming them, INCONCLUSIVE when there was nothing to inspect."""
    detail = "; ".join(findings) if findings else (why_none if findings is None else "no findings")
    return value_check(id=id, phase=phase.name, title=title, observed=None if findings is None else len(findings),
                       expected=0, comparator="==", unit="findings", n=n, app=app, tags=tags, evidence=(evidence,),
                       severity=severity, detail=detail)


def _redirect_findings(rows: list[dict[str, Any]]) -> list[str] | None:
    if not rows:
        return None
    out: list[str] = []
    for r in rows:
        if r["registered"]:
            if not r["accepted"]:
                out.append(f"the registered redirect URI {r['redirect_uri']} was not accepted "
                           f"(status {r['status'] or r['error']})")
            out += r["findings"]
        elif not r["refused"]:
            out.append(f"unregistered redirect URI {r['redirect_uri']} was not refused (status "
                       f"{r['status'] or r['error']}, redirected to {r['redirected_to'] or 'nowhere'})")
    return out


def identity_checks(phase: Phase, result: dict[str, Any], evidence: str) -> list[Check]:
    """``funnels.b2c.oidc.*`` from :func:`readiness.phases.funnels.b2c.probe_identity`'s result."""
    app = phase.params.funnels.identity_app
    flow = result.get("code_flow") or {}
    skipped = flow.get("skipped") or ("the discovery document or JWKS is unavailable" if not flow else "")

    def part(name: str) -> tuple[list[str] | None, str]:
        got = flow.get(name)
        if not got:
            return None, skipped or "not run"
        if got.get("ran") is False:
            return None, f"could not run: {got.get('detail')}"
        return [], ""

    checks = [_findings_check(f"{PREFIX}.oidc.jwks", "discovery document and JWKS are valid", phase,
                              result["discovery"]["findings"], evidence=evidence, severity="P1", app=app),
              _findings_check(f"{PREFIX}.oidc.redirect_allowlist", "only registered redirect URIs are accepted",
                              phase, _redirect_findings(result.get("redirects", [])), evidence=evidence,
                              severity="P0", app=app, n=len(result.get("redirects", [])),
                              why_none="no authorization endpoint to probe")]
    findings, why = part("pkce")
    if findings is not None and not flow["pkce"]["refused"]:
        findings = [f"a code redeemed with a wrong code_verifier was accepted (status {flow['pkce']['status']})"]
    checks.append(_findings_check(f"{PREFIX}.oidc.pkce", "PKCE: a wrong code_verifier is refused", phase, findings,
                                  evidence=evidence, severity="P1", app=app, why_none=why))
    findings, why = part("id_token")
    if findings is not None:
        findings = list(flow["id_token"]["findings"])
    checks.append(_findings_check(f"{PREFIX}.oidc.id_token", "id token verifies against the JWKS (alg, kid, "
                                  "signature, iss, aud, exp)", phase, findings, evidence=evidence, severity="P0",
                                  app=app, why_none=why))
    replay, userinfo = flow.get("replay"), flow.get("userinfo")
    checks.append(_findings_check(
        f"{PREFIX}.oidc.code_replay", "an authorization code works only once", phase,
        None if not replay else [] if replay["refused"] else [f"a code redeemed twice was accepted (status "
                                                               f"{replay['status']})"],
        evidence=evidence, severity="P1", app=app, why_none=why or "no code was redeemed"))
    checks.append(_findings_check(
        f"{PREFIX}.oidc.userinfo", "userinfo names the id token's subject", phase,
        None if not userinfo else [] if userinfo["subject_matches"] else [f"userinfo answered {userinfo['status']} "
                                                                          "without the id token's subject"],
        evidence=evidence, severity="P2", app=app, why_none=why or "no access token to use"))
    blocked = flow.get("blocked")
    return [c.with_status(Status.BLOCKED, blocked) if blocked and c.id in CODE_FLOW_CHECKS else c for c in checks]


def _journey_checks(phase: Phase, log: dict[str, Any], trace_log: str) -> list[Check]:
    p, journeys = phase.params, log["journeys"]
    ok = [j for j in journeys if j["ok"]]
    failed_steps = [next((s["step"] for s in j["steps"] if s["status"] != "ok"), "?") for j in journeys if not j["ok"]]
    shots = [s["screenshot"] for j in journeys for s in j["steps"] if s.get("screenshot")]
    window = f"{log['window']['start']}/{log['window']['end']}"
    checks = [rate_check(id=f"{PREFIX}.signup_rate", phase=phase.name, title="sign-ups complete landing → first page",
                         successes=len(ok), n=len(journeys), target=p.thresholds.funnel_success_min,
                         tags=("reliability",), severity="P1", window=window, evidence=(trace_log, *shots),
                         detail=("failed at: " + ", ".join(failed_steps)) if failed_steps else "")]
    for expect in p.funnels.session_cookies:
        rows = [c for j in journeys for c in j["cookies"] if c["app"] == expect.app and c["name"] == expect.name]
        seen = [c for c in rows if c["seen"]]
        findings = list(dict.fromkeys(f for c in seen for f in c["findings"])) if seen else None
        checks.append(_findings_check(
            f"{PREFIX}.cookie.{expect.app}.{expect.name}", f"{expect.app} session cookie {expect.name}: SameSite=None; "
            "Secure; HttpOnly; aligned TTL and domain", phase, findings, evidence=trace_log, severity="P1",
            app=expect.app, n=len(seen), why_none=f"no journey received a {expect.name} cookie from {expect.app}"))
    utm = dict(log.get("utm") or {})
    read = [j for j in ok if isinstance(j.get("attribution"), dict) and "recorded" in j["attribution"]]
    matched = sum(1 for j in read if all((j["attribution"]["recorded"] or {}).get(k) == v for k, v in utm.items()))
    checks.append(value_check(id=f"{PREFIX}.attribution", phase=phase.name, title="landing attribution stored "
                              "with the learner", observed=matched if read else None, expected=len(read),
                              comparator="==", unit="journeys", n=len(read), tags=("observability",),
                              severity="P2", evidence=(trace_log,), window=window,
                              detail=f"utm {utm} read back from the student app for {len(read)} of {len(ok)} "
                                     "completed journeys"))
    return checks


def _tile_checks(phase: Phase, log: dict[str, Any], watch: dict[str, Any], tile_watch: str) -> list[Check]:
    f, budget = phase.params.funnels, phase.params.thresholds.telemetry_arrival_s
    arrivals = watch.get("arrival_s") or {}
    found = [a for a in arrivals.values() if a is not None]
    if watch.get("tile_found") is not True:
        why = (f"the command center has no {f.tile_id} tile" if watch.get("tile_found") is False
               else f"the tile API did not answer: {watch.get('error')}")
        observed, worst = None, None
    else:
        why = "no sign-up completed, so there was no trace id to look for" if not arrivals else ""
        observed, worst = (len(found) if arrivals else None), (max(found) if found else None)
    common = {"phase": phase.name, "app": phase.params.telemetry_app, "tags": ("observability",),
              "evidence": (tile_watch,), "severity": "P2"}
    missing = len(arrivals) - len(found)
    if observed is not None and missing:  # never listed within the budget: slower than any bound we can state
        worst, arrival_detail = float("inf"), f"{missing} of {len(arrivals)} sign-ups never appeared within the budget"
    else:
        arrival_detail = why or f"slowest of {len(found)} sign-ups"
    detail = why or f"{len(found)}/{len(arrivals)} sign-up trace ids listed in {f.tile_id}.recent_trace_ids"
    return [value_check(id=f"{PREFIX}.growth_tile", title=f"growth tile {f.tile_id} lists every sign-up",
                        observed=observed, expected=len(arrivals), comparator="==", unit="sign-ups",
                        n=len(arrivals), detail=detail, **common),
            value_check(id=f"{PREFIX}.growth_tile_arrival", title=f"sign-ups reach the growth tile within {budget:g} s",
                        observed=worst, expected=float(budget), comparator="<=", unit="s", n=len(found),
                        detail=arrival_detail, **common)]


def frame(checks: Sequence[Check]) -> pd.DataFrame:
    return checks_frame(list(checks))


def _load(phase: Phase, trace_log: str, tile_watch: str) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """The journeys' evidence, and why it holds nothing to judge (blocked, or never written)."""
    trace_path, watch_path = phase.run.path(trace_log), phase.run.path(tile_watch)
    if not trace_path.exists() or not watch_path.exists():
        now = dt.datetime.now(dt.UTC).isoformat()
        return ({"window": {"start": now, "end": now}, "journeys": [], "utm": {}}, {},
                "no sign-up journeys in this run folder (run_signups first)")
    log, watch = json.loads(trace_path.read_text()), json.loads(watch_path.read_text())
    return log, watch, log.get("blocked")


def journey_checks(phase: Phase, trace_log: str, tile_watch: str) -> list[Check]:
    """The journey, cookie, attribution and growth-tile checks from the evidence files.

    A refused run (``blocked`` in the trace log) yields the same ids BLOCKED with the refusal;
    a run folder without the evidence yields them INCONCLUSIVE.
    """
    log, watch, why_not = _load(phase, trace_log, tile_watch)
    checks = _journey_checks(phase, log, trace_log) + _tile_checks(phase, log, watch, tile_watch)
    if why_not is None:
        return checks
    status = Status.BLOCKED if log.get("blocked") else Status.INCONCLUSIVE
    return [c.with_status(status, why_not) for c in checks]


def evaluate(phase: Phase, trace_log: str, tile_watch: str) -> pd.DataFrame:
    """Record the journey, cookie, attribution and growth-tile checks; write the results file."""
    log, watch, _why_not = _load(phase, trace_log, tile_watch)
    checks = phase.record(journey_checks(phase, trace_log, tile_watch))
    every = [c for c in phase.run.read_checks(phase.name) if c.id.startswith(PREFIX + ".")]
    journeys = log["journeys"]
    phase.run.write_json(RESULTS, {
        "window": log["window"], "blocked": log.get("blocked"), "signups_attempted": len(journeys),
        "signups_completed": sum(1 for j in journeys if j["ok"]),
        "step_ms": {step: [s["ms"] for j in journeys for s in j["steps"] if s["step"] == step]
                    for step in ("landing", "cta", "signup", "checkout", "first_page")},
        "tile": {k: watch.get(k) for k in ("tile_id", "tile_found", "polls", "arrival_s", "error")},
        "checks": [c.to_dict() for c in every]})
    return frame(checks)


def _fix(check: Check) -> str:
    if check.status is Status.BLOCKED:
        return ("Not run: the environment policy refused the synthetic writes this check needs. Add a "
                "production_write approval covering the funnel's apps to params.approvals, or audit staging.")
    suffix = check.id.removeprefix(PREFIX + ".")
    return FIXES["cookie"] if suffix.startswith("cookie.") else FIXES.get(suffix, "See the evidence files.")


def write_recovery(phase: Phase) -> Markdown:
    """``reports/b2c_recovery.md`` from the recorded B2C checks that did not pass."""
    checks = [c for c in phase.run.read_checks(phase.name) if c.id.startswith(PREFIX + ".")]
    open_ = [c for c in checks if c.status is not Status.PASS]
    p = phase.params
    parts = [header("B2C funnel recovery runbook (Phase 04)", ecosystem=p.ecosystem, environment=p.environment,
                    run_name=phase.run.root.name, profile_note=p.profile_note)]
    if not checks:
        parts.append("\nNo B2C checks were recorded in this run: run the funnel first.\n")
    elif not open_:
        parts.append(f"\nAll {len(checks)} B2C checks pass; nothing to recover.\n")
    for c in sorted(open_, key=lambda c: (c.status is not Status.FAIL, c.severity, c.id)):
        evidence = ", ".join(f"`{e}`" for e in c.evidence) or "none"
        parts.append(f"\n## {c.status} · {c.severity} · {c.title}\n\n- **Check** `{c.id}`\n- **What failed** "
                     f"{c.detail or '(no detail)'}\n- **Evidence** {evidence}\n- **Likely fix** {_fix(c)}\n")
    parts.append("\n## All B2C checks\n\n" + checks_table(checks) + "\n")
    phase.run.write_text(RECOVERY, "".join(parts))
    return Markdown(f"Runbook written: `{RECOVERY}` ({len(open_)} of {len(checks)} B2C checks need attention).")
