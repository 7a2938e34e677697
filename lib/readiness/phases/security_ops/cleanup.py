"""Cleanup of synthetic audit data (docs/phases.md#10-security-and-ops): dry run first, then real, with a log.

An audit writes tagged synthetic data into the ecosystem it audits — learners, pages,
checkout sessions, providers, leads, telemetry events — every row created by a request
that carried ``X-Namespace: simulated_audit``. This module removes exactly those rows,
through each app's own cleanup API (``GET|DELETE /admin/synthetic?namespace=NS``, see
``sandbox/common/synthetic_cleanup.py``): the app knows which of its tables hold
synthetic rows and how a row's namespace is recorded, the audit only asks.

* :func:`plan` lists, per app and table, how many rows the namespace holds and sample ids.
* :func:`run_cleanup` with ``dry_run=True`` lists and deletes nothing. Without it, it
  deletes app by app, lists again to verify that nothing remains, and repeats (up to
  :data:`MAX_PASSES`, :data:`SETTLE_S` apart) while something does: telemetry of the
  audit's last requests may still be on its way to the telemetry store when the first
  pass runs. The cleanup's own requests carry no namespace tag, so they never become
  rows of the namespace being cleaned.

Safety: only the namespace the params tag synthetic traffic with may be cleaned, unless
the caller forces another; in ``prod`` a real cleanup needs a ``production_write``
approval (:func:`readiness.core.approvals.require_approval`), a dry run never does. The admin
credential is the sandbox's (:func:`readiness.probe.sandbox_control.admin_headers`); an app
answering 404 has no cleanup API and is skipped with a note, so an external ecosystem
is cleaned only where it exposes the same API.

With a run folder, each run appends to ``reports/updated_cleanup_log.txt`` (one line per
app and table: planned, deleted, remaining, time) and writes the full report with its
sample ids to ``evidence/cleanup_<mode>.json``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from readiness.core import aio
from readiness.core.approvals import require_approval
from readiness.core.check import Check, Status
from readiness.core.runfolder import RunFolder
from readiness.core.verdict import value_check
from readiness.params.model import App, Params
from readiness.phasekit.context import Phase, part
from readiness.probe.client import ClientLimits, GuardedClient, Sample, SyntheticPolicy
from readiness.probe.sandbox_control import admin_headers
from readiness.report.markdown import checks_frame

CLEANUP_PATH = "/admin/synthetic"
LOG = "reports/updated_cleanup_log.txt"
EVIDENCE = "evidence/cleanup_{mode}.json"
PHASE = "10_security_ops"
MAX_PASSES = 3
SETTLE_S = 1.0
MAX_NAMESPACE = 128
_NAMESPACE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAMESPACE - 1}}}$")


class CleanupError(ValueError):
    """Input the cleanup refuses before sending anything (bad or unexpected namespace)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_namespace(params: Params, namespace: str, *, force: bool = False) -> str:
    """The namespace to clean, or :class:`CleanupError` saying why it may not be cleaned."""
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise CleanupError(f"namespace {namespace!r} is not valid: 1 to {MAX_NAMESPACE} letters, digits, '_', '-' "
                           "or '.', starting with a letter or digit")
    expected = params.synthetic.tags.get("namespace")
    if namespace != expected and not force:
        tagged = f"namespace {expected!r}" if expected else "no namespace"
        raise CleanupError(f"namespace {namespace!r} is not the one these params tag synthetic traffic with "
                           f"({tagged}); pass --force-namespace to clean it anyway")
    return namespace


@dataclasses.dataclass(frozen=True)
class AppPlan:
    """What one app holds of the namespace. ``status``: ``ok``, ``no_api`` (404) or ``error``."""

    app_id: str
    status: str
    items: dict[str, int]
    sample: dict[str, list[Any]]
    note: str = ""

    @property
    def total(self) -> int:
        return sum(self.items.values())


