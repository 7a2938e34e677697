"""Phase 02: latency profiling of every critical endpoint (docs/phases.md#02-latency-profile).

Each critical route is probed n times per mode (warm: keep-alive; cold: a new connection
each time) by the open-model prober, all endpoints concurrently, each at ``latency.qps``;
n is what the design point needs, capped by ``latency.samples_per_endpoint``
(:func:`profile_size`). The modes alternate in ``latency.interleave_blocks`` blocks, so a
slow spell of the host is shared between them instead of landing on one mode's series. On the sandbox, routes named in
``latency.compare_flags`` are then profiled with their fix flag ON and again after the
flag is switched back OFF, which shows the fix and its rollback in the same run. Every
probe lands in ``evidence/latency_samples.parquet``; the tables, verdicts, comparison
with the baseline run and charts are computed from that file (see
:mod:`readiness.phases.latency.report`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from IPython.display import Markdown

from readiness.core.check import Check, Status
from readiness.core.history import SAMPLES_FILE, load_samples
from readiness.core.sizing import SampleSize, sample_size
from readiness.core.verdict import improvement_check, latency_check, rate_check
from readiness.params.model import App, Route
from readiness.phasekit.context import Phase, part
from readiness.probe.prober import ProbeSettings, ProbeTarget, run_probe
from readiness.probe.sandbox_control import set_flag
from readiness.report.markdown import checks_frame
from readiness.stats.exceedance import plan_exceedance_sample_size

PROFILE = "profile"
WARMUP = "warmup"


def good_latencies(frame: pd.DataFrame) -> np.ndarray:
    """Latency of each request for verdicts: an error answer or no answer counts as +inf.

    A 4xx/5xx that comes back in 3 ms is not a fast answer; counting it as fast would let
    a broken endpoint pass its latency target.
    """
    return np.where(frame.ok.fillna(False).to_numpy(dtype=bool), frame.latency_ms.to_numpy(dtype=float), np.inf)


def _warm_up(phase: Phase, targets: list[ProbeTarget]) -> pd.DataFrame:
    """About a second of requests per target before measuring, kept as evidence, never judged:
    the first requests of a series measure start-up (first connection, first code paths)."""
    n = max(5, round(phase.params.latency.qps))
    return _probe(phase, targets, n, "warm", WARMUP)


def critical_routes(phase: Phase) -> list[tuple[App, Route]]:
    return [(app, route) for app in phase.params.apps for route in app.critical_routes]


def _target(phase: Phase, app: App, route: Route) -> ProbeTarget:
    mutating = route.method not in ("GET", "HEAD", "OPTIONS")
    return ProbeTarget(app=app.id, name=route.name, method=route.method, url=app.url(route.path),
                       json_body=route.body, headers=phase.auth_headers(app.id) if mutating else {},
                       idempotency=mutating, synthetic_identity=phase.synthetic_identity)


def _probe(phase: Phase, targets: list[ProbeTarget], n: int, mode: str, label: str) -> pd.DataFrame:
    settings = ProbeSettings(n=n, qps=phase.params.latency.qps, mode=mode,  # type: ignore[arg-type]
                             max_qps=phase.params.http.max_qps)
    return run_probe(targets, settings, lambda keep_alive: phase.client(keep_alive=keep_alive), label=label)


def _append(phase: Phase, frame: pd.DataFrame) -> pd.DataFrame:
    """Add probes to the run's samples file (one file per run, every label in it)."""
    path = phase.run.path(SAMPLES_FILE)
    if path.exists():
        frame = pd.concat([load_samples(phase.run.root), frame], ignore_index=True)
    phase.run.write_frame(SAMPLES_FILE, frame)
    return frame


def _overview(frame: pd.DataFrame) -> pd.DataFrame:
    ok = frame.assign(answered=frame.status.notna())
    return (ok.groupby(["label", "app", "endpoint", "mode"])
            .agg(n=("seq", "size"), answered=("answered", "sum"), ok=("ok", "sum"),
                 median_ms=("latency_ms", "median"), send_lag_p99_ms=("send_lag_ms", lambda s: s.quantile(0.99)))
            .round(2))


