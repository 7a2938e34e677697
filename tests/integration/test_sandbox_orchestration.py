"""A3's orchestration loop over real HTTP: its signals in A8, retries with growing waits,
and the circuit breaker opening under an injected A4 outage and healing by itself.

The sandbox here is A3, its content upstream A4 and the telemetry store A8 on ports
29001–29003 (this module's own range, 29001–29008), started by ``launcher.up`` in a
private state folder: the tests make A4 flaky and force it down on purpose. After each
test A4's faults are reset (``render_flakiness`` back to its default 0.2), and a test
that needs a closed breaker waits for one first, so tests do not depend on their order.
"""

from __future__ import annotations

import datetime as dt
import secrets
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sandbox import launcher

pytestmark = pytest.mark.integration

PORTS = {"A3": 29001, "A4": 29002, "A8": 29003}
SIGNALS = ("run_progress", "page_published", "cta_emitted", "orchestration_cycle_complete")
FORCED_OUTAGE_S = 5.0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, start_apps) -> Iterator[launcher.SandboxState]:
    apps = [launcher.AppSpec(app_id, port) for app_id, port in PORTS.items()]
    with start_apps(apps, tmp_path_factory.mktemp("orchestration-sandbox"),
                      env={"A8_TELEMETRY_KEY": "orch-" + secrets.token_urlsafe(12)}) as state:
        yield state


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def url(sandbox: launcher.SandboxState) -> Callable[[str, str], str]:
    return lambda app_id, path: f"{sandbox.apps[app_id]}{path}"


@pytest.fixture
def admin(sandbox: launcher.SandboxState) -> dict[str, str]:
    return {"Authorization": f"Bearer {sandbox.admin_token}"}


