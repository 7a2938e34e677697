"""Phase 04 header hardening: every mutating route × every rule of the idempotency contract.

For each route of ``params.hardening.routes`` the audit sends real requests and records
one check per rule (:data:`RULES`, ids ``hardening.<APP>.<route>.<rule>``): a missing
``X-Idempotency-Key`` or ``X-Trace-Id`` is a 428; a replay within the dedupe window gets
the stored response (status and body) with exactly one side effect; the same key with
another valid body is a 422; of two concurrent duplicates one succeeds and one gets 409;
keys are scoped per caller (two synthetic identities, two effects); a key is new again
after the window.

Every probe is a synthetic write (tagged with a synthetic identity). In ``prod`` a route's
probes are sent only under a ``production_write`` approval covering its app; without one
the route's cells are BLOCKED with the refusal and nothing is sent to it.

Side effects are never inferred from responses: each route names the telemetry event
every effect emits with the request's idempotency key (``effect_event``), and the audit
counts those events in the telemetry store after a settle time. A rule that needs the
count on a route without one is INCONCLUSIVE and says why. A concurrent pair the route
answered as a replay (it finished the first request before the second arrived) proves
nothing either way: the audit tries ``concurrency_attempts`` pairs and, on the sandbox,
asks the route to hold its key while it works (``X-Sandbox-Hold-Ms``). The IETF draft's
view (``Idempotency-Key``, 400 for a missing key) is reported as information only.

This module plans the routes, counts the effects once for all of them and writes the
matrix and the report; the rules themselves live in :mod:`readiness.phases.funnels.hardening_rules`.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import time
from typing import Any

import pandas as pd

from readiness.core import aio
from readiness.core.check import Check
from readiness.params.model import Params
from readiness.phasekit.context import Phase, part, production_writes_allowed
from readiness.phases.funnels.hardening_rules import (
    EFFECTS,
    REPORT,
    REQUESTS,
    RULES,
    TITLES,
    Cell,
    Effects,
    Target,
    audit_route,
    blocked_checks,
    render,
)
from readiness.probe.client import GuardedClient
from readiness.probe.telemetry_store import TelemetrySource, TelemetryUnavailable
from readiness.report.markdown import checks_table, header, md_table

__all__ = ["EFFECTS", "IETF_COLUMNS", "REPORT", "REQUESTS", "RULES", "TITLES", "Cell", "Effects", "Target",
           "count_effects", "matrix", "plan", "refusals", "render", "run_hardening"]

IETF_COLUMNS = ("IETF: missing key →", "IETF: `Idempotency-Key` only →")
IETF_MISSING_KEY_STATUS = 400


def plan(params: Params) -> list[Target]:
    """The audited routes, each with its app and the identities it is sent as (the apps and
    identities they name were checked when the params were loaded)."""
    identities = params.synthetic.identities
    out = []
    for route in params.hardening.routes:
        other = next((v for k, v in identities.items() if v != identities[route.identity]), None)
        out.append(Target(route, params.app(route.app), identities[route.identity], other))
    return out


async def _stored_copies(source: TelemetrySource, found: dict[str, list[dict[str, Any]]],
                         wanted: dict[str, set[str]], since: dt.datetime,
                         until: dt.datetime) -> dict[str, collections.Counter[str]]:
    """Every stored copy of the wanted effect events, per event type and key.

    The event listing folds copies of one (trace id, key) pair into one row; two copies are
    two side effects, though — a route whose effect event carries ids of the request body
    (a telemetry event re-ingested after the window) stores the same pair twice — so the
    copies of each trace involved are counted one by one.
    """
    counts: dict[str, collections.Counter[str]] = {}
    for event_type, keys in wanted.items():
        counts[event_type] = collections.Counter()
        traces = sorted({str(e.get("trace_id")) for e in found[event_type] if e.get("idempotency_key") in keys})
        for trace in traces:
            for e in await source.copies(trace_id=trace, since=since, until=until):
                if e.get("event_type") == event_type and e.get("idempotency_key") in keys:
                    counts[event_type][str(e["idempotency_key"])] += 1
    return counts


async def count_effects(phase: Phase, client: GuardedClient, wanted: dict[str, set[str]],
                        since: dt.datetime) -> Effects:
    """Count the effect events of ``wanted`` keys, waiting up to the arrival threshold for each to appear."""
    if not wanted:
        return Effects({})
    source = phase.telemetry(client)
    deadline = time.monotonic() + phase.params.thresholds.telemetry_arrival_s
    await asyncio.sleep(phase.params.hardening.settle_s)
    while True:
        until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        try:
            found = {t: await source.events(since=since, until=until, event_type=t) for t in wanted}
            seen = {t: {e.get("idempotency_key") for e in events} for t, events in found.items()}
            if all(keys <= seen[t] for t, keys in wanted.items()) or time.monotonic() > deadline:
                return Effects(await _stored_copies(source, found, wanted, since, until))
        except TelemetryUnavailable as exc:
            return Effects({}, unavailable=str(exc))
        await asyncio.sleep(1.0)


def refusals(phase: Phase, targets: list[Target]) -> dict[str, str]:
    """App id → why its routes may not be probed (prod without approval); one decision per app."""
    out = {}
    for app in sorted({t.route.app for t in targets}):
        n = sum(1 for t in targets if t.route.app == app)
        why = production_writes_allowed(phase, f"header hardening probes on {n} route(s) (synthetic writes)", (app,))
        if why:
            out[app] = why
    return out


async def _run(phase: Phase) -> tuple[list[Check], list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    planned = plan(phase.params)
    refused = refusals(phase, planned)
    targets = [t for t in planned if t.route.app not in refused]
    log: list[dict[str, Any]] = []
    wanted: dict[str, set[str]] = {}
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    async with phase.client() as client:
        cells = [Cell(phase, client, t, log, wanted) for t in targets]
        judged = await asyncio.gather(*(audit_route(c) for c in cells))
        effects = await count_effects(phase, client, wanted, since)
    checks = [judge(effects) for route_judges in judged for judge in route_judges]
    checks += [c for t in planned if t.route.app in refused for c in blocked_checks(phase, t, refused[t.route.app])]
    info = {c.target.prefix: c.info for c in cells}
    counts = {"unavailable": effects.unavailable, "blocked": refused,
              "counts": {t: dict(c) for t, c in effects.counts.items()}, "wanted": {t: sorted(k) for t, k in
                                                                                    wanted.items()}}
    return checks, log, info, counts


def matrix(checks: list[Check]) -> pd.DataFrame:
    """Route × rule table of statuses from recorded ``hardening.*`` checks."""
    rows: dict[str, dict[str, str]] = {}
    for c in checks:
        route, _, rule = c.id.removeprefix("hardening.").rpartition(".")
        if rule in RULES:
            rows.setdefault(route, {})[rule] = str(c.status)
    return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(RULES)).fillna("—")


def _ietf_rows(info: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for route, seen in info.items():
        missing, draft = seen.get("missing_key_status"), seen.get("draft_header_status")
        verdict = "matches" if missing == IETF_MISSING_KEY_STATUS else "differs"
        honours = "yes" if draft is not None and 200 <= draft < 300 else "no"
        rows.append((route, f"{missing} ({verdict} the draft's {IETF_MISSING_KEY_STATUS})",
                     f"{draft} (honours `Idempotency-Key`: {honours})"))
    return rows


@part("hardening")
def run_hardening(phase: Phase) -> pd.DataFrame:
    """Audit every route of ``params.hardening.routes``; record the checks, write the evidence and report.

    Returns the route × rule matrix of statuses, plus the two informational IETF columns.
    """
    checks, log, info, counts = aio.run(_run(phase))
    phase.run.write_json(REQUESTS, log)
    phase.run.write_json(EFFECTS, counts)
    phase.record(checks)
    table = matrix(checks)
    ietf = pd.DataFrame(_ietf_rows(info), columns=["route", *IETF_COLUMNS]).set_index("route")
    p = phase.params
    text = header("Idempotency and header hardening", ecosystem=p.ecosystem, environment=p.environment,
                  run_name=phase.run.root.name, profile_note=p.profile_note)
    text += ("\nEach cell is one recorded check `hardening.<app>.<route>.<rule>`. Side effects are counted in the "
             "telemetry store (events carrying the request's idempotency key), never read from the responses. "
             f"Dedupe window under test: {p.windows.active.dedupe_s:g} s ({p.windows.profile} profile).\n\n")
    text += md_table(["route", *RULES], [(r, *(table.loc[r, c] for c in RULES)) for r in table.index])
    text += ("\n\n## IETF draft view (information only, no verdict)\n\nThe IETF draft "
             "(draft-ietf-httpapi-idempotency-key-header) names the header `Idempotency-Key` and answers a missing "
             "key with 400; this suite's contract uses `X-Idempotency-Key` and 428.\n\n")
    text += md_table(["route", *IETF_COLUMNS], ietf.itertuples())
    text += "\n\n## Checks\n\n" + checks_table(checks) + "\n"
    phase.run.write_text(REPORT, text)
    return table.join(ietf)
