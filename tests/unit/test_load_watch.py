"""The baseline load's stop watcher on synthetic k6 points: send times from the script's own
points, telemetry lookups off the evaluation path, and an absent store that stops nothing."""

from __future__ import annotations

import copy
import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from readiness.core.check import Status
from readiness.core.stop_conditions import ERROR_RATE, TELEMETRY, Rules, StopMonitor
from readiness.params.model import parse_params
from readiness.phases.load.baseline import stop_check
from readiness.phases.load.segments import telemetry_absence, watcher
from readiness.probe.telemetry_store import TelemetryAbsent, TelemetryUnavailable

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0
ABSENT = "no telemetry source: GET /api/telemetry/events → 404: not found"


def stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


def sent(t: float, seq: int, app: str = "A1") -> dict[str, Any]:
    return {"type": "Point", "metric": "requests_sent",
            "data": {"time": stamp(t), "value": 1, "tags": {"scenario": "arrival", "seq": str(seq), "app": app}}}


def done(t: float, seq: int, *, status: int, ms: float, app: str = "A1") -> dict[str, Any]:
    tags = {"scenario": "arrival", "seq": str(seq), "app": app, "status": str(status),
            "expected_response": "true" if 200 <= status < 400 else "false"}
    return {"type": "Point", "metric": "http_req_duration", "data": {"time": stamp(t), "value": ms, "tags": tags}}


def requests(start: float, seconds: float, *, status: int = 503, rate: int = 20, seq0: int = 0) -> list[dict]:
    """Requests sent ``rate``/s from ``start`` that end 5 ms later with ``status``."""
    out = []
    for i in range(int(seconds * rate)):
        t = start + i / rate
        out += [sent(t, seq0 + i), done(t + 0.005, seq0 + i, status=status, ms=5.0)]
    return out


def rules(**over: Any) -> Rules:
    return Rules(**{"error_rate_max": 0.01, "stop_p95_ms": 200, "sustained_s": 2, "telemetry_arrival_s": 60,
                    "p95_apps": ("A1",), **over})


def test_a_request_that_timed_out_connecting_dates_from_when_it_was_sent() -> None:
    """k6 reports 0 ms for a request that never got a connection; the script's point says when it left."""
    monitor = StopMonitor(rules())
    on_points = watcher(monitor, "tok")
    assert on_points([sent(T0, 7), done(T0 + 1.5, 7, status=0, ms=0.0)], T0 + 2) is None
    report = monitor.report()
    assert report["first_request_at"] == T0 and report["conditions"][ERROR_RATE]["breach_started_at"] == T0


def test_an_absent_store_is_no_telemetry_source_and_stops_nothing() -> None:
    monitor = StopMonitor(rules(telemetry_arrival_s=1))
    asked: list[list[str]] = []

    def absent(traces: list[str]) -> set[str]:
        asked.append(traces)
        raise TelemetryAbsent(ABSENT)

    on_points = watcher(monitor, "tok", absent, telemetry_poll_s=0)
    assert on_points([], T0) is None  # k6 starting: nothing to watch yet, but is there a store to ask?
    on_points.close(wait_s=5)
    assert asked == [["tok-probe"]]  # one question, about a trace no request carries
    assert on_points(requests(T0 + 1, 20, status=200, seq0=20), T0 + 600) is None
    assert asked == [["tok-probe"]] and monitor.pending() == []  # an absent store is not asked again
    report = monitor.report()
    assert report["telemetry_source"] == ABSENT and report["met"] is None
    assert report["conditions"][TELEMETRY]["not_evaluated"] == ABSENT


def test_missing_events_in_a_store_that_answers_still_stop_the_load() -> None:
    monitor = StopMonitor(rules(telemetry_arrival_s=1))
    on_points = watcher(monitor, "tok", lambda traces: set(), telemetry_poll_s=0)
    on_points(requests(T0, 1, status=200), T0 + 1)
    on_points.close(wait_s=5)
    reason = on_points(requests(T0 + 1, 1, status=200, seq0=20), T0 + 3)
    assert reason == "telemetry missing for 2 s (> 1 s): no event in the store for executed request tok-arrival-19"
    assert monitor.report()["telemetry_source"] is None