def profile(phase: Phase) -> pd.DataFrame:
    """Every critical endpoint, every mode, as the params configure the ecosystem."""
    targets = [_target(phase, app, route) for app, route in critical_routes(phase)]
    if not targets:
        phase.record([Check(id="latency.profile", phase=phase.name, title="critical endpoints profiled",
                            status=Status.INCONCLUSIVE, detail="no critical_routes in params")])
        return pd.DataFrame()
    lat, size = phase.params.latency, profile_size(phase)
    phase.run.write_json(SIZE_FILE, {"samples_per_endpoint": size.n, "planned": size.planned, "budget": size.budget,
                                     "interleave_blocks": lat.interleave_blocks, "why": size.describe()})
    frames = [_warm_up(phase, targets)]
    done = 0
    for block, n in enumerate(_blocks(size.n, lat.interleave_blocks)):
        modes = lat.modes if block % 2 == 0 else list(reversed(lat.modes))
        for mode in modes:
            frames.append(_block(phase, targets, n, mode, done))
        done += n
    frame = _append(phase, pd.concat(frames, ignore_index=True))
    return _overview(frame[frame.label == PROFILE])


#: How many samples the profile took per endpoint and mode, and why.
SIZE_FILE = "evidence/latency_sample_size.json"


def profile_size(phase: Phase) -> SampleSize:
    """Samples per endpoint and mode: what a P95 verdict at the design point needs, and what
    the comparison with the next run needs to catch a rise of ``design.regression_detect_ratio``
    with 80% power (planned on a lognormal shape), whichever is more, capped by
    ``latency.samples_per_endpoint`` (the profile's budget). The P95 rule is
    distribution-free, so its planned n depends on the quantile only, not on the threshold."""
    p = phase.params
    alpha = 1.0 - p.thresholds.confidence
    verdict = sample_size(p.design, p.latency.samples_per_endpoint, "latency", p.thresholds.p95_ms, q=0.95,
                          alpha=alpha)
    comparison = plan_exceedance_sample_size(p.design.regression_detect_ratio, 0.95,
                                             limit=1.0 + p.thresholds.regression_max_pct / 100.0, alpha=alpha)
    planned = max(n for n in (verdict.planned, comparison) if n is not None) \
        if (verdict.planned, comparison) != (None, None) else None
    budget = p.latency.samples_per_endpoint
    return SampleSize(n=budget if planned is None else min(budget, planned), planned=planned, budget=budget)


def _blocks(n: int, blocks: int) -> list[int]:
    """``n`` split into at most ``blocks`` near-equal positive parts."""
    k = max(1, min(blocks, n))
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _block(phase: Phase, targets: list[ProbeTarget], n: int, mode: str, seq_from: int) -> pd.DataFrame:
    """One block of one mode. A warm block opens its keep-alive connection with one extra
    request, labelled as warm-up and never judged; ``seq`` continues across blocks."""
    extra = 1 if mode == "warm" else 0
    frame = _probe(phase, targets, n + extra, mode, PROFILE)
    frame["seq"] = frame["seq"] - extra + seq_from
    if extra:
        frame.loc[frame["seq"] < seq_from, "label"] = WARMUP
    return frame


def _flag_label(flag: str, state: str) -> str:
    return f"{flag}={state}"


@part("flag_comparison")
def compare_flags(phase: Phase) -> pd.DataFrame | Markdown:
    """Sandbox only: each compared route with its flag ON, then OFF again (rollback)."""
    comparisons = phase.params.latency.compare_flags
    if not comparisons:
        return Markdown("No flag comparison configured (`latency.compare_flags`).")
    lat = phase.params.latency
    frames = []
    for cmp in comparisons:
        app = phase.params.app(cmp.app)
        route = next(r for r in app.critical_routes if r.name == cmp.route)
        target = _target(phase, app, route)
        configured = phase.params.sandbox.flags[cmp.flag]
        set_flag(phase.params, cmp.app, cmp.flag, True)
        try:
            frames.append(_warm_up(phase, [target]))
            frames.append(_probe(phase, [target], lat.samples_per_endpoint, "warm", _flag_label(cmp.flag, "on")))
        finally:
            set_flag(phase.params, cmp.app, cmp.flag, configured)  # rollback, also on error
        frames.append(_probe(phase, [target], lat.rollback_samples, "warm", _flag_label(cmp.flag, "rollback")))
    frame = _append(phase, pd.concat(frames, ignore_index=True))
    labels = {lb for cmp in comparisons for lb in (_flag_label(cmp.flag, "on"), _flag_label(cmp.flag, "rollback"))}
    return _overview(frame[frame.label.isin(labels)])


