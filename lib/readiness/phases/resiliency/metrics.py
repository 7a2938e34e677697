"""The numbers of the resiliency experiment: breaker timings per cycle, shed load, error budget, verdicts.

Kept apart from :mod:`readiness.phases.resiliency.resiliency` (which drives the load and the faults) so
that every rule is a pure function of recorded data — unit-tested on synthetic
transitions and requests, and re-runnable on a finished run's evidence.

Times are epoch seconds. A fault window is bounded conservatively (it starts when the
injection was sent, it ends at the earliest moment it can have ended), so measured times
to open and to recover are never flattered by the bookkeeping.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from readiness.core.check import Check
from readiness.core.verdict import (
    combine,
    error_rate_check,
    latency_check,
    noninferiority_check,
    rate_check,
    value_check,
)
from readiness.params.model import Params
from readiness.probe.telemetry_store import parse_ts
from readiness.stats.rates import wilson_interval

CHECK_IDS = ("resiliency.steady_state_before", "resiliency.time_to_open", "resiliency.time_to_recover",
             "resiliency.transitions", "resiliency.shed", "resiliency.error_budget", "resiliency.auto_heal",
             "resiliency.steady_state_after", "resiliency.rollback")
TAGS = ("resiliency", "reliability")
EXPECTED_SEQUENCE = (("closed", "open"), ("open", "half_open"), ("half_open", "closed"))
ADMIN_TRANSITIONS_KEPT = 100  # A3's admin view keeps the latest 100 transitions

@dataclasses.dataclass(frozen=True)
class Transition:
    at: float  # epoch seconds
    from_state: str
    to_state: str


@dataclasses.dataclass(frozen=True)
class CycleSpan:
    """One cycle: the fault ``[fault_start, fault_end]``, its requests up to ``until`` (the next fault,
    or the steady state after), its recovery looked for up to ``recover_until`` (default ``until``)."""

    cycle: int
    fault_start: float
    fault_end: float
    until: float
    recover_until: float | None = None


def _state(name: Any) -> str:
    return str(name).replace("-", "_").lower()


def transitions_from(records: Iterable[dict[str, Any]]) -> list[Transition]:
    """Breaker transitions from telemetry events or the admin view (``from_state``, ``to_state``, ``at``)."""
    out = []
    for r in records:
        stamp = r.get("at") or r.get("timestamp")
        if r.get("from_state") is None or r.get("to_state") is None or not stamp:
            continue
        out.append(Transition(parse_ts(str(stamp)).timestamp(), _state(r["from_state"]), _state(r["to_state"])))
    return sorted(out, key=lambda t: t.at)


def state_at(transitions: Sequence[Transition], t: float, initial: str = "closed") -> str:
    """The breaker state at ``t``: the target of the last transition at or before it."""
    state = initial
    for tr in transitions:
        if tr.at > t:
            break
        state = tr.to_state
    return state


def cycle_timing(transitions: Sequence[Transition], span: CycleSpan) -> dict[str, Any]:
    """Time to open (fault start → first closed→open during the fault; 0 when already open) and
    time to recover (fault end → the first half_open→closed before ``until``), and whether the
    cycle shows the whole Closed → Open → Half-Open → Closed sequence in order."""
    inside = [t for t in transitions if span.fault_start <= t.at < (span.recover_until or span.until)]
    already_open = state_at(transitions, span.fault_start) == "open"
    opened = next((t for t in inside if t.at <= span.fault_end and (t.from_state, t.to_state) == ("closed", "open")),
                  None)
    closed = next((t for t in inside if t.at >= span.fault_end and (t.from_state, t.to_state) == ("half_open", "closed")),
                  None)
    step = 0
    for t in inside:
        if step < len(EXPECTED_SEQUENCE) and (t.from_state, t.to_state) == EXPECTED_SEQUENCE[step]:
            step += 1
    return {"cycle": span.cycle, "already_open": already_open,
            "time_to_open_s": 0.0 if already_open else (opened.at - span.fault_start if opened else None),
            "time_to_recover_s": closed.at - span.fault_end if closed else None,
            "recovered_at": closed.at if closed else None, "sequence_complete": step == len(EXPECTED_SEQUENCE),
            "transitions": [f"{t.from_state}→{t.to_state}" for t in inside]}


def error_budget(n: int, failed: int, max_rate: float) -> dict[str, Any]:
    """The error budget of ``n`` requests is ``max_rate × n`` failures; consumed = failed / budget."""
    budget = max_rate * n
    return {"n": n, "failed": failed, "budget": budget, "consumed_share": failed / budget if budget > 0 else None}


def classify(frame: pd.DataFrame) -> pd.Series:
    """``ok`` (2xx/3xx), ``shed`` (503 with X-Breaker-State: open), ``failed`` (other status), ``error`` (none)."""
    status = frame["status"]
    shed = (status == 503) & (frame["breaker_state"] == "open")
    return pd.Series(["error" if pd.isna(s) else "ok" if s < 400 else "shed" if sh else "failed"
                      for s, sh in zip(status, shed, strict=True)], index=frame.index, dtype="object")


def cycle_figures(frame: pd.DataFrame, transitions: Sequence[Transition], spans: Sequence[CycleSpan],
                  max_rate: float) -> pd.DataFrame:
    """Per cycle: timings from the transitions, requests shed, error budget consumed."""
    rows = []
    for span in spans:
        mine = frame[(frame.t >= span.fault_start) & (frame.t < span.until)]
        timing = cycle_timing(transitions, span)
        failed = int((mine.outcome != "ok").sum())
        rows.append({**timing, "fault_s": span.fault_end - span.fault_start, "requests": len(mine),
                     "shed": int((mine.outcome == "shed").sum()), **error_budget(len(mine), failed, max_rate)})
    return pd.DataFrame(rows)


def outside_faults(frame: pd.DataFrame, figures: pd.DataFrame, spans: Sequence[CycleSpan],
                   recover_bound_s: float) -> pd.Series:
    """Requests outside every fault and its recovery (fault start → breaker closed again, or
    → fault end + ``recover_bound_s`` when it never closed): the service's normal operation."""
    mask = pd.Series(True, index=frame.index)
    for span, (_, row) in zip(spans, figures.iterrows(), strict=True):
        end = row["recovered_at"] if pd.notna(row["recovered_at"]) else span.fault_end + recover_bound_s
        mask &= ~((frame.t >= span.fault_start) & (frame.t < end))
    return mask


