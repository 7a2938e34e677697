"""Phase 01: dual-source smoke (docs/phases.md#01-smoke, docs/phases.md#verdicts).

Method A probes every app directly — health, readiness and one basic action in turn —
on a fixed schedule spread over the stable window (open model: a probe starts on time
whatever the previous one is doing, so a slow answer cannot hide the next ones).
Method B asks the telemetry store what it recorded for the same requests, matched by the
``X-Trace-Id`` each probe carried. An app is live only when both sources agree and every
criterion holds with statistical confidence.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
from typing import Any

import numpy as np
import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.sizing import SampleSize, sample_size
from readiness.core.verdict import combine, error_rate_check, latency_check, rate_check
from readiness.params.model import App, Params
from readiness.phasekit.context import Phase
from readiness.probe.client import GuardedClient, Sample
from readiness.probe.telemetry_store import TelemetryAbsent, TelemetryUnavailable, iso, parse_ts
from readiness.report.markdown import checks_frame, checks_table, header, md_table
from readiness.stats.quantiles import quantile_interval

SAMPLES = "evidence/smoke_samples.parquet"
METHOD_B = "evidence/smoke_method_b.json"
KINDS = ("health", "ready", "action")


def _targets(app: App) -> list[tuple[str, str, str]]:
    return [("health", "GET", app.health_path), ("ready", "GET", app.ready_path),
            ("action", app.smoke_action.method, app.smoke_action.path)]


async def _probe_app(phase: Phase, app: App, n: int, n_burn: int, window_s: float,
                     t0: float) -> list[tuple[str, float, Sample]]:
    """One app's probes on its own client, so a slow app cannot starve the others' connections."""
    async with phase.client() as client:
        return await _schedule(client, app, n, n_burn, window_s, t0, phase.synthetic_identity)


async def _schedule(client: GuardedClient, app: App, n: int, n_burn: int, window_s: float, t0: float,
                    identity: str) -> list[tuple[str, float, Sample]]:
    """Probe ``n_burn`` burn-in probes, then ``n`` in the window, at one steady rate.

    Offsets are relative to the start of the stable window (burn-in ones are negative).
    """
    loop = asyncio.get_running_loop()
    interval = window_s / n
    targets = _targets(app)
    tasks: list[tuple[str, float, asyncio.Task[Sample]]] = []
    for i in range(-n_burn, n):
        intended = t0 + (i + n_burn) * interval
        delay = intended - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        kind, method, path = targets[i % len(targets)]
        task = asyncio.create_task(client.request(method, app.url(path), app=app.id, route=path,
                                                  synthetic_identity=identity))
        tasks.append((kind, round(i * interval, 6), task))
    return [(kind, offset, await task) for kind, offset, task in tasks]


def smoke_size(p: Params) -> SampleSize:
    """Probes per app: what the strictest app's error-rate check needs at the design point,
    capped by ``smoke.samples_per_app`` (the profile's budget)."""
    sizes = [sample_size(p.design, p.smoke.samples_per_app, "error_rate", app.slo.error_rate_max,
                         alpha=1.0 - p.thresholds.confidence) for app in p.apps]
    return max(sizes, key=lambda s: (s.n, s.planned or 0))


def probe_window(phase: Phase) -> pd.DataFrame:
    """Method A: a burn-in, then n probes per app over the stable window (:func:`smoke_size`).

    The burn-in runs at the same rate for ``windows.burn_in_s`` first. Its probes are kept
    as evidence (``window = burn_in``) but never judged: the first seconds measure the
    prober's and the services' cold start (new connections, first requests), not their
    steady state.
    """
    p = phase.params
    size = smoke_size(p)
    n, window_s = size.n, p.windows.active.stable_window_s
    n_burn = round(p.windows.active.burn_in_s * n / window_s)

    async def go() -> tuple[str, str, list[dict[str, Any]]]:
        t0 = asyncio.get_running_loop().time() + 0.05
        stable_start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.05 + n_burn * window_s / n)
        per_app = await asyncio.gather(*(_probe_app(phase, app, n, n_burn, window_s, t0) for app in p.apps))
        end = dt.datetime.now(dt.UTC)
        rows = [{**s.to_record(), "kind": kind, "intended_offset_s": offset,
                 "window": "burn_in" if offset < 0 else "stable"}
                for results in per_app for kind, offset, s in results]
        return iso(stable_start), iso(end), rows

    start, end, rows = aio.run(go())
    df = pd.DataFrame(rows)
    phase.run.write_frame(SAMPLES, df)
    phase.run.write_json("evidence/smoke_window.json", {"start": start, "end": end, "window_s": window_s,
                                                        "samples_per_app": n, "burn_in_samples_per_app": n_burn,
                                                        "planned_samples_per_app": size.planned,
                                                        "sample_size": size.describe()})
    return _summary(df[df.window == "stable"])


