"""Phase 07, activation (docs/phases.md#07-activation-and-growth): guided onboarding to the first AI action, time to first value.

``activation.users`` synthetic learners are driven in the system Chromium through the
B2C path of Phase 04 — landing → sign-up → checkout → first page, with the same
:class:`readiness.phasekit.signup_journey.JourneyRunner` (fresh context, own trace id, synthetic tags) — and
on through the student app's guided onboarding: the first page's link to
``activation.first_action_path``, the form, the submit whose page script calls the AI
action API, the answer shown in place. Notebook cells call, in order:

1. :func:`run_onboarding` — the journeys; ``evidence/activation_journeys.json`` (steps,
   statuses, wall-clock times; never an e-mail address, password, cookie or token);
2. :func:`verify_events` — polls the telemetry store (method B) until every answered
   learner's ``credit_decrement`` and ``activation_first_use`` arrived under its trace id,
   or ``thresholds.telemetry_arrival_s`` passed since the last answer (an event later than
   that counts as missing); each is validated against the telemetry contract
   (:mod:`readiness.phases.telemetry.contract`), which ``06_telemetry_contract`` — run earlier —
   cannot do for these two; ``evidence/activation_events.json``;
3. :func:`evaluate` — the ``activation.*`` verdicts and ``reports/activation_results.json``;
4. :func:`ttfv_chart` — the TTFV distribution against the target, saved under ``charts/``.

Time to first value (TTFV) runs from the click that starts sign-up (the landing page's
call to action) to the moment the AI answer is on screen, as the browser saw it. A
learner who never got an answer has an infinite TTFV: it stays in the distribution as a
value beyond any target instead of silently leaving it. The student app reports its own
view in ``activation_first_use`` (``seconds_since_signup``: from the learner's creation at
the sign-in callback to the action); the browser's callback → answer span must agree.

Verdicts (all through :mod:`readiness.core.verdict`): journeys completed and events arrived
are Wilson rates against ``thresholds.funnel_success_min``; the share of learners within
``thresholds.ttfv_s`` is a Wilson rate against ``activation.within_target_min``; each
TTFV percentile of ``activation.quantiles`` is judged on its distribution-free
order-statistic bound (a P90 upper bound needs n ≥ 29: below that the check says so and
stays INCONCLUSIVE). In ``prod`` the journeys are synthetic writes and need a
``production_write`` approval; without one every check is BLOCKED and nothing is driven.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd
from playwright.async_api import Page

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import latency_check, rate_check, value_check
from readiness.phasekit.context import Phase, part, production_writes_allowed
from readiness.phasekit.event_contract import validator_for
from readiness.phasekit.signup_journey import Journey, JourneyRunner, StepFailed, write_apps
from readiness.probe.browser import chromium, strip_query
from readiness.probe.telemetry_store import TelemetryUnavailable, parse_ts
from readiness.report.charts import STATUS_COLOURS, no_data_chart, save_chart
from readiness.report.markdown import checks_frame
from readiness.stats.latency import percentile_summary
from readiness.stats.quantiles import quantile_label
from readiness.stats.rates import wilson_interval

JOURNEYS = "evidence/activation_journeys.json"
EVENTS = "evidence/activation_events.json"
RESULTS = "reports/activation_results.json"
CHART = "activation_ttfv"
FIRST_ACTION = "first_action"
START_STEP = "cta"  # TTFV starts when the learner clicks the call to action that starts sign-up
WINDOW_SLACK_S = 2.0  # telemetry query padding: the apps' clocks and the browser's differ a little
EVENT_FIELDS = ("timestamp", "status", "seconds_since_signup", "credits_before", "credits_after", "delta")


# -- 1. journeys ------------------------------------------------------------------------------
async def first_action(runner: JourneyRunner, journey: Journey, page: Page) -> int | None:
    """The guided step: follow the first page's link, fill the form, submit, wait for the answer."""
    a, student = runner.params.activation, runner.apps.student
    s = a.selectors
    await page.click(s["first_action_link"])
    await runner.settle(page, s["submit"])
    shown = strip_query(page.url)
    if shown != student.url(a.first_action_path):
        raise StepFailed(f"guided onboarding shown at {shown}, expected {a.first_action_path}")
    await page.select_option(s["action"], a.action)
    await page.fill(s["topic"], a.topic)
    api = student.url(a.actions_path)
    async with page.expect_response(lambda r: strip_query(r.url) == api and r.request.method == "POST") as sent:
        await page.click(s["submit"])
    answer = await sent.value
    await runner.settle(page, s["result"])  # the result is visible only once the answer is on screen
    return answer.status