def test_a_store_that_fails_after_answering_is_not_absent() -> None:
    monitor = StopMonitor(rules())
    answers: list[BaseException | None] = [None, TelemetryAbsent(ABSENT), TelemetryUnavailable("GET … → 503")]

    def store(traces: list[str]) -> set[str]:
        error = answers.pop(0)
        if error is not None:
            raise error
        return set()

    on_points = watcher(monitor, "tok", store, telemetry_poll_s=0)
    for k in range(3):
        on_points(requests(T0 + k, 1, status=200, seq0=20 * k), T0 + k + 1)
        on_points.close(wait_s=5)
    report = monitor.report()
    assert report["telemetry_source"] is None and report["store_answered"]
    assert report["store_error"] == "GET … → 503" and monitor.pending()


def test_a_hanging_store_does_not_hold_up_the_evaluation() -> None:
    """The lookup blocks until released; the error-rate stop must come while it still blocks."""
    release, waiting = threading.Event(), threading.Event()

    def hanging_store(traces: list[str]) -> set[str]:
        waiting.set()
        release.wait(10)
        return set()

    monitor = StopMonitor(rules())
    on_points = watcher(monitor, "tok", hanging_store, telemetry_poll_s=0)
    try:
        assert on_points(requests(T0, 1), T0 + 1) is None
        reason = on_points(requests(T0 + 1, 2, seq0=20), T0 + 3)
        assert reason is not None and reason.startswith("error rate ≥ 1% sustained for 2 s")
        assert waiting.is_set() and not release.is_set()  # the store query was still in progress
    finally:
        release.set()
        on_points.close(wait_s=5)


def test_a_bug_in_the_lookup_is_raised_not_swallowed() -> None:
    def broken(traces: list[str]) -> set[str]:
        raise RuntimeError("lookup bug")

    on_points = watcher(StopMonitor(rules()), "tok", broken, telemetry_poll_s=0)
    on_points(requests(T0, 1, status=200), T0 + 1)
    with pytest.raises(RuntimeError, match="lookup bug"):
        on_points.close(wait_s=5)


@pytest.fixture(scope="module")
def sandbox_data() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())


def test_params_without_a_telemetry_store_have_no_source(sandbox_data: dict[str, Any]) -> None:
    assert telemetry_absence(parse_params(copy.deepcopy(sandbox_data), "sandbox.yaml", {})) is None
    data = copy.deepcopy(sandbox_data)
    data["telemetry_app"] = None
    data.pop("capabilities", None)
    assert telemetry_absence(parse_params(data, "none.yaml", {})) == (
        "no telemetry source: the params name no telemetry store (telemetry_app is not set)")


def test_the_stop_check_is_inconclusive_when_nothing_could_be_judged() -> None:
    """A load shorter than the sustained window never judged the error rate: "not met" would be vacuous."""
    monitor = StopMonitor(rules(sustained_s=10))
    monitor.add([(T0 + i / 20, "A1", False, 5.0) for i in range(100)])  # 5 s of healthy traffic
    for k in range(5):
        monitor.evaluate(T0 + k + 1)
    common = {"phase": "03_baseline_load", "window": None, "evidence": (), "severity": "P1"}
    check = stop_check({"stop": monitor.report()}, common)
    assert check.status is Status.INCONCLUSIVE
    assert check.detail.startswith("the error-rate and P95 conditions could never be judged (window not yet full ×5)")
    monitor.add([(T0 + 5 + i / 20, "A1", False, 5.0) for i in range(120)])
    monitor.evaluate(T0 + 12)
    assert stop_check({"stop": monitor.report()}, common).status is Status.PASS
    monitor.no_source("GET /api/telemetry/events → 404")
    check = stop_check({"stop": monitor.report()}, common)
    assert check.status is Status.INCONCLUSIVE and check.detail.startswith(
        "no telemetry source: GET /api/telemetry/events → 404; error rate and P95 not met")
