"""Alert rules replayed over recorded telemetry: which alerts would have fired, before and after tuning.

A rule that pages on every failed login trains people to ignore the pager; a rule tuned
too far hides the credential-stuffing attack it exists for. Neither can be argued from the
rule text alone, so the phase replays both versions of the rules (``monitoring.before``
and ``monitoring.after``) over the same recorded events and counts what each would have
sent, on noise and on a real incident.

Semantics of one rule (:class:`readiness.params.ops.AlertRule`), in continuous time:

- the *condition* holds at time t when the matching events in the trailing window
  (t - window_s, t] number at least ``min_events`` (a rate threshold × window_s);
- an *episode* is a maximal interval over which the condition holds without a break;
- an episode *fires* once it has lasted ``duration_s`` (at its start when 0); every
  matching event that arrives while it fires is a further notification candidate, as
  with a log-based pager;
- a candidate within ``dedupe_s`` of the rule's previous notification is suppressed.

On the sandbox, :func:`drive_auth_traffic` first produces both kinds of traffic through
the identity app's public sign-in form — isolated failures (noise), then a burst
(credential stuffing, the incident) — and labels their time spans; on an external
ecosystem nothing is driven and ``monitoring.incidents`` labels known incidents.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.check import Check
from readiness.core.verdict import value_check
from readiness.params.ops import AlertRule
from readiness.phasekit.context import Phase, part
from readiness.probe.client import GuardedClient
from readiness.probe.telemetry_store import TelemetryUnavailable, iso, parse_ts
from readiness.report.markdown import checks_table, header, md_table

TRAFFIC = "evidence/auth_traffic.json"
REPLAY = "evidence/monitoring_replay.json"
REPORT = "reports/monitoring_rule_changes.md"
TAGS = ("observability", "release_engineering")
_REQUEST_ID = re.compile(r'name="request_id" value="([^"]+)"')


def _when(epoch: float) -> str:
    return iso(dt.datetime.fromtimestamp(epoch, dt.UTC))


# -- the replay engine (pure) -------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    """One notification a rule would have sent (epoch seconds)."""

    rule: str
    at: float
    count: int  # matching events in the window at that moment
    episode_start: float


@dataclass(frozen=True)
class RuleReplay:
    """What one rule did over the replayed events."""

    rule: AlertRule
    matched: int
    episodes: tuple[tuple[float, float], ...]  # (start, end) where the condition held
    alerts: tuple[Alert, ...]
    suppressed: int  # candidates dropped by dedupe


def _field(event: Mapping[str, Any], dotted: str) -> Any:
    node: Any = event
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def matches(rule: AlertRule, event: Mapping[str, Any]) -> bool:
    """The event is of the rule's type and every filter field equals its value."""
    return event.get("event_type") == rule.event_type and all(
        _field(event, key) == value for key, value in rule.filter.items())


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def evaluate(rule: AlertRule, times_s: Sequence[float], end_s: float) -> RuleReplay:
    """Replay ``rule`` over the epoch times of its matching events, up to ``end_s``.

    Times are handled in whole milliseconds so that an event leaves the window exactly
    ``window_s`` after it arrived, whatever the floating-point representation.
    """
    times = sorted(_ms(t) for t in times_s if t <= end_s)
    end, window, need = _ms(end_s), _ms(rule.window_s), rule.min_events

    def count(at: int) -> int:  # events in (at - window, at]
        return bisect.bisect_right(times, at) - bisect.bisect_right(times, at - window)

    points = sorted({*times, *(t + window for t in times if t + window <= end)})
    episodes: list[tuple[int, int]] = []
    start: int | None = None
    for i, at in enumerate(points):
        holds = count(at) >= need
        if holds and start is None:
            start = at
        if not holds and start is not None:
            episodes.append((start, at))
            start = None
        if i == len(points) - 1 and start is not None:
            episodes.append((start, max(end, at + 1)))  # still holding when the replay ends
    candidates: list[tuple[int, int]] = []
    for a, b in episodes:
        fire = a + _ms(rule.duration_s)
        if fire < b:  # one candidate when it fires (one per event arriving at that moment), then per event
            at_fire = bisect.bisect_right(times, fire) - bisect.bisect_left(times, fire)
            candidates += [(fire, a)] * max(1, at_fire)
            candidates += [(t, a) for t in times[bisect.bisect_right(times, fire):bisect.bisect_left(times, b)]]
    alerts: list[Alert] = []
    suppressed, last = 0, None
    dedupe = _ms(rule.dedupe_s)
    for at, episode_start in candidates:
        if last is not None and dedupe > 0 and at - last < dedupe:
            suppressed += 1
            continue
        alerts.append(Alert(rule.id, at / 1000, count(at), episode_start / 1000))
        last = at
    return RuleReplay(rule, len(times), tuple((a / 1000, b / 1000) for a, b in episodes), tuple(alerts), suppressed)


