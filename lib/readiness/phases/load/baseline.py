"""Phase 03 baseline load (``03_baseline_load``): k6 at a known rate, verdicts from the raw points.

k6 runs ``k6/baseline_load.js``: ``load.rate_per_s`` iterations/s for ``duration_s`` over the
target apps' critical GET routes from a pool of ``load.vus`` VUs (open model), then the
``vu_scenario`` (closed model); with ``load.segments`` > 1 as execution segments whose raw
points are merged (:mod:`readiness.phases.load.segments`). The stop conditions (docs/phases.md#guardrails) are evaluated live
(:mod:`readiness.core.stop_conditions`); a met one stops k6, is recorded for the run
(``run.json`` ``stop_conditions``, like the latency phase's) and turns the checks STOPPED. The
evidence says how often each condition was evaluated and could be judged, when the breach
began, how long k6 took to exit and which requests it abandoned in flight.

Without a telemetry source (none in the params, or a store whose route answers 404 or
nothing at all) the telemetry condition is not evaluated and nothing stops on its account:
the stop-condition check and the autonomy checks say INCONCLUSIVE "no telemetry source: …",
because an absent store is not a store that loses events.

Verdicts never use k6's summary percentiles: per-endpoint P95 with order-statistic intervals
(flagged above ``thresholds.load_flag_p95_ms``), delivered requests and dropped iterations,
the error rate (Wilson), each k6 threshold (``true`` in the summary export means crossed;
exit code 99), and the orchestration's autonomy signals in the store during the load with
their arrival latency. Over 60 VUs need a ``load_over_60_vus`` approval; refused, k6 never
starts and every ``load.*`` check is BLOCKED.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.approvals import require_approval
from readiness.core.check import Check, Status
from readiness.core.stop_conditions import NO_SOURCE, StopMonitor, condition_text, report_notes
from readiness.core.verdict import combine, error_rate_check, latency_check, value_check
from readiness.params.autonomy import MAX_UNAPPROVED_VUS
from readiness.phasekit.context import Phase, part
from readiness.phases.load import segments as segs
from readiness.phases.load.segments import LOG, POINTS, RUN_META, SUMMARY, targets
from readiness.probe.k6run import counter_totals, request_timeout_s, run_many, threshold_slug
from readiness.probe.telemetry_store import TelemetryAbsent, TelemetryUnavailable, event_epoch, iso, parse_ts
from readiness.report.charts import ecdf_chart, histogram_bins_chart, latency_chart, save_chart
from readiness.report.markdown import checks_frame, checks_table, fmt_interval, fmt_num, header, md_table
from readiness.stats.latency import ecdf, histogram, percentile_summary

RESULTS = "reports/baseline_results.json"
REPORT = "reports/a8_baseline_load.md"
SLO_MATRIX = "reports/ecosystem_slo_matrix.md"
AUTONOMY = "evidence/baseline_autonomy_events.json"
ARRIVAL_CHART = "load_autonomy_arrival"
P95_CHART = "load_p95"
STOP_CHECK = "load.stop_conditions"
QS = (0.5, 0.95, 0.99)
# The load window holds a few hundred autonomy signals (~290 in 30 s in the sandbox): a P99 bound needs
# n >= 299, a P95 bound 59, so the signals' arrival is judged at P95 (telemetry_contract judges P99 of more).
AUTONOMY_ARRIVAL_Q = 0.95
EVIDENCE = (POINTS, SUMMARY, RUN_META)


def plan(phase: Phase) -> pd.DataFrame:
    """The load about to run: one row per endpoint with its share of the planned requests."""
    rows, n = targets(phase.params), segs.planned_iterations(phase.params)
    share = [n // len(rows) + (1 if i < n % len(rows) else 0) for i in range(len(rows))]
    return pd.DataFrame([{**t, "planned_requests": k, "rate_per_s": phase.params.load.rate_per_s * k / n}
                         for t, k in zip(rows, share, strict=True)]).set_index(["app", "route"])


def _approval(phase: Phase) -> str | None:
    """None when the VU counts need no approval or one covers them, else the refusal."""
    ld = phase.params.load
    vus = max(ld.vus, ld.vu_scenario.vus)
    if vus <= MAX_UNAPPROVED_VUS:
        return None
    decision = require_approval(phase.params, phase.run, "load_over_60_vus", phase=phase.name, vus=vus,
                                apps=tuple(sorted({t["app"] for t in targets(phase.params)})),
                                detail=f"baseline load with {vus} virtual users")
    return None if decision.granted else decision.reason


def run_load(phase: Phase, use_existing_points: bool = False) -> pd.DataFrame:
    """Run the load (or take the points ``readiness load-merge`` put in the run); a row per scenario."""
    p, ld = phase.params, phase.params.load
    if use_existing_points:
        if not phase.run.path(RUN_META).exists() or not phase.run.path(POINTS).exists():
            raise FileNotFoundError(f"use_existing_points: {phase.run.root} holds no merged load points; run "
                                    "`readiness load-merge DIR... --run-dir RUN` first (docs/distributed_load.md)")
        if _state(phase)[1]:
            _mark_stop(phase, _state(phase)[1] or "")
        return scenario_table(phase)
    refusal = _approval(phase)
    if refusal:
        phase.run.write_json(RUN_META, {"blocked": refusal, "started_at": None, "ended_at": None, "stop": None})
        phase.record(_blocked(phase, refusal))
        return pd.DataFrame([{"status": "BLOCKED", "reason": refusal}])
    token, monitor = f"qa-load-{uuid.uuid4().hex[:12]}", StopMonitor(segs.stop_rules(p))
    absent = segs.telemetry_absence(p)
    if absent:
        monitor.no_source(absent)
    watch = segs.watcher(monitor, token, None if absent else segs.store_lookup(phase))
    grace, limit = min(ld.grace_s, 10), segs.k6_timeout(p)
    started = dt.datetime.now(dt.UTC)
    try:
        with tempfile.TemporaryDirectory(prefix="readiness-load-") as tmp:
            results = run_many(segs.local_processes(p, token, Path(tmp)), on_points=watch, poll_s=ld.stop_poll_s,
                               timeout_s=limit, grace_s=grace)
            if monitor.met is None:  # the closed model only once the open one has no request in flight
                results += run_many([segs.closed_process(p, token, Path(tmp))], on_points=watch,
                                    poll_s=ld.stop_poll_s, timeout_s=limit, grace_s=grace)
    except BaseException:
        watch.close()
        raise
    watch.close(wait_s=p.http.total_timeout_s)  # the last store query's answer belongs in the evidence
    segs.record_results(phase.run, results, {
        "token": token, "started_at": iso(started), "ended_at": iso(dt.datetime.now(dt.UTC)), "source": "local",
        "segments": ld.segments, "planned_iterations": segs.planned_iterations(p), "targets": targets(p),
        "request_timeout_s": request_timeout_s(p), "stop": monitor.report(),
        "stop_timing": monitor.timing([r.stop_latency_s for r in results if r.stop_latency_s is not None],
                                      killed=any(r.killed for r in results)), "blocked": None})
    if monitor.met is not None:
        _mark_stop(phase, monitor.met.reason)
    return scenario_table(phase)


def _mark_stop(phase: Phase, reason: str) -> None:
    """Record the met stop condition for the run (``run.json``), as the latency phase does."""
    stops = list(phase.run.info().get("stop_conditions", []))
    if not any(s.get("phase") == phase.name and s.get("reason") == reason for s in stops):
        phase.run.update_info(stop_conditions=[*stops, {"phase": phase.name, "reason": reason}])


def _state(phase: Phase) -> tuple[str | None, str | None]:
    """(refusal, stop reason) of this run's load: why checks are BLOCKED or STOPPED, if they are."""
    meta = segs.read_meta(phase.run)
    met = (meta.get("stop") or {}).get("met")
    return meta.get("blocked"), met["reason"] if met else None


