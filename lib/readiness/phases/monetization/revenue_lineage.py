"""Phase 05, second half: the revenue lineage of the synthetic checkout, and the phase's reports.

The checkout of :mod:`readiness.phases.monetization.checkout` left its trace in the run folder; from it
this module follows the money downstream — ``checkout_completed`` and
``revenue_settled`` in the telemetry store (arrival time, finance fields), then the
finance tiles (the synthetic revenue must be visible in diagnostics and absent from the
live revenue tile) — and writes ``b2c_checkout_results.json``, ``a8_data_lineage.md``
and the lineage chart. A tile the telemetry store does not have yet makes its check
INCONCLUSIVE, naming the tiles it does have.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import altair as alt
import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import value_check
from readiness.phasekit.context import Phase, part
from readiness.phases.monetization.checkout import TRACE, json_body, load_trace, no_checkout
from readiness.probe.telemetry_store import TelemetryUnavailable, iso
from readiness.report.charts import STATUS_COLOURS, save_chart
from readiness.report.markdown import checks_table, header, md_table, status_line

LINEAGE = "evidence/revenue_lineage_events.json"
TILES = "evidence/finance_tiles_after_checkout.json"
EVENTS = ("checkout_completed", "revenue_settled")
LIVE_TILE, DIAG_TILE = "finance_revenue_live", "finance_revenue_diagnostics"
POLL_S = 0.25


def _since(completion: dict[str, Any]) -> float:
    return float(completion["completed_epoch"])


async def _poll(probe: Any, start: float, limit_s: float) -> tuple[Any, float]:
    """Call ``probe()`` until it returns a truthy value or ``limit_s`` after ``start``; (value, seconds)."""
    while True:
        value = await probe()
        elapsed = time.time() - start
        if value or elapsed >= limit_s:
            return value, elapsed
        await asyncio.sleep(POLL_S)


def verify_revenue_arrival(phase: Phase) -> pd.DataFrame:
    """``checkout_completed`` and ``revenue_settled`` reach the telemetry store in time, with the finance fields."""
    trace = load_trace(phase) or {}
    completion, limit = trace.get("completion"), phase.params.thresholds.telemetry_arrival_s
    ids = [f"monetization.lineage.{e}_arrival" for e in EVENTS] + ["monetization.lineage.revenue_fields"]
    if not completion:
        phase.record(no_checkout(phase, ids))
        return pd.DataFrame()
    start, trace_id = _since(completion), completion["trace_id"]
    window_from = dt.datetime.fromtimestamp(start - 5, dt.UTC)

    async def go() -> dict[str, Any]:
        async with phase.client() as client:
            source, found = phase.telemetry(client), {}
            for event_type in EVENTS:
                async def probe(event_type: str = event_type) -> dict[str, Any] | None:
                    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
                    rows = await source.events(since=window_from, until=until, event_type=event_type)
                    return next((r for r in rows if r.get("trace_id") == trace_id), None)
                event, elapsed = await _poll(probe, start, limit)
                found[event_type] = {"event": event, "seconds": round(elapsed, 3)}
            return found

    try:
        found, failure = aio.run(go()), None
    except TelemetryUnavailable as exc:
        found, failure = {}, str(exc)
    phase.run.write_json(LINEAGE, {"trace_id": trace_id, "poll_s": POLL_S, "limit_s": limit, "found": found,
                                   "failure": failure})
    common = {"phase": phase.name, "app": phase.params.telemetry_app, "tags": ("observability", "monetization"),
              "severity": "P1", "evidence": (TRACE, LINEAGE)}
    checks = []
    for event_type, cid in zip(EVENTS, ids, strict=False):
        got = found.get(event_type, {})
        seen = got.get("event") is not None
        checks.append(value_check(
            id=cid, title=f"{event_type} reaches the telemetry store within {limit:g} s", unit="s",
            observed=got.get("seconds") if got else None, expected=limit, comparator="<=",
            detail=failure or (f"seen {got['seconds']} s after the checkout answered (poll every {POLL_S} s)"
                               if seen else f"not seen after waiting {got.get('seconds')} s"), **common))
    revenue = (found.get("revenue_settled") or {}).get("event") or {}
    expected = {"amount_cents": completion.get("amount_cents"), "currency": completion.get("currency"),
                "stripe_mode": completion.get("stripe_mode")}
    fields = {**{k: (revenue.get("finance_metrics") or {}).get(k) for k in expected},
              "revenue_event_id": revenue.get("revenue_event_id")}
    wanted = {**expected, "revenue_event_id": completion.get("revenue_event_id")}
    wrong = [f"{k}={fields[k]!r} (expected {v!r})" for k, v in wanted.items() if fields[k] != v]
    checks.append(value_check(
        id=ids[2], title="revenue_settled carries the payment's finance_metrics and revenue_event_id", unit="fields",
        observed=len(wanted) - len(wrong) if revenue else None, expected=len(wanted),
        detail=("mismatched: " + ", ".join(wrong)) if wrong and revenue else failure or "", **common))
    phase.record(checks)
    return pd.DataFrame([{"event": e, "seen": (found.get(e) or {}).get("event") is not None,
                          "seconds": (found.get(e) or {}).get("seconds")} for e in EVENTS]).set_index("event")


def _tile(tiles: list[dict[str, Any]], tile_id: str) -> dict[str, Any] | None:
    return next((t for t in tiles if isinstance(t, dict) and t.get("id") == tile_id), None)


@part("command_center")
def check_finance_tiles(phase: Phase) -> pd.DataFrame:
    """The synthetic revenue shows in the diagnostics tile and stays out of the live revenue tile."""
    trace = load_trace(phase) or {}
    completion, limit = trace.get("completion"), phase.params.thresholds.telemetry_arrival_s
    ids = ("monetization.tiles.diagnostics_visible", "monetization.tiles.live_excludes_synthetic")
    common = {"phase": phase.name, "app": phase.params.telemetry_app, "severity": "P1",
              "tags": ("data_protection", "observability", "monetization"), "evidence": (TRACE, TILES)}
    if not completion:
        phase.record(no_checkout(phase, ids, common["tags"]))
        return pd.DataFrame()
    a8, trace_id = phase.params.app(phase.params.telemetry_app), completion["trace_id"]
    state: dict[str, Any] = {"tiles": [], "error": None}

    async def go() -> float:
        async with phase.client() as client:
            async def probe() -> bool:
                s = await client.get(a8.url("/api/tiles"), app=a8.id, route="/api/tiles", keep_body=True)
                body = json_body(s, 200)
                state["tiles"] = body.get("tiles", []) if body else []
                state["error"] = None if body else f"GET /api/tiles → {s.status or s.error}"
                diag = _tile(state["tiles"], DIAG_TILE)
                return diag is None or trace_id in (diag.get("recent_trace_ids") or [])
            _, elapsed = await _poll(probe, _since(completion), limit)
            return elapsed

    elapsed = aio.run(go())
    live, diag = _tile(state["tiles"], LIVE_TILE), _tile(state["tiles"], DIAG_TILE)
    visible = diag is not None and trace_id in (diag.get("recent_trace_ids") or [])
    phase.run.write_json(TILES, {"trace_id": trace_id, "seconds": round(elapsed, 3), "visible_in_diagnostics": visible,
                                 "tiles": [t for t in (live, diag) if t is not None], "error": state["error"]})
    listed = ", ".join(str(t.get("id")) for t in state["tiles"] if isinstance(t, dict)) or "none"

    def missing(cid: str, title: str, tile_id: str) -> Check:
        why = state["error"] or f"the telemetry store has no tile {tile_id!r} (tiles: {listed})"
        return Check(id=cid, title=title, status=Status.INCONCLUSIVE, detail=why, **common)

    t_diag = f"synthetic revenue visible in {DIAG_TILE} within {limit:g} s"
    t_live = f"synthetic revenue excluded from {LIVE_TILE}"
    diag_check = missing(ids[0], t_diag, DIAG_TILE) if diag is None else value_check(
        id=ids[0], title=t_diag, observed=round(elapsed, 3), expected=limit, comparator="<=", unit="s",
        detail=f"shown after {elapsed:.2f} s" if visible else f"trace {trace_id} not listed after {elapsed:.2f} s",
        **common)
    if live is None:
        live_check = missing(ids[1], t_live, LIVE_TILE)
    elif not visible:
        live_check = Check(id=ids[1], title=t_live, status=Status.INCONCLUSIVE, **common,
                           detail="cannot tell: the diagnostics tile never showed this payment, so the tiles may "
                                  "not have counted it yet")
    else:
        leaked = trace_id in (live.get("recent_trace_ids") or [])
        live_check = value_check(id=ids[1], title=t_live, observed=not leaked, expected=True, **common,
                                 detail=f"trace {trace_id} {'is' if leaked else 'is not'} among the live tile's "
                                        f"recent_trace_ids; labels {live.get('labels')}")
    phase.record([diag_check, live_check])
    return pd.DataFrame([{"tile": t, "present": x is not None, "lists_payment": x is not None and trace_id in
                          (x.get("recent_trace_ids") or [])} for t, x in ((DIAG_TILE, diag), (LIVE_TILE, live))])


RESULTS = "reports/b2c_checkout_results.json"
REPORT = "reports/a8_data_lineage.md"
CHART = "monetization_revenue_lineage"
STAGES = (("A5 checkout session", "monetization.checkout.session_created"),
          ("Stripe payment", "monetization.checkout.stripe_confirmed"),
          ("A5 credit ledger", "monetization.ledger.credited"),
          ("A8 checkout_completed", "monetization.lineage.checkout_completed_arrival"),
          ("A8 revenue_settled", "monetization.lineage.revenue_settled_arrival"),
          ("A8 diagnostics tile", "monetization.tiles.diagnostics_visible"),
          ("A8 live tile excludes it", "monetization.tiles.live_excludes_synthetic"))


def lineage_stages(phase: Phase) -> pd.DataFrame:
    """One row per lineage stage: seconds after the checkout began, and the verdict of its check."""
    trace, checks = load_trace(phase) or {}, {c.id: c for c in phase.run.read_checks(phase.name)}
    steps = {s["step"]: s for s in trace.get("steps", [])}
    t0 = steps.get("create_session", {}).get("started_at")
    comp = trace.get("completion") or {}
    done = comp.get("completed_epoch")
    extra = {}
    for path in (LINEAGE, TILES):
        extra[path] = json.loads(phase.run.path(path).read_text()) if phase.run.path(path).exists() else {}
    found = extra[LINEAGE].get("found") or {}
    arrival = [found.get(e, {}).get("seconds") if found.get(e, {}).get("event") else None for e in EVENTS]
    tile_s = extra[TILES].get("seconds") if extra[TILES].get("visible_in_diagnostics") else None
    created = steps.get("create_session", {})
    ends = [t0 + (created.get("total_ms") or 0) / 1000 if t0 else None, done, done,
            *[done + s if done and s is not None else None for s in arrival],
            done + tile_s if done and tile_s is not None else None, done + tile_s if done and tile_s else None]
    rows = []
    for (stage, cid), end in zip(STAGES, ends, strict=True):
        check = checks.get(cid)
        rows.append({"stage": stage, "seconds": round(end - t0, 3) if end is not None and t0 else None,
                     "status": str(check.status) if check else "not run", "check": cid})
    return pd.DataFrame(rows)


def _lineage_chart(stages: pd.DataFrame, limit_at: float | None) -> alt.LayerChart:
    data = stages.assign(x=stages["seconds"].fillna(0.0),
                         label=[f"{s} · {'not reached' if pd.isna(t) else f'{t:.2f} s'}"
                                for s, t in zip(stages["status"], stages["seconds"], strict=True)])
    domain = [s for s in STATUS_COLOURS if s in set(data["status"])] + sorted(set(data["status"]) - set(STATUS_COLOURS))
    scale = alt.Scale(domain=domain, range=[STATUS_COLOURS.get(s, "#000") for s in domain])
    colour = alt.Color("status:N", scale=scale)
    base = alt.Chart(data).encode(x=alt.X("x:Q", title="seconds after the checkout began"),
                                  y=alt.Y("stage:N", sort=None, title=None))
    layers = [base.mark_line(color="#9e9e9e"), base.mark_point(filled=True, size=140).encode(color=colour),
              base.mark_text(align="left", dx=10).encode(text="label:N")]
    if limit_at is not None:
        rule = pd.DataFrame([{"x": limit_at, "label": "arrival limit"}])
        layers.append(alt.Chart(rule).mark_rule(strokeDash=[4, 4], color="#c62828").encode(x="x:Q"))
    return alt.layer(*layers).properties(width=520, height=220, title="Revenue lineage of the synthetic checkout")


def write_reports(phase: Phase) -> Markdown:
    """``b2c_checkout_results.json``, ``a8_data_lineage.md`` and the lineage chart, from the recorded checks."""
    trace, checks = load_trace(phase) or {}, phase.run.read_checks(phase.name)
    stages, comp = lineage_stages(phase), (trace.get("completion") or {})
    steps = {s["step"]: s for s in trace.get("steps", [])}
    t0, limit = steps.get("create_session", {}).get("started_at"), phase.params.thresholds.telemetry_arrival_s
    limit_at = comp["completed_epoch"] - t0 + limit if comp.get("completed_epoch") and t0 else None
    charts = save_chart(phase.run, CHART, _lineage_chart(stages, limit_at)) if stages["seconds"].notna().any() else []
    keep = ("session_id", "payment_intent", "amount_cents", "currency", "stripe_mode", "credits_granted",
            "revenue_event_id", "trace_id", "completed_at")
    phase.run.write_json(RESULTS, {
        "generated_at": iso(dt.datetime.now(dt.UTC)), "price": trace.get("price"),
        "checkout": {k: comp.get(k) for k in keep} if comp else None,
        "payment_at_stripe": trace.get("payment_at_stripe"),
        "stripe_mode": (trace.get("stripe") or {}).get("mode"), "arrival_limit_s": limit,
        "stages": stages.to_dict(orient="records"), "summary": status_line(checks),
        "checks": [c.to_dict() for c in checks], "evidence": [TRACE, LINEAGE, TILES, *charts]})
    table = md_table(["stage", "seconds after start", "verdict", "check"],
                     [(r.stage, "—" if pd.isna(r.seconds) else f"{r.seconds:.2f}", r.status, f"`{r.check}`")
                      for r in stages.itertuples()])
    chart_md = f"![revenue lineage](../{charts[0]})\n\n" if charts else "No stage was reached: no chart.\n\n"
    text = (header("Revenue data lineage (Phase 05)", ecosystem=phase.params.ecosystem,
                   environment=phase.params.environment, run_name=phase.run.root.name,
                   profile_note=phase.params.profile_note)
            + "\nA synthetic micro-checkout (checkout → Stripe → ledger → telemetry → finance tiles), traced by "
              f"`{comp.get('trace_id', '—')}`; every event must reach the telemetry store within {limit:g} s. "
              f"Stripe mode: **{(trace.get('stripe') or {}).get('mode', '—')}**; the payment used a Stripe test "
              "payment method id, no card number; no key is recorded.\n\n"
            + "## Stages\n\n" + table + "\n\n" + chart_md + "## Checks\n\n" + checks_table(checks) + "\n")
    phase.run.write_text(REPORT, text)
    return Markdown(f"Written: `{RESULTS}`, `{REPORT}`" + (f", `{charts[0]}`" if charts else "") + ".")
