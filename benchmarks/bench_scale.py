"""Scale: 10M latency samples through the same summary code the notebooks use.

What is measured, in a fresh Python process so that nothing the parent loaded or
allocated counts: 10,000,000 seeded lognormal latencies with 0.1% unanswered requests
(+inf) go through :func:`readiness.stats.latency.percentile_summary` (P50/P95/P99, each
with its two-sided interval and one-sided upper bound) and
:func:`readiness.stats.latency.histogram`. Targets: that work takes <= 1 s of wall time
on its first call (a notebook calls it once, cold), and the process's peak resident
memory stays <= 1 GiB, data included.

Also recorded: the same work warm (median of 3), the ECDF, the peak memory of the
computation alone (the high-water mark is reset after the data is generated), the number
of rows the aggregates hand to a chart (fixed, whatever n is), and a reference:
``numpy.percentile`` of the same three quantiles on the same array, which computes
point estimates only, as a ratio.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import target

N = 10_000_000
SEED = 20_240_601
UNANSWERED_FRACTION = 0.001
MAX_SECONDS = 1.0
MAX_RSS_MIB = 1024.0
WARM_REPEATS = 3
CHILD_TIMEOUT_S = 300
ROOT = Path(__file__).resolve().parent.parent


def _status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field in KiB (Linux), or None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the process's resident-memory high-water mark (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024.0, 1)


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(n: int = N, seed: int = SEED) -> dict[str, Any]:
    """The measurement itself; meant to run in a fresh process (see :func:`run`)."""
    import numpy as np

    from readiness.stats.latency import ecdf, histogram, percentile_summary

    rng = np.random.default_rng(seed)
    samples = rng.lognormal(3.0, 0.6, n)
    samples[rng.integers(0, n, int(n * UNANSWERED_FRACTION))] = np.inf
    data_peak = _status_kib("VmHWM")
    reset = _reset_peak()
    rows, t_summary = _timed(lambda: percentile_summary(samples))
    hist, t_hist = _timed(lambda: histogram(samples))
    compute_peak = _status_kib("VmHWM") if reset else None
    warm = [_timed(lambda: (percentile_summary(samples), histogram(samples)))[1] for _ in range(WARM_REPEATS)]
    warm_summary = [_timed(lambda: percentile_summary(samples))[1] for _ in range(WARM_REPEATS)]
    log_hist, t_log = _timed(lambda: histogram(samples, log=True))
    curve, t_ecdf = _timed(lambda: ecdf(samples))
    numpy_times = [_timed(lambda: np.percentile(samples, [50, 95, 99]))[1] for _ in range(WARM_REPEATS)]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    aggregates = {"histogram": hist, "log_histogram": log_hist, "ecdf": curve}
    return {
        "n": n, "seed": seed, "unanswered": int(np.isposinf(samples).sum()),
        "rows": [row.to_dict() for row in rows],
        "seconds": {"percentile_summary": t_summary, "histogram": t_hist, "total": t_summary + t_hist,
                    "warm_total_median": statistics.median(warm),
                    "warm_percentile_summary_median": statistics.median(warm_summary),
                    "log_histogram": t_log, "ecdf": t_ecdf, "numpy_percentile_median": statistics.median(numpy_times)},
        "peak_rss_mib": {"process": _mib(peak_kib), "after_data": _mib(data_peak),
                         "computation": _mib(compute_peak)},
        "aggregate_rows": {k: len(v) for k, v in aggregates.items()},
        "aggregate_json_bytes": {k: len(v.to_json(orient="records")) for k, v in aggregates.items()},
    }


def run(out_dir: Path) -> dict[str, Any]:
    """Measure in a fresh interpreter and hold the figures against the targets.

    ``out_dir`` is unused: the returned figures are the whole result.
    """
    child = subprocess.run([sys.executable, "-m", "benchmarks.bench_scale"], cwd=ROOT, capture_output=True,
                           text=True, timeout=CHILD_TIMEOUT_S, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"measurement process exited {child.returncode}: {child.stderr.strip()[-2000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    seconds, rss = result["seconds"], result["peak_rss_mib"]
    ratio = seconds["warm_percentile_summary_median"] / seconds["numpy_percentile_median"]
    result["ratio_to_numpy_percentile"] = round(ratio, 2)
    result["targets"] = {"seconds": target(round(seconds["total"], 3), MAX_SECONDS, "s"),
                         "peak_rss": target(rss["process"], MAX_RSS_MIB, "MiB")}
    result["summary"] = (
        f"n={result['n']:,}: summary + histogram {seconds['total']:.2f} s cold (target <= {MAX_SECONDS:g} s), "
        f"{seconds['warm_total_median']:.2f} s warm; peak RSS {rss['process']} MiB (target <= {MAX_RSS_MIB:g}); "
        f"P50/P95/P99 with intervals in {ratio:.2f}x the time of numpy.percentile "
        f"({seconds['numpy_percentile_median']:.2f} s, estimates only)")
    return result


if __name__ == "__main__":
    print(json.dumps(measure()))
