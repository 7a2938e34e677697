"""The validation report (``reports/validation_report.md``): what a run says, for leadership.

Pure functions over a run's recorded checks, ``run.json``, the approvals log and
``reports/comparison.csv``; :func:`readiness.phases.readiness_score.closing.validation_report` writes the result.
The report opens with an executive summary (grade and score, end-to-end verdicts, security,
cost, escalations), then the hot path's P95 against its target and before/after the fix
with 95% intervals, the end-to-end funnels, the security areas (secret scan,
Observatory-style header grades per app, CORS, admin endpoints, TLS), the cost checks,
the escalation conditions (docs/phases.md#guardrails) and the check counts of every phase.

Every figure carries its unit and n; every claim links its evidence relative to
``reports/``; a file the run does not hold is written as missing, and a phase that did
not run is named with its reason and links nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from readiness.core.approvals import LOG
from readiness.core.check import Check, Status, summarize
from readiness.core.verdict import combine
from readiness.params.model import PHASES
from readiness.params.registry import phase_of_check, phase_with, phases_with
from readiness.phasekit.observatory import grade_for_score
from readiness.report.markdown import fmt_interval, fmt_num, header, interval_name, md_table, status_line
from readiness.score.scoring import ReadinessScore

LATENCY, SECURITY, TELEMETRY = (phase_with("latency_profile"), phase_with("security"),
                                phase_with("telemetry_contract"))
E2E_PHASES = phases_with("journey")
#: The command center's fixes (banners, demo mode) are recorded by some end-to-end phases but are
#: not journeys: they are reported with the command center (``a8_validation_after.json``).
NOT_E2E = re.compile(r"^(banners|demo_mode)\.")
COMPARISON_COLUMNS = frozenset({"comparison", "app", "endpoint", "q", "n_before", "n_after", "before_ms", "after_ms",
                                "diff_ms", "diff_low_ms", "diff_high_ms", "needs_n"})
HOT_PATH_RELATED = (".on.p95", ".improvement", ".rollback")
SECURITY_AREAS = (("Secret scan", "security.secrets."), ("Headers (Observatory-style grade)", "security.headers."),
                  ("CORS", "security.cors."), ("Admin endpoints", "security.admin."), ("TLS", "security.tls."))


@dataclasses.dataclass(frozen=True)
class Escalation:
    """One escalation condition (docs/phases.md#guardrails) and the two ways a run shows it.

    ``actions`` are the ``action`` values of ``escalated`` lines in the approvals log,
    written by the phase that met the condition (monetization writes ``stripe_failure``);
    ``checks`` matches ids (all starting with ``prefix``) whose FAIL *indicates* the condition
    even when no entry was logged; ``phase`` is the phase the registry says records them. An indication is weaker than an entry — an autonomy signal missing
    from a short load window is no proof of a two-hour stall — so the report keeps both
    apart, and drops neither.
    """

    key: str
    title: str
    actions: tuple[str, ...]
    prefix: str
    checks: str
    indicates: str

    @property
    def phase(self) -> str:
        owner = phase_of_check(self.prefix)
        if owner is None:
            raise LookupError(f"no phase in the registry records {self.prefix!r} checks")
        return owner


ESCALATIONS: tuple[Escalation, ...] = (
    Escalation("stripe_failure", "Stripe failure", ("stripe_failure",), "monetization.",
               r"^monetization\.(price|checkout\.(session_created|completed|stripe_confirmed))",
               "a Stripe price or checkout step failed"),
    Escalation("oidc_regression", "OIDC regression", ("oidc_regression",), "funnels.b2c.",
               r"^funnels\.b2c\.(oidc|cookie)\.", "an OIDC or session-cookie check failed"),
    Escalation("orchestration_stalled", "Orchestration stalled > 2 h", ("orchestration_stalled",),
               "load.autonomy.", r"^load\.autonomy\.(?!arrival$)",
               "an orchestration autonomy signal was missing from the load window"),
    Escalation("schema_mismatch", "Schema mismatch after two attempts",
               ("schema_mismatch", "telemetry_schema_mismatch"), "telemetry.contract.", r"^telemetry\.contract\.",
               "a telemetry contract schema check failed"),
)


# -- reading the run -----------------------------------------------------------------------
def not_run_reason(phase: str, checks: Sequence[Check], info: Mapping[str, Any]) -> str | None:
    """None when ``phase`` recorded checks of its own; otherwise why it has none."""
    own = [c for c in checks if c.phase == phase]
    marker = next((c for c in own if c.id == f"run.{phase}"), None)
    if marker is not None and len(own) == 1:
        return f"{marker.status}: {marker.detail}"
    if own:
        return None
    entry = (info.get("phases") or {}).get(phase)
    if entry:
        return f"{entry.get('status')}: {entry.get('error') or 'the notebook ran but recorded no checks'}"
    return "the phase was not selected in this run or has no notebook"


def phase_states(phases: Sequence[str], checks: Sequence[Check], info: Mapping[str, Any]) -> dict[str, Any]:
    """Per phase: whether it ran, why not, and its check counts by status (zeros included)."""
    states = {}
    for p in phases:
        reason = not_run_reason(p, checks, info)
        states[p] = {"ran": reason is None, "reason": reason, "counts": summarize(c for c in checks if c.phase == p)}
    return states


def e2e_checks(checks: Sequence[Check]) -> list[Check]:
    """The end-to-end checks: those of the funnel, monetization and activation phases, fixes aside."""
    return [c for c in checks if c.phase in E2E_PHASES and not NOT_E2E.match(c.id)]


def funnel_of(check_id: str) -> str:
    """``funnels.b2c.signup_rate`` → ``funnels.b2c``; ``monetization.price`` → ``monetization``."""
    parts = check_id.split(".")
    return ".".join(parts[:2]) if parts[0] == "funnels" and len(parts) > 2 else parts[0]


def funnel_summaries(checks: Sequence[Check]) -> list[dict[str, Any]]:
    """One all-of verdict (:func:`readiness.core.verdict.combine`) per funnel, in order of first check."""
    groups: dict[tuple[str, str], list[Check]] = {}
    for c in checks:
        groups.setdefault((c.phase, funnel_of(c.id)), []).append(c)
    rows = []
    for (phase, funnel), parts in groups.items():
        whole = combine(f"closing.e2e.{funnel}", phase, funnel, parts)
        rows.append({"funnel": funnel, "phase": phase, "status": whole.status.value, "n_checks": len(parts),
                     "counts": summarize(parts), "evidence": list(whole.evidence)})
    return rows


def read_log(root: Path) -> list[dict[str, Any]]:
    """The approvals log's JSON lines (a line that is not a JSON object is kept as ``unreadable``)."""
    path = root / LOG
    if not path.is_file():
        return []
    entries = []
    for line in filter(None, path.read_text(encoding="utf-8").splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        entries.append(entry if isinstance(entry, dict) else {"kind": "unreadable", "line": line[:200]})
    return entries


def escalation_rows(checks: Sequence[Check], log: Sequence[Mapping[str, Any]],
                    info: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]]]:
    """Per condition: ``escalated`` (logged), ``indicated`` (checks only), ``no`` or ``not evaluated``;
    plus the logged escalations that match no condition (e.g. an unverified fault removal)."""
    escalated = [e for e in log if e.get("kind") == "escalated"]
    rows = []
    for cond in ESCALATIONS:
        entries = [e for e in escalated if e.get("action") in cond.actions]
        failing = [c for c in checks if c.phase == cond.phase and re.search(cond.checks, c.id)
                   and c.status is Status.FAIL]
        reason = not_run_reason(cond.phase, checks, info)
        state = ("escalated" if entries else "indicated" if failing else
                 "not evaluated" if reason is not None else "no")
        rows.append({"condition": cond, "state": state, "entries": entries, "failing": failing, "reason": reason})
    known = {a for cond in ESCALATIONS for a in cond.actions}
    return rows, [e for e in escalated if e.get("action") not in known]


