"""Phase 08 bandit loop (docs/phases.md#08-learning-and-autonomy): logged CTA traffic → reward → posterior → policy → allocation.

The CTA app logs each impression it serves with the arm shown and the *propensity* it drew
it with (``cta_impression``, sampled at the source: the sampling is random and decided
before any outcome, so the logged rows are an unbiased subset). A visit's outcomes
(``cta_page_view``, ``cta_lead``, ``cta_checkout``, ``cta_complaint``) carry its trace id and
are never sampled, so each logged impression is joined to its outcomes on the trace id and
scored with the params' reward weights. A Thompson-sampling bandit
(:class:`readiness.stats.bandit.ThompsonBandit`) learns per-arm posteriors from those rewards; the
learned allocation, mixed with the exploration rate, is the candidate policy.

Before anything ships it is evaluated offline from the logged propensities (IPS and SNIPS,
paired bootstrap against a uniform policy) on a *held-out half* of the log: a policy scored
on the rows it was fitted to looks better than it is. The change's risk is the share of
traffic it moves (:func:`readiness.stats.bandit.change_risk`); medium or high needs a
``bandit_policy_change`` approval, refused → BLOCKED and nothing is sent. Applied, its
allocation is observed over simulated visits (Wilson interval per arm must contain the
applied share), then the previous policy is put back (in a ``finally``) and verified.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import altair as alt
import pandas as pd

from readiness.core import aio
from readiness.core.check import Status
from readiness.core.verdict import DECISION_LEVEL, Interval, interval_check, value_check
from readiness.phasekit.context import Phase
from readiness.probe.client import GuardedClient
from readiness.probe.sandbox_control import admin_headers
from readiness.probe.telemetry_store import TelemetryUnavailable, iso
from readiness.report.charts import save_chart
from readiness.report.markdown import checks_frame
from readiness.stats.bandit import (
    RewardWeights,
    ThompsonBandit,
    compare_with_uniform,
)

OUTCOMES = {"cta_page_view": "page_view", "cta_lead": "lead", "cta_checkout": "checkout",
            "cta_complaint": "complaint"}
MIN_LOGGED_PER_ARM = 30  # below this an arm's IPS term rests on too few rows for a CLT interval
PROPENSITY_TOLERANCE = 1e-6
ALLOCATION_MARGIN = 0.05  # an observed share matches the policy when shown to lie within ± 5 points of it
SETTLE_POLL_S = 1.0
SIMULATE_CHUNK = 20_000  # the simulator's bound per call
MAX_EVENTS = 200_000
LOGGED = "evidence/cta_logged.parquet"
SIMULATION = "evidence/cta_simulation.json"
CHANGE = "evidence/cta_policy_change.json"
POLICY, CONFIG, SIGNAL = "reports/rl_policy.json", "reports/bandit_config.json", "reports/rl_signal_path.md"
CHART = "learning_bandit_posterior"
TAGS = ("release_engineering", "test_quality")


# ---------------------------------------------------------------- pure logic

def join_rewards(impressions: Iterable[Mapping[str, Any]], outcomes: Iterable[Mapping[str, Any]],
                 weights: RewardWeights) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per logged impression with its 0/1 outcome signals and reward; plus counts
    of what was left out: impressions that carry no propensity at all (a page that chose
    its arm itself and only reported the impression — not a decision of the logging
    policy, so not usable for off-policy evaluation, but not a defect either),
    impressions whose arm/propensity/trace id is unusable, repeated impressions of one
    trace, and outcomes naming another arm than their impression."""
    skipped = {"not_policy_decisions": 0, "invalid_impressions": 0, "repeated_impressions": 0, "arm_mismatch": 0}
    rows: dict[str, dict[str, Any]] = {}
    for imp in impressions:
        trace, arm, prop = imp.get("trace_id"), imp.get("arm_id"), imp.get("propensity")
        if prop is None:
            skipped["not_policy_decisions"] += 1
            continue
        if not (trace and isinstance(arm, str) and isinstance(prop, int | float) and not isinstance(prop, bool)
                and 0 < prop <= 1):
            skipped["invalid_impressions"] += 1
            continue
        if trace in rows:
            skipped["repeated_impressions"] += 1
            continue
        rows[trace] = {"trace_id": trace, "arm": arm, "propensity": float(prop),
                       "policy_version": imp.get("policy_version"), "sample_rate": imp.get("sample_rate"),
                       "timestamp": imp.get("timestamp"), **dict.fromkeys(OUTCOMES.values(), False)}
    mismatched: set[str] = set()
    for out in outcomes:
        row = rows.get(out.get("trace_id"))  # type: ignore[arg-type]
        signal = OUTCOMES.get(str(out.get("event_type")))
        if row is None or signal is None:
            continue
        if out.get("arm_id") not in (None, row["arm"]):
            mismatched.add(row["trace_id"])
            continue
        row[signal] = True
    skipped["arm_mismatch"] = len(mismatched)
    kept = [r for t, r in rows.items() if t not in mismatched]
    for r in kept:
        r["reward"] = weights.reward(**{s: r[s] for s in OUTCOMES.values()})
    columns = ["trace_id", "arm", "propensity", "policy_version", "sample_rate", "timestamp",
               *OUTCOMES.values(), "reward"]
    return pd.DataFrame(kept, columns=columns), skipped


