"""Phase 09: resiliency under injected upstream 503s (docs/phases.md#09-resiliency), as a chaos experiment.

Hypothesis: when A3's content upstream (A4) fails completely, A3's circuit breaker opens
quickly, sheds load fast instead of hammering the upstream, and once the upstream is
back it closes again by itself, with the success rate back at its steady level.

Method, in one library call (:func:`run_experiment`) so that the fault's rollback scope
(:func:`readiness.phases.resiliency.faults.fault_injection`) covers every injection: a bounded load of
``resiliency.concurrency`` workers calls A3's preview route at ``rate_per_s`` for the
whole experiment (each answer recorded: time, status, ``X-Breaker-State``, latency);
``steady_state_s`` of steady state before; ``cycles`` cycles of a forced 503 on the
upstream for ``cycle_s`` (per window profile) then ``recovery_s`` to heal; the steady
state again after; the removal of every fault verified. Refused without a
``fault_injection_503`` approval: every check is then BLOCKED and nothing is sent.

:func:`analyse` reads the breaker transitions from telemetry (``breaker_transition``
events, method B), cross-checks them with A3's ``GET /admin/breaker`` and hands the
numbers to :mod:`readiness.phases.resiliency.metrics` (timings per cycle, shed load, error
budget, verdicts). :func:`timeline_chart` and :func:`write_report` present them;
:func:`clear_leftover_faults` is the notebook's last cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import time
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.approvals import LOG as HITL_LOG
from readiness.core.approvals import require_approval
from readiness.core.check import Check, Status
from readiness.phasekit.context import Phase
from readiness.phases.resiliency.faults import (
    ACTION,
    JOURNAL,
    FaultError,
    FaultInjector,
    FaultRefused,
    clear_leftover,
    fault_injection,
    now_iso,
    require_admin_headers,
)
from readiness.phases.resiliency.metrics import (
    ADMIN_TRANSITIONS_KEPT,
    CHECK_IDS,
    TAGS,
    classify,
    cycle_figures,
    fmt_s,
    source_mismatches,
    spans_of,
    state_at,
    transitions_from,
    verdicts,
)
from readiness.probe.client import GuardedClient
from readiness.probe.telemetry_store import TelemetryUnavailable
from readiness.report.charts import save_chart
from readiness.report.markdown import checks_frame, checks_table, header, md_table

REQUESTS = "evidence/a3_resiliency_requests.parquet"
RESULTS = "evidence/a3_cb_results.json"
REPORT = "reports/a3_resiliency_report.md"
CHART = "a3_resiliency_timeline"
EVIDENCE = (RESULTS, REQUESTS, JOURNAL)
BIN_S, MAX_BINS = 0.5, 120
POLL_S = 0.2

# --- the experiment -----------------------------------------------------------------------


@dataclasses.dataclass
class _Record:
    started_at: float = 0.0
    after_start: float | None = None
    ended_at: float | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    windows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    breaker_before: dict[str, Any] = dataclasses.field(default_factory=dict)
    breaker_after: dict[str, Any] = dataclasses.field(default_factory=dict)
    faults_before: dict[str, Any] = dataclasses.field(default_factory=dict)
    faults_after: dict[str, Any] = dataclasses.field(default_factory=dict)
    aborted: str | None = None


async def _load(phase: Phase, client: GuardedClient, rec: _Record, stop: asyncio.Event, max_requests: int) -> None:
    """Open-model load: request k is due at start + k / rate, sent by one of ``concurrency`` workers."""
    r = phase.params.resiliency
    app = phase.params.app(r.app)
    start, counter = time.monotonic(), iter(range(max_requests))

    async def worker() -> None:
        for k in counter:
            delay = start + k / r.rate_per_s - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            s = await client.get(app.url(r.route), app=app.id, route=r.route, timeout_s=2.0)
            rec.rows.append({"t": s.started_at, "status": s.status, "breaker_state": s.headers.get("x-breaker-state"),
                             "latency_ms": s.total_ms, "error": s.error, "trace_id": s.trace_id})

    await asyncio.gather(*(worker() for _ in range(r.concurrency)))


async def _admin(client: GuardedClient, url: str, app_id: str) -> dict[str, Any]:
    s = await client.get(url, app=app_id, route="/admin/breaker", headers=require_admin_headers(), keep_body=True,
                         timeout_s=2.0)
    return dict(s.json()) if s.ok else {"error": f"GET /admin/breaker → {s.status or s.error}"}


async def _closed_within(client: GuardedClient, url: str, app_id: str, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while (await _admin(client, url, app_id)).get("state") != "closed":
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def _experiment(phase: Phase, injector: FaultInjector, rec: _Record) -> None:
    p, r = phase.params, phase.params.resiliency
    cycle_s = getattr(r.cycle_s, p.windows.profile)
    planned = 2 * r.steady_state_s + r.cycles * (cycle_s + r.recovery_s)
    breaker_url = p.app(r.app).url("/admin/breaker")
    async with phase.client() as client:
        stop = asyncio.Event()
        rec.started_at = time.time()
        load = asyncio.create_task(_load(phase, client, rec, stop, math.ceil(r.rate_per_s * planned * 1.5) + 1))
        try:
            rec.breaker_before = await _admin(client, breaker_url, r.app)
            rec.faults_before = await injector.read(client)
            await asyncio.sleep(r.steady_state_s)
            for cycle in range(1, r.cycles + 1):
                if not await _closed_within(client, breaker_url, r.app, r.max_time_to_recover_s):
                    rec.aborted = f"{r.app}'s breaker was not closed before cycle {cycle}: no further fault injected"
                    injector.journal.log("aborted", cycle=cycle, reason=rec.aborted)
                    break
                window = await injector.inject(client, cycle_s, cycle=cycle)
                await asyncio.sleep(max(0.0, window.expires_at - time.time()))
                removal = await injector.remove(client, cycle=cycle, reason="end of the fault cycle")
                rec.windows.append({"cycle": cycle, "sent_at": window.sent_at, "answered_at": window.answered_at,
                                    "expires_at": window.expires_at, "removed_at": removal.answered_at,
                                    "removal_verified": removal.verified})
                if not removal.verified:
                    rec.aborted = f"the removal of cycle {cycle}'s fault could not be verified"
                    break
                await asyncio.sleep(r.recovery_s)
            rec.after_start = time.time()
            await asyncio.sleep(r.steady_state_s)
            rec.breaker_after = await _admin(client, breaker_url, r.app)
            rec.faults_after = await injector.read(client)
        finally:
            stop.set()
            await asyncio.wait_for(load, timeout=5.0)
            rec.ended_at = time.time()


def _not_run(phase: Phase, status: Status, reason: str, evidence: tuple[str, ...]) -> list[Check]:
    return [Check(id=cid, phase=phase.name, title=cid.split(".", 1)[1].replace("_", " "), status=status,
                  app=phase.params.resiliency.app, tags=TAGS, evidence=evidence, severity="P1", detail=reason)
            for cid in CHECK_IDS]


def run_experiment(phase: Phase) -> pd.DataFrame:
    """Steady state before → ``cycles`` fault cycles → steady state after, under load; rollback verified.

    Returns the fault windows (or the checks, when the experiment could not run).
    """
    p, r = phase.params, phase.params.resiliency
    cycle_s = getattr(r.cycle_s, p.windows.profile)
    plan = {"app": r.app, "upstream_app": r.upstream_app, "route": r.route, "cycles": r.cycles, "cycle_s": cycle_s,
            "recovery_s": r.recovery_s, "steady_state_s": r.steady_state_s, "concurrency": r.concurrency,
            "rate_per_s": r.rate_per_s, "profile": p.windows.profile}
    if p.target != "sandbox":
        why = "503 injection drives the sandbox's admin fault API (force_503_s); this ecosystem has none"
        phase.run.write_json(RESULTS, {"status": "skipped", "reason": why, "plan": plan})
        return checks_frame(phase.record(_not_run(phase, Status.SKIPPED, why, ())))
    decision = require_approval(p, phase.run, ACTION, phase=phase.name, apps=(r.app, r.upstream_app), cycles=r.cycles,
                                detail=f"force_503_s={cycle_s:g} on {r.upstream_app}, {r.cycles} cycles")
    rec, status, error = _Record(), "completed", None
    injector: FaultInjector | None = None
    try:
        with fault_injection(phase, decision, r.upstream_app) as injector:
            aio.run(_experiment(phase, injector, rec))
        status = "aborted" if rec.aborted else "completed"
    except FaultRefused as exc:
        status = "blocked"
        phase.run.write_json(RESULTS, {"status": "blocked", "reason": decision.reason, "plan": plan})
        return checks_frame(phase.record(_not_run(phase, Status.BLOCKED, str(exc), (HITL_LOG, JOURNAL))))
    except FaultError as exc:
        status, error = "error", str(exc)
    except BaseException:
        status = "interrupted"
        raise
    finally:
        if status != "blocked":
            rollback = injector.rollback_result if injector else None
            phase.run.write_frame(REQUESTS, pd.DataFrame(rec.rows, columns=["t", "status", "breaker_state", "latency_ms",
                                                                            "error", "trace_id"]))
            phase.run.write_json(RESULTS, {
                "status": status, "error": error, "aborted": rec.aborted, "plan": plan,
                "approval": decision.approval.id if decision.approval else None, "started_at": rec.started_at,
                "after_start": rec.after_start, "ended_at": rec.ended_at, "windows": rec.windows,
                "breaker_before": rec.breaker_before, "breaker_after": rec.breaker_after,
                "faults_before": rec.faults_before, "faults_after": rec.faults_after,
                "rollback": dataclasses.asdict(rollback) if rollback else None})
    if status == "error":
        return checks_frame(phase.record(_not_run(phase, Status.ERROR, f"experiment failed: {error}", (JOURNAL,))))
    return pd.DataFrame(rec.windows)


# --- analysis: telemetry, per-cycle figures, verdicts --------------------------------------


def _results(phase: Phase) -> dict[str, Any]:
    path = phase.run.path(RESULTS)
    if not path.exists():
        raise FileNotFoundError(f"{RESULTS} is missing: run resiliency.run_experiment(phase) first")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _load_frame(phase: Phase) -> pd.DataFrame:
    frame = pd.read_parquet(phase.run.path(REQUESTS))
    return frame.assign(outcome=classify(frame)) if len(frame) else frame.assign(outcome=pd.Series(dtype="object"))


async def _telemetry(phase: Phase, since: float, until: float, expected: int) -> tuple[list[dict[str, Any]], str | None]:
    """``breaker_transition`` events of the window, waiting (bounded) until as many as A3 reported arrived."""
    r, p = phase.params.resiliency, phase.params
    lo, hi = (dt.datetime.fromtimestamp(x, dt.UTC) for x in (since - 1, until + 1))
    deadline = time.monotonic() + p.thresholds.telemetry_arrival_s
    async with phase.client() as client:
        source = phase.telemetry(client)
        while True:
            try:
                events = await source.events(since=lo, until=hi, app_id=r.app, event_type=r.breaker_event)
            except TelemetryUnavailable as exc:
                return [], str(exc)
            if len(events) >= expected or time.monotonic() >= deadline:
                return events, None
            await asyncio.sleep(p.telemetry_contract.poll_interval_s)


def analyse(phase: Phase) -> pd.DataFrame:
    """Breaker transitions from telemetry (cross-checked with ``/admin/breaker``), per-cycle
    figures and the ``resiliency.*`` checks. Returns the per-cycle table."""
    res = _results(phase)
    if res["status"] not in ("completed", "aborted"):
        return pd.DataFrame({"experiment": [res["status"]], "reason": [res.get("reason") or res.get("error")]})
    p = phase.params
    frame, spans = _load_frame(phase), spans_of(res)
    in_window = [t for t in transitions_from(res["breaker_after"].get("transitions", []))
                 if res["started_at"] <= t.at <= res["ended_at"]]
    events, tel_error = aio.run(_telemetry(phase, res["started_at"], res["ended_at"], len(in_window)))
    tel = transitions_from(events)
    kept = len(res["breaker_after"].get("transitions", []))
    mismatches = source_mismatches(tel, in_window, kept >= ADMIN_TRANSITIONS_KEPT)
    figures = cycle_figures(frame, tel, spans, p.thresholds.error_rate_max)
    tel_gap = tel_error or ("no breaker_transition event in telemetry while A3's admin view shows "
                            f"{len(in_window)}" if not tel and in_window else None)
    phase.record(verdicts(p, phase.name, res, frame, figures, mismatches, tel_gap, EVIDENCE))
    res["analysis"] = {"telemetry_transitions": len(tel), "admin_transitions": len(in_window),
                       "source_mismatches": mismatches, "telemetry_gap": tel_gap,
                       "transitions": [{"at": now_iso(t.at), "from_state": t.from_state, "to_state": t.to_state}
                                       for t in tel],
                       "cycles": json.loads(figures.to_json(orient="records")) if len(figures) else []}
    phase.run.write_json(RESULTS, res)
    shown = ["cycle", "time_to_open_s", "time_to_recover_s", "sequence_complete", "requests", "shed", "failed",
             "budget", "consumed_share"]
    return figures[shown].set_index("cycle") if len(figures) else pd.DataFrame(columns=shown)




# --- timeline chart, report, final clean-up -------------------------------------------------

OUTCOMES = {"ok": "#2e7d32", "failed": "#ef6c00", "shed": "#6a1b9a", "error": "#37474f"}
STATES = {"closed": "#a5d6a7", "half_open": "#ffe082", "open": "#ef9a9a"}


def timeline_bins(frame: pd.DataFrame, res: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Outcomes per second and the breaker state, per bin of 0.5 s (wider when the experiment is
    long, so at most ``MAX_BINS`` rows reach the chart), and the fault windows; seconds from the start."""
    t0 = res["started_at"]
    duration = max(res["ended_at"] - t0, BIN_S)
    width = max(BIN_S, math.ceil(duration / MAX_BINS / BIN_S) * BIN_S)
    n_bins = math.ceil(duration / width)
    starts = np.arange(n_bins) * width
    index = np.clip(((frame.t - t0) // width).astype(int), 0, n_bins - 1)
    counts = pd.crosstab(index, frame.outcome).reindex(index=range(n_bins), columns=list(OUTCOMES), fill_value=0)
    transitions = transitions_from(res.get("analysis", {}).get("transitions", []))
    bins = pd.DataFrame({"start": starts, "end": starts + width,
                         "state": [state_at(transitions, t0 + s + width / 2) for s in starts]})
    for outcome in OUTCOMES:
        bins[outcome] = counts[outcome].to_numpy() / width
    faults = pd.DataFrame([{"start": s.fault_start - t0, "end": s.fault_end - t0, "cycle": s.cycle}
                           for s in spans_of(res)], columns=["start", "end", "cycle"])
    return bins, faults


def timeline_chart(phase: Phase) -> alt.VConcatChart | Markdown:
    """Requests per second by outcome over time, the breaker state band below, fault windows shaded."""
    res = _results(phase)
    if res["status"] not in ("completed", "aborted"):
        return Markdown(f"No timeline: the experiment did not run ({res['status']}).")
    bins, faults = timeline_bins(_load_frame(phase), res)
    x = alt.X("start:Q", title="seconds since the experiment started", scale=alt.Scale(domain=[0, float(bins.end.max())]))
    shade = alt.Chart(faults).mark_rect(fill="#212121", fillOpacity=0.12, stroke="#c62828", strokeWidth=1.5,
                                        strokeDash=[4, 3]).encode(x=x, x2="end:Q")
    bars = (alt.Chart(bins).transform_fold(list(OUTCOMES), as_=["outcome", "per_s"])
            .transform_filter("datum.per_s > 0")
            .transform_stack(stack="per_s", groupby=["start"], as_=["y0", "y1"])
            .mark_bar().encode(
                x=x, x2="end:Q", y=alt.Y("y0:Q", title="requests per second"), y2="y1:Q",
                color=alt.Color("outcome:N", title="outcome",
                                scale=alt.Scale(domain=list(OUTCOMES), range=list(OUTCOMES.values())))))
    band = alt.Chart(bins).mark_rect().encode(
        x=x, x2="end:Q", color=alt.Color("state:N", title="breaker (telemetry)",
                                         scale=alt.Scale(domain=list(STATES), range=list(STATES.values()))))
    width = 640
    chart = alt.vconcat(
        alt.layer(bars, shade).properties(width=width, height=200, title=alt.TitleParams(
            f"{phase.params.resiliency.app} {phase.params.resiliency.route} under injected upstream 503s",
            subtitle="dashed boxes: fault windows (forced 503 on the upstream); bins of "
                     f"{float(bins.end.iloc[0] - bins.start.iloc[0]):g} s")),
        alt.layer(band, shade).properties(width=width, height=28),
    ).resolve_scale(color="independent")
    save_chart(phase.run, CHART, chart)
    return chart


def _journal_rows(phase: Phase) -> list[tuple[str, ...]]:
    path = phase.run.path(JOURNAL)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    entries = [json.loads(line) for line in lines if line.strip()]
    return [(e["at"], e["step"], str(e.get("cycle") or ""), str(e.get("force_503_s") or e.get("force_503_s_left") or ""),
             str(e.get("detail") or e.get("reason") or "")) for e in entries]


def write_report(phase: Phase) -> Markdown:
    """``reports/a3_resiliency_report.md``, written like an experiment journal."""
    p, r = phase.params, phase.params.resiliency
    res, checks = _results(phase), {c.id: c for c in phase.run.read_checks(phase.name)}
    plan = res.get("plan", {})
    lines = [header("A3 resiliency under upstream 503s (Phase 09)", ecosystem=p.ecosystem, environment=p.environment,
                    run_name=phase.run.root.name, profile_note=p.profile_note),
             "## Hypothesis\n", f"When {r.upstream_app} answers only 503s, {r.app}'s circuit breaker opens within "
             f"{r.max_time_to_open_s:g} s, sheds load fast while open, and closes by itself within "
             f"{r.max_time_to_recover_s:g} s of the upstream's return, with the success rate back at its steady level.\n",
             "## Method\n", md_table(["setting", "value"], [(k, v) for k, v in plan.items()]),
             f"\nExperiment status: **{res['status']}**" + (f" — {res.get('reason') or res.get('error')}"
                                                             if res.get("reason") or res.get("error") else "")
             + (f"; aborted: {res['aborted']}" if res.get("aborted") else "")
             + (f"; approval `{res['approval']}`" if res.get("approval") else "") + "\n"]
    for which, cid in (("before", "resiliency.steady_state_before"), ("after", "resiliency.steady_state_after")):
        c = checks.get(cid)
        lines += [f"## Steady state {which}\n", f"**{c.status}** — {c.detail}\n" if c else "not measured\n"]
        if which == "before":
            cycles = res.get("analysis", {}).get("cycles", [])
            lines += ["## Observations per cycle\n", md_table(
                ["cycle", "time to open", "time to recover", "transitions", "requests", "shed", "failed",
                 "error budget consumed"],
                [(c["cycle"], fmt_s(c["time_to_open_s"]), fmt_s(c["time_to_recover_s"]), " ".join(c["transitions"]),
                  c["requests"], c["shed"], c["failed"],
                  f"{c['consumed_share']:.1f}×" if c["consumed_share"] is not None else "—") for c in cycles])
                + "\n" if cycles else "No fault cycle ran.\n"]
    lines += ["## Rollback\n", md_table(["at", "step", "cycle", "force_503_s", "detail"], _journal_rows(phase)) + "\n",
              "## Verdicts\n", checks_table(list(checks.values())) + "\n",
              f"Evidence: `{RESULTS}`, `{REQUESTS}`, `{JOURNAL}`, `charts/{CHART}.svg`; approvals in `{HITL_LOG}`.\n"]
    phase.run.write_text(REPORT, "\n".join(lines))
    return Markdown(f"Written: `{REPORT}`")


def clear_leftover_faults(phase: Phase) -> pd.DataFrame:
    """The notebook's last cell: a forced 503 left by an interrupted cell is removed (and journaled)."""
    if phase.params.target != "sandbox":
        return pd.DataFrame([{"app": phase.params.resiliency.upstream_app, "action": "none (no sandbox fault API)"}])
    return pd.DataFrame([clear_leftover(phase, phase.params.resiliency.upstream_app)])