def parse_listing(app_id: str, sample: Sample) -> AppPlan:
    """An app's answer to ``GET /admin/synthetic`` as an :class:`AppPlan` (never raises)."""
    if sample.status is None:
        return AppPlan(app_id, "error", {}, {}, f"unreachable: {sample.error_detail or sample.error}")
    if sample.status == 404:
        return AppPlan(app_id, "no_api", {}, {}, f"no synthetic-data cleanup API (GET {CLEANUP_PATH} answered 404): "
                                                 "skipped, nothing is cleaned here")
    if sample.status in (401, 403):
        return AppPlan(app_id, "error", {}, {}, f"admin credential refused ({sample.status}): is this the sandbox "
                                                "that exported SANDBOX_ADMIN_TOKEN?")
    if sample.status != 200:
        return AppPlan(app_id, "error", {}, {}, f"GET {CLEANUP_PATH} answered {sample.status}")
    try:
        body = sample.json()
    except ValueError:
        body = None
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, dict) or not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                              and v >= 0 for k, v in items.items()):
        return AppPlan(app_id, "error", {}, {}, "answer is not {\"items\": {table: count}}")
    raw = body.get("sample") if isinstance(body.get("sample"), dict) else {}
    sample_ids = {t: list(raw.get(t) or [])[:20] for t in items}
    note = "" if items else "declares no table of synthetic data"
    return AppPlan(app_id, "ok", dict(items), sample_ids, note)


@dataclasses.dataclass(frozen=True)
class TableResult:
    """One log line: an app's table, rows planned, deleted and remaining (None: not applicable)."""

    app_id: str
    table: str
    planned: int
    deleted: int | None
    remaining: int | None
    at: str
    sample: tuple[Any, ...] = ()


@dataclasses.dataclass(frozen=True)
class CleanupReport:
    """Outcome of one :func:`run_cleanup`: the plan, what went, what remains, and why not."""

    namespace: str
    dry_run: bool
    environment: str
    started_at: str
    finished_at: str
    apps: tuple[AppPlan, ...]
    tables: tuple[TableResult, ...]
    passes: int = 0
    refused: str | None = None
    log: str | None = None
    evidence: str | None = None

    @property
    def planned(self) -> int:
        return sum(t.planned for t in self.tables)

    @property
    def deleted(self) -> int:
        return sum(t.deleted or 0 for t in self.tables)

    @property
    def remaining(self) -> int | None:
        """Rows left after a real run (None for a dry run, which verifies nothing)."""
        return None if self.dry_run else sum(t.remaining or 0 for t in self.tables)

    @property
    def errors(self) -> list[AppPlan]:
        return [a for a in self.apps if a.status == "error"]

    @property
    def ok(self) -> bool:
        """Every app answered, and for a real run nothing remains."""
        return not self.errors and self.refused is None and (self.dry_run or self.remaining == 0)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{k: v for k, v in dataclasses.asdict(t).items() if k != "sample"} for t in self.tables],
                            columns=["app_id", "table", "planned", "deleted", "remaining", "at"])

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "planned_total": self.planned, "deleted_total": self.deleted,
                "remaining_total": self.remaining, "ok": self.ok}


def log_lines(report: CleanupReport) -> list[str]:
    """The report as ``updated_cleanup_log.txt`` lines: a header, one line per table, one per skipped app."""
    mode = "dry-run" if report.dry_run else "real"
    lines = [f"# cleanup {mode} namespace={report.namespace} environment={report.environment} "
             f"started={report.started_at} finished={report.finished_at} passes={report.passes}"
             + (f" REFUSED: {report.refused}" if report.refused else "")]
    show = {None: "-"}
    for t in report.tables:
        lines.append(f"{mode} {t.app_id} {t.table} planned={t.planned} deleted={show.get(t.deleted, t.deleted)} "
                     f"remaining={show.get(t.remaining, t.remaining)} time={t.at}")
    for a in report.apps:
        if a.status != "ok" or not a.items:
            lines.append(f"{mode} {a.app_id} - {a.status}: {a.note}")
    return lines