def hot_paths(checks: Sequence[Check]) -> list[tuple[Check, list[Check]]]:
    """Each ``*.hot_path`` check of the latency phase with its flag-ON, improvement and rollback checks."""
    out = []
    for hot in (c for c in checks if c.phase == LATENCY and c.id.endswith(".hot_path")):
        base = hot.id.removesuffix(".hot_path") + "."
        out.append((hot, [c for c in checks if c.phase == LATENCY and c.id.startswith(base)
                          and c.id.endswith(HOT_PATH_RELATED)]))
    return out


# -- the validation report -----------------------------------------------------------------
def link(root: Path, path: str) -> str:
    """A markdown link relative to ``reports/``, or the path marked missing when the run lacks it."""
    if (root / path).exists():
        return f"[{path}]({quote(posixpath.relpath(path, 'reports'))})"
    return f"`{path}` (missing: not in the run folder)"


def evidence_links(root: Path, paths: Sequence[str]) -> str:
    return ", ".join(link(root, p) for p in dict.fromkeys(paths)) or "no evidence file linked"


def verdict_text(c: Check) -> str:
    interval = "" if c.ci_low is None and c.ci_high is None else f", {interval_name(c)} {fmt_interval(c)}"
    n = f"n={c.n}" if c.n is not None else "n not recorded"
    return f"**{c.status}** {fmt_num(c.observed, c.unit)}{interval} ({n})"


