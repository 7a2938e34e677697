"""The CTA policy change: its risk, the approval gate, apply → observe → restore, and the signal path.

:mod:`readiness.phases.learning.cta_bandit` learns a policy from the logged impressions; this module
decides what happens to it. The risk of the change is the total-variation distance
between the live allocation and the learned one (:func:`readiness.stats.bandit.change_risk`);
at medium or high risk the change needs a ``bandit_policy_change`` approval, and without
one nothing is sent. With it (and ``learning.apply_policy: if_approved``) the policy is
PUT to the CTA app, the allocation actually served is observed over
``learning.allocation_visits`` visits (Wilson per arm), and, with ``restore_policy``, the
previous policy is put back in a ``finally`` and verified — so a failing observation
never leaves the learned policy live. ``reports/rl_signal_path.md`` then follows one
logged visit from its events to the served allocation.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from IPython.display import Markdown

from readiness.core.approvals import require_approval
from readiness.core.check import Check, Status
from readiness.core.verdict import combine, share_check, value_check
from readiness.phasekit.context import Phase
from readiness.phases.learning.cta_bandit import (
    ALLOCATION_MARGIN,
    CHANGE,
    CONFIG,
    LOGGED,
    OUTCOMES,
    POLICY,
    SIGNAL,
    SIMULATE_CHUNK,
    TAGS,
    allocation_of,
    cta_call,
    read_artifact,
    settled_events,
)
from readiness.probe.telemetry_store import iso
from readiness.report.markdown import checks_frame, header, md_table
from readiness.stats.bandit import APPROVAL_RISKS, RewardWeights, change_risk, total_variation

TITLES = {"policy_change": "the learned policy is applied only under the approval its risk needs",
          "observed_allocation": "served allocation matches the applied policy (Wilson per arm)",
          "rollback": "the previous policy is back and verified"}


def _same(phase: Phase, status: Status, why: str, ids: Iterable[str] = tuple(TITLES)) -> list[Check]:
    return [Check(id=f"learning.bandit.{i}", phase=phase.name, title=TITLES[i], status=status,
                  app=phase.params.learning.cta_app, tags=TAGS, evidence=(CHANGE,), severity="P1", detail=why)
            for i in ids]


def _observe(phase: Phase, version: str, served: Mapping[str, float], record: dict[str, Any]) -> Check:
    p = phase.params.learning
    status, sim = cta_call(phase, "POST", "/admin/cta/simulate", {"visits": min(p.allocation_visits, SIMULATE_CHUNK),
                                                                "seed": p.seed - 1})
    record["observed"] = {"status": status, "answer": sim}
    if status != 200 or not isinstance(sim, dict):
        return _same(phase, Status.ERROR, f"POST /admin/cta/simulate → {status}: {sim}", ["observed_allocation"])[0]
    n = sum(sim["assigned"].values())
    parts = [share_check(id=f"learning.bandit.observed_allocation.{arm}", phase=phase.name, app=p.cta_app,
                         title=f"share of {arm}", arrived=int(sim["assigned"].get(arm, 0)), n=n, rate=share,
                         margin=ALLOCATION_MARGIN, tags=TAGS, evidence=(CHANGE,)) for arm, share in served.items()]
    parts.append(value_check(id="learning.bandit.observed_allocation.version", phase=phase.name, app=p.cta_app,
                             title="visits served by the applied version", observed=sim.get("policy_version"),
                             expected=version, tags=TAGS, evidence=(CHANGE,)))
    phase.record(parts)
    return combine("learning.bandit.observed_allocation", phase.name, TITLES["observed_allocation"], parts,
                   app=p.cta_app, severity="P1", detail=f"{n} visits: {sim['assigned']}")


def _apply(phase: Phase, config: Mapping[str, Any], approval: str, record: dict[str, Any]) -> list[Check]:
    """PUT the learned policy, observe it, and (``restore_policy``) put the previous one back."""
    p = phase.params.learning
    status, previous = cta_call(phase, "GET", "/admin/cta/policy")
    if status != 200 or not isinstance(previous, dict):
        return _same(phase, Status.ERROR, f"GET /admin/cta/policy → {status}: {previous}")
    keep = ("arm_weights", "exploration_rate", "policy_version")
    previous = {k: previous[k] for k in keep}
    record["previous"], record["applied_at"] = previous, iso(dt.datetime.now(dt.UTC))
    checks: list[Check] = []
    try:
        status, answer = cta_call(phase, "PUT", "/admin/cta/policy", {k: config[k] for k in keep})
        record["applied"] = {"status": status, "answer": answer}
        checks.append(value_check(id="learning.bandit.policy_change", phase=phase.name, title=TITLES["policy_change"],
                                  observed=status, expected=200, unit="HTTP status", app=p.cta_app, tags=TAGS,
                                  evidence=(CHANGE, CONFIG), severity="P1", detail=f"{approval}; PUT /admin/cta/policy"))
        if status != 200:
            checks += _same(phase, Status.SKIPPED, "the policy was not applied", ["observed_allocation"])
        elif p.allocation_visits == 0:
            checks += _same(phase, Status.SKIPPED, "allocation_visits is 0", ["observed_allocation"])
        else:
            served = answer.get("allocation") or allocation_of(config["arm_weights"], config["exploration_rate"])
            checks.append(_observe(phase, config["policy_version"], served, record))
    finally:
        if p.restore_policy and "applied" in record:
            put, _ = cta_call(phase, "PUT", "/admin/cta/policy", previous)
            got_status, now = cta_call(phase, "GET", "/admin/cta/policy")
            back = got_status == 200 and isinstance(now, dict) and {k: now.get(k) for k in keep} == previous
            record["restored"] = {"status": put, "now": now}
            checks.append(value_check(id="learning.bandit.rollback", phase=phase.name, title=TITLES["rollback"],
                                      observed=back, expected=True, app=p.cta_app, tags=TAGS, evidence=(CHANGE,),
                                      severity="P1", detail=f"PUT previous {previous['policy_version']} → {put}; "
                                      f"live now {now.get('policy_version') if isinstance(now, dict) else now}"))
        elif not p.restore_policy:
            checks += _same(phase, Status.SKIPPED, "restore_policy is false: the learned policy stays live",
                            ["rollback"])
    return checks


def change_policy(phase: Phase) -> pd.DataFrame:
    """Risk of the learned policy against the live one, the approval gate, and (when allowed)
    apply → observe → restore: ``learning.bandit.{policy_change,observed_allocation,rollback}``."""
    p, params = phase.params.learning, phase.params
    config = read_artifact(phase, CONFIG, "learn_policy")
    status, live = cta_call(phase, "GET", "/api/cta/config", admin=False)
    if status != 200 or not isinstance(live, dict):
        raise RuntimeError(f"GET /api/cta/config → {status}: {live}")
    live_alloc = live.get("allocation") or allocation_of(live["arm_weights"], live["exploration_rate"])
    tv, risk = total_variation(live_alloc, config["allocation"]), change_risk(live_alloc, config["allocation"])
    record: dict[str, Any] = {"live": live, "learned": config, "total_variation": tv, "risk": risk}
    move = f"risk {risk}: moves {tv:.1%} of traffic from {live['policy_version']} to {config['policy_version']}"
    if p.apply_policy == "never":
        checks = _same(phase, Status.SKIPPED, f"apply_policy is never: the learned policy is written, not applied "
                       f"({move})")
    elif params.target != "sandbox" or params.environment == "prod":
        checks = _same(phase, Status.SKIPPED, f"{params.ecosystem} is not the bundled sandbox: the reviewed "
                       f"{CONFIG} ships through its own release process ({move})")
    else:
        decision = None
        if risk in APPROVAL_RISKS:
            decision = require_approval(params, phase.run, "bandit_policy_change", phase=phase.name,
                                        apps=(p.cta_app,), detail=move)
            record["decision"] = {"granted": decision.granted, "reason": decision.reason}
        if decision is not None and not decision.granted:
            _, now = cta_call(phase, "GET", "/admin/cta/policy")
            record["after_refusal"] = now
            serving = now.get("policy_version") if isinstance(now, dict) else now
            checks = _same(phase, Status.BLOCKED, f"{decision.reason}; {move}; not applied, {p.cta_app} still serves "
                           f"{serving}")
        else:
            checks = _apply(phase, config, decision.reason if decision else f"{move}: no approval needed", record)
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)
            emitted = [e for e in settled_events(phase, since, ["bandit_config"])["bandit_config"]
                       if e.get("policy_version") == config["policy_version"]]
            record["config_event"] = emitted[0] if emitted else None
    phase.run.write_json(CHANGE, record)
    phase.record(checks)
    return checks_frame(checks)


def write_signal_path(phase: Phase) -> Markdown:
    """``reports/rl_signal_path.md``: one logged visit followed from its events to the served allocation."""
    rows, policy = read_artifact(phase, LOGGED, "learn_policy"), read_artifact(phase, POLICY, "learn_policy")
    change = read_artifact(phase, CHANGE, "change_policy")
    w = RewardWeights(**phase.params.learning.reward.model_dump())
    lines = [header("RL signal path: event → reward → posterior → config → allocation",
                    ecosystem=phase.params.ecosystem, environment=phase.params.environment,
                    run_name=phase.run.root.name, profile_note=phase.params.profile_note)]
    if len(rows):
        r = rows.sort_values(["reward", "trace_id"], ascending=[False, True]).iloc[0]
        on = [s for s in OUTCOMES.values() if r[s]]
        post = policy["posterior"][r["arm"]]
        lines += ["## 1. Logged impression and its outcomes",
                  f"trace `{r['trace_id']}`: arm **{r['arm']}** shown with propensity {r['propensity']:.4f} under "
                  f"`{r['policy_version']}` (impression sample rate {r['sample_rate']}); outcome events on the same "
                  f"trace: {', '.join(on) or 'none'}.",
                  "## 2. Reward", f"{' + '.join(f'{getattr(w, s):g}·{s}' for s in on) or '0'} = **{r['reward']:.3f}**"
                  f", rescaled to [0, 1] as {w.rescale(float(r['reward'])):.3f} for the Beta posterior.",
                  "## 3. Posterior", f"{r['arm']}: Beta({post['alpha']:.0f}, {post['beta']:.0f}) after {post['n']} "
                  f"logged rows (mean {post['mean']:.3f}, 95% credible [{post['ci_low']:.3f}, {post['ci_high']:.3f}])."
                  f" Over {policy['logged_rows']} rows the learned serving shares are "
                  + ", ".join(f"{a} {s:.1%}" for a, s in policy["serving_allocation"].items()) + "."]
    event = change.get("config_event")
    lines += ["## 4. Config emitted", f"risk **{change['risk']}** (total variation {change['total_variation']:.3f})"
              f"; decision: {change.get('decision', {}).get('reason', 'no approval needed')}.",
              f"bandit_config event from the telemetry store: `{json.dumps({k: event.get(k) for k in ('timestamp', 'policy_version', 'arm_weights', 'exploration_rate', 'allocation')})}`"
              if event else "no bandit_config event of the learned version (the policy was not applied)."]
    observed = (change.get("observed") or {}).get("answer")
    if isinstance(observed, dict) and observed.get("assigned"):
        n = sum(observed["assigned"].values())
        served = (change.get("applied") or {}).get("answer", {}).get("allocation") or change["learned"]["allocation"]
        lines += ["## 5. Observed allocation", md_table(["arm", "applied share", "visits", "observed share"], [
            (a, f"{served.get(a, 0):.1%}", c, f"{c / n:.1%}") for a, c in observed["assigned"].items()])]
    restored = change.get("restored")
    lines.append(f"Previous policy restored: live version now `{restored['now'].get('policy_version')}`."
                 if restored and isinstance(restored.get("now"), dict) else "")
    text = "\n\n".join(lines) + "\n"
    phase.run.write_text(SIGNAL, text)
    return Markdown(text)
