"""The sandbox as the suite sees it: real processes, real HTTP on loopback, real SQLite.

Each test leaves the knobs as it found them (an autouse fixture resets faults, flags and
A8's dedupe window on every app), so the order of tests does not matter.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandbox import launcher
from sandbox.catalog import APP_IDS, ROLES

pytestmark = pytest.mark.integration

ARRIVAL_TIMEOUT_S = 5.0
SERVER_TIMING = re.compile(r"^app;dur=(\d+(?:\.\d+)?)$")
DEFAULT_FAULTS = {"latency": {}, "error_rate": {}, "force_503_s": 0.0, "telemetry_drop": 0.0, "dependencies_down": [],
                  "telemetry_sampling": "policy"}
ALL_FLAGS_OFF = {"a2_readiness": False, "a7_async_leads": False, "a8_banner_ttl": False, "a8_demo_mode": False}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def url(sandbox_state: launcher.SandboxState) -> Callable[[str, str], str]:
    return lambda app_id, path: f"{sandbox_state.apps[app_id]}{path}"


@pytest.fixture
def admin(sandbox_state: launcher.SandboxState) -> dict[str, str]:
    return {"Authorization": f"Bearer {sandbox_state.admin_token}"}


@pytest.fixture(autouse=True)
def reset_knobs(sandbox_state: launcher.SandboxState, http: httpx.Client) -> Iterator[None]:
    yield
    auth = {"Authorization": f"Bearer {sandbox_state.admin_token}"}
    for base in sandbox_state.apps.values():
        assert http.delete(f"{base}/admin/faults", headers=auth).status_code == 200
        assert http.put(f"{base}/admin/flags", headers=auth, json=ALL_FLAGS_OFF).status_code == 200
    a8 = sandbox_state.apps["A8"]
    assert http.put(f"{a8}/admin/config", headers=auth, json={"dedupe_window_s": 900}).status_code == 200


def ingest_headers(key: str, *, idem: str | None = "batch", trace: str | None = "trace") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["X-Idempotency-Key"] = f"{idem}-{uuid.uuid4().hex}"
    if trace is not None:
        headers["X-Trace-Id"] = f"{trace}-{uuid.uuid4().hex}"
    return headers


def event(**fields: Any) -> dict[str, Any]:
    base = {
        "event_type": "test_event",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "app_id": "T1",
        "trace_id": uuid.uuid4().hex,
        "idempotency_key": uuid.uuid4().hex,
    }
    return {**base, **fields}


def server_ms(response: httpx.Response) -> float:
    match = SERVER_TIMING.match(response.headers["server-timing"])
    assert match, response.headers["server-timing"]
    return float(match.group(1))


def wait_for_events(http: httpx.Client, a8: str, trace_id: str, timeout_s: float = ARRIVAL_TIMEOUT_S) -> list[dict]:
    """Poll A8 for events with ``trace_id`` until some arrive or the time is up (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = http.get(f"{a8}/api/telemetry/events", params={"trace_id": trace_id}).json()["events"]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


# --- liveness, readiness, smoke actions ----------------------------------------------


@pytest.mark.parametrize("app_id", APP_IDS)
def test_health_base_page_timing_and_trace(app_id: str, http: httpx.Client, url: Callable[[str, str], str]) -> None:
    sent = f"trace-{uuid.uuid4().hex}"
    r = http.get(url(app_id, "/health"), headers={"X-Trace-Id": sent})
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "app_id": app_id}
    assert r.headers["x-trace-id"] == sent
    assert server_ms(r) >= 0
    generated = http.get(url(app_id, "/health")).headers["x-trace-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    page = http.get(url(app_id, "/"))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    if app_id == "A7":  # the marketing app's base page is its public home page (audited by 07 for hygiene)
        assert '<link rel="canonical"' in page.text and 'property="og:title"' in page.text
    else:
        assert f"<title>{app_id} · {ROLES[app_id].title}</title>" in page.text


def test_keep_alive_responses_are_not_held_back(http: httpx.Client, url: Callable[[str, str], str]) -> None:
    """Without TCP_NODELAY on accepted sockets each keep-alive response waits ~40 ms for a delayed ACK."""
    http.get(url("A1", "/health"))  # open the connection
    took = []
    for _ in range(7):
        started = time.perf_counter()
        http.get(url("A1", "/health"))
        took.append((time.perf_counter() - started) * 1000)
    assert sorted(took)[3] < 30, took


@pytest.mark.parametrize("app_id", [a for a in APP_IDS if a != "A2"])
def test_deep_readiness(app_id: str, http: httpx.Client, url: Callable[[str, str], str]) -> None:
    r = http.get(url(app_id, "/ready"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"db", "queue", "upstream"}
    for check in body["checks"].values():
        assert check["ok"] is True and check["error"] is None
        assert isinstance(check["latency_ms"], float)


def test_a2_readiness_exists_only_behind_its_flag(http: httpx.Client, url: Callable, admin: dict) -> None:
    assert http.get(url("A2", "/ready")).status_code == 404
    on = http.put(url("A2", "/admin/flags"), headers=admin, json={"a2_readiness": True})
    assert on.status_code == 200 and on.json()["a2_readiness"] is True
    ready = http.get(url("A2", "/ready"))
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"db", "queue", "upstream"}
    off = http.put(url("A2", "/admin/flags"), headers=admin, json={"a2_readiness": False})
    assert off.json() == ALL_FLAGS_OFF
    rolled_back = http.get(url("A2", "/ready"))
    assert rolled_back.status_code == 404
    assert rolled_back.text == http.get(url("A2", "/no-such-path")).text == "Not Found"


def test_dependencies_down_fail_the_named_checks(http: httpx.Client, url: Callable, admin: dict) -> None:
    r = http.put(url("A4", "/admin/faults"), headers=admin, json={"dependencies_down": ["upstream", "db"]})
    assert r.json()["dependencies_down"] == ["db", "upstream"]
    ready = http.get(url("A4", "/ready"))
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert ready.json()["status"] == "unready"
    assert checks["db"] == {"ok": False, "latency_ms": 0.0, "error": "db marked down by fault knob dependencies_down"}
    assert checks["upstream"]["error"] == "upstream marked down by fault knob dependencies_down"
    assert checks["queue"]["ok"] is True
    assert http.get(url("A4", "/health")).status_code == 200  # liveness is not readiness
    http.delete(url("A4", "/admin/faults"), headers=admin)
    assert http.get(url("A4", "/ready")).status_code == 200


def test_upstream_check_calls_the_real_upstream(http: httpx.Client, url: Callable, admin: dict) -> None:
    http.put(url("A8", "/admin/faults"), headers=admin, json={"force_503_s": 30})
    ready = http.get(url("A3", "/ready"))
    assert ready.status_code == 503
    assert ready.json()["checks"]["upstream"]["error"] == "RuntimeError: A8 /health answered 503"
    http.delete(url("A8", "/admin/faults"), headers=admin)
    assert http.get(url("A3", "/ready")).status_code == 200


def test_smoke_actions_serve_seeded_data(http: httpx.Client, url: Callable, sandbox_state) -> None:
    oidc = http.get(url("A1", "/.well-known/openid-configuration")).json()
    assert oidc["issuer"] == sandbox_state.apps["A1"]
    assert oidc["jwks_uri"] == f"{sandbox_state.apps['A1']}/.well-known/jwks.json"
    assert oidc["response_types_supported"] == ["code"]
    assert http.get(url("A2", "/api/courses")).json()["count"] == 4
    runs = http.get(url("A3", "/api/runs/status")).json()
    assert runs["counts"] == {"queued": 1, "running": 1, "completed": 1, "failed": 0}
    assert http.get(url("A4", "/api/documents")).json()["count"] == 4
    prices = {p["id"]: p for p in http.get(url("A5", "/api/prices")).json()["prices"]}
    assert prices["price_micro_qa"] == {
        "id": "price_micro_qa",
        "nickname": "Micro QA Charge",
        "unit_amount": 50,
        "currency": "usd",
    }
    listings = http.get(url("A6", "/api/listings")).json()
    assert listings["count"] == 3 and listings["listings"][0]["provider_name"] == "Northwind Academy"
    tiles = http.get(url("A8", "/api/tiles")).json()["tiles"]
    assert [t["id"] for t in tiles] == ["requests_per_app", "errors_per_app", "p95_ms_per_app", "telemetry_acceptance",
                                        "growth_signups", "finance_revenue_live", "finance_revenue_diagnostics",
                                        "b2b_billing"]


def test_sitemap_is_valid_and_lists_live_pages(http: httpx.Client, url: Callable, sandbox_state) -> None:
    r = http.get(url("A7", "/sitemap.xml"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    root = ET.fromstring(r.content)
    assert root.tag == "{http://www.sitemaps.org/schemas/sitemap/0.9}urlset"
    locs = [u.findtext("s:loc", namespaces=ns) for u in root.findall("s:url", ns)]
    base = sandbox_state.apps["A7"]
    assert locs == [f"{base}/", f"{base}/about", f"{base}/courses", f"{base}/for-providers", f"{base}/pricing"]
    for loc in locs:
        assert http.get(loc).status_code == 200
    assert http.get(f"{base}/no-such-page").status_code == 404


# --- admin API -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/admin/faults", "/admin/flags", "/admin/telemetry"])
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", "Basic abc"])
def test_admin_requires_the_token(path: str, auth: str | None, http: httpx.Client, url: Callable) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = http.get(url("A3", path), headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "admin token required: Authorization: Bearer <admin token>"}
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([], "body", "body must be a JSON object"),
        ({"slowness": 1}, "slowness", "unknown fault knob: slowness"),
        ({"latency": []}, "latency", "latency must be an object mapping a route or '*' to a distribution"),
        (
            {"latency": {"api": {"dist": "fixed", "ms": 1}}},
            "latency",
            "latency: route must be '*' or start with '/': api",
        ),
        ({"latency": {"*": {"ms": 1}}}, "latency[*]", "latency[*] must be an object with a 'dist'"),
        (
            {"latency": {"*": {"dist": "pareto"}}},
            "latency[*].dist",
            "latency[*].dist must be one of fixed, lognormal, uniform",
        ),
        (
            {"latency": {"*": {"dist": "fixed", "ms": -1}}},
            "latency[*].ms",
            "latency[*].ms must be a number between 0 and 60000",
        ),
        (
            {"latency": {"*": {"dist": "fixed", "ms": "5"}}},
            "latency[*].ms",
            "latency[*].ms must be a number between 0 and 60000",
        ),
        (
            {"latency": {"/x": {"dist": "fixed", "ms": 5, "sigma": 1}}},
            "latency[/x].sigma",
            "latency[/x]: unexpected field sigma for dist fixed",
        ),
        (
            {"latency": {"*": {"dist": "lognormal", "median_ms": 10, "sigma": 9}}},
            "latency[*].sigma",
            "latency[*].sigma must be a number between 0 and 5",
        ),
        (
            {"latency": {"*": {"dist": "uniform", "low_ms": 9, "high_ms": 3}}},
            "latency[*].high_ms",
            "latency[*].high_ms must be >= low_ms",
        ),
        ({"error_rate": {"*": 1.5}}, "error_rate[*]", "error_rate[*] must be a number between 0 and 1"),
        ({"error_rate": {"*": True}}, "error_rate[*]", "error_rate[*] must be a number between 0 and 1"),
        ({"force_503_s": -1}, "force_503_s", "force_503_s must be a number of seconds between 0 and 86400"),
        ({"telemetry_drop": 2}, "telemetry_drop", "telemetry_drop must be a number between 0 and 1"),
        (
            {"dependencies_down": ["disk"]},
            "dependencies_down",
            "dependencies_down must be a list drawn from db, queue, upstream",
        ),
    ],
)
def test_invalid_fault_values_are_refused_and_change_nothing(
    body: Any, field: str, message: str, http: httpx.Client, url: Callable, admin: dict
) -> None:
    # A valid knob first in the body proves that validation is all-or-nothing.
    payload = {"telemetry_drop": 0.5, **body} if isinstance(body, dict) else body
    r = http.put(url("A5", "/admin/faults"), headers=admin, json=payload)
    assert r.status_code == 422
    assert r.json() == {"error": message, "field": field}
    assert http.get(url("A5", "/admin/faults"), headers=admin).json() == DEFAULT_FAULTS


def test_flags_validation(http: httpx.Client, url: Callable, admin: dict) -> None:
    r = http.put(url("A7", "/admin/flags"), headers=admin, json={"a7_async_leads": True, "dark_mode": True})
    assert (r.status_code, r.json()) == (422, {"error": "unknown flag: dark_mode", "field": "dark_mode"})
    r = http.put(url("A7", "/admin/flags"), headers=admin, json={"a7_async_leads": "yes"})
    assert r.json() == {"error": "flag a7_async_leads must be true or false", "field": "a7_async_leads"}
    assert http.get(url("A7", "/admin/flags"), headers=admin).json() == ALL_FLAGS_OFF
    r = http.put(url("A7", "/admin/flags"), headers=admin, content=b"{not json")
    assert (r.status_code, r.json()) == (400, {"error": "body is not valid JSON"})


def test_dedupe_window_config_validation(http: httpx.Client, url: Callable, admin: dict) -> None:
    r = http.put(url("A8", "/admin/config"), headers=admin, json={"dedupe_window_s": -5})
    assert r.status_code == 422
    assert r.json() == {
        "error": "dedupe_window_s must be a number of seconds between 0 and 86400",
        "field": "dedupe_window_s",
    }
    r = http.put(url("A8", "/admin/config"), headers=admin, json={"window": 5})
    assert r.json() == {"error": "unknown config key: window", "field": "window"}
    assert http.get(url("A8", "/admin/config"), headers=admin).json() == {"dedupe_window_s": 900.0}


# --- contract headers: 428 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("idem", "trace", "message", "missing"),
    [
        (None, "t", "missing required header: X-Idempotency-Key", ["X-Idempotency-Key"]),
        ("k", None, "missing required header: X-Trace-Id", ["X-Trace-Id"]),
        (None, None, "missing required headers: X-Idempotency-Key, X-Trace-Id", ["X-Idempotency-Key", "X-Trace-Id"]),
    ],
)
def test_428_without_contract_headers(
    idem: str | None,
    trace: str | None,
    message: str,
    missing: list[str],
    http: httpx.Client,
    url: Callable,
    telemetry_key: str,
) -> None:
    headers = ingest_headers(telemetry_key, idem=idem, trace=trace)
    r = http.post(url("A8", "/api/telemetry/events"), headers=headers, json=event())
    assert (r.status_code, r.json()) == (428, {"error": message, "missing": missing})
    r = http.post(url("A5", "/api/checkout/sessions"), headers=headers, json={"price_id": "price_micro_qa"})
    assert (r.status_code, r.json()) == (428, {"error": message, "missing": missing})


