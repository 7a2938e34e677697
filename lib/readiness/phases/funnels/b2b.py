"""Phase 04 B2B funnel: provider journeys under k6, and the billing lineage recomputed to the cent.

k6 (run by :mod:`readiness.probe.k6run`, the library's one k6 runner) runs ``params.b2b.provider_signups``
journeys of ``k6/b2b_funnel.js``: the landing page (A7), provider signup, a published
listing read back, and one AI usage charge (A6). Its raw points (gzipped JSON lines) and
``--summary-export`` are parsed into one row per journey; k6's exit code 99 and the
``true`` values of its summary's thresholds (a *crossed* threshold) are recorded, but the
verdicts come from the points: the signup rate is judged with Wilson against
``thresholds.funnel_success_min``.

Billing is recomputed independently of the target, in exact :class:`~decimal.Decimal`
integer cents, from the rule in the params (``b2b.fee_pct``, ``b2b.ai_markup_x``):
``ai_charge = round(base × markup)``, ``ai_markup = ai_charge − base``,
``provider_fee = round(ai_charge × fee_pct / 100)``, ``total = ai_charge + provider_fee``,
where each ``round`` is half up to a whole cent. Every charge is compared with what A6
answered, with the ``finance_metrics`` of its billing event in the telemetry store, and
the store's ``b2b_billing`` tile must include the charges (INCONCLUSIVE when it has no
such tile).

The journeys write (signups, listings, charges), so in ``prod`` k6 starts only under a
``production_write`` approval covering the landing and portal apps; without one nothing is
sent, the evidence says why and every ``funnels.b2b.*`` check is BLOCKED with the refusal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
import time
import uuid
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pandas as pd

import readiness
from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import rate_check, value_check
from readiness.phasekit.context import Phase, part, production_writes_allowed
from readiness.probe.k6run import THRESHOLD_FAILED, request_timeout_s, run_k6
from readiness.probe.telemetry_store import TelemetryUnavailable
from readiness.report.markdown import checks_table, header, md_table

SCRIPT = Path(readiness.__file__).resolve().parent / "k6" / "b2b_funnel.js"
POINTS = "evidence/b2b_k6_points.json.gz"
SUMMARY = "evidence/b2b_k6_summary.json"
LOG = "evidence/b2b_k6.log"
JOURNEYS = "evidence/b2b_journeys.parquet"
LINEAGE = "evidence/b2b_billing_lineage.json"
RESULTS = "reports/b2b_funnel_results.json"
VERIFICATION = "reports/billing_logic_verification.md"
RECOVERY = "reports/b2b_recovery.md"
STEPS = ("landing", "register", "listing", "listing_readback", "billing")
LINES = ("base_cost_cents", "ai_charge_cents", "ai_markup_cents", "provider_fee_cents", "total_cents")
TAGS = ("reliability", "dependency_health", "test_quality")
FIXES = {
    "signup_rate": "Check A6 provider registration (POST register_path): contract headers, validation errors "
                   "and the app log for the failing journeys' trace ids (evidence/b2b_k6_points.json.gz).",
    "listing_published": "Listings must be stored as published and readable at the Location A6 answers; check "
                         "the listing create route and its read-back route.",
    "billing_lineage": "A6 must bill ai_charge = base × markup and fee = charge × fee_pct / 100, each rounded "
                       "half up to the cent, in Decimal arithmetic; compare its configured fee and markup with "
                       "params b2b.fee_pct / b2b.ai_markup_x (sandbox: DELETE /admin/faults restores 3% / 4x).",
    "billing_events": "A6's billing event must carry finance_metrics equal to the charge it answered "
                      "(provider_fee_cents, ai_markup_cents, amount_cents, currency) and reach the telemetry store "
                      "within the arrival threshold.",
    "billing_tile": "The telemetry store's b2b_billing tile must sum provider_fee_cents and ai_markup_cents of the "
                    "billing events and list their trace ids in recent_trace_ids.",
}


def expected_lineage(base_cost_cents: int, fee_pct: Decimal | float | str, markup_x: Decimal | float | str
                     ) -> dict[str, int]:
    """The charge the billing rule demands (see the module docstring), in integer cents."""
    if isinstance(base_cost_cents, bool) or not isinstance(base_cost_cents, int) or base_cost_cents < 0:
        raise ValueError(f"base_cost_cents must be a non-negative integer, got {base_cost_cents!r}")
    fee, markup = Decimal(str(fee_pct)), Decimal(str(markup_x))
    charge = int((Decimal(base_cost_cents) * markup).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    fee_cents = int((Decimal(charge) * fee / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return {"base_cost_cents": base_cost_cents, "ai_charge_cents": charge, "ai_markup_cents": charge - base_cost_cents,
            "provider_fee_cents": fee_cents, "total_cents": charge + fee_cents}


def parse_points(lines: list[str]) -> pd.DataFrame:
    """k6's JSON points (one object per line) of the funnel's own metrics, one row per point."""
    rows = []
    for line in lines:
        point = json.loads(line)
        metric = point.get("metric", "")
        if point.get("type") != "Point" or not metric.startswith("b2b_"):
            continue
        data = point["data"]
        rows.append({"metric": metric, "value": float(data["value"]), "time": data["time"], **data["tags"]})
    return pd.DataFrame(rows)


def journeys_frame(points: pd.DataFrame, n: int) -> pd.DataFrame:
    """One row per journey 0..n-1: a 0/1 column per step reached, and the billed lineage."""
    frame = pd.DataFrame(index=pd.RangeIndex(n, name="seq"))
    if points.empty:
        return frame.assign(**{s: 0 for s in STEPS})
    points = points.assign(seq=points["seq"].astype(int))
    steps = points[points.metric == "b2b_step"].pivot_table(index="seq", columns="step", values="value",
                                                            aggfunc="max")
    frame = frame.join(steps.reindex(columns=list(STEPS))).fillna(0).astype(int)
    lines = points[points.metric.isin([f"b2b_{x}" for x in LINES])]
    if not lines.empty:
        wide = lines.pivot_table(index=["seq", "charge_id", "trace_id", "fee_pct", "markup_x"], columns="metric",
                                 values="value", aggfunc="first").reset_index().set_index("seq")
        wide.columns = [str(c).removeprefix("b2b_") for c in wide.columns]
        frame = frame.join(wide)
        for line in LINES:
            if line in frame:
                frame[line] = frame[line].astype("Int64")
    return frame


def _k6_env(phase: Phase, run_token: str) -> dict[str, str]:
    p, b = phase.params, phase.params.b2b
    values = {"LANDING_URL": p.app(b.landing_app).url(b.landing_path), "PORTAL_URL": p.app(b.portal_app).base_url,
              "REGISTER_PATH": b.register_path, "LISTING_PATH": b.listing_path, "BILLING_PATH": b.billing_path,
              "N": str(b.provider_signups), "VUS": str(b.vus), "MAX_DURATION": f"{b.max_duration_s:g}s",
              "COSTS": ",".join(map(str, b.base_costs_cents)), "CURRENCY": b.currency, "RUN": run_token,
              "IDENTITY": p.synthetic.identities.get("provider", phase.synthetic_identity),
              "TAGS": json.dumps({**p.synthetic.tags, "env": "staging" if p.environment == "staging"
                                  else "prod_observe"}),
              "SIGNUP_MIN": f"{p.thresholds.funnel_success_min:g}",
              "TIMEOUT_S": f"{request_timeout_s(p):g}"}  # the client's limits, not k6's 60 s default
    return values


@part("b2b")
def run_b2b_funnel(phase: Phase) -> pd.DataFrame:
    """Run the k6 journeys, keep k6's points, summary and log as evidence; one row per journey."""
    b = phase.params.b2b
    for app_id in (b.landing_app, b.portal_app):
        phase.params.app(app_id)  # KeyError naming the app when b2b points at an unknown one
    run_token = f"qa-b2b-{uuid.uuid4().hex[:12]}"
    started = dt.datetime.now(dt.UTC)
    refusal = production_writes_allowed(phase, f"{b.provider_signups} synthetic provider journeys (k6)",
                                        tuple(sorted({b.landing_app, b.portal_app})))
    if refusal:
        phase.run.write_json(SUMMARY, {"exit_code": None, "thresholds_crossed": {}, "run_token": run_token,
                                       "started_at": started.isoformat(), "summary": {}, "blocked": refusal})
        journeys = journeys_frame(pd.DataFrame(), b.provider_signups)
        phase.run.write_frame(JOURNEYS, journeys.reset_index())
        phase.record(_blocked_checks(phase, refusal))
        return journeys
    with tempfile.TemporaryDirectory(prefix="readiness-b2b-") as tmp:
        k6 = run_k6(SCRIPT, workdir=Path(tmp), env=_k6_env(phase, run_token), timeout_s=b.max_duration_s + 60)
    phase.run.write_text(LOG, f"$ k6 run … {SCRIPT.name} (exit {k6.exit_code})\n\n{k6.log}")
    if k6.timed_out:
        raise RuntimeError(f"k6 did not finish within {b.max_duration_s + 60:g} s and was stopped; see {LOG}")
    if k6.exit_code not in (0, THRESHOLD_FAILED) or not k6.points_gz:
        raise RuntimeError(f"k6 exited with {k6.exit_code}; see {LOG}: {k6.log.strip()[-300:]}")
    phase.run.write_bytes(POINTS, k6.points_gz)
    phase.run.write_json(SUMMARY, {"exit_code": k6.exit_code, "thresholds_crossed": k6.thresholds,
                                   "run_token": run_token, "started_at": started.isoformat(), "summary": k6.summary})
    journeys = journeys_frame(parse_points(k6.point_lines()), b.provider_signups)
    phase.run.write_frame(JOURNEYS, journeys.reset_index())
    return journeys


