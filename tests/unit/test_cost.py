"""The cost snapshot's pure parts: growth, CPU per request, deltas against a baseline snapshot."""

from __future__ import annotations

import os

import pytest

from readiness.phases.security_ops.cost import Delta, deltas, frame, growth_pct, per_request, process_usage

BASELINE = {
    "apps": {"A1": {"cpu_s": 2.0, "rss_mb": 100.0, "requests": 1000, "cpu_ms_per_request": 2.0},
             "A2": {"cpu_s": 1.0, "rss_mb": 0.0, "requests": None, "cpu_ms_per_request": None}},
    "queues": [{"key": "A3.queue_depth", "depth": 4}],
}
CURRENT = {
    "apps": {"A1": {"cpu_s": 3.0, "rss_mb": 130.0, "requests": 1000, "cpu_ms_per_request": 3.0},
             "A2": {"cpu_s": 1.5, "rss_mb": 50.0, "requests": 10, "cpu_ms_per_request": 150.0},
             "A9": {"skipped": "not a local process", "requests": 7, "cpu_ms_per_request": None}},
    "queues": [{"key": "A3.queue_depth", "depth": 9}, {"key": "A4.backlog", "depth": 1}],
}


def test_growth_is_relative_to_the_baseline_and_undefined_without_one() -> None:
    assert growth_pct(100, 130) == pytest.approx(30)
    assert growth_pct(100, 80) == pytest.approx(-20)
    assert growth_pct(None, 5) is None and growth_pct(5, None) is None
    assert growth_pct(0, 5) is None  # no finite growth from nothing


def test_cpu_per_request_needs_requests() -> None:
    assert per_request(1.5, 1000) == pytest.approx(1.5)
    assert per_request(1.5, 0) is None and per_request(1.5, None) is None and per_request(None, 10) is None


def test_deltas_pair_each_metric_with_the_baseline() -> None:
    rows = {(d.subject, d.metric): d for d in deltas(BASELINE, CURRENT)}
    a1 = rows[("A1", "rss_mb")]
    assert (a1.baseline, a1.current, a1.delta, a1.pct) == (100.0, 130.0, 30.0, pytest.approx(30))
    assert rows[("A1", "cpu_ms_per_request")].pct == pytest.approx(50)
    assert rows[("A2", "rss_mb")].pct is None and rows[("A2", "rss_mb")].delta == 50.0  # baseline 0
    assert rows[("A2", "requests")].delta is None  # the baseline had no request count
    assert rows[("A9", "cpu_s")].baseline is None and rows[("A9", "cpu_s")].current is None
    queue = rows[("A3.queue_depth", "queue_depth")]
    assert (queue.baseline, queue.current, queue.delta) == (4, 9, 5)
    assert rows[("A4.backlog", "queue_depth")].baseline is None
    assert len(rows) == 3 * 4 + 2


def test_no_baseline_leaves_every_delta_empty() -> None:
    rows = deltas(None, CURRENT)
    assert rows and all(d.baseline is None and d.delta is None and d.pct is None for d in rows)


def test_frame_has_one_row_per_delta() -> None:
    table = frame([Delta("A1", "rss_mb", 100.0, 110.0), Delta("A1", "cpu_s", None, 1.0)])
    assert list(table.columns) == ["subject", "metric", "baseline", "current", "delta", "delta_pct"]
    assert table.loc[0, "delta_pct"] == pytest.approx(10)
    assert table["delta"].isna().tolist() == [False, True]


def test_process_usage_reads_a_live_process() -> None:
    usage = process_usage(os.getpid())
    assert usage["pid"] == os.getpid() and usage["cpu_s"] > 0 and usage["rss_mb"] > 1 and usage["threads"] >= 1