@pytest.mark.parametrize("auth", [None, "Bearer not-the-key"])
def test_ingest_requires_the_telemetry_key(auth: str | None, http: httpx.Client, url: Callable) -> None:
    headers = {"X-Idempotency-Key": "k", "X-Trace-Id": "t", **({"Authorization": auth} if auth else {})}
    r = http.post(url("A8", "/api/telemetry/events"), headers=headers, json=event())
    assert (r.status_code, r.json()) == (
        401,
        {"error": "telemetry key required: Authorization: Bearer <A8_TELEMETRY_KEY>"},
    )


def test_checkout_session_is_created_once_and_replayed(http: httpx.Client, url: Callable) -> None:
    key, trace = f"idem-{uuid.uuid4().hex}", f"trace-{uuid.uuid4().hex}"
    headers = {"X-Idempotency-Key": key, "X-Trace-Id": trace}
    first = http.post(
        url("A5", "/api/checkout/sessions"), headers=headers, json={"price_id": "price_micro_qa", "quantity": 2}
    )
    assert first.status_code == 201
    session = first.json()
    assert session["status"] == "pending" and session["amount_total"] == 100 and session["trace_id"] == trace
    assert session["id"].startswith("cs_test_")
    replay = http.post(
        url("A5", "/api/checkout/sessions"), headers=headers, content=b'{"quantity": 2, "price_id": "price_micro_qa"}'
    )
    assert (replay.status_code, replay.json()) == (201, session)
    assert replay.headers["idempotent-replayed"] == "true"
    other = http.post(url("A5", "/api/checkout/sessions"), headers=headers, json={"price_id": "price_micro_qa"})
    assert (other.status_code, other.json()) == (
        422,
        {"error": "X-Idempotency-Key was already used with a different request body", "field": "X-Idempotency-Key"},
    )
    fresh = {"X-Idempotency-Key": f"idem-{uuid.uuid4().hex}", "X-Trace-Id": trace}
    unknown = http.post(url("A5", "/api/checkout/sessions"), headers=fresh, json={"price_id": "price_nope"})
    assert (unknown.status_code, unknown.json()) == (422, {"error": "unknown price_id: price_nope"})
    bad_qty = http.post(
        url("A5", "/api/checkout/sessions"), headers=fresh, json={"price_id": "price_micro_qa", "quantity": 0}
    )
    assert bad_qty.json() == {"error": "quantity must be an integer between 1 and 100"}