def scenario_table(phase: Phase) -> pd.DataFrame:
    """Per scenario: requests, failed, achieved rate (the arrival one next to its plan)."""
    meta, rows, ld = segs.read_meta(phase.run), segs.read_requests(phase.run), phase.params.load
    out = [{"scenario": s, "requests": len(g), "failed": int(g["failed"].sum()),
            "achieved_per_s": len(g) / (ld.duration_s if s == "arrival" else ld.vu_scenario.duration_s),
            "planned": meta.get("planned_iterations") if s == "arrival" else None}
           for s, g in rows.groupby("scenario")]
    table = pd.DataFrame(out, columns=["scenario", "requests", "failed", "achieved_per_s", "planned"])
    return table.assign(stopped_by=_state(phase)[1]).set_index("scenario")


def _finish(phase: Phase, checks: list[Check]) -> pd.DataFrame:
    """Record checks — STOPPED (all but the stop-condition check) when a condition stopped k6."""
    _, stop = _state(phase)
    if stop:
        checks = [c if c.id == STOP_CHECK else c.with_status(Status.STOPPED, f"stop condition: {stop}; {c.detail}")
                  for c in checks]
    return checks_frame(phase.record(checks))


def _recorded(phase: Phase, prefix: str) -> pd.DataFrame:
    return checks_frame([c for c in phase.run.read_checks(phase.name) if c.id.startswith(prefix)])


