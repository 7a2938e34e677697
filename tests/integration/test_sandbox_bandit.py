"""A7's live CTA policy over real HTTP: assignments and their propensities, policy changes,
and the visitor simulator's telemetry as A8 stores it.

The sandbox here is A7 and its telemetry store A8 on ports 29107–29108 (this module's own
range, 29101–29108), started by ``launcher.up`` in a private state folder: these tests
replace the live policy and push thousands of simulated visits, which must not leak into
any other test's sandbox. After each test the fixture restores the default policy and
clears the fault knobs, so tests do not depend on their order.

The allocation is judged with 99% Wilson intervals over a seeded simulation (reproducible,
so a pass is not luck a rerun could lose; a wrong allocation, a few points off at
n = 4000, falls outside them). The outcomes are judged exactly: the seeded simulation is
replayed in-process with the same policy and seed, and A8 must hold precisely the
outcome events the replay drew — one lost, duplicated or mislabelled event fails. (The
outcome *rates* are the unit tests' business, over far more visits.)
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from readiness.core.verdict import wilson_interval
from sandbox import launcher
from sandbox.apps.a7_bandit import ARMS, OUTCOME_EVENTS, LivePolicy, default_policy, parse_policy, simulate
from sandbox.common.config import DEFAULT_SEED
from sandbox.common.web import utc_now_iso

pytestmark = pytest.mark.integration

BASE_PORT = 29101
WAIT_S = 15.0
CONFIDENCE = 0.99
SIMULATED_VISITS = 4000
SIM_SEED = 20240501
SYNTHETIC_HEADERS = {"X-Test-Run": "true", "X-Source": "qa", "X-Namespace": "simulated_audit"}
DEFAULT = default_policy().as_json()
LEARNED = {"policy_version": "cta-test-learned", "exploration_rate": 0.3,
           "arm_weights": {"pricing_banner": 3.0, "signup_hero": 1.0}}


@pytest.fixture(scope="module")
def bandit_sandbox(tmp_path_factory: pytest.TempPathFactory, start_apps) -> Iterator[launcher.SandboxState]:
    apps = [a for a in launcher.default_apps(BASE_PORT) if a.app_id in ("A7", "A8")]
    with start_apps(apps, tmp_path_factory.mktemp("bandit-sandbox")) as state:
        yield state


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30.0) as client:
        yield client


@pytest.fixture
def a7(bandit_sandbox: launcher.SandboxState) -> str:
    return bandit_sandbox.apps["A7"]


@pytest.fixture
def a8(bandit_sandbox: launcher.SandboxState) -> str:
    return bandit_sandbox.apps["A8"]


@pytest.fixture
def admin(bandit_sandbox: launcher.SandboxState) -> dict[str, str]:
    return {"Authorization": f"Bearer {bandit_sandbox.admin_token}"}


@pytest.fixture(autouse=True)
def reset(a7: str, admin: dict[str, str], http: httpx.Client) -> Iterator[None]:
    yield
    body = {k: DEFAULT[k] for k in ("policy_version", "arm_weights", "exploration_rate")}
    assert http.put(f"{a7}/admin/cta/policy", headers=admin, json=body).status_code == 200
    assert http.delete(f"{a7}/admin/faults", headers=admin).status_code == 200


def contract(key: str | None = None, trace: str | None = None) -> dict[str, str]:
    return {"X-Idempotency-Key": key or uuid.uuid4().hex, "X-Trace-Id": trace or uuid.uuid4().hex}


def wait_until(probe: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``probe`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def events(http: httpx.Client, a8: str, **params: str) -> list[dict[str, Any]]:
    r = http.get(f"{a8}/api/telemetry/events", params={"app_id": "A7", "limit": "1000", **params})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


def arrived(http: httpx.Client, a8: str, trace_id: str, event_type: str) -> dict[str, Any]:
    found = wait_until(lambda: events(http, a8, trace_id=trace_id, event_type=event_type),
                       f"{event_type} of trace {trace_id} in A8")
    assert len(found) == 1, found
    return dict(found[0])


def flushed(http: httpx.Client, a7: str, a8: str) -> None:
    """Wait until everything A7 emitted so far is in A8: the emitter ships in order, so once
    an event emitted now has arrived, every earlier one has been sent (or counted lost)."""
    marker = uuid.uuid4().hex
    assert http.get(f"{a7}/api/cta/config", headers={"X-Trace-Id": marker}).status_code == 200
    arrived(http, a8, marker, "bandit_config")


def within(k: int, n: int, p: float) -> bool:
    low, high = wilson_interval(k, n, CONFIDENCE)
    return low <= p <= high


class Recorder:
    """Stands in for an app's emitter in the offline replay: keeps every event, never backs up."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def counters(self) -> dict[str, int]:
        return {"queued": 0}