# --- A8 ingest: dedupe, schema, queries -------------------------------------------------


def test_dedupe_within_the_window_only(http: httpx.Client, url: Callable, admin: dict, telemetry_key: str) -> None:
    ingest = url("A8", "/api/telemetry/events")
    one = event()
    assert http.post(ingest, headers=ingest_headers(telemetry_key), json=one).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }
    again = http.post(ingest, headers=ingest_headers(telemetry_key), json={"events": [one, one]})
    assert (again.status_code, again.json()) == (202, {"accepted": 0, "duplicates": 2, "rejected": []})
    other_trace = {**one, "trace_id": uuid.uuid4().hex}
    assert http.post(ingest, headers=ingest_headers(telemetry_key), json=other_trace).json()["accepted"] == 1
    assert http.put(url("A8", "/admin/config"), headers=admin, json={"dedupe_window_s": 0}).status_code == 200
    outside = http.post(ingest, headers=ingest_headers(telemetry_key), json=one).json()
    assert outside == {"accepted": 1, "duplicates": 0, "rejected": []}
    stored = http.get(url("A8", "/api/telemetry/events"), params={"trace_id": one["trace_id"]}).json()
    assert stored["count"] == 2


def test_schema_rejects_bad_events_one_by_one(http: httpx.Client, url: Callable, telemetry_key: str) -> None:
    good = event()
    missing_ts = event()
    del missing_ts["timestamp"]
    batch = [
        good,
        missing_ts,
        event(event_type="unknown"),
        event(event_type=""),
        event(timestamp="yesterday"),
        event(timestamp="2024-05-01"),
        event(app_id=7),
        event(status="200"),
        event(latency_ms=True),
        "not an event",
    ]
    r = http.post(url("A8", "/api/telemetry/events"), headers=ingest_headers(telemetry_key), json={"events": batch})
    assert r.status_code == 202
    assert r.json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [
            {"index": 1, "error": "missing required field: timestamp"},
            {"index": 2, "error": "event_type must be a non-empty string other than 'unknown'"},
            {"index": 3, "error": "event_type must be a non-empty string other than 'unknown'"},
            {"index": 4, "error": "timestamp must be an ISO-8601 date-time string"},
            {"index": 5, "error": "timestamp must be an ISO-8601 date-time string"},
            {"index": 6, "error": "app_id must be a non-empty string"},
            {"index": 7, "error": "status must be a number"},
            {"index": 8, "error": "latency_ms must be a number"},
            {"index": 9, "error": "event must be a JSON object"},
        ],
    }


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"[1, 2]", 422, 'body must be an event object or {"events": [...]}'),
        (b'{"events": {"a": 1}}', 422, "events must be a list"),
        (b"{oops", 400, "body is not valid JSON"),
        (b"", 400, "body must be JSON"),
    ],
)
def test_ingest_body_shape(
    content: bytes, status: int, message: str, http: httpx.Client, url: Callable, telemetry_key: str
) -> None:
    r = http.post(url("A8", "/api/telemetry/events"), headers=ingest_headers(telemetry_key), content=content)
    assert (r.status_code, r.json()) == (status, {"error": message, **({"field": "body"} if status == 400 else {})})


