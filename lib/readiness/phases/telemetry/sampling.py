"""Telemetry sampling, arrival latency and acceptance (docs/phases.md#06-telemetry-contract).

The sampling policy is judged from the outside, statistically: the suite drives
``sampling_probe_events`` high-volume success impressions and ``error_probe_events``
error impressions through the probe app (A7) and counts what reaches the telemetry store.

* Success share — the arrival share must be the configured rate (10%) within
  ``sampling_share_margin``: an equivalence test. PASS when the 90% Wilson interval lies
  inside the band, FAIL when it lies wholly outside it (a leak to 100%, or a loss),
  INCONCLUSIVE otherwise, with the n a decision needs.
* Errors and finance — "100%" cannot be proven from a sample, so the rule is the one
  for acceptance: the Wilson lower bound of the arrival share must reach
  ``thresholds.telemetry_acceptance_min`` (99%). With 400 error probes a perfect record
  passes (lower bound 99.05%), one loss is INCONCLUSIVE, and a policy that samples errors
  at 10% FAILs by a wide margin. Finance events are not driven (that would be a payment):
  the ones the run produced must declare ``sample_rate`` 1 (or none).

False-positive controls (docs/phases.md#verdicts): the first ``burn_in_probe_events`` probes are sent
but never judged (cold connections, cold emitter); the store's copy of each arrived probe
is compared with what the probe app answered (method A) — trace id, status, app and route —
and below ``thresholds.agreement_min`` agreement the sampling verdicts are INCONCLUSIVE,
not PASS or FAIL: a store that disagrees with direct observation cannot convict or clear.
Arrival latency is the event's own timestamp to the store's ``received_at`` when the store
reports it, else to the first poll that saw the event (resolution ``poll_interval_s``).

The probes are writes: in ``prod`` they are sent only under a ``production_write``
approval covering the probe app. Without one nothing is sent, the probe evidence is empty
and says why, and every check the probes feed (sampling, dual source, arrival) is
BLOCKED with the refusal; the finance and acceptance checks only read and still run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import latency_check, rate_check, share_check, value_check
from readiness.phasekit.context import Phase, part, production_writes_allowed
from readiness.phases.telemetry.contract import run_window
from readiness.probe.client import GuardedClient
from readiness.probe.telemetry_store import TelemetryUnavailable, event_epoch, iso, parse_ts
from readiness.report.charts import ecdf_chart, save_chart
from readiness.report.markdown import checks_frame
from readiness.stats.latency import ecdf, percentile_summary

PROBES = "evidence/telemetry_probes.parquet"
PROBE_WINDOW = "evidence/telemetry_probe_window.json"
BURN_IN = "evidence/telemetry_burn_in.json"  # written by 00_inventory's burn-in
ACCEPTANCE = "evidence/telemetry_acceptance.json"
ARRIVAL_CHART = "telemetry_arrival_ecdf"
PROBE_EVENT = "cta_impression"
ERROR_VALUE = "render_timeout"
BLOCKABLE = (("telemetry.controls.dual_source", "the store's copy of each probe matches the app's answer"),
             ("telemetry.sampling.success_share", "success events arrive at the sampling rate"),
             ("telemetry.sampling.success_rate_declared", "sampled events declare the sampling rate"),
             ("telemetry.sampling.errors_complete", "error events arrive at 100%"),
             ("telemetry.arrival.latency", "events reach the store within the arrival threshold"))
PROBE_COLUMNS = {"trace_id": "object", "kind": "object", "window": "object", "sent_at": "float64", "status": "Int64",
                 "ok": "bool", "error": "object", "arrived": "bool", "b_status": "Int64", "b_app": "object",
                 "b_route": "object", "sample_rate": "float64", "arrival_ms": "float64", "arrival_source": "object"}
QUIET_POLLS = 2  # polls without a new arrival before the wait ends (all error probes seen)


def _plan(successes: int, errors: int, burn_in: int) -> list[tuple[str, str]]:
    """(kind, window) per probe: burn-in first (alternating), then errors spread evenly among
    the successes with an error last, so its arrival marks the end of the stream."""
    plan = [("error" if i % 2 else "success", "burn_in") for i in range(burn_in)]
    total = successes + errors
    error_at = {round((i + 1) * total / errors) - 1 for i in range(errors)} if errors else set()
    return plan + [("error" if i in error_at else "success", "measured") for i in range(total)]


@part("sampling")
def drive_probes(phase: Phase) -> pd.DataFrame:
    """Send the probes through the probe app and poll the store for them (bounded wait)."""
    p = phase.params
    c = p.telemetry_contract
    app = p.app(c.probe_app)
    refusal = production_writes_allowed(phase, "telemetry sampling probes", (app.id,))
    if refusal:
        now = iso(dt.datetime.now(dt.UTC))
        phase.run.write_frame(PROBES, pd.DataFrame({k: pd.Series(dtype=t) for k, t in PROBE_COLUMNS.items()}))
        phase.run.write_json(PROBE_WINDOW, {"start": now, "end": now, "probe_app": app.id, "route": c.impression_path,
                                            "store_error": None, "blocked": refusal})
        phase.record(_blocked(phase, refusal))
        return pd.DataFrame([{"status": "BLOCKED", "reason": refusal}])
    plan = _plan(c.sampling_probe_events, c.error_probe_events, c.burn_in_probe_events)
    traces = [uuid.uuid4().hex for _ in plan]
    start = dt.datetime.now(dt.UTC)

    async def go() -> tuple[list[dict[str, Any]], dict[str, tuple[float, dict[str, Any]]], str | None, float]:
        seen: dict[str, tuple[float, dict[str, Any]]] = {}
        gate = asyncio.Semaphore(c.drive_concurrency)
        async with phase.client() as client:
            async def probe(i: int) -> dict[str, Any]:
                kind, window = plan[i]
                body = {**c.impression_body, **({c.error_field: ERROR_VALUE} if kind == "error" else {})}
                async with gate:
                    sent = time.time()
                    s = await client.post(app.url(c.impression_path), app=app.id, route=c.impression_path,
                                          json=body, headers={"X-Trace-Id": traces[i]}, idempotency_key=True,
                                          synthetic_identity=phase.synthetic_identity)
                return {"trace_id": traces[i], "kind": kind, "window": window, "sent_at": sent,
                        "status": s.status, "ok": bool(s.ok), "error": s.error}

            drive = asyncio.ensure_future(asyncio.gather(*(probe(i) for i in range(len(plan)))))
            problem = await _poll_arrivals(phase, client, start, set(traces), seen, drive, len(plan))
        return list(drive.result()), seen, problem, time.time()

    sent, seen, problem, end = aio.run(go())
    rows = [_row(r, seen.get(r["trace_id"]), c.sampling_success_rate) for r in sent]
    df = pd.DataFrame(rows)
    phase.run.write_frame(PROBES, df)
    phase.run.write_json(PROBE_WINDOW, {"start": iso(start), "end": iso(dt.datetime.fromtimestamp(end, dt.UTC)),
                                        "probe_app": app.id, "route": c.impression_path, "store_error": problem,
                                        "poll_interval_s": c.poll_interval_s, "plan": {
                                            "success": c.sampling_probe_events, "error": c.error_probe_events,
                                            "burn_in": c.burn_in_probe_events}})
    return df.groupby(["window", "kind"]).agg(sent=("ok", "size"), acknowledged=("ok", "sum"),
                                              arrived=("arrived", "sum")).reset_index()


def _blocked(phase: Phase, refusal: str, ids: set[str] | None = None) -> list[Check]:
    """The probe-fed checks (or those of ``ids``), BLOCKED: the probes were never sent."""
    app = phase.params.telemetry_contract.probe_app
    return [Check(id=cid, phase=phase.name, status=Status.BLOCKED, title=title, app=app, tags=("observability",),
                  severity="P1", evidence=(PROBE_WINDOW,), detail=refusal)
            for cid, title in BLOCKABLE if ids is None or cid in ids]


def _refusal(phase: Phase) -> str | None:
    """Why :func:`drive_probes` sent nothing in this run, if it did not."""
    path = phase.run.path(PROBE_WINDOW)
    return json.loads(path.read_text()).get("blocked") if path.exists() else None


async def _poll_arrivals(phase: Phase, client: GuardedClient, start: dt.datetime, wanted: set[str],
                         seen: dict[str, tuple[float, dict[str, Any]]], drive: asyncio.Future[list[dict[str, Any]]],
                         n: int) -> str | None:
    """Poll the store while the probes run and after: note when each probe event is first seen.

    Polling starts with the drive so that "first seen" measures arrival, not the length of
    the drive. It ends once every acknowledged error probe (never sampled) has arrived and
    ``QUIET_POLLS`` polls brought nothing new, or ``telemetry_arrival_s`` after the drive —
    the deadline past which a missing event counts as lost. Returns the store's error, if any.
    """
    p = phase.params
    c = p.telemetry_contract
    source = phase.telemetry(client)
    loop = asyncio.get_running_loop()
    give_up: float | None = None
    quiet = 0
    while True:
        try:
            rows = await source.events(since=start - dt.timedelta(seconds=1),
                                       until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1),
                                       app_id=c.probe_app, event_type=PROBE_EVENT, limit=2 * n + 100)
        except TelemetryUnavailable as exc:
            await drive
            return str(exc)
        now = time.time()
        fresh = {r["trace_id"]: r for r in rows if r.get("trace_id") in wanted and r["trace_id"] not in seen}
        seen.update({t: (now, r) for t, r in fresh.items()})
        if drive.done():
            if give_up is None:
                give_up = loop.time() + p.thresholds.telemetry_arrival_s
            quiet = 0 if fresh else quiet + 1
            errors = {r["trace_id"] for r in drive.result() if r["kind"] == "error" and r["ok"]}
            if (errors <= seen.keys() and quiet >= QUIET_POLLS) or loop.time() >= give_up:
                return None
        await asyncio.sleep(c.poll_interval_s)



def _row(sent: dict[str, Any], seen: tuple[float, dict[str, Any]] | None, rate: float) -> dict[str, Any]:
    """One probe as evidence: what the app answered (A) next to what the store holds (B)."""
    out = {**sent, "arrived": seen is not None, "b_status": None, "b_app": None, "b_route": None,
           "sample_rate": None, "arrival_ms": np.nan, "arrival_source": None}
    if seen is None:
        return out
    first_seen, event = seen
    stamp, received = event_epoch(event.get("timestamp")), event_epoch(event.get("received_at"))
    if stamp is not None:
        arrived_at, source = (received, "received_at") if received is not None else (first_seen, "first_poll")
        out.update(arrival_ms=max(0.0, (arrived_at - stamp) * 1000), arrival_source=source)
    out.update(b_status=event.get("status"), b_app=event.get("app_id"), b_route=event.get("route"),
               sample_rate=event.get("sample_rate"))
    return out


def load_probes(phase: Phase) -> pd.DataFrame:
    return pd.read_parquet(phase.run.path(PROBES))


@part("sampling")
def sampling(phase: Phase, lookback_s: float = 0.0) -> pd.DataFrame:
    """Dual-source agreement, success share, declared rate, errors and finance at 100%."""
    p = phase.params
    c, t = p.telemetry_contract, p.thresholds
    refusal = _refusal(phase)
    if refusal:
        checks = [*_blocked(phase, refusal, {cid for cid, _ in BLOCKABLE[:4]}), _finance(phase, lookback_s)]
        phase.record(checks)
        return checks_frame(checks)
    df = load_probes(phase)
    win = json.loads(phase.run.path(PROBE_WINDOW).read_text())
    window = f"{win['start']}/{win['end']}"
    common = dict(phase=phase.name, window=window, app=c.probe_app, evidence=(PROBES, PROBE_WINDOW),
                  tags=("observability",))
    m = df[df.window == "measured"]
    burn = int((df.window == "burn_in").sum())
    arrived = m[m.arrived]
    agree = int(((arrived.b_status == arrived.status) & (arrived.b_app == c.probe_app)
                 & (arrived.b_route == c.impression_path)).sum())
    dual = rate_check(id="telemetry.controls.dual_source", title="the store's copy of each probe matches the "
                      "app's answer (trace, status, app, route)", successes=agree, n=len(arrived),
                      target=t.agreement_min, confidence=t.confidence, severity="P1",
                      detail=f"{burn} burn-in probes sent and not judged" + (
                          f"; store error: {win['store_error']}" if win["store_error"] else ""), **common)
    success = m[(m.kind == "success") & m.ok]
    errors = m[(m.kind == "error") & m.ok]
    unacked = int((~m.ok).sum())
    note = f"{unacked} probes not acknowledged by {c.probe_app} left out" if unacked else ""
    got = success[success.arrived]
    share = share_check(id="telemetry.sampling.success_share",
                        title=f"{PROBE_EVENT} success events arrive at {c.sampling_success_rate:.0%}",
                        arrived=len(got), n=len(success), rate=c.sampling_success_rate,
                        margin=c.sampling_share_margin, severity="P2", **common)
    wrong_rate = int((~np.isclose(got.sample_rate.astype(float), c.sampling_success_rate)).sum()) if len(got) else 0
    declared = value_check(id="telemetry.sampling.success_rate_declared",
                           title=f"sampled events declare sample_rate {c.sampling_success_rate:g}",
                           observed=wrong_rate if len(got) else None, expected=0, unit="events", n=len(got),
                           detail=f"{wrong_rate}/{len(got)} arrived events declare another rate", **common)
    errs = rate_check(id="telemetry.sampling.errors_complete", title="error events arrive at 100%",
                      successes=int(errors.arrived.sum()), n=len(errors), target=t.telemetry_acceptance_min,
                      confidence=t.confidence, severity="P1", detail=note, **common)
    gated = [_gate(ch, dual) for ch in (share, declared, errs)]
    checks = [dual, *gated, _finance(phase, lookback_s)]
    phase.record(checks)
    return checks_frame(checks)


def _gate(check: Check, dual: Check) -> Check:
    """When the store's copies agree with the app's answers less often than ``agreement_min``,
    a store-based PASS or FAIL becomes INCONCLUSIVE. Too few copies to bound the agreement
    is not disagreement: a store that lost almost everything must still FAIL."""
    below = isinstance(dual.observed, float) and isinstance(dual.threshold, float) and dual.observed < dual.threshold
    if not below or check.status not in (Status.PASS, Status.FAIL):
        return check
    return check.with_status(Status.INCONCLUSIVE, f"{check.detail}; was {check.status}, but dual-source agreement "
                             f"{dual.observed:.1%} is below {dual.threshold:.0%} ({dual.id}), so the store cannot "
                             "decide")


def _finance(phase: Phase, lookback_s: float) -> Check:
    """Finance events of the run must declare no sampling (``sample_rate`` absent or 1)."""
    p = phase.params
    c = p.telemetry_contract
    since, until = run_window(phase, lookback_s)

    async def go() -> list[dict[str, Any]]:
        async with phase.client() as client:
            source = phase.telemetry(client)
            return [e for t in c.finance_events for e in await source.events(since=since, until=until, event_type=t)]

    try:
        events, problem = aio.run(go()), ""
    except TelemetryUnavailable as exc:
        events, problem = [], f"store error: {exc}"
    full = sum(1 for e in events if e.get("sample_rate") in (None, 1, 1.0))
    detail = problem or ("no finance events in the run window (run 05_monetization first)" if not events
                         else f"{len(events) - full} finance events declare a sample_rate below 1")
    return rate_check(id="telemetry.sampling.finance_complete", phase=phase.name,
                      title="finance events are never sampled",
                      successes=full, n=len(events), target=p.thresholds.telemetry_acceptance_min,
                      confidence=p.thresholds.confidence, severity="P1", window=f"{iso(since)}/{iso(until)}",
                      tags=("observability",), detail=detail)


@part("sampling")
def arrival(phase: Phase) -> pd.DataFrame:
    """Arrival latency of the probes that arrived, against ``thresholds.telemetry_arrival_s``."""
    p = phase.params
    c, t = p.telemetry_contract, p.thresholds
    refusal = _refusal(phase)
    if refusal:
        phase.record(_blocked(phase, refusal, {"telemetry.arrival.latency"}))
        return pd.DataFrame([{"status": "BLOCKED", "reason": refusal}])
    df = load_probes(phase)
    got = df[(df.window == "measured") & df.arrived]
    samples = got.arrival_ms.to_numpy(dtype=float)
    sources = sorted(set(got.arrival_source.dropna()))
    how = ("to the store's received_at" if sources == ["received_at"] else
           f"to the first poll that saw the event (resolution {c.poll_interval_s:g} s)")
    win = json.loads(phase.run.path(PROBE_WINDOW).read_text())
    check = latency_check(id="telemetry.arrival.latency", phase=phase.name,
                          title=f"events reach the store within {t.telemetry_arrival_s:g} s",
                          samples_ms=samples, threshold_ms=t.telemetry_arrival_s * 1000, q=c.arrival_quantile,
                          confidence=t.confidence, app=p.telemetry_app, tags=("observability",), severity="P1",
                          window=f"{win['start']}/{win['end']}", evidence=(PROBES,),
                          detail=f"event timestamp {how}")
    phase.record([check])
    rows = [r.to_dict() for r in percentile_summary(samples, (0.5, 0.95, c.arrival_quantile), t.confidence)]
    return pd.DataFrame(rows).set_index("percentile")[["estimate", "low", "high", "upper", "n", "needs_n"]]


@part("sampling")
def arrival_chart(phase: Phase) -> alt.LayerChart | Markdown:
    """ECDF of arrival latency (ms), the threshold as a rule; saved under charts/.

    With no arrival to draw (probes blocked, or none arrived) a note says so instead.
    """
    df = load_probes(phase)
    got = df[(df.window == "measured") & df.arrived]
    if got.empty:
        why = _refusal(phase) or "no measured probe reached the store"
        return Markdown(f"No arrival latency to chart: {why}.")
    arrivals = got.arrival_ms.to_numpy(dtype=float)
    early = int((arrivals < 0).sum())  # the store's clock ahead of the app's: drawn at 0, and said
    curve = ecdf(np.clip(arrivals, 0.0, None)).assign(series="probe events")
    chart = ecdf_chart(curve, threshold_ms=phase.params.thresholds.telemetry_arrival_s * 1000,
                       title="Telemetry arrival latency (event timestamp → store)"
                             + (f" ({early} arrived 'before' they were sent: clock skew, drawn at 0 ms)" if early else ""))
    save_chart(phase.run, ARRIVAL_CHART, chart)
    return chart


def acceptance(phase: Phase) -> pd.DataFrame:
    """The store's own ingest counts over the inventory's burn-in window: (accepted + duplicates)
    / received must reach ``thresholds.telemetry_acceptance_min``."""
    p = phase.params
    path = phase.run.path(BURN_IN)
    burn = json.loads(path.read_text()) if path.exists() else None
    stats: dict[str, int] | None = None
    problem = "" if burn else "no burn-in evidence in this run (00_inventory posts it)"
    if burn:
        start, end = (parse_ts(x) for x in burn["window"].split("/"))

        async def go() -> dict[str, int]:
            async with phase.client() as client:
                return await phase.telemetry(client).stats(since=start, until=end + dt.timedelta(seconds=1))

        try:
            stats = aio.run(go())
        except TelemetryUnavailable as exc:
            problem = f"store error: {exc}"
    kept = (stats["accepted"] + stats["duplicates"]) if stats else 0
    received = stats["received"] if stats else 0
    direct = (f"suite posted {burn['posted']}, store acknowledged {burn['accepted']}, read back {burn['stored']}"
              if burn else "")
    target = p.thresholds.telemetry_acceptance_min
    check = rate_check(id="telemetry.acceptance.burn_in", phase=phase.name,
                       title=f"the store accepts ≥ {target:.0%} of events over the burn-in",
                       successes=kept, n=received, target=p.thresholds.telemetry_acceptance_min,
                       confidence=p.thresholds.confidence, app=p.telemetry_app, tags=("observability",),
                       severity="P1", window=burn["window"] if burn else None, evidence=(BURN_IN, ACCEPTANCE),
                       detail="; ".join(x for x in (problem, direct) if x))
    phase.run.write_json(ACCEPTANCE, {"burn_in": burn, "store_stats": stats, "problem": problem or None})
    phase.record([check])
    return checks_frame([check])
