"""Phase 0: inventory, secrets by name, tooling, and the Go/No-Go gate (docs/phases.md#00-inventory).

Each function is one notebook cell: it measures, records its checks in
``checks/00_inventory.json`` and returns a table to display. The gate reads the
recorded checks back, so the cells can be re-run one at a time in JupyterLab.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import combine, rate_check, response_check, value_check
from readiness.phasekit.context import Phase, part, production_writes_allowed
from readiness.phasekit.stripe_price import PRICE, price_step
from readiness.probe.client import Sample
from readiness.probe.telemetry_store import TelemetryUnavailable, iso
from readiness.report.markdown import checks_frame, checks_table, header, md_table

PROBES = "evidence/inventory_probes.json"
CHROMIUM_DEFAULT = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _status_check(phase: Phase, cid: str, title: str, sample: Sample, expected: int, tags: tuple[str, ...],
                  severity: str = "P1") -> Check:
    """A probe that must answer ``expected``; no answer at all (refused, TLS, timeout) is a FAIL."""
    got = sample.status
    detail = f"{sample.method} {sample.url} → {got if got is not None else sample.error}"
    return response_check(id=cid, phase=phase.name, title=title, status=got, error=sample.error,
                          error_detail=sample.error_detail, expected=expected, app=sample.app, tags=tags,
                          evidence=(PROBES,), severity=severity, detail=detail)


def probe_endpoints(phase: Phase) -> pd.DataFrame:
    """One probe of every app's base, health and ready endpoint (the system map's status)."""
    targets = [(app, kind, path) for app in phase.params.apps
               for kind, path in (("base", "/"), ("health", app.health_path), ("ready", app.ready_path))]

    async def go() -> list[Sample]:
        async with phase.client() as client:
            return list(await asyncio.gather(*(
                client.get(app.url(path), app=app.id, route=path, synthetic_identity=phase.synthetic_identity)
                for app, _kind, path in targets)))

    samples = aio.run(go())
    phase.run.write_json(PROBES, [{**s.to_record(), "kind": kind} for s, (_a, kind, _p) in
                                  zip(samples, targets, strict=True)])
    checks = []
    for s, (app, kind, _path) in zip(samples, targets, strict=True):
        tags = ("reliability", "inventory") if kind != "ready" else ("reliability", "observability", "inventory")
        checks.append(_status_check(phase, f"inventory.{app.id}.{kind}", f"{app.id} {kind} endpoint answers 200",
                                    s, 200, tags))
    phase.record(checks)
    return pd.DataFrame([{"app": s.app, "route": s.route, "status": s.status, "error": s.error,
                          "total_ms": round(s.total_ms, 2) if s.total_ms is not None else None}
                         for s in samples]).set_index(["app", "route"])


def check_secrets(phase: Phase) -> pd.DataFrame:
    """Presence of each configured secret, by name only: values are never read out."""
    rows, checks = [], []
    for name in phase.params.secrets.names:
        present = bool(os.environ.get(name))
        required = name in phase.params.secrets.required
        rows.append({"secret": name, "present": present, "required": required})
        checks.append(value_check(
            id=f"inventory.secrets.{name}", phase=phase.name, title=f"secret {name} is configured",
            observed=present, expected=True, comparator="==", tags=("security", "inventory"),
            evidence=("evidence/secrets_presence.json",),
            severity="P1" if required else "P3",
            detail=("set in the environment" if present else "not set in the environment") + " (value not read)"))
    phase.run.write_json("evidence/secrets_presence.json", {"checked": "presence by name only; no value is read",
                                                            "secrets": rows})
    phase.record(checks)
    return pd.DataFrame(rows).set_index("secret")


def _k6_binary() -> str | None:
    local = Path(sys.executable).parent / "k6"
    return str(local) if local.exists() else shutil.which("k6")


def _tool_k6() -> tuple[bool, str]:
    binary = _k6_binary()
    if binary is None:
        return False, "k6 not found next to the interpreter or on PATH"
    try:
        out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=20,
                             env={**os.environ, "K6_NO_USAGE_REPORT": "true"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{binary} did not run: {exc}"
    return out.returncode == 0, (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _tool_chromium() -> tuple[bool, str]:
    exe = os.environ.get("READINESS_CHROMIUM", CHROMIUM_DEFAULT)
    if not Path(exe).exists():
        return False, f"{exe} not found (make setup installs the Debian package chromium)"

    async def launch() -> str:
        from playwright.async_api import async_playwright

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                await page.set_content("<p id=x>ok</p>")
                text = await page.text_content("#x")
                return f"Chromium {browser.version} rendered a page ({text})"
            finally:
                await browser.close()
    try:
        return True, aio.run(launch())
    except Exception as exc:  # any launch failure means the tool is not usable
        return False, f"Chromium did not launch through Playwright: {str(exc).splitlines()[0]}"


def check_tools(phase: Phase) -> pd.DataFrame:
    """k6 and Chromium must actually run, not merely exist."""
    rows, checks = [], []
    for tool, probe in (("k6", _tool_k6), ("chromium", _tool_chromium)):
        ok, detail = probe()
        rows.append({"tool": tool, "usable": ok, "detail": detail})
        checks.append(value_check(id=f"inventory.tools.{tool}", phase=phase.name, title=f"{tool} is usable",
                                  observed=ok, expected=True, comparator="==", evidence=("evidence/tools.json",),
                                  tags=("test_quality", "inventory"), severity="P2", detail=detail))
    phase.run.write_json("evidence/tools.json", rows)
    phase.record(checks)
    return pd.DataFrame(rows).set_index("tool")


def route_slug(path: str) -> str:
    """A stable id fragment for a route path: ``/api/telemetry/events`` → ``api_telemetry_events``."""
    return "_".join(part for part in re.split(r"[^A-Za-z0-9]+", path) if part) or "root"


@part("enforcement")
def check_enforcement(phase: Phase) -> pd.DataFrame:
    """Ingest and payment routes must refuse a write without the idempotency/trace headers."""
    routes = phase.params.gate.enforcement_routes
    ids = [f"inventory.gate.enforce_428.{r.app}.{route_slug(r.path)}" for r in routes]
    refusal = production_writes_allowed(phase, "428 enforcement probes (synthetic, without contract headers)",
                                        tuple(sorted({r.app for r in routes}))) if routes else None
    if refusal:
        phase.record([Check(id=cid, phase=phase.name, status=Status.BLOCKED, app=r.app, severity="P1",
                            title=f"{r.app} {r.method} {r.path} answers 428 without contract headers",
                            tags=("gate", "security"), detail=refusal) for cid, r in zip(ids, routes, strict=True)])
        return pd.DataFrame([{"route": cid, "status": "BLOCKED", "reason": refusal} for cid in ids])

    async def go() -> list[Sample]:
        async with phase.client() as client:
            return [await client.request(r.method, phase.params.app(r.app).url(r.path), app=r.app, route=r.path,
                                         json={"probe": "header-enforcement"}, trace=False, idempotency_key=None,
                                         headers=phase.auth_headers(r.app),
                                         synthetic_identity=phase.synthetic_identity, keep_body=True)
                    for r in routes]

    samples = aio.run(go()) if routes else []
    phase.run.write_json("evidence/enforcement_probes.json", [s.to_record() for s in samples])
    checks = [value_check(id=cid, phase=phase.name,
                          title=f"{s.app} {s.method} {s.route} answers 428 without X-Idempotency-Key/X-Trace-Id",
                          observed=s.status, expected=428, comparator="==", app=s.app,
                          tags=("gate", "security", "dependency_health"), severity="P1",
                          evidence=("evidence/enforcement_probes.json",),
                          detail=f"{s.method} {s.url} without headers → {s.status or s.error}")
              for cid, s in zip(ids, samples, strict=True)]
    if not routes:
        checks.append(Check(id="inventory.gate.enforce_428", phase=phase.name, status=Status.INCONCLUSIVE,
                            title="header enforcement on ingest and payment routes", tags=("gate", "security"),
                            detail="no enforcement routes configured (params gate.enforcement_routes)"))
    phase.record(checks)
    return pd.DataFrame([{"check": cid, "status": s.status, "expected": 428}
                         for cid, s in zip(ids, samples, strict=True)]).set_index("check") if routes else \
        pd.DataFrame()


@part("telemetry_burn_in")
def telemetry_burn_in(phase: Phase) -> pd.DataFrame:
    """Post synthetic events over the burn-in window and count what the store accepted and kept."""
    p = phase.params
    n_events, window = p.gate.burn_in_events, p.windows.active.burn_in_s
    batches = max(1, min(n_events, int(window * 4)))
    per_batch = -(-n_events // batches)
    a8 = p.app(p.telemetry_app)
    run_tag = uuid.uuid4().hex[:12]
    refusal = production_writes_allowed(phase, f"{n_events} synthetic burn-in events", (a8.id,))
    if refusal:
        phase.record([Check(id="inventory.gate.telemetry_acceptance", phase=phase.name, status=Status.BLOCKED,
                            title="telemetry store accepts and keeps ≥ 99% of events over the burn-in",
                            tags=("gate", "observability"), severity="P1", detail=refusal)])
        return pd.DataFrame([{"status": "BLOCKED", "reason": refusal}])

    async def go() -> dict[str, Any]:
        async with phase.client() as client:
            start = dt.datetime.now(dt.UTC)
            posted, accepted, failures = 0, 0, []
            for b in range(batches):
                count = min(per_batch, n_events - posted)
                if count <= 0:
                    break
                now = dt.datetime.now(dt.UTC)
                events = [{"event_type": "qa_burn_in", "timestamp": iso(now), "app_id": "suite",
                           "route": "burn_in", "status": 200, "trace_id": uuid.uuid4().hex,
                           "idempotency_key": f"burnin-{run_tag}-{posted + i}", "run_tag": run_tag,
                           "tags": dict(p.synthetic.tags)} for i in range(count)]
                s = await client.post(a8.url("/api/telemetry/events"), app=a8.id, route="/api/telemetry/events",
                                      json={"events": events}, idempotency_key=True, keep_body=True,
                                      headers=phase.telemetry_auth(),
                                      synthetic_identity=phase.synthetic_identity)
                posted += count
                if s.ok:
                    try:
                        accepted += int(s.json().get("accepted", 0))
                    except (ValueError, AttributeError):
                        failures.append(f"batch {b}: unreadable response")
                else:
                    failures.append(f"batch {b}: {s.status or s.error}")
                await asyncio.sleep(window / batches)
            end = dt.datetime.now(dt.UTC)
            stored = None
            try:
                rows = await phase.telemetry(client).events(since=start - dt.timedelta(seconds=1),
                                                            until=end + dt.timedelta(seconds=1),
                                                            event_type="qa_burn_in", limit=n_events * 2)
                stored = sum(1 for r in rows if r.get("run_tag") == run_tag
                             or str(r.get("idempotency_key", "")).startswith(f"burnin-{run_tag}-"))
            except TelemetryUnavailable as exc:
                failures.append(f"read-back failed: {exc}")
            return {"posted": posted, "accepted": accepted, "stored": stored, "failures": failures,
                    "window": f"{iso(start)}/{iso(end)}"}

    res = aio.run(go())
    phase.run.write_json("evidence/telemetry_burn_in.json", res)
    title = "telemetry store accepts and keeps ≥ 99% of events over the burn-in"
    observed = f"posted {res['posted']}, accepted {res['accepted']}, read back {res['stored']}" + (
        f"; {'; '.join(res['failures'][:3])}" if res["failures"] else "")
    if res["stored"] is None and res["accepted"] == 0 and res["posted"] > 0:
        # The declared store took none of the events and could not be read: that is what it did,
        # not missing data (the failures say how: 404, refused, timeout, …).
        check = Check(id="inventory.gate.telemetry_acceptance", phase=phase.name, title=title, status=Status.FAIL,
                      observed=0.0, n=res["posted"], threshold=p.thresholds.telemetry_acceptance_min,
                      comparator=">=", tags=("gate", "observability"), severity="P1",
                      evidence=("evidence/telemetry_burn_in.json",), window=res["window"],
                      detail=f"the declared telemetry store ({a8.id}) accepted none of the events; {observed}")
    else:
        kept = res["stored"] if res["stored"] is not None else 0
        check = rate_check(id="inventory.gate.telemetry_acceptance", phase=phase.name, title=title,
                           successes=min(kept, res["accepted"]), n=res["posted"] if res["stored"] is not None else 0,
                           target=p.thresholds.telemetry_acceptance_min, tags=("gate", "observability"),
                           evidence=("evidence/telemetry_burn_in.json",), severity="P1", window=res["window"],
                           detail=observed)
    phase.record([check])
    return pd.DataFrame([{k: v for k, v in res.items() if k != "failures"}])


@part("stripe_price")
def stripe_price_step(phase: Phase) -> pd.DataFrame:
    """Resolve-or-create the micro price on Stripe (or check the configured one) and record its id."""
    checks, res = price_step(phase, "inventory.gate.stripe_price", tags=("gate", "dependency_health"))
    phase.record(checks)
    gate = checks[-1]
    return pd.DataFrame([{"price_id": res.price_id if res else None, "found_by": res.how if res else None,
                          "amount_cents": res.unit_amount if res else None, "currency": res.currency if res else None,
                          "status": str(gate.status), "detail": gate.detail, "evidence": PRICE}])


def go_no_go(phase: Phase) -> pd.DataFrame:
    """Combine the gate checks. Only a FAIL stops later phases; SKIPPED is listed, not counted."""
    recorded = {c.id: c for c in phase.run.read_checks(phase.name)}
    base = [c for cid, c in recorded.items() if cid.endswith(".base")]
    base_gate = value_check(id="inventory.gate.base_endpoints", phase=phase.name,
                            title="every base endpoint answers 200",
                            observed=sum(c.passed for c in base) if base else None, expected=len(phase.params.apps),
                            comparator="==", unit="apps", tags=("gate", "reliability"), severity="P0",
                            evidence=(PROBES,), detail=", ".join(f"{c.app}: {c.status}" for c in base))
    key_name = "STRIPE_SECRET_KEY"
    key = recorded.get(f"inventory.secrets.{key_name}")
    key_title = f"{key_name} is present"
    if (no_payments := phase.not_applicable("stripe_key")) is not None:
        key_gate = Check(id="inventory.gate.stripe_key", phase=phase.name, title=key_title, status=Status.SKIPPED,
                         tags=("gate", "security"), severity="P1", detail=no_payments)
    else:
        key_gate = value_check(id="inventory.gate.stripe_key", phase=phase.name, title=key_title,
                               observed=key.observed if key else None, expected=True, comparator="==",
                               evidence=key.evidence if key else (),
                               tags=("gate", "security"), severity="P1",
                               detail=key.detail if key else f"{key_name} is not among params secrets.names")
    parts = [base_gate, key_gate] + [c for cid, c in recorded.items()
                                     if cid.startswith("inventory.gate.") and cid not in
                                     ("inventory.gate.go", base_gate.id, key_gate.id)]
    # A read-only production audit: the parts that would write do not apply (they say BLOCKED,
    # for want of a production_write approval) and so do not count against the gate.
    read_only = phase.params.environment == "prod"
    counted = [c for c in parts if c.status is not Status.SKIPPED and not (read_only and c.status is Status.BLOCKED)]
    left_out = [f"{c.id} ({c.status})" for c in parts if c not in counted]
    not_applicable = [c.id.removeprefix(f"{phase.name}.").removesuffix(".applicable")
                      for c in recorded.values() if c.id.endswith(".applicable") and c.status is Status.SKIPPED]
    notes = ([f"not counted: {', '.join(left_out)}"] if left_out else []) + (
        [f"parts not applicable to this ecosystem: {', '.join(not_applicable)}"] if not_applicable else [])
    evidence = ("evidence/go_no_go.json", *dict.fromkeys(e for c in parts for e in c.evidence))
    go = combine(id="inventory.gate.go", phase=phase.name, title="Phase 0 Go/No-Go gate", parts=counted,
                 tags=("gate", "release_engineering"), severity="P0", evidence=evidence, detail="; ".join(notes))
    decision = {Status.PASS: "GO", Status.FAIL: "NO-GO"}.get(go.status, f"undecided ({go.status}): not GO")
    phase.run.write_json("evidence/go_no_go.json", {"decision": decision, "detail": go.detail,
                                                    "parts": [c.to_dict() for c in parts]})
    phase.record([base_gate, key_gate, go])
    return checks_frame([*parts, go])


def write_reports(phase: Phase) -> Markdown:
    """system_map.json and ecosystem_inventory.md from the recorded probes and checks."""
    probes = json.loads(phase.run.path(PROBES).read_text()) if phase.run.path(PROBES).exists() else []
    by_app: dict[str, dict[str, Any]] = {}
    for rec in probes:
        by_app.setdefault(rec["app"], {})[rec["kind"]] = rec
    apps = []
    for app in phase.params.apps:
        seen = by_app.get(app.id, {})
        apps.append({
            "id": app.id, "name": app.name, "role": app.role, "owner": app.owner, "base_url": app.base_url,
            "routes": {"health": app.health_path, "ready": app.ready_path,
                       "smoke_action": app.smoke_action.model_dump(),
                       "critical": [r.model_dump() for r in app.critical_routes],
                       "mutating": [r.model_dump() for r in app.mutating_routes]},
            "slo": app.slo.model_dump(),
            "status": {k: seen.get(k, {}).get("status") for k in ("base", "health", "ready")},
            "latency_ms": {k: seen.get(k, {}).get("total_ms") for k in ("base", "health", "ready")},
        })
    system_map = {"generated_at": iso(dt.datetime.now(dt.UTC)), "ecosystem": phase.params.ecosystem,
                  "environment": phase.params.environment, "telemetry_app": phase.params.telemetry_app, "apps": apps}
    phase.run.write_json("reports/system_map.json", system_map)
    checks = phase.run.read_checks(phase.name)
    table = md_table(["app", "role", "owner", "base URL", "base", "health", "ready", "base latency"],
                     [(a["id"], a["role"], a["owner"], a["base_url"], a["status"]["base"], a["status"]["health"],
                       a["status"]["ready"], f"{a['latency_ms']['base']:.1f} ms" if a["latency_ms"]["base"] else "—")
                      for a in apps])
    go = next((c for c in checks if c.id == "inventory.gate.go"), None)
    text = (header("Ecosystem inventory (Phase 0)", ecosystem=phase.params.ecosystem,
                   environment=phase.params.environment, run_name=phase.run.root.name,
                   profile_note=phase.params.profile_note)
            + f"\n## Go/No-Go: **{go.status if go else 'not evaluated'}**\n\n{go.detail if go else ''}\n\n"
            + "## Services\n\n" + table + "\n\n"
            + "Secrets are checked by name only; no value is read, printed or stored.\n\n"
            + "## Checks\n\n" + checks_table(checks) + "\n")
    phase.run.write_text("reports/ecosystem_inventory.md", text)
    return Markdown("Written: `reports/system_map.json`, `reports/ecosystem_inventory.md`.")