def _epoch(event: Mapping[str, Any]) -> float | None:
    try:
        return parse_ts(str(event["timestamp"])).timestamp()
    except (KeyError, ValueError):
        return None


def replay_rules(rules: Sequence[AlertRule], events: Sequence[Mapping[str, Any]], end_s: float) -> list[RuleReplay]:
    """Every rule over the same events (events without a readable timestamp are skipped)."""
    stamped = [(e, _epoch(e)) for e in events]
    return [evaluate(rule, [t for e, t in stamped if t is not None and matches(rule, e)], end_s) for rule in rules]


def in_incident(alert: Alert, rule: AlertRule, incidents: Sequence[tuple[float, float]]) -> bool:
    """An alert belongs to an incident when it fires between its start and the moment its
    last failure has left the rule's window (plus the rule's duration)."""
    return any(s <= alert.at <= e + rule.window_s + rule.duration_s for s, e in incidents)


def split_alerts(replays: Sequence[RuleReplay], incidents: Sequence[tuple[float, float]]) -> tuple[int, int]:
    """(noise alerts, incident alerts) over every rule of one version."""
    flags = [in_incident(a, r.rule, incidents) for r in replays for a in r.alerts]
    return flags.count(False), flags.count(True)


def detected(replays: Sequence[RuleReplay], incidents: Sequence[tuple[float, float]]) -> list[float | None]:
    """Per incident: seconds from its start to the first alert of any rule, None if none fired."""
    out: list[float | None] = []
    for span in incidents:
        times = [a.at for r in replays for a in r.alerts if in_incident(a, r.rule, [span])]
        out.append(min(times) - span[0] if times else None)
    return out


# -- driving failed logins (sandbox only) ---------------------------------------------------
async def _login_request(client: GuardedClient, phase: Phase) -> str:
    """A fresh sign-in request id from the identity app's authorize endpoint."""
    p = phase.params
    f, t = p.funnels, p.monitoring.traffic
    query = urlencode({"client_id": f.oidc_client_id, "response_type": "code", "scope": "openid",
                       "redirect_uri": p.app(f.student_app).url(f.callback_path), "state": secrets.token_hex(8)})
    sample = await client.get(p.app(f.identity_app).url(f"{t.authorize_path}?{query}"), app=f.identity_app,
                              route=t.authorize_path, synthetic_identity=phase.synthetic_identity, keep_body=True)
    found = _REQUEST_ID.search((sample.body or b"").decode("utf-8", "replace")) if sample.ok else None
    if found is None:
        raise RuntimeError(f"{f.identity_app} {t.authorize_path} gave no sign-in form "
                           f"({sample.status or sample.error}); cannot drive failed logins")
    return found.group(1)


