"""Stop conditions (docs/phases.md#guardrails), evaluated live over sliding windows of a running load.

A load phase feeds every finished request to a :class:`StopMonitor` as k6 writes its
points, and asks :meth:`StopMonitor.evaluate` once per poll. Three conditions are watched:

- ``error_rate`` — the error rate is at or above ``error_rate_max``, *sustained*;
- ``p95`` — the P95 of one of the guarded apps (identity and student app by default)
  is above ``stop_p95_ms``, *sustained*;
- ``telemetry_missing`` — a request the load executed has no event in the telemetry
  store ``telemetry_arrival_s`` after it was sent.

A request is ``(time, app, failed, duration_ms, started)``: k6 stamps its point when the
request *ends*, so ``time`` is the end and ``started`` when it was sent. A request without
an answer (a timeout, a refused connection) is failed and infinitely slow
(``duration_ms`` = +inf) — it must weigh on both conditions, never drop out of them.

"Sustained" is read the way the stable window of the smoke phase is: the last
``sustained_s`` seconds of traffic (ending at the newest request seen, so k6's flush
delay cannot leave an empty edge) are cut in ``slices`` equal slices, and the condition
holds only when it holds in *every* slice on its own. A slice holds the requests that
ended in it; a slice in which nothing ended holds the requests that were still in flight
at its end (sent, not yet answered — a target that hangs finishes its requests only at
their timeout, in bursts, and the slices between the bursts are not "empty": every VU is
waiting on it). Only a slice with neither is a gap in traffic, which breaks the streak. A
burst shorter than the window leaves a slice clean and never stops a phase; a load whose
first request was sent less than ``sustained_s`` ago cannot be judged sustained. Slice
percentiles are nearest-rank point estimates: a stop condition acts on what is happening,
the verdicts with their intervals come after the load.

Every evaluation is tallied per condition: how often it was evaluated, how often the data
could judge it (and why not, when not), when it could first be judged and when its
breach began (the first request that breached it), so the evidence shows a condition that
was watched but never able to decide.

The telemetry condition needs a telemetry source. When there is none (no store in the
params, or the store's route does not exist or never answers — :meth:`StopMonitor.no_source`),
it is not evaluated at all and the report says "no telemetry source: <reason>": an absent
store is not lost events, and never stops a load. Nor is it judged before the store has
answered once: a trace is "missing" only from a store that can be asked.

The module does no I/O: the caller decides which requests to trace in the telemetry
store, asks the store, and reports what it answered with :meth:`StopMonitor.answered`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from readiness.stats.formatting import format_number, format_percent
from readiness.stats.quantiles import nearest_rank

ERROR_RATE = "error_rate"
P95 = "p95"
TELEMETRY = "telemetry_missing"
CONDITIONS = (ERROR_RATE, P95, TELEMETRY)
NO_SOURCE = "no telemetry source"
# Why a condition could not be judged at an evaluation (keys of the report's ``not_judged``).
WINDOW_NOT_FULL = "window not yet full"
EMPTY_SLICE = "a slice without requests"
NO_TRACE = "no request watched yet"
STORE_SILENT = "the store has not answered yet"


class Finished(NamedTuple):
    """One finished request: ``time`` it ended (epoch s), its app, whether it failed, its
    duration (+inf without an answer) and when it was ``started`` (None: at ``time``)."""

    time: float
    app: str
    failed: bool
    duration_ms: float
    started: float | None = None


@dataclass(frozen=True)
class StopCondition:
    """A met stop condition: which one, why (a sentence for the report), when (epoch s).

    ``breach_started_at`` is when the first request that breached it was sent and
    ``judgeable_since`` when the window could first be judged: the stop's delay is read
    against both.
    """

    name: str
    reason: str
    at: float
    app: str | None = None
    breach_started_at: float | None = None
    judgeable_since: float | None = None

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
        return {ERROR_RATE: f"error rate ≥ {format_percent(self.error_rate_max)} {each} (timeouts and "
                            "unanswered requests count as errors)",
                P95: f"P95 > {format_number(self.stop_p95_ms)} ms {each}, for "
                     f"{', '.join(self.p95_apps) or 'no app'} (an unanswered request is infinitely slow)",
                TELEMETRY: f"an executed request's telemetry event missing after "
                           f"{format_number(self.telemetry_arrival_s)} s"}


def _json_number(value: float | None) -> float | str | None:
    """A value for a JSON report (``allow_nan=False``): an infinity is written ``"inf"``."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