def test_summary_events_and_stats(http: httpx.Client, url: Callable, telemetry_key: str) -> None:
    app = f"T-{uuid.uuid4().hex[:8]}"
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    events = [
        event(
            app_id=app,
            event_type="http_request",
            timestamp=(t0 + dt.timedelta(seconds=i)).isoformat(),
            latency_ms=float(10 * (i + 1)),
            status=500 if i == 3 else 200,
        )
        for i in range(10)
    ]
    since = dt.datetime.now(dt.UTC).isoformat()
    body = {"events": [*events, events[0], event(event_type="unknown")]}
    assert (
        http.post(url("A8", "/api/telemetry/events"), headers=ingest_headers(telemetry_key), json=body).status_code
        == 202
    )
    until = dt.datetime.now(dt.UTC).isoformat()
    summary = http.get(url("A8", "/api/telemetry/summary"), params={"app_id": app}).json()
    assert summary == {
        "app_id": app,
        "event_type": "http_request",
        "n": 10,
        "errors": 1,
        "p50_ms": 55.0,
        "p95_ms": 95.5,
        "first": t0.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "last": (t0 + dt.timedelta(seconds=9)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    window = {"app_id": app, "since": events[2]["timestamp"], "until": events[5]["timestamp"]}
    assert http.get(url("A8", "/api/telemetry/summary"), params=window).json()["n"] == 3
    newest = http.get(url("A8", "/api/telemetry/events"), params={"app_id": app, "limit": 3}).json()["events"]
    assert [e["latency_ms"] for e in newest] == [80.0, 90.0, 100.0]  # the newest, newest last
    stats = http.get(url("A8", "/api/telemetry/stats"), params={"since": since, "until": until}).json()
    # Emitters post in the same window; they never send rejected or duplicate events.
    assert stats["rejected"] == 1 and stats["duplicates"] == 1
    assert stats["received"] >= 12 and stats["accepted"] >= 10


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/api/telemetry/events", {"since": "last week"}, "since must be an ISO-8601 date-time"),
        ("/api/telemetry/events", {"limit": "0"}, "limit must be an integer between 1 and 1000"),
        ("/api/telemetry/events", {"limit": "5000"}, "limit must be an integer between 1 and 1000"),
        ("/api/telemetry/summary", {"until": "2024-13-01T00:00:00Z"}, "until must be an ISO-8601 date-time"),
        ("/api/telemetry/stats", {"since": "now"}, "since must be an ISO-8601 date-time"),
    ],
)
def test_query_parameters_are_validated(
    path: str, params: dict, message: str, http: httpx.Client, url: Callable
) -> None:
    r = http.get(url("A8", path), params=params)
    assert (r.status_code, r.json()) == (422, {"error": message})


