"""Verdicts: the operating characteristics of the verdict rules, measured by calling them.

Every verdict rule of :mod:`readiness.core.verdict` is driven at three points and one
dependence scenario, and the share of PASS / FAIL / INCONCLUSIVE it returns is recorded:

- **size at the boundary**: the truth exactly at the threshold (a success rate equal to its
  target, a P95 equal to its threshold, a share on a band edge, an after run exactly
  ×1.2 the before run for the +20% regression rule). ``P(FAIL)`` there is the rate of false
  FAILs (≤ α = 5% for a one-sided test), ``P(PASS)`` the rate of false PASSes (also ≤ α);
- **P(PASS) at the design point**: a good system (success 0.99 against a 0.95 target, error
  rate 0.0025 against a 0.01 maximum, 1% of requests above a P95 threshold, a share exactly
  on its rate, an unchanged latency for the regression rule);
- **power**: ``P(FAIL)`` at a stated bad effect (named in the table);
- **coverage under serial dependence** (AR(1), ρ = 0.5): for the latency rule, how often
  the one-sided 95% upper bound of P95 on a time-ordered series lies at or above the true
  P95 (a bound the rule withholds counts as covering: it claims nothing); for the rate rules,
  Bernoulli series with lag-1 correlation 0.5 (a two-state Markov chain at the design rate),
  and how often the bound the rule decides PASS with covers the true rate.

Rate rules (success, error, share, non-inferiority) are exact: their verdict depends only on
a count, so the rule is called once per count and the verdicts are weighted by the count's
probability — binomial, or for the Markov chain the exact law of its count (a dynamic
programme over time, state and count). Counts whose total probability is below 1e-14 on
each side are not enumerated. Latency rules (the percentile rule, the regression and
improvement rules) are simulated, seeded, on four latency distributions: lognormal
(σ 0.6), heavy-tailed (Pareto, shape 1.5), bimodal (7% of requests in a slow mode 10×
slower) and a time-ordered exp(AR(1)) series with ρ = 0.5 and a lognormal marginal.

The rules called, and their keyword arguments, exist in every version of the rules since
``eb3e04c``, so the same benchmark measures an earlier version: ``--lib PATH`` puts PATH
first on ``sys.path`` before ``readiness`` is imported (``readiness.__file__`` is checked and
recorded). The planning helpers (:mod:`readiness.stats.design`,
:func:`readiness.stats.exceedance.detectable_ratio`) are used only where the library has
them; elsewhere their cells read "n/a".

A second table reads a run folder (``--run``, default the newest folder under ``outputs/``
with a ``checks/`` directory) and gives, for each level of ``params/rubric.yaml``, the
probability that a system at the design point is blocked by sampling alone: 1 − Π P_i(PASS)
over the level's statistical checks (success rate, error rate, latency percentile, share),
each at its own n and threshold (exact, :func:`readiness.stats.design.operating_characteristic`),
at the run's n and at the planned n (:func:`readiness.stats.design.planned_n`, m = the level's
number of statistical checks, β = 0.10).

Run: ``python -m benchmarks verdicts [--lib PATH] [--out FILE] [--reps N] [--seed S] [--run RUN_DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import binom

from benchmarks import RESULTS_DIR, target

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = RESULTS_DIR / "verdicts.md"
RUBRIC = ROOT / "params" / "rubric.yaml"
OUTPUTS = ROOT / "outputs"

#: One-sided level every rule decides at (since eb3e04c's successors; the earlier Wilson rules
#: used two-sided 95%, i.e. one-sided 2.5% per side, which this benchmark measures, not assumes).
ALPHA = 0.05
RHO = 0.5
#: Statistical checks per rubric level assumed by the "planned n" column, and the chance a level
#: of good systems may be blocked by sampling alone.
M_PLAN = 16
BETA_LEVEL = 0.10
#: Counts below this total probability on either side are not enumerated.
TAIL = 1e-14
#: Allowances that define the design point of each family (stats.design): a good system fails
#: 20% of what a success target allows, has 25% of the maximum error rate, and has 20% of the
#: exceedances a percentile allows (1% of requests above a P95 threshold).
SUCCESS_ALLOWANCE, ERROR_ALLOWANCE, LATENCY_ALLOWANCE = 0.2, 0.25, 0.2

DEFAULT_REPS = 4000
DEFAULT_SEED = 20_260_101


# ------------------------------------------------------------------ the library under test
_V: ModuleType | None = None  # readiness.core.verdict of the library under test


def load_library(lib: str | os.PathLike[str] | None) -> tuple[ModuleType, Path]:
    """Import ``readiness`` (from ``lib`` when given, first on ``sys.path``) and return its
    ``core.verdict`` module and the package file. Raises when ``readiness`` is already imported
    from somewhere else (a runner that imported another benchmark first) or does not resolve
    to ``lib``: the figures would silently be those of another version."""
    global _V
    if lib is not None:
        lib_path = Path(lib).resolve()
        if not (lib_path / "readiness" / "__init__.py").is_file():
            raise ValueError(f"--lib {lib}: no readiness package in {lib_path}")
        loaded = sys.modules.get("readiness")
        if loaded is not None and not Path(str(loaded.__file__)).resolve().is_relative_to(lib_path):
            raise RuntimeError(f"readiness is already imported from {loaded.__file__}; run the verdicts "
                               f"benchmark alone (python -m benchmarks verdicts --lib {lib})")
        if str(lib_path) in sys.path:
            sys.path.remove(str(lib_path))
        sys.path.insert(0, str(lib_path))
        importlib.invalidate_caches()
    readiness = importlib.import_module("readiness")
    package = Path(str(readiness.__file__)).resolve()
    if lib is not None and not package.is_relative_to(Path(lib).resolve()):
        raise RuntimeError(f"readiness resolved to {package}, not under --lib {lib}")
    _V = importlib.import_module("readiness.core.verdict")
    return _V, package


def _optional(module: str, name: str) -> Any:
    """A helper that only newer libraries have, or None."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _describe_lib(package: Path) -> str:
    """``<commit>`` or ``<commit>-dirty`` of the checkout that holds the package, when it is one."""
    try:
        out = subprocess.run(["git", "-C", str(package.parent), "describe", "--always", "--dirty", "--abbrev=7"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _rules_digest(package: Path) -> str:
    """SHA-256 (first 12 hex digits) of the files that decide: the verdict rules, the comparison
    rule and the statistics they call, so two runs of a "-dirty" checkout can be told apart."""
    root = package.parent
    digest = hashlib.sha256()
    for path in [root / "core" / "verdict.py", root / "core" / "comparison_rule.py",
                 *sorted((root / "stats").glob("*.py"))]:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _status(check: Any) -> str:
    return str(getattr(check.status, "value", check.status))


_KW = {"id": "bench.verdicts", "phase": "bench", "title": "benchmark"}


# ---------------------------------------------------------------------- exact rate rules
@dataclasses.dataclass(frozen=True)
class RateRow:
    """A rule whose verdict depends on one count (success, error, share) or two (non-inferiority)."""

    key: str
    label: str
    family: str  # success | error | share | noninferiority
    threshold: float  # target | max rate | rate | margin (non-inferiority)
    n: int
    design: float  # true rate of a good system (non-inferiority: of both runs)
    boundary: tuple[float, ...]  # true rate(s) at the boundary (share: both band edges)
    effect: float
    effect_text: str
    margin: float | None = None
    before: float | None = None  # non-inferiority: the before run's true rate
    n_before: int | None = None

    def call(self, k: int, n: int, k_before: int | None = None, n_before: int | None = None) -> Any:
        assert _V is not None
        if self.family == "success":
            return _V.rate_check(**_KW, successes=k, n=n, target=self.threshold)
        if self.family == "error":
            return _V.error_rate_check(**_KW, errors=k, n=n, max_rate=self.threshold)
        if self.family == "share":
            return _V.share_check(**_KW, arrived=k, n=n, rate=self.threshold, margin=self.margin)
        return _V.noninferiority_check(**_KW, successes=k, n=n, successes_before=k_before, n_before=n_before,
                                       margin=self.margin)

    def covered(self, check: Any, truth: float) -> bool:
        """Whether the bound the rule decides PASS with covers the truth (share: the interval)."""
        low, high = check.ci_low, check.ci_high
        if self.family == "success":
            return low is not None and low <= truth
        if self.family == "error":
            return high is not None and high >= truth
        if self.family == "share":
            return low is not None and high is not None and low <= truth <= high
        return low is not None and low <= truth  # non-inferiority: after − before, truth 0


RATE_ROWS = (
    RateRow("success", "success rate (smoke: target 0.95)", "success", 0.95, 400, 0.99, (0.95,), 0.90,
            "true 0.90"),
    RateRow("success_funnel", "success rate (funnel: target 0.90)", "success", 0.90, 35, 0.98, (0.90,), 0.75,
            "true 0.75"),
    RateRow("error", "error rate (max 0.01)", "error", 0.01, 400, 0.0025, (0.01,), 0.03, "true 0.03"),
    RateRow("share", "share (rate 0.10 ± 0.05, TOST)", "share", 0.10, 400, 0.10, (0.05, 0.15), 0.20,
            "true 0.20", margin=0.05),
    RateRow("noninferiority", "non-inferiority (margin 0.05, before 0.995)", "noninferiority", 0.05, 100, 0.995,
            (0.945,), 0.90, "after 0.90", margin=0.05, before=0.995, n_before=100),
)


def _support(n: int, p: float) -> np.ndarray:
    """Counts of Binomial(n, p) outside which each tail holds less than TAIL."""
    if p <= 0.0:
        return np.array([0])
    if p >= 1.0:
        return np.array([n])
    lo, hi = int(binom.ppf(TAIL, n, p)), int(binom.isf(TAIL, n, p))
    return np.arange(max(0, lo), min(n, hi + 1) + 1)


def markov_count_law(n: int, p: float, rho: float) -> np.ndarray:
    """Exact law of the number of ones in n steps of the stationary two-state Markov chain with
    P(1) = p and lag-1 correlation rho (P(0→1) = (1 − rho) p, P(1→0) = (1 − rho)(1 − p))."""
    up, down = (1.0 - rho) * p, (1.0 - rho) * (1.0 - p)
    zero, one = np.zeros(n + 1), np.zeros(n + 1)
    zero[0], one[1] = 1.0 - p, p
    for _ in range(n - 1):
        new_one = np.zeros(n + 1)
        new_one[1:] = zero[:-1] * up + one[:-1] * (1.0 - down)
        zero = zero * (1.0 - up) + one * down
        one = new_one
    law = zero + one
    return law / law.sum()


class Enumerated:
    """One rate rule evaluated at counts, each (count, n) once."""

    def __init__(self, row: RateRow) -> None:
        self.row, self.memo = row, {}

    def check(self, k: int, n: int, k_before: int | None = None, n_before: int | None = None) -> Any:
        key = (k, n, k_before, n_before)
        if key not in self.memo:
            self.memo[key] = self.row.call(k, n, k_before, n_before)
        return self.memo[key]

    def _pairs(self, n: int, p: float, law: np.ndarray | None = None,
               law_before: np.ndarray | None = None) -> Iterable[tuple[float, Any]]:
        """(probability, check) over the enumerated counts; ``law`` replaces the binomial."""
        row = self.row

        def weights(size: int, prob: float, given: np.ndarray | None) -> list[tuple[int, float]]:
            if given is not None:
                return [(int(k), float(w)) for k, w in enumerate(given) if w > TAIL]
            ks = _support(size, prob)
            return list(zip(ks.tolist(), binom.pmf(ks, size, prob).tolist(), strict=True))

        after = weights(n, p, law)
        if row.family != "noninferiority":
            for k, w in after:
                yield w, self.check(k, n)
            return
        assert row.n_before is not None and row.before is not None
        for kb, wb in weights(row.n_before, row.before, law_before):
            for k, w in after:
                if w * wb > TAIL:
                    yield w * wb, self.check(k, n, kb, row.n_before)

    def probabilities(self, n: int, p: float) -> dict[str, float]:
        out = {"PASS": 0.0, "FAIL": 0.0, "INCONCLUSIVE": 0.0}
        for w, check in self._pairs(n, p):
            out[_status(check)] = out.get(_status(check), 0.0) + w
        return out

    def not_pass(self, n: int, p: float) -> float:
        """1 − P(PASS), summed over the counts that do not PASS (keeps its precision near 0)."""
        return math.fsum(w for w, check in self._pairs(n, p) if _status(check) != "PASS")

    def markov_coverage(self, n: int, p: float, truth: float) -> float:
        law = markov_count_law(n, p, RHO)
        law_before = (markov_count_law(self.row.n_before, self.row.before, RHO)
                      if self.row.family == "noninferiority" else None)
        return math.fsum(w for w, check in self._pairs(n, p, law, law_before) if self.row.covered(check, truth))


def _planned(row: RateRow) -> int | None:
    planned_n = _optional("readiness.stats.design", "planned_n")
    if planned_n is None or row.family == "noninferiority":
        return None
    return planned_n(row.family, row.threshold, row.design, M_PLAN, BETA_LEVEL, ALPHA, margin=row.margin)


def rate_row(row: RateRow) -> dict[str, Any]:
    rule = Enumerated(row)
    edges = [rule.probabilities(row.n, b) for b in row.boundary]
    size = max(e["FAIL"] for e in edges)
    false_pass = max(e["PASS"] for e in edges)
    design = rule.probabilities(row.n, row.design)
    power = rule.probabilities(row.n, row.effect)
    truth = 0.0 if row.family == "noninferiority" else row.design
    coverage = rule.markov_coverage(row.n, row.design, truth)
    planned = _planned(row)
    at_plan = None if planned is None else 1.0 - rule.not_pass(planned, row.design)
    return {"key": row.key, "label": row.label, "method": "exact", "n": row.n,
            "n_text": f"{row.n} + {row.n_before} before" if row.n_before else str(row.n),
            "size": size, "false_pass": false_pass, "design_pass": design["PASS"], "design_fail": design["FAIL"],
            "power": power["FAIL"], "effect": row.effect_text, "coverage": coverage,
            "planned_n": planned, "planned_pass": at_plan, "detectable": None, "reps": None}


# ------------------------------------------------------------------- latency distributions
@dataclasses.dataclass(frozen=True)
class Latencies:
    """A latency distribution, sampled through its quantile function of a standard normal
    (so an AR(1) Gaussian series gives a time-ordered series with this marginal)."""

    key: str
    label: str
    dependent: bool = False  # samples are an AR(1) series (ρ = RHO), not i.i.d.

    def from_normal(self, z: np.ndarray) -> np.ndarray:
        if self.key in ("lognormal", "ar1"):
            return np.exp(math.log(50.0) + 0.6 * z)
        if self.key == "pareto":  # Pareto I, x_m = 20 ms, shape 1.5: infinite variance
            return 20.0 * ndtr(-z) ** (-1.0 / 1.5)
        if self.key == "bimodal":
            grid_u, grid_x = _bimodal_grid()
            return np.interp(ndtr(z), grid_u, grid_x)
        raise ValueError(self.key)

    def quantile(self, p: float) -> float:
        return float(self.from_normal(np.array([ndtri(p)]))[0])

    def sample(self, rng: np.random.Generator, reps: int, n: int, *, ar: bool = False) -> np.ndarray:
        """``reps`` series of ``n`` samples in time order (AR(1) when ``ar`` or the distribution is)."""
        z = rng.standard_normal((reps, n))
        if ar or self.dependent:
            scale = math.sqrt(1.0 - RHO * RHO)
            for t in range(1, n):
                z[:, t] = RHO * z[:, t - 1] + scale * z[:, t]
        return self.from_normal(z)


_GRID: tuple[np.ndarray, np.ndarray] | None = None


def _bimodal_grid() -> tuple[np.ndarray, np.ndarray]:
    """CDF of 0.93 LN(ln 20, 0.25) + 0.07 LN(ln 200, 0.3) on a fine log grid (for np.interp)."""
    global _GRID
    if _GRID is None:
        log_x = np.linspace(math.log(1.0), math.log(20_000.0), 400_001)
        cdf = 0.93 * ndtr((log_x - math.log(20.0)) / 0.25) + 0.07 * ndtr((log_x - math.log(200.0)) / 0.3)
        keep = np.r_[True, np.diff(cdf) > 0]
        _GRID = (cdf[keep], np.exp(log_x[keep]))
    return _GRID


DISTRIBUTIONS = (
    Latencies("lognormal", "lognormal σ 0.6"),
    Latencies("pareto", "Pareto shape 1.5"),
    Latencies("bimodal", "bimodal 93/7%"),
    Latencies("ar1", "exp(AR(1)) ρ 0.5", dependent=True),
)
_DIST = {d.key: d for d in DISTRIBUTIONS}


# -------------------------------------------------------------------- simulated rules
def _task_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def simulate(task: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, int]]:
    """One simulated setting: ``reps`` calls of one rule, the verdicts counted.

    kind ``latency``: ``latency_check`` on n samples against ``threshold`` (``ar``: the
    distribution's marginal in an AR(1) series), also counting whether the recorded upper
    bound covers ``truth`` (withheld = None counts as covering, and is counted too);
    kind ``regression`` / ``improvement``: before and after series of n, after scaled by ``ratio``.
    """
    key, spec = task
    assert _V is not None
    dist, reps, n = _DIST[spec["dist"]], spec["reps"], spec["n"]
    rng = _task_rng(spec["seed"], key)
    counts = {"PASS": 0, "FAIL": 0, "INCONCLUSIVE": 0, "covered": 0, "withheld": 0, "reps": reps}
    if spec["kind"] == "latency":
        series = dist.sample(rng, reps, n, ar=spec.get("ar", False))
        for x in series:
            check = _V.latency_check(**_KW, samples_ms=x, threshold_ms=spec["threshold"])
            counts[_status(check)] += 1
            if check.ci_high is None:
                counts["withheld"] += 1
                counts["covered"] += 1
            elif check.ci_high >= spec["truth"]:
                counts["covered"] += 1
        return key, counts
    before = dist.sample(rng, reps, n)
    after = dist.sample(rng, reps, n) * spec["ratio"]
    rule = _V.regression_check if spec["kind"] == "regression" else _V.improvement_check
    for b, a in zip(before, after, strict=True):
        counts[_status(rule(**_KW, before_ms=b, after_ms=a))] += 1
    return key, counts


COMPARISONS = {
    # kind: (boundary ratio, design ratio, design verdict counted, power ratio, power text, detectable limit)
    "regression": (1.2, 1.0, "PASS", 1.78, "after ×1.78", 1.2),
    "improvement": (1.0, 1.0 / 1.5, "PASS", 1.5, "after ×1.5 (slower)", 1.0),
}


def build_tasks(seed: int, reps: int, comparison_reps: int, latency_plan: int | None) -> list[tuple[str, dict]]:
    tasks: list[tuple[str, dict]] = []
    for d in DISTRIBUTIONS:
        p95, p99 = d.quantile(0.95), d.quantile(1.0 - LATENCY_ALLOWANCE * 0.05)
        base = {"kind": "latency", "dist": d.key, "reps": reps, "seed": seed, "n": 200, "truth": p95}
        tasks += [(f"latency/{d.key}/boundary", {**base, "threshold": p95}),
                  (f"latency/{d.key}/design", {**base, "threshold": p99}),
                  (f"latency/{d.key}/power", {**base, "threshold": p95 / 1.1}),
                  (f"latency/{d.key}/coverage", {**base, "threshold": p95, "ar": True})]
        if latency_plan is not None:
            tasks.append((f"latency/{d.key}/planned", {**base, "n": latency_plan, "threshold": p99}))
        for kind, (edge, good, _, bad, _, _) in COMPARISONS.items():
            cbase = {"kind": kind, "dist": d.key, "reps": comparison_reps, "seed": seed, "n": 200}
            tasks += [(f"{kind}/{d.key}/boundary", {**cbase, "ratio": edge}),
                      (f"{kind}/{d.key}/design", {**cbase, "ratio": good}),
                      (f"{kind}/{d.key}/power", {**cbase, "ratio": bad})]
    return tasks


def run_tasks(tasks: list[tuple[str, dict]], jobs: int) -> dict[str, dict[str, int]]:
    """Run the settings, on ``jobs`` forked workers when more than one (each setting seeds its
    own generator from the seed and its name, so the figures do not depend on ``jobs``)."""
    cost = {"latency": 1.0, "regression": 40.0, "improvement": 40.0}
    ordered = sorted(tasks, key=lambda t: -cost[t[1]["kind"]] * t[1]["reps"] * t[1]["n"])
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            return dict(pool.imap_unordered(simulate, ordered))
    return dict(simulate(t) for t in ordered)


def _share(counts: dict[str, int], what: str) -> float:
    return counts[what] / counts["reps"]


def latency_rows(results: dict[str, dict[str, int]], latency_plan: int | None) -> list[dict[str, Any]]:
    rows = []
    for d in DISTRIBUTIONS:
        r = {s: results[f"latency/{d.key}/{s}"] for s in ("boundary", "design", "power", "coverage")}
        planned = results.get(f"latency/{d.key}/planned")
        rows.append({"key": f"latency_{d.key}", "label": f"latency P95 — {d.label}", "method": "simulated",
                     "n": 200, "n_text": "200", "size": _share(r["boundary"], "FAIL"),
                     "false_pass": _share(r["boundary"], "PASS"), "design_pass": _share(r["design"], "PASS"),
                     "design_fail": _share(r["design"], "FAIL"), "power": _share(r["power"], "FAIL"),
                     "effect": "true P95 10% above T", "coverage": _share(r["coverage"], "covered"),
                     "withheld": _share(r["coverage"], "withheld"), "planned_n": latency_plan,
                     "planned_pass": None if planned is None else _share(planned, "PASS"),
                     "detectable": None, "reps": r["boundary"]["reps"]})
    return rows


def comparison_rows(results: dict[str, dict[str, int]], seed: int) -> list[dict[str, Any]]:
    detectable_ratio = _optional("readiness.stats.exceedance", "detectable_ratio")
    rows = []
    for kind, (edge, _, verdict, _, effect, limit) in COMPARISONS.items():
        for d in DISTRIBUTIONS:
            r = {s: results[f"{kind}/{d.key}/{s}"] for s in ("boundary", "design", "power")}
            detectable = None
            if detectable_ratio is not None:  # the before run's shape: 2,000 seeded samples of the marginal
                shape = d.sample(_task_rng(seed, f"shape/{d.key}"), 1, 2000, ar=False)[0]
                detectable = detectable_ratio(200, 200, 0.95, before_ms=shape, limit=limit, alpha=ALPHA)
            design = "no change" if kind == "regression" else "after ×1/1.5 (faster)"
            rows.append({"key": f"{kind}_{d.key}", "label": f"{kind} P95 — {d.label}", "method": "simulated",
                         "n": 200, "n_text": "200 + 200 before", "size": _share(r["boundary"], "FAIL"),
                         "false_pass": _share(r["boundary"], "PASS"), "design_pass": _share(r["design"], verdict),
                         "design_fail": _share(r["design"], "FAIL"), "design_text": design,
                         "boundary_text": f"after ×{edge:g}", "power": _share(r["power"], "FAIL"),
                         "effect": effect, "coverage": None, "planned_n": None, "planned_pass": None,
                         "detectable": detectable, "reps": r["boundary"]["reps"]})
    return rows


# ------------------------------------------------------------------- per rubric level
_LABEL = re.compile(r"^P(\d+(?:\.\d+)?):")
_MARGIN = re.compile(r"± (\d+(?:\.\d+)?)%")
_RULE_FAMILY = {"success_rate": "success", "error_rate": "error", "latency": "latency", "share": "share"}


def newest_run(outputs: Path = OUTPUTS) -> Path | None:
    """The newest run folder (by its timestamp name) under ``outputs`` that has ``checks/``."""
    runs = sorted((p for p in outputs.iterdir() if (p / "checks").is_dir()), key=lambda p: p.name) \
        if outputs.is_dir() else []
    return runs[-1] if runs else None


def statistical(check: Any, recorded_rules: bool) -> dict[str, Any] | None:
    """The family, threshold, q and margin of a statistical check, or None.

    A run that records ``rule`` is read by it (success_rate, error_rate, latency, share). An
    older run is read from its unit and comparator, with the detail's wording to tell a
    rule from a fact with the same unit: ``ratio`` ``>=`` with a Wilson detail is a success
    rate, ``ratio`` ``<`` with a Wilson detail an error rate, ``ms`` ``<=`` whose detail
    starts with a percentile label (``P95:``) a latency percentile at that q (0.95 when no
    label)."""
    n, threshold, detail = check.n, check.threshold, check.detail or ""
    if not isinstance(n, int) or isinstance(threshold, bool) or not isinstance(threshold, int | float):
        return None
    if recorded_rules:
        family = _RULE_FAMILY.get(getattr(check, "rule", ""))
    elif check.unit == "ratio" and "Wilson" in detail and check.comparator in (">=", "<"):
        family = "success" if check.comparator == ">=" else "error"
    elif check.unit == "ms" and check.comparator == "<=" and _LABEL.match(detail):
        family = "latency"
    else:
        family = None
    if family is None:
        return None
    out: dict[str, Any] = {"family": family, "n": n, "threshold": float(threshold), "q": None, "margin": None}
    if family == "latency":
        q = getattr(check, "q", None)
        label = _LABEL.match(detail)
        out["q"] = float(q) if q else (float(label.group(1)) / 100.0 if label else 0.95)
    if family == "share":
        margin = _MARGIN.search(detail)
        if margin is None:
            return None
        out["margin"] = float(margin.group(1)) / 100.0
    return out


def level_table(run: Path | None) -> dict[str, Any]:
    """P(level blocked | design point) at the run's n and at the planned n, per rubric level."""
    try:
        design = importlib.import_module("readiness.stats.design")
    except ImportError:
        return {"skipped": "n/a: this library has no readiness.stats.design (exact OC and planning)"}
    if run is None:
        return {"skipped": f"no run folder with checks/ under {OUTPUTS}"}
    from readiness.core.check import load_checks
    from readiness.score.rubric import load_rubric, select

    checks = load_checks(run)
    recorded = any(getattr(c, "rule", "") for c in checks)
    rubric = load_rubric(RUBRIC)
    plans: dict[tuple, int | None] = {}
    allowance = run_allowances(run)

    def design_value(s: dict[str, Any]) -> float:
        if s["family"] == "success":
            return design.design_success_rate(s["threshold"], allowance["success"])
        if s["family"] == "error":
            return design.design_error_rate(s["threshold"], allowance["error"])
        if s["family"] == "latency":
            return design.design_exceedance(s["q"], allowance["latency"])
        return s["threshold"]

    def p_pass(s: dict[str, Any], n: int | None) -> float:
        if not n:
            return 0.0
        threshold = s["q"] if s["family"] == "latency" else s["threshold"]
        return design.operating_characteristic(s["family"], n, threshold, design_value(s), ALPHA,
                                               margin=s["margin"]).p_pass

    def planned(s: dict[str, Any], m: int) -> int | None:
        threshold = s["q"] if s["family"] == "latency" else s["threshold"]
        key = (s["family"], threshold, s["margin"], m)
        if key not in plans:
            plans[key] = design.planned_n(s["family"], threshold, design_value(s), m, BETA_LEVEL, ALPHA,
                                          margin=s["margin"])
        return plans[key]

    def blocked(ps: Sequence[float], rule: str) -> float:
        if rule == "any_pass":
            return math.prod(1.0 - p for p in ps)
        return design.level_block_risk(ps).p_blocked

    rows = []
    for category in rubric.categories:
        for level in category.levels:
            matched = {c.id: c for sel in level.require for c in select(sel, checks)}
            stats = [(cid, s) for cid, c in matched.items() if (s := statistical(c, recorded)) is not None]
            if not stats:
                continue
            m = len(stats)
            run_risk = blocked([p_pass(s, s["n"]) for _, s in stats], level.rule)
            plan_ns = [planned(s, m) for _, s in stats]
            plan_risk = (None if any(n is None for n in plan_ns)
                         else blocked([p_pass(s, n) for (_, s), n in zip(stats, plan_ns, strict=True)], level.rule))
            families: dict[str, int] = {}
            for _, s in stats:
                families[s["family"]] = families.get(s["family"], 0) + 1
            run_ns = [s["n"] for _, s in stats]
            rows.append({"category": category.key, "level": level.level, "rule": level.rule, "m": m,
                         "checks": len(matched), "families": families,
                         "n_run": [min(run_ns), max(run_ns)], "p_blocked_run": run_risk,
                         "n_planned": None if plan_risk is None else [min(plan_ns), max(plan_ns)],
                         "p_blocked_planned": plan_risk, "cannot_be_evidenced": run_risk > BETA_LEVEL,
                         "ids": [cid for cid, _ in stats]})
    return {"run": str(run), "recorded_rules": recorded, "allowances": allowance, "rows": rows}


def run_allowances(run: Path) -> dict[str, float]:
    """The design point's allowance shares: the run's ``params.json`` ``design`` section when it
    records one, else this benchmark's (the params defaults: 0.2, 0.25, 0.2)."""
    out = {"success": SUCCESS_ALLOWANCE, "error": ERROR_ALLOWANCE, "latency": LATENCY_ALLOWANCE}
    try:
        declared = json.loads((run / "params.json").read_text(encoding="utf-8")).get("design") or {}
    except (OSError, ValueError, AttributeError):
        declared = {}
    for family in out:
        value = declared.get(f"{family}_allowance_share") if isinstance(declared, dict) else None
        if isinstance(value, int | float) and 0 < value < 1:
            out[family] = float(value)
    return out


# ------------------------------------------------------------------------------ output
def _f(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "n/a"
    if 0 < x < 10 ** -digits / 2:
        return f"<{10 ** -digits:.{digits}f}"
    if 1 - 10 ** -digits / 2 < x < 1:
        return f">{1 - 10 ** -digits:.{digits}f}"
    return f"{x:.{digits}f}"


def _se(p: float, reps: int | None) -> float:
    return 0.0 if not reps else math.sqrt(max(p * (1 - p), 0.25 / reps) / reps)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Verdict rules: operating characteristics ({result['lib_version']})", "",
             f"- library: `{result['readiness_file']}` ({result['lib_version']}, rules sha256 "
             f"{result['rules_sha256']})",
             f"- seed {result['seed']}; latency settings {result['reps']} replications each, before/after settings "
             f"{result['comparison_reps']} (Monte Carlo SE ≤ {result['max_se']['latency']:.3f} and "
             f"≤ {result['max_se']['comparison']:.3f}); rate rules exact; {result['seconds']:.0f} s on "
             f"{result['jobs']} worker(s)",
             f"- one-sided α = {ALPHA}; planned n: `stats.design.planned_n` at m = {M_PLAN}, β = {BETA_LEVEL} "
             f"(P(PASS) ≥ {1 - BETA_LEVEL / M_PLAN:.5f} at the design point)", "",
             "| rule | n as run | size: P(FAIL) at boundary | P(PASS) at boundary | P(PASS) at design | "
             "power: P(FAIL) at effect | effect | coverage, AR(1) ρ 0.5 | planned n (m=16) | P(PASS) at design, "
             "planned n | detectable ×r (80%) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        detectable = "n/a" if r["detectable"] is None else f"×{r['detectable']:.2f}"
        planned = "n/a" if r["planned_n"] is None else str(r["planned_n"])
        lines.append(f"| {r['label']} | {r['n_text']} | {_f(r['size'], 3)} | {_f(r['false_pass'], 3)} | "
                     f"{_f(r['design_pass'])} | {_f(r['power'])} | {r['effect']} | {_f(r['coverage'])} | "
                     f"{planned} | {_f(r['planned_pass'], 4)} | {detectable} |")
    lines += ["", "Boundary, design point and effect of each row:", "",
              "- success rate: boundary true = target; design 1 − 0.2 (1 − target) (0.99, 0.98); n as in the sandbox "
              "(smoke 400 per app, funnel 35).",
              "- error rate: boundary true 0.01; design 0.0025 (25% of the maximum).",
              "- latency P95: boundary T = true P95; design T = true P99 (1% of requests above T); effect T = true "
              "P95 / 1.1. Coverage: the one-sided 95% upper bound of P95 (the check's `ci_high`) on series with "
              "this marginal in an AR(1) Gaussian copula, ρ 0.5, n 200; a bound the rule withholds counts as "
              "covering (withheld: " + ", ".join(f"{r['label'].split('— ')[1]} {_f(r.get('withheld'))}"
                                                 for r in result["rows"] if r["key"].startswith("latency_")) + ").",
              "- share: boundary true = a band edge (0.05 and 0.15; the larger figure shown); design true 0.10. "
              "P(FAIL) at a band edge is the false FAIL, P(PASS) there the TOST's false PASS.",
              "- non-inferiority: before 0.995 (n 100), after n 100; boundary after 0.945; design after 0.995.",
              "- regression (+20%): boundary after = 1.2 × before (a scaled copy, independent samples); design no "
              "change (P(PASS)); detectable: `detectable_ratio` at 80% power with the marginal's shape.",
              "- improvement: boundary after = before; design after = before / 1.5 (P(PASS)); effect after = 1.5 × "
              "before (P(FAIL)); detectable: the slow-down its FAIL side catches at 80% power.",
              "- rate-rule coverage: exact law of the count of a stationary two-state Markov chain with lag-1 "
              "correlation 0.5 at the design rate; the bound the rule decides PASS with (success: `ci_low` ≤ true; "
              "error: `ci_high` ≥ true; share: the interval; non-inferiority: `ci_low` of after − before ≤ 0, both "
              "runs Markov at 0.995). Its nominal one-sided level is the rule's own.",
              "- The latency rule and the comparison rules are rank-based: for i.i.d. samples their figures do not "
              "depend on the marginal (rows differ by Monte Carlo noise only), except where ties or a scale "
              "family's shape matter (the comparison rules are exact only for a scaled copy).", ""]
    lines += _level_markdown(result["levels"])
    return "\n".join(lines) + "\n"


def _span(pair: Sequence[int] | None) -> str:
    """``[280, 1794]`` as ``280–1794`` (one number when equal), None as n/a."""
    if pair is None:
        return "n/a"
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}–{pair[1]}"


def _level_markdown(levels: dict[str, Any]) -> list[str]:
    lines = ["## P(level blocked | design point), per rubric level", ""]
    if "skipped" in levels:
        return lines + [levels["skipped"], ""]
    how = "recorded `rule`" if levels["recorded_rules"] else "unit/comparator and the detail's wording (older run)"
    a = levels["allowances"]
    lines += [f"Run `{levels['run']}` (statistical checks read by {how}). Design points: success "
              f"1 − {a['success']:g} (1 − target), error {a['error']:g} × max, latency "
              f"{a['latency']:g} × (1 − q) above T, share on its rate. Exact OC, independent checks; "
              f"planned n at m = the level's statistical checks, β = {BETA_LEVEL}. A level is flagged when "
              f"P(blocked) at the run's n exceeds {BETA_LEVEL}.", "",
              "| category | level | stat. checks (of matched) | families | n as run | P(blocked), run n | "
              "planned n | P(blocked), planned n | |", "|---|---|---|---|---|---|---|---|---|"]
    for r in levels["rows"]:
        fam = ", ".join(f"{v} {k}" for k, v in sorted(r["families"].items()))
        flag = "cannot be evidenced at this profile's n" if r["cannot_be_evidenced"] else ""
        lines.append(f"| {r['category']} | {r['level']}{'' if r['rule'] == 'all_pass' else ' (any)'} | "
                     f"{r['m']} ({r['checks']}) | {fam} | {_span(r['n_run'])} | {_f(r['p_blocked_run'], 3)} | "
                     f"{_span(r['n_planned'])} | {_f(r['p_blocked_planned'], 3)} | {flag} |")
    lines += ["", "Counted: success-rate, error-rate, latency-percentile and share checks recorded with their "
              "own n. Not counted: facts, before/after comparisons and non-inferiority checks (no exact OC), and "
              "statistical parts inside an all-of check (`*.stable`, `*.liveness`), so a level's true risk is at "
              "least this. The latency OC is the i.i.d. rule's; the dependence gate adds its own small share "
              "of withheld bounds.", ""]
    return lines


# ----------------------------------------------------------------------------- entry
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m benchmarks verdicts``."""
    parser.add_argument("--lib", help="directory holding the readiness package to measure (put first on sys.path); "
                                      "default: the installed one")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="Markdown table to write; its JSON goes next to it (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                        help="replications per simulated latency setting (default: %(default)s)")
    parser.add_argument("--comparison-reps", type=int, default=None,
                        help="replications per before/after setting, each call costs ~30 ms (default: reps / 5)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed (default: %(default)s)")
    parser.add_argument("--run", type=Path, default=None,
                        help="run folder for the per-level table (default: the newest under outputs/ with checks/)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (default: %(default)s)")


def _options(options: argparse.Namespace | None) -> argparse.Namespace:
    if options is None:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        options = parser.parse_args([])
    if options.reps < 10:
        raise ValueError(f"--reps must be >= 10, got {options.reps}")
    if options.comparison_reps is None:
        options.comparison_reps = max(10, options.reps // 5)
    return options


def record_path(options: argparse.Namespace | None) -> Path:
    """Where the runner writes this benchmark's JSON record: next to the Markdown file."""
    return Path(DEFAULT_OUT if options is None else options.out).with_suffix(".json")


def run(out_dir: Path, options: argparse.Namespace | None = None) -> dict[str, Any]:
    """Measure the rules of the library named by ``options.lib`` and write the Markdown table."""
    del out_dir  # the Markdown goes to options.out, benchmarks/results/verdicts.md by default
    options = _options(options)
    started = time.perf_counter()
    _, package = load_library(options.lib)
    version, digest = _describe_lib(package), _rules_digest(package)  # what was imported, before anything else
    planned_n = _optional("readiness.stats.design", "planned_n")
    latency_plan = None if planned_n is None else planned_n("latency", 0.95, LATENCY_ALLOWANCE * 0.05, M_PLAN,
                                                            BETA_LEVEL, ALPHA)
    results = run_tasks(build_tasks(options.seed, options.reps, options.comparison_reps, latency_plan),
                        max(1, options.jobs))
    rows = [rate_row(r) for r in RATE_ROWS] + latency_rows(results, latency_plan) + comparison_rows(results,
                                                                                                  options.seed)
    run_dir = options.run if options.run is not None else newest_run()
    levels = level_table(run_dir)
    result: dict[str, Any] = {
        "lib": str(options.lib) if options.lib else None, "readiness_file": str(package),
        "lib_version": version, "rules_sha256": digest, "seed": options.seed, "reps": options.reps,
        "comparison_reps": options.comparison_reps, "jobs": options.jobs, "alpha": ALPHA, "rho": RHO,
        "m_plan": M_PLAN, "beta_level": BETA_LEVEL,
        "max_se": {"latency": _se(0.5, options.reps), "comparison": _se(0.5, options.comparison_reps)},
        "rows": rows, "levels": levels, "simulated": results}
    for row in rows:
        row["se"] = {k: _se(row[k], row["reps"]) for k in ("size", "false_pass", "design_pass", "power")
                     if row[k] is not None and row["reps"]}
    result["seconds"] = time.perf_counter() - started
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(result), encoding="utf-8")
    result["markdown"] = str(out)
    result["targets"] = {f"size_{r['key']}": target(round(r["size"], 4), ALPHA, "P(FAIL)") for r in rows}
    result["targets"].update({f"false_pass_{r['key']}": target(round(r["false_pass"], 4), ALPHA, "P(PASS)")
                              for r in rows})
    result["targets"].update({f"coverage_{r['key']}": target(round(r["coverage"], 4), 0.92, "coverage", ">=")
                              for r in rows if r["key"].startswith("latency_")})
    worst = max(rows, key=lambda r: r["size"])
    blocked = [r for r in levels.get("rows", []) if r["cannot_be_evidenced"]]
    result["summary"] = (f"rules {result['lib_version']}: largest size {worst['size']:.3f} ({worst['key']}); "
                         f"latency AR(1) coverage "
                         f"{min(r['coverage'] for r in rows if r['key'].startswith('latency_')):.3f}; "
                         + ("levels n/a" if "skipped" in levels else
                            f"{len(blocked)}/{len(levels['rows'])} levels cannot be evidenced at the run's n")
                         + f"; table {out}")
    return result


if __name__ == "__main__":
    from benchmarks.__main__ import main

    sys.exit(main(["verdicts", *sys.argv[1:]]))