def spans_of(res: dict[str, Any]) -> list[CycleSpan]:
    """Cycle spans from the recorded windows: a fault ends at the earliest moment it can have ended
    (self-expiry or verified removal); a cycle's requests run to the next fault (the last one's to
    the steady state after), its recovery is looked for until the next fault (the last: the end)."""
    ws, after = res["windows"], res.get("after_start") or res["ended_at"]
    return [CycleSpan(w["cycle"], w["sent_at"], min(w["expires_at"], w["removed_at"]),
                      ws[i + 1]["sent_at"] if i + 1 < len(ws) else after,
                      ws[i + 1]["sent_at"] if i + 1 < len(ws) else res["ended_at"]) for i, w in enumerate(ws)]


def source_mismatches(tel: Sequence[Transition], admin: Sequence[Transition], admin_full: bool) -> int:
    """Transitions seen by one source and not the other (ms resolution), over the range both cover."""
    start = admin[0].at if admin_full and admin else -math.inf
    keys = [{(t.from_state, t.to_state, round(t.at, 3)) for t in src if t.at >= start} for src in (tel, admin)]
    return len(keys[0] ^ keys[1])


def fmt_s(x: Any) -> str:
    return "never" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f} s"


def verdicts(p: Params, phase: str, res: dict[str, Any], frame: pd.DataFrame, figures: pd.DataFrame,
             mismatches: int, tel_gap: str | None, evidence: tuple[str, ...]) -> list[Check]:
    """The ``resiliency.*`` checks from the recorded experiment ``res`` (see :func:`spans_of`), the
    classified requests, the per-cycle figures, the telemetry/admin disagreement count and, when
    telemetry could not be read, why (timings are then INCONCLUSIVE, never guessed).

    The steady level is the before window's success rate, its Wilson lower bound being the
    level recovery must reach; the error budget is judged on normal operation (outside every
    fault and its recovery) while each cycle's consumption is reported in the detail.
    """
    r = p.resiliency
    spans = spans_of(res)
    conf, cycles = p.thresholds.confidence, len(figures)
    kw = {"phase": phase, "app": r.app, "tags": TAGS, "evidence": evidence, "severity": "P1"}
    first = spans[0].fault_start if spans else (res["after_start"] or res["ended_at"])
    before = frame[frame.t < first]
    after = frame[frame.t >= (res["after_start"] or res["ended_at"])]
    aborted = f"; experiment aborted: {res['aborted']}" if res.get("aborted") else ""

    def steady(cid: str, which: str, rows: pd.DataFrame, breaker: dict[str, Any], fault: dict[str, Any]) -> Check:
        parts = [value_check(id=f"{cid}.breaker", title="breaker closed", observed=breaker.get("state"),
                             expected="closed", **kw),
                 value_check(id=f"{cid}.fault", title="no forced 503 on the upstream",
                             observed=fault.get("force_503_s"), expected=0.0, unit="s", **kw),
                 rate_check(id=f"{cid}.closed_share", title="answers with X-Breaker-State closed",
                            successes=int((rows.breaker_state == "closed").sum()), n=len(rows),
                            target=p.thresholds.success_rate_min, confidence=conf, **kw)]
        ok = int((rows.outcome == "ok").sum())
        level = (f"success level {ok}/{len(rows)}, Wilson low {wilson_interval(ok, len(rows), conf)[0]:.3f}"
                 if len(rows) else "no requests")
        return combine(cid, phase, f"Steady state {which}: breaker closed, no fault, traffic let through",
                       parts, app=r.app, severity="P1", detail=level)

    def timing(cid: str, title: str, col: str, bound: float) -> Check:
        values = figures[col] if cycles else pd.Series(dtype=float)
        worst = None if tel_gap or not cycles else (math.inf if values.isna().any() else float(values.max()))
        per = ", ".join(f"cycle {c}: {fmt_s(v)}" for c, v in zip(figures.get("cycle", []), values, strict=True))
        return value_check(id=cid, title=title, observed=worst, expected=bound, comparator="<=", unit="s",
                           n=cycles, detail=(tel_gap or per or "no fault cycle ran") + aborted, **kw)

    shed_ms = frame.loc[frame.outcome == "shed", "latency_ms"].dropna().to_numpy()
    mask = outside_faults(frame, figures, spans, r.max_time_to_recover_s) if cycles else frame.t < first
    normal = frame[mask]
    healed = frame[mask & (frame.t >= first)] if cycles else frame.iloc[0:0]
    budget = "; ".join(f"cycle {int(c.cycle)}: {c.failed}/{c.requests} failed = "
                       f"{c.consumed_share:.1f}× its budget" for c in figures.itertuples() if c.consumed_share is not None)
    no_action = "the suite only sets and removes the upstream fault; it never resets or forces the breaker"
    recovered = int(figures["recovered_at"].notna().sum()) if cycles else None
    complete = None if tel_gap or not cycles else int(figures["sequence_complete"].sum())
    rollback = res.get("rollback") or {}
    verified = [bool(w["removal_verified"]) for w in res["windows"]] + [bool(rollback.get("verified"))]
    return [
        steady("resiliency.steady_state_before", "before", before, res["breaker_before"], res["faults_before"]),
        timing("resiliency.time_to_open", "Breaker opens soon after the upstream starts failing (worst cycle)",
               "time_to_open_s", r.max_time_to_open_s),
        timing("resiliency.time_to_recover", "Breaker closes soon after the upstream is back (worst cycle)",
               "time_to_recover_s", r.max_time_to_recover_s),
        combine("resiliency.transitions", phase, "Closed → Open → Half-Open → Closed in every cycle, "
                "telemetry agreeing with the admin view", [
                    value_check(id="resiliency.transitions.sequence", title="cycles with the full sequence",
                                observed=complete, expected=cycles, unit="cycles", n=cycles,
                                detail=tel_gap or "", **kw),
                    value_check(id="resiliency.transitions.sources", title="transitions seen by one source only",
                                observed=None if tel_gap else mismatches, expected=0, **kw)],
                app=r.app, severity="P1", detail=aborted.lstrip("; ")),
        combine("resiliency.shed", phase, "While open, the breaker sheds load, and fast", [
            value_check(id="resiliency.shed.cycles", title="cycles that shed requests",
                        observed=int((figures["shed"] > 0).sum()) if cycles else None, expected=cycles,
                        unit="cycles", n=cycles, **kw),
            latency_check(id="resiliency.shed.p95", title="shed answers P95", samples_ms=shed_ms,
                          threshold_ms=r.max_shed_p95_ms, confidence=conf, **kw)], app=r.app, severity="P1",
                detail=f"{len(shed_ms)} requests shed (503, X-Breaker-State: open)"),
        error_rate_check(id="resiliency.error_budget", title="Outside the faults and their recovery, errors stay "
                         "within the error budget", errors=int((normal.outcome != "ok").sum()), n=len(normal),
                         max_rate=p.thresholds.error_rate_max, confidence=conf,
                         detail=f"fault cycles consumed: {budget or 'none ran'}", **kw),
        combine("resiliency.auto_heal", phase, "Healed without operator action: closed again, success "
                "back at its steady level", [
                    value_check(id="resiliency.auto_heal.closed", title="cycles closed again by the breaker itself",
                                observed=None if tel_gap else recovered, expected=cycles, unit="cycles",
                                n=cycles, **kw),
                    noninferiority_check(id="resiliency.auto_heal.level", title="success after recovery no "
                                         f"worse than the steady level by more than {r.auto_heal_margin:.0%}",
                                         successes=int((healed.outcome == "ok").sum()), n=len(healed),
                                         successes_before=int((before.outcome == "ok").sum()),
                                         n_before=len(before), margin=r.auto_heal_margin, **kw)],
                app=r.app, severity="P1", detail=no_action),
        steady("resiliency.steady_state_after", "after", after, res["breaker_after"], res["faults_after"]),
        value_check(id="resiliency.rollback", title="Every injected fault removed, removal verified by read-back",
                    observed=all(verified), expected=True, n=len(verified),
                    detail=f"{sum(verified)}/{len(verified)} removals verified; final: {rollback.get('detail')}",
                    **{**kw, "severity": "P0"}),
    ]