def _client(params: Params) -> GuardedClient:
    """A guarded client whose synthetic tags leave the namespace out (see the module docstring)."""
    h = params.http
    env_tag = "staging" if params.environment == "staging" else "prod_observe"
    tags = {k: v for k, v in params.synthetic.tags.items() if k != "namespace"}
    return GuardedClient(
        environment=params.environment,
        synthetic=SyntheticPolicy(identities=frozenset(params.synthetic.identities.values()), tags=tags,
                                  env_tag=env_tag),
        limits=ClientLimits(connect_timeout_s=h.connect_timeout_s, read_timeout_s=h.read_timeout_s,
                            total_timeout_s=h.total_timeout_s, max_response_bytes=h.max_response_bytes),
        allowed_hosts=frozenset(a.host for a in params.apps) if params.target == "sandbox" else None)


def _url(app: App, namespace: str) -> str:
    return app.url(f"{CLEANUP_PATH}?namespace={namespace}")


async def plan(params: Params, client: GuardedClient, namespace: str) -> list[AppPlan]:
    """``GET /admin/synthetic`` on every app at once: per app, counts and sample ids per table."""
    async def one(app: App) -> AppPlan:
        sample = await client.get(_url(app, namespace), app=app.id, route=CLEANUP_PATH, headers=admin_headers(),
                                  keep_body=True)
        return parse_listing(app.id, sample)

    return list(await asyncio.gather(*(one(a) for a in params.apps)))


async def _delete(params: Params, client: GuardedClient, app_id: str, namespace: str) -> dict[str, int] | str:
    """``DELETE /admin/synthetic`` on one app: rows deleted per table, or why it failed."""
    identity = None
    if params.environment == "prod":  # a prod write must be synthetic; the approval was checked first
        identity = params.synthetic.identities.get("student") or next(iter(params.synthetic.identities.values()))
    sample = await client.delete(_url(params.app(app_id), namespace), app=app_id, route=CLEANUP_PATH,
                                 headers=admin_headers(), keep_body=True, synthetic_identity=identity)
    if sample.status != 200:
        return f"DELETE {CLEANUP_PATH} answered {sample.status or sample.error}"
    try:
        body = sample.json()
    except ValueError:
        body = None
    deleted = body.get("deleted") if isinstance(body, dict) else None
    if not isinstance(deleted, dict) or not all(isinstance(v, int) for v in deleted.values()):
        return "DELETE answer has no {\"deleted\": {table: count}}"
    return {str(k): int(v) for k, v in deleted.items()}


def _tables(before: Sequence[AppPlan], after: Sequence[AppPlan] | None, deleted: dict[tuple[str, str], int] | None,
            at: str) -> tuple[TableResult, ...]:
    now = {a.app_id: a for a in after} if after is not None else {}
    rows = []
    for app in before:
        for table, planned in app.items.items():
            left = now[app.app_id].items.get(table) if app.app_id in now else None
            rows.append(TableResult(app.app_id, table, planned,
                                    None if deleted is None else deleted.get((app.app_id, table), 0),
                                    left, at, tuple(app.sample.get(table, ()))))
    return tuple(rows)


async def _execute(params: Params, namespace: str, dry_run: bool, refused: str | None,
                   ) -> tuple[list[AppPlan], tuple[TableResult, ...], int]:
    async with _client(params) as client:
        before = await plan(params, client, namespace)
        if dry_run:
            return before, _tables(before, None, None, _now()), 0
        if refused is not None:
            return before, _tables(before, before, {}, _now()), 0
        deleted: dict[tuple[str, str], int] = {}
        failed: dict[str, str] = {}
        current, passes = before, 0
        while passes < MAX_PASSES:
            passes += 1
            for app in (a for a in current if a.status == "ok" and a.total > 0):
                outcome = await _delete(params, client, app.app_id, namespace)
                if isinstance(outcome, str):
                    failed[app.app_id] = outcome
                    continue
                for table, n in outcome.items():
                    deleted[(app.app_id, table)] = deleted.get((app.app_id, table), 0) + n
            current = await plan(params, client, namespace)
            if failed or all(a.total == 0 for a in current if a.status == "ok"):
                break
            if passes < MAX_PASSES:
                await asyncio.sleep(SETTLE_S)
        now = {a.app_id: a for a in current}
        apps = [dataclasses.replace(b, status="error", note=failed[b.app_id]) if b.app_id in failed
                else now[b.app_id] if now[b.app_id].status == "error" else b for b in before]
        return apps, _tables(before, current, deleted, _now()), passes