def _titles(phase: Phase) -> dict[str, tuple[str, str | None]]:
    """Every ``load.*`` check id with its title and app (for BLOCKED records)."""
    p = phase.params
    out: dict[str, tuple[str, str | None]] = {
        f"load.baseline.{t['app']}.{t['route']}.p95": (f"{t['app']} {t['route']} P95 under baseline load", t["app"])
        for t in targets(p)}
    out |= {"load.arrival_rate": ("the load generator delivered the planned arrival rate", None),
            "load.dropped_iterations": ("no iteration dropped by the arrival-rate executor", None),
            "load.error_rate": ("error rate under baseline load", None),
            STOP_CHECK: ("no stop condition met during the load", None)}
    out |= {f"load.k6.{threshold_slug(f'{m}: {e}')}": (f"k6 threshold {m}: {e} held", None)
            for m, exprs in p.load.thresholds.items() for e in exprs}
    out |= {f"load.autonomy.{s}": (f"{p.load.autonomy_app} {s} reached the telemetry store during the load",
                                   p.load.autonomy_app) for s in p.load.autonomy_signals}
    return out | {"load.autonomy.arrival": ("autonomy signals reach the store within the arrival threshold",
                                            p.load.autonomy_app)}


def _blocked(phase: Phase, refusal: str) -> list[Check]:
    return [Check(id=cid, phase=phase.name, title=title, app=app, status=Status.BLOCKED, severity="P1",
                  tags=("performance",), evidence=(RUN_META,), detail=refusal)
            for cid, (title, app) in _titles(phase).items()]


def _window(phase: Phase) -> str:
    return "{started_at}/{ended_at}".format(**segs.read_meta(phase.run))


def endpoint_latency(phase: Phase) -> pd.DataFrame:
    """Per endpoint (arrival-rate scenario): P50/P95/P99 with intervals; P95 flagged above the limit."""
    if _state(phase)[0]:
        return _recorded(phase, "load.baseline.")
    p, rows = phase.params, segs.read_requests(phase.run)
    arrival, conf = rows[rows["scenario"] == "arrival"], p.thresholds.confidence
    checks, table = [], []
    for t in targets(p):
        mine = arrival[(arrival["app"] == t["app"]) & (arrival["route"] == t["route"])]["latency_ms"].to_numpy()
        checks.append(latency_check(
            id=f"load.baseline.{t['app']}.{t['route']}.p95", phase=phase.name, app=t["app"],
            title=f"{t['app']} {t['route']} P95 under baseline load", samples_ms=mine,
            threshold_ms=p.thresholds.load_flag_p95_ms, confidence=conf, tags=("performance",), severity="P2",
            window=_window(phase), evidence=EVIDENCE,
            detail=f"k6 raw points, arrival-rate scenario at {p.load.rate_per_s:g}/s"))
        table += [{"app": t["app"], "route": t["route"], **r.to_dict()} for r in percentile_summary(mine, QS, conf)]
    _finish(phase, checks)
    return pd.DataFrame(table).set_index(["app", "route", "percentile"])[["estimate", "low", "high", "upper", "n"]]


