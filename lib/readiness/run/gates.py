"""Human approval gates (docs/phases.md#guardrails): where a run waits until a person says go.

Two gates, each an approval the params must hold before the run may pass:

* **Gate 1** (``gate_1_staging_mutation``) sits before the first phase that changes the
  staging ecosystem (:data:`MUTATES` says what each such phase changes). What a reviewer
  approves is bundled under ``reports/gate_1/``: the changes under review
  (``pr_links.md``, from ``release.pr_links``), the alert-rule change
  (``monitoring_rule_changes.md``), a rehearsed rollback of every feature flag
  (``rollback_readiness.md``) and the baseline the run will be judged against
  (``baseline_slo_snapshot.json``).
* **Gate 2** (``gate_2_production_action``) sits before the first such phase of a run
  whose environment is ``prod``. A staging run never acts on production, so it ends by
  writing the Gate 2 file as its hand-over: what waits, the evidence, how to go on.

Without the approval the runner pauses: it writes ``GATE_n_HUMAN_APPROVAL_REQUIRED.md``
(what waits, the evidence so far, how to continue), renders and signs what it has, and
ends with status ``paused``. ``readiness run --resume RUN_DIR`` re-reads the params,
asks :func:`readiness.core.approvals.require_approval` again and continues in the same
folder. Every decision, either way, is in ``reports/hitl_approvals.log``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from readiness.core.approvals import require_approval
from readiness.core.check import Check, Status
from readiness.core.runfolder import RunFolder
from readiness.core.verdict import value_check
from readiness.params.model import Params
from readiness.params.registry import REGISTRY, phase_with
from readiness.report.markdown import header, md_escape, md_table, status_line

ACTIONS = {1: "gate_1_staging_mutation", 2: "gate_2_production_action"}
FILES = {1: "reports/GATE_1_HUMAN_APPROVAL_REQUIRED.md", 2: "reports/GATE_2_HUMAN_APPROVAL_REQUIRED.md"}
BUNDLE = "reports/gate_1"
PR_LINKS, RULES, ROLLBACK, SNAPSHOT = (f"{BUNDLE}/{n}" for n in (
    "pr_links.md", "monitoring_rule_changes.md", "rollback_readiness.md", "baseline_slo_snapshot.json"))
VALIDATION = "reports/validation_report.md"
LATENCY_PHASE = phase_with("latency_profile")
CHECK_PHASE = "gates"  # checks/gates.json: gate.gate_<n>.* ids (the rubric's gate.*)
TAGS = ("release_engineering", "runbooks_handover")
RULES_PHASE = phase_with("monitoring_rules")

# What each phase changes in the ecosystem it audits, from the phase registry. Phases not
# listed only read (inventory, smoke, GET-only load, scoring); on prod the listed ones send
# only tagged synthetic writes, and only under their own production_write approvals.
MUTATES: dict[str, str] = {p.name: p.mutates for p in REGISTRY if p.mutates}

# Behavioural rollback checks recorded after the gate, per flag: the suffix of their check id.
ROLLBACK_CHECKS = {"a8_banner_ttl": "banners.rollback", "a8_demo_mode": "demo_mode.rollback"}


def gate_for(params: Params, phase: str) -> int | None:
    """The gate ``phase`` must pass (1 on staging, 2 on prod), or None when it only reads."""
    if phase not in MUTATES:
        return None
    return 2 if params.environment == "prod" else 1


@dataclass(frozen=True)
class GateOutcome:
    gate: int
    granted: bool
    reason: str
    file: str


def _state(run: RunFolder) -> dict[str, Any]:
    return dict(run.info().get("gates") or {})


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def pass_gate(run: RunFolder, params: Params, gate: int, phase: str, waiting: Sequence[str],
              so_far: Mapping[str, Mapping[str, Any]]) -> GateOutcome:
    """Ask for the gate's approval before ``phase``; write the gate file (and Gate 1's bundle).

    A gate approved earlier in the run is not asked again. ``waiting`` lists the phases
    that wait behind it; ``so_far`` is run.json's phase table (the evidence so far).
    """
    state = _state(run)
    known = state.get(str(gate)) or {}
    if known.get("status") == "approved":
        return GateOutcome(gate, True, known.get("reason", ""), FILES[gate])
    if gate == 1:
        write_bundle(run, params)
    decision = require_approval(params, run, ACTIONS[gate], phase=phase,
                                detail=f"Gate {gate}: before {phase} ({', '.join(waiting)} wait)")
    status = "approved" if decision.granted else "waiting"
    state[str(gate)] = {"status": status, "before_phase": phase, "at": _stamp(), "reason": decision.reason,
                        "approval_id": decision.approval.id if decision.approval else None, "file": FILES[gate]}
    run.update_info(gates=state)
    run.write_text(FILES[gate], gate_text(run, params, gate, waiting, so_far, state[str(gate)]),
                   producer="runner")
    evidence = (FILES[gate], "reports/hitl_approvals.log")
    checks = [Check(id=f"gate.gate_{gate}.approval", phase=CHECK_PHASE,
                    title=f"Gate {gate} was passed only with a human approval in the params",
                    status=Status.PASS if decision.granted else Status.BLOCKED, n=1, severity="P1",
                    observed=decision.approval.id if decision.approval else None, tags=TAGS, evidence=evidence,
                    detail=decision.reason)]
    if gate == 1:
        checks.append(_rehearsal_check(run, params))
    run.record_checks(CHECK_PHASE, checks)
    return GateOutcome(gate, decision.granted, decision.reason, FILES[gate])


def _rehearsal_check(run: RunFolder, params: Params) -> Check:
    """Every flag's rollback rehearsed and read back (INCONCLUSIVE where none was rehearsed).

    Without a declared admin API there is no flag the suite can switch: SKIPPED, not applicable.
    """
    title = "every feature flag's rollback was rehearsed and verified before Gate 1"
    if not params.provides("admin_api"):
        return Check(id="gate.gate_1.rollback_rehearsed", phase=CHECK_PHASE, title=title, status=Status.SKIPPED,
                     severity="P1", tags=TAGS, evidence=(ROLLBACK,),
                     detail="not applicable: the ecosystem declares no admin_api (params capabilities), so no "
                            "feature flag can be switched by the suite; its owners rehearse their rollbacks")
    rows = list(run.info().get("rollback_rehearsal") or [])
    rehearsed = [r for r in rows if r.get("switch_ms") is not None or r.get("verified")]
    verified = sum(bool(r.get("verified")) for r in rows)
    return value_check(id="gate.gate_1.rollback_rehearsed", phase=CHECK_PHASE, title=title,
                       observed=verified if rehearsed else None, expected=len(rows), unit="flags", n=len(rows),
                       tags=TAGS, severity="P1", evidence=(ROLLBACK,),
                       detail=f"{verified} of {len(rows)} flags rolled back and read back" if rehearsed else
                       "no flag was rehearsed: " + "; ".join(sorted({r.get("detail", "") for r in rows}))
                       if rows else "no feature flags in the params")


def handover_gate_2(run: RunFolder, params: Params, so_far: Mapping[str, Mapping[str, Any]]) -> str:
    """A staging run's closing Gate 2 file: production actions wait for a human approval."""
    entry = {"status": "waiting", "before_phase": None, "at": _stamp(), "approval_id": None, "file": FILES[2],
             "reason": "this run acted on staging only; any production action waits for this gate"}
    state = _state(run)
    state["2"] = entry
    run.update_info(gates=state)
    run.write_text(FILES[2], gate_text(run, params, 2, [], so_far, entry), producer="runner")
    return FILES[2]