# --- telemetry emission ----------------------------------------------------------------


@pytest.mark.parametrize("app_id", APP_IDS)
def test_requests_arrive_at_a8_with_the_trace_id_sent(app_id: str, http: httpx.Client, url: Callable) -> None:
    trace = f"arrival-{app_id}-{uuid.uuid4().hex}"
    tags = {"X-Test-Run": "true", "X-Source": "qa", "X-Synthetic-Identity": "test_student_e2e_01", "X-Env": "staging"}
    smoke = ROLES[app_id].smoke_path
    assert http.get(url(app_id, smoke), headers={"X-Trace-Id": trace, **tags}).status_code == 200
    found = wait_for_events(http, url("A8", ""), trace)
    assert len(found) == 1, f"no event for {app_id} within {ARRIVAL_TIMEOUT_S} s"
    got = found[0]
    assert {k: got[k] for k in ("event_type", "app_id", "route", "method", "status", "trace_id")} == {
        "event_type": "http_request",
        "app_id": app_id,
        "route": smoke,
        "method": "GET",
        "status": 200,
        "trace_id": trace,
    }
    assert got["tags"] == {
        "test_run": "true",
        "source": "qa",
        "synthetic_identity": "test_student_e2e_01",
        "env": "staging",
    }
    assert got["latency_ms"] >= 0 and got["timestamp"].endswith("Z")


