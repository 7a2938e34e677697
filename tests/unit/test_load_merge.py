"""Execution segments: their k6 flags, and merging segment folders into one run's raw points."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phases.load.segments import (
    POINTS,
    RUN_META,
    SUMMARY,
    combined_exit,
    crossed_any,
    merge_segments,
    read_requests,
    record_results,
    segment_args,
)
from readiness.probe.k6run import EXTERNAL_ABORT, K6Result
from readiness.stats.latency import percentile_summary

ROOT = Path(__file__).resolve().parents[2]


def test_segment_flags_cover_the_whole_test() -> None:
    assert segment_args(0, 1) == ["--execution-segment", "0:1", "--execution-segment-sequence", "0,1",
                                  "--tag", "segment=0"]
    assert segment_args(1, 3)[:4] == ["--execution-segment", "1/3:2/3", "--execution-segment-sequence",
                                      "0,1/3,2/3,1"]
    assert segment_args(3, 4)[1] == "3/4:1"


@pytest.mark.parametrize(("index", "of", "message"), [
    (2, 2, "--index must be between 0 and 1 for --of 2, got 2"),
    (-1, 2, "--index must be between 0 and 1 for --of 2, got -1"),
    (0, 0, "--of must be a positive integer, got 0"),
])
def test_bad_segment_numbers_are_refused(index: int, of: int, message: str) -> None:
    with pytest.raises(ValueError) as err:
        segment_args(index, of)
    assert str(err.value) == message


def test_exit_codes_and_thresholds_combine() -> None:
    assert combined_exit([0, 0]) == 0
    assert combined_exit([0, 99]) == 99
    assert combined_exit([99, 107, 0]) == 107  # an abnormal exit outranks a failed threshold
    assert crossed_any([{"a: x": False, "b: y": True}, {"a: x": True, "b: y": False}]) == {"a: x": True, "b: y": True}


def point_line(ms: float, seq: int, segment: int, app: str = "A1") -> str:
    tags = {"app": app, "route": "r", "scenario": "arrival", "seq": str(seq), "status": "200",
            "expected_response": "true", "segment": str(segment)}
    return json.dumps({"type": "Point", "metric": "http_req_duration",
                       "data": {"time": f"2026-01-02T03:04:{5 + seq % 50:02d}.5Z", "value": ms, "tags": tags}})


def write_segment(folder: Path, index: int, of: int, latencies: list[float], *, digest: str = "d1",
                  crossed: bool = False, stop: str | None = None) -> Path:
    folder.mkdir(parents=True)
    lines = [point_line(ms, index + of * i, index) for i, ms in enumerate(latencies)]
    (folder / "points.json.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    (folder / "summary.json").write_text(json.dumps(
        {"metrics": {"http_req_duration": {"thresholds": {"p(95)<150": crossed}}}}))
    (folder / "k6.log").write_text(f"segment {index}\n")
    met = {"name": "error_rate", "reason": stop, "at": 0} if stop else None
    (folder / "segment.json").write_text(json.dumps({
        "index": index, "of": of, "params_digest": digest, "token": f"tok{index}", "host": f"m{index}",
        "started_at": f"2026-01-02T03:04:0{index}.000Z", "ended_at": f"2026-01-02T03:05:0{index}.000Z",
        "exit_code": 99 if crossed else 0, "stopped": stop, "stop": {"met": met},
        "planned_iterations": 200}))
    return folder


@pytest.fixture()
def run(tmp_path: Path) -> RunFolder:
    params_file = ROOT / "params" / "sandbox.yaml"
    return RunFolder.create(tmp_path / "outputs", load_params(params_file), params_file)


def test_merge_keeps_one_raw_distribution(tmp_path: Path, run: RunFolder) -> None:
    fast, slow = [float(x) for x in range(1, 101)], [float(x) for x in range(1000, 1100)]
    dirs = [write_segment(tmp_path / "s1", 1, 2, slow, crossed=True), write_segment(tmp_path / "s0", 0, 2, fast)]
    meta = merge_segments(dirs, run.root)
    rows = read_requests(run)
    assert len(rows) == 200 and sorted(rows["segment"].unique()) == ["0", "1"]
    assert sorted(rows["seq"].astype(int)) == list(range(200))  # the segments interleave one numbering
    union = percentile_summary(np.array(fast + slow), (0.95,))[0]
    merged = percentile_summary(rows["latency_ms"].to_numpy(), (0.95,))[0]
    assert merged == union and merged.estimate == 1089.0  # from the pooled points ...
    assert merged.estimate != pytest.approx((95.0 + 1094.0) / 2)  # ... never the mean of segment P95s
    assert (meta["source"], meta["segments"], meta["hosts"]) == ("distributed", 2, ["m0", "m1"])
    assert meta["started_at"] == "2026-01-02T03:04:00.000Z" and meta["ended_at"] == "2026-01-02T03:05:01.000Z"
    summary = json.loads(run.path(SUMMARY).read_text())
    assert summary["thresholds_crossed"] == {"http_req_duration: p(95)<150": True}
    assert summary["exit_code"] == 99 and [p["name"] for p in summary["parts"]] == ["segment-0", "segment-1"]
    assert json.loads(run.path(RUN_META).read_text())["stop"]["met"] is None
    assert run.path(POINTS).is_file()


def test_a_stopped_segment_carries_its_stop_condition(tmp_path: Path, run: RunFolder) -> None:
    dirs = [write_segment(tmp_path / "s0", 0, 2, [5.0] * 10),
            write_segment(tmp_path / "s1", 1, 2, [5.0] * 10, stop="error rate ≥ 1% sustained for 10 s")]
    meta = merge_segments(dirs, run.root)
    assert meta["stop"]["met"]["reason"] == "segment 1: error rate ≥ 1% sustained for 10 s"


def test_merge_refuses_incomplete_or_mixed_segments(tmp_path: Path, run: RunFolder) -> None:
    s0 = write_segment(tmp_path / "s0", 0, 3, [1.0])
    s1 = write_segment(tmp_path / "s1", 1, 3, [1.0])
    with pytest.raises(ValueError) as err:
        merge_segments([s0, s1], run.root)
    assert str(err.value) == "segments of 3 must be 0…2 exactly once, got [0, 1]"
    other = write_segment(tmp_path / "x2", 2, 3, [1.0], digest="d2")
    with pytest.raises(ValueError) as err:
        merge_segments([s0, s1, other], run.root)
    assert str(err.value) == ("segments come from different runs: of=[3], params digests ['d1', 'd2']; "
                              "merge segments of one command only")
    with pytest.raises(ValueError) as err:
        merge_segments([s0, s0, s1], run.root)
    assert str(err.value) == "segments of 3 must be 0…2 exactly once, got [0, 0, 1]"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        merge_segments([tmp_path / "empty"], run.root)
    assert str(err.value) == (f"{tmp_path / 'empty'} is not a load segment folder: missing points.json.gz, "
                              "summary.json, k6.log, segment.json")
    assert not run.path(POINTS).exists()  # nothing merged from a refused set


def test_requests_in_flight_at_a_stop_are_counted(run: RunFolder) -> None:
    """k6 writes no point for a request it abandoned on SIGINT; its ``requests_sent`` point names it."""
    def line(metric: str, seq: int, app: str) -> str:
        tags = {"app": app, "route": "r", "scenario": "arrival", "seq": str(seq), "status": "503",
                "expected_response": "false"}
        return json.dumps({"type": "Point", "metric": metric,
                           "data": {"time": f"2026-01-02T03:04:{5 + seq:02d}.5Z", "value": 1.0, "tags": tags}})

    lines = [line("requests_sent", i, "A1" if i % 2 else "A2") for i in range(5)]
    lines += [line("http_req_duration", i, "A2") for i in (0, 2)]
    stopped = K6Result(name="arrival", command=[], exit_code=EXTERNAL_ABORT, summary={}, elapsed_s=3.0, log="",
                       points_gz=gzip.compress(("\n".join(lines) + "\n").encode()), stopped="error rate",
                       stop_latency_s=0.2)
    record_results(run, [stopped], {"planned_iterations": 5})
    meta = json.loads(run.path(RUN_META).read_text())
    assert meta["in_flight_at_stop"] == {"requests": 3, "by_app": {"A1": 2, "A2": 1},
                                         "oldest_sent_at": 1767323046.5, "processes": ["arrival"]}
    part = json.loads(run.path(SUMMARY).read_text())["parts"][0]
    assert (part["stopped"], part["stop_latency_s"], part["killed"]) == ("error rate", 0.2, False)
    assert len(read_requests(run)) == 2  # the abandoned ones are in no distribution
