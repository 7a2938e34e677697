"""A3's orchestration loop without HTTP: retries, breaker, telemetry, run bookkeeping, shutdown;
and A4's render knob and request validation.

The upstream is a scripted stand-in, the emitter a list, the database a temporary SQLite
file: what is tested is the loop's own logic, with tenacity and pybreaker for real.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sandbox.apps.a3_loop import Orchestrator, UpstreamError, UpstreamRejected
from sandbox.apps.a3_runs import MAX_RUNS, RUNS_SCHEMA, RunStore, iso_us
from sandbox.apps.a4_documents import DEFAULT_FLAKINESS, RenderFlakiness, _render_request
from sandbox.common.knobs import KnobError
from sandbox.common.sqlite import META_SCHEMA, Database

OK = {"rendered": True, "template": "orchestration_cycle"}


class Recorder:
    """Stands in for the app's emitter: keeps every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.events if e["event_type"] == event_type]


class ScriptedUpstream:
    """Answers render calls from a script (an exception is raised, anything else returned), then ``OK``."""

    def __init__(self, *script: Any, healthy: bool = True) -> None:
        self.script = list(script)
        self.calls = 0
        self.up = healthy
        self.closed = False

    def render(self, template: str, run_id: str | None, trace_id: str) -> dict[str, Any]:
        self.calls += 1
        step = self.script.pop(0) if self.script else OK
        if isinstance(step, BaseException):
            raise step
        return dict(step)

    def healthy(self) -> bool:
        return self.up

    def close(self) -> None:
        self.closed = True


def down() -> UpstreamError:
    return UpstreamError("A4 /api/render answered 503", 503)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "a3.sqlite", META_SCHEMA + RUNS_SCHEMA)
    yield database
    database.close()


def orchestrator(db: Database, upstream: ScriptedUpstream, interval_s: float = 0.5) -> tuple[Orchestrator, Recorder]:
    recorder = Recorder()
    ctx: Any = SimpleNamespace(config=SimpleNamespace(seed="unit", app_id="A3"), db=db, emitter=recorder)
    return Orchestrator(ctx, upstream, interval_s=interval_s), recorder  # type: ignore[arg-type]


def test_iso_us_has_microseconds_and_utc() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", iso_us())


def test_a_clean_cycle_publishes_and_reports_under_one_trace(db: Database) -> None:
    orch, rec = orchestrator(db, ScriptedUpstream())
    assert orch.cycle() == "ok"
    kinds = [e["event_type"] for e in rec.events]
    assert kinds == ["upstream_attempt", "run_progress", "page_published", "cta_emitted", "run_progress",
                     "orchestration_cycle_complete"]
    assert len({e["trace_id"] for e in rec.events}) == 1 and len({e["run_id"] for e in rec.events}) == 1
    assert [e["progress"] for e in rec.of("run_progress")] == [0.5, 1.0]
    done = rec.of("orchestration_cycle_complete")[0]
    assert (done["outcome"], done["attempts"], done["status"]) == ("ok", 1, 200)
    attempt = rec.of("upstream_attempt")[0]
    assert (attempt["attempt"], attempt["outcome"], attempt["upstream_status"]) == (1, "ok", 200)
    assert rec.of("page_published")[0]["page_id"] == rec.of("cta_emitted")[0]["page_id"]
    assert orch.runs.summary()["counts"] == {"running": 0, "completed": 1, "failed": 0, "shed": 0}


def test_failures_are_retried_with_exponential_jittered_waits(db: Database) -> None:
    upstream = ScriptedUpstream(down(), down(), down())
    orch, rec = orchestrator(db, upstream)
    assert orch.cycle() == "ok" and upstream.calls == 4
    retries = rec.of("upstream_retry")
    assert [r["attempt"] for r in retries] == [1, 2, 3]
    for r in retries:
        floor = 0.05 * 2 ** (r["attempt"] - 1)
        assert floor <= r["wait_s"] <= floor + 0.05
    starts = [dt.datetime.fromisoformat(a["started_at"]).timestamp() for a in rec.of("upstream_attempt")]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(g >= r["wait_s"] for g, r in zip(gaps, retries, strict=True))  # the waits really happened
    assert [a["outcome"] for a in rec.of("upstream_attempt")] == ["error", "error", "error", "ok"]
    assert rec.of("orchestration_cycle_complete")[0]["attempts"] == 4