def replay(policy_body: dict[str, Any], visits: int, seed: int) -> Counter[tuple[str, str]]:
    """(arm, event type) counts of the seeded simulation A7 ran, redrawn in-process."""
    live = LivePolicy(f"{DEFAULT_SEED}:A7")
    live.replace(parse_policy(policy_body))
    recorder = Recorder()
    ctx = SimpleNamespace(config=SimpleNamespace(app_id="A7", telemetry_queue_max=10_000), emitter=recorder)
    simulate(ctx, live, visits, live.simulator_rng(seed), {}, route="/admin/cta/simulate")  # type: ignore[arg-type]
    return Counter((e["arm_id"], e["event_type"]) for e in recorder.events if e["event_type"] != "cta_impression")


def put_policy(http: httpx.Client, a7: str, admin: dict[str, str], body: Any) -> httpx.Response:
    return http.put(f"{a7}/admin/cta/policy", headers=admin, json=body)


# --- config and assignment ----------------------------------------------------------------


def test_config_serves_the_default_policy_with_its_allocation(http: httpx.Client, a7: str, a8: str) -> None:
    trace = uuid.uuid4().hex
    r = http.get(f"{a7}/api/cta/config", headers={"X-Trace-Id": trace})
    assert r.status_code == 200
    body = r.json()
    assert body["policy_version"] == "cta-2024-05-01"
    assert body["arm_weights"] == {"signup_hero": 0.5, "pricing_banner": 0.3, "provider_invite": 0.2}
    assert body["exploration_rate"] == 0.1
    assert body["allocation"] == pytest.approx({"signup_hero": 0.9 * 0.5 + 0.1 / 3, "pricing_banner": 0.9 * 0.3 + 0.1 / 3,
                                                "provider_invite": 0.9 * 0.2 + 0.1 / 3}, abs=1e-12)
    event = arrived(http, a8, trace, "bandit_config")
    assert event["allocation"] == body["allocation"] and event["route"] == "/api/cta/config"


