"""Stop conditions (SPEC §4), evaluated live over sliding windows of a running load.

A load phase feeds every finished request (time, app, failed, duration) to a
:class:`StopMonitor` as k6 writes its points, and asks :meth:`StopMonitor.evaluate`
once per poll. Three conditions are watched:

- ``error_rate`` — the error rate is at or above ``error_rate_max``, *sustained*;
- ``p95`` — the P95 of one of the guarded apps (identity and student app by default)
  is above ``stop_p95_ms``, *sustained*;
- ``telemetry_missing`` — a request the load executed has no event in the telemetry
  store ``telemetry_arrival_s`` after it was sent.

"Sustained" is read the way the stable window of the smoke phase is: the last
``sustained_s`` seconds of traffic (ending at the newest request seen, so k6's flush
delay cannot leave an empty edge) are cut in ``slices`` equal slices, and the condition
holds only when it holds in *every* slice on its own, each with at least one request. A
burst shorter than the window leaves a slice clean and never stops a phase; a load that
has not yet run for ``sustained_s`` cannot be judged sustained. Slice percentiles are
nearest-rank point estimates: a stop condition acts on what is happening, the verdicts
with their intervals come after the load.

The module does no I/O: the caller decides which requests to trace in the telemetry
store, asks the store, and reports arrivals with :meth:`StopMonitor.arrived`.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from readiness.quantiles import format_number, format_percent, nearest_rank

ERROR_RATE = "error_rate"
P95 = "p95"
TELEMETRY = "telemetry_missing"
CONDITIONS = (ERROR_RATE, P95, TELEMETRY)


@dataclass(frozen=True)
class StopCondition:
    """A met stop condition: which one, why (a sentence for the report), when (epoch s)."""

    name: str
    reason: str
    at: float
    app: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Rules:
    """The thresholds the monitor holds a load to (from ``params.thresholds`` and ``windows``)."""

    error_rate_max: float
    stop_p95_ms: float
    sustained_s: float
    telemetry_arrival_s: float
    p95_apps: tuple[str, ...] = ()
    slices: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.error_rate_max <= 1:
            raise ValueError(f"error_rate_max must be in (0, 1], got {self.error_rate_max!r}")
        for name in ("stop_p95_ms", "sustained_s", "telemetry_arrival_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.slices, bool) or not isinstance(self.slices, int) or self.slices < 1:
            raise ValueError(f"slices must be a positive integer, got {self.slices!r}")
        object.__setattr__(self, "p95_apps", tuple(self.p95_apps))

    def describe(self) -> dict[str, str]:
        """Each condition's rule in words (what the report says was evaluated)."""
        each = f"in every {format_number(self.sustained_s / self.slices)} s slice of the last " \
               f"{format_number(self.sustained_s)} s"
        return {ERROR_RATE: f"error rate ≥ {format_percent(self.error_rate_max)} {each}",
                P95: f"P95 > {format_number(self.stop_p95_ms)} ms {each}, for "
                     f"{', '.join(self.p95_apps) or 'no app'}",
                TELEMETRY: f"an executed request's telemetry event missing after "
                           f"{format_number(self.telemetry_arrival_s)} s"}


@dataclass
class _Tally:
    """How often a condition was evaluated, with data, and the worst value it reached."""

    evaluations: int = 0
    judged: int = 0
    worst: float | None = None

    def note(self, value: float | None) -> None:
        self.evaluations += 1
        if value is not None:
            self.judged += 1
            self.worst = value if self.worst is None else max(self.worst, value)