def p95_chart(phase: Phase) -> alt.LayerChart | Markdown:
    """P95 per endpoint with its interval and the flag threshold; saved under charts/."""
    checks = [c for c in phase.run.read_checks(phase.name) if c.id.startswith("load.baseline.") and c.n]
    if not checks:
        return Markdown("No endpoint latency to chart: the load did not run or sent no request.")
    frame = pd.DataFrame([{"label": c.id.removeprefix("load.baseline.").removesuffix(".p95"), "p95_ms": c.observed,
                           "ci_low_ms": c.ci_low, "ci_high_ms": c.ci_high, "threshold_ms": c.threshold, "n": c.n,
                           "status": str(c.status)} for c in checks])
    chart = latency_chart(frame, title="P95 under baseline load with 90% interval")
    save_chart(phase.run, P95_CHART, chart)
    return chart


def delivery(phase: Phase) -> pd.DataFrame:
    """Delivered vs planned requests, dropped iterations, error rate, k6 thresholds, stop conditions."""
    if _state(phase)[0]:
        return _recorded(phase, "load.")
    p, meta, rows = phase.params, segs.read_meta(phase.run), segs.read_requests(phase.run)
    summary = json.loads(phase.run.path(SUMMARY).read_text())
    arrival, planned = rows[rows["scenario"] == "arrival"], int(meta["planned_iterations"])
    dropped = sum(counter_totals(segs.read_points(phase.run), "dropped_iterations").values())
    short = "load generator under-delivered"
    common = dict(phase=phase.name, window=_window(phase), evidence=EVIDENCE, severity="P1")
    rate = len(arrival) / p.load.duration_s
    checks = [
        value_check(id="load.arrival_rate", title="the load generator delivered the planned arrival rate",
                    observed=len(arrival), expected=planned, comparator=">=", unit="requests", n=len(arrival),
                    tags=("cost_capacity", "test_quality"), **common,
                    detail=f"{rate:.2f}/s achieved vs {p.load.rate_per_s:g}/s target"
                           + ("" if len(arrival) >= planned else f"; {short}")),
        value_check(id="load.dropped_iterations", title="no iteration dropped by the arrival-rate executor",
                    observed=int(dropped), expected=0, unit="iterations", n=planned, tags=("cost_capacity",),
                    **common, detail=f"{short}: {int(dropped)} iterations found no free VU of {p.load.vus}"
                    if dropped else f"VU pool {p.load.vus}"),
        error_rate_check(id="load.error_rate", title="error rate under baseline load", errors=int(rows["failed"].sum()),
                         n=len(rows), max_rate=p.thresholds.error_rate_max, confidence=p.thresholds.confidence,
                         tags=("reliability",), **common, detail="k6 raw points, both scenarios"),
    ]
    code = f"k6 exit code {summary['exit_code']}" + (" (a threshold failed)" if summary["threshold_failed"] else "")
    for key, crossed in summary["thresholds_crossed"].items():
        checks.append(value_check(id=f"load.k6.{threshold_slug(key)}", title=f"k6 threshold {key} held",
                                  observed=crossed,
                                  expected=False, tags=("performance",), **common,
                                  detail=f"summary export: {'crossed' if crossed else 'not crossed'}; {code}"))
    checks.append(stop_check(meta, common, declared_store=segs.telemetry_absence(p) is None))
    return _finish(phase, checks)


def stop_check(meta: dict[str, Any], common: dict[str, Any], *, declared_store: bool = True) -> Check:
    """``load.stop_conditions``: FAIL when one was met. "None met" is a PASS only when it says
    something: INCONCLUSIVE when the error-rate window could never be judged (a load shorter
    than the sustained window), or when a *declared* telemetry store turned out absent, so its
    condition could not be watched. An undeclared store is no condition of this ecosystem:
    the error rate and P95 decide. The detail counts each condition's evaluations and judgements."""
    stop = meta.get("stop") or {}
    met, absent = stop.get("met"), stop.get("telemetry_source")
    parts = [condition_text(c) for c in (stop.get("conditions") or {}).values()]
    flight = meta.get("in_flight_at_stop") or {}
    if flight.get("requests"):
        parts.append(f"{flight['requests']} request(s) in flight at stop, abandoned by k6 (no answer recorded)")
    check = value_check(id=STOP_CHECK, title="no stop condition met during the load",
                        observed=met["reason"] if met else "none", expected="none", tags=("reliability",),
                        **common, detail="; ".join(parts))
    never = (stop.get("conditions") or {}).get("error_rate", {})
    if met is None and never.get("evaluations") and not never.get("judged"):  # "not met" would be vacuous
        why = ", ".join(f"{k} ×{n}" for k, n in (never.get("not_judged") or {}).items())
        return check.with_status(Status.INCONCLUSIVE, f"the error-rate and P95 conditions could never be judged "
                                                      f"({why}): the load was shorter than the sustained window or "
                                                      f"its traffic had gaps; {check.detail}")
    if met is None and absent and declared_store:
        # A declared store that turned out absent: one of the three conditions could not be watched.
        # An undeclared store is no condition of this ecosystem, so the other two decide.
        return check.with_status(Status.INCONCLUSIVE, f"{absent}; error rate and P95 not met, the telemetry "
                                                      f"condition not evaluated; {check.detail}")
    return check


