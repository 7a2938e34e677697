"""A7 lead capture (docs/phases.md#02-latency-profile, fix B) over real HTTP: idempotency, sync vs queued delivery,
retries, the circuit breaker, rollback, and the telemetry each lead leaves behind.

The sandbox here is A7 and its telemetry store A8 on ports 28507–28508 (this module's
own range, 28501–28508), started by ``launcher.up`` in a private state folder: these
tests switch the mailer to failing and slow on purpose, which must not leak into any
other test's sandbox. After each test the fixture drains the delivery queue with a fast
mailer and resets faults and flags, so tests do not depend on their order.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sandbox import launcher

pytestmark = pytest.mark.integration

BASE_PORT = 28501
WAIT_S = 10.0
SERVER_TIMING = re.compile(r"^app;dur=(\d+(?:\.\d+)?)$")
FIXED_MAILER_MS = 120
DEFAULT_MAILER = {
    "latency": {"dist": "lognormal", "median_ms": 200.0, "sigma": 0.3},
    "error_rate": 0.0,
    "timeout_ms": 2000.0,
}
LEAD = {"email": "qa-lead@example.test", "name": "QA Lead", "source": "readiness-audit", "tags": ["qa"]}


@pytest.fixture(scope="module")
def leads_sandbox(tmp_path_factory: pytest.TempPathFactory, start_apps) -> Iterator[launcher.SandboxState]:
    apps = [a for a in launcher.default_apps(BASE_PORT) if a.app_id in ("A7", "A8")]
    with start_apps(apps, tmp_path_factory.mktemp("leads-sandbox")) as state:
        yield state


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


@pytest.fixture
def a7(leads_sandbox: launcher.SandboxState) -> str:
    return leads_sandbox.apps["A7"]


@pytest.fixture
def admin(leads_sandbox: launcher.SandboxState) -> dict[str, str]:
    return {"Authorization": f"Bearer {leads_sandbox.admin_token}"}


def wait_until(probe: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``probe`` until it returns something truthy (bounded in time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
def reset(a7: str, admin: dict[str, str], http: httpx.Client) -> Iterator[None]:
    yield
    fast = {"mailer": {"latency": {"dist": "fixed", "ms": 0}}}
    assert http.put(f"{a7}/admin/faults", headers=admin, json=fast).status_code == 200

    def drained() -> bool:
        worker = http.get(f"{a7}/admin/mailer", headers=admin).json()["worker"]
        return worker["pending"] == 0 and worker["in_flight"] == 0

    wait_until(drained, "the delivery queue to drain")
    assert http.delete(f"{a7}/admin/mailer", headers=admin).json()["breaker"]["state"] == "closed"
    assert http.delete(f"{a7}/admin/faults", headers=admin).status_code == 200
    assert http.put(f"{a7}/admin/flags", headers=admin, json={"a7_async_leads": False}).status_code == 200


def contract(key: str | None = None, trace: str | None = None, **extra: str) -> dict[str, str]:
    return {"X-Idempotency-Key": key or uuid.uuid4().hex, "X-Trace-Id": trace or uuid.uuid4().hex, **extra}


def set_mailer(http: httpx.Client, a7: str, admin: dict[str, str], **settings: Any) -> None:
    r = http.put(f"{a7}/admin/faults", headers=admin, json={"mailer": settings})
    assert r.status_code == 200, r.text


def fixed(ms: float) -> dict[str, Any]:
    return {"dist": "fixed", "ms": ms}


def set_async(http: httpx.Client, a7: str, admin: dict[str, str], on: bool) -> None:
    assert http.put(f"{a7}/admin/flags", headers=admin, json={"a7_async_leads": on}).json()["a7_async_leads"] is on


def mailer(http: httpx.Client, a7: str, admin: dict[str, str], key: str | None = None) -> dict[str, Any]:
    params = {"key": key} if key else None
    r = http.get(f"{a7}/admin/mailer", headers=admin, params=params)
    assert r.status_code == 200
    return dict(r.json())


def lead_state(http: httpx.Client, a7: str, lead_id: str) -> dict[str, Any]:
    r = http.get(f"{a7}/api/leads/{lead_id}")
    assert r.status_code == 200
    return dict(r.json())


def wait_status(http: httpx.Client, a7: str, lead_id: str, status: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        got = lead_state(http, a7, lead_id)
        return got if got["status"] == status else None

    return dict(wait_until(probe, f"lead {lead_id} to be {status}"))


def server_ms(response: httpx.Response) -> float:
    match = SERVER_TIMING.match(response.headers["server-timing"])
    assert match, response.headers["server-timing"]
    return float(match.group(1))


# --- contract: headers, body, idempotency ------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "message", "missing"),
    [
        ({}, "missing required headers: X-Idempotency-Key, X-Trace-Id", ["X-Idempotency-Key", "X-Trace-Id"]),
        ({"X-Trace-Id": "t"}, "missing required header: X-Idempotency-Key", ["X-Idempotency-Key"]),
        ({"X-Idempotency-Key": "k"}, "missing required header: X-Trace-Id", ["X-Trace-Id"]),
    ],
)
@pytest.mark.parametrize("async_on", [False, True])
def test_428_names_the_missing_header(
    headers: dict, message: str, missing: list, async_on: bool, http: httpx.Client, a7: str, admin: dict
) -> None:
    set_async(http, a7, admin, async_on)
    before = mailer(http, a7, admin)["calls"]
    r = http.post(f"{a7}/api/leads", json=LEAD, headers=headers)
    assert (r.status_code, r.json()) == (428, {"error": message, "missing": missing})
    assert mailer(http, a7, admin)["calls"] == before


@pytest.mark.parametrize(
    ("content", "status", "error", "field"),
    [
        (b"{not json", 400, "body is not valid JSON", "body"),
        (b"", 400, "body must be JSON", "body"),
        (b"[]", 422, "body must be a JSON object", "body"),
        (b'{"name": "A"}', 422, "email is required", "email"),
        (b'{"email": "a@b.co"}', 422, "name is required", "name"),
        (
            b'{"email": "not-an-email", "name": "A"}',
            422,
            "email must be an email address (name@domain.tld) of at most 254 characters",
            "email",
        ),
        (
            b'{"email": "a@b.co", "name": "  "}',
            422,
            "name must be a non-empty string of at most 200 characters",
            "name",
        ),
        (
            b'{"email": "a@b.co", "name": "A", "source": 7}',
            422,
            "source must be a string of at most 100 characters",
            "source",
        ),
        (
            b'{"email": "a@b.co", "name": "A", "tags": "qa"}',
            422,
            "tags must be a list or an object of at most 20 non-empty strings of at most 50 characters",
            "tags",
        ),
        (
            b'{"email": "a@b.co", "name": "A", "tags": {"test_run": 1}}',
            422,
            "tags must be a list or an object of at most 20 non-empty strings of at most 50 characters",
            "tags",
        ),
        (b'{"email": "a@b.co", "name": "A", "phone": "1"}', 422, "unexpected field: phone", "phone"),
    ],
)
def test_invalid_bodies_name_the_field(
    content: bytes, status: int, error: str, field: str, http: httpx.Client, a7: str
) -> None:
    r = http.post(f"{a7}/api/leads", content=content, headers={**contract(), "Content-Type": "application/json"})
    assert (r.status_code, r.json()) == (status, {"error": error, "field": field})


def test_overlong_idempotency_key_is_refused(http: httpx.Client, a7: str) -> None:
    r = http.post(f"{a7}/api/leads", json=LEAD, headers=contract(key="k" * 256))
    assert (r.status_code, r.json()) == (
        422,
        {"error": "X-Idempotency-Key must be at most 255 characters", "field": "X-Idempotency-Key"},
    )


@pytest.mark.parametrize(("async_on", "status", "delivery"), [(False, 201, "sent"), (True, 202, "queued")])
def test_replay_returns_the_stored_response_and_delivers_once(
    async_on: bool, status: int, delivery: str, http: httpx.Client, a7: str, admin: dict
) -> None:
    set_async(http, a7, admin, async_on)
    set_mailer(http, a7, admin, latency=fixed(5))
    sends_before = mailer(http, a7, admin)["sends"]
    headers = contract()
    first = http.post(f"{a7}/api/leads", json=LEAD, headers=headers)
    assert first.status_code == status
    lead_id = first.json()["lead_id"]
    assert first.json() == {"lead_id": lead_id, "delivery": delivery}
    assert first.headers["location"] == f"/api/leads/{lead_id}"
    assert "idempotent-replayed" not in first.headers
    reordered = dict(reversed(list(LEAD.items())))  # same body in canonical form
    for body in (LEAD, reordered, LEAD):
        again = http.post(f"{a7}/api/leads", json=body, headers=headers)
        assert (again.status_code, again.json()) == (status, first.json())
        assert again.headers["idempotent-replayed"] == "true"
    wait_status(http, a7, lead_id, "sent")
    stats = mailer(http, a7, admin, key=lead_id)
    assert stats["sends"] - sends_before == 1
    assert stats["delivery"]["duplicates"] == 0 and stats["delivery"]["to"] == LEAD["email"]
    changed = http.post(f"{a7}/api/leads", json={**LEAD, "name": "Someone else"}, headers=headers)
    assert (changed.status_code, changed.json()) == (
        422,
        {"error": "X-Idempotency-Key was already used with a different request body"},
    )


def test_keys_are_scoped_by_caller(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(1))
    key = uuid.uuid4().hex
    ids = {}
    for who in ("identity", "other_identity", "bearer", "other_bearer", "global"):
        extra = {
            "identity": {"X-Synthetic-Identity": "test_student_e2e_01"},
            "other_identity": {"X-Synthetic-Identity": "test_student_e2e_02"},
            "bearer": {"Authorization": "Bearer token-one"},
            "other_bearer": {"Authorization": "Bearer token-two"},
            "global": {},
        }[who]
        r = http.post(f"{a7}/api/leads", json=LEAD, headers=contract(key=key, **extra))
        assert r.status_code == 201 and "idempotent-replayed" not in r.headers, who
        ids[who] = r.json()["lead_id"]
        replay = http.post(f"{a7}/api/leads", json=LEAD, headers=contract(key=key, **extra))
        assert replay.headers["idempotent-replayed"] == "true" and replay.json()["lead_id"] == ids[who], who
    assert len(set(ids.values())) == 5


def test_unknown_lead_is_404(http: httpx.Client, a7: str) -> None:
    r = http.get(f"{a7}/api/leads/lead_0000")
    assert (r.status_code, r.json()) == (404, {"error": "unknown lead: lead_0000"})


# --- the two designs and the switch between them -----------------------------------------


def test_flag_off_waits_for_the_mailer_on_the_hot_path(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(FIXED_MAILER_MS))
    started = time.perf_counter()
    r = http.post(f"{a7}/api/leads", json=LEAD, headers=contract())
    took_ms = (time.perf_counter() - started) * 1000
    assert r.status_code == 201 and r.json()["delivery"] == "sent"
    assert took_ms >= FIXED_MAILER_MS and server_ms(r) >= FIXED_MAILER_MS  # Server-Timing includes the wait
    got = lead_state(http, a7, r.json()["lead_id"])
    assert {k: got[k] for k in ("status", "attempts", "mode", "last_error")} == {
        "status": "sent",
        "attempts": 1,
        "mode": "sync",
        "last_error": None,
    }
    assert got["delivered_at"].endswith("Z")


def test_flag_off_mailer_failure_is_a_502_that_replays(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(1), error_rate=1.0)
    headers = contract()
    r = http.post(f"{a7}/api/leads", json=LEAD, headers=headers)
    lead_id = r.json()["lead_id"]
    assert (r.status_code, r.json()) == (
        502,
        {
            "error": "mailer failed: MailRelay answered 503: service unavailable",
            "lead_id": lead_id,
            "delivery": "failed",
        },
    )
    again = http.post(f"{a7}/api/leads", json=LEAD, headers=headers)
    assert (again.status_code, again.json(), again.headers["idempotent-replayed"]) == (502, r.json(), "true")
    assert lead_state(http, a7, lead_id)["status"] == "failed"


def test_flag_on_answers_202_at_once_and_a_worker_delivers(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(FIXED_MAILER_MS))
    set_async(http, a7, admin, True)
    started = time.perf_counter()
    r = http.post(f"{a7}/api/leads", json=LEAD, headers=contract())
    took_ms = (time.perf_counter() - started) * 1000
    assert r.status_code == 202 and r.json()["delivery"] == "queued"
    # Coarse bounds only: the handler must not wait for the 120 ms mailer.
    assert server_ms(r) < 60 and took_ms < FIXED_MAILER_MS, (server_ms(r), took_ms)
    lead_id = r.json()["lead_id"]
    assert lead_state(http, a7, lead_id)["mode"] == "async"
    done = wait_status(http, a7, lead_id, "sent")
    assert done["attempts"] == 1 and done["delivered_at"].endswith("Z")
    assert mailer(http, a7, admin, key=lead_id)["delivery"]["duplicates"] == 0


def test_rollback_restores_the_synchronous_path_and_queued_jobs_drain(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(FIXED_MAILER_MS))
    set_async(http, a7, admin, True)
    queued = [http.post(f"{a7}/api/leads", json=LEAD, headers=contract()) for _ in range(6)]
    assert {r.status_code for r in queued} == {202}
    set_async(http, a7, admin, False)
    started = time.perf_counter()
    r = http.post(f"{a7}/api/leads", json=LEAD, headers=contract())
    assert r.status_code == 201 and r.json()["delivery"] == "sent"
    assert (time.perf_counter() - started) * 1000 >= FIXED_MAILER_MS
    for q in queued:
        assert wait_status(http, a7, q.json()["lead_id"], "sent")["mode"] == "async"


# --- retries, breaker, idempotent delivery -----------------------------------------------


def test_retries_open_the_breaker_and_recovery_delivers_exactly_once(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(5), error_rate=1.0)
    set_async(http, a7, admin, True)
    before = mailer(http, a7, admin)
    assert before["breaker"]["state"] == "closed"
    r = http.post(f"{a7}/api/leads", json=LEAD, headers=contract())
    assert r.status_code == 202
    lead_id = r.json()["lead_id"]
    opened = wait_until(lambda: (m := mailer(http, a7, admin))["breaker"]["state"] == "open" and m, "the breaker")
    assert opened["worker"]["retries"] - before["worker"]["retries"] >= 2
    assert opened["errors"] - before["errors"] >= 3
    pending = lead_state(http, a7, lead_id)
    assert pending["status"] == "queued" and pending["attempts"] >= 3
    assert pending["last_error"] == "MailRelay answered 503: service unavailable"
    set_mailer(http, a7, admin, latency=fixed(5), error_rate=0.0)
    done = wait_status(http, a7, lead_id, "sent")
    after = mailer(http, a7, admin, key=lead_id)
    assert after["breaker"]["state"] == "closed"
    moves = [(t["from"], t["to"]) for t in after["breaker"]["transitions"]]
    last_open = max(i for i, move in enumerate(moves) if move == ("closed", "open"))
    trials = (len(moves) - last_open - 3) // 2  # failed half-open trials before the successful one
    assert moves[last_open:] == [
        ("closed", "open"),
        *[("open", "half_open"), ("half_open", "open")] * trials,
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert after["sends"] - before["sends"] == 1 and after["delivery"]["duplicates"] == 0
    assert done["attempts"] == after["worker"]["attempts"] - before["worker"]["attempts"]


def test_a_timed_out_delivery_is_retried_but_sent_once(http: httpx.Client, a7: str, admin: dict) -> None:
    """The relay accepts a mail even when the worker stops waiting: the retry must be a duplicate."""
    set_mailer(http, a7, admin, latency=fixed(80), timeout_ms=20)
    set_async(http, a7, admin, True)
    before = mailer(http, a7, admin)
    lead_id = http.post(f"{a7}/api/leads", json=LEAD, headers=contract()).json()["lead_id"]
    wait_until(lambda: mailer(http, a7, admin)["timeouts"] > before["timeouts"], "a timed-out attempt")
    set_mailer(http, a7, admin, latency=fixed(5))
    done = wait_status(http, a7, lead_id, "sent")
    after = mailer(http, a7, admin, key=lead_id)
    assert after["sends"] - before["sends"] == 1
    assert after["duplicates_suppressed"] - before["duplicates_suppressed"] >= 1
    assert after["delivery"]["duplicates"] >= 1
    assert done["attempts"] >= 2


def test_exhausted_attempts_mark_the_lead_failed(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(1), error_rate=1.0)
    set_async(http, a7, admin, True)
    lead_id = http.post(f"{a7}/api/leads", json=LEAD, headers=contract()).json()["lead_id"]
    failed = wait_status(http, a7, lead_id, "failed")
    limit = mailer(http, a7, admin)["worker"]["backoff"]["max_attempts"]
    assert (failed["attempts"], failed["last_error"], failed["delivered_at"]) == (
        limit,
        "MailRelay answered 503: service unavailable",
        None,
    )
    assert mailer(http, a7, admin, key=lead_id)["delivery"] is None


# --- telemetry ---------------------------------------------------------------------------


@pytest.mark.parametrize("async_on", [False, True])
def test_lead_events_reach_a8_with_the_trace_id_and_key(
    async_on: bool, http: httpx.Client, a7: str, admin: dict, leads_sandbox: launcher.SandboxState
) -> None:
    set_mailer(http, a7, admin, latency=fixed(5))
    set_async(http, a7, admin, async_on)
    key, trace = uuid.uuid4().hex, f"lead-{uuid.uuid4().hex}"
    tags = {"X-Test-Run": "true", "X-Namespace": "simulated_audit"}
    lead_id = http.post(f"{a7}/api/leads", json=LEAD, headers=contract(key, trace, **tags)).json()["lead_id"]
    a8 = leads_sandbox.apps["A8"]

    def events() -> dict[str, dict] | None:
        found = http.get(f"{a8}/api/telemetry/events", params={"trace_id": trace}).json()["events"]
        by_type = {e["event_type"]: e for e in found}
        return by_type if {"http_request", "lead_captured", "lead_delivered"} <= set(by_type) else None

    got = wait_until(events, "the lead's events at A8")
    captured = got["lead_captured"]
    assert {k: captured[k] for k in ("app_id", "trace_id", "idempotency_key", "lead_id", "mode", "delivery")} == {
        "app_id": "A7",
        "trace_id": trace,
        "idempotency_key": key,
        "lead_id": lead_id,
        "mode": "async" if async_on else "sync",
        "delivery": "queued" if async_on else "sent",
    }
    assert captured["tags"] == {"test_run": "true", "namespace": "simulated_audit"}
    assert got["lead_delivered"]["idempotency_key"] == f"{lead_id}:lead_delivered"
    assert got["lead_delivered"]["tags"] == captured["tags"]
    request = got["http_request"]
    assert (request["route"], request["method"], request["status"]) == ("/api/leads", "POST", 202 if async_on else 201)


# --- the mailer knob and admin view ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        (5, "mailer", "mailer must be an object with latency, error_rate and/or timeout_ms"),
        ({"speed": 1}, "mailer.speed", "mailer: unexpected field speed"),
        (
            {"latency": {"dist": "pareto"}},
            "mailer.latency.dist",
            "mailer.latency.dist must be one of fixed, lognormal, uniform",
        ),
        ({"error_rate": 2}, "mailer.error_rate", "mailer.error_rate must be a number between 0 and 1"),
        ({"timeout_ms": 0}, "mailer.timeout_ms", "mailer.timeout_ms must be a number between 1 and 60000"),
    ],
)
def test_mailer_knob_validation(value: Any, field: str, message: str, http: httpx.Client, a7: str, admin: dict) -> None:
    r = http.put(f"{a7}/admin/faults", headers=admin, json={"telemetry_drop": 0.5, "mailer": value})
    assert (r.status_code, r.json()) == (422, {"error": message, "field": field})
    faults = http.get(f"{a7}/admin/faults", headers=admin).json()
    assert faults["mailer"] == DEFAULT_MAILER and faults["telemetry_drop"] == 0.0


def test_mailer_knob_is_replaced_whole_and_reset_by_delete(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, error_rate=0.25)
    assert http.get(f"{a7}/admin/faults", headers=admin).json()["mailer"] == {**DEFAULT_MAILER, "error_rate": 0.25}
    assert http.delete(f"{a7}/admin/faults", headers=admin).json()["mailer"] == DEFAULT_MAILER
    assert mailer(http, a7, admin)["settings"] == DEFAULT_MAILER


def test_only_a7_has_the_mailer(http: httpx.Client, admin: dict, leads_sandbox: launcher.SandboxState) -> None:
    a8 = leads_sandbox.apps["A8"]
    r = http.put(f"{a8}/admin/faults", headers=admin, json={"mailer": {}})
    assert (r.status_code, r.json()) == (422, {"error": "unknown fault knob: mailer", "field": "mailer"})
    assert "mailer" not in http.get(f"{a8}/admin/faults", headers=admin).json()
    assert http.get(f"{a8}/admin/mailer", headers=admin).status_code == 404


def test_delete_forces_the_breaker_closed(http: httpx.Client, a7: str, admin: dict) -> None:
    set_mailer(http, a7, admin, latency=fixed(1), error_rate=1.0)
    set_async(http, a7, admin, True)
    assert http.post(f"{a7}/api/leads", json=LEAD, headers=contract()).status_code == 202
    wait_until(lambda: mailer(http, a7, admin)["breaker"]["state"] == "open", "the breaker to open")
    r = http.delete(f"{a7}/admin/mailer", headers=admin)
    assert r.status_code == 200
    breaker = r.json()["breaker"]
    assert (breaker["state"], breaker["consecutive_failures"]) == ("closed", 0)
    last = breaker["transitions"][-1]
    assert (last["from"] in ("open", "half_open"), last["to"]) == (True, "closed")


def test_admin_mailer_needs_the_token(http: httpx.Client, a7: str) -> None:
    r = http.get(f"{a7}/admin/mailer", headers={"Authorization": "Bearer wrong"})
    assert (r.status_code, r.json()) == (401, {"error": "admin token required: Authorization: Bearer <admin token>"})


def test_synthetic_key_value_tags_are_accepted(http: httpx.Client, a7: str) -> None:
    """The suite tags synthetic writes with an object (test_run/source/namespace), not a list."""
    body = {"email": "qa@example.test", "name": "QA", "tags": {"test_run": "true", "source": "qa"}}
    r = http.post(f"{a7}/api/leads", json=body, headers=contract())
    assert r.status_code in (201, 202), r.text