def allocation_of(arm_weights: Mapping[str, float], exploration_rate: float) -> dict[str, float]:
    """The CTA app's serving rule: p(arm) = (1 − ε)·w/Σw + ε/K."""
    total, k = sum(arm_weights.values()), len(arm_weights)
    if total <= 0:
        raise ValueError(f"allocation_of: arm weights must sum to more than 0, got {dict(arm_weights)}")
    return {a: (1 - exploration_rate) * w / total + exploration_rate / k for a, w in arm_weights.items()}


def propensity_mismatches(rows: pd.DataFrame, version: str, allocation: Mapping[str, float]) -> int:
    """Rows logged under ``version`` whose propensity is not that policy's share of their arm."""
    same = rows[rows["policy_version"] == version]
    expected = same["arm"].map(lambda a: allocation.get(a, -1.0))
    return int(((same["propensity"] - expected).abs() > PROPENSITY_TOLERANCE).sum())


def holdout(rows: pd.DataFrame) -> pd.Series:
    """True for the evaluation half: a fixed split on a hash of the trace id (replayable)."""
    return rows["trace_id"].map(lambda t: hashlib.sha256(str(t).encode()).digest()[0] % 2 == 1)


def fit(rows: pd.DataFrame, arms: list[str], *, exploration_rate: float, seed: int,
        weights: RewardWeights) -> ThompsonBandit:
    bandit = ThompsonBandit(arms, exploration_rate=exploration_rate, seed=seed, weights=weights)
    for arm, reward in zip(rows["arm"], rows["reward"], strict=True):
        if arm in arms:
            bandit.update(arm, float(reward))
    return bandit


# ---------------------------------------------------------------- HTTP helpers


async def _call(phase: Phase, client: GuardedClient, method: str, path: str, body: Any = None,
                admin: bool = True) -> tuple[int | None, Any]:
    app = phase.params.app(phase.params.learning.cta_app)
    sample = await client.request(method, app.url(path), app=app.id, route=path, json=body, keep_body=True,
                                  headers=admin_headers() if admin else None,
                                  idempotency_key=True if method != "GET" else None)
    try:
        return sample.status, sample.json()
    except ValueError:
        return sample.status, None


def cta_call(phase: Phase, method: str, path: str, body: Any = None, admin: bool = True) -> tuple[int | None, Any]:
    async def go() -> tuple[int | None, Any]:
        async with phase.client() as client:
            return await _call(phase, client, method, path, body, admin)
    return aio.run(go())