async def _signals(phase: Phase, start: dt.datetime, end: dt.datetime) -> tuple[dict[str, list[dict]], str]:
    """The autonomy events of the load window, waiting (up to the arrival threshold) until every
    signal is there and the store holds a newer event of the app (so it has caught up)."""
    p, ld = phase.params, phase.params.load
    deadline = time.monotonic() + p.thresholds.telemetry_arrival_s
    async with phase.client() as client:
        source = phase.telemetry(client)
        while True:
            try:
                found = {s: [e for e in await source.events(since=start, until=end, app_id=ld.autonomy_app,
                                                              event_type=s)
                             if s != "run_progress" or _positive(e.get("progress"))]
                         for s in ld.autonomy_signals}
                newer = await source.events(since=end, until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1),
                                            app_id=ld.autonomy_app, limit=1)
            except TelemetryAbsent as exc:
                return {s: [] for s in ld.autonomy_signals}, str(exc) if str(exc).startswith(NO_SOURCE) \
                    else f"{NO_SOURCE}: {exc}"
            except TelemetryUnavailable as exc:
                return {s: [] for s in ld.autonomy_signals}, f"telemetry store unavailable: {exc}"
            if (all(found.values()) and newer) or time.monotonic() > deadline:
                return found, "" if newer else "the store holds no event of the app after the load window"
            await asyncio.sleep(p.telemetry_contract.poll_interval_s)


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@part("autonomy_signals")
def autonomy(phase: Phase) -> pd.DataFrame:
    """The autonomy signals in the store during the load, and their arrival latency (ms)."""
    if _state(phase)[0]:
        return _recorded(phase, "load.autonomy.")
    p, meta = phase.params, segs.read_meta(phase.run)
    app, conf = p.load.autonomy_app, p.thresholds.confidence
    absent = segs.telemetry_absence(p) or (meta.get("stop") or {}).get("telemetry_source")
    found, problem = ({s: [] for s in p.load.autonomy_signals}, absent) if absent else \
        aio.run(_signals(phase, parse_ts(meta["started_at"]), parse_ts(meta["ended_at"])))
    rows = []
    for signal, events in found.items():
        for e in events:
            stamp, received = event_epoch(e.get("timestamp")), event_epoch(e.get("received_at"))
            rows.append({"event_type": signal, "timestamp": e.get("timestamp"), "received_at": e.get("received_at"),
                         "run_id": e.get("run_id"), "trace_id": e.get("trace_id"),
                         "arrival_ms": max(0.0, (received - stamp) * 1000) if stamp and received else None})
    phase.run.write_json(AUTONOMY, {"app": app, "window": _window(phase), "problem": problem or None, "events": rows})
    common = dict(phase=phase.name, app=app, window=_window(phase), evidence=(AUTONOMY,), severity="P1",
                  tags=("observability",))
    checks = [value_check(id=f"load.autonomy.{s}", title=f"{app} {s} reached the telemetry store during the load",
                          observed=len(found[s]), expected=1, comparator=">=", unit="events", n=len(found[s]),
                          detail="; ".join(x for x in (problem, "progress > 0" if s == "run_progress" else "")
                                           if x), **common)
              for s in p.load.autonomy_signals]
    samples = np.array([r["arrival_ms"] for r in rows if r["arrival_ms"] is not None], dtype=float)
    checks.append(latency_check(id="load.autonomy.arrival", title="autonomy signals reach the store within the "
                                "arrival threshold", samples_ms=samples,
                                threshold_ms=p.thresholds.telemetry_arrival_s * 1000,
                                q=AUTONOMY_ARRIVAL_Q, confidence=conf, **common,
                                detail="event timestamp to the store's received_at"))
    if problem and problem.startswith(NO_SOURCE):  # nothing to read is no evidence either way
        checks = [dataclasses.replace(c, status=Status.INCONCLUSIVE, observed=None, n=0, detail=problem)
                  for c in checks]
    _finish(phase, checks)
    table = [r.to_dict() for r in percentile_summary(samples, QS, conf)]
    return pd.DataFrame(table).set_index("percentile")[["estimate", "low", "high", "upper", "n"]]