def test_route_templates_not_raw_paths(http: httpx.Client, url: Callable) -> None:
    trace = uuid.uuid4().hex
    http.get(url("A7", "/pricing"), headers={"X-Trace-Id": trace})
    found = wait_for_events(http, url("A8", ""), trace)
    assert [e["route"] for e in found] == ["/{slug}"]


def test_telemetry_drop_stops_arrival(http: httpx.Client, url: Callable, admin: dict) -> None:
    before = http.get(url("A6", "/admin/telemetry"), headers=admin).json()
    http.put(url("A6", "/admin/faults"), headers=admin, json={"telemetry_drop": 1})
    dropped = f"dropped-{uuid.uuid4().hex}"
    http.get(url("A6", "/api/listings"), headers={"X-Trace-Id": dropped})
    http.put(url("A6", "/admin/faults"), headers=admin, json={"telemetry_drop": 0})
    marker = f"marker-{uuid.uuid4().hex}"
    http.get(url("A6", "/api/listings"), headers={"X-Trace-Id": marker})
    # Events leave A6 in order: once the later marker has arrived, the dropped one never will.
    assert wait_for_events(http, url("A8", ""), marker)
    assert http.get(url("A8", "/api/telemetry/events"), params={"trace_id": dropped}).json()["events"] == []
    after = http.get(url("A6", "/admin/telemetry"), headers=admin).json()
    assert after["dropped_by_fault"] - before["dropped_by_fault"] >= 1
    assert after["sink"] == "HttpSink"