def test_assign_answers_a_known_arm_with_its_exact_propensity(http: httpx.Client, a7: str, a8: str,
                                                              admin: dict[str, str]) -> None:
    # Ship every impression for this test, so the one of this assignment is certain to arrive.
    assert http.put(f"{a7}/admin/faults", headers=admin, json={"telemetry_sampling": "sample_nothing"}).status_code == 200
    allocation = http.get(f"{a7}/api/cta/config").json()["allocation"]
    headers = {**contract(), **SYNTHETIC_HEADERS}
    r = http.post(f"{a7}/api/cta/assign", headers=headers, json={"page": "/pricing"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"arm_id", "propensity", "policy_version"}
    assert body["arm_id"] in ARMS
    assert body["propensity"] == allocation[body["arm_id"]]
    assert body["policy_version"] == "cta-2024-05-01"
    event = arrived(http, a8, headers["X-Trace-Id"], "cta_impression")
    assert {k: event[k] for k in body} == body
    assert event["page"] == "/pricing" and event["route"] == "/api/cta/assign" and event["sample_rate"] == 1.0
    assert event["idempotency_key"] == headers["X-Idempotency-Key"]
    assert event["tags"] == {"test_run": "true", "source": "qa", "namespace": "simulated_audit"}


def test_assign_replays_a_repeated_key_and_refuses_a_reused_one(http: httpx.Client, a7: str) -> None:
    headers = contract()
    first = http.post(f"{a7}/api/cta/assign", headers=headers, json={"page": "/pricing"})
    again = http.post(f"{a7}/api/cta/assign", headers=headers, json={"page": "/pricing"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = http.post(f"{a7}/api/cta/assign", headers=headers, json={"page": "/courses"})
    assert other.status_code == 422
    assert other.json()["error"] == "X-Idempotency-Key was already used with a different request body"


@pytest.mark.parametrize(("body", "field", "message"), [
    ({}, "page", "page must be a non-empty string of at most 200 characters"),
    ({"page": "pricing"}, "page", "page must be a path starting with '/'"),
    ({"page": "/p", "arm_id": "signup_hero"}, "arm_id", "unknown field: arm_id"),
    (["/p"], "body", "body must be a JSON object"),
])
def test_assign_refuses_a_bad_body(http: httpx.Client, a7: str, body: Any, field: str, message: str) -> None:
    r = http.post(f"{a7}/api/cta/assign", headers=contract(), json=body)
    assert r.status_code == 422
    assert r.json() == {"error": message, "field": field}


def test_assign_needs_the_contract_headers(http: httpx.Client, a7: str) -> None:
    r = http.post(f"{a7}/api/cta/assign", json={"page": "/pricing"})
    assert r.status_code == 428
    assert r.json()["error"] == "missing required headers: X-Idempotency-Key, X-Trace-Id"


def test_beacons_keep_working_with_the_live_policy_version(http: httpx.Client, a7: str, a8: str,
                                                           admin: dict[str, str]) -> None:
    assert put_policy(http, a7, admin, LEARNED).status_code == 200
    headers = contract()
    r = http.post(f"{a7}/api/cta/clicks", headers=headers, json={"arm_id": "pricing_banner", "page": "/get-started"})
    assert r.status_code == 202
    event = arrived(http, a8, headers["X-Trace-Id"], "cta_emitted")
    assert event["policy_version"] == "cta-test-learned" and event["arm_id"] == "pricing_banner"
    r = http.post(f"{a7}/api/cta/impressions", headers=contract(), json={"arm_id": "nope", "page": "/"})
    assert r.json()["error"] == "unknown arm_id 'nope' (known: signup_hero, pricing_banner, provider_invite)"


# --- the admin policy -----------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"arm_weights": {"signup_hero": 1}, "exploration_rate": 0.1}, "policy_version", "policy_version is required"),
    ({**LEARNED, "note": "x"}, "note", "unknown field: note"),
    ({**LEARNED, "arm_weights": {"hero": 1}}, "arm_weights",
     "unknown arm_id 'hero' in arm_weights (known: signup_hero, pricing_banner, provider_invite)"),
    ({**LEARNED, "arm_weights": {"signup_hero": -0.1}}, "arm_weights", "arm_weights['signup_hero'] must be a finite number >= 0"),
    ({**LEARNED, "arm_weights": {"signup_hero": True}}, "arm_weights", "arm_weights['signup_hero'] must be a finite number >= 0"),
    ({**LEARNED, "arm_weights": {"signup_hero": 0, "pricing_banner": 0}}, "arm_weights", "arm_weights must sum to more than 0"),
    ({**LEARNED, "arm_weights": {}}, "arm_weights", "arm_weights must be a non-empty object of arm id to weight"),
    ({**LEARNED, "exploration_rate": 1.5}, "exploration_rate", "exploration_rate must be a number between 0 and 1"),
    ({**LEARNED, "exploration_rate": "0.1"}, "exploration_rate", "exploration_rate must be a number between 0 and 1"),
    ({**LEARNED, "policy_version": " "}, "policy_version",
     "policy_version must be a non-empty string of at most 100 characters"),
])
def test_policy_put_validates_and_changes_nothing_on_error(http: httpx.Client, a7: str, admin: dict[str, str],
                                                           body: Any, field: str, message: str) -> None:
    r = put_policy(http, a7, admin, body)
    assert r.status_code == 422
    assert r.json() == {"error": message, "field": field}
    assert http.get(f"{a7}/admin/cta/policy", headers=admin).json() == DEFAULT


def test_policy_routes_need_the_admin_token(http: httpx.Client, a7: str) -> None:
    assert http.get(f"{a7}/admin/cta/policy").status_code == 401
    assert http.put(f"{a7}/admin/cta/policy", json=LEARNED).status_code == 401
    assert http.post(f"{a7}/admin/cta/simulate", json={"visits": 10}).status_code == 401
    r = http.put(f"{a7}/admin/cta/policy", headers={"Authorization": "Bearer wrong"}, content=b"not json")
    assert r.status_code == 401


def test_policy_put_applies_at_once_and_survives_a_fault_reset(http: httpx.Client, a7: str, a8: str,
                                                              admin: dict[str, str]) -> None:
    trace = uuid.uuid4().hex
    r = http.put(f"{a7}/admin/cta/policy", headers={**admin, "X-Trace-Id": trace}, json=LEARNED)
    assert r.status_code == 200, r.text
    expected = {"signup_hero": 0.7 * 0.25 + 0.1, "pricing_banner": 0.7 * 0.75 + 0.1, "provider_invite": 0.1}
    assert r.json()["allocation"] == pytest.approx(expected, abs=1e-12)
    assert r.json()["arm_weights"] == {"signup_hero": 1.0, "pricing_banner": 3.0, "provider_invite": 0.0}
    event = arrived(http, a8, trace, "bandit_config")
    assert event["route"] == "/admin/cta/policy" and event["policy_version"] == "cta-test-learned"
    assert http.delete(f"{a7}/admin/faults", headers=admin).status_code == 200
    assert http.get(f"{a7}/admin/cta/policy", headers=admin).json() == r.json()
    assert http.get(f"{a7}/api/cta/config").json() == r.json()
    answer = http.post(f"{a7}/api/cta/assign", headers=contract(), json={"page": "/pricing"}).json()
    assert answer["policy_version"] == "cta-test-learned"
    assert answer["propensity"] == r.json()["allocation"][answer["arm_id"]]


# --- the simulator --------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"visits": 0}, "visits", "visits must be an integer between 1 and 20000"),
    ({"visits": 20001}, "visits", "visits must be an integer between 1 and 20000"),
    ({"visits": "10"}, "visits", "visits must be an integer between 1 and 20000"),
    ({"visits": True}, "visits", "visits must be an integer between 1 and 20000"),
    ({"visits": 10, "seed": 1.5}, "seed", "seed must be an integer"),
    ({"visits": 10, "pages": 2}, "pages", "unknown field: pages"),
])
def test_simulate_refuses_bad_bodies(http: httpx.Client, a7: str, admin: dict[str, str], body: Any, field: str,
                                     message: str) -> None:
    r = http.post(f"{a7}/admin/cta/simulate", headers=admin, json=body)
    assert r.status_code == 422
    assert r.json() == {"error": message, "field": field}