async def _store_view(phase: Phase, trace_ids: set[str], since: dt.datetime) -> tuple[dict[str, Any], Any, str]:
    """The billing events of ``trace_ids`` (waiting up to the arrival threshold) and the tile, or why not."""
    b, deadline = phase.params.b2b, time.monotonic() + phase.params.thresholds.telemetry_arrival_s
    async with phase.client() as client:
        source, events = phase.telemetry(client), {}
        try:
            while True:
                found = await source.events(since=since, until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5),
                                            event_type=b.billing_event)
                events = {e["trace_id"]: e for e in found if e.get("trace_id") in trace_ids}
                if len(events) == len(trace_ids) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
        except TelemetryUnavailable as exc:
            return {}, None, f"telemetry store unavailable: {exc}"
        # A dashboard serves cached tiles: wait (within the same arrival threshold) until the tile
        # lists one of this run's billing traces, then judge the tile as it stands.
        while True:
            sample = await client.get(phase.params.app(phase.params.telemetry_app).url("/api/tiles"),
                                      app=phase.params.telemetry_app, route="/api/tiles", keep_body=True)
            tile = _tile(sample, b.tile_id)
            if tile is None or set(tile.get("recent_trace_ids") or []) & set(events) \
                    or not events or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    why = "" if tile else f"the telemetry store has no {b.tile_id!r} tile (GET /api/tiles → {sample.status})"
    return events, tile, why