def delta_to_target(hot: Check) -> str:
    """P95 − target with its interval (the P95 interval shifted by the constant target)."""
    limit = hot.threshold
    if not isinstance(limit, int | float) or not isinstance(hot.observed, int | float):
        return "no delta: no P95 was measured"
    ci = (f", {interval_name(hot)} [{hot.ci_low - limit:+.1f}, {hot.ci_high - limit:+.1f}] {hot.unit}"
          if hot.ci_low is not None and hot.ci_high is not None else "")
    return f"delta to the target {hot.observed - limit:+.1f} {hot.unit}{ci}"


def hot_path_summary(checks: Sequence[Check], info: Mapping[str, Any]) -> list[str]:
    """One executive line per hot path: P95 against the target, and the fix's effect when measured."""
    reason = not_run_reason(LATENCY, checks, info)
    if reason is not None:
        return [f"- Hot path: {LATENCY} did not run ({reason})."]
    lines = []
    for hot, related in hot_paths(checks):
        fix = [f"; {c.id.split('.')[-2]} fix effect on P95 (after − before) {verdict_text(c)}" for c in related
               if c.id.endswith(".improvement")]
        lines.append(f"- Hot path {hot.app} {route_of(hot)}: P95 {verdict_text(hot)} against "
                     f"{hot.comparator} {fmt_num(hot.threshold, hot.unit)}, {delta_to_target(hot)}{''.join(fix)}.")
    return lines or ["- Hot path: no hot-path route in this run's params."]


def route_of(hot: Check) -> str:
    """``latency.A7.lead_capture.hot_path`` → ``lead_capture``."""
    parts = hot.id.split(".")
    return parts[2] if len(parts) >= 4 else hot.id


def hot_path_lines(root: Path, checks: Sequence[Check], info: Mapping[str, Any]) -> list[str]:
    reason = not_run_reason(LATENCY, checks, info)
    if reason is not None:
        return [f"{LATENCY} did not run ({reason}): no hot-path measurement in this run."]
    found = hot_paths(checks)
    if not found:
        return ["No hot-path route in this run's params: no check id ends with `.hot_path`."]
    lines = []
    for hot, related in found:
        lines.append(f"- {hot.title}: {verdict_text(hot)}; {delta_to_target(hot)}. "
                     f"Evidence: {evidence_links(root, hot.evidence)}")
        lines += [f"- {c.title}: {verdict_text(c)} — {c.detail}. Evidence: {evidence_links(root, c.evidence)}"
                  for c in related]
        lines += comparison_lines(root, hot.app or "", route_of(hot))
    return lines