def test_a_run_fails_after_four_attempts(db: Database) -> None:
    orch, rec = orchestrator(db, ScriptedUpstream(*(down() for _ in range(4))))
    assert orch.cycle() == "failed"
    assert len(rec.of("upstream_attempt")) == 4 and len(rec.of("upstream_retry")) == 3
    done = rec.of("orchestration_cycle_complete")[0]
    assert (done["outcome"], done["attempts"], done["status"]) == ("failed", 4, 502)
    assert orch.snapshot()["cycles"] == {"ok": 0, "failed": 1, "shed": 0}


def test_a_rejected_request_is_not_retried_nor_held_against_the_upstream(db: Database) -> None:
    orch, rec = orchestrator(db, ScriptedUpstream(UpstreamRejected("A4 /api/render answered 422", 422)))
    assert orch.cycle() == "failed"
    assert len(rec.of("upstream_attempt")) == 1 and rec.of("upstream_retry") == []
    assert rec.of("upstream_attempt")[0]["upstream_status"] == 422 and orch.breaker.fail_counter == 0


def test_the_breaker_opens_sheds_without_retry_and_heals(db: Database) -> None:
    orch, rec = orchestrator(db, ScriptedUpstream(*(down() for _ in range(5))))
    orch.breaker.reset_timeout = 0.2  # the production 2 s, shortened for the test
    assert orch.cycle() == "failed"  # four failures
    second = orch.cycle()  # the fifth failure trips the breaker; the retry is then refused
    assert second == "shed" and orch.state() == "open"
    opened = rec.of("breaker_transition")[0]
    assert (opened["from_state"], opened["to_state"], opened["breaker"]) == ("closed", "open", "a3_upstream")
    assert opened["trigger_run_id"] == rec.of("orchestration_cycle_complete")[1]["run_id"]
    assert opened["route"] == "/orchestration/breaker" and re.fullmatch(r".*\.\d{6}Z", opened["at"])
    before = len(rec.of("upstream_attempt"))
    assert orch.cycle() == "shed"
    shed = rec.of("upstream_attempt")[before:]
    assert [(a["attempt"], a["outcome"], a["upstream_status"]) for a in shed] == [(1, "shed", None)]
    time.sleep(0.25)
    assert orch.cycle() == "ok" and orch.state() == "closed"
    steps = [(t["from_state"], t["to_state"]) for t in orch.snapshot()["transitions"]]
    assert steps == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert [(e["from_state"], e["to_state"]) for e in rec.of("breaker_transition")] == steps
    assert orch.snapshot()["cycles"] == {"ok": 1, "failed": 1, "shed": 2}


def test_runs_are_kept_bounded(db: Database) -> None:
    store = RunStore(db)
    for i in range(MAX_RUNS + 50):
        store.begin(f"orch-{i:04d}", f"t{i}")
        store.finish(f"orch-{i:04d}", "completed", "ok", 1)
    assert store.count() == MAX_RUNS
    summary = store.summary(latest=2)
    assert [r["id"] for r in summary["latest"]] == [f"orch-{MAX_RUNS + 49:04d}", f"orch-{MAX_RUNS + 48:04d}"]
    assert db.scalar("SELECT MIN(id) FROM orchestration_runs") == "orch-0050"


def test_runs_left_running_by_a_dead_process_are_marked_interrupted(db: Database) -> None:
    store = RunStore(db)
    store.begin("orch-left", "t")
    store.interrupt_leftovers()
    row = db.query("SELECT state, outcome FROM orchestration_runs WHERE id = 'orch-left'")[0]
    assert (row["state"], row["outcome"]) == ("failed", "interrupted")