@dataclass
class _Tally:
    """How often a condition was evaluated, could be judged (and why not), and the worst value."""

    evaluations: int = 0
    judged: int = 0
    worst: float | None = None
    not_judged: dict[str, int] = field(default_factory=dict)
    first_judged_at: float | None = None
    judged_on_in_flight: int = 0

    def note(self, value: float | None, now: float, why: str | None = None, in_flight: bool = False) -> None:
        """One evaluation: ``value`` when it could be judged, else ``why`` not; ``in_flight`` when a
        slice had to be judged on requests still waiting for their answer."""
        self.evaluations += 1
        if value is None:
            key = why or "no data"
            self.not_judged[key] = self.not_judged.get(key, 0) + 1
            return
        self.judged += 1
        self.judged_on_in_flight += in_flight
        self.first_judged_at = now if self.first_judged_at is None else self.first_judged_at
        self.worst = value if self.worst is None else max(self.worst, value)

    def to_dict(self) -> dict[str, Any]:
        return {"evaluations": self.evaluations, "judged": self.judged, "not_judged": dict(self.not_judged),
                "worst": _json_number(self.worst), "first_judged_at": self.first_judged_at,
                "judged_on_in_flight": self.judged_on_in_flight}


@dataclass
class StopMonitor:
    """Sliding-window state of one load; see the module docstring for the rules."""

    rules: Rules
    _points: collections.deque[Finished] = field(default_factory=collections.deque)
    _horizon: float = -math.inf
    _first_start: float = math.inf
    _breach: dict[str, float] = field(default_factory=dict)
    _first_failure_end: float = math.inf
    _pending: dict[str, float] = field(default_factory=dict)
    _tally: dict[str, _Tally] = field(default_factory=lambda: {c: _Tally() for c in CONDITIONS})
    _no_source: str | None = None
    _store_answered: bool = False
    _store_error: str | None = None
    met: StopCondition | None = None
    also_met: list[str] = field(default_factory=list)
    requests: int = 0
    traced: int = 0
    confirmed: int = 0

    def add(self, points: Iterable[Sequence[Any]]) -> None:
        """Finished requests as :class:`Finished` (or 4-tuples ``(time, app, failed, duration_ms)``), any order."""
        for raw in points:
            p = Finished(*raw)
            started = p.started if p.started is not None else \
                p.time - (p.duration_ms / 1000 if math.isfinite(p.duration_ms) else 0.0)
            point = p._replace(started=min(started, p.time))
            self._points.append(point)
            self._horizon = max(self._horizon, point.time)
            self._first_start = min(self._first_start, point.started)
            if point.failed:
                self._breach[ERROR_RATE] = min(self._breach.get(ERROR_RATE, math.inf), point.started)
                self._first_failure_end = min(self._first_failure_end, point.time)
            if point.app in self.rules.p95_apps and point.duration_ms > self.rules.stop_p95_ms:
                self._breach[P95] = min(self._breach.get(P95, math.inf), point.started)
            self.requests += 1
        keep_from = self._horizon - self.rules.sustained_s * (1 + 1 / self.rules.slices)
        while self._points and self._points[0].time < keep_from:
            self._points.popleft()

    def sent(self, trace_id: str, at: float) -> None:
        """Watch for ``trace_id``'s telemetry: the request was executed at ``at`` (epoch s)."""
        if self._no_source is None and trace_id not in self._pending:
            self._pending[trace_id] = at
            self.traced += 1

    def arrived(self, trace_id: str) -> None:
        """The store holds ``trace_id``'s event (which also shows the store answers)."""
        self._store_answered = True
        if self._pending.pop(trace_id, None) is not None:
            self.confirmed += 1

    def answered(self, found: Iterable[str]) -> None:
        """The store answered a query about the pending traces; ``found`` are the ones it holds."""
        self._store_answered = True
        for trace in found:
            self.arrived(trace)

    def store_failed(self, error: str) -> None:
        """A query failed on a store that exists (e.g. a 503): the traces stay pending, the error is kept."""
        self._store_error = error

    def no_source(self, reason: str) -> None:
        """There is no telemetry source: the telemetry condition is not evaluated from now on."""
        self._no_source = reason if reason.startswith(NO_SOURCE) else f"{NO_SOURCE}: {reason}"
        self._pending.clear()

    @property
    def store_answered(self) -> bool:
        return self._store_answered

    @property
    def source_absent(self) -> str | None:
        """``"no telemetry source: <reason>"`` when there is none, else None."""
        return self._no_source

    def pending(self, limit: int = 3) -> list[str]:
        """The oldest traces still waiting for their telemetry (the ones to ask the store about)."""
        return sorted(self._pending, key=self._pending.__getitem__)[:limit]

    def _slices(self, mask: np.ndarray | None = None) -> tuple[list[np.ndarray] | None, str | None, int]:
        """Row indices of each slice of the last ``sustained_s`` (only rows in ``mask``), why there
        are none when they cannot be judged, and how many slices were filled by requests in flight."""
        if not self._points or self._first_start > self._horizon - self.rules.sustained_s:
            return None, WINDOW_NOT_FULL, 0
        ends = np.fromiter((p.time for p in self._points), float, len(self._points))
        starts = np.fromiter((p.started for p in self._points), float, len(self._points))
        mine = np.ones(ends.size, bool) if mask is None else mask
        k = self.rules.slices
        edges = self._horizon - self.rules.sustained_s + self.rules.sustained_s * np.arange(k + 1) / k
        which = np.searchsorted(edges, ends, side="right") - 1
        which[ends == edges[-1]] = k - 1
        out, filled = [], 0
        for s in range(k):
            ix = np.flatnonzero(mine & (which == s))
            if ix.size == 0:  # nothing ended here: judge it by what was still waiting for an answer at its end
                ix = np.flatnonzero(mine & (starts < edges[s + 1]) & (ends >= edges[s + 1]))
                filled += ix.size > 0
            if ix.size == 0:
                return None, EMPTY_SLICE, 0
            out.append(ix)
        return out, None, filled

    def _error_rate(self, now: float) -> StopCondition | None:
        tally = self._tally[ERROR_RATE]
        slices, why, filled = self._slices()
        if slices is None:
            tally.note(None, now, why)
            return None
        failed = np.fromiter((p.failed for p in self._points), bool, len(self._points))
        rates = [float(failed[ix].mean()) for ix in slices]
        tally.note(min(rates), now, in_flight=filled > 0)
        if min(rates) < self.rules.error_rate_max:
            return None
        return StopCondition(ERROR_RATE, f"error rate ≥ {format_percent(self.rules.error_rate_max)} sustained "
                             f"for {format_number(self.rules.sustained_s)} s (lowest slice "
                             f"{format_percent(min(rates))}, {np.unique(np.concatenate(slices)).size} requests)", now,
                             breach_started_at=self._breach.get(ERROR_RATE), judgeable_since=tally.first_judged_at)

    def _p95(self, now: float) -> StopCondition | None:
        if not self.rules.p95_apps:
            return None
        tally = self._tally[P95]
        apps = np.array([p.app for p in self._points], dtype=object)
        durations = np.fromiter((p.duration_ms for p in self._points), float, len(self._points))
        lowest: list[float] = []
        whys: list[str] = []
        in_flight = False
        met: StopCondition | None = None
        for app in self.rules.p95_apps:
            slices, why, filled = self._slices(apps == app) if len(apps) else (None, WINDOW_NOT_FULL, 0)
            if slices is None:
                whys.append(why or WINDOW_NOT_FULL)
                continue
            in_flight = in_flight or filled > 0
            p95s = [float(np.sort(durations[ix])[nearest_rank(ix.size, 0.95) - 1]) for ix in slices]
            lowest.append(min(p95s))
            if met is None and min(p95s) > self.rules.stop_p95_ms:
                met = StopCondition(P95, f"{app} P95 > {format_number(self.rules.stop_p95_ms)} ms sustained for "
                                    f"{format_number(self.rules.sustained_s)} s (lowest slice P95 "
                                    f"{format_number(min(p95s))} ms)", now, app=app,
                                    breach_started_at=self._breach.get(P95))
        tally.note(max(lowest) if lowest else None, now, None if lowest else whys[0], in_flight=in_flight)
        return dataclasses.replace(met, judgeable_since=tally.first_judged_at) if met is not None else None

    def _telemetry(self, now: float) -> StopCondition | None:
        if self._no_source is not None:
            return None  # not evaluated: an absent store is not missing telemetry
        tally = self._tally[TELEMETRY]
        oldest = self.pending(1)
        if not self.traced:
            tally.note(None, now, NO_TRACE)
            return None
        if not self._store_answered:
            tally.note(None, now, STORE_SILENT)
            return None
        waited = now - self._pending[oldest[0]] if oldest else 0.0
        tally.note(waited, now)
        if waited <= self.rules.telemetry_arrival_s:
            return None
        store = f"; the store's last error: {self._store_error}" if self._store_error else ""
        return StopCondition(TELEMETRY, f"telemetry missing for {format_number(waited)} s (> "
                             f"{format_number(self.rules.telemetry_arrival_s)} s): no event in the store for "
                             f"executed request {oldest[0]}{store}", now, breach_started_at=self._pending[oldest[0]],
                             judgeable_since=tally.first_judged_at)

    def evaluate(self, now: float) -> StopCondition | None:
        """The first condition met now (and from then on), or None.

        Every condition is evaluated and tallied at every call until one is met, so the
        report counts each of them, and names the others met at the same moment.
        """
        if self.met is not None:
            return self.met
        met = [c for c in (self._error_rate(now), self._p95(now), self._telemetry(now)) if c is not None]
        if met:
            self.met, self.also_met = met[0], [c.name for c in met[1:]]
        return self.met

    def report(self) -> dict[str, Any]:
        """What was evaluated: per condition its rule, evaluations, judged ones (and why not), worst value."""
        rules = self.rules.describe()
        conditions: dict[str, Any] = {}
        for name, tally in self._tally.items():
            not_evaluated = self._no_source if name == TELEMETRY and self._no_source else \
                "no guarded app in this load" if name == P95 and not self.rules.p95_apps else None
            conditions[name] = {"rule": rules[name], **tally.to_dict(),
                                "breach_started_at": self._breach.get(name), "not_evaluated": not_evaluated,
                                "met": bool(self.met and self.met.name == name) or name in self.also_met}
        return {"rules": asdict(self.rules), "requests_seen": self.requests,
                "first_request_at": self._first_start if self.requests else None,
                "traces_watched": self.traced, "traces_confirmed": self.confirmed,
                "telemetry_source": self._no_source, "store_answered": self._store_answered,
                "store_error": self._store_error,
                "met": self.met.to_dict() if self.met else None, "also_met": list(self.also_met),
                "conditions": conditions}


    def timing(self, k6_exit_s: Sequence[float] = (), killed: bool = False) -> dict[str, Any] | None:
        """How fast the met condition acted (None when none was met), in seconds: from the first
        breaching request, from the first failure that could be known (the end of the first
        failed request: a timeout is known only when it expires), from the moment the window
        was first full of traffic (first request + ``sustained_s``) and from the first
        evaluation able to judge it, to the stop; then from the stop to k6's exit (the slowest
        process) and whether k6 had to be killed."""
        met = self.met
        if met is None:
            return None
        full = self._first_start + self.rules.sustained_s if self.requests else None
        seen = self._first_failure_end if math.isfinite(self._first_failure_end) else None
        return {"breach_to_stop_s": None if met.breach_started_at is None else met.at - met.breach_started_at,
                "failure_seen_to_stop_s": None if seen is None else met.at - seen,
                "window_full_to_stop_s": None if full is None else met.at - full,
                "judgeable_to_stop_s": None if met.judgeable_since is None else met.at - met.judgeable_since,
                "stop_to_k6_exit_s": max(k6_exit_s) if k6_exit_s else None, "k6_killed": killed}