def _tile(sample: Any, tile_id: str) -> dict[str, Any] | None:
    """The tile ``tile_id`` of a ``GET /api/tiles`` answer, or None."""
    try:
        tiles = sample.json().get("tiles", []) if sample.ok else []
    except (ValueError, AttributeError):
        tiles = []
    return next((t for t in tiles if isinstance(t, dict) and t.get("id") == tile_id), None)


def _blocked_checks(phase: Phase, refusal: str, names: tuple[str, ...] | None = None) -> list[Check]:
    """Every ``funnels.b2b.*`` check (or those of ``names``), BLOCKED with the refusal."""
    titles = {"signup_rate": "provider signup rate (k6 journeys)",
              "listing_published": "every signed-up provider's listing reads back as published",
              "billing_lineage": "A6 billing lineage matches the recomputed charge",
              "billing_events": "billing events carry the recomputed finance metrics",
              "billing_tile": "the b2b_billing tile includes the funnel's charges"}
    return [Check(id=f"funnels.b2b.{name}", phase=phase.name, title=titles[name], status=Status.BLOCKED, tags=TAGS,
                  severity="P1", evidence=(SUMMARY,), detail=refusal) for name in (names or tuple(titles))]


def _refusal(phase: Phase) -> str | None:
    """Why :func:`run_b2b_funnel` sent nothing in this run, if it did not."""
    path = phase.run.path(SUMMARY)
    return json.loads(path.read_text()).get("blocked") if path.exists() else None