def comparison_lines(root: Path, app: str, endpoint: str) -> list[str]:
    """The P95 rows of ``reports/comparison.csv`` for one endpoint (baseline and flag comparisons)."""
    path = "reports/comparison.csv"
    if not (root / path).is_file():
        return ["", f"Before/after table: {link(root, path)}."]
    with open(root / path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = sorted(COMPARISON_COLUMNS - set(reader.fieldnames or ()))
        rows = [] if missing else [r for r in reader if (r["app"], r["endpoint"], r["q"]) == (app, endpoint, "0.95")]
    if missing:
        return ["", f"{link(root, path)} lacks the columns {', '.join(missing)}: no P95 comparison to show."]
    table = [(r["comparison"], f"{r['before_ms']} ms", f"{r['after_ms']} ms",
              f"{float(r['diff_ms']):+.1f} ms" if r["diff_ms"] else "—",
              f"[{r['diff_low_ms']}, {r['diff_high_ms']}] ms" if r["diff_low_ms"] and r["diff_high_ms"] else
              f"no interval: needs n ≥ {float(r['needs_n'] or 0):.0f}", f"{r['n_before']} / {r['n_after']}") for r in rows]
    return ["", f"P95 comparisons of {app} {endpoint} ({link(root, path)}):", "",
            md_table(["comparison", "P95 before", "P95 after", "after − before", "95% CI", "n before / after"],
                     table) if table else "No P95 row for this endpoint in the comparison table.", ""]


def summary_lines(root: Path, score: ReadinessScore, hot: Sequence[str], funnels: Sequence[dict[str, Any]],
                  not_run: Sequence[str], security: Sequence[Check], cost: Sequence[Check],
                  rows: Sequence[dict[str, Any]], other: Sequence[Mapping[str, Any]]) -> list[str]:
    """The executive summary: one line per outcome, the details follow in their sections."""
    hits = [r["condition"].title for r in rows if r["state"] in ("escalated", "indicated")]
    passing = sum(f["status"] == "PASS" for f in funnels)
    return [
        f"- Grade **{score.grade}**, overall score {score.overall_score:.2f} / 100 points over "
        f"{len(score.categories)} categories ({link(root, 'reports/readiness_heatmap.csv')}, "
        f"{link(root, 'reports/readiness_rubric.md')}; `readiness_score.json` is published when the run "
        f"completes). Blockers: {len(score.blockers)}.",
        *hot,
        f"- End to end: {passing} of {len(funnels)} funnels PASS" + "".join(f"; {p} did not run" for p in not_run)
        + ".",
        f"- Security: {len(security)} checks — {status_line(security)}. Cost: {len(cost)} checks — "
        f"{status_line(cost)}.",
        f"- Escalations: {len(hits)} of {len(ESCALATIONS)} conditions escalated or indicated"
        + (f" ({', '.join(hits)})" if hits else "") + (f"; {len(other)} other escalation entries" if other else "")
        + ".",
        *[f"- Blocker: {b}" for b in score.blockers]]


def e2e_lines(root: Path, e2e: Sequence[Check], funnels: Sequence[dict[str, Any]],
              not_run: Mapping[str, str]) -> list[str]:
    rows = [(f["funnel"], f["phase"], f"**{f['status']}**", f["n_checks"],
             status_line([c for c in e2e if c.phase == f["phase"] and funnel_of(c.id) == f["funnel"]]),
             evidence_links(root, f["evidence"][:4])) for f in funnels]
    table = md_table(["funnel", "phase", "verdict", "checks (n)", "statuses", "evidence (first 4)"], rows) \
        if rows else "No end-to-end check was recorded."
    return [table, *[f"- {p} did not run ({r}); nothing to link." for p, r in not_run.items()]]


def cost_table(root: Path, cost: Sequence[Check]) -> str:
    if not cost:
        return "No cost check (`ops.cost.*`) was recorded."
    return md_table(["check", "status", "observed", "threshold", "n", "evidence"],
                    [(c.id, f"**{c.status}**", fmt_num(c.observed, c.unit),
                      f"{c.comparator} {fmt_num(c.threshold, c.unit)}", c.n, evidence_links(root, c.evidence))
                     for c in cost])


def phase_table(checks: Sequence[Check], info: Mapping[str, Any], this_phase: str) -> str:
    states = phase_states([p for p in (*PHASES, "run") if p != this_phase], checks, info)
    return md_table(["phase", "ran", *[s.value for s in Status], "total"],
                    [(p, "yes" if s["ran"] else f"no — {s['reason']}", *s["counts"].values(),
                      sum(s["counts"].values())) for p, s in states.items() if p != "run" or s["ran"]])


def validation_markdown(*, run_name: str, ecosystem: str, environment: str, profile_note: str, root: Path,
                        checks: Sequence[Check], info: Mapping[str, Any], score: ReadinessScore,
                        this_phase: str) -> str:
    """The whole report for one run: pure, from the run's checks, ``run.json`` and log."""
    e2e = e2e_checks(checks)
    funnels = funnel_summaries(e2e)
    not_run = {p: r for p in E2E_PHASES if (r := not_run_reason(p, checks, info)) is not None}
    security = [c for c in checks if c.phase == SECURITY and c.id.startswith("security.")]
    cost = [c for c in checks if c.id.startswith("ops.cost.")]
    log = read_log(root)
    rows, other = escalation_rows(checks, log, info)
    others = ["", "Other escalation entries: " + "; ".join(
        f"{e.get('action')} in {e.get('phase', '?')}: {e.get('reason', '')}" for e in other)] if other else []
    unreadable = [e["line"] for e in log if e.get("kind") == "unreadable"]
    others += ["", f"{len(unreadable)} lines of {link(root, LOG)} are not JSON objects and could not be read "
               f"(an escalation among them would be missing above): " + "; ".join(f"`{u[:80]}`" for u in unreadable)
               ] if unreadable else []
    lines = [header("Validation report", ecosystem=ecosystem, environment=environment, run_name=run_name,
                    profile_note=profile_note),
             "## Executive summary", "", *summary_lines(root, score, hot_path_summary(checks, info), funnels,
                                                        list(not_run), security, cost, rows, other),
             "", "## Hot path P95", "", *hot_path_lines(root, checks, info),
             "", "## End-to-end journeys", "", *e2e_lines(root, e2e, funnels, not_run),
             "", "## Security", "", security_table(root, security, checks, info),
             "", "## Cost", "", cost_table(root, cost),
             "", "## Escalations", "", escalation_table(root, rows), *others,
             "", "## Checks per phase", "", "Recorded in `checks/*.json` (this phase's own checks come after this "
             "report).", "", phase_table(checks, info, this_phase)]
    return "\n".join(lines) + "\n"


def security_table(root: Path, security: Sequence[Check], checks: Sequence[Check], info: Mapping[str, Any]) -> str:
    reason = not_run_reason(SECURITY, checks, info)
    if reason is not None:
        return f"{SECURITY} did not run ({reason}); nothing to link."
    rows = []
    for area, prefix in SECURITY_AREAS:
        part = [c for c in security if c.id.startswith(prefix)]
        if prefix == "security.headers.":
            notes = ", ".join(f"{c.app} {grade_for_score(int(c.observed))} ({c.observed} points)"
                              if isinstance(c.observed, int | float) else f"{c.app} no grade" for c in part)
        else:
            notes = "; ".join(f"{c.app or c.id}: {c.status} " + (f"{fmt_num(c.observed, c.unit)} (n={c.n})"
                                                                 if c.observed is not None else
                                                                 f"({c.detail.split(';')[0][:80]})")
                              for c in part if c.status is not Status.PASS or len(part) == 1) or "all PASS"
        rows.append((area, len(part), status_line(part), notes or "—",
                     evidence_links(root, [e for c in part for e in c.evidence])))
    return md_table(["area", "checks (n)", "statuses", "outcome", "evidence"], rows)


def escalation_table(root: Path, rows: Sequence[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        cond, entries, failing = r["condition"], r["entries"], r["failing"]
        if r["state"] == "escalated":
            seen = "; ".join(f"{e.get('at')} {e.get('phase', '?')}: {e.get('reason', '')}" for e in entries)
            evidence = f"{len(entries)} `escalated` entries in {link(root, LOG)}: {seen}"
        elif r["state"] == "indicated":
            evidence = (f"{cond.indicates} ({', '.join(f'{c.id} {c.status}' for c in failing[:5])}); no escalation "
                        f"entry was logged. Evidence: {evidence_links(root, [e for c in failing for e in c.evidence])}")
        elif r["state"] == "not evaluated":
            evidence = f"{cond.phase} did not run ({r['reason']})"
        else:
            evidence = f"no `escalated` entry for {', '.join(cond.actions)} and no failing check in {cond.phase}"
        out.append((cond.title, f"**{r['state']}**", evidence))
    return md_table(["condition", "occurred in this run", "evidence"], out)