@pytest.fixture(autouse=True)
def reset_a4(http: httpx.Client, url: Callable[[str, str], str], admin: dict[str, str]) -> Iterator[None]:
    yield
    assert http.delete(url("A4", "/admin/faults"), headers=admin).status_code == 200


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def epoch(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def events(http: httpx.Client, url: Callable[[str, str], str], event_type: str, since: str) -> list[dict[str, Any]]:
    r = http.get(url("A8", "/api/telemetry/events"),
                 params={"app_id": "A3", "event_type": event_type, "since": since, "limit": 1000})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


def wait_until(check: Callable[[], Any], timeout_s: float, poll_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy or the time is up (bounded); its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(poll_s)


def set_flakiness(http: httpx.Client, url: Callable, admin: dict, rate: float) -> None:
    r = http.put(url("A4", "/admin/faults"), headers=admin, json={"render_flakiness": rate})
    assert r.status_code == 200 and r.json()["render_flakiness"] == rate


def breaker(http: httpx.Client, url: Callable, admin: dict) -> dict[str, Any]:
    r = http.get(url("A3", "/admin/breaker"), headers=admin)
    assert r.status_code == 200, r.text
    snapshot: dict[str, Any] = r.json()
    return snapshot


def closed_and_cycling(http: httpx.Client, url: Callable, admin: dict) -> None:
    """Flakiness 0, breaker closed and the loop completing cycles: the calm before a test."""
    set_flakiness(http, url, admin, 0.0)
    before = breaker(http, url, admin)["cycles"]["ok"]
    assert wait_until(lambda: breaker(http, url, admin)["state"] == "closed", 6), "breaker did not close"
    assert wait_until(lambda: breaker(http, url, admin)["cycles"]["ok"] > before, 3), "the loop is not cycling"


def by_run(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        runs[row["run_id"]].append(row)
    return {run: sorted(attempts, key=lambda a: a["attempt"]) for run, attempts in runs.items()}


def test_loop_signals_reach_a8(http: httpx.Client, url: Callable) -> None:
    since = now_iso()
    got = wait_until(lambda: all(events(http, url, t, since) for t in SIGNALS), 5)
    assert got, {t: len(events(http, url, t, since)) for t in SIGNALS}
    done = [e for e in events(http, url, "orchestration_cycle_complete", since) if e["outcome"] == "ok"]
    assert done, "no cycle completed ok"
    run = done[0]
    assert run["run_id"].startswith("orch-") and run["route"] == "/orchestration/cycle" and run["attempts"] >= 1
    same_trace = http.get(url("A8", "/api/telemetry/events"), params={"trace_id": run["trace_id"]}).json()["events"]
    kinds = sorted(e["event_type"] for e in same_trace if e["app_id"] == "A3")
    assert kinds.count("run_progress") == 2 and {"page_published", "cta_emitted"} <= set(kinds)
    assert all(e["run_id"] == run["run_id"] for e in same_trace if e["app_id"] == "A3")
    assert sorted(e["progress"] for e in same_trace if e["event_type"] == "run_progress") == [0.5, 1.0]
    cta = next(e for e in same_trace if e["event_type"] == "cta_emitted")
    assert cta["arm_id"] in ("signup_hero", "pricing_banner", "provider_invite")
    def a4_calls() -> list[dict[str, Any]]:  # A4's records of the run's upstream calls, under the run's trace
        found = http.get(url("A8", "/api/telemetry/events"), params={"trace_id": run["trace_id"], "app_id": "A4"})
        return [e for e in found.json()["events"] if e["event_type"] == "http_request"]

    joined = wait_until(lambda: len(a4_calls()) >= run["attempts"] and a4_calls(), 3)
    assert joined and len(joined) == run["attempts"], joined
    assert {e["route"] for e in joined} == {"/api/render"} and joined[-1]["status"] == 200


def test_runs_status_reports_the_loop_and_keeps_the_seeded_runs(http: httpx.Client, url: Callable) -> None:
    status = http.get(url("A3", "/api/runs/status")).json()
    assert status["counts"] == {"queued": 1, "running": 1, "completed": 1, "failed": 0}
    orchestration = status["orchestration"]
    assert orchestration["max_kept"] == 200 and 0 < orchestration["kept"] <= 200
    assert orchestration["counts"]["completed"] >= 1 and orchestration["latest"][0]["id"].startswith("orch-")


def test_no_retries_without_flakiness(http: httpx.Client, url: Callable, admin: dict) -> None:
    closed_and_cycling(http, url, admin)
    time.sleep(0.6)  # a run that began before the knob changed has finished its retries by now
    since = now_iso()
    time.sleep(2.5)
    attempts = events(http, url, "upstream_attempt", since)
    assert len(by_run(attempts)) >= 3
    assert {(a["attempt"], a["outcome"], a["upstream_status"]) for a in attempts} == {(1, "ok", 200)}
    assert events(http, url, "upstream_retry", since) == []
    assert {(c["outcome"], c["attempts"]) for c in events(http, url, "orchestration_cycle_complete", since)} \
        == {("ok", 1)}


def test_flaky_upstream_is_retried_with_growing_randomized_waits(http: httpx.Client, url: Callable,
                                                                 admin: dict) -> None:
    closed_and_cycling(http, url, admin)
    set_flakiness(http, url, admin, 0.5)
    since = now_iso()

    def long_runs() -> dict[str, list[dict[str, Any]]]:
        runs = by_run(events(http, url, "upstream_attempt", since))
        return {r: a for r, a in runs.items() if len(a) >= 3 and all(x["outcome"] == "error" for x in a[:-1])}

    runs = wait_until(lambda: len(long_runs()) >= 2 and long_runs(), 20, poll_s=0.5)
    assert runs, "fewer than two runs needed three attempts in 20 s at flakiness 0.5"
    retries = {(e["run_id"], e["attempt"]): e for e in events(http, url, "upstream_retry", since)}
    gaps_by_attempt: dict[int, list[float]] = defaultdict(list)
    for run_id, attempts in runs.items():
        assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
        gaps = []
        for before, after in zip(attempts, attempts[1:], strict=False):
            wait_s = retries[(run_id, before["attempt"])]["wait_s"]
            floor = 0.05 * 2 ** (before["attempt"] - 1)
            assert floor <= wait_s <= floor + 0.05 + 1e-9, (run_id, before["attempt"], wait_s)
            gap = epoch(after["started_at"]) - epoch(before["started_at"])
            spent = before["elapsed_ms"] / 1000 + wait_s
            assert spent - 0.002 <= gap <= spent + 0.1, (run_id, before["attempt"], gap, spent)  # a real wait
            gaps.append(gap)
            gaps_by_attempt[before["attempt"]].append(gap)
        assert all(b > a - 0.01 for a, b in zip(gaps, gaps[1:], strict=False)), (run_id, gaps)
        if len(gaps) == 3:
            assert gaps[2] > gaps[0] + 0.05, (run_id, gaps)
    assert statistics.mean(gaps_by_attempt[2]) > statistics.mean(gaps_by_attempt[1])  # waits 0.10-0.15 vs 0.05-0.10
    first_waits = [e["wait_s"] for e in retries.values() if e["attempt"] == 1]
    assert len(set(first_waits)) == len(first_waits) >= 2  # jittered: no two runs wait alike


def test_preview_and_render_route(http: httpx.Client, url: Callable, admin: dict) -> None:
    closed_and_cycling(http, url, admin)
    ok = http.get(url("A3", "/api/pages/preview"))
    assert ok.status_code == 200 and ok.headers["x-breaker-state"] == "closed"
    assert ok.json()["breaker"] == "closed" and ok.json()["preview"]["rendered"] is True
    set_flakiness(http, url, admin, 1.0)
    failed = http.get(url("A3", "/api/pages/preview"))  # four failed attempts (or the breaker opens on the way)
    state = failed.headers["x-breaker-state"]
    if failed.status_code == 503:
        assert (failed.json(), state) == ({"shed": True, "breaker": "open"}, "open")
    else:
        assert (failed.status_code, failed.json()) == (502, {"error": "A4 /api/render answered 503", "breaker": state})
    busy = http.post(url("A4", "/api/render"), json={"template": "page_preview", "run_id": None})
    assert (busy.status_code, busy.json()) == (503, {"error": "renderer busy, try again (fault knob render_flakiness)"})
    bad = http.post(url("A4", "/api/render"), json={"template": "poster"})
    assert (bad.status_code, bad.json()) == (422, {"error": "template must be one of orchestration_cycle, page_preview"})
    refused = http.put(url("A4", "/admin/faults"), headers=admin, json={"render_flakiness": 1.5})
    assert (refused.status_code, refused.json()) == (
        422, {"error": "render_flakiness must be a number between 0 and 1", "field": "render_flakiness"})
    assert http.delete(url("A4", "/admin/faults"), headers=admin).json()["render_flakiness"] == 0.2


def test_forced_outage_opens_the_breaker_which_heals_by_itself(http: httpx.Client, url: Callable,
                                                               admin: dict) -> None:
    closed_and_cycling(http, url, admin)
    since = now_iso()
    assert http.put(url("A4", "/admin/faults"), headers=admin, json={"force_503_s": FORCED_OUTAGE_S}).status_code == 200
    injected = time.monotonic()
    assert wait_until(lambda: breaker(http, url, admin)["state"] == "open", FORCED_OUTAGE_S), "breaker never opened"
    opened_after_s = time.monotonic() - injected
    shed = wait_until(lambda: (r := http.get(url("A3", "/api/pages/preview"))).status_code == 503 and r, 2, 0.05)
    assert shed, "no preview was shed while the breaker was open"
    assert shed.json() == {"shed": True, "breaker": "open"} and shed.headers["x-breaker-state"] == "open"
    expiry = injected + FORCED_OUTAGE_S
    time.sleep(max(0.0, expiry - time.monotonic()))
    healed = wait_until(lambda: (r := http.get(url("A3", "/api/pages/preview"))).status_code == 200 and r, 4, 0.1)
    assert healed, f"preview still failing {time.monotonic() - expiry:.1f} s after the outage ended"
    recovered_after_s = time.monotonic() - expiry
    assert healed.headers["x-breaker-state"] == "closed" and healed.json()["breaker"] == "closed"
    snapshot = breaker(http, url, admin)
    steps = [(t["from_state"], t["to_state"]) for t in snapshot["transitions"]]
    assert ("closed", "open") in steps and steps[-2:] == [("open", "half_open"), ("half_open", "closed")]
    assert snapshot["state"] == "closed" and snapshot["cycles"]["shed"] >= 1
    assert (snapshot["fail_max"], snapshot["reset_timeout_s"]) == (5, 2.0)
    stored = wait_until(lambda: [(e["from_state"], e["to_state"]) for e in
                                 events(http, url, "breaker_transition", since)][-2:] ==
                        [("open", "half_open"), ("half_open", "closed")], 3)
    assert stored, events(http, url, "breaker_transition", since)
    transitions = events(http, url, "breaker_transition", since)
    assert transitions[0]["from_state"] == "closed" and transitions[0]["to_state"] == "open"
    assert all(e["breaker"] == "a3_upstream" and e["route"] == "/orchestration/breaker" for e in transitions)
    assert {e["outcome"] for e in events(http, url, "orchestration_cycle_complete", since)} >= {"shed"}
    for attempts in by_run(events(http, url, "upstream_attempt", since)).values():  # a shed call is never retried
        assert all(a["outcome"] != "shed" for a in attempts[:-1])
    print(f"\nbreaker: open {opened_after_s:.2f} s after the outage began, "
          f"preview 200 again {recovered_after_s:.2f} s after it ended")