@part("b2b")
def verify_billing(phase: Phase, journeys: pd.DataFrame) -> pd.DataFrame:
    """Recompute every billed charge and compare it with A6's answer and the stored event; record checks."""
    b = phase.params.b2b
    refusal = _refusal(phase)
    if refusal:
        phase.run.write_json(LINEAGE, {"rows": [], "tile": None, "blocked": refusal})
        checks = phase.record(_blocked_checks(phase, refusal, ("billing_lineage", "billing_events", "billing_tile")))
        _write_verification(phase, pd.DataFrame(), checks)
        return pd.DataFrame()
    billed = journeys[journeys["billing"] == 1] if "charge_id" in journeys else journeys.iloc[0:0]
    started = dt.datetime.fromisoformat(json.loads(phase.run.path(SUMMARY).read_text())["started_at"])
    events, tile, tile_why = aio.run(_store_view(phase, set(billed.get("trace_id", [])),
                                                 started - dt.timedelta(seconds=5)))
    rows = []
    for seq, j in billed.iterrows():
        want = expected_lineage(int(j["base_cost_cents"]), b.fee_pct, b.ai_markup_x)
        metrics = (events.get(j["trace_id"]) or {}).get("finance_metrics") or {}
        rows.append({"seq": seq, "charge_id": j["charge_id"], "trace_id": j["trace_id"],
                     **{f"expected_{x}": want[x] for x in LINES},
                     **{f"a6_{x}": int(j[x]) if pd.notna(j[x]) else None for x in LINES},
                     "a6_fee_pct": j["fee_pct"], "a6_markup_x": j["markup_x"],
                     "a8_provider_fee_cents": metrics.get("provider_fee_cents"),
                     "a8_ai_markup_cents": metrics.get("ai_markup_cents"), "a8_amount_cents": metrics.get("amount_cents"),
                     "a6_matches": all(want[x] == j[x] for x in LINES),
                     "a8_matches": bool(metrics) and metrics.get("provider_fee_cents") == want["provider_fee_cents"]
                     and metrics.get("ai_markup_cents") == want["ai_markup_cents"]
                     and metrics.get("amount_cents") == want["total_cents"] and metrics.get("currency") == b.currency})
    lineage = pd.DataFrame(rows)
    phase.run.write_json(LINEAGE, {"rows": rows, "tile": tile, "tile_unavailable": tile_why})
    checks = _billing_checks(phase, lineage, tile, tile_why)
    phase.record(checks)
    _write_verification(phase, lineage, checks)
    return lineage


def _check(phase: Phase, name: str, title: str, **kwargs: Any) -> Check:
    return value_check(id=f"funnels.b2b.{name}", phase=phase.name, title=title, tags=TAGS, severity="P1",
                       evidence=(POINTS, JOURNEYS, LINEAGE, VERIFICATION), **kwargs)


