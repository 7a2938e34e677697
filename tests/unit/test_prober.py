"""The open-model prober against real loopback servers: schedule, modes, failures, schema."""

from __future__ import annotations

import asyncio
import gc
import io
import math
import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from readiness.core import aio
from readiness.probe.client import ENV_TAGS, LOOPBACK_HOSTS, ClientLimits, GuardedClient, PolicyRefused, SyntheticPolicy
from readiness.probe.prober import (
    SAMPLE_COLUMNS,
    ProbeSettings,
    ProbeTarget,
    RateRefused,
    probe_targets,
    run_probe,
    sample_frame,
)

IDENTITY = "test_student_e2e_01"


def factory(environment: str = "staging", limits: ClientLimits | None = None) -> Any:
    """A ``client_factory`` shaped like ``Phase.client``: one guarded client per call."""
    def make(keep_alive: bool) -> GuardedClient:
        synthetic = SyntheticPolicy(identities=frozenset({IDENTITY}), tags={"test_run": "true", "source": "qa"},
                                    env_tag=ENV_TAGS[environment])
        return GuardedClient(environment=environment, synthetic=synthetic,  # type: ignore[arg-type]
                             limits=limits or ClientLimits(),
                             keep_alive=keep_alive, allowed_hosts=LOOPBACK_HOSTS)
    return make


def fast(n: int, mode: str = "warm", qps: float = 20.0) -> ProbeSettings:
    return ProbeSettings(n=n, qps=qps, mode=mode, max_qps=qps)  # type: ignore[arg-type]


# --- the schedule -----------------------------------------------------------------------------

def test_a_stalled_request_delays_none_of_the_later_ones(loopback):
    target = ProbeTarget(app="A1", name="stall", method="GET", url=loopback.url("/stall?nth=3&delay=1.0"))
    df = run_probe([target], fast(10), factory())
    assert df.seq.tolist() == list(range(10)) and df.ok.all()
    np.testing.assert_allclose(np.diff(df.intended_at), 0.05, atol=1e-6)  # 1 / qps apart, exactly
    stalled_done = df.sent_at[2] + df.total_ms[2] / 1000.0
    assert df.latency_ms[2] >= 1000.0 and (df.latency_ms.drop(2) < 500.0).all()
    # Requests 4..10 left on schedule while request 3 was still held by the server.
    assert (df.send_lag_ms < 50.0).all()
    assert (df.sent_at[3:] < stalled_done).all()
    assert sum(r.at < stalled_done for r in loopback.requests) == 10
    assert (df.sent_at >= df.intended_at).all()
    np.testing.assert_allclose(df.send_lag_ms, (df.sent_at - df.intended_at) * 1000.0, atol=1e-3)


def test_targets_run_concurrently_staggered_within_one_interval(loopback):
    targets = [ProbeTarget(app="A1", name=f"t{i}", method="GET", url=loopback.url(f"/ok?t={i}")) for i in range(2)]
    df = run_probe(targets, fast(4, qps=10.0), factory(), label="both")
    assert df.groupby("endpoint").size().to_dict() == {"t0": 4, "t1": 4}
    t0, t1 = (df[df.endpoint == name].intended_at.to_numpy() for name in ("t0", "t1"))
    np.testing.assert_allclose(t1 - t0, 0.05, atol=1e-6)  # half of the 0.1 s interval
    assert (df.label == "both").all()


def test_cancelling_the_probe_cancels_outstanding_requests_promptly(loopback):
    target = ProbeTarget(app="A1", name="slow", method="GET", url=loopback.url("/slow?delay=5"))

    async def go() -> float:
        task = asyncio.create_task(probe_targets([target], fast(100), factory()))
        await asyncio.sleep(0.3)
        task.cancel()
        started = time.perf_counter()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Nothing of the probe is left running behind the caller's back.
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
        return time.perf_counter() - started

    assert aio.run(go()) < 1.0
    assert 3 <= len(loopback.requests) <= 8  # only what was due in 0.3 s at 20/s was ever sent


def test_cyclic_gc_is_held_off_while_requests_are_timed_and_restored_after(loopback):
    target = ProbeTarget(app="A1", name="ok", method="GET", url=loopback.url("/ok"))
    assert gc.isenabled()
    run_probe([target], fast(3), factory())
    assert [r.gc_enabled for r in loopback.requests] == [False, False, False] and gc.isenabled()
    gc.disable()
    try:
        run_probe([target], fast(1), factory())
        assert not gc.isenabled()  # left as the caller had it
    finally:
        gc.enable()