@dataclass
class StopMonitor:
    """Sliding-window state of one load; see the module docstring for the rules."""

    rules: Rules
    _points: collections.deque[tuple[float, str, bool, float]] = field(default_factory=collections.deque)
    _horizon: float = -math.inf
    _pending: dict[str, float] = field(default_factory=dict)
    _tally: dict[str, _Tally] = field(default_factory=lambda: {c: _Tally() for c in CONDITIONS})
    met: StopCondition | None = None
    requests: int = 0
    traced: int = 0
    confirmed: int = 0

    def add(self, points: Iterable[tuple[float, str, bool, float]]) -> None:
        """Finished requests as ``(time, app, failed, duration_ms)``, in any order."""
        for point in points:
            self._points.append(point)
            self._horizon = max(self._horizon, point[0])
            self.requests += 1
        keep_from = self._horizon - self.rules.sustained_s * (1 + 1 / self.rules.slices)
        while self._points and self._points[0][0] < keep_from:
            self._points.popleft()

    def sent(self, trace_id: str, at: float) -> None:
        """Watch for ``trace_id``'s telemetry: the request was executed at ``at`` (epoch s)."""
        if trace_id not in self._pending:
            self._pending[trace_id] = at
            self.traced += 1

    def arrived(self, trace_id: str) -> None:
        if self._pending.pop(trace_id, None) is not None:
            self.confirmed += 1

    def pending(self, limit: int = 3) -> list[str]:
        """The oldest traces still waiting for their telemetry (the ones to ask the store about)."""
        return sorted(self._pending, key=self._pending.__getitem__)[:limit]

    def _slices(self) -> list[np.ndarray] | None:
        """Row indices of each slice of the last ``sustained_s`` of traffic; None before enough traffic."""
        if not self._points:
            return None
        times = np.fromiter((p[0] for p in self._points), float, len(self._points))
        start = self._horizon - self.rules.sustained_s
        if times.min() > start:
            return None
        edges = start + self.rules.sustained_s * np.arange(self.rules.slices + 1) / self.rules.slices
        which = np.searchsorted(edges, times, side="right") - 1
        which[times == edges[-1]] = self.rules.slices - 1
        return [np.flatnonzero(which == k) for k in range(self.rules.slices)]

    def _error_rate(self, slices: list[np.ndarray] | None, now: float) -> StopCondition | None:
        if slices is None or any(ix.size == 0 for ix in slices):
            self._tally[ERROR_RATE].note(None)
            return None
        failed = np.fromiter((p[2] for p in self._points), bool, len(self._points))
        rates = [float(failed[ix].mean()) for ix in slices]
        self._tally[ERROR_RATE].note(min(rates))
        if min(rates) < self.rules.error_rate_max:
            return None
        return StopCondition(ERROR_RATE, f"error rate ≥ {format_percent(self.rules.error_rate_max)} sustained "
                             f"for {format_number(self.rules.sustained_s)} s (lowest slice "
                             f"{format_percent(min(rates))}, {sum(ix.size for ix in slices)} requests)", now)

    def _p95(self, slices: list[np.ndarray] | None, now: float) -> StopCondition | None:
        if not self.rules.p95_apps:
            return None
        apps = np.array([p[1] for p in self._points], dtype=object)
        durations = np.fromiter((p[3] for p in self._points), float, len(self._points))
        lowest: list[float] = []
        for app in self.rules.p95_apps:
            mine = [ix[apps[ix] == app] for ix in slices] if slices is not None else []
            if not mine or any(ix.size == 0 for ix in mine):
                continue
            p95s = [float(np.sort(durations[ix])[nearest_rank(ix.size, 0.95) - 1]) for ix in mine]
            lowest.append(min(p95s))
            if min(p95s) > self.rules.stop_p95_ms:
                self._tally[P95].note(max(lowest))
                return StopCondition(P95, f"{app} P95 > {format_number(self.rules.stop_p95_ms)} ms sustained for "
                                     f"{format_number(self.rules.sustained_s)} s (lowest slice P95 "
                                     f"{format_number(min(p95s))} ms)", now, app=app)
        self._tally[P95].note(max(lowest) if lowest else None)
        return None

    def _telemetry(self, now: float) -> StopCondition | None:
        oldest = self.pending(1)
        waited = now - self._pending[oldest[0]] if oldest else (0.0 if self.traced else None)
        self._tally[TELEMETRY].note(waited)
        if waited is None or waited <= self.rules.telemetry_arrival_s:
            return None
        return StopCondition(TELEMETRY, f"telemetry missing for {format_number(waited)} s (> "
                             f"{format_number(self.rules.telemetry_arrival_s)} s): no event in the store for "
                             f"executed request {oldest[0]}", now)

    def evaluate(self, now: float) -> StopCondition | None:
        """The first condition met now (and from then on), or None. Every call is tallied."""
        if self.met is not None:
            return self.met
        slices = self._slices()
        self.met = self._error_rate(slices, now) or self._p95(slices, now) or self._telemetry(now)
        return self.met

    def report(self) -> dict[str, Any]:
        """What was evaluated: per condition its rule, evaluations, judged ones and worst value."""
        rules = self.rules.describe()
        return {"rules": asdict(self.rules), "requests_seen": self.requests, "traces_watched": self.traced,
                "traces_confirmed": self.confirmed,
                "met": self.met.to_dict() if self.met else None,
                "conditions": {c: {"rule": rules[c], **asdict(t), "met": bool(self.met and self.met.name == c)}
                               for c, t in self._tally.items()}}


def monitor_points(rows: Sequence[dict[str, Any]], app_tag: str = "app") -> list[tuple[float, str, bool, float]]:
    """``(time, app, failed, duration_ms)`` tuples from :func:`readiness.k6run.request_rows`-style rows."""
    return [(float(r["time"]), str(r.get(app_tag, "")), bool(r["failed"]), float(r["duration_ms"])) for r in rows]