def _billing_checks(phase: Phase, lineage: pd.DataFrame, tile: Any, tile_why: str) -> list[Check]:
    n = len(lineage)
    b = phase.params.b2b
    rule = f"fee {b.fee_pct:g}% of the AI charge, markup {b.ai_markup_x:g}x, ROUND_HALF_UP to the cent"
    if not n:
        none = {"observed": None, "expected": 0, "detail": "no charge was billed by the funnel"}
        return [_check(phase, name, title, **none) for name, title in (
            ("billing_lineage", "A6 billing lineage matches the recomputed charge"),
            ("billing_events", "billing events carry the recomputed finance metrics"),
            ("billing_tile", "the b2b_billing tile includes the funnel's charges"))]
    bad_a6 = int((~lineage["a6_matches"]).sum())
    bad_a8 = int((~lineage["a8_matches"]).sum())
    checks = [
        _check(phase, "billing_lineage", "A6 billing lineage matches the recomputed charge", observed=bad_a6,
               expected=0, n=n, unit="mismatching charges", detail=f"{rule}; A6 reported fee_pct "
               f"{sorted(set(lineage['a6_fee_pct']))}, markup_x {sorted(set(lineage['a6_markup_x']))}"),
        _check(phase, "billing_events", "billing events carry the recomputed finance metrics", observed=bad_a8,
               expected=0, n=n, unit="mismatching or missing events",
               detail=f"{int(lineage['a8_provider_fee_cents'].notna().sum())}/{n} events found by trace id"),
    ]
    if tile is None:
        checks.append(_check(phase, "billing_tile", "the b2b_billing tile includes the funnel's charges",
                             observed=None, expected=True, detail=tile_why))
        return checks
    breakdown = tile.get("breakdown") or {}
    fee, markup = breakdown.get("provider_fee_cents"), breakdown.get("ai_markup_cents")
    ours = set(lineage["trace_id"])
    listed = ours & set(tile.get("recent_trace_ids") or [])
    if not isinstance(fee, int | float) or not isinstance(markup, int | float):
        checks.append(_check(phase, "billing_tile", "the b2b_billing tile includes the funnel's charges",
                             observed=None, expected=True,
                             detail="tile breakdown has no numeric provider_fee_cents / ai_markup_cents"))
        return checks
    covers = (fee >= lineage["expected_provider_fee_cents"].sum() and markup >= lineage["expected_ai_markup_cents"].sum()
              and bool(listed))
    checks.append(_check(phase, "billing_tile", "the b2b_billing tile includes the funnel's charges", observed=covers,
                         expected=True, detail=f"tile fee {fee} / markup {markup} cents vs the funnel's "
                         f"{int(lineage['expected_provider_fee_cents'].sum())} / "
                         f"{int(lineage['expected_ai_markup_cents'].sum())}; {len(listed)}/{len(ours)} of its trace "
                         "ids in recent_trace_ids"))
    return checks


def _write_verification(phase: Phase, lineage: pd.DataFrame, checks: list[Check]) -> None:
    p, b = phase.params, phase.params.b2b
    text = header("Billing logic verification (B2B)", ecosystem=p.ecosystem, environment=p.environment,
                  run_name=phase.run.root.name, profile_note=p.profile_note)
    text += (f"\n## Rule recomputed\n\n- `ai_charge_cents = round(base_cost_cents × {b.ai_markup_x:g})`\n"
             "- `ai_markup_cents = ai_charge_cents − base_cost_cents`\n"
             f"- `provider_fee_cents = round(ai_charge_cents × {b.fee_pct:g} / 100)`\n"
             "- `total_cents = ai_charge_cents + provider_fee_cents` (= the event's `amount_cents`)\n\n"
             "`round` is half up to a whole cent (Python `Decimal.quantize(1, ROUND_HALF_UP)`), applied once per "
             "rounded line; every other line is integer arithmetic, so the lineage adds up exactly.\n\n"
             "## Charges\n\n")
    cols = ["seq", "charge_id", "expected_base_cost_cents", "expected_ai_charge_cents", "expected_ai_markup_cents",
            "a6_ai_markup_cents", "expected_provider_fee_cents", "a6_provider_fee_cents", "a8_provider_fee_cents",
            "expected_total_cents", "a6_total_cents", "a8_amount_cents", "a6_matches", "a8_matches"]
    text += md_table([c.replace("expected_", "exp_") for c in cols],
                     lineage.reindex(columns=cols).itertuples(index=False)) if len(lineage) else "No charges.\n"
    text += "\n\n## Checks\n\n" + checks_table(checks) + "\n"
    phase.run.write_text(VERIFICATION, text)