def _summary(df: pd.DataFrame) -> pd.DataFrame:
    out = df.groupby(["app", "kind"]).agg(n=("ok", "size"), ok=("ok", "sum"),
                                          p50_ms=("total_ms", "median"),
                                          max_ms=("total_ms", "max")).reset_index()
    return out.round({"p50_ms": 2, "max_ms": 2}).set_index(["app", "kind"])


def load_samples(phase: Phase, *, burn_in: bool = False) -> pd.DataFrame:
    """The smoke probes of this run; the burn-in probes only when asked for."""
    df = pd.read_parquet(phase.run.path(SAMPLES))
    return df if burn_in else df[df.window == "stable"].reset_index(drop=True)


def corroborate(phase: Phase) -> pd.DataFrame:
    """Method B: find each probe's trace id in the telemetry store (bounded wait for arrival)."""
    p = phase.params
    df = load_samples(phase)
    not_applicable = phase.not_applicable("telemetry_corroboration")
    if not_applicable:  # method B does not exist here: say so once, evaluate() judges method A alone
        phase.skip_part("telemetry_corroboration", not_applicable)
        phase.run.write_json(METHOD_B, {"waited_s": 0.0, "deadline_s": 0.0, "not_applicable": not_applicable,
                                        "apps": {}})
        return pd.DataFrame([{"app": a.id, "method_b": "not applicable"} for a in p.apps]).set_index("app")
    win = json.loads(phase.run.path("evidence/smoke_window.json").read_text())
    since = parse_ts(win["start"]) - dt.timedelta(seconds=1)
    deadline_s = p.thresholds.telemetry_arrival_s

    async def go() -> dict[str, Any]:
        result: dict[str, Any] = {}
        async with phase.client() as client:
            source = phase.telemetry(client)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + deadline_s
            pending = {a.id for a in p.apps}
            while pending:
                until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
                for app_id in sorted(pending):
                    want = df[df.app == app_id]
                    try:
                        events = await source.events(since=since, until=until, app_id=app_id,
                                                     limit=max(10_000, 4 * len(want)))
                    except TelemetryAbsent as exc:  # no source: nothing will arrive, waiting is pointless
                        for gone in pending:
                            result[gone] = {"error": str(exc), "events": []}
                        pending = set()
                        break
                    except TelemetryUnavailable as exc:
                        result[app_id] = {"error": str(exc), "events": []}
                        continue
                    seen = {e.get("trace_id"): e for e in events}
                    result[app_id] = {"error": None, "events": [seen[t] for t in want.trace_id if t in seen]}
                    if len(result[app_id]["events"]) >= len(want):
                        pending.discard(app_id)
                if not pending or loop.time() >= give_up:
                    break
                await asyncio.sleep(0.5)
            waited = deadline_s - max(0.0, give_up - loop.time())
        return {"apps": result, "waited_s": round(waited, 2), "deadline_s": deadline_s}

    res = aio.run(go())
    rows, evidence = [], {"waited_s": res["waited_s"], "deadline_s": deadline_s, "apps": {}}
    for app in p.apps:
        want = df[df.app == app.id]
        got = res["apps"].get(app.id, {"error": "not queried", "events": []})
        by_trace = {e["trace_id"]: e for e in got["events"]}
        matched = sum(1 for t, s in zip(want.trace_id, want.status, strict=True) if t in by_trace
                      and by_trace[t].get("status") == (None if pd.isna(s) else int(s)))
        lat = [float(e["latency_ms"]) for e in got["events"] if isinstance(e.get("latency_ms"), (int, float))]
        info = {"probes": int(len(want)), "found": len(by_trace), "matched_status": matched, "error": got["error"],
                "server_p95_ms": float(np.percentile(lat, 95)) if lat else None,
                "server_errors": sum(1 for e in got["events"] if (e.get("status") or 0) >= 500)}
        evidence["apps"][app.id] = info
        rows.append({"app": app.id, **info})
    phase.run.write_json(METHOD_B, evidence)
    return pd.DataFrame(rows).set_index("app")


def _latencies(part: pd.DataFrame) -> np.ndarray:
    """Latency of every probe; one that got no answer counts as +inf (a timeout is slow, not absent)."""
    return np.where(part.status.notna(), part.total_ms.astype(float), np.inf)