def user_row(journey: Journey) -> dict[str, Any]:
    """One learner's outcome and timings (epoch seconds, spans in s), with no credential or address."""
    start, action = journey.step(START_STEP), journey.step(FIRST_ACTION)
    answered = action["ended_at"] if journey.ok and action else None
    signed_in = round(journey.signup_epoch, 3) if journey.signup_epoch else None
    failed = next((s for s in journey.steps if s["status"] != "ok"), None)
    return {"user": journey.index, "trace_id": journey.trace_id, "ok": journey.ok,
            "failed_step": failed["step"] if failed else None, "error": failed["error"] if failed else None,
            "signup_start_at": start["started_at"] if start else None, "signed_in_at": signed_in,
            "answered_at": answered, "action_status": action.get("http_status") if action else None,
            "ttfv_s": round(answered - start["started_at"], 3) if answered and start else None,
            "signin_to_answer_s": round(answered - signed_in, 3) if answered and signed_in else None,
            "blocked_requests": journey.blocked, "steps": journey.steps}


@part("activation")
def run_onboarding(phase: Phase) -> pd.DataFrame:
    """``activation.users`` learners from the landing page to their first AI answer, in Chromium."""
    params, a = phase.params, phase.params.activation
    refusal = production_writes_allowed(phase, f"{a.users} synthetic learners through onboarding to a first AI "
                                        "action", write_apps(params))
    started = dt.datetime.now(dt.UTC)
    head = {"users": a.users, "target_s": params.thresholds.ttfv_s, "start_step": START_STEP}
    if refusal:
        now = started.isoformat()
        phase.run.write_json(JOURNEYS, {**head, "window": {"start": now, "end": now}, "rows": [], "blocked": refusal})
        return pd.DataFrame([{"status": "BLOCKED", "reason": refusal}])

    async def go() -> list[Journey]:
        async with phase.client() as client, chromium() as browser:
            runner = JourneyRunner(phase, client, utm=a.utm, tag="activation")
            gate = asyncio.Semaphore(a.concurrency)

            async def one(i: int) -> Journey:
                async with gate:
                    return await runner.journey(browser, i, lambda *_: None, [(FIRST_ACTION, first_action)])

            return list(await asyncio.gather(*(one(i) for i in range(1, a.users + 1))))

    rows = [user_row(j) for j in aio.run(go())]
    window = {"start": started.isoformat(), "end": dt.datetime.now(dt.UTC).isoformat()}
    phase.run.write_json(JOURNEYS, {**head, "window": window, "rows": rows,
                                    "note": "TTFV: sign-up click → AI answer on screen, as the browser saw it; no "
                                            "e-mail address, password, cookie or token is recorded"})
    return pd.DataFrame([{k: r[k] for k in ("user", "ok", "failed_step", "ttfv_s", "signin_to_answer_s")}
                         for r in rows]).set_index("user")


# -- 2. telemetry -------------------------------------------------------------------------------
async def _poll_events(phase: Phase, wanted: dict[str, float], since: dt.datetime) -> dict[str, Any]:
    """Ask the telemetry store for the events of the ``wanted`` traces until all arrived or time is up."""
    a, student = phase.params.activation, phase.params.funnels.student_app
    found: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in wanted}
    out: dict[str, Any] = {"polls": 0, "error": None}
    deadline = max(wanted.values()) + phase.params.thresholds.telemetry_arrival_s
    validator = validator_for(phase)
    async with phase.client() as client:
        source = phase.telemetry(client)
        while True:
            out["polls"] += 1
            now = time.time()
            try:
                for event_type in a.events:
                    until = dt.datetime.fromtimestamp(now + WINDOW_SLACK_S, dt.UTC)
                    for e in await source.events(since=since, until=until, app_id=student, event_type=event_type):
                        trace = e.get("trace_id")
                        if trace in found and event_type not in found[trace]:
                            found[trace][event_type] = {**{k: e.get(k) for k in EVENT_FIELDS},
                                                        **_arrival(e, answered_at=wanted[trace], seen_at=now),
                                                        "contract_errors": validator.errors(e)}
                out["error"] = None
            except TelemetryUnavailable as exc:
                out["error"] = str(exc)
            if all(len(got) == len(a.events) for got in found.values()) or time.time() >= deadline:
                break
            await asyncio.sleep(a.poll_s)
    out["found"] = found
    return out


