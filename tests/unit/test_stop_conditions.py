"""Stop conditions on synthetic points: sustained breaches stop a load, short bursts do not."""

from __future__ import annotations

import math

import pytest

from readiness.core.stop_conditions import (
    EMPTY_SLICE,
    ERROR_RATE,
    P95,
    STORE_SILENT,
    TELEMETRY,
    WINDOW_NOT_FULL,
    Finished,
    Rules,
    StopMonitor,
    monitor_points,
)

T0 = 1_700_000_000.0
RATE = 40  # requests per second in the synthetic traffic


def rules(**over: object) -> Rules:
    base = dict(error_rate_max=0.01, stop_p95_ms=200, sustained_s=10, telemetry_arrival_s=60, p95_apps=("A1", "A2"))
    return Rules(**{**base, **over})  # type: ignore[arg-type]


def traffic(seconds: float, *, start: float = 0.0, failed: bool = False, ms: float = 5.0, app: str = "A3",
            rate: int = RATE) -> list[tuple[float, str, bool, float]]:
    return [(T0 + start + i / rate, app, failed, ms) for i in range(int(seconds * rate))]


def feed(monitor: StopMonitor, points: list[tuple[float, str, bool, float]], step_s: float = 1.0):
    """Feed points second by second (as k6 flushes them) and evaluate after each batch."""
    points = sorted(points)
    met, t = None, points[0][0]
    while points and met is None:
        batch = [p for p in points if p[0] < t + step_s]
        points = points[len(batch):]
        monitor.add(batch)
        met = monitor.evaluate(t + step_s)
        t += step_s
    return met


def test_sustained_error_burst_is_met() -> None:
    monitor = StopMonitor(rules())
    met = feed(monitor, traffic(5) + traffic(15, start=5, failed=True))
    assert met is not None and met.name == ERROR_RATE
    assert T0 + 14 <= met.at <= T0 + 16  # every 2 s slice of the last 10 s holds errors from about T0 + 14
    assert met.reason == "error rate ≥ 1% sustained for 10 s (lowest slice 48.75%, 401 requests)"


def test_short_error_burst_is_not_met() -> None:
    monitor = StopMonitor(rules())
    points = traffic(5) + traffic(4, start=5, failed=True) + traffic(20, start=9)
    assert feed(monitor, points) is None
    report = monitor.report()
    assert report["met"] is None and report["conditions"][ERROR_RATE]["judged"] > 0
    assert report["conditions"][ERROR_RATE]["worst"] == 0.0  # some slice was always clean


def test_error_rate_just_below_the_limit_is_not_met() -> None:
    monitor = StopMonitor(rules(error_rate_max=0.2))
    points = [(t, a, i % 10 == 0, ms) for i, (t, a, _f, ms) in enumerate(traffic(30))]  # 10% errors everywhere
    assert feed(monitor, points) is None


def test_nothing_is_sustained_before_the_window_is_full() -> None:
    monitor = StopMonitor(rules())
    assert feed(monitor, traffic(8, failed=True)) is None  # all errors, but only 8 s of traffic


def test_a_gap_in_traffic_breaks_the_streak() -> None:
    monitor = StopMonitor(rules())
    points = traffic(4, failed=True) + traffic(5, start=8.5, failed=True)  # 4.5 s without requests between
    assert feed(monitor, points) is None


def test_sustained_slow_guarded_app_is_met_and_others_ignored() -> None:
    monitor = StopMonitor(rules())
    slow_other = traffic(20, ms=900, app="A5")  # not a guarded app: never stops the load
    assert feed(monitor, slow_other) is None
    monitor = StopMonitor(rules())
    met = feed(monitor, traffic(20, ms=20, app="A1") + traffic(20, ms=450, app="A2", rate=10))
    assert met is not None and (met.name, met.app) == (P95, "A2")
    assert "A2 P95 > 200 ms sustained for 10 s" in met.reason


def test_slow_tail_only_in_part_of_the_window_is_not_met() -> None:
    monitor = StopMonitor(rules())
    points = traffic(6, ms=20, app="A1") + traffic(6, start=6, ms=400, app="A1") + traffic(8, start=12, ms=20,
                                                                                           app="A1")
    assert feed(monitor, points) is None