def _stable(part: pd.DataFrame, app: App, phase: Phase,
            common: dict[str, Any]) -> tuple[Check, list[Check], list[list[Check]]]:
    """The window cut in slices; each slice must PASS on its own (P95 bound and success rate),
    and no slice may FAIL its error rate. Verdicts come from :mod:`readiness.core.verdict`.
    Returns the whole, the slices and each slice's parts (kept in the evidence, so a slice
    that did not pass says why)."""
    p = phase.params
    k, window_s = p.smoke.stable_slices, p.windows.active.stable_window_s
    edges = np.linspace(0, window_s, k + 1)
    slices: list[Check] = []
    slice_parts: list[list[Check]] = []
    for i in range(k):
        last = i == k - 1
        sub = part[(part.intended_offset_s >= edges[i]) & ((part.intended_offset_s < edges[i + 1]) | last)]
        sid = f"smoke.{app.id}.stable.s{i + 1}"
        lat = latency_check(id=f"{sid}.p95", phase=phase.name, title="slice P95", samples_ms=_latencies(sub),
                            threshold_ms=app.slo.p95_ms, confidence=p.thresholds.confidence)
        ok = rate_check(id=f"{sid}.success", phase=phase.name, title="slice success", successes=int(sub.ok.sum()),
                        n=len(sub), target=p.thresholds.success_rate_min)
        err = error_rate_check(id=f"{sid}.errors", phase=phase.name, title="slice errors",
                               errors=int(sub.is_error.sum()), n=len(sub), max_rate=app.slo.error_rate_max)
        parts = [lat, ok] + ([err] if err.status is Status.FAIL else [])
        slices.append(combine(id=sid, phase=phase.name, title=f"slice {i + 1}/{k}", parts=parts, app=app.id))
        slice_parts.append([lat, ok, err])
    stable = combine(id=f"smoke.{app.id}.stable", phase=phase.name, parts=slices, severity="P2",
                     title=f"{app.id} holds in each of {k} slices of the window", tags=("reliability",),
                     **{key: v for key, v in common.items() if key != "phase"})
    return stable, slices, slice_parts


def _status_histogram(part: pd.DataFrame) -> str:
    counts = collections.Counter(str(int(s)) if not pd.isna(s) else str(e).split(":")[0]
                                 for s, e in zip(part.status, part.error, strict=True))
    return ", ".join(f"{k} ×{v}" for k, v in counts.most_common())


def evaluate(phase: Phase) -> pd.DataFrame:
    """Every per-app verdict, recorded, plus ``evidence/{app}_health.json``."""
    p = phase.params
    df = load_samples(phase)
    df["is_error"] = df.status.isna() | (df.status.fillna(0) >= 500)
    win = json.loads(phase.run.path("evidence/smoke_window.json").read_text())
    window = f"{win['start']}/{win['end']}"
    method_b_file = json.loads(phase.run.path(METHOD_B).read_text())
    method_b, no_method_b = method_b_file["apps"], method_b_file.get("not_applicable")
    t = p.thresholds
    all_checks: list[Check] = []
    for app in p.apps:
        part = df[df.app == app.id]
        ev = f"evidence/{app.id}_health.json"
        common = dict(phase=phase.name, app=app.id, window=window, evidence=(ev, SAMPLES))
        checks: list[Check] = []
        for kind, _method, path in _targets(app):
            sub = part[part.kind == kind]
            checks.append(rate_check(id=f"smoke.{app.id}.{kind}", title=f"{app.id} {kind} probe ({path}) succeeds",
                                     successes=int(sub.ok.sum()), n=len(sub), target=t.success_rate_min,
                                     tags=("reliability",), severity="P1",
                                     detail=f"GET {path}: {_status_histogram(sub)}", **common))
        latencies = _latencies(part)
        checks.append(latency_check(id=f"smoke.{app.id}.p95", title=f"{app.id} P95 ≤ {app.slo.p95_ms:g} ms",
                                    samples_ms=latencies, threshold_ms=app.slo.p95_ms, q=0.95,
                                    confidence=t.confidence, tags=("performance", "reliability"), **common))
        checks.append(error_rate_check(id=f"smoke.{app.id}.error_rate",
                                       title=f"{app.id} error rate < {app.slo.error_rate_max:.0%}",
                                       errors=int(part.is_error.sum()), n=len(part), max_rate=app.slo.error_rate_max,
                                       tags=("reliability",), severity="P1", **common))
        checks.append(rate_check(id=f"smoke.{app.id}.success", title=f"{app.id} probes succeed (Wilson ≥ target)",
                                 successes=int(part.ok.sum()), n=len(part), target=t.success_rate_min,
                                 tags=("reliability",), severity="P1", **common))
        stable, slices, slice_parts = _stable(part, app, phase, common)
        checks.append(stable)
        b = method_b.get(app.id, {})
        if no_method_b:
            agreement = Check(id=f"smoke.{app.id}.agreement", phase=phase.name, app=app.id, window=window,
                              title=f"{app.id} telemetry store corroborates the direct probes", status=Status.SKIPPED,
                              tags=("observability",), severity="P1", evidence=(METHOD_B,), detail=no_method_b)
            all_checks.append(agreement)  # recorded, but no part of a liveness that has one source only
        else:
            checks.append(rate_check(id=f"smoke.{app.id}.agreement",
                                 title=f"{app.id} telemetry store corroborates the direct probes",
                                 successes=int(b.get("matched_status", 0)), n=int(b.get("probes", 0))
                                 if b.get("error") is None else 0, target=t.agreement_min,
                                 tags=("observability",), severity="P1",
                                 detail=(f"found {b.get('found', 0)}/{b.get('probes', 0)} trace ids, "
                                         f"{b.get('matched_status', 0)} with the same status"
                                         + (f"; store error: {b['error']}" if b.get("error") else "")),
                                 **{**common, "evidence": (ev, METHOD_B)}))
        liveness = combine(id=f"smoke.{app.id}.liveness", phase=phase.name,
                           title=(f"{app.id} live by direct probes over the stable window (no telemetry store "
                                  "declared, so no second source)" if no_method_b else
                                  f"{app.id} live by both sources over the stable window"), parts=checks,
                           app=app.id, tags=("reliability",), severity="P1", window=window)
        checks.append(liveness)
        lat = quantile_interval(latencies, 0.95, t.confidence)
        phase.run.write_json(ev, {
            "app": app.id, "window": window, "profile": phase.params.profile_note,
            "method_a": {"n": len(part), "by_kind": {k: _status_histogram(part[part.kind == k]) for k in KINDS},
                         "p95": lat.describe("ms"), "unanswered_counted_as_infinite": int(part.status.isna().sum())},
            "method_b": b,
            "stable_slices": [{**c.to_dict(), "parts": [x.to_dict() for x in xs]}
                              for c, xs in zip(slices, slice_parts, strict=True)],
            "checks": [c.to_dict() for c in checks]})
        all_checks.extend(checks)
    phase.record(all_checks)
    return checks_frame([c for c in all_checks if c.id.endswith((".liveness", ".p95", ".ready"))])