def _events(phase: Phase, since: dt.datetime, types: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    async def go() -> dict[str, list[dict[str, Any]]]:
        async with phase.client() as client:
            source, until = phase.telemetry(client), dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
            return {t: await source.events(since=since, until=until, app_id=phase.params.learning.cta_app,
                                           event_type=t, limit=MAX_EVENTS) for t in types}
    return aio.run(go())


def settled_events(phase: Phase, since: dt.datetime, types: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The events once two polls a second apart agree (the emitters have flushed), bounded
    by the telemetry arrival threshold."""
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=phase.params.thresholds.telemetry_arrival_s)
    last: dict[str, int] = {}
    while True:
        got = _events(phase, since, types)
        counts = {t: len(v) for t, v in got.items()}
        if counts == last or dt.datetime.now(dt.UTC) > deadline:
            return got
        last = counts
        aio.run(asyncio.sleep(SETTLE_POLL_S))


def read_artifact(phase: Phase, relpath: str, first: str) -> Any:
    path = phase.run.path(relpath)
    if not path.exists():
        raise RuntimeError(f"{relpath} is missing: run cta_learning.{first}(phase) first")
    return pd.read_parquet(path) if relpath.endswith(".parquet") else json.loads(path.read_text())


# ---------------------------------------------------------------- phase functions

def simulate_traffic(phase: Phase) -> pd.DataFrame:
    """Sandbox only: drive ``simulate_visits`` visits through the CTA app's bounded simulator."""
    p = phase.params.learning
    started = dt.datetime.now(dt.UTC)
    if phase.params.target != "sandbox" or p.simulate_visits == 0:
        why = "external target: the phase learns from the traffic the app logged" if phase.params.target != \
            "sandbox" else "simulate_visits is 0"
        phase.run.write_json(SIMULATION, {"simulated": False, "reason": why, "started_at": iso(started)})
        return pd.DataFrame([{"simulated": False, "reason": why}])
    assigned: dict[str, int] = {}
    answers = []
    for i, start in enumerate(range(0, p.simulate_visits, SIMULATE_CHUNK)):
        visits = min(SIMULATE_CHUNK, p.simulate_visits - start)
        status, body = cta_call(phase, "POST", "/admin/cta/simulate", {"visits": visits, "seed": p.seed + i})
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"POST /admin/cta/simulate → {status}: {body}")
        answers.append(body)
        for arm, n in body["assigned"].items():
            assigned[arm] = assigned.get(arm, 0) + int(n)
    phase.run.write_json(SIMULATION, {"simulated": True, "started_at": iso(started), "answers": answers})
    return pd.DataFrame([{"arm": a, "assigned": n} for a, n in assigned.items()])


def learn_policy(phase: Phase) -> pd.DataFrame:
    """Join the logged impressions to their outcomes, fit the bandit, write ``rl_policy.json``
    and ``bandit_config.json``; records ``learning.bandit.logged_data``. The posterior table."""
    p = phase.params.learning
    weights = RewardWeights(**p.reward.model_dump())
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=p.lookback_s)
    status, live = cta_call(phase, "GET", "/api/cta/config", admin=False)
    if status != 200 or not isinstance(live, dict):
        raise RuntimeError(f"GET /api/cta/config → {status}: {live}")
    try:
        events = settled_events(phase, since, ["cta_impression", *OUTCOMES])
    except TelemetryUnavailable as exc:
        raise RuntimeError(f"telemetry store unreadable: {exc}") from None
    outcomes = [e for t in OUTCOMES for e in events[t]]
    rows, skipped = join_rewards(events["cta_impression"], outcomes, weights)
    arms = list(live["arm_weights"])
    live_alloc = live.get("allocation") or allocation_of(live["arm_weights"], live["exploration_rate"])
    unknown = int((~rows["arm"].isin(arms)).sum())
    bad = skipped["invalid_impressions"] + unknown + propensity_mismatches(rows, live["policy_version"], live_alloc)
    rows = rows[rows["arm"].isin(arms)]
    phase.run.write_frame(LOGGED, rows)
    bandit = fit(rows, arms, exploration_rate=p.exploration_rate, seed=p.seed, weights=weights)
    policy = {**bandit.to_policy_json(p.posterior_draws), "logged_rows": len(rows), "skipped": skipped,
              "window_since": iso(since), "serving_allocation": bandit.propensities(p.posterior_draws)}
    version = f"learned-{phase.run.root.name}"
    config = {**bandit.config_json(p.posterior_draws), "policy_version": version,
              "allocation": policy["serving_allocation"]}
    phase.run.write_json(POLICY, policy)
    phase.run.write_json(CONFIG, config)
    per_arm = rows["arm"].value_counts().reindex(arms, fill_value=0)
    check = value_check(id="learning.bandit.logged_data", phase=phase.name, title="logged impressions carry valid "
                        "propensities", observed=bad, expected=0, unit="invalid rows", n=len(rows) + bad,
                        app=p.cta_app, tags=TAGS, evidence=(LOGGED, POLICY), severity="P1",
                        detail=f"per arm {per_arm.to_dict()}; skipped {skipped}; {unknown} unknown arms")
    if check.passed and per_arm.min() < MIN_LOGGED_PER_ARM:
        check = check.with_status(Status.INCONCLUSIVE, check.detail + f"; needs ≥ {MIN_LOGGED_PER_ARM} logged "
                                  f"impressions per arm (about {MIN_LOGGED_PER_ARM * len(arms)} in all)")
    phase.record([check])
    post = pd.DataFrame(bandit.posterior()).T.rename_axis("arm").reset_index()
    return post.assign(allocation=post["arm"].map(config["allocation"]))


