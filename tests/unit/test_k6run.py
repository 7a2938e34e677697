"""The k6 runner: summary thresholds, point parsing, live tailing, and that k6 never outlives the call."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from readiness.probe.k6run import (
    EXTERNAL_ABORT,
    PointTail,
    counter_totals,
    env_args,
    parse_thresholds,
    point_time,
    request_rows,
    run_k6,
    threshold_slug,
    unfinished_requests,
)

# A script that needs no server: one custom point per iteration, for as long as DURATION.
IDLE_SCRIPT = textwrap.dedent("""
    import { sleep } from 'k6';
    import { Counter } from 'k6/metrics';
    const ticks = new Counter('ticks');
    export const options = {
      thresholds: { ticks: ['count>1000000'] },
      scenarios: { idle: { executor: 'constant-vus', vus: 1, duration: __ENV.DURATION || '1s' } },
    };
    export default function () { ticks.add(1); sleep(0.1); }
""")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its parent's wait counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_thresholds_true_means_crossed() -> None:
    summary = {"metrics": {"http_req_duration": {"p(95)": 180.0, "thresholds": {"p(95)<150": True}},
                           "http_req_failed": {"thresholds": {"rate<0.01": False}}, "iterations": {"count": 5}}}
    assert parse_thresholds(summary) == {"http_req_duration: p(95)<150": True, "http_req_failed: rate<0.01": False}
    assert parse_thresholds({}) == {}


def test_malformed_threshold_value_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError) as err:
        parse_thresholds({"metrics": {"checks": {"thresholds": {"rate>0.9": "yes"}}}})
    assert str(err.value) == "summary export: threshold checks: rate>0.9 must be true or false, got 'yes'"


def test_threshold_slug_is_a_stable_token() -> None:
    assert threshold_slug("http_req_duration: p(95)<150") == "http_req_duration.p95_lt_150"
    assert threshold_slug("http_req_failed: rate<=0.01") == "http_req_failed.rate_le_0_01"
    assert threshold_slug("http_req_duration{app:A1}: p(99) >= 2") == "http_req_duration_app_A1_.p99_ge_2"


def test_env_args_and_bad_names() -> None:
    assert env_args({"RATE": 40, "PATH": "/x"}) == ["-e", "RATE=40", "-e", "PATH=/x"]
    with pytest.raises(ValueError) as err:
        env_args({"A B": 1})
    assert str(err.value) == "k6 environment names must be non-empty without '=' or spaces, got ['A B']"


def test_point_time_keeps_nanosecond_stamps() -> None:
    assert point_time("2026-01-02T03:04:05.123456789Z") == pytest.approx(1767323045.123456789, abs=1e-6)
    assert point_time("2026-01-02T03:04:05Z") == 1767323045.0
    assert point_time("2026-01-02T04:04:05.5+01:00") == 1767323045.5


def point(metric: str, value: float, **tags: str) -> dict:
    return {"type": "Point", "metric": metric, "data": {"time": "2026-01-02T03:04:05.25Z", "value": value,
                                                       "tags": tags}}


def test_request_rows_follow_k6s_failed_rule() -> None:
    rows = request_rows([point("http_req_duration", 12.5, status="200", expected_response="true", app="A1"),
                         point("http_req_duration", 3.0, status="503", expected_response="false", app="A2"),
                         point("http_req_duration", 9.0, status="404", app="A3"),  # no tag: default rule
                         point("http_req_duration", 10_000.0, status="0", app="A4"),
                         point("http_reqs", 1, status="200")])
    assert rows["failed"].tolist() == [False, True, True, True]
    assert rows["status"].tolist() == [200, 503, 404, 0] and rows["app"].tolist() == ["A1", "A2", "A3", "A4"]
    assert rows["time"].iloc[0] == 1767323045.25
    assert request_rows([]).empty


def test_unfinished_requests_are_the_ones_sent_and_never_answered() -> None:
    pts = [point("requests_sent", 1, scenario="arrival", seq="0", app="A1"),
           point("requests_sent", 1, scenario="arrival", seq="1", app="A2"),
           point("requests_sent", 1, scenario="vus", seq="0", app="A1"),
           point("http_req_duration", 1500.0, scenario="arrival", seq="0", status="0"),  # timed out: finished
           point("http_req_duration", 2.0, scenario="arrival", seq="7", status="200")]  # no sent point: not counted
    assert unfinished_requests(pts) == [
        {"scenario": "arrival", "seq": "1", "app": "A2", "sent_at": 1767323045.25},
        {"scenario": "vus", "seq": "0", "app": "A1", "sent_at": 1767323045.25}]
    assert unfinished_requests([]) == []


def test_counter_totals_per_scenario() -> None:
    pts = [point("dropped_iterations", 2, scenario="arrival"), point("dropped_iterations", 1, scenario="arrival"),
           point("iterations", 1, scenario="vus")]
    assert counter_totals(pts, "dropped_iterations") == {"arrival": 3.0}


def test_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    path = tmp_path / "points.json"
    tail = PointTail(path)
    assert tail.read() == []  # k6 has not written yet
    a = json.dumps(point("ticks", 1))
    b = json.dumps(point("ticks", 2))
    path.write_text('{"type":"Metric","metric":"ticks","data":{}}\n' + a + "\n" + b[:20])
    assert [p["data"]["value"] for p in tail.read()] == [1]
    with open(path, "a") as fh:
        fh.write(b[20:] + "\n")
    assert [p["data"]["value"] for p in tail.read()] == [2]
    assert tail.read() == []


def test_run_k6_keeps_points_summary_and_exit_99(tmp_path: Path) -> None:
    script = tmp_path / "idle.js"
    script.write_text(IDLE_SCRIPT)
    seen: list[int] = []
    result = run_k6(script, workdir=tmp_path / "w", env={"DURATION": "1s"},
                    on_points=lambda pts, now: seen.append(len(pts)), poll_s=0.1)
    assert result.exit_code == 99 and result.threshold_failed
    assert result.thresholds == {"ticks: count>1000000": True}
    assert len([p for p in result.points() if p["metric"] == "ticks"]) >= 3
    assert sum(seen) == len(result.points())  # every point was shown to the caller exactly once, live
    assert result.stopped is None and not result.timed_out
    assert result.stop_latency_s is None and not result.killed  # it ran to its end


def test_a_stop_reason_ends_k6_early(tmp_path: Path) -> None:
    script = tmp_path / "idle.js"
    script.write_text(IDLE_SCRIPT)
    t0 = time.monotonic()
    result = run_k6(script, workdir=tmp_path / "w", env={"DURATION": "60s"},
                    on_points=lambda pts, now: "enough" if pts else None, poll_s=0.1)
    assert time.monotonic() - t0 < 15
    assert result.stopped == "enough" and result.exit_code == EXTERNAL_ABORT
    assert result.summary["metrics"]["ticks"]["count"] >= 1  # SIGINT let k6 write its summary
    assert result.stop_latency_s is not None and not result.killed  # it exited on SIGINT, within the grace


def test_an_exception_in_the_caller_leaves_no_k6_behind(tmp_path: Path) -> None:
    script = tmp_path / "idle.js"
    script.write_text(IDLE_SCRIPT)
    pids: list[int] = []

    def interrupt(points: list, now: float) -> None:
        pids.extend(k6_children())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_k6(script, workdir=tmp_path / "w", env={"DURATION": "60s"}, on_points=interrupt, poll_s=0.1)
    assert pids and not any(alive(pid) for pid in pids)


def k6_children() -> list[int]:
    """Live k6 processes whose parent is this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, rest = stat.read_text().rpartition(")")
        except OSError:
            continue
        if head.endswith("(k6") and int(rest.split()[1]) == os.getpid() and rest.split()[0] != "Z":
            found.append(int(stat.parent.name))
    return found