def latency_frame(phase: Phase) -> pd.DataFrame:
    """P95 per app with its interval, from the recorded checks (input of the latency chart)."""
    rows = [{"label": c.app, "p95_ms": c.observed, "ci_low_ms": c.ci_low, "ci_high_ms": c.ci_high,
             "threshold_ms": c.threshold, "n": c.n, "status": str(c.status)}
            for c in phase.run.read_checks(phase.name) if c.id.endswith(".p95")]
    columns = ["label", "p95_ms", "ci_low_ms", "ci_high_ms", "threshold_ms", "n", "status"]
    return pd.DataFrame(rows, columns=columns).astype({"ci_low_ms": float, "ci_high_ms": float})


def write_report(phase: Phase) -> Markdown:
    """``reports/ecosystem_double_confirm.md``: per-app verdicts of both methods."""
    checks = phase.run.read_checks(phase.name)
    method_b = json.loads(phase.run.path(METHOD_B).read_text())
    by_app: dict[str, dict[str, Check]] = collections.defaultdict(dict)
    for c in checks:
        by_app[c.app or ""][c.id.rsplit(".", 1)[-1]] = c
    rows = []
    for app in phase.params.apps:
        cs = by_app.get(app.id, {})
        rows.append((app.id, *(str(cs[k].status) if k in cs else "—"
                               for k in ("health", "ready", "action", "p95", "error_rate", "success", "stable",
                                         "agreement", "liveness"))))
    text = (header("Dual-source smoke (Phase 01)", ecosystem=phase.params.ecosystem,
                   environment=phase.params.environment, run_name=phase.run.root.name,
                   profile_note=phase.params.profile_note)
            + "\nMethod A: direct probes of health, readiness and one action per app, evenly spread over the "
              "stable window. Method B: the telemetry store's records of the same requests, matched by trace id "
              f"(waited {method_b['waited_s']} s of at most {method_b['deadline_s']:g} s for arrival).\n\n"
            + md_table(["app", "health", "ready", "action", "P95", "error rate", "success", "stable",
                        "agreement", "LIVE"], rows)
            + "\n\n## All checks\n\n" + checks_table(checks) + "\n")
    phase.run.write_text("reports/ecosystem_double_confirm.md", text)
    return Markdown("Report written: `reports/ecosystem_double_confirm.md`; "
                    "per-app evidence: `evidence/{app}_health.json`.")


def latency_chart(phase: Phase) -> Any:
    """P95 per app with its 90% interval against each app's threshold; saved under charts/."""
    from readiness.report.charts import latency_chart as draw
    from readiness.report.charts import save_chart

    chart = draw(latency_frame(phase), title="Smoke: P95 per app with 90% interval (ms)")
    save_chart(phase.run, "smoke_latency", chart)
    return chart