# --- settings and targets ---------------------------------------------------------------------

def test_rate_above_the_ceiling_is_refused():
    with pytest.raises(RateRefused) as err:
        ProbeSettings(n=200, qps=5, max_qps=2)
    assert str(err.value) == "probe rate 5 requests/s per endpoint is above http.max_qps (2)"
    assert isinstance(err.value, ValueError)
    assert ProbeSettings(n=200, qps=2).max_qps == 2.0  # at the ceiling is allowed


def test_settings_accept_numpy_numbers_and_store_plain_ones():
    settings = ProbeSettings(n=np.int64(200), qps=np.float32(1.5), max_qps=np.int64(2))
    assert (settings.n, settings.qps, settings.max_qps) == (200, 1.5, 2.0)
    assert (type(settings.n), type(settings.qps), type(settings.max_qps)) == (int, float, float)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 0}, "n must be a whole number of samples per target, at least 1, got 0"),
    ({"n": 2.5}, "n must be a whole number of samples per target, at least 1, got 2.5"),
    ({"n": 10, "qps": 0}, "qps must be a positive number of requests per second, got 0"),
    ({"n": 10, "qps": -1.0}, "qps must be a positive number of requests per second, got -1.0"),
    ({"n": 10, "qps": float("nan")}, "qps must be a positive number of requests per second, got nan"),
    ({"n": 10, "max_qps": 0}, "max_qps must be a positive number of requests per second, got 0"),
    ({"n": 10, "mode": "hot"}, "mode must be 'warm' or 'cold', got 'hot'"),
])
def test_bad_settings_are_refused_with_a_clear_message(kwargs, message):
    with pytest.raises(ValueError) as err:
        ProbeSettings(**kwargs)
    assert str(err.value) == message and not isinstance(err.value, RateRefused)


def test_bad_targets_are_refused_before_anything_is_sent(loopback):
    ok = ProbeTarget(app="A1", name="ok", method="GET", url=loopback.url("/ok"))
    with pytest.raises(ValueError) as err:
        run_probe([], fast(1), factory())
    assert str(err.value) == "no targets to probe"
    with pytest.raises(ValueError) as err:
        run_probe([ok, ok], fast(1), factory())
    assert str(err.value) == "targets must be unique per app and name; repeated: A1/ok"
    with pytest.raises(ValueError) as err:
        ProbeTarget(app="A1", name=" ", method="GET", url=loopback.url("/ok"))
    assert str(err.value) == "ProbeTarget.name must be a non-empty string, got ' '"
    write = ProbeTarget(app="A1", name="write", method="POST", url=loopback.url("/ok"), json_body={})
    with pytest.raises(PolicyRefused) as refused:
        run_probe([ok, write], fast(1), factory("prod"))
    assert str(refused.value) == (f"refused POST {loopback.url('/ok')}: environment 'prod' is read-only "
                                  "(GET, HEAD, OPTIONS); a write needs a known synthetic identity")
    assert loopback.requests == []


# --- warm and cold ----------------------------------------------------------------------------

def test_warm_reuses_one_connection_and_only_the_first_request_connects(loopback):
    target = ProbeTarget(app="A1", name="ok", method="GET", url=loopback.url("/ok"))
    df = run_probe([target], fast(5, "warm"), factory())
    assert df.ok.all() and (df["mode"] == "warm").all()
    assert loopback.connections == 1 and {r.connection for r in loopback.requests} == {1}
    assert df.connect_ms.notna().tolist() == [True, False, False, False, False]
    assert (df.server_timing_ms == 12.3).all()


def test_cold_opens_a_connection_for_every_request(loopback):
    target = ProbeTarget(app="A1", name="ok", method="GET", url=loopback.url("/ok"))
    df = run_probe([target], fast(5, "cold"), factory())
    assert df.ok.all() and (df["mode"] == "cold").all()
    assert loopback.connections == 5 and [r.connection for r in loopback.requests] == [1, 2, 3, 4, 5]
    assert df.connect_ms.notna().all() and df.tls_ms.isna().all()


