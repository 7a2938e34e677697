"""Approvals for restricted actions (docs/phases.md#guardrails): the one place that says yes or no.

A restricted action (load above 60 virtual users, 503 injection, production writes,
cookie-policy changes, secret rotation, live-mode charges, risky bandit policy changes)
runs only when the params hold an approval for that action whose scope covers it. Every
decision — approved, refused or escalated — is appended to ``reports/hitl_approvals.log``
so that a reviewer sees what the suite did on its own authority and what it did not.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from readiness.core.runfolder import RunFolder
from readiness.params.model import Params
from readiness.params.sections import RESTRICTED_ACTIONS, Approval

LOG = "reports/hitl_approvals.log"


@dataclass(frozen=True)
class Decision:
    """Outcome of :func:`require_approval`. ``approval`` is set only when granted."""

    action: str
    granted: bool
    reason: str
    approval: Approval | None = None


def _covers(appr: Approval, params: Params, apps: tuple[str, ...], vus: int | None, cycles: int | None,
            today: dt.date) -> str | None:
    """None when ``appr`` covers the request, else why not."""
    if appr.environment != "any" and appr.environment != params.environment:
        return f"{appr.id} is for {appr.environment}, this run targets {params.environment}"
    if appr.expires is not None and appr.expires < today:
        return f"{appr.id} expired on {appr.expires.isoformat()}"
    outside = [a for a in apps if appr.apps and a not in appr.apps]
    if outside:
        return f"{appr.id} does not cover {', '.join(outside)} (covers {', '.join(appr.apps)})"
    if vus is not None and appr.max_vus is not None and vus > appr.max_vus:
        return f"{appr.id} allows at most {appr.max_vus} virtual users, {vus} requested"
    if cycles is not None and appr.cycles is not None and cycles > appr.cycles:
        return f"{appr.id} allows at most {appr.cycles} cycles, {cycles} requested"
    return None


def require_approval(params: Params, run: RunFolder, action: str, *, phase: str, apps: tuple[str, ...] = (),
                     vus: int | None = None, cycles: int | None = None, detail: str = "",
                     today: dt.date | None = None) -> Decision:
    """Decide whether ``action`` may run, and log the decision either way.

    The gate every restricted action (docs/phases.md#guardrails) goes through: an approval covers the
    request when its action matches, its environment is this run's (or ``any``), it has
    not expired, its apps include every app touched, and the requested virtual users and
    cycles are within its limits.
    """
    if action not in RESTRICTED_ACTIONS:
        raise ValueError(f"unknown restricted action {action!r}; known: {', '.join(RESTRICTED_ACTIONS)}")
    day = today or dt.date.today()
    reasons: list[str] = []
    decision: Decision | None = None
    for appr in (a for a in params.approvals if a.action == action):
        why_not = _covers(appr, params, apps, vus, cycles, day)
        if why_not is None:
            decision = Decision(action, True, f"approved by {appr.id} ({appr.granted_by}): {appr.scope}", appr)
            break
        reasons.append(why_not)
    if decision is None:
        why = "; ".join(reasons) if reasons else "no approval for this action in params.approvals"
        decision = Decision(action, False, f"refused: {why}")
    log_event(run, "approved" if decision.granted else "refused", action=action, phase=phase, apps=list(apps),
              vus=vus, cycles=cycles, approval_id=decision.approval.id if decision.approval else None,
              reason=decision.reason, detail=detail)
    return decision


def log_event(run: RunFolder, kind: str, **fields: object) -> None:
    """Append one line (JSON) to the approvals log: approvals, refusals and escalations."""
    if kind not in ("approved", "refused", "escalated"):
        raise ValueError(f"approval log entries are approved, refused or escalated, not {kind!r}")
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    line = json.dumps({"at": stamp, "kind": kind, **fields}, default=str)
    path = run.path(LOG)
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    run.write_text(LOG, previous + line + "\n")
