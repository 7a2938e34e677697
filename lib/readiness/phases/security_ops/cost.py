"""Cost and capacity: what the run cost the local target processes, against the baseline run.

Compute is read from the processes themselves (CPU seconds, resident memory), load from
the telemetry store (requests each app reported in the run's window), backlog from the
apps' own status endpoints (``monitoring.capacity.queue_probes``). One number alone says
little; the delta against the latest complete earlier run of the same ecosystem says
whether a change made the platform more expensive to run. CPU is compared per request
(CPU seconds grow with whatever the run drove), memory and queue depth as they stand.
Without an earlier snapshot the comparisons are INCONCLUSIVE, never PASS.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psutil

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.runfolder import latest_complete_run
from readiness.core.verdict import value_check
from readiness.params.model import App
from readiness.phasekit.context import Phase
from readiness.phases.security_ops.ports import is_local, listeners, local_addresses
from readiness.probe.telemetry_store import TelemetryUnavailable, iso, parse_ts

SNAPSHOT = "evidence/cost_snapshot.json"
DELTAS = "evidence/cost_delta.csv"
TAGS = ("cost_capacity",)
NO_BASELINE = "no baseline snapshot"


# -- pure delta logic -----------------------------------------------------------------------
def growth_pct(before: float | None, after: float | None) -> float | None:
    """Relative change in percent; None when either side is missing or the baseline is 0."""
    if before is None or after is None or before == 0:
        return None
    return (after - before) / before * 100.0


def per_request(cpu_s: float | None, requests: int | None) -> float | None:
    """CPU milliseconds per request (None without requests: nothing to divide by)."""
    if cpu_s is None or not requests:
        return None
    return cpu_s * 1000.0 / requests


@dataclass(frozen=True)
class Delta:
    """One metric of one subject (an app, a queue) in the baseline run and in this one."""

    subject: str
    metric: str
    baseline: float | None
    current: float | None

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.current is None else self.current - self.baseline

    @property
    def pct(self) -> float | None:
        return growth_pct(self.baseline, self.current)


APP_METRICS = ("cpu_s", "rss_mb", "requests", "cpu_ms_per_request")


def deltas(baseline: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[Delta]:
    """Every app metric and queue depth of ``current`` next to the same one in ``baseline``."""
    base_apps = (baseline or {}).get("apps", {})
    out = [Delta(app, metric, (base_apps.get(app) or {}).get(metric), values.get(metric))
           for app, values in current.get("apps", {}).items() for metric in APP_METRICS]
    base_queues = {q["key"]: q.get("depth") for q in (baseline or {}).get("queues", [])}
    out += [Delta(q["key"], "queue_depth", base_queues.get(q["key"]), q.get("depth")) for q in current.get("queues", [])]
    return out


def frame(rows: list[Delta]) -> pd.DataFrame:
    return pd.DataFrame([{"subject": d.subject, "metric": d.metric, "baseline": d.baseline, "current": d.current,
                          "delta": d.delta, "delta_pct": d.pct} for d in rows])


# -- measuring ------------------------------------------------------------------------------
def process_usage(pid: int) -> dict[str, Any]:
    """CPU seconds (user + system, children included), RSS and start of one process."""
    proc = psutil.Process(pid)
    with proc.oneshot():
        cpu = proc.cpu_times()
        return {"pid": pid, "cpu_s": round(cpu.user + cpu.system + cpu.children_user + cpu.children_system, 3),
                "rss_mb": round(proc.memory_info().rss / 2**20, 2), "threads": proc.num_threads(),
                "started_at": iso(dt.datetime.fromtimestamp(proc.create_time(), dt.UTC))}


def _dig(body: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        body = body.get(part) if isinstance(body, dict) else None
    return body


async def _remote(phase: Phase, since: Mapping[str, dt.datetime], until: dt.datetime
                  ) -> tuple[dict[str, int | None], list[dict[str, Any]]]:
    """Requests per app since ``since[app]`` from the telemetry store; queue depths from status endpoints."""
    p = phase.params
    requests: dict[str, int | None] = {}
    queues = []
    known = {a.id: a for a in p.apps}
    async with phase.client() as client:
        source = phase.telemetry(client)
        for app in p.apps:
            try:
                rows = await source.events(since=since[app.id], until=until, app_id=app.id,
                                           event_type="http_request", limit=1_000_000)
                requests[app.id] = len(rows)
            except TelemetryUnavailable:
                requests[app.id] = None
        for probe in p.monitoring.capacity.queue_probes:
            entry: dict[str, Any] = {"key": f"{probe.app}.{probe.field}", "app": probe.app, "path": probe.path,
                                     "field": probe.field, "depth": None}
            if probe.app not in known:
                entry["error"] = f"unknown app {probe.app!r}"
                queues.append(entry)
                continue
            sample = await client.get(known[probe.app].url(probe.path), app=probe.app, route=probe.path,
                                      keep_body=True)
            try:
                value = _dig(sample.json(), probe.field) if sample.ok else None
            except ValueError:
                value = None
            if isinstance(value, int | float) and not isinstance(value, bool):
                entry["depth"] = value
            else:
                entry["error"] = f"{probe.path} → {sample.status or sample.error}: no number at {probe.field!r}"
            queues.append(entry)
    return requests, queues


def measure(phase: Phase) -> dict[str, Any]:
    """This run's snapshot: per local app process, and per queue probe.

    CPU seconds accumulate over a process's life, so its requests are counted over the same
    span (from the process's start); an app without a readable process counts from the run's start.
    """
    p = phase.params
    run_start = parse_ts(str(phase.run.info().get("started_at") or iso(dt.datetime.now(dt.UTC))))
    addresses, everything = local_addresses(), listeners()
    apps: dict[str, dict[str, Any]] = {}
    for app in p.apps:
        entry: dict[str, Any] = {}
        if not is_local(app.host, addresses):
            entry["skipped"] = "not a local process"
        else:
            pids = sorted({x.pid for x in everything if x.port == app.port and x.pid is not None})
            if len(pids) == 1:
                try:
                    entry.update(process_usage(pids[0]))
                except psutil.Error as exc:
                    entry["error"] = f"pid {pids[0]}: {exc}"
            else:
                entry["error"] = f"{len(pids)} processes listen on port {app.port}: {pids}"
        apps[app.id] = entry
    since = {a: parse_ts(e["started_at"]) if "started_at" in e else run_start for a, e in apps.items()}
    until = dt.datetime.now(dt.UTC)
    requests, queues = aio.run(_remote(phase, since, until))
    for app_id, entry in apps.items():
        entry.update(requests=requests.get(app_id), requests_since=iso(since[app_id]))
        entry["cpu_ms_per_request"] = per_request(entry.get("cpu_s"), entry["requests"])
    return {"generated_at": iso(until), "run_started_at": iso(run_start), "apps": apps, "queues": queues}


# -- verdicts --------------------------------------------------------------------------------
def _growth_check(phase: Phase, app: App, cid: str, title: str, d: Delta | None, max_pct: float,
                  baseline_name: str | None, entry: Mapping[str, Any]) -> Check:
    common = dict(id=cid, phase=phase.name, title=title, app=app.id, tags=TAGS, evidence=(SNAPSHOT, DELTAS))
    if entry.get("skipped"):
        return Check(status=Status.SKIPPED, detail=str(entry["skipped"]), **common)
    if baseline_name is None:
        return value_check(observed=None, expected=max_pct, comparator="<=", unit="%", detail=NO_BASELINE, **common)
    shown = (f"baseline {baseline_name}: {d.baseline:g} → {d.current:g}" if d and d.delta is not None
             else f"baseline {baseline_name}: no comparable value" + (f" ({entry['error']})" if "error" in entry else ""))
    return value_check(observed=d.pct if d else None, expected=max_pct, comparator="<=", unit="%", detail=shown,
                       **common)


def _checks(phase: Phase, current: dict[str, Any], rows: list[Delta], baseline_name: str | None) -> list[Check]:
    cap = phase.params.monitoring.capacity
    by = {(d.subject, d.metric): d for d in rows}
    checks = []
    for app in phase.params.apps:
        entry = current["apps"][app.id]
        checks.append(_growth_check(phase, app, f"ops.cost.{app.id}.rss", f"{app.id} resident memory grew at most "
                                    f"{cap.rss_growth_max_pct:g}% against the baseline run",
                                    by.get((app.id, "rss_mb")), cap.rss_growth_max_pct, baseline_name, entry))
        checks.append(_growth_check(phase, app, f"ops.cost.{app.id}.cpu_per_request",
                                    f"{app.id} CPU per request grew at most {cap.cpu_per_request_growth_max_pct:g}% "
                                    "against the baseline run", by.get((app.id, "cpu_ms_per_request")),
                                    cap.cpu_per_request_growth_max_pct, baseline_name, entry))
    for q in current["queues"]:
        d = by.get((q["key"], "queue_depth"))
        common = dict(id=f"ops.cost.queue.{q['key']}", phase=phase.name, app=q["app"], tags=TAGS,
                      title=f"{q['key']} queue depth not growing (at most +{cap.queue_growth_max} against the baseline)",
                      evidence=(SNAPSHOT, DELTAS), unit="jobs", comparator="<=")
        if baseline_name is None or d is None or d.delta is None:
            why = NO_BASELINE if baseline_name is None else q.get("error") or f"baseline {baseline_name}: no depth"
            checks.append(value_check(observed=None, expected=cap.queue_growth_max, detail=why, **common))
        else:
            checks.append(value_check(observed=d.delta, expected=cap.queue_growth_max, n=1,
                                      detail=f"baseline {baseline_name}: {d.baseline:g} → {d.current:g}", **common))
    return checks


def snapshot(phase: Phase) -> pd.DataFrame:
    """Measure, write ``evidence/cost_snapshot.json`` and the delta table against the baseline run.

    Records ``ops.cost.<APP>.rss``, ``ops.cost.<APP>.cpu_per_request`` and
    ``ops.cost.queue.<APP>.<field>``; returns the delta table.
    """
    current = measure(phase)
    base_dir = latest_complete_run(phase.run.root.parent, exclude=phase.run.root, ecosystem=phase.params.ecosystem)
    baseline = None
    if base_dir is not None and (base_dir / SNAPSHOT).is_file():
        try:
            baseline = json.loads((base_dir / SNAPSHOT).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            baseline = None
    baseline_name = base_dir.name if baseline is not None and base_dir is not None else None
    current["baseline_run"] = baseline_name
    rows = deltas(baseline, current)
    table = frame(rows)
    phase.run.write_json(SNAPSHOT, current)
    phase.run.write_text(DELTAS, table.to_csv(index=False))
    phase.record(_checks(phase, current, rows, baseline_name))
    return table