@part("autonomy_signals")
def autonomy_chart(phase: Phase) -> alt.HConcatChart | Markdown:
    """ECDF and histogram of the autonomy signals' arrival latency (aggregated); saved under charts/."""
    path = phase.run.path(AUTONOMY)
    rows = json.loads(path.read_text())["events"] if path.exists() else []
    samples = np.array([r["arrival_ms"] for r in rows if r["arrival_ms"] is not None], dtype=float)
    if samples.size == 0:
        return Markdown("No arrival latency to chart: no autonomy signal of the load window reached the store.")
    limit = phase.params.thresholds.telemetry_arrival_s * 1000
    early = int((samples < 0).sum())  # the store's clock ahead of the app's: drawn at 0, and said
    samples = np.clip(samples, 0.0, None)
    skew = f" ({early} arrived 'before' they were sent: clock skew, drawn at 0 ms)" if early else ""
    chart = alt.hconcat(
        ecdf_chart(ecdf(samples).assign(series="autonomy signals"), threshold_ms=limit,
                   title=f"Autonomy signal arrival (event timestamp → store), ECDF{skew}"),
        histogram_bins_chart(histogram(samples, bins=30), threshold_ms=limit, title="Arrival latency histogram"))
    save_chart(phase.run, ARRIVAL_CHART, chart)
    return chart


def _slo_matrix(phase: Phase) -> list[tuple[Check, list[Check]]]:
    """Per app: arrival P95 against its SLO, error rate against its SLO maximum — for the matrix only,
    not recorded: ~125 requests per app (quick profile) cannot reach the n = 299 a 1% Wilson PASS needs."""
    p, rows, out = phase.params, segs.read_requests(phase.run), []
    for app_id in dict.fromkeys(t["app"] for t in targets(p)):
        app, mine = p.app(app_id), rows[rows["app"] == app_id]
        common = dict(phase=phase.name, app=app_id, window=_window(phase), evidence=EVIDENCE,
                      confidence=p.thresholds.confidence)
        parts = [latency_check(id=f"load.slo.{app_id}.p95", title=f"{app_id} P95 within its SLO", tags=("performance",),
                               samples_ms=mine[mine["scenario"] == "arrival"]["latency_ms"].to_numpy(),
                               threshold_ms=app.slo.p95_ms, **common),
                 error_rate_check(id=f"load.slo.{app_id}.error_rate", title=f"{app_id} error rate within its SLO",
                                  errors=int(mine["failed"].sum()), n=len(mine), max_rate=app.slo.error_rate_max,
                                  tags=("reliability",), **common)]
        out.append((combine(f"load.slo.{app_id}", phase.name, f"{app_id} meets its SLO under baseline load", parts,
                            app=app_id, window=_window(phase), severity="P2"), parts))
    return out