def _arrival(event: dict[str, Any], *, answered_at: float, seen_at: float) -> dict[str, float | None]:
    """Seconds from the answer on screen to the event's arrival: by the store's own ``received_at``
    when it reports one (the event is emitted before the browser shows the answer, so it may be
    slightly negative), and to the poll that first saw it (an upper bound, any store)."""
    received = event.get("received_at")
    try:
        at = parse_ts(received).timestamp() if isinstance(received, str) else None
    except ValueError:
        at = None
    return {"received_s": round(at - answered_at, 3) if at is not None else None,
            "seen_s": round(seen_at - answered_at, 3)}


@part("activation")
def verify_events(phase: Phase) -> pd.DataFrame:
    """Each answered learner's ``activation.events`` in the telemetry store, under its trace id."""
    log, events = _read(phase, JOURNEYS), phase.params.activation.events
    base = {"events": events, "budget_s": phase.params.thresholds.telemetry_arrival_s}
    if log.get("blocked"):
        phase.run.write_json(EVENTS, {**base, "blocked": log["blocked"], "polls": 0, "error": None, "found": {}})
        return pd.DataFrame([{"status": "BLOCKED", "reason": log["blocked"]}])
    wanted = {r["trace_id"]: r["answered_at"] for r in log["rows"] if r["ok"]}
    since = dt.datetime.fromisoformat(log["window"]["start"]) - dt.timedelta(seconds=WINDOW_SLACK_S)
    result = aio.run(_poll_events(phase, wanted, since)) if wanted else {"polls": 0, "error": None, "found": {}}
    phase.run.write_json(EVENTS, {**base, "window_start": since.isoformat(), **result})
    return pd.DataFrame([{"user": r["user"], **{e: (e in result["found"][r["trace_id"]]) if r["ok"] else None
                                                for e in events}} for r in log["rows"]]).set_index("user")


def _slowest(arrival: dict[str, Any]) -> float:
    received = arrival.get("received_s")
    return float(received if isinstance(received, int | float) else arrival["seen_s"])