def _route_checks(phase: Phase, app: App, route: Route, warm: pd.DataFrame, cold: pd.DataFrame) -> list[Check]:
    t = phase.params.thresholds
    evidence = (SAMPLES_FILE, "reports/latency_profiles_after.csv")
    base = f"latency.{app.id}.{route.name}"
    common = dict(phase=phase.name, app=app.id, evidence=evidence, confidence=t.confidence)
    checks = []
    for mode, data in (("warm", warm), ("cold", cold)):
        if data.empty:
            continue
        checks.append(latency_check(id=f"{base}.{mode}.p95", title=f"{app.id} {route.name} ({mode}) P95 ≤ "
                                    f"{app.slo.p95_ms:g} ms", samples_ms=good_latencies(data),
                                    threshold_ms=app.slo.p95_ms, tags=("performance",), **common))
    checks.append(rate_check(id=f"{base}.success", title=f"{app.id} {route.name} answers without error",
                             successes=int(pd.concat([warm, cold]).ok.sum()), n=len(warm) + len(cold),
                             target=t.success_rate_min, phase=phase.name, app=app.id, evidence=evidence,
                             tags=("reliability",)))
    if route.hot_path and not warm.empty:
        hot = latency_check(id=f"{base}.hot_path", title=f"{app.id} hot path {route.name} P95 ≤ "
                            f"{t.hot_path_p95_ms:g} ms", samples_ms=good_latencies(warm),
                            threshold_ms=t.hot_path_p95_ms, tags=("performance",), severity="P1", **common)
        if hot.status is not Status.PASS and isinstance(hot.observed, float):
            delta = f"delta {hot.observed - t.hot_path_p95_ms:+.1f} ms against the target"
            fix = f"; remediation: {route.remediation}" if route.remediation else ""
            hot = hot.with_status(hot.status, f"{hot.detail}; {delta}{fix}")
        checks.append(hot)
    return checks


def verdicts(phase: Phase) -> pd.DataFrame:
    """Per critical endpoint: P95 warm and cold against its SLO, success, and the hot-path target."""
    frame = load_samples(phase.run.root, label=PROFILE)
    checks: list[Check] = []
    for app, route in critical_routes(phase):
        rows = frame[(frame.app == app.id) & (frame.endpoint == route.name)]
        checks += _route_checks(phase, app, route, rows[rows["mode"] == "warm"], rows[rows["mode"] == "cold"])
    checks += _flag_checks(phase, frame)
    phase.record(checks)
    return checks_frame(checks)


def _flag_checks(phase: Phase, profile_frame: pd.DataFrame) -> list[Check]:
    """Fix ON against the configured state, and the rollback against fix ON (same run)."""
    if not phase.params.latency.compare_flags or phase.not_applicable("flag_comparison"):
        return []  # the comparison did not run here (compare_flags recorded why)
    allsamples = load_samples(phase.run.root)
    t = phase.params.thresholds
    checks: list[Check] = []
    for cmp in phase.params.latency.compare_flags:
        pick = (allsamples.app == cmp.app) & (allsamples.endpoint == cmp.route)
        before = good_latencies(profile_frame[(profile_frame.app == cmp.app) & (profile_frame.endpoint == cmp.route)
                                              & (profile_frame["mode"] == "warm")])
        on = good_latencies(allsamples[pick & (allsamples.label == _flag_label(cmp.flag, "on"))])
        back = good_latencies(allsamples[pick & (allsamples.label == _flag_label(cmp.flag, "rollback"))])
        base = f"latency.{cmp.app}.{cmp.route}.{cmp.flag}"
        common = dict(phase=phase.name, app=cmp.app, evidence=(SAMPLES_FILE, "reports/comparison.csv"),
                      confidence=t.confidence)
        checks.append(latency_check(id=f"{base}.on.p95", title=f"{cmp.app} {cmp.route} P95 with {cmp.flag} ON ≤ "
                                    f"{t.hot_path_p95_ms:g} ms", samples_ms=on, threshold_ms=t.hot_path_p95_ms,
                                    tags=("performance",), **common))
        checks.append(improvement_check(id=f"{base}.improvement", title=f"{cmp.flag} ON lowers {cmp.route} P95 "
                                        "(difference interval below 0)", before_ms=before, after_ms=on, q=0.95,
                                        tags=("performance", "release_engineering"), **common))
        checks.append(improvement_check(id=f"{base}.rollback", title=f"switching {cmp.flag} OFF restores the "
                                        "previous behaviour at once (median back up)", before_ms=back, after_ms=on,
                                        q=0.5, tags=("release_engineering",), **common,
                                        detail="before = after switching back OFF, after = with the flag ON"))
    return checks