def test_a_seeded_simulation_replays_exactly(http: httpx.Client, a7: str, admin: dict[str, str]) -> None:
    runs = [http.post(f"{a7}/admin/cta/simulate", headers=admin, json={"visits": 300, "seed": 11}).json()
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert sum(runs[0]["assigned"].values()) == 300
    other = http.post(f"{a7}/admin/cta/simulate", headers=admin, json={"visits": 300, "seed": 12}).json()
    assert other["assigned"] != runs[0]["assigned"]


def test_simulated_visits_follow_the_allocation_and_reach_a8(http: httpx.Client, a7: str, a8: str,
                                                            admin: dict[str, str]) -> None:
    assert put_policy(http, a7, admin, LEARNED).status_code == 200
    allocation = http.get(f"{a7}/api/cta/config").json()["allocation"]
    since = utc_now_iso()
    r = http.post(f"{a7}/admin/cta/simulate", headers={**admin, **SYNTHETIC_HEADERS},
                  json={"visits": SIMULATED_VISITS, "seed": SIM_SEED})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["visits"] == SIMULATED_VISITS and answer["policy_version"] == "cta-test-learned"
    assigned = answer["assigned"]
    assert set(assigned) == set(ARMS) and sum(assigned.values()) == SIMULATED_VISITS
    for arm in ARMS:
        assert within(assigned[arm], SIMULATED_VISITS, allocation[arm]), (arm, assigned, allocation)

    flushed(http, a7, a8)
    window = {"since": since, "until": utc_now_iso()}
    counters = http.get(f"{a7}/admin/telemetry", headers=admin).json()
    assert counters["dropped_queue_full"] == 0 and counters["dropped_after_retries"] == 0

    tags = {"test_run": "true", "source": "sandbox_simulator", "namespace": "simulated_audit"}
    impressions = events(http, a8, event_type="cta_impression", **window)
    assert impressions and all(e["tags"] == tags and e["route"] == "/admin/cta/simulate" for e in impressions)
    assert within(len(impressions), SIMULATED_VISITS, 0.10)  # sampled at the source
    for e in impressions:
        assert e["sample_rate"] == 0.1 and e["page"] == "/get-started"
        assert e["propensity"] == allocation[e["arm_id"]] and e["policy_version"] == "cta-test-learned"
    arm_of = {e["trace_id"]: e["arm_id"] for e in impressions}
    assert len(arm_of) == len(impressions)
    visit_key = {e["trace_id"]: e["idempotency_key"] for e in impressions}

    expected = replay(LEARNED, SIMULATED_VISITS, SIM_SEED)
    stored: Counter[tuple[str, str]] = Counter()
    for outcome in ("lead", "checkout", "complaint"):
        found = events(http, a8, event_type=OUTCOME_EVENTS[outcome], **window)
        assert 0 < len(found) < 1000
        assert len({e["trace_id"] for e in found}) == len(found)  # at most one of each outcome per visit
        for e in found:
            assert e["tags"] == tags and e["policy_version"] == "cta-test-learned" and e["status"] == 200
            assert e["propensity"] == allocation[e["arm_id"]]
            assert arm_of.setdefault(e["trace_id"], e["arm_id"]) == e["arm_id"]  # one arm per visit
            key = visit_key.setdefault(e["trace_id"], e["idempotency_key"].rsplit(":", 1)[0])
            assert e["idempotency_key"] == f"{key}:{e['event_type']}"
            stored[e["arm_id"], e["event_type"]] += 1
    assert stored == Counter({k: v for k, v in expected.items() if k[1] != "cta_page_view"})
    views = http.get(f"{a8}/api/telemetry/summary", params={"app_id": "A7", "event_type": "cta_page_view",
                                                           **window}).json()["n"]
    assert views == sum(v for (_, event_type), v in expected.items() if event_type == "cta_page_view")


def test_only_one_simulation_runs_at_a_time(a7: str, admin: dict[str, str]) -> None:
    def run() -> httpx.Response:
        with httpx.Client(timeout=60.0) as client:
            return client.post(f"{a7}/admin/cta/simulate", headers=admin, json={"visits": 20_000})

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(run)
        time.sleep(0.2)
        second = pool.submit(run)
        statuses = sorted([first.result().status_code, second.result().status_code])
    assert statuses == [200, 409]
    refused = first.result() if first.result().status_code == 409 else second.result()
    assert refused.json() == {"error": "a simulation is already running on this app"}