def test_each_request_carries_its_own_idempotency_key_and_trace_id(loopback):
    target = ProbeTarget(app="A5", name="checkout", method="POST", url=loopback.url("/ok"),
                         json_body={"price_id": "price_micro_qa"}, headers={"Authorization": "Bearer k"},
                         idempotency=True, synthetic_identity=IDENTITY)
    df = run_probe([target], fast(5), factory())
    seen = loopback.requests
    keys = [r.headers.get("x-idempotency-key") for r in seen]
    assert len(seen) == 5 and all(keys) and len(set(keys)) == 5
    assert sorted(r.headers["x-trace-id"] for r in seen) == sorted(df.trace_id)
    assert {r.headers["authorization"] for r in seen} == {"Bearer k"}
    assert {r.headers["x-synthetic-identity"] for r in seen} == {IDENTITY}
    assert seen[0].json() == {"price_id": "price_micro_qa", "tags": {
        "test_run": "true", "source": "qa", "env": "staging", "synthetic_identity": IDENTITY}}
    assert df.method.unique().tolist() == ["POST"] and df.trace_id.is_unique


def test_without_idempotency_no_key_is_sent(loopback):
    target = ProbeTarget(app="A1", name="ok", method="GET", url=loopback.url("/ok"))
    run_probe([target], fast(2), factory())
    assert [r.headers.get("x-idempotency-key") for r in loopback.requests] == [None, None]


# --- failures are rows ------------------------------------------------------------------------

def test_timeouts_and_errors_are_rows_with_infinite_latency(loopback, dead_url):
    targets = [ProbeTarget(app="A1", name="slow", method="GET", url=loopback.url("/slow?delay=3")),
               ProbeTarget(app="A2", name="dead", method="GET", url=dead_url),
               ProbeTarget(app="A3", name="503", method="GET", url=loopback.url("/status?code=503"))]
    df = run_probe(targets, fast(2), factory(limits=ClientLimits(read_timeout_s=0.2, total_timeout_s=1.0)))
    by = {name: rows for name, rows in df.groupby("endpoint")}
    slow, dead, unavailable = by["slow"], by["dead"], by["503"]
    assert slow.error.tolist() == ["timeout"] * 2 and slow.status.isna().all()
    assert dead.error.tolist() == ["connect_error"] * 2 and dead.status.isna().all()
    for rows in (slow, dead):
        assert not rows.ok.any() and np.isinf(rows.latency_ms).all() and rows.total_ms.notna().all()
    # An error status is an answer: its latency is finite, only ``ok`` is false.
    assert unavailable.status.tolist() == [503, 503] and unavailable.error.isna().all()
    assert not unavailable.ok.any() and (unavailable.latency_ms == unavailable.total_ms).all()


# --- schema -----------------------------------------------------------------------------------

def _dtypes(df: pd.DataFrame) -> dict[str, str]:
    return {name: str(dtype) for name, dtype in df.dtypes.items()}


def test_columns_and_dtypes_are_the_documented_schema(loopback, dead_url):
    targets = [ProbeTarget(app="A1", name="ok", method="GET", url=loopback.url("/ok")),
               ProbeTarget(app="A2", name="dead", method="GET", url=dead_url)]
    df = run_probe(targets, fast(2), factory(), label="profile")
    expected = {name: dtype for name, (dtype, _) in SAMPLE_COLUMNS.items()}
    assert list(df.columns) == list(SAMPLE_COLUMNS) and _dtypes(df) == expected
    assert _dtypes(sample_frame([])) == expected
    assert all(meaning for _, meaning in SAMPLE_COLUMNS.values())
    ok = df[df.endpoint == "ok"]
    assert (ok.latency_ms == ok.total_ms).all() and ok.status.tolist() == [200, 200]
    assert ok.bytes.tolist() == [len(b'{"ok": true}')] * 2
    now = time.time()
    assert ((now - 60 < df.intended_at) & (df.intended_at <= now)).all()


def test_parquet_round_trip_keeps_dtypes_missing_values_and_infinity(loopback, dead_url):
    targets = [ProbeTarget(app="A1", name="ok", method="GET", url=loopback.url("/ok")),
               ProbeTarget(app="A2", name="dead", method="GET", url=dead_url)]
    df = run_probe(targets, fast(2), factory())
    buffer = io.BytesIO()
    df.to_parquet(buffer, index=False)
    back = pd.read_parquet(io.BytesIO(buffer.getvalue()))
    pd.testing.assert_frame_equal(back, df)
    dead = back[back.endpoint == "dead"]
    assert dead.status.isna().all() and dead.latency_ms.tolist() == [math.inf, math.inf]
    assert dead.wait_ms.isna().all() and dead.error.tolist() == ["connect_error"] * 2