async def _fail_login(client: GuardedClient, phase: Phase, request_id: str, kind: str, i: int) -> dict[str, Any]:
    """One sign-in with a synthetic address and a random password (kept in memory only)."""
    p, t = phase.params, phase.params.monitoring.traffic
    app, email = p.funnels.identity_app, f"{phase.synthetic_identity}+{kind}-{i}-{secrets.token_hex(3)}@{t.email_domain}"
    form = urlencode({"request_id": request_id, "email": email, "password": secrets.token_urlsafe(12), "action": "login"})
    sample = await client.post(p.app(app).url(t.login_path), content=form, app=app, route=t.login_path,
                                       headers={"Content-Type": "application/x-www-form-urlencoded"},
                                       synthetic_identity=phase.synthetic_identity)
    return {"kind": kind, "trace_id": sample.trace_id, "status": sample.status, "error": sample.error,
            "at": _when(sample.started_at)}


async def _drive(phase: Phase) -> dict[str, Any]:
    t = phase.params.monitoring.traffic
    async with phase.client() as client:
        started = time.time()
        request_id = await _login_request(client, phase)
        attempts = []
        for i in range(t.noise_failures):
            if i:
                await asyncio.sleep(t.noise_spacing_s)
            attempts.append(await _fail_login(client, phase, request_id, "noise", i))
        noise_end = time.time()
        gate = asyncio.Semaphore(t.incident_concurrency)

        async def burst(i: int) -> dict[str, Any]:
            async with gate:
                return await _fail_login(client, phase, request_id, "incident", i)

        incident_start = time.time()
        attempts += await asyncio.gather(*(burst(i) for i in range(t.incident_failures)))
        incident_end = time.time()
        arrived = await _await_arrival(phase, client, {a["trace_id"] for a in attempts}, started)
    # the tuned rule fires only once its condition has lasted duration_s: wait for that moment
    hold = max((r.duration_s for r in phase.params.monitoring.after), default=0) + 1
    await asyncio.sleep(max(0.0, incident_end + hold - time.time()))
    spans = {"noise": {"start": _when(started), "end": _when(noise_end)},
             "incident": {"start": _when(incident_start), "end": _when(incident_end)}}
    return {"identity_app": phase.params.funnels.identity_app, "spans": spans, "attempts": attempts,
            "arrived": len(arrived), "missing": sorted({a["trace_id"] for a in attempts} - arrived)}


async def _await_arrival(phase: Phase, client: GuardedClient, traces: set[str], since: float) -> set[str]:
    """Trace ids of the driven failures seen by the telemetry store (polled until all or timeout)."""
    source = phase.telemetry(client)
    deadline = time.monotonic() + phase.params.monitoring.traffic.arrival_timeout_s
    seen: set[str] = set()
    while True:
        try:
            rows = await source.events(since=dt.datetime.fromtimestamp(since - 1, dt.UTC),
                                       until=dt.datetime.now(dt.UTC), event_type="auth_failure")
            seen = {str(e.get("trace_id")) for e in rows} & traces
        except TelemetryUnavailable:
            pass
        if seen == traces or time.monotonic() >= deadline:
            return seen
        await asyncio.sleep(0.5)


@part("failed_logins")
def drive_auth_traffic(phase: Phase) -> pd.DataFrame:
    """Sandbox only: noise (isolated failed logins), then an incident (a burst of them).

    Bounded by ``monitoring.traffic``: at most 50 + 500 attempts, ``noise_spacing_s``
    apart then ``incident_concurrency`` at a time, and ``arrival_timeout_s`` of waiting.
    On an external ecosystem it drives nothing (the replay reads what is recorded there).
    """
    if phase.params.target != "sandbox":
        phase.run.write_json(TRAFFIC, {"driven": False, "reason": "external target: nothing is driven; "
                                       "monitoring.incidents labels known incidents"})
        return pd.DataFrame(columns=["kind", "attempts", "status_401", "arrived"])
    record = aio.run(_drive(phase))
    phase.run.write_json(TRAFFIC, {"driven": True, **record})
    frame = pd.DataFrame(record["attempts"])
    missing = set(record["missing"])
    return (frame.assign(status_401=frame["status"] == 401, arrived=~frame["trace_id"].isin(missing))
            .groupby("kind", sort=False).agg(attempts=("trace_id", "size"), status_401=("status_401", "sum"),
                                             arrived=("arrived", "sum")).reset_index())