def test_the_loop_survives_a_bug_and_stops_at_once(db: Database) -> None:
    upstream = ScriptedUpstream(RuntimeError("a bug"))
    orch, rec = orchestrator(db, upstream, interval_s=0.05)
    orch.start()
    assert _eventually(lambda: orch.snapshot()["loop"]["loop_errors"] == 1)
    assert _eventually(lambda: orch.snapshot()["cycles"]["ok"] >= 2)  # still cycling after the bug
    assert orch.snapshot()["loop"]["phase"] == "running"
    assert db.scalar("SELECT COUNT(*) FROM orchestration_runs WHERE state = 'failed' AND outcome = 'error'") == 1
    started = time.perf_counter()
    orch.close()
    assert time.perf_counter() - started < 0.5 and upstream.closed
    assert orch.snapshot()["loop"]["phase"] == "stopped"


def test_the_loop_waits_for_a_healthy_upstream(db: Database) -> None:
    upstream = ScriptedUpstream(healthy=False)
    orch, _ = orchestrator(db, upstream, interval_s=0.02)
    orch.start()
    try:
        time.sleep(0.15)
        assert upstream.calls == 0 and orch.snapshot()["loop"]["phase"] == "waiting_for_upstream"
        upstream.up = True
        assert _eventually(lambda: upstream.calls > 0)
    finally:
        orch.close()


def test_without_an_upstream_the_loop_stays_off(db: Database) -> None:
    orch, _ = orchestrator(db, None)  # type: ignore[arg-type]
    orch.start()
    assert orch.snapshot()["loop"]["phase"] == "disabled"
    with pytest.raises(UpstreamError, match=r"^content upstream A4 is not part of this sandbox$"):
        orch.guarded_render("page_preview", None, "t")
    orch.close()


def _eventually(check: Any, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return bool(check())


# --- A4's render knob and request ------------------------------------------------------


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.2", None, float("nan")])
def test_render_flakiness_refuses_bad_values(value: Any) -> None:
    with pytest.raises(KnobError, match=r"^render_flakiness must be a number between 0 and 1$") as err:
        RenderFlakiness(random.Random(1)).validate(value)
    assert err.value.field == "render_flakiness"


def test_render_flakiness_draws_are_seeded_and_reset_restores_the_default() -> None:
    a, b = RenderFlakiness(random.Random("s:A4:render")), RenderFlakiness(random.Random("s:A4:render"))
    assert a.snapshot() == DEFAULT_FLAKINESS == 0.2
    draws_a, draws_b = [a.fails() for _ in range(200)], [b.fails() for _ in range(200)]
    assert draws_a == draws_b and 20 <= sum(draws_a) <= 60
    a.apply(a.validate(0))
    assert not any(a.fails() for _ in range(100))
    a.apply(1)
    assert all(a.fails() for _ in range(100))
    a.reset()
    assert a.snapshot() == 0.2


@pytest.mark.parametrize(("body", "message"), [
    ([], "body must be a JSON object"),
    ({"template": "poster"}, "template must be one of orchestration_cycle, page_preview"),
    ({"template": "page_preview", "colour": "red"}, "unexpected field: colour"),
    ({"template": "page_preview", "run_id": ""}, "run_id must be null or a non-empty string of at most 128 characters"),
    ({"template": "page_preview", "run_id": "x" * 129},
     "run_id must be null or a non-empty string of at most 128 characters"),
])
def test_render_request_validation(body: Any, message: str) -> None:
    assert _render_request(body) == message


def test_render_request_accepts_a_template_and_a_run() -> None:
    assert _render_request({"template": "orchestration_cycle", "run_id": "orch-1"}) == ("orchestration_cycle", "orch-1")
    assert _render_request({"template": "page_preview"}) == ("page_preview", None)