def _endpoints(phase: Phase, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Per endpoint and scenario: n, failed and P50/P95/P99 with their intervals (from raw points)."""
    out = []
    for (scenario, app, route), g in rows.groupby(["scenario", "app", "route"], sort=False) if len(rows) else ():
        rows_q = percentile_summary(g["latency_ms"].to_numpy(), QS, phase.params.thresholds.confidence)
        out.append({"app": app, "route": route, "scenario": scenario, "n": len(g), "failed": int(g["failed"].sum()),
                    **{r.label: r.to_dict() for r in rows_q}, "text": {r.label: r.describe() for r in rows_q}})
    return out


def write_reports(phase: Phase) -> Markdown:
    """``baseline_results.json``, ``a8_baseline_load.md`` and ``ecosystem_slo_matrix.md``."""
    p, meta, (refusal, stop) = phase.params, segs.read_meta(phase.run), _state(phase)
    slo = [] if refusal else _slo_matrix(phase)
    checks = [c for c in phase.run.read_checks(phase.name) if c.id.startswith("load.")]
    by_id, rows = {c.id: c for c in checks}, pd.DataFrame() if refusal else segs.read_requests(phase.run)
    endpoints = _endpoints(phase, rows)
    summary = json.loads(phase.run.path(SUMMARY).read_text()) if phase.run.path(SUMMARY).exists() else {}
    delivered = int((rows["scenario"] == "arrival").sum()) if len(rows) else 0
    dropped = by_id.get("load.dropped_iterations")
    phase.run.write_json(RESULTS, {
        "window": None if refusal else _window(phase), "blocked": refusal, "stopped": stop,
        "profile_note": p.profile_note, "source": meta.get("source"), "segments": meta.get("segments"),
        "rate": {"target_per_s": p.load.rate_per_s, "achieved_per_s": delivered / p.load.duration_s,
                 "planned_requests": meta.get("planned_iterations"), "delivered_requests": delivered},
        "dropped_iterations": dropped.observed if dropped else None, "vus": p.load.vus,
        "vu_scenario": p.load.vu_scenario.model_dump(), "endpoints": [{**e, "text": None} for e in endpoints],
        "k6": {"exit_code": summary.get("exit_code"), "threshold_failed": summary.get("threshold_failed"),
               "thresholds": p.load.thresholds, "thresholds_crossed": summary.get("thresholds_crossed")},
        "stop_conditions": meta.get("stop"), "stop_timing": meta.get("stop_timing"),
        "in_flight_at_stop": meta.get("in_flight_at_stop"),
        "telemetry_source": (meta.get("stop") or {}).get("telemetry_source"), "checks": [c.to_dict() for c in checks],
        "slo_matrix": [{"app": c.app, "verdict": "STOPPED" if stop else str(c.status), "p95": lat.to_dict(),
                        "error_rate": err.to_dict()} for c, (lat, err) in slo]})
    head = header("Baseline load (Phase 03)", ecosystem=p.ecosystem, environment=p.environment,
                  run_name=phase.run.root.name, profile_note=p.profile_note)
    text = head + (f"\nConstant arrival rate {p.load.rate_per_s:g}/s for {p.load.duration_s:g} s (VU pool "
                   f"{p.load.vus}, {p.load.segments} segment(s)), then {p.load.vu_scenario.vus} VUs for "
                   f"{p.load.vu_scenario.duration_s:g} s. Raw points `{POINTS}`, summary `{SUMMARY}`, log `{LOG}`, "
                   f"results `{RESULTS}`.\n\n" + (f"## {'Blocked' if refusal else 'Stopped'}\n\n{refusal or stop}\n\n"
                                                  if refusal or stop else "") + report_notes(meta))
    text += "## Endpoints (arrival-rate scenario, raw points)\n\n" + md_table(
        ["app", "route", "P50", "P95", "P99"], [(e["app"], e["route"], *(e["text"][q] for q in ("P50", "P95", "P99")))
                                               for e in endpoints if e["scenario"] == "arrival"])
    phase.run.write_text(REPORT, text + "\n\n## Checks\n\n" + checks_table(checks) + "\n")
    matrix = md_table(["app", "SLO P95", "observed P95 [interval]", "error rate [95% interval]", "verdict"], [
        (c.app, fmt_num(p.app(c.app or "").slo.p95_ms, "ms"), f"{fmt_num(lat.observed, 'ms')} {fmt_interval(lat)}",
         f"{fmt_num(err.observed, 'ratio')} {fmt_interval(err)}", f"**{'STOPPED' if stop else c.status}**")
        for c, (lat, err) in slo])
    phase.run.write_text(SLO_MATRIX, head.replace("Baseline load (Phase 03)", "Ecosystem SLO matrix under baseline "
                                                  "load") + "\n" + (matrix if slo else f"Not measured: {refusal}") + "\n")
    return Markdown(f"Written: `{RESULTS}`, `{REPORT}`, `{SLO_MATRIX}`" + (f"; **stopped**: {stop}" if stop else ""))