# -- the phase: replay and report -------------------------------------------------------------
def _labelled(phase: Phase) -> tuple[list[tuple[float, float]], list[tuple[float, float]], str]:
    """(incident spans, driven noise spans, where the labels came from) as epoch seconds."""
    incidents = [(w.start.timestamp(), w.end.timestamp()) for w in phase.params.monitoring.incidents]
    labels = ["monitoring.incidents"] if incidents else []
    path = phase.run.path(TRAFFIC)
    spans = json.loads(path.read_text(encoding="utf-8")).get("spans") or {} if path.is_file() else {}
    pairs = {k: (parse_ts(v["start"]).timestamp(), parse_ts(v["end"]).timestamp()) for k, v in spans.items()}
    if "incident" in pairs:
        incidents.append(pairs["incident"])
        labels.insert(0, f"driven ({TRAFFIC})")
    return incidents, [pairs["noise"]] if "noise" in pairs else [], " and ".join(labels) or "none"


async def _events(phase: Phase, types: set[str], since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    async with phase.client() as client:
        source = phase.telemetry(client)
        rows: list[dict[str, Any]] = []
        for event_type in sorted(types):
            rows += await source.events(since=since, until=until, event_type=event_type,
                                        limit=phase.params.monitoring.replay_limit)
        return rows


def _checks(phase: Phase, before: list[RuleReplay], after: list[RuleReplay], incidents: list[tuple[float, float]],
            window: str, unavailable: str | None) -> list[Check]:
    common = dict(phase=phase.name, tags=TAGS, evidence=(REPLAY, REPORT), window=window, unit="alerts")
    (b_noise, _), (a_noise, _) = split_alerts(before, incidents), split_alerts(after, incidents)
    found = detected(after, incidents)
    hits = sum(d is not None for d in found)
    delays = ", ".join("missed" if d is None else f"{d:.1f} s" for d in found)
    silenced, seen = (None, None) if unavailable else (a_noise if b_noise else None, hits if incidents else None)
    down = f"telemetry unavailable: {unavailable}"
    return [
        value_check(id="ops.monitoring.noise_silenced", title="Tuned rules send no alert on noise that paged before",
                    observed=silenced, expected=0, comparator="==", n=sum(r.matched for r in after), severity="P2",
                    detail=down if unavailable else f"before rules: {b_noise} noise alerts; after rules: {a_noise}"
                    if b_noise else "the before rules fired on no noise in the window: nothing to silence", **common),
        value_check(id="ops.monitoring.incident_detected", title="Tuned rules still alert on a real incident",
                    observed=seen, expected=len(incidents) or 1, comparator=">=", n=len(incidents), severity="P1",
                    detail=down if unavailable else f"{hits} of {len(incidents)} incidents raised an alert of the "
                    f"tuned rules (time to alert: {delays})" if incidents else
                    "no incident in the window (none driven, none labelled in monitoring.incidents)", **common)]


def rule_diff(before: Sequence[AlertRule], after: Sequence[AlertRule]) -> str:
    """Every field of every rule, before and after tuning, as a Markdown table (the change under review)."""
    fields = ("event_type", "filter", "aggregation", "threshold", "window_s", "duration_s", "dedupe_s", "severity")
    b, a = {r.id: r for r in before}, {r.id: r for r in after}
    rows = []
    for rid in dict.fromkeys([*b, *a]):
        old, new = b.get(rid), a.get(rid)
        for f in fields:
            ov = getattr(old, f) if old else "—"
            nv = getattr(new, f) if new else "—"
            rows.append((rid, f, ov, nv, "changed" if ov != nv else ""))
    return md_table(["rule", "field", "before", "after", ""], rows)


def _alert_rows(version: str, replays: Sequence[RuleReplay], incidents: list[tuple[float, float]]) -> list[tuple]:
    rows = []
    for r in replays:
        noise = sum(not in_incident(a, r.rule, incidents) for a in r.alerts)
        rows.append((version, r.rule.id, r.matched, len(r.episodes), len(r.alerts), noise, len(r.alerts) - noise,
                     r.suppressed))
    return rows


def _timeline(before: list[RuleReplay], after: list[RuleReplay], incidents: list[tuple[float, float]],
              noise: list[tuple[float, float]], shown: int = 20) -> str:
    """Driven spans, incidents and alerts in time order (each rule's first ``shown`` alerts)."""
    marks = [(t, f"noise: {w} isolated failure driven") for s, e in noise for t, w in ((s, "first"), (e, "last"))]
    marks += [(t, f"incident {i} {w}") for i, (s, e) in enumerate(incidents, 1) for t, w in ((s, "starts"), (e, "ends"))]
    for version, replays in (("before", before), ("after", after)):
        for r in replays:
            marks += [(a.at, f"{version} rule `{a.rule}` alerts ({a.count} in window)") for a in r.alerts[:shown]]
            if len(r.alerts) > shown:
                marks.append((r.alerts[shown].at, f"… {len(r.alerts) - shown} more alerts of {version} `{r.rule.id}`"))
    return md_table(["time (UTC)", "what"], [(_when(t), what) for t, what in sorted(marks)]) if marks else "_none_"


@part("monitoring")
def replay(phase: Phase) -> Markdown:
    """Replay ``monitoring.before`` and ``monitoring.after`` over the run's recorded telemetry.

    The window runs from the run's start to now. Records ``ops.monitoring.noise_silenced``
    and ``ops.monitoring.incident_detected``; writes the replay (every alert, by rule) and
    ``reports/monitoring_rule_changes.md`` (rule diff, alert counts, incident timeline).
    """
    m = phase.params.monitoring
    since = parse_ts(str(phase.run.info().get("started_at") or iso(dt.datetime.now(dt.UTC))))
    until = dt.datetime.now(dt.UTC)
    window = f"{iso(since)} – {iso(until)}"
    incidents, noise, labels = _labelled(phase)
    unavailable = None
    try:
        events = aio.run(_events(phase, {r.event_type for r in [*m.before, *m.after]}, since, until))
    except TelemetryUnavailable as exc:
        events, unavailable = [], str(exc)
    before = replay_rules(m.before, events, until.timestamp())
    after = replay_rules(m.after, events, until.timestamp())
    checks = phase.record(_checks(phase, before, after, incidents, window, unavailable))
    phase.run.write_json(REPLAY, {
        "window": {"since": iso(since), "until": iso(until)}, "labels": labels, "telemetry_error": unavailable,
        "incidents": [{"start": _when(s), "end": _when(e)} for s, e in incidents],
        "versions": {version: [{"rule": r.rule.model_dump(mode="json"), "matched_events": r.matched,
                                "episodes": [{"start": _when(a), "end": _when(b)} for a, b in r.episodes],
                                "suppressed": r.suppressed,
                                "alerts": [{**asdict(a), "at": _when(a.at), "episode_start": _when(a.episode_start),
                                            "incident": in_incident(a, r.rule, incidents)} for a in r.alerts]}
                               for r in replays] for version, replays in (("before", before), ("after", after))}})
    p = phase.params
    text = "\n".join([
        header("Monitoring rule changes", ecosystem=p.ecosystem, environment=p.environment,
               run_name=phase.run.root.name, profile_note=p.profile_note),
        f"Replayed over the telemetry recorded from {iso(since)} to {iso(until)}; "
        f"incidents labelled by: {labels}. A rule fires once its condition has held for its duration; "
        "every matching event while it fires is a further notification unless within the rule's dedupe window.",
        "", "## Rule changes (before → after)", "", rule_diff(m.before, m.after),
        "", "## Alerts that would have fired", "",
        md_table(["version", "rule", "matching events", "episodes", "alerts", "on noise", "on incidents",
                  "suppressed by dedupe"], _alert_rows("before", before, incidents) + _alert_rows("after", after,
                                                                                                  incidents)),
        "", "## Incident timeline", "", _timeline(before, after, incidents, noise),
        "", "## Checks", "", checks_table(checks), ""])
    phase.run.write_text(REPORT, text)
    return Markdown(text)
