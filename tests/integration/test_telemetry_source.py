"""Method B's telemetry sources: the A8 HTTP API (paged) and a JSONL export."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path

import pytest

from readiness.core import aio
from readiness.probe.client import GuardedClient, SyntheticPolicy
from readiness.probe.telemetry_store import A8HttpSource, JsonlSource, TelemetryUnavailable, iso

pytestmark = pytest.mark.integration
POLICY = SyntheticPolicy(identities=frozenset({"test_student_e2e_01"}),
                         tags={"test_run": "true", "source": "qa", "namespace": "simulated_audit"},
                         env_tag="staging")


def _client() -> GuardedClient:
    return GuardedClient(environment="staging", synthetic=POLICY, allowed_hosts=frozenset({"127.0.0.1"}))


def _post_and_read(sandbox, *, count: int, step_ms: float, page_size: int) -> tuple[int, list[dict]]:
    a8 = sandbox.apps["A8"]
    app_id = f"paging-{uuid.uuid4().hex[:8]}"
    key = os.environ["A8_TELEMETRY_KEY"]

    async def go() -> tuple[int, list[dict]]:
        async with _client() as client:
            t0 = dt.datetime.now(dt.UTC)
            events = [{"event_type": "qa_paging", "timestamp": iso(t0 + dt.timedelta(milliseconds=i * step_ms)),
                       "app_id": app_id, "trace_id": uuid.uuid4().hex, "idempotency_key": f"{app_id}-{i}"}
                      for i in range(count)]
            posted = await client.post(f"{a8}/api/telemetry/events", json={"events": events}, idempotency_key=True,
                                       headers={"Authorization": f"Bearer {key}"}, keep_body=True)
            source = A8HttpSource(a8, client, page_size=page_size)
            rows = await source.events(since=t0 - dt.timedelta(seconds=1),
                                       until=t0 + dt.timedelta(milliseconds=count * step_ms + 1000), app_id=app_id)
            return posted.json()["accepted"], rows

    return aio.run(go())


def test_a8_source_pages_past_the_store_limit(sandbox) -> None:
    accepted, rows = _post_and_read(sandbox, count=230, step_ms=3, page_size=50)
    assert accepted == 230
    assert len(rows) == 230 and len({r["idempotency_key"] for r in rows}) == 230
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)


def test_a8_source_refuses_to_truncate_silently(sandbox) -> None:
    with pytest.raises(TelemetryUnavailable, match=r"more than 50 events within one millisecond"):
        _post_and_read(sandbox, count=120, step_ms=0, page_size=50)


def test_a8_source_reports_the_store_error(sandbox) -> None:
    async def go() -> None:
        async with _client() as client:
            source = A8HttpSource(sandbox.apps["A8"], client, page_size=5000)  # above the store's cap
            now = dt.datetime.now(dt.UTC)
            await source.events(since=now - dt.timedelta(seconds=5), until=now)

    with pytest.raises(TelemetryUnavailable, match=r"GET /api/telemetry/events → 422: limit must be"):
        aio.run(go())


def test_jsonl_source_filters_by_window_and_app(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [{"timestamp": iso(t0 + dt.timedelta(seconds=i)), "app_id": "A1" if i % 2 else "A2",
             "event_type": "http_request", "trace_id": str(i)} for i in range(10)]
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    source = JsonlSource(path)
    got = aio.run(source.events(since=t0 + dt.timedelta(seconds=2), until=t0 + dt.timedelta(seconds=6), app_id="A1"))
    assert [r["trace_id"] for r in got] == ["3", "5"]
    path.write_text('{"timestamp": "x"}\nnot json\n')
    with pytest.raises(TelemetryUnavailable, match=r"export.jsonl:2: not a JSON object"):
        aio.run(source.events(since=t0, until=t0))