# --- fault knobs ---------------------------------------------------------------------


def test_forced_503_window(http: httpx.Client, url: Callable, admin: dict) -> None:
    http.put(url("A4", "/admin/faults"), headers=admin, json={"force_503_s": 30})
    for path in ("/health", "/ready", "/api/documents", "/"):
        r = http.get(url("A4", path))
        assert (r.status_code, r.json()) == (503, {"error": "service unavailable (fault knob force_503_s)"})
        assert 1 <= int(r.headers["retry-after"]) <= 30
    knobs = http.get(url("A4", "/admin/faults"), headers=admin)
    assert knobs.status_code == 200 and 0 < knobs.json()["force_503_s"] <= 30
    http.put(url("A4", "/admin/faults"), headers=admin, json={"force_503_s": 1})
    assert http.get(url("A4", "/health")).status_code == 503
    time.sleep(1.1)
    assert http.get(url("A4", "/health")).status_code == 200


def test_fixed_latency_on_one_route(http: httpx.Client, url: Callable, admin: dict) -> None:
    http.put(
        url("A2", "/admin/faults"), headers=admin, json={"latency": {"/api/courses": {"dist": "fixed", "ms": 250}}}
    )
    started = time.perf_counter()
    slow = http.get(url("A2", "/api/courses"))
    assert time.perf_counter() - started >= 0.25
    assert server_ms(slow) >= 250
    assert server_ms(http.get(url("A2", "/health"))) < 250


@pytest.mark.parametrize(
    ("spec", "floor_ms"),
    [
        ({"dist": "uniform", "low_ms": 150, "high_ms": 200}, 150),
        ({"dist": "lognormal", "median_ms": 120, "sigma": 0}, 120),
    ],
)
def test_latency_distributions_on_every_route(
    spec: dict, floor_ms: float, http: httpx.Client, url: Callable, admin: dict
) -> None:
    http.put(url("A6", "/admin/faults"), headers=admin, json={"latency": {"*": spec}})
    for path in ("/health", "/api/listings"):
        assert server_ms(http.get(url("A6", path))) >= floor_ms
    assert server_ms(http.get(url("A6", "/admin/faults"), headers=admin)) < floor_ms  # admin is exempt


def test_error_rate(http: httpx.Client, url: Callable, admin: dict) -> None:
    http.put(url("A3", "/admin/faults"), headers=admin, json={"error_rate": {"/api/runs/status": 1}})
    for _ in range(3):
        r = http.get(url("A3", "/api/runs/status"))
        assert (r.status_code, r.json()) == (500, {"error": "internal error (fault knob error_rate)"})
    assert http.get(url("A3", "/health")).status_code == 200