def _read(phase: Phase, relpath: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(phase.run.path(relpath).read_text(encoding="utf-8"))
    return data


# -- 3. statistics and verdicts ---------------------------------------------------------------
def ttfv_summary(ttfv_s: Sequence[float | None], target_s: float, quantiles: Sequence[float],
                 confidence: float = 0.95) -> dict[str, Any]:
    """TTFV as a distribution: share within target (Wilson) and percentiles with order-statistic bounds.

    ``None`` (no answer) counts as an infinite TTFV. Bounds that do not exist at this n
    are None with the n that would make them exist (``needs_n``, ``upper_needs_n``).
    """
    samples = [math.inf if v is None else float(v) for v in ttfv_s]
    within = sum(v <= target_s for v in samples)
    low, high = wilson_interval(within, len(samples), confidence) if samples else (None, None)
    rows = percentile_summary(samples, quantiles, confidence) if samples else []
    return {"unit": "s", "n": len(samples), "answered": sum(math.isfinite(v) for v in samples),
            "target_s": target_s, "confidence": confidence,
            "within_target": {"count": within, "share": within / len(samples) if samples else None,
                              "ci_low": low, "ci_high": high},
            "percentiles": [{"percentile": r.label, "q": r.q, "estimate_s": _finite(r.estimate),
                             "ci_low_s": _finite(r.low), "ci_high_s": _finite(r.high),
                             "upper_bound_s": _finite(r.upper), "needs_n": r.needs_n,
                             "upper_needs_n": r.upper_needs_n, "describe": r.describe("s")} for r in rows]}


def _finite(x: float | None) -> float | str | None:
    """JSON has no infinity: a bound set by a learner who never got an answer reads "no answer"."""
    return None if x is None else x if math.isfinite(x) else "no answer"


def activation_checks(phase: Phase, log: dict[str, Any], events: dict[str, Any],
                      evidence: tuple[str, ...]) -> list[Check]:
    """The ``activation.*`` checks from the two evidence files (BLOCKED when the journeys were refused)."""
    p, a = phase.params, phase.params.activation
    rows, found = log["rows"], events.get("found") or {}
    window = f"{log['window']['start']}/{log['window']['end']}"
    answered = [r for r in rows if r["ok"]]
    shots = tuple(s["screenshot"] for r in rows for s in r["steps"] if s.get("screenshot"))
    common: dict[str, Any] = {"phase": phase.name, "app": p.funnels.student_app, "window": window}
    failed = ", ".join(f"{r['user']}: {r['failed_step']}" for r in rows if not r["ok"])
    checks = [rate_check(id="activation.journeys", title="learners reach their first AI answer (sign-up → guided "
                         "onboarding → first action)", successes=len(answered), n=len(rows),
                         target=p.thresholds.funnel_success_min, tags=("reliability", "test_quality"), severity="P1",
                         evidence=evidence[:1] + shots, detail=f"failed at: {failed}" if failed else "", **common)]
    why = events.get("error") or ("" if answered else "no learner got an answer, so no event was expected")
    for event_type in a.events:
        seen = [found[r["trace_id"]][event_type] for r in answered if event_type in found.get(r["trace_id"], {})]
        late = [_slowest(e) for e in seen]
        broken = list(dict.fromkeys(m for e in seen for m in e.get("contract_errors") or []))
        notes = (why, f"slowest arrived {max(late):.2f} s after the answer was shown (budget "
                      f"{p.thresholds.telemetry_arrival_s:g} s)" if late else "",
                 f"contract field errors: {'; '.join(broken[:5])}" if broken else "")
        checks.append(rate_check(
            id=f"activation.events.{event_type}", title=f"{event_type} reaches the telemetry store with the contract "
            "fields for each answered learner, under its trace id", n=len(answered),
            successes=sum(not e.get("contract_errors") for e in seen), target=p.thresholds.funnel_success_min,
            tags=("observability",), severity="P1", evidence=evidence, detail="; ".join(x for x in notes if x),
            **common))
    target = p.thresholds.ttfv_s
    ttfv = [r["ttfv_s"] for r in rows]
    summary = ttfv_summary(ttfv, target, a.quantiles, p.thresholds.confidence)
    checks.append(rate_check(id="activation.ttfv.within_target", title=f"learners reach first value within "
                             f"{target:g} s", successes=summary["within_target"]["count"], n=len(rows),
                             target=a.within_target_min, confidence=p.thresholds.confidence, tags=("performance",),
                             severity="P2", evidence=evidence[:1], **common))
    ms = [math.inf if v is None else v * 1000 for v in ttfv]
    for q in a.quantiles:
        checks.append(latency_check(id=f"activation.ttfv.{quantile_label(q).lower()}", title=f"{quantile_label(q)} "
                                    f"time to first value within {target:g} s", samples_ms=ms, threshold_ms=target * 1000,
                                    q=q, confidence=p.thresholds.confidence, tags=("performance",), severity="P2",
                                    evidence=evidence[:1], detail="TTFV in ms; no answer counts as infinite", **common))
    pairs = [(r["signin_to_answer_s"], found[r["trace_id"]]["activation_first_use"]["seconds_since_signup"])
             for r in answered if isinstance(found.get(r["trace_id"], {}).get("activation_first_use", {})
                                             .get("seconds_since_signup"), int | float)]
    gaps = [abs(browser - app) for browser, app in pairs]
    checks.append(value_check(id="activation.ttfv.crosscheck", title="the browser's sign-in → answer time agrees with "
                              "activation_first_use.seconds_since_signup", observed=round(max(gaps), 3) if gaps else None,
                              expected=a.crosscheck_tolerance_s, comparator="<=", unit="s", n=len(gaps),
                              tags=("observability",), severity="P3", evidence=evidence,
                              detail=f"largest gap of {len(gaps)} learners" if gaps else
                              why or "no activation_first_use event carried seconds_since_signup", **common))
    if log.get("blocked"):
        return [c.with_status(Status.BLOCKED, log["blocked"]) for c in checks]
    return checks


@part("activation")
def evaluate(phase: Phase) -> pd.DataFrame:
    """Record the ``activation.*`` checks and write ``reports/activation_results.json``."""
    log, events = _read(phase, JOURNEYS), _read(phase, EVENTS)
    checks = phase.record(activation_checks(phase, log, events, (JOURNEYS, EVENTS)))
    p, found = phase.params, events.get("found") or {}
    users = [{k: v for k, v in r.items() if k not in ("steps", "blocked_requests")}
             | {"events": found.get(r["trace_id"], {})} for r in log["rows"]]
    phase.run.write_json(RESULTS, {
        "phase": phase.name, "window": log["window"], "users": len(log["rows"]), "blocked": log.get("blocked"),
        "units": {"ttfv_s": "s", "signin_to_answer_s": "s", "arrival_s": "s", "timestamps": "epoch s"},
        "ttfv": ttfv_summary([r["ttfv_s"] for r in log["rows"]], p.thresholds.ttfv_s, p.activation.quantiles,
                             p.thresholds.confidence),
        "events": {e: sum(e in found.get(r["trace_id"], {}) for r in log["rows"] if r["ok"]) for e in events["events"]},
        "per_user": users, "checks": {c.id: str(c.status) for c in checks}})
    return checks_frame(checks)


# -- 4. chart -----------------------------------------------------------------------------------
@part("activation")
def ttfv_chart(phase: Phase) -> alt.LayerChart:
    """The TTFV distribution (ECDF, log scale) against the target, with percentile intervals; saved."""
    results = _read(phase, RESULTS)
    chart = ttfv_distribution_chart([u["ttfv_s"] for u in results["per_user"]], results["ttfv"])
    save_chart(phase.run, CHART, chart)
    return chart


def ttfv_distribution_chart(ttfv_s: Sequence[float | None], summary: dict[str, Any]) -> alt.LayerChart:
    """Share of learners at first value by time x (a step line that stops short of 1 when some never
    got there), the target (dashed red), and each percentile's estimate with its interval (grey)."""
    n, target = len(ttfv_s), float(summary["target_s"])
    done = sorted(v for v in ttfv_s if v is not None and math.isfinite(v) and v > 0)  # a log axis needs > 0
    if not done:
        return no_data_chart("time to first value", f"no learner reached first value (n = {n})")
    curve = pd.DataFrame({"ttfv_s": done, "share": [(i + 1) / n for i in range(len(done))]})
    marks = pd.DataFrame([{"q": p["q"], "estimate_s": p["estimate_s"], "low": p["ci_low_s"], "high": p["ci_high_s"],
                           "label": p["describe"].split(" (n=")[0]} for p in summary["percentiles"]
                          if isinstance(p["estimate_s"], int | float)])
    x = alt.X("ttfv_s:Q", title="time to first value (s, log scale)", scale=alt.Scale(type="log"))
    y = alt.Y("share:Q", title="share of learners at first value", scale=alt.Scale(domain=[0, 1]))
    layers: list[alt.Chart] = [
        alt.Chart(curve).mark_line(interpolate="step-after", color="#1565c0", point=True).encode(x=x, y=y),
        alt.Chart(pd.DataFrame({"ttfv_s": [target]})).mark_rule(color=STATUS_COLOURS["FAIL"], strokeDash=[6, 4])
        .encode(x="ttfv_s:Q"),
    ]
    if not marks.empty:
        bounded = marks.dropna(subset=["low", "high"])
        bounded = bounded[bounded["low"].map(_is_number) & bounded["high"].map(_is_number)]
        if not bounded.empty:
            layers.append(alt.Chart(bounded).mark_rule(color="#616161", strokeWidth=3).encode(
                x="low:Q", x2="high:Q", y=alt.Y("q:Q")))
        layers.append(alt.Chart(marks).mark_point(color="#616161", shape="diamond", filled=True, size=60).encode(
            x="estimate_s:Q", y="q:Q"))
        layers.append(alt.Chart(marks).mark_text(align="left", dx=8, dy=-8, color="#424242", fontSize=10).encode(
            x="estimate_s:Q", y="q:Q", text="label:N"))
    within = summary["within_target"]
    subtitle = (f"n = {n} learners, {within['count']} within the {target:g} s target (dashed red); "
                "grey: percentile estimate and its 95% interval" + (f"; {n - len(done)} never got an answer"
                                                                     if len(done) < n else ""))
    return alt.layer(*layers).properties(title=alt.TitleParams("Time to first value", subtitle=subtitle),
                                         width=460, height=240)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
