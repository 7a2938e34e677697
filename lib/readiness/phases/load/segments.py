"""The baseline load's k6 processes: one, N local execution segments, or N machines, and their merge.

k6 can split one scenario into execution segments: with ``--execution-segment i/N:(i+1)/N``
and the shared ``--execution-segment-sequence 0,1/N,…,1`` each process runs its own share
of the iterations, and ``iterationInTest`` still numbers iterations over the whole test,
so the segments together send exactly the requests one process would have sent (the
script caps the arrival-rate scenario at ``ceil(rate × duration)`` requests).

The same command runs locally (``load.segments`` > 1: N processes on this machine) or on N
machines (``readiness load-segment --params P --index i --of N --out DIR`` on each, then
``readiness load-merge DIR… --run-dir R``; see ``docs/distributed_load.md``). Merging keeps
the raw points: they are concatenated into one distribution and every percentile is
computed from it afterwards — percentiles of segments are never averaged.

A local run is the arrival-rate process(es) first, then the VU scenario in a process of
its own once they have exited: the two VU pools never have requests in flight at the same
time, and a stop condition met during the arrival scenario means the VU scenario never
starts. Every request carries the timeout :func:`request_timeout_s` derives from
``params.http``, so a hanging target holds at most the VU pool's worth of requests, each
for at most that long.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import platform
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import readiness
from readiness.core import aio
from readiness.core.runfolder import RunFolder
from readiness.core.stop_conditions import NO_SOURCE, Rules, StopMonitor, monitor_points
from readiness.params.model import Params, load_params
from readiness.probe.k6run import (
    EXTERNAL_ABORT,
    SENT_METRIC,
    THRESHOLD_FAILED,
    K6Process,
    K6Result,
    parse_points,
    parse_thresholds,
    point_time,
    request_rows,
    request_timeout_s,
    run_many,
    unfinished_requests,
)
from readiness.probe.telemetry_store import TelemetryAbsent, TelemetryUnavailable, iso

if TYPE_CHECKING:  # the phase context pulls in the notebook stack; a segment machine needs none of it
    from readiness.phasekit.context import Phase

SCRIPT = Path(readiness.__file__).resolve().parent / "k6" / "baseline_load.js"
POINTS = "evidence/baseline_k6_points.json.gz"
SUMMARY = "evidence/baseline_k6_summary.json"
LOG = "evidence/baseline_k6.log"
RUN_META = "evidence/baseline_load_run.json"
SEGMENT_FILES = {"points": "points.json.gz", "summary": "summary.json", "log": "k6.log", "meta": "segment.json"}
STOP_P95_ROLES = ("identity", "student")  # docs/phases.md#guardrails: "A1/A2 P95 > 200 ms sustained", read by role
SCENARIO_GRACE_S = 1.0  # the script's gracefulStop is the request timeout plus this
TELEMETRY_POLL_S = 5.0  # how often the store is asked about the load's own requests while k6 runs


def targets(params: Params) -> list[dict[str, str]]:
    """``{"app", "route", "url"}`` of every critical GET route of ``load.apps`` (empty: every app)."""
    chosen = params.load.apps or [a.id for a in params.apps]
    found = [{"app": a.id, "route": r.name, "url": a.url(r.path)} for a in params.apps if a.id in chosen
             for r in a.critical_routes if r.method == "GET"]
    if not found:
        raise ValueError(f"load: no critical GET route among apps {', '.join(chosen)}; add one to their "
                         "critical_routes or choose other load.apps")
    return found


def planned_iterations(params: Params) -> int:
    """Requests the arrival-rate scenario sends: ceil(rate × duration), as the script caps them."""
    return math.ceil(params.load.rate_per_s * params.load.duration_s - 1e-9)



def script_env(params: Params, token: str, scenarios: str = "arrival") -> dict[str, str]:
    """The script's settings for these params: the same on every machine of a distributed run."""
    ld = params.load
    if min(ld.duration_s, ld.vu_scenario.duration_s) < 1:
        raise ValueError(f"load.duration_s ({ld.duration_s:g}) and load.vu_scenario.duration_s "
                         f"({ld.vu_scenario.duration_s:g}) must be at least 1 s: k6 runs no shorter scenario")
    return {"TARGETS": json.dumps(targets(params)), "RUN": token, "SCENARIOS": scenarios,
            "RATE": f"{ld.rate_per_s:g}", "DURATION_S": f"{ld.duration_s:g}", "VUS": str(ld.vus),
            "VU_VUS": str(ld.vu_scenario.vus), "VU_DURATION_S": f"{ld.vu_scenario.duration_s:g}",
            "THRESHOLDS": json.dumps(ld.thresholds), "IDENTITY": params.synthetic.identities["student"],
            "TAGS": json.dumps({**params.synthetic.tags,
                                "env": "staging" if params.environment == "staging" else "prod_observe"}),
            "TIMEOUT_S": f"{request_timeout_s(params):g}"}