def test_missing_telemetry_is_met_after_the_arrival_threshold() -> None:
    monitor = StopMonitor(rules(telemetry_arrival_s=60))
    monitor.add(traffic(2))
    monitor.sent("trace-1", T0)
    monitor.sent("trace-2", T0 + 1)
    monitor.arrived("trace-2")
    assert monitor.evaluate(T0 + 59) is None
    met = monitor.evaluate(T0 + 61)
    assert met is not None and met.name == TELEMETRY and "trace-1" in met.reason
    assert monitor.report()["traces_watched"] == 2 and monitor.report()["traces_confirmed"] == 1


def test_arrived_telemetry_clears_the_watch() -> None:
    monitor = StopMonitor(rules(telemetry_arrival_s=5))
    monitor.sent("trace-1", T0)
    monitor.arrived("trace-1")
    assert monitor.evaluate(T0 + 600) is None and monitor.pending() == []


def test_first_met_condition_stays_met() -> None:
    monitor = StopMonitor(rules(sustained_s=2, slices=2))
    met = feed(monitor, traffic(5, failed=True))
    monitor.add(traffic(30, start=5))
    assert monitor.evaluate(T0 + 40) is met


def test_monitor_points_from_request_rows() -> None:
    rows = [{"time": T0, "app": "A1", "failed": True, "duration_ms": 3.5, "status": 500},
            {"time": T0 + 2, "app": "A1", "failed": True, "duration_ms": 1500.0, "status": 0},  # timed out waiting
            {"time": T0 + 3, "app": "A2", "failed": True, "duration_ms": 0.0, "status": 0, "started": T0 + 1.5},
            {"time": T0 + 4, "app": "A2", "failed": False, "duration_ms": 8.0, "status": 200, "started": None}]
    assert monitor_points(rows) == [
        Finished(T0, "A1", True, 3.5, T0 - 0.0035),
        Finished(T0 + 2, "A1", True, math.inf, T0 + 0.5),  # no answer: infinitely slow, sent 1.5 s before it ended
        Finished(T0 + 3, "A2", True, math.inf, T0 + 1.5),  # a connect timeout: k6's duration leaves the wait out
        Finished(T0 + 4, "A2", False, 8.0, T0 + 4 - 0.008)]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("error_rate_max", 0, "error_rate_max must be in (0, 1], got 0"),
    ("sustained_s", -1, "sustained_s must be a positive number, got -1"),
    ("slices", 0, "slices must be a positive integer, got 0"),
])
def test_bad_rules_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        rules(**{field: value})
    assert str(err.value) == message


def hanging(batches: int, *, vus: int = 5, timeout_s: float = 1.5, app: str = "A1") -> list[Finished]:
    """A target that never answers, loaded by ``vus`` VUs: each VU's request times out after
    ``timeout_s`` and the VU sends the next at once, so requests end in bursts ``timeout_s`` apart."""
    return [Finished(T0 + b * timeout_s + i * 0.05 + timeout_s, app, True, math.inf, T0 + b * timeout_s + i * 0.05)
            for b in range(batches) for i in range(vus)]


def test_a_hanging_target_is_judged_on_the_requests_it_holds() -> None:
    """Slices between the bursts of timeouts hold no finished request, yet every VU was waiting on
    the target through them: they are judged on those requests, and the breach stops the load."""
    monitor = StopMonitor(rules(sustained_s=2))
    met = feed(monitor, hanging(6), step_s=0.25)
    assert met is not None and met.name == ERROR_RATE and monitor.also_met == [P95]
    assert met.breach_started_at == T0 and met.judgeable_since == met.at
    report = monitor.report()["conditions"]
    assert report[ERROR_RATE]["judged"] == 1 and report[ERROR_RATE]["judged_on_in_flight"] == 1
    assert report[ERROR_RATE]["not_judged"] == {WINDOW_NOT_FULL: report[ERROR_RATE]["evaluations"] - 1}
    assert report[P95]["worst"] == "inf" and report[P95]["met"]  # a request without an answer is infinitely slow


