"""Phase 02, reading side: percentile tables, before/after comparisons, charts, history.

Everything here is computed from ``evidence/latency_samples.parquet`` of this run and of
the latest complete earlier run (the baseline, found automatically), so a notebook cell
can be re-run without probing again.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
from IPython.display import Markdown

from readiness.core.check import Check, Status
from readiness.core.history import SAMPLES_FILE, load_samples, p95_history
from readiness.core.runfolder import latest_complete_run
from readiness.core.verdict import regression_check
from readiness.params.model import Params
from readiness.phasekit.context import Phase
from readiness.phases.latency.profile import PROFILE, WARMUP, critical_routes, good_latencies, profile_size
from readiness.report.charts import MAX_CHART_ROWS, ecdf_chart, histogram_bins_chart, save_chart
from readiness.report.markdown import checks_table, header
from readiness.stats.latency import ecdf, histogram, percentile_summary, quantile_difference

QS = (0.5, 0.95, 0.99)
PROFILES_CSV = "reports/latency_profiles_after.csv"
COMPARISON_CSV = "reports/comparison.csv"
SNAPSHOT = "reports/baseline_slo_snapshot.json"


def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 3)


def _finite(x: float | None) -> float | None:
    """For JSON: a percentile that is infinite (too many failed requests) has no number."""
    return _num(x) if x is not None and math.isfinite(x) else None


def percentile_table(phase: Phase) -> pd.DataFrame:
    """P50/P95/P99 with two-sided 95% intervals and n, per label, endpoint and mode."""
    frame = load_samples(phase.run.root)
    frame = frame[frame.label != WARMUP]
    rows = []
    for (label, app, endpoint, mode), grp in frame.groupby(["label", "app", "endpoint", "mode"], sort=False):
        row: dict[str, Any] = {"label": label, "app": app, "endpoint": endpoint, "mode": mode, "n": len(grp),
                               "errors": int((~grp.ok.fillna(False).astype(bool)).sum())}
        for pr in percentile_summary(good_latencies(grp), QS, phase.params.thresholds.confidence):
            key = f"p{round(pr.q * 100)}"
            row.update({f"{key}_ms": _num(pr.estimate), f"{key}_low_ms": _num(pr.low),
                        f"{key}_high_ms": _num(pr.high), f"{key}_upper_ms": _num(pr.upper),
                        f"{key}_needs_n": pr.needs_n})
        rows.append(row)
    table = pd.DataFrame(rows)
    buf = table.to_csv(index=False)
    phase.run.write_text(PROFILES_CSV, buf)
    return _display(table)


def _display(table: pd.DataFrame) -> pd.DataFrame:
    """The same numbers as text: "41.2 [38.0, 45.1]" or "needs n ≥ 368" (no invented bounds)."""
    out = table[["label", "app", "endpoint", "mode", "n", "errors"]].copy()
    for key in ("p50", "p95", "p99"):
        def cell(r: pd.Series, k: str = key) -> str:
            est = r[f"{k}_ms"]
            if est is None or pd.isna(est):
                return "no data"
            if r[f"{k}_low_ms"] is None or pd.isna(r[f"{k}_low_ms"]) or pd.isna(r[f"{k}_high_ms"]):
                return f"{est:.1f} (interval needs n ≥ {int(r[f'{k}_needs_n'])})"
            return f"{est:.1f} [{r[f'{k}_low_ms']:.1f}, {r[f'{k}_high_ms']:.1f}]"
        out[f"{key.upper()} ms [95% CI]"] = table.apply(cell, axis=1)
    return out.set_index(["label", "app", "endpoint", "mode"])


def _diff_rows(comparison: str, app: str, endpoint: str, before: Any, after: Any, conf: float) -> list[dict]:
    rows = []
    for q in QS:
        d = quantile_difference(before, after, q, conf)
        rows.append({"comparison": comparison, "app": app, "endpoint": endpoint, "q": q,
                     "n_before": d.n_before, "n_after": d.n_after, "before_ms": _num(d.before),
                     "after_ms": _num(d.after), "diff_ms": _num(d.diff), "diff_low_ms": _num(d.diff_low),
                     "diff_high_ms": _num(d.diff_high), "ratio": _num(d.ratio), "ratio_low": _num(d.ratio_low),
                     "ratio_high": _num(d.ratio_high), "needs_n": d.needs_n})
    return rows


def _warm(frame: pd.DataFrame, app: str, endpoint: str, label: str = PROFILE) -> Any:
    sel = (frame.app == app) & (frame.endpoint == endpoint) & (frame["mode"] == "warm") & (frame.label == label)
    return good_latencies(frame[sel])


def slo_snapshot(params: Params, run_root: Path, latency_phase: str = "02_latency_profile",
                 ) -> tuple[Path | None, pd.DataFrame | None, dict[str, Any]]:
    """The baseline: the latest complete earlier run of this ecosystem whose latency phase ran.

    Returns its folder, its warm samples and the snapshot of its SLO metrics per critical
    endpoint (P50/P95/P99, n, failures) — what ``baseline_slo_snapshot.json`` holds, both
    in the latency phase and in the Gate 1 bundle, which is written before that phase runs.
    """
    conf = params.thresholds.confidence
    baseline_dir = latest_complete_run(run_root.parent, exclude=run_root, ecosystem=params.ecosystem,
                                       phase_ok=latency_phase)
    before = None
    if baseline_dir is not None and (baseline_dir / SAMPLES_FILE).is_file():
        before = load_samples(baseline_dir, label=PROFILE)
    snapshot: dict[str, Any] = {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                "baseline_run": baseline_dir.name if before is not None else None,
                                "endpoints": []}
    if before is None or baseline_dir is None:
        snapshot["reason"] = "no complete earlier run of this ecosystem with a latency profile"
        return None, None, snapshot
    for app in params.apps:
        for route in app.critical_routes:
            prior = _warm(before, app.id, route.name)
            summary = {f"p{round(pr.q * 100)}_ms": _finite(pr.estimate) for pr in percentile_summary(prior, QS, conf)}
            snapshot["endpoints"].append({"app": app.id, "endpoint": route.name, "n": len(prior),
                                          "failed_or_unanswered": int((prior == math.inf).sum()), **summary})
    return baseline_dir, before, snapshot


def baseline_comparison(phase: Phase) -> pd.DataFrame:
    """This run against the latest complete earlier run (and flags OFF against ON on the sandbox).

    Writes comparison.csv and baseline_slo_snapshot.json; records one regression check per
    critical endpoint. A regression > ``thresholds.regression_max_pct`` (and, so that
    scheduler noise on a few-ms endpoint is not one, > ``thresholds.regression_min_ms``)
    marks the run's stop condition.
    """
    p = phase.params
    conf = p.thresholds.confidence
    now = load_samples(phase.run.root)
    baseline_dir, before, snapshot = slo_snapshot(p, phase.run.root, phase.name)
    rows: list[dict] = []
    checks: list[Check] = []
    for app, route in critical_routes(phase):
        after = _warm(now, app.id, route.name)
        prior = _warm(before, app.id, route.name) if before is not None else []
        if before is not None and baseline_dir is not None:
            rows += _diff_rows(f"baseline {baseline_dir.name}", app.id, route.name, prior, after, conf)
        checks.append(regression_check(
            id=f"latency.regression.{app.id}.{route.name}", phase=phase.name, app=app.id,
            title=f"{app.id} {route.name} P95 has not regressed > {p.thresholds.regression_max_pct:g}% "
                  f"(and > {p.thresholds.regression_min_ms:g} ms) against the baseline run",
            before_ms=prior, after_ms=after, q=0.95,
            max_increase_pct=p.thresholds.regression_max_pct, min_increase_ms=p.thresholds.regression_min_ms,
            confidence=conf, design_ratio=p.design.regression_detect_ratio, tags=("performance",),
            evidence=(COMPARISON_CSV, SNAPSHOT)))
    for cmp in p.latency.compare_flags:
        off, on = _warm(now, cmp.app, cmp.route), _warm(now, cmp.app, cmp.route, f"{cmp.flag}=on")
        back = _warm(now, cmp.app, cmp.route, f"{cmp.flag}=rollback")
        rows += _diff_rows(f"flag {cmp.flag}: off → on", cmp.app, cmp.route, off, on, conf)
        rows += _diff_rows(f"flag {cmp.flag}: on → rollback (off)", cmp.app, cmp.route, on, back, conf)
    table = pd.DataFrame(rows)
    phase.run.write_text(COMPARISON_CSV, table.to_csv(index=False))
    phase.run.write_json(SNAPSHOT, snapshot)
    _mark_stop_condition(phase, checks)
    phase.record(checks)
    return table.set_index(["comparison", "app", "endpoint", "q"]) if not table.empty else table


def _mark_stop_condition(phase: Phase, checks: list[Check]) -> None:
    regressed = [c for c in checks if c.status is Status.FAIL]
    if not regressed:
        return
    info = phase.run.info()
    stops = list(info.get("stop_conditions", []))
    t = phase.params.thresholds
    stops.append({"phase": phase.name, "reason": f"latency regression above {t.regression_max_pct:g}% "
                  f"(and {t.regression_min_ms:g} ms) on " + ", ".join(c.id for c in regressed)})
    phase.run.update_info(stop_conditions=stops)


def distributions(phase: Phase, *, log_scale: bool = False) -> alt.VConcatChart:
    """Per endpoint: histogram of the warm profile and ECDFs of every series, saved as files.

    Both are aggregated first (fixed bins, ECDF on a fixed probability grid), so the
    charts and the HTML stay the same size whatever n is.
    """
    frame = load_samples(phase.run.root)
    bins = phase.params.latency.histogram_bins
    panels = []
    for app, route in critical_routes(phase):
        mine = frame[(frame.app == app.id) & (frame.endpoint == route.name)]
        if mine.empty:
            continue
        threshold = phase.params.thresholds.hot_path_p95_ms if route.hot_path else app.slo.p95_ms
        hist = histogram(_warm(mine, app.id, route.name), bins=bins, log=log_scale)
        groups = list(mine[mine.label != WARMUP].groupby(["label", "mode"], sort=False))
        points = max(2, min(101, MAX_CHART_ROWS // max(1, len(groups))))  # every series fits one chart
        sent = {f"{lb} · {md}": len(g) for (lb, md), g in groups}
        answered = [(f"{lb} · {md}", good_latencies(g)) for (lb, md), g in groups]
        curves = pd.concat([ecdf(v, points=points).assign(series=name) for name, v in answered if len(v)]
                           or [pd.DataFrame(columns=["p", "value_ms", "series"])], ignore_index=True)
        title = f"{app.id} {route.name}"
        chart = alt.hconcat(histogram_bins_chart(hist, threshold_ms=threshold, log_scale=log_scale,
                                                 title=f"{title}: warm profile (n={int(hist['count'].sum())})"),
                            ecdf_chart(curves, threshold_ms=threshold, log_scale=log_scale, title=f"{title}: ECDF",
                                       n_sent=sent))
        save_chart(phase.run, f"latency_{app.id}_{route.name}", chart)
        panels.append(chart)
    return alt.vconcat(*panels)


def history_table(phase: Phase) -> pd.DataFrame:
    """P95 (warm) of each hot-path endpoint across every complete run, through DuckDB."""
    frames = []
    for app, route in critical_routes(phase):
        if route.hot_path:
            hist = p95_history(phase.run.root.parent, app.id, route.name)
            frames.append(hist.assign(app=app.id, endpoint=route.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_report(phase: Phase) -> Markdown:
    """``reports/latency_report.md``: the verdicts and where the numbers are."""
    checks = phase.run.read_checks(phase.name)
    hot = [c for c in checks if c.id.endswith((".hot_path", ".improvement", ".rollback", ".on.p95"))]
    stops = phase.run.info().get("stop_conditions", [])
    text = (header("Latency profile (staging validation)", ecosystem=phase.params.ecosystem,
                   environment=phase.params.environment, run_name=phase.run.root.name,
                   profile_note=phase.params.profile_note)
            + f"\nRate {phase.params.latency.qps:g} requests/s per endpoint; per endpoint and mode "
              f"({', '.join(phase.params.latency.modes)}, interleaved in {phase.params.latency.interleave_blocks} "
              f"blocks): {profile_size(phase).describe()}. Tables: `{PROFILES_CSV}`, `{COMPARISON_CSV}`; "
              f"raw samples: `{SAMPLES_FILE}`.\n\n"
            + ("## Stop condition\n\n" + "\n".join(f"- {s['reason']}" for s in stops) + "\n\n" if stops else "")
            + "## Hot path and fixes\n\n" + (checks_table(hot) if hot else "No hot-path route configured.")
            + "\n\n## All checks\n\n" + checks_table(checks) + "\n")
    phase.run.write_text("reports/latency_report.md", text)
    return Markdown("Written: `reports/latency_report.md`, `" + PROFILES_CSV + "`, `" + COMPARISON_CSV
                    + "`, `" + SNAPSHOT + "`" + ("; **stop condition marked**" if stops else ""))

