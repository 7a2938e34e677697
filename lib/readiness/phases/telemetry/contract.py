"""Telemetry contract (docs/phases.md#06-telemetry-contract): the required events arrive, well-formed, and are deduplicated.

The contract is a JSON Schema (draft 2020-12, ``schemas/telemetry_event.schema.json``,
shipped with the package) so that a producer team can validate its own events with any
tool, not only with this suite. Params choose which fields are required and which event
types are finance events; :func:`~readiness.phasekit.event_contract.contract_schema` writes them into a copy of the schema,
so the file stays the single description of the field *shapes*. The validator itself is
:mod:`readiness.phasekit.event_contract` (phase 07 validates its events with it too).

Phase functions (notebook ``06_telemetry_contract``), each recording its checks:

* :func:`contract` — every required event type seen in the run's window is validated
  against the schema; a type that never arrived FAILs; with no events at all the checks
  are INCONCLUSIVE (nothing was observed, so nothing is proven either way);
* :func:`dedupe` — the same (idempotency_key, trace_id) posted twice is stored once (BLOCKED
  in ``prod`` without a ``production_write`` approval: the probes are writes),
  while events that share only one of the two are all kept;
* :func:`write_verdict` — ``reports/a8_wiring_verdict.md`` over all of the phase's checks.

Sampling, arrival latency and acceptance live in :mod:`readiness.phases.telemetry.sampling`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import value_check
from readiness.phasekit.context import Phase, production_writes_allowed
from readiness.phasekit.event_contract import validator_for
from readiness.probe.telemetry_store import TelemetryUnavailable, iso, parse_ts
from readiness.report.markdown import checks_frame, checks_table, header

CONTRACT_EVIDENCE = "evidence/telemetry_contract_events.json"
POST_SAMPLES = "evidence/a8_post_samples.json"
VERDICT_REPORT = "reports/a8_wiring_verdict.md"
INGEST_PATH = "/api/telemetry/events"
DEDUPE_EVENT = "qa_dedupe_probe"
MAX_VALIDATED = 5_000  # per event type: enough to find a wiring bug, bounded for a busy store
MAX_MESSAGES = 5

def run_window(phase: Phase, lookback_s: float = 0.0) -> tuple[dt.datetime, dt.datetime]:
    """From the run's start (minus ``lookback_s``, for an analyst's fresh run folder) to now."""
    started = parse_ts(phase.run.info()["started_at"])
    return started - dt.timedelta(seconds=lookback_s), dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)


def contract(phase: Phase, lookback_s: float = 0.0) -> pd.DataFrame:
    """One check per required event type (``telemetry.contract.<type>``) plus ``no_unknown_types``."""
    p = phase.params
    c = p.telemetry_contract
    since, until = run_window(phase, lookback_s)
    window = f"{iso(since)}/{iso(until)}"

    async def go() -> tuple[dict[str, list[dict[str, Any]]], int, str | None]:
        async with phase.client() as client:
            source = phase.telemetry(client)
            try:
                by_type = {t: await source.events(since=since, until=until, event_type=t, limit=MAX_VALIDATED)
                           for t in c.required_events}
                unknown = await source.events(since=since, until=until, event_type="unknown", limit=100)
            except TelemetryUnavailable as exc:
                return {}, 0, str(exc)
            return by_type, len(unknown), None

    by_type, unknown, error = aio.run(go())
    validator = validator_for(phase)
    total = sum(len(v) for v in by_type.values())
    evidence: dict[str, Any] = {"window": window, "store_error": error, "types": {}}
    checks: list[Check] = []
    common = dict(phase=phase.name, window=window, evidence=(CONTRACT_EVIDENCE,), tags=("observability",))
    ran = set(phase.run.info().get("phases", {})) | {phase.name}
    for event_type in c.required_events:
        events = by_type.get(event_type, [])
        problems = [(e.get("trace_id"), validator.errors(e)) for e in events]
        bad = [(t, errs) for t, errs in problems if errs]
        evidence["types"][event_type] = {
            "n": len(events), "invalid": len(bad), "capped_at": MAX_VALIDATED if len(events) >= MAX_VALIDATED else None,
            "problems": [{"trace_id": t, "errors": errs} for t, errs in bad[:MAX_MESSAGES]],
            "sample": events[0] if events else None}
        cid, title = f"telemetry.contract.{event_type}", f"{event_type} arrives with the contract fields"
        producer = c.producers.get(event_type)
        if not events and total and error is None and producer is not None and producer not in ran:
            checks.append(value_check(id=cid, title=title, observed=None, expected=1, comparator=">=", unit="events",
                                      n=0, severity="P1", detail=f"{event_type} did not arrive, and the phase that "
                                      f"drives its flow ({producer}) did not run in this run", **common))
            continue
        if not events:
            reason = (f"telemetry store unreadable: {error}" if error else
                      f"{event_type} never arrived in the window" if total else "no contract events in the window")
            checks.append(value_check(id=cid, title=title, observed=0 if total else None, expected=1,
                                      comparator=">=", unit="events", n=0, severity="P1", detail=reason, **common))
            continue
        first = "; ".join(f"{t}: {', '.join(errs[:3])}" for t, errs in bad[:2])
        checks.append(value_check(id=cid, title=title, observed=len(bad), expected=0, unit="invalid events",
                                  n=len(events), severity="P1", detail=first, **common))
    evidence["unknown_type_events"] = unknown
    checks.append(value_check(id="telemetry.contract.no_unknown_types", title="no event of type 'unknown' is stored",
                              observed=unknown if total and error is None else None, expected=0,
                              unit="events", n=total, severity="P1", **common))
    phase.run.write_json(CONTRACT_EVIDENCE, evidence)
    phase.record(checks)
    return checks_frame(checks)


def _probe_events(phase: Phase, run_tag: str, n: int, now: dt.datetime) -> list[dict[str, Any]]:
    """``n`` originals; each gets a twin with its trace but a new key and one with its key but a new trace."""
    base = {"event_type": DEDUPE_EVENT, "timestamp": iso(now), "app_id": "suite", "route": "dedupe_probe",
            "status": 200, "p95_ms": None, "finance_metrics": None, "revenue_event_id": None,
            "run_tag": run_tag, "tags": dict(phase.params.synthetic.tags)}
    return [{**base, "trace_id": uuid.uuid4().hex, "idempotency_key": f"dedupe-{run_tag}-{i}", "probe": i}
            for i in range(n)]


def dedupe(phase: Phase) -> pd.DataFrame:
    """Post ``dedupe_probe_pairs`` events, then the same events again plus same-trace/new-key and
    same-key/new-trace variants; the store must keep each original once and every variant."""
    p = phase.params
    c = p.telemetry_contract
    a8 = p.app(p.telemetry_app)
    refusal = production_writes_allowed(phase, f"{4 * c.dedupe_probe_pairs} synthetic dedupe probe events", (a8.id,))
    run_tag = uuid.uuid4().hex[:12]
    start = dt.datetime.now(dt.UTC)
    originals = _probe_events(phase, run_tag, c.dedupe_probe_pairs, start)
    new_key = [{**e, "idempotency_key": e["idempotency_key"] + "-k2", "variant": "same_trace"} for e in originals]
    new_trace = [{**e, "trace_id": uuid.uuid4().hex, "variant": "same_key"} for e in originals]
    batches = {"originals": originals, "replay": [*originals, *new_key, *new_trace]}

    async def go() -> dict[str, Any]:
        posts: list[dict[str, Any]] = []
        stored: list[dict[str, Any]] = []
        async with phase.client() as client:
            for name, events in batches.items():
                s = await client.post(a8.url(INGEST_PATH), app=a8.id, route=INGEST_PATH, json={"events": events},
                                      idempotency_key=True, keep_body=True, headers=phase.auth_headers(a8.id),
                                      synthetic_identity=phase.synthetic_identity)
                try:
                    answer = s.json() if s.body else None
                except ValueError:
                    answer = None
                posts.append({"batch": name, "events": len(events), "status": s.status, "error": s.error,
                              "trace_id": s.trace_id, "response": answer})
            want = 3 * len(originals)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + p.thresholds.telemetry_arrival_s
            source = phase.telemetry(client)
            while True:
                until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
                try:
                    rows = await source.events(since=start - dt.timedelta(seconds=1), until=until,
                                               event_type=DEDUPE_EVENT, limit=10 * want)
                except TelemetryUnavailable as exc:
                    return {"posts": posts, "stored": None, "error": str(exc)}
                present = {(r["idempotency_key"], r["trace_id"]) for r in rows if r.get("run_tag") == run_tag}
                if len(present) >= want or loop.time() >= give_up:
                    break
                await asyncio.sleep(c.poll_interval_s)
            traces = sorted({e["trace_id"] for e in batches["replay"]})
            since, until = start - dt.timedelta(seconds=1), dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            try:  # copies, not distinct events: a duplicate the store kept must count twice
                for trace in traces:
                    copies = await source.copies(trace_id=trace, since=since, until=until)
                    stored.extend(r for r in copies if r.get("run_tag") == run_tag)
            except TelemetryUnavailable as exc:
                return {"posts": posts, "stored": None, "error": str(exc)}
        return {"posts": posts, "stored": stored, "error": None}

    if refusal:
        return _record_dedupe(phase, None, originals, [], refusal, start, blocked=True)
    res = aio.run(go())
    return _record_dedupe(phase, res["stored"], originals, res["posts"], res["error"], start)


def _count_rows(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for r in rows:
        key = (str(r.get("idempotency_key")), str(r.get("trace_id")))
        counts[key] = counts.get(key, 0) + 1
    return counts


def _record_dedupe(phase: Phase, stored: list[dict[str, Any]] | None, originals: list[dict[str, Any]],
                   posts: list[dict[str, Any]], problem: str | None, start: dt.datetime,
                   blocked: bool = False) -> pd.DataFrame:
    """Record the dedupe checks; ``blocked``: nothing was posted because ``problem`` refused it."""
    window = f"{iso(start)}/{iso(dt.datetime.now(dt.UTC))}"
    counts = _count_rows(stored or [])
    pairs = [(e["idempotency_key"], e["trace_id"]) for e in originals]
    once = sum(1 for k in pairs if counts.get(k) == 1)
    twice = sum(1 for k in pairs if counts.get(k, 0) > 1)
    variants = [r for r in stored or [] if r.get("variant") in ("same_trace", "same_key")]
    distinct_variants = len({(r["idempotency_key"], r["trace_id"]) for r in variants})
    ok_posts = all(post["status"] == 202 for post in posts) and bool(posts)
    observed = None if stored is None or not ok_posts else once
    note = problem or ("" if ok_posts else "ingest refused a probe batch: " +
                       ", ".join(f"{x['batch']} → {x['status'] or x['error']}" for x in posts))
    phase.run.write_json(POST_SAMPLES, {
        "window": window, "ingest_path": INGEST_PATH, "auth": "bearer telemetry key (value not recorded)",
        "posts": posts, "sample_events": originals[:3], "stored_once": once, "stored_more_than_once": twice,
        "variants_kept": distinct_variants, "problem": problem, "blocked": blocked})
    common = dict(phase=phase.name, window=window, evidence=(POST_SAMPLES,), tags=("observability",),
                  severity="P1", app=phase.params.telemetry_app)
    n = len(pairs)
    checks = [
        value_check(id="telemetry.dedupe.replay_stored_once",
                    title="an event replayed with the same idempotency_key + trace_id is stored once",
                    observed=observed, expected=n, unit="pairs", n=n,
                    detail=_join(f"{once}/{n} pairs stored exactly once, {twice} stored more than once", note),
                    **common),
        value_check(id="telemetry.dedupe.distinct_pairs_kept",
                    title="events sharing only the key or only the trace are all kept",
                    observed=None if observed is None else distinct_variants, expected=2 * n, unit="events",
                    n=2 * n, detail=_join(f"{distinct_variants}/{2 * n} variants stored", note), **common),
    ]
    if blocked:
        checks = [c.with_status(Status.BLOCKED, problem) for c in checks]
    phase.record(checks)
    return checks_frame(checks)


def _join(text: str, extra: str | None) -> str:
    return f"{text}; {extra}" if extra else text


def write_verdict(phase: Phase) -> Markdown:
    """``reports/a8_wiring_verdict.md``: every check of this phase, with the profile note."""
    checks = phase.run.read_checks(phase.name)
    p = phase.params
    c = p.telemetry_contract
    lines = [header("A8 wiring verdict — telemetry contract", ecosystem=p.ecosystem, environment=p.environment,
                    run_name=phase.run.root.name, profile_note=p.profile_note),
             "", f"Required events: {', '.join(f'`{e}`' for e in c.required_events)}.",
             f"Contract fields: {', '.join(f'`{f}`' for f in c.contract_fields)}; finance events "
             f"({', '.join(c.finance_events) or 'none'}) carry non-null finance_metrics and revenue_event_id.",
             f"Sampling: {', '.join(c.high_volume_events)} at {c.sampling_success_rate:.0%} at the source; "
             "errors and finance at 100%.", "", checks_table(checks) if checks else "No checks recorded yet.", "",
             "Evidence: `" + "`, `".join(sorted({e for ch in checks for e in ch.evidence})) + "`." if checks else ""]
    text = "\n".join(lines) + "\n"
    phase.run.write_text(VERDICT_REPORT, text)
    return Markdown(text)
