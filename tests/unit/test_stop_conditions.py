"""Stop conditions on synthetic points: sustained breaches stop a load, short bursts do not."""

from __future__ import annotations

import pytest

from readiness.stop_conditions import ERROR_RATE, P95, TELEMETRY, Rules, StopMonitor, monitor_points

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
    rows = [{"time": T0, "app": "A1", "failed": True, "duration_ms": 3.5, "status": 500}]
    assert monitor_points(rows) == [(T0, "A1", True, 3.5)]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("error_rate_max", 0, "error_rate_max must be in (0, 1], got 0"),
    ("sustained_s", -1, "sustained_s must be a positive number, got -1"),
    ("slices", 0, "slices must be a positive integer, got 0"),
])
def test_bad_rules_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        rules(**{field: value})
    assert str(err.value) == message
