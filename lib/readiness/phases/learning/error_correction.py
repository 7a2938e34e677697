"""Phase 08 error correction (docs/phases.md#08-learning-and-autonomy): retries, backoff and the circuit breaker, from evidence.

Nothing here reads a retry configuration. The orchestrator's own telemetry says when each
attempt of each run started (``upstream_attempt``), what wait it chose (``upstream_retry``),
how its breaker moved (``breaker_transition``) and how each cycle ended
(``orchestration_cycle_complete``); the checks are statistics over those facts.

The unit of evidence is a *retry gap*: within one run, the idle time between the end of
attempt k and the start of attempt k+1 (start-to-start gap minus attempt k's own duration),
labelled with its attempt index k. Subtracting the attempt's duration keeps the upstream's
latency — which varies by itself — out of both tests below.

* **Exponential backoff** — regress log(gap) on k; exp(slope) is the per-retry growth
  factor (2 for pure doubling; additive jitter pulls the ratio of the totals a little
  below). Its interval is a percentile bootstrap that resamples whole runs (gaps of one
  run share its timing context). A backoff is called exponential when the whole interval
  lies above :data:`MIN_GROWTH`: a wait that grows by less than a quarter per retry does
  not relieve a struggling upstream, and a fixed backoff (factor 1) must FAIL rather than
  pass on a drift of a few percent. Below it entirely is a FAIL; across it, INCONCLUSIVE.
* **Jitter** — gaps at the same index must differ by more than timer noise could make
  them. Statistic: the interquartile range of r = gap / median(gaps at its index), pooled
  over indices. Bound for a deterministic schedule: if every wait at index k is w_k plus a
  timer error e (sleep overshoot, scheduling, lock waits), then r − 1 = (e − median e)/m_k,
  a copy of the error's centred distribution scaled by 1/m_k (m_k: the median gap at k).
  The quartiles of a mixture lie between those of its components, so the pooled IQR is at
  most IQR(e)/m with m the smallest median. IQR(e) is measured as the IQR of gap − the
  wait the run reported choosing (its 95% bootstrap upper bound), never below
  :data:`TIMER_NOISE_FLOOR_S` (which, without reported waits, bounds the whole range of e
  and so its IQR). PASS when the bootstrap lower bound of the statistic exceeds IQR(e)/m,
  FAIL when its upper bound stays below it.
* **Bounded attempts** — the cap is evidenced by runs that gave up (outcome ``failed``):
  no run may have made more attempts than they did.
* **Breaker** — transitions must chain (each from-state is the previous to-state) along
  the legal edges of Closed → Open → Half-Open → Closed (a failed trial reopens); every
  open must end in a close through half-open (a direct open → closed is an operator reset).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from readiness.core import aio
from readiness.core.check import Check, Status
from readiness.core.verdict import DECISION_LEVEL, Interval, interval_check, value_check
from readiness.phasekit.context import Phase
from readiness.probe.telemetry_store import TelemetryUnavailable, iso, parse_ts
from readiness.report.charts import save_chart
from readiness.report.markdown import checks_frame, checks_table, header, md_table

MIN_GROWTH = 1.25
TIMER_NOISE_FLOOR_S = 0.002
MIN_PER_INDEX = 3  # gaps an attempt index needs before it counts for the growth fit
JITTER_MIN_PER_INDEX = 5  # a median of fewer gaps is too rough to normalise by
RESAMPLES = 2000
CONFIDENCE = DECISION_LEVEL  # two-sided 90%: each end a one-sided 95% bound, as in every rule
POLL_S = 2.5
MAX_EVENTS = 100_000
LEGAL_EDGES = {("closed", "open"), ("open", "half_open"), ("half_open", "closed"), ("half_open", "open")}
GAPS = "evidence/retry_gaps.parquet"
EVENTS = "evidence/error_correction_events.json"
REPORT = "reports/error_correction_learning.md"
CHART = "learning_retry_gaps"
TAGS = ("resiliency", "reliability")


# ---------------------------------------------------------------- pure statistics

def _field(row: Mapping[str, Any], name: str, i: int) -> Any:
    if row.get(name) is None:
        raise ValueError(f"retry_gaps: upstream_attempt #{i} lacks {name}")
    return row[name]


def retry_gaps(attempts: Iterable[Mapping[str, Any]], retries: Iterable[Mapping[str, Any]] = ()) -> pd.DataFrame:
    """One row per pair of consecutive attempts (k, k+1) of a run: ``run_id``, ``index`` k,
    ``gap_s`` (start to start), ``idle_s`` (gap minus attempt k's ``elapsed_ms``) and
    ``chosen_wait_s`` (the wait the run reported for retry k, NaN when not reported).
    A pair with a missing attempt between (a lost event) is skipped, never bridged."""
    starts: dict[str, dict[int, tuple[dt.datetime, float]]] = {}
    for i, row in enumerate(attempts):
        run, k = str(_field(row, "run_id", i)), _field(row, "attempt", i)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"retry_gaps: upstream_attempt #{i} has attempt {k!r}, expected an integer >= 1")
        try:
            t = parse_ts(str(_field(row, "started_at", i)))
        except ValueError:
            raise ValueError(f"retry_gaps: upstream_attempt #{i} has started_at {row['started_at']!r}, "
                             "expected an ISO-8601 time") from None
        elapsed = row.get("elapsed_ms")
        if not isinstance(elapsed, int | float) or isinstance(elapsed, bool) or elapsed < 0:
            raise ValueError(f"retry_gaps: upstream_attempt #{i} has elapsed_ms {elapsed!r}, expected a number >= 0")
        if k in starts.setdefault(run, {}):
            raise ValueError(f"retry_gaps: run {run} reports attempt {k} twice")
        starts[run][k] = (t, float(elapsed) / 1000.0)
    chosen = {(str(r.get("run_id")), r.get("attempt")): r.get("wait_s") for r in retries}
    rows = []
    for run, by_k in starts.items():
        for k in sorted(by_k):
            if k + 1 in by_k:
                gap = (by_k[k + 1][0] - by_k[k][0]).total_seconds()  # exact to the µs, unlike epoch floats
                wait = chosen.get((run, k))
                rows.append({"run_id": run, "index": k, "gap_s": gap, "idle_s": gap - by_k[k][1],
                             "chosen_wait_s": float(wait) if isinstance(wait, int | float) else math.nan})
    return pd.DataFrame(rows, columns=["run_id", "index", "gap_s", "idle_s", "chosen_wait_s"])


def usable(gaps: pd.DataFrame) -> pd.DataFrame:
    """Gaps with a positive idle time (a non-positive one is a clock artefact: it has no log)."""
    return gaps[gaps["idle_s"] > 0]


def index_counts(gaps: pd.DataFrame) -> dict[int, int]:
    return {int(k): int(n) for k, n in usable(gaps)["index"].value_counts().sort_index().items()}


def enough_gaps(gaps: pd.DataFrame, min_gaps: int) -> bool:
    """At least ``min_gaps`` usable gaps, at two or more indices holding MIN_PER_INDEX each."""
    counts = index_counts(gaps)
    return sum(counts.values()) >= min_gaps and sum(n >= MIN_PER_INDEX for n in counts.values()) >= 2


def growth_factor(gaps: pd.DataFrame, *, seed: int, resamples: int = RESAMPLES,
                  confidence: float = CONFIDENCE) -> Interval | None:
    """exp(OLS slope of log idle gap on attempt index), bootstrap over runs; None when the
    indices with MIN_PER_INDEX gaps number fewer than two (no slope to estimate)."""
    g = usable(gaps)
    counts = index_counts(gaps)
    if sum(n >= MIN_PER_INDEX for n in counts.values()) < 2:
        return None
    x, y = g["index"].to_numpy(float), np.log(g["idle_s"].to_numpy(float))
    runs, run_of = np.unique(g["run_id"].to_numpy(str), return_inverse=True)
    rng = np.random.default_rng([seed, 11])
    draws = rng.multinomial(len(runs), np.full(len(runs), 1.0 / len(runs)), size=resamples)
    w = np.vstack([np.ones(len(runs)), draws])[:, run_of].astype(float)  # row 0: the sample itself
    xm = (w * x).sum(1) / w.sum(1)
    ym = (w * y).sum(1) / w.sum(1)
    sxx = (w * (x - xm[:, None]) ** 2).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = (w * (x - xm[:, None]) * (y - ym[:, None])).sum(1) / sxx
    boot = np.exp(slopes[1:][np.isfinite(slopes[1:])])
    low, high = np.percentile(boot, [50 * (1 - confidence), 50 * (1 + confidence)])
    return Interval(float(np.exp(slopes[0])), float(low), float(high), len(g), MIN_GROWTH, confidence)


def timer_noise(gaps: pd.DataFrame, *, seed: int = 0, resamples: int = RESAMPLES) -> float:
    """IQR(e) of the timer error e = gap − reported chosen wait (95% bootstrap upper bound),
    at least the floor; the floor alone when fewer than 10 gaps report their wait."""
    g = usable(gaps)
    e = (g["idle_s"] - g["chosen_wait_s"]).dropna().to_numpy()
    if len(e) < 10:
        return TIMER_NOISE_FLOOR_S
    boot = np.random.default_rng([seed, 13]).choice(e, size=(resamples, len(e)))
    iqr = np.subtract(*np.percentile(boot, [75, 25], axis=1))
    return max(TIMER_NOISE_FLOOR_S, float(np.percentile(iqr, 95)))


def jitter_dispersion(gaps: pd.DataFrame, *, seed: int, resamples: int = RESAMPLES,
                      confidence: float = CONFIDENCE) -> Interval | None:
    """IQR of gap/median-at-its-index, pooled over indices with MIN_PER_INDEX gaps, with a
    bootstrap interval (resampling within each index) and the deterministic-schedule bound
    IQR(e)/m of the module docstring as ``threshold``; None without such an index."""
    g = usable(gaps)
    groups = [v["idle_s"].to_numpy(float) for _, v in g.groupby("index") if len(v) >= JITTER_MIN_PER_INDEX]
    if not groups:
        return None
    rng = np.random.default_rng([seed, 12])
    pooled = np.concatenate([v / np.median(v) for v in groups])
    boot = np.concatenate([(s := v[rng.integers(0, len(v), (resamples, len(v)))]) / np.median(s, 1)[:, None]
                           for v in groups], axis=1)
    iqr = np.subtract(*np.percentile(boot, [75, 25], axis=1))
    low, high = np.percentile(iqr, [50 * (1 - confidence), 50 * (1 + confidence)])
    bound = timer_noise(gaps, seed=seed) / min(float(np.median(v)) for v in groups)
    value = float(np.subtract(*np.percentile(pooled, [75, 25])))
    return Interval(value, float(low), float(high), len(pooled), bound, confidence)


def bounded_attempts(cycles: Sequence[Mapping[str, Any]]) -> tuple[Status, int | None, str]:
    """(status, max attempts, why) from the runs' final ``attempts`` and ``outcome``."""
    attempts = [int(c["attempts"]) for c in cycles if isinstance(c.get("attempts"), int) and c["attempts"] > 0]
    if not attempts:
        return Status.INCONCLUSIVE, None, "no orchestration cycle with attempts in the window"
    top = max(attempts)
    gave_up = sorted({int(c["attempts"]) for c in cycles if c.get("outcome") == "failed" and c.get("attempts")})
    if not gave_up:
        return (Status.INCONCLUSIVE, top, f"at most {top} attempts over {len(attempts)} runs, but no run exhausted "
                "its retries in the window, so the cap itself was not observed")
    if top > min(gave_up):
        return (Status.FAIL, top, f"runs gave up after {gave_up} attempts, yet one made {top}: "
                "the retry cap is not consistent")
    return Status.PASS, top, (f"{sum(a == top for a in attempts)} of {len(attempts)} runs reached {top} attempts "
                              f"and {sum(c.get('outcome') == 'failed' for c in cycles)} gave up there; none went further")


def breaker_history(transitions: Sequence[Mapping[str, Any]], now: dt.datetime,
                    max_heal_s: float) -> dict[str, Any]:
    """Chain, legality, full cycles and healing of the breaker's transitions (sorted by ``at``)."""
    rows = sorted(transitions, key=lambda t: parse_ts(str(t["at"])))
    problems: list[str] = []
    for prev, cur in zip(rows, rows[1:], strict=False):
        if cur["from_state"] != prev["to_state"]:
            problems.append(f"{cur['at']}: from {cur['from_state']} after a move to {prev['to_state']}")
    for t in rows:
        if (t["from_state"], t["to_state"]) not in LEGAL_EDGES:
            problems.append(f"{t['at']}: illegal {t['from_state']} → {t['to_state']}"
                            + (" (an operator reset)" if (t["from_state"], t["to_state"]) == ("open", "closed") else ""))
    states = [r["to_state"] for r in rows]
    cycles = sum(states[i:i + 3] == ["open", "half_open", "closed"] for i in range(len(states)))
    heals, unhealed, young = [], [], []
    for i, t in enumerate(rows):
        if t["to_state"] != "open" or t["from_state"] == "half_open":  # a failed trial: the same outage
            continue
        close = next((r for r in rows[i + 1:] if r["to_state"] == "closed"), None)
        opened = parse_ts(str(t["at"]))
        if close is not None:
            heals.append((parse_ts(str(close["at"])) - opened).total_seconds())
        elif (now - opened).total_seconds() > max_heal_s:
            unhealed.append(str(t["at"]))
        else:
            young.append(str(t["at"]))
    return {"n": len(rows), "problems": problems, "full_cycles": cycles, "opens": len(heals) + len(unhealed) + len(young),
            "heal_s": heals, "unhealed": unhealed, "still_open_recently": young}


# ---------------------------------------------------------------- phase functions

async def _fetch(phase: Phase, since: dt.datetime, until: dt.datetime, types: Sequence[str]) -> dict[str, list]:
    async with phase.client() as client:
        source = phase.telemetry(client)
        return {t: await source.events(since=since, until=until, app_id=phase.params.learning.retry_app,
                                       event_type=t, limit=MAX_EVENTS) for t in types}


def observe_retries(phase: Phase) -> pd.DataFrame:
    """Read A3's error-correction events over ``lookback_s``, polling until ``min_retry_gaps``
    gaps at two indices are in or ``observe_max_s`` has passed; the gaps per attempt index."""
    p = phase.params.learning
    started, error = time.monotonic(), None
    events: dict[str, list] = {}
    gaps = retry_gaps([])
    while True:
        until = dt.datetime.now(dt.UTC)
        since = until - dt.timedelta(seconds=p.lookback_s)
        try:
            events = aio.run(_fetch(phase, since, until, ("upstream_attempt", "upstream_retry")))
            gaps = retry_gaps(events["upstream_attempt"], events["upstream_retry"])
        except (TelemetryUnavailable, ValueError) as exc:
            error = str(exc)
            break
        if enough_gaps(gaps, p.min_retry_gaps) or time.monotonic() - started + POLL_S > p.observe_max_s:
            break
        time.sleep(POLL_S)
    waited = time.monotonic() - started
    if error is None:
        try:
            events |= aio.run(_fetch(phase, since, until, ("breaker_transition", "orchestration_cycle_complete")))
        except TelemetryUnavailable as exc:
            error = str(exc)
    phase.run.write_frame(GAPS, gaps)
    phase.run.write_json(EVENTS, {
        "window": f"{iso(since)}/{iso(until)}", "waited_s": round(waited, 2), "error": error,
        "counts": {t: len(v) for t, v in events.items()}, "gaps_per_index": index_counts(gaps),
        "breaker_transitions": events.get("breaker_transition", []),
        "cycles": [{k: c.get(k) for k in ("run_id", "outcome", "attempts", "duration_ms")}
                   for c in events.get("orchestration_cycle_complete", [])]})
    return gap_summary(gaps)


def gap_summary(gaps: pd.DataFrame) -> pd.DataFrame:
    """Quartiles of the idle gap (ms) per attempt index: what the chart draws."""
    g = usable(gaps).assign(ms=lambda d: d["idle_s"] * 1000)
    cols = ["index", "n", "p05_ms", "p25_ms", "median_ms", "p75_ms", "p95_ms"]
    if g.empty:
        return pd.DataFrame(columns=cols)
    q = g.groupby("index")["ms"].quantile([0.05, 0.25, 0.5, 0.75, 0.95]).unstack()
    q.columns = cols[2:]
    return q.assign(n=g.groupby("index").size()).reset_index()[cols]


def _stored(phase: Phase) -> tuple[pd.DataFrame, dict[str, Any]]:
    import json

    if not phase.run.path(EVENTS).exists():
        raise RuntimeError(f"{EVENTS} is missing: run learning.observe_retries(phase) first")
    return pd.read_parquet(phase.run.path(GAPS)), json.loads(phase.run.path(EVENTS).read_text())


def retry_checks(phase: Phase) -> pd.DataFrame:
    """``learning.retry.exponential``, ``learning.retry.jitter``, ``learning.retry.bounded``."""
    gaps, ev = _stored(phase)
    p, seed = phase.params.learning, phase.params.learning.seed
    counts, total = index_counts(gaps), len(usable(gaps))
    common = dict(phase=phase.name, app=p.retry_app, window=ev["window"], tags=TAGS, evidence=(GAPS, EVENTS))
    have = f"have {total} gaps ({', '.join(f'index {k}: {n}' for k, n in counts.items()) or 'none'})"
    short = ev["error"] or ("" if enough_gaps(gaps, p.min_retry_gaps) else
                            f"needs ≥ {p.min_retry_gaps} retry gaps with ≥ {MIN_PER_INDEX} at each of ≥ 2 attempt "
                            f"indices, {have} after waiting {ev['waited_s']} s")
    growth = None if short else growth_factor(gaps, seed=seed)
    jitter = None if short else jitter_dispersion(gaps, seed=seed)
    status, top, why = bounded_attempts(ev["cycles"])
    checks = [
        interval_check(id="learning.retry.exponential", title="retry waits grow exponentially (per-retry factor)",
                       estimate=growth, unit="×", missing=short, severity="P1",
                       detail=f"{have}; exp(slope of log gap on attempt index), bootstrap over runs", **common),
        interval_check(id="learning.retry.jitter", title="retry waits are randomized (IQR of gap/median per index)",
                       estimate=jitter, unit="", missing=short, severity="P2",
                       detail=f"threshold = IQR(e)/m, IQR(e) = {timer_noise(gaps, seed=seed) * 1000:.2f} ms timer "
                       "noise", **common),
        Check(id="learning.retry.bounded", title="retries stop at a cap", status=status, observed=top,
              unit="attempts", n=len(ev["cycles"]), detail=why, severity="P1", **common)]
    phase.record(checks)
    return checks_frame(checks)


def retry_chart(phase: Phase) -> alt.LayerChart:
    """Idle gap per attempt index: 5–95% whiskers, quartile bars, median ticks, log scale."""
    data = gap_summary(_stored(phase)[0])
    if data.empty:
        raise ValueError("retry_chart: no retry gaps were observed, nothing to chart")
    data["label"] = [f"after attempt {k} (n={n})" for k, n in zip(data["index"], data["n"], strict=True)]
    x = alt.X("label:N", sort=list(data["label"]), title="retry")
    y = alt.Y("p05_ms:Q", scale=alt.Scale(type="log"), title="idle gap before the next attempt (ms, log)")
    base = alt.Chart(data)
    chart = alt.layer(base.mark_rule().encode(x=x, y=y, y2="p95_ms:Q"),
                      base.mark_bar(size=28, color="#90caf9").encode(x=x, y="p25_ms:Q", y2="p75_ms:Q"),
                      base.mark_tick(color="#0d47a1", size=28, thickness=2).encode(x=x, y="median_ms:Q")
                      ).properties(title=alt.TitleParams("Retry gaps by attempt index",
                                   subtitle="bar: quartiles, tick: median, rule: 5–95%"), width=320, height=220)
    save_chart(phase.run, CHART, chart)
    return chart


def breaker_checks(phase: Phase) -> pd.DataFrame:
    """``learning.breaker.transitions`` and ``learning.breaker.auto_heal``."""
    _, ev = _stored(phase)
    p = phase.params
    hist = breaker_history(ev["breaker_transitions"], dt.datetime.now(dt.UTC), p.resiliency.max_time_to_recover_s)
    common = dict(phase=phase.name, app=p.learning.retry_app, window=ev["window"], tags=TAGS, evidence=(EVENTS,),
                  severity="P1")
    none = ("no breaker transition in the window: the breaker never opened under normal traffic "
            "(09_resiliency provokes transitions with injected 503s)")
    if ev["error"] or not hist["n"]:
        why = ev["error"] or none
        checks = [Check(id=f"learning.breaker.{k}", title=t, status=Status.INCONCLUSIVE, n=0, detail=why, **common)
                  for k, t in (("transitions", "breaker moves Closed → Open → Half-Open → Closed"),
                               ("auto_heal", "every open healed without an operator reset"))]
    else:
        order = value_check(id="learning.breaker.transitions", title="breaker moves Closed → Open → Half-Open → Closed",
                            observed=len(hist["problems"]), expected=0, unit="illegal moves", n=hist["n"],
                            detail=f"{hist['full_cycles']} full cycles; " + "; ".join(hist["problems"][:3]), **common)
        if not hist["problems"] and not hist["full_cycles"]:
            order = order.with_status(Status.INCONCLUSIVE, "legal moves but no full cycle completed in the window")
        heal_s = ", ".join(f"{s:.1f}" for s in hist["heal_s"][:10])
        heal = value_check(id="learning.breaker.auto_heal", title="every open healed without an operator reset",
                           observed=len(hist["heal_s"]), expected=hist["opens"], unit="opens healed", n=hist["opens"],
                           detail=f"healed after [{heal_s}] s; unhealed > {p.resiliency.max_time_to_recover_s:g} s: "
                           f"{hist['unhealed']}", **common)
        if any("operator reset" in x for x in hist["problems"]):
            heal = heal.with_status(Status.FAIL, heal.detail + "; an open ended by an operator reset")
        elif hist["still_open_recently"] and not hist["unhealed"]:
            heal = heal.with_status(Status.INCONCLUSIVE, heal.detail + f"; still open: {hist['still_open_recently']}")
        checks = [order, heal]
    phase.record(checks)
    return checks_frame(checks)


def write_report(phase: Phase) -> Markdown:
    """``reports/error_correction_learning.md``: the evidence, the gaps table and the verdicts."""
    gaps, ev = _stored(phase)
    checks = [c for c in phase.run.read_checks(phase.name) if c.id.startswith(("learning.retry", "learning.breaker"))]
    summary = gap_summary(gaps)
    table = md_table(list(summary.columns), [[f"{v:.1f}" if isinstance(v, float) else v for v in r]
                                             for r in summary.itertuples(index=False)]) if len(summary) else "_none_"
    p = phase.params
    text = "\n".join([
        header("Error correction, learned from telemetry", ecosystem=p.ecosystem, environment=p.environment,
               run_name=phase.run.root.name, profile_note=p.profile_note),
        f"Window `{ev['window']}` on {p.learning.retry_app}; waited {ev['waited_s']} s for gaps. "
        f"Events: {ev['counts']}.", "", "## Retry gaps (idle time before the next attempt)", "", table, "",
        f"![retry gaps](../charts/{CHART}.svg)", "", "## Verdicts", "", checks_table(checks), "",
        "## Method", "", (__doc__ or "").split("\n\n", 2)[2]])
    phase.run.write_text(REPORT, text)
    # the report file links its chart relative to reports/; the rendered notebook shows the
    # chart from its own cell, and a relative image would not resolve from html/leadership/
    return Markdown(text.replace(f"![retry gaps](../charts/{CHART}.svg)", f"Chart: `charts/{CHART}.svg` (above)."))