@part("b2b")
def b2b_verdicts(phase: Phase, journeys: pd.DataFrame) -> pd.DataFrame:
    """Record the funnel checks, write ``b2b_funnel_results.json`` and the recovery runbook."""
    p, n = phase.params, phase.params.b2b.provider_signups
    signups = int(journeys["register"].sum())
    published = int(journeys["listing_readback"].sum())
    refusal = _refusal(phase)
    checks = [rate_check(id="funnels.b2b.signup_rate", phase=phase.name, title="provider signup rate (k6 journeys)",
                         successes=signups, n=n, target=p.thresholds.funnel_success_min, tags=TAGS, severity="P1",
                         evidence=(POINTS, JOURNEYS, SUMMARY)),
              value_check(id="funnels.b2b.listing_published", phase=phase.name, tags=TAGS, severity="P1",
                          title="every signed-up provider's listing reads back as published",
                          observed=published if signups else None, expected=signups, n=signups, unit="listings",
                          evidence=(POINTS, JOURNEYS))]
    phase.record(_blocked_checks(phase, refusal, ("signup_rate", "listing_published")) if refusal else checks)
    summary = json.loads(phase.run.path(SUMMARY).read_text())
    every = [c for c in phase.run.read_checks(phase.name) if c.id.startswith("funnels.b2b.")]
    phase.run.write_json(RESULTS, {
        "journeys": n, "blocked": refusal, "signups": signups, "listings_published": published,
        "charges": int(journeys["billing"].sum()),
        "steps": {s: int(journeys[s].sum()) for s in STEPS}, "k6_exit_code": summary["exit_code"],
        "k6_threshold_failed": summary["exit_code"] == THRESHOLD_FAILED,
        "k6_thresholds_crossed": summary["thresholds_crossed"], "checks": [c.to_dict() for c in every]})
    _write_recovery(phase, every)
    return pd.DataFrame([c.to_dict() for c in every]).set_index("id")[["status", "observed", "threshold", "n", "detail"]]


def _write_recovery(phase: Phase, checks: list[Check]) -> None:
    p = phase.params
    text = header("B2B funnel recovery runbook", ecosystem=p.ecosystem, environment=p.environment,
                  run_name=phase.run.root.name, profile_note=p.profile_note)
    failing = [c for c in checks if not c.passed]
    if failing and all(c.status is Status.BLOCKED for c in failing):
        phase.run.write_text(RECOVERY, text + f"\nThe B2B funnel was not run: {failing[0].detail}. Add a "
                             "production_write approval covering the landing and portal apps to params.approvals, "
                             "or audit staging.\n")
        return
    if not failing:
        phase.run.write_text(RECOVERY, text + "\nEvery B2B funnel check passed; nothing to recover.\n")
        return
    for c in failing:
        fix = FIXES.get(c.id.rsplit(".", 1)[-1], "see the evidence")
        if c.status is not Status.FAIL:
            fix = f"not proven either way: gather the missing evidence named above first. If it then fails: {fix}"
        text += (f"\n## `{c.id}` — {c.status}\n\n- What failed: {c.title}: {c.detail}\n"
                 f"- Evidence: {', '.join(f'`{e}`' for e in c.evidence)}\n- Likely fix: {fix}\n")
    phase.run.write_text(RECOVERY, text)