# -- the gate file -----------------------------------------------------------------------
def _evidence_rows(run: RunFolder, so_far: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    checks = run.read_checks()
    for phase, info in so_far.items():
        if info.get("status") == "WAITING":
            continue
        mine: list[Check] = [c for c in checks if c.phase == phase]
        html = info.get("leadership_html") or info.get("html")
        rows.append((f"`{phase}`", str(info.get("status", "?")), status_line(mine),
                     f"[report](../{html})" if html else "—"))
    return rows


def _approval_yaml(params: Params, gate: int) -> str:
    env = "prod" if gate == 2 else params.environment
    until = (dt.date.today() + dt.timedelta(days=7)).isoformat()
    return "\n".join([
        "```yaml", "approvals:", "  - id: CHANGE-1234            # your change or ticket id",
        f"    action: {ACTIONS[gate]}",
        f"    scope: \"{'staging mutation phases of this audit' if gate == 1 else 'production actions'}"
        f" for {params.ecosystem}\"",
        "    granted_by: \"name of the approver\"", f"    environment: {env}", f"    expires: {until}", "```"])


def gate_text(run: RunFolder, params: Params, gate: int, waiting: Sequence[str],
              so_far: Mapping[str, Mapping[str, Any]], entry: Mapping[str, Any]) -> str:
    """What the gate file says: status, what waits, the evidence so far, how to continue."""
    approved = entry.get("status") == "approved"
    title = f"Gate {gate} — human approval {'given' if approved else 'required'}"
    what = ("phases that change the staging ecosystem" if gate == 1 else "actions on production")
    if approved:
        status = (f"**APPROVED** ({entry.get('reason')}); the run went on at {entry.get('at')} "
                  f"into `{entry.get('before_phase')}`.")
    elif entry.get("before_phase"):
        status = (f"**WAITING** — the run is paused before `{entry.get('before_phase')}`: {entry.get('reason')}. "
                  "Nothing listed below has been sent.")
    else:
        status = f"**WAITING** — {entry.get('reason')}."
    lines = [header(title, ecosystem=params.ecosystem, environment=params.environment, run_name=run.root.name,
                    profile_note=params.profile_note),
             f"Status: {status}", "", f"## What waits ({what})", ""]
    if waiting:
        lines.append(md_table(["phase", "what it changes"],
                              [(f"`{p}`", MUTATES.get(p, "reads only; runs after the gate")) for p in waiting]))
    else:
        lines.append("Any production action that follows this audit: promoting the validated changes, or a run "
                     "of this suite with `environment: prod` beyond read-only probes.")
    lines += ["", "## Evidence so far", ""]
    rows = _evidence_rows(run, so_far)
    lines.append(md_table(["phase", "status", "checks", "rendered"], rows) if rows else "_no phase has run yet_")
    lines += ["", "Also: [index](../index.html) · [approvals log](hitl_approvals.log) · "
              "[attestation](system_live_and_autonomous.md)"
              + (" · [validation report](validation_report.md)" if run.path(VALIDATION).exists() else "")]
    if gate == 1:
        lines += ["", "## The bundle to review", "",
                  "- [changes under review](gate_1/pr_links.md)",
                  "- [monitoring rule changes](gate_1/monitoring_rule_changes.md)",
                  "- [rollback readiness](gate_1/rollback_readiness.md): every flag switched and rolled back, timed",
                  "- [baseline SLO snapshot](gate_1/baseline_slo_snapshot.json): what the run is judged against"]
    lines += ["", "## How to continue", ""]
    if approved:
        lines.append("Nothing to do: the approval above was in the params.")
    else:
        lines += [f"1. Review the evidence{' and the bundle' if gate == 1 else ''} above.",
                  f"2. Add an approval to the params file `{run.info().get('params_file')}`:", "",
                  _approval_yaml(params, gate), ""]
        if entry.get("before_phase"):
            lines += [f"3. Continue this run in the same folder: `readiness run --resume {run.root}`.", "",
                      "Only `approvals` may change before resuming; any other change to the params is refused "
                      "(start a new run instead)."]
        else:
            lines.append("3. Run the suite against production with those params (`environment: prod`).")
    return "\n".join(lines) + "\n"


# -- the Gate 1 bundle -------------------------------------------------------------------
def write_bundle(run: RunFolder, params: Params) -> None:
    """Write the four files the Gate 1 approver reviews (see the module doc)."""
    from readiness.phases.latency.report import slo_snapshot
    from readiness.phases.security_ops.monitoring_rules import rule_diff

    head = {"ecosystem": params.ecosystem, "environment": params.environment, "run_name": run.root.name,
            "profile_note": params.profile_note}
    links = params.release.pr_links
    run.write_text(PR_LINKS, "\n".join([
        header("Changes under review (Gate 1)", **head),
        (md_table(["change", "link"], [(md_escape(link.title), f"<{link.url}>") for link in links]) if links else
         "_No changes listed: `release.pr_links` in the params is empty. The approval then covers the audit's "
         "own staging mutations only._"), ""]), producer="runner")
    m = params.monitoring
    run.write_text(RULES, "\n".join([
        header("Monitoring rule changes proposed (Gate 1)", **head),
        "The alert rules before and after tuning, as they stand in the params. After the gate, "
        f"`{RULES_PHASE}` replays both versions over the run's recorded telemetry and writes the "
        "alerts each would have raised to [monitoring_rule_changes.md](../monitoring_rule_changes.md).",
        "", rule_diff(m.before, m.after), ""]), producer="runner")
    rows = rehearse_rollbacks(params)
    run.write_text(ROLLBACK, rollback_text(params, rows, head), producer="runner")
    run.update_info(rollback_rehearsal=rows)
    _baseline, _samples, snapshot = slo_snapshot(params, run.root, LATENCY_PHASE)
    run.write_json(SNAPSHOT, snapshot, producer="runner")


def _owner(params: Params, flag: str) -> str | None:
    """The app a flag belongs to, by its prefix (``a7_async_leads`` → A7)."""
    prefix = flag.split("_", 1)[0].upper()
    return prefix if any(a.id == prefix for a in params.apps) else None


def rehearse_rollbacks(params: Params) -> list[dict[str, Any]]:
    """Switch every sandbox flag away from its configured value and back, each read back.

    The rollback time is from the switch back to the read-back that confirms it. On an
    external ecosystem the flags are their owners' to switch: nothing is sent and each row
    says the rollback was not rehearsed here.
    """
    from readiness.probe.sandbox_control import SandboxError, get_flags, set_flag

    rows = []
    for flag, configured in params.sandbox.flags.items():
        app = _owner(params, flag)
        row: dict[str, Any] = {"flag": flag, "app": app, "configured": configured, "verified": False,
                               "switch_ms": None, "rollback_ms": None, "detail": ""}
        if params.target != "sandbox":
            row["detail"] = "not rehearsed: an external ecosystem's flags are switched by their owners"
        elif app is None:
            row["detail"] = "no app of this ecosystem owns the flag"
        else:
            try:
                t0 = time.perf_counter()
                set_flag(params, app, flag, not configured)
                switched = get_flags(params, app).get(flag) is (not configured)
                t1 = time.perf_counter()
                set_flag(params, app, flag, configured)
                back = get_flags(params, app).get(flag) is configured
                t2 = time.perf_counter()
                row.update(switch_ms=round((t1 - t0) * 1000, 1), rollback_ms=round((t2 - t1) * 1000, 1),
                           verified=switched and back,
                           detail="switched and read back, then rolled back and read back" if switched and back
                           else f"read back {'after the switch' if not switched else 'after the rollback'} "
                                "did not show the expected value")
            except SandboxError as exc:
                row["detail"] = f"rehearsal failed: {exc}"
                try:  # never leave a flag away from its configured value
                    set_flag(params, app, flag, configured)
                except SandboxError:
                    row["detail"] += "; restoring the configured value failed too"
        rows.append(row)
    return rows


def behaviour_check(params: Params, flag: str) -> str:
    """The check that verifies, after the gate, that the flag's old behaviour comes back."""
    if flag in ROLLBACK_CHECKS:
        return f"`{ROLLBACK_CHECKS[flag]}`"
    ids = [f"`latency.{c.app}.{c.route}.{flag}.rollback`" for c in params.latency.compare_flags if c.flag == flag]
    return ", ".join(ids) if ids else "none in this suite (the read-back only)"


def rollback_text(params: Params, rows: Sequence[Mapping[str, Any]], head: Mapping[str, str]) -> str:
    """``rollback_readiness.md``: each flag, its verified rollback and how long it took."""
    table = md_table(
        ["flag", "app", "configured", "rollback verified", "switch (ms)", "rollback (ms)", "behaviour re-checked by",
         "detail"],
        [(f"`{r['flag']}`", r["app"] or "—", "ON" if r["configured"] else "OFF", "yes" if r["verified"] else "NO",
          r["switch_ms"] if r["switch_ms"] is not None else "—",
          r["rollback_ms"] if r["rollback_ms"] is not None else "—",
          behaviour_check(params, r["flag"]), md_escape(r["detail"])) for r in rows])
    failed = [r["flag"] for r in rows if not r["verified"]]
    verdict = ("Every flag's rollback was rehearsed and verified." if not failed else
               f"Not verified: {', '.join(failed)} — the approver should see a rollback drill for these first.")
    return "\n".join([header("Rollback readiness (Gate 1)", **head),
                      "Each feature flag was switched away from its configured value and back through the admin "
                      "API, each step read back. The rollback time runs from the switch back until the read-back "
                      "confirms it. After the gate, the phases check that switching back also restores the old "
                      "*behaviour* (the check named in the table).", "", verdict, "", table, ""])