def stop_rules(params: Params) -> Rules:
    """The stop conditions (docs/phases.md#guardrails) for this load: thresholds, sustained window, guarded apps."""
    t = params.thresholds
    chosen = set(params.load.apps or [a.id for a in params.apps])
    return Rules(error_rate_max=t.error_rate_max, stop_p95_ms=t.stop_p95_ms,
                 sustained_s=params.windows.active.sustained_s, telemetry_arrival_s=t.telemetry_arrival_s,
                 p95_apps=tuple(a.id for a in params.apps if a.role in STOP_P95_ROLES and a.id in chosen))


def k6_timeout(params: Params) -> float:
    """How long one k6 process of the load may take before it is stopped: its scenarios, the
    graceful stop after each (the request timeout, which ends every iteration), ``grace_s``."""
    ld = params.load
    return ld.duration_s + ld.vu_scenario.duration_s + ld.grace_s + 2 * (request_timeout_s(params) + SCENARIO_GRACE_S)


def _frac(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def segment_args(index: int, of: int) -> list[str]:
    """k6 flags running segment ``index`` (0-based) of ``of`` equal segments, its points tagged ``segment``."""
    if isinstance(of, bool) or not isinstance(of, int) or of < 1:
        raise ValueError(f"--of must be a positive integer, got {of!r}")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < of:
        raise ValueError(f"--index must be between 0 and {of - 1} for --of {of}, got {index!r}")
    cuts = [Fraction(k, of) for k in range(of + 1)]
    return ["--execution-segment", f"{_frac(cuts[index])}:{_frac(cuts[index + 1])}",
            "--execution-segment-sequence", ",".join(_frac(c) for c in cuts), "--tag", f"segment={index}"]


def local_processes(params: Params, token: str, work: Path) -> list[K6Process]:
    """The arrival-rate k6 processes of a local run: one, or ``load.segments`` execution segments."""
    n = params.load.segments
    if n == 1:
        return [K6Process(SCRIPT, workdir=work, env=script_env(params, token), name="arrival")]
    return [K6Process(SCRIPT, workdir=work, env=script_env(params, token), args=segment_args(i, n),
                      name=f"segment-{i}") for i in range(n)]


def closed_process(params: Params, token: str, work: Path) -> K6Process:
    """The VU scenario alone, started once the arrival processes have exited."""
    return K6Process(SCRIPT, workdir=work, env=script_env(params, token, "vus"), name="vus")


def combined_exit(codes: Sequence[int | None]) -> int | None:
    """One exit code for several k6 processes: an abnormal one first, else 99 if any, else 0."""
    odd = [c for c in codes if c not in (0, THRESHOLD_FAILED)]
    return odd[0] if odd else THRESHOLD_FAILED if THRESHOLD_FAILED in codes else 0


def crossed_any(parts: Sequence[dict[str, bool]]) -> dict[str, bool]:
    """A threshold counts as crossed when any part crossed it (each part judged only its own points)."""
    out: dict[str, bool] = {}
    for part in parts:
        for key, value in part.items():
            out[key] = out.get(key, False) or value
    return out


def in_flight_at_stop(results: Sequence[K6Result]) -> dict[str, Any]:
    """The requests k6 abandoned: sent (a ``requests_sent`` point), never finished.

    k6 aborts them when it is stopped (SIGINT) — or when a scenario's graceful stop runs out —
    without a point of their own, so they are in no distribution; they are counted here, per
    app, with when the oldest of them was sent.
    """
    abandoned = [(r, row) for r in results for row in unfinished_requests(r.points())]
    by_app: dict[str, int] = {}
    for _, row in abandoned:
        by_app[str(row.get("app", ""))] = by_app.get(str(row.get("app", "")), 0) + 1
    return {"requests": len(abandoned), "by_app": by_app,
            "oldest_sent_at": min((row["sent_at"] for _, row in abandoned), default=None),
            "processes": sorted({r.name for r, _ in abandoned})}


def record_results(run: RunFolder, results: Sequence[K6Result], meta: dict[str, Any]) -> None:
    """Points (one gzipped stream), summary, log and run metadata of finished k6 processes.

    Exit codes other than 0 and 99 are errors, unless k6 was stopped on purpose (105 after
    SIGINT, or killed after the grace period). The metadata gains ``in_flight_at_stop``
    (:func:`in_flight_at_stop`); each part of the summary says how long k6 took to exit
    after it was asked to stop, and whether it had to be killed.
    """
    log = "".join(f"$ k6 run … {SCRIPT.name} [{r.name}] (exit {r.exit_code}"
                  f"{', stopped: ' + r.stopped if r.stopped else ''})\n\n{r.log}\n" for r in results)
    run.write_text(LOG, log)
    for r in results:
        if r.timed_out:
            raise RuntimeError(f"k6 ({r.name}) did not finish within its time limit and was stopped; see {LOG}")
        if r.exit_code not in (0, THRESHOLD_FAILED) and not (r.stopped and r.exit_code in (EXTERNAL_ABORT, -9)):
            raise RuntimeError(f"k6 ({r.name}) exited with {r.exit_code}; see {LOG}: {r.log.strip()[-300:]}")
    raw = b"".join(gzip.decompress(r.points_gz) for r in results if r.points_gz)
    run.write_bytes(POINTS, gzip.compress(raw))
    codes = [r.exit_code for r in results]
    run.write_json(SUMMARY, {
        "exit_code": combined_exit(codes), "threshold_failed": THRESHOLD_FAILED in codes,
        "thresholds_crossed": crossed_any([r.thresholds for r in results]),
        "parts": [{"name": r.name, "exit_code": r.exit_code, "stopped": r.stopped, "stop_latency_s": r.stop_latency_s,
                   "killed": r.killed, "thresholds_crossed": r.thresholds, "summary": r.summary} for r in results]})
    run.write_json(RUN_META, {**meta, "in_flight_at_stop": in_flight_at_stop(results)})


def telemetry_absence(params: Params) -> str | None:
    """Why this ecosystem has no telemetry source to watch, or None when the params declare one.

    A store the params declare may still turn out absent while the load runs (its route
    answers 404 or nothing at all): :class:`StopWatcher` finds that out from the first query.
    """
    if params.telemetry_app is None:
        return f"{NO_SOURCE}: the params name no telemetry store (telemetry_app is not set)"
    if not params.provides("telemetry_store"):
        return f"{NO_SOURCE}: the params do not declare the telemetry_store capability"
    return None


class StopWatcher:
    """k6run's ``on_points`` for the baseline load: feed the monitor, evaluate, say why to stop.

    With ``arrived`` (which of these trace ids does the telemetry store hold?), every
    ``telemetry_poll_s`` the newest answered request is put under watch and the oldest
    watched ones are asked about — a low, bounded rate of store queries (before any request
    is watched, the first poll asks about a trace no request carries, to learn at once
    whether there is a store to ask). The query runs in
    a thread of its own, one at a time, and its answer is taken at a later poll: a store
    that hangs must not hold up the error-rate and P95 evaluations (a blocking query took
    up to three client timeouts per poll). How it ended is told to the monitor: found
    traces arrive; a :class:`TelemetryAbsent` before the store ever answered means there is
    no telemetry source (the condition is then not evaluated); any other failure keeps the
    traces pending, with the error kept for the report. Without ``arrived`` (a segment on a
    machine that does not query the store) telemetry is not watched.

    When a request was sent is taken from the script's ``requests_sent`` point, not from its
    duration: k6's ``http_req_duration`` leaves out the time spent connecting, so a request
    that timed out waiting for a connection (a server whose accept queue is full) would look
    as if it had been sent at the moment it failed.
    """

    def __init__(self, monitor: StopMonitor, token: str, arrived: Callable[[list[str]], set[str]] | None = None,
                 telemetry_poll_s: float = TELEMETRY_POLL_S) -> None:
        self.monitor, self.token, self.arrived, self.telemetry_poll_s = monitor, token, arrived, telemetry_poll_s
        self._last_poll = -math.inf
        self._thread: threading.Thread | None = None
        self._outcome: tuple[set[str] | None, BaseException | None] = (None, None)
        self._sent: dict[tuple[str, str], float] = {}  # (scenario, seq) → sent at, until the request finishes

    def __call__(self, points: list[dict[str, Any]], now: float) -> str | None:
        for point in points:
            if point.get("metric") == SENT_METRIC:
                tags = point["data"].get("tags") or {}
                self._sent[(str(tags.get("scenario", "")), str(tags.get("seq", "")))] = point_time(point["data"]["time"])
        rows = request_rows(points)
        if not rows.empty:
            keys = zip(rows.get("scenario", pd.Series([""] * len(rows))).astype(str),
                       rows.get("seq", pd.Series([""] * len(rows))).astype(str), strict=True)
            rows = rows.assign(started=[self._sent.pop(key, None) for key in keys])
            self.monitor.add(monitor_points(rows.to_dict("records")))
        if self.arrived is not None and self.monitor.source_absent is None:
            self._collect()
            if self.monitor.source_absent is None and now - self._last_poll >= self.telemetry_poll_s:
                self._last_poll = now
                answered = rows[rows["status"] > 0] if not rows.empty else rows
                if not answered.empty:
                    newest = answered.loc[answered["time"].idxmax()]
                    self.monitor.sent(f"{self.token}-{newest['scenario']}-{newest['seq']}", float(newest["time"]))
                # until the store has answered once, a trace no request carries asks whether there is one
                traces = self.monitor.pending() or ([] if self.monitor.store_answered else [f"{self.token}-probe"])
                if self._thread is None and traces:
                    self._ask(traces)
        met = self.monitor.evaluate(now)
        return met.reason if met else None

    def _ask(self, traces: list[str]) -> None:
        assert self.arrived is not None
        ask = self.arrived

        def run() -> None:
            try:
                self._outcome = (ask(traces), None)
            except BaseException as exc:  # noqa: BLE001 - handed to the watcher's thread by _collect
                self._outcome = (None, exc)

        self._thread = threading.Thread(target=run, name="readiness-load-telemetry", daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        """Take the answer of a finished query, if there is one."""
        if self._thread is None or self._thread.is_alive():
            return
        self._thread = None
        found, error = self._outcome
        self._outcome = (None, None)
        if isinstance(error, TelemetryAbsent) and not self.monitor.store_answered:
            self.monitor.no_source(str(error))
        elif isinstance(error, TelemetryUnavailable):
            self.monitor.store_failed(str(error))
        elif error is not None:
            raise error
        else:
            self.monitor.answered(found or set())

    def close(self, wait_s: float = 0.0) -> None:
        """Wait up to ``wait_s`` for a query still running and take its answer; an unfinished one is
        abandoned (it ends at the client's timeout in its daemon thread)."""
        if self._thread is not None:
            self._thread.join(max(0.0, wait_s))
            self._collect()


def watcher(monitor: StopMonitor, token: str, arrived: Callable[[list[str]], set[str]] | None = None,
            telemetry_poll_s: float = TELEMETRY_POLL_S) -> StopWatcher:
    """The ``on_points`` callback of a load (see :class:`StopWatcher`)."""
    return StopWatcher(monitor, token, arrived, telemetry_poll_s)


def store_lookup(phase: Phase) -> Callable[[list[str]], set[str]]:
    """Which of some trace ids the telemetry store has (one short query each, through the guarded client).

    A failing query raises (:class:`TelemetryAbsent` when there is no store to ask): the
    caller tells a missing event from a store it cannot ask.
    """
    async def ask(traces: list[str]) -> set[str]:
        found, until = set(), dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
        async with phase.client() as client:
            source = phase.telemetry(client)
            for trace in traces:
                if await source.copies(trace_id=trace, since=until - dt.timedelta(hours=1), until=until):
                    found.add(trace)
        return found

    return lambda traces: aio.run(ask(traces))


def read_meta(run: RunFolder) -> dict[str, Any]:
    """The load's run metadata (window, token, plan, stop conditions evaluated, refusal)."""
    path = run.path(RUN_META)
    if not path.exists():
        raise FileNotFoundError(f"{RUN_META} is missing: run load.run_load(phase) first")
    return json.loads(path.read_text())


def read_points(run: RunFolder) -> list[dict[str, Any]]:
    return parse_points(gzip.decompress(run.path(POINTS).read_bytes()).decode().splitlines())


def read_requests(run: RunFolder) -> pd.DataFrame:
    """Every request of the load from the raw points; an unanswered one (status 0) counts as +inf."""
    rows = request_rows(read_points(run))
    if rows.empty:
        return rows.assign(latency_ms=pd.Series(dtype=float), scenario=pd.Series(dtype=object))
    return rows.assign(latency_ms=np.where(rows["status"] > 0, rows["duration_ms"], np.inf))


def run_segment(params_file: str | Path, index: int, of: int, out_dir: str | Path,
                token: str | None = None) -> dict[str, Any]:
    """One segment of the arrival-rate scenario on this machine, written to ``out_dir``.

    The error-rate and P95 stop conditions watch this segment's own points; a met one stops
    it and is written to the segment's metadata (the merge carries it into the run).
    """
    params = load_params(params_file)
    segment_args(index, of)  # a bad index or count fails before anything is written
    out = Path(out_dir)
    folder = RunFolder(out, params.secrets.names, producer="load-segment")
    monitor = StopMonitor(stop_rules(params))
    token = token or f"qa-load-{uuid.uuid4().hex[:12]}"
    on_points = watcher(monitor, token)
    started = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="readiness-segment-") as tmp:
        proc = K6Process(SCRIPT, workdir=Path(tmp), env=script_env(params, token, "arrival"),
                         args=segment_args(index, of), name=f"segment-{index}")
        result = run_many([proc], on_points=on_points, poll_s=params.load.stop_poll_s,
                          timeout_s=k6_timeout(params), grace_s=min(params.load.grace_s, 10))[0]
    meta = {"index": index, "of": of, "params_digest": params.digest(), "token": token, "host": platform.node(),
            "started_at": iso(started), "ended_at": iso(dt.datetime.now(dt.UTC)), "exit_code": result.exit_code,
            "stopped": result.stopped, "stop": monitor.report(), "planned_iterations": planned_iterations(params)}
    folder.write_bytes(SEGMENT_FILES["points"], result.points_gz or gzip.compress(b""))
    folder.write_json(SEGMENT_FILES["summary"], result.summary)
    folder.write_text(SEGMENT_FILES["log"], result.log)
    folder.write_json(SEGMENT_FILES["meta"], meta)
    return meta


def _read_segment(folder: Path) -> tuple[dict[str, Any], K6Result]:
    missing = [name for name in SEGMENT_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a load segment folder: missing {', '.join(missing)}")
    meta = json.loads((folder / SEGMENT_FILES["meta"]).read_text())
    summary = json.loads((folder / SEGMENT_FILES["summary"]).read_text())
    return meta, K6Result(name=f"segment-{meta['index']}", command=[], exit_code=meta["exit_code"], summary=summary,
                          points_gz=(folder / SEGMENT_FILES["points"]).read_bytes(), elapsed_s=0.0,
                          log=(folder / SEGMENT_FILES["log"]).read_text(), stopped=meta.get("stopped"),
                          thresholds=parse_thresholds(summary))


def merge_segments(dirs: Sequence[str | Path], run_dir: str | Path) -> dict[str, Any]:
    """Merge the folders of ``readiness load-segment`` into run folder ``run_dir``'s load evidence.

    Every segment 0…N-1 of one N must be there exactly once, all from the same params
    (digest). The load window spans the earliest start to the latest end.
    """
    if not dirs:
        raise ValueError("load-merge needs at least one segment folder")
    read = [_read_segment(Path(d)) for d in dirs]
    metas = [m for m, _ in read]
    ofs, digests = {m["of"] for m in metas}, {m["params_digest"] for m in metas}
    if len(ofs) != 1 or len(digests) != 1:
        raise ValueError(f"segments come from different runs: of={sorted(ofs)}, params digests "
                         f"{sorted(d[:12] for d in digests)}; merge segments of one command only")
    of = ofs.pop()
    indices = sorted(m["index"] for m in metas)
    if indices != list(range(of)):
        raise ValueError(f"segments of {of} must be 0…{of - 1} exactly once, got {indices}")
    stopped = [f"segment {m['index']}: {m['stop']['met']['reason']}" for m in metas if (m.get("stop") or {}).get("met")]
    run = RunFolder.open(run_dir, producer="03_baseline_load")
    meta = {"token": ",".join(sorted({m["token"] for m in metas})), "source": "distributed", "segments": of,
            "started_at": min(m["started_at"] for m in metas), "ended_at": max(m["ended_at"] for m in metas),
            "planned_iterations": metas[0]["planned_iterations"], "hosts": sorted({m["host"] for m in metas}),
            "blocked": None, "params_digest": digests.pop(),
            "stop": {"met": {"name": "segment", "reason": "; ".join(stopped)} if stopped else None,
                     "segments": [m.get("stop") for m in sorted(metas, key=lambda m: m["index"])]}}
    record_results(run, [r for _, r in sorted(read, key=lambda x: x[0]["index"])], meta)
    return meta