def test_per_request_fault_headers_need_the_token(http: httpx.Client, url: Callable, sandbox_state) -> None:
    token = {"X-Sandbox-Token": sandbox_state.admin_token}
    assert http.get(url("A1", "/health"), headers={"X-Sandbox-Status": "503"}).status_code == 200
    assert (
        http.get(url("A1", "/health"), headers={"X-Sandbox-Status": "503", "X-Sandbox-Token": "nope"}).status_code
        == 200
    )
    forced = http.get(url("A1", "/health"), headers={"X-Sandbox-Status": "503", **token})
    assert (forced.status_code, forced.json()) == (503, {"forced_status": 503, "source": "X-Sandbox-Status"})
    assert server_ms(http.get(url("A1", "/health"), headers={"X-Sandbox-Delay-Ms": "200", **token})) >= 200
    bad = http.get(url("A1", "/health"), headers={"X-Sandbox-Delay-Ms": "soon", **token})
    assert (bad.status_code, bad.json()) == (422, {"error": "X-Sandbox-Delay-Ms must be a number between 0 and 60000"})
    bad = http.get(url("A1", "/health"), headers={"X-Sandbox-Status": "99", **token})
    assert bad.json() == {"error": "X-Sandbox-Status must be an integer between 200 and 599"}


# --- launcher lifecycle ----------------------------------------------------------------


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_status_reuse_down(tmp_path: Path) -> None:
    apps = [launcher.AppSpec("A1", 28131), launcher.AppSpec("A8", 28132)]
    try:
        state = launcher.up(apps, tmp_path, flags={"a8_demo_mode": True}, timeout_s=20)
        assert state.apps == {"A1": "http://127.0.0.1:28131", "A8": "http://127.0.0.1:28132"}
        assert (tmp_path / "sandbox.json").stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "logs" / "A1.log").is_file()
        assert launcher.status(tmp_path) == state
        assert launcher.up(apps, tmp_path, timeout_s=20) == state  # reused, not restarted
        flags = httpx.get(f"{state.apps['A8']}/admin/flags", headers={"Authorization": f"Bearer {state.admin_token}"})
        assert flags.json()["a8_demo_mode"] is True
        with pytest.raises(launcher.SandboxError) as moved:
            launcher.up([launcher.AppSpec("A1", 28133)], tmp_path)
        assert str(moved.value) == (
            f"a sandbox with other apps or ports is already running from {tmp_path.resolve()}; run down first"
        )
    finally:
        stopped = launcher.down(tmp_path, timeout_s=5)
    assert stopped == ["A1", "A8"]
    assert launcher.status(tmp_path) is None
    assert not _listening(28131) and not _listening(28132)
    assert launcher.down(tmp_path) == []


def test_port_in_use_is_a_clear_error_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 28142))
        blocker.listen()
        with pytest.raises(launcher.SandboxError) as err:
            launcher.up([launcher.AppSpec("A1", 28141), launcher.AppSpec("A8", 28142)], tmp_path)
        assert str(err.value) == "cannot start A8: port 28142 on 127.0.0.1 is already in use"
        assert launcher.status(tmp_path) is None
        assert not _listening(28141)
        served = subprocess.run(
            [sys.executable, "-m", "sandbox", "serve", "--app", "A8", "--port", "28142", "--state-dir", str(tmp_path)],
            env={"SANDBOX_ADMIN_TOKEN": "t", "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert served.returncode == 3
    assert served.stderr == "sandbox A8: port 28142 on 127.0.0.1 is already in use\n"


@pytest.mark.parametrize(
    ("apps", "kwargs", "message"),
    [
        ([launcher.AppSpec("A9", 28151)], {}, "unknown sandbox app: A9 (known: A1, A2, A3, A4, A5, A6, A7, A8)"),
        (
            [launcher.AppSpec("A1", 28151), launcher.AppSpec("A2", 28151)],
            {},
            "port 28151 is assigned to both A1 and A2",
        ),
        ([launcher.AppSpec("A1", 28151, host="0.0.0.0")], {}, "A1: host 0.0.0.0 is not a loopback IP address"),
        ([launcher.AppSpec("A1", 28151)], {"flags": {"dark_mode": True}}, "flags: unknown flag: dark_mode"),
        ([], {}, "no apps given"),
    ],
)
def test_up_refuses_bad_specs(apps: list, kwargs: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(launcher.SandboxError) as err:
        launcher.up(apps, tmp_path, **kwargs)
    assert str(err.value) == message
    assert not _listening(28151)