def condition_text(condition: dict[str, Any]) -> str:
    """One condition of :meth:`StopMonitor.report` in words: its rule and how often it could decide."""
    if condition.get("not_evaluated"):
        return f"{condition['rule']}: not evaluated ({condition['not_evaluated']})"
    if "evaluations" not in condition:
        return str(condition.get("rule", ""))
    return f"{condition['rule']}: evaluated {condition['evaluations']}×, judged {condition['judged']}×"


def report_notes(meta: dict[str, Any]) -> str:
    """Markdown paragraphs on a load's stop: its timing, the requests abandoned in flight, a missing
    telemetry source (``meta`` is the load's run metadata: ``stop``, ``stop_timing``, ``in_flight_at_stop``)."""
    lines, timing = [], meta.get("stop_timing") or {}
    if timing.get("breach_to_stop_s") is not None:
        lines.append(f"Stopped {timing['breach_to_stop_s']:.1f} s after the first breaching request was sent"
                     + (f", {timing['failure_seen_to_stop_s']:.1f} s after the first failure was known"
                        if timing.get("failure_seen_to_stop_s") is not None else "")
                     + (f" ({timing['judgeable_to_stop_s']:.1f} s after the window could first be judged)"
                        if timing.get("judgeable_to_stop_s") is not None else "")
                     + (f"; k6 exited {timing['stop_to_k6_exit_s']:.1f} s after the stop"
                        if timing.get("stop_to_k6_exit_s") is not None else "")
                     + (" (killed after the grace period)" if timing.get("k6_killed") else "") + ".")
    flight = meta.get("in_flight_at_stop") or {}
    if flight.get("requests"):
        lines.append(f"{flight['requests']} request(s) were in flight when k6 stopped: k6 abandoned them (closed their "
                     "connections) and recorded no answer; per app: "
                     + ", ".join(f"{a} {n}" for a, n in sorted(flight["by_app"].items())) + ".")
    absent = (meta.get("stop") or {}).get("telemetry_source")
    if absent:
        lines.append(f"Telemetry: {absent}. The telemetry-missing stop condition was not evaluated.")
    return "".join(f"{line}\n\n" for line in lines)


def monitor_points(rows: Sequence[dict[str, Any]], app_tag: str = "app") -> list[Finished]:
    """:class:`Finished` requests from :func:`readiness.probe.k6run.request_rows`-style rows.

    A row without an answer (status 0: a timeout, a refused connection) is infinitely slow.
    When it was sent is the row's ``started`` when it has one (the script's own send time),
    else its end less its k6 duration — which leaves out time spent connecting.
    """
    out = []
    for r in rows:
        end, took, status = float(r["time"]), float(r["duration_ms"]), r.get("status")
        answered = status is None or int(status) > 0  # rows without a status column carry no such finding
        started = r.get("started")
        if started is None or not math.isfinite(float(started)):
            started = end - max(took, 0.0) / 1000
        out.append(Finished(end, str(r.get(app_tag, "")), bool(r["failed"]) or not answered,
                            took if answered else math.inf, float(started)))
    return out