def run_cleanup(params: Params, *, namespace: str, dry_run: bool, run: RunFolder | None,
                force_namespace: bool = False) -> CleanupReport:
    """Dry run (list only) or real run (delete, then verify) of ``namespace``; see the module docstring.

    Raises :class:`CleanupError` for a namespace that may not be cleaned, and for a real
    cleanup in ``prod`` without a run folder (its approval decision must be logged).
    """
    namespace = check_namespace(params, namespace, force=force_namespace)
    started = _now()
    refused = None
    if not dry_run and params.environment == "prod":
        if run is None:
            raise CleanupError("a real cleanup in prod needs a run folder: its production_write approval "
                               "decision is logged there")
        decision = require_approval(params, run, "production_write", phase=PHASE,
                                    apps=tuple(a.id for a in params.apps),
                                    detail=f"delete synthetic data of namespace {namespace}")
        refused = None if decision.granted else decision.reason
    apps, tables, passes = aio.run(_execute(params, namespace, dry_run, refused))
    report = CleanupReport(namespace=namespace, dry_run=dry_run, environment=params.environment,
                           started_at=started, finished_at=_now(), apps=tuple(apps), tables=tables, passes=passes,
                           refused=refused)
    if run is None:
        return report
    evidence = EVIDENCE.format(mode="dry_run" if dry_run else "real")
    report = dataclasses.replace(report, log=LOG, evidence=evidence)
    path = run.path(LOG)
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    run.write_text(LOG, previous + "\n".join(log_lines(report)) + "\n", producer=PHASE)
    run.write_json(evidence, report.to_dict(), producer=PHASE)
    return report


def cleanup_checks(dry: CleanupReport, real: CleanupReport) -> list[Check]:
    """``cleanup.*`` checks of a dry run followed by a real run of the same namespace."""
    evidence = [p for p in (dry.evidence, real.evidence, real.log) if p]
    common = {"phase": PHASE, "tags": ("data_protection", "runbooks_handover"), "evidence": evidence}
    listed = value_check(id="cleanup.dry_run.listed", title="Dry run lists the synthetic data of every app",
                         observed=len(dry.errors), expected=0, unit="apps failing", n=len(dry.apps),
                         detail=f"{dry.planned} rows of {dry.namespace!r} listed; nothing deleted", **common)
    remaining = value_check(id="cleanup.real.remaining", title="Real run leaves no synthetic row behind",
                            observed=real.remaining if not real.errors else None, expected=0, unit="rows",
                            n=real.planned, detail=f"{real.deleted} deleted in {real.passes} pass(es)", **common)
    covered = value_check(id="cleanup.real.covers_plan", title="Real run deletes at least what the dry run listed",
                          observed=real.deleted, expected=dry.planned, comparator=">=", unit="rows", n=dry.planned,
                          **common)
    logged = value_check(id="cleanup.log", title="Cleanup log written (updated_cleanup_log.txt)",
                         observed=real.log is not None, expected=True, **common)
    checks = [listed, remaining, covered, logged]
    if real.refused is not None:
        checks[1:3] = [c.with_status(Status.BLOCKED, real.refused) for c in checks[1:3]]
    return checks


@part("cleanup")
def clean_up(phase: Phase) -> pd.DataFrame:
    """The phase's last data-touching step: a dry run, then the real run, of the namespace the
    params tag synthetic traffic with; records the ``cleanup.*`` checks."""
    namespace = phase.params.synthetic.tags.get("namespace", "")
    dry = run_cleanup(phase.params, namespace=namespace, dry_run=True, run=phase.run)
    real = run_cleanup(phase.params, namespace=namespace, dry_run=False, run=phase.run)
    checks = cleanup_checks(dry, real)
    phase.record(checks)
    return checks_frame(checks)