def test_a_gap_without_requests_in_flight_is_still_a_gap() -> None:
    """Nothing sent and nothing waiting from 0.6 s to 1.5 s: whatever the slices around it say,
    a slice inside that gap breaks the streak."""
    def burst(at: float) -> list[Finished]:
        return [Finished(T0 + at + i * 0.05 + 0.5, "A1", True, math.inf, T0 + at + i * 0.05) for i in range(3)]

    monitor = StopMonitor(rules(sustained_s=2))
    assert feed(monitor, burst(0) + burst(1.5) + burst(2.0), step_s=0.25) is None
    assert monitor.report()["conditions"][ERROR_RATE]["not_judged"][EMPTY_SLICE] > 0
    assert monitor.report()["conditions"][ERROR_RATE]["judged"] == 0


def test_one_slow_failure_among_healthy_traffic_is_not_sustained() -> None:
    """A request in flight only fills a slice where nothing ended: a 9 s timeout among healthy
    traffic counts once, where it ended, not in every slice it spanned."""
    monitor = StopMonitor(rules())
    points = [Finished(*p) for p in traffic(30)] + [Finished(T0 + 19, "A3", True, math.inf, T0 + 10)]
    assert feed(monitor, points) is None
    assert monitor.report()["conditions"][ERROR_RATE]["judged_on_in_flight"] == 0


def test_unanswered_requests_fail_and_are_infinitely_slow() -> None:
    rows = [{"time": T0 + i / RATE, "app": "A2", "failed": True, "duration_ms": 0.0, "status": 0}
            for i in range(20 * RATE)]  # connection refused: k6 says 0 ms
    monitor = StopMonitor(rules())
    met = feed(monitor, monitor_points(rows))
    assert met is not None and met.name == ERROR_RATE and monitor.also_met == [P95]
    assert monitor.report()["conditions"][P95]["worst"] == "inf"


def test_absent_telemetry_source_is_never_missing_telemetry() -> None:
    monitor = StopMonitor(rules(telemetry_arrival_s=1))
    monitor.sent("trace-1", T0)
    monitor.no_source("GET /api/telemetry/events → 404: not found")
    monitor.sent("trace-2", T0 + 1)  # nothing is watched once there is no source
    monitor.add(traffic(30))
    assert monitor.evaluate(T0 + 600) is None and monitor.pending() == []
    report = monitor.report()
    assert report["telemetry_source"] == "no telemetry source: GET /api/telemetry/events → 404: not found"
    assert report["conditions"][TELEMETRY]["not_evaluated"] == report["telemetry_source"]
    assert report["conditions"][TELEMETRY]["evaluations"] == 0 and not report["conditions"][TELEMETRY]["met"]
    assert report["conditions"][ERROR_RATE]["judged"] == 1


def test_telemetry_is_judged_only_once_the_store_has_answered() -> None:
    monitor = StopMonitor(rules(telemetry_arrival_s=5))
    monitor.sent("trace-1", T0)
    monitor.store_failed("GET /api/telemetry/events → 503: busy")  # a store that exists, but failed
    assert monitor.evaluate(T0 + 60) is None
    assert monitor.report()["conditions"][TELEMETRY]["not_judged"] == {STORE_SILENT: 1}
    monitor.answered(set())  # the store answers: it holds no event of trace-1
    met = monitor.evaluate(T0 + 61)
    assert met is not None and met.name == TELEMETRY and met.breach_started_at == T0
    assert met.reason == ("telemetry missing for 61 s (> 5 s): no event in the store for executed request trace-1; "
                          "the store's last error: GET /api/telemetry/events → 503: busy")


def test_timing_of_a_stop() -> None:
    monitor = StopMonitor(rules(sustained_s=2))
    assert monitor.timing() is None
    met = feed(monitor, hanging(6), step_s=0.25)
    assert met is not None
    timing = monitor.timing([0.4, 1.2], killed=False)
    assert timing == {"breach_to_stop_s": met.at - T0, "failure_seen_to_stop_s": met.at - (T0 + 1.5),
                      "window_full_to_stop_s": met.at - (T0 + 2),
                      "judgeable_to_stop_s": 0.0, "stop_to_k6_exit_s": 1.2, "k6_killed": False}