def posterior_chart(phase: Phase) -> alt.LayerChart:
    """Posterior mean success propensity per arm with its 95% credible interval."""
    policy = read_artifact(phase, POLICY, "learn_policy")
    data = pd.DataFrame([{"arm": f"{a} (n={int(v['n'])})", **{k: v[k] for k in ("mean", "ci_low", "ci_high")},
                          "allocation": policy["serving_allocation"][a]} for a, v in policy["posterior"].items()])
    y = alt.Y("arm:N", title=None)
    chart = alt.layer(
        alt.Chart(data).mark_rule(strokeWidth=2).encode(x=alt.X("ci_low:Q", title="posterior success propensity "
                                                                "(rescaled reward)"), x2="ci_high:Q", y=y),
        alt.Chart(data).mark_point(filled=True, size=80).encode(x="mean:Q", y=y),
        alt.Chart(data).mark_text(align="left", dx=8, dy=-8).encode(
            x="mean:Q", y=y, text=alt.Text("allocation:Q", format=".0%"))).properties(
        title=alt.TitleParams("Bandit posterior per arm", subtitle="point: mean, rule: 95% credible interval, "
                              "label: learned serving share"), width=380, height=40 * len(data))
    save_chart(phase.run, CHART, chart)
    return chart


def evaluate_offline(phase: Phase) -> pd.DataFrame:
    """``learning.bandit.ips_vs_uniform``: a policy fitted on one half of the log, scored
    against uniform on the other half (SNIPS, paired bootstrap difference)."""
    p = phase.params.learning
    rows, policy = read_artifact(phase, LOGGED, "learn_policy"), read_artifact(phase, POLICY, "learn_policy")
    arms, weights = list(policy["posterior"]), RewardWeights(**p.reward.model_dump())
    held = holdout(rows) if len(rows) else pd.Series(dtype=bool)
    train, test = rows[~held], rows[held]
    common = dict(id="learning.bandit.ips_vs_uniform", phase=phase.name, title="learned policy beats uniform "
                  "offline (SNIPS difference)", unit="reward", tags=TAGS, evidence=(LOGGED, POLICY), app=p.cta_app)
    if len(test) < 2 or len(train) < 2:
        check = interval_check(estimate=None, missing=f"needs logged rows in both halves, have {len(train)} to fit "
                               f"and {len(test)} to evaluate", **common)
        phase.record([check])
        return checks_frame([check])
    target = fit(train, arms, exploration_rate=p.exploration_rate, seed=p.seed, weights=weights).propensities(
        p.posterior_draws)
    cmp = compare_with_uniform(test.to_dict("records"), target, confidence=DECISION_LEVEL, seed=p.seed)
    d = cmp.snips_difference
    check = interval_check(estimate=Interval(d.value, d.ci_low, d.ci_high, len(test), 0.0, DECISION_LEVEL), detail=(
        f"fit on {len(train)} rows, evaluated on {len(test)}; SNIPS learned {cmp.learned.snips.value:.4f} "
        f"vs uniform {cmp.uniform.snips.value:.4f}; IPS difference {cmp.ips_difference.value:.4f} "
        f"[{cmp.ips_difference.ci_low:.4f}, {cmp.ips_difference.ci_high:.4f}]"), **common)
    phase.run.write_json("evidence/cta_offline_evaluation.json", {
        "train_rows": len(train), "test_rows": len(test), "target": target, "resamples": cmp.resamples,
        **{k: dataclasses.asdict(getattr(cmp, k)) for k in ("learned", "uniform", "ips_difference",
                                                             "snips_difference")}})
    phase.record([check])
    frame = pd.DataFrame([{"policy": name, **{f"{m}{s}": getattr(getattr(r, m), f) for m in ("ips", "snips")
                                               for s, f in (("", "value"), ("_low", "ci_low"), ("_high", "ci_high"))},
                           "ess": r.effective_sample_size} for name, r in (("learned", cmp.learned),
                                                                           ("uniform", cmp.uniform))])
    return frame.set_index("policy")
