"""The guarded client against real loopback servers, plus ``aio.run`` and the pure helpers."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import os
import pickle
import signal
import ssl
import threading
import time
from typing import Any

import pytest

from readiness.core import aio
from readiness.probe.client import (
    ENV_TAGS,
    LOOPBACK_HOSTS,
    ClientLimits,
    GuardedClient,
    PolicyRefused,
    Sample,
    SyntheticPolicy,
    parse_server_timing,
)

IDENTITIES = frozenset({"test_student_e2e_01", "test_provider_e2e_01"})
TAGS = {"test_run": "true", "source": "qa", "namespace": "simulated_audit"}
KNOWN = "['test_provider_e2e_01', 'test_student_e2e_01']"


def make_client(environment: str = "staging", **kwargs: Any) -> GuardedClient:
    synthetic = SyntheticPolicy(identities=IDENTITIES, tags=TAGS, env_tag=ENV_TAGS[environment])
    kwargs.setdefault("allowed_hosts", LOOPBACK_HOSTS)
    return GuardedClient(environment=environment, synthetic=synthetic, **kwargs)  # type: ignore[arg-type]


def send(method: str, url: str, *, environment: str = "staging", client: dict[str, Any] | None = None,
         **kwargs: Any) -> Sample:
    """One request through a fresh client, from sync code (as a notebook would)."""
    async def go() -> Sample:
        async with make_client(environment, **(client or {})) as guarded:
            return await guarded.request(method, url, **kwargs)
    return aio.run(go())


def send_many(url: str, count: int, **client: Any) -> list[Sample]:
    """``count`` sequential GETs through one client."""
    async def go() -> list[Sample]:
        async with make_client(**client) as guarded:
            return [await guarded.get(url) for _ in range(count)]
    return aio.run(go())


# --- successful exchanges and timing -------------------------------------------------------

def test_ok_sample_records_status_body_headers_and_server_timing(loopback):
    url = loopback.url("/ok")
    before = time.time()
    s = send("GET", url, app="A7", route="/ok", keep_body=True)
    assert (s.app, s.method, s.url, s.route, s.status, s.ok, s.error) == ("A7", "GET", url, "/ok", 200, True, None)
    assert s.server_timing_ms == 12.3
    assert s.json() == {"ok": True}
    assert s.bytes == len(b'{"ok": true}') and s.body == b'{"ok": true}'
    assert s.headers["content-type"] == "application/json"
    assert before <= s.started_at <= time.time()


def test_timing_fields_are_plausible(loopback):
    s = send("GET", loopback.url("/slow?delay=0.15"))
    assert s.ok and s.tls_ms is None
    assert s.connect_ms is not None and s.connect_ms >= 0
    assert s.wait_ms is not None and s.wait_ms >= 100  # the server slept 150 ms before answering
    assert s.total_ms is not None and s.total_ms >= s.wait_ms and s.total_ms >= s.connect_ms


def test_wait_is_time_to_first_byte_and_total_runs_to_the_last_byte(loopback):
    s = send("GET", loopback.url("/dribble?n=4&every=0.1"))  # headers at once, then a byte every 100 ms
    assert s.ok and s.bytes == 4
    assert s.wait_ms is not None and s.wait_ms < 80
    assert s.total_ms is not None and s.total_ms >= 380


def test_concurrent_requests_keep_their_own_wire_marks(loopback):
    async def go() -> list[Sample]:
        async with make_client() as guarded:
            return await asyncio.gather(guarded.get(loopback.url("/slow?delay=0.3")),
                                        guarded.get(loopback.url("/ok")))
    slow, fast = aio.run(go())
    assert slow.ok and fast.ok
    assert slow.total_ms is not None and slow.total_ms >= 290 and slow.wait_ms is not None and slow.wait_ms >= 290
    assert fast.total_ms is not None and fast.total_ms < 250


def test_keep_alive_reuses_one_connection_and_reports_no_connect_time(loopback):
    samples = send_many(loopback.url("/ok"), 3, keep_alive=True)
    assert all(s.ok for s in samples)
    assert loopback.connections == 1 and {r.connection for r in loopback.requests} == {1}
    assert samples[0].connect_ms is not None
    assert [s.connect_ms for s in samples[1:]] == [None, None]


def test_keep_alive_off_opens_a_connection_per_request(loopback):
    samples = send_many(loopback.url("/ok"), 3, keep_alive=False)
    assert all(s.ok for s in samples)
    assert loopback.connections == 3 and [r.connection for r in loopback.requests] == [1, 2, 3]
    assert all(s.connect_ms is not None for s in samples)


def test_tls_handshake_time_is_recorded_for_https(tls_loopback, tls_files):
    trust = ssl.create_default_context(cafile=str(tls_files[0]))
    first, second = send_many(tls_loopback.url("/ok"), 2, verify=trust)
    assert first.ok and first.tls_ms is not None and first.tls_ms > 0 and first.connect_ms is not None
    assert second.ok and second.tls_ms is None and second.connect_ms is None  # reused connection


def test_concurrent_requests_share_one_client(loopback):
    async def go() -> list[Sample]:
        async with make_client() as guarded:
            return await asyncio.gather(*(guarded.get(loopback.url(f"/slow?delay=0.1&i={i}")) for i in range(10)))
    samples = aio.run(go())
    assert [s.status for s in samples] == [200] * 10 and len(loopback.requests) == 10


def test_http_error_status_is_not_ok_but_not_an_error(loopback):
    s = send("GET", loopback.url("/status?code=503"))
    assert (s.status, s.ok, s.error, s.error_detail) == (503, False, None, None)


# --- failures are samples ------------------------------------------------------------------

def test_slow_server_gives_a_read_timeout_sample(loopback):
    s = send("GET", loopback.url("/slow?delay=3"), client={"limits": ClientLimits(read_timeout_s=0.2)})
    assert (s.status, s.ok, s.error) == (None, False, "timeout")
    assert s.error_detail == "no data from the server for 0.2 s"
    assert s.total_ms is not None and s.total_ms < 2000


def test_dribbling_server_hits_the_total_limit_with_status_kept(loopback):
    limits = ClientLimits(read_timeout_s=1.0, total_timeout_s=0.4)
    s = send("GET", loopback.url("/dribble?n=50&every=0.05"), client={"limits": limits})
    assert (s.status, s.ok, s.error) == (200, False, "timeout")
    assert s.error_detail == "response not complete within the total limit of 0.4 s"
    assert s.total_ms is not None and 380 <= s.total_ms < 2000


def test_timeout_s_overrides_the_total_limit_for_one_request(loopback):
    s = send("GET", loopback.url("/slow?delay=3"), timeout_s=0.3)
    assert s.error == "timeout" and s.total_ms is not None and s.total_ms < 1500


def test_dead_port_gives_a_connect_error_sample(dead_url):
    s = send("GET", dead_url)
    assert (s.status, s.ok, s.error, s.connect_ms) == (None, False, "connect_error", None)
    assert s.error_detail is not None and s.error_detail.startswith("connection refused")


def test_https_against_a_plain_http_port_gives_a_tls_error_sample():
    # A plain-HTTP server answers the TLS ClientHello with an HTTP error, as nginx or gunicorn do.
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_plain_http() -> None:
        conn, _addr = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=answer_plain_http, daemon=True)
    thread.start()
    try:
        s = send("GET", f"https://127.0.0.1:{port}/")
    finally:
        thread.join(timeout=5)
        server.close()
    assert (s.status, s.ok, s.error) == (None, False, "tls_error")
    assert s.error_detail is not None and s.error_detail.startswith("TLS handshake failed: ")


def test_a_failed_name_lookup_is_classified_as_dns_error():
    # Classified from the exception chain, so no name is looked up (tests send nothing off loopback).
    import socket

    import httpx

    from readiness.probe.client import _classify

    try:
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as inner:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from inner
    except httpx.ConnectError as exc:
        code, text = _classify(exc, httpx.Timeout(1.0))
    assert (code, text) == ("dns_error", "name resolution failed: [Errno -2] Name or service not known")


@pytest.mark.parametrize("path", ["/garbage", "/short"])
def test_non_http_or_truncated_answer_gives_a_protocol_error_sample(loopback, path):
    s = send("GET", loopback.url(path))
    assert (s.ok, s.error) == (False, "protocol_error")
    assert s.error_detail is not None and s.error_detail.startswith("not a valid HTTP exchange: ")


def test_undecodable_body_gives_an_invalid_body_sample(loopback):
    s = send("GET", loopback.url("/bad-gzip"))
    assert (s.status, s.ok, s.error) == (200, False, "invalid_body")


def test_declared_huge_body_is_refused_before_reading(loopback):
    s = send("GET", loopback.url("/huge?size=500000"), client={"limits": ClientLimits(max_response_bytes=100_000)})
    assert (s.status, s.ok, s.error, s.bytes) == (200, False, "too_large", 0)
    assert s.error_detail == "Content-Length 500000 exceeds the 100000 byte cap"


def test_streamed_huge_body_stops_at_the_cap(loopback):
    s = send("GET", loopback.url("/huge?size=500000&chunked=1"), keep_body=True,
             client={"limits": ClientLimits(max_response_bytes=100_000)})
    assert (s.status, s.ok, s.error) == (200, False, "too_large")
    assert 100_000 < s.bytes < 500_000 and s.body is not None and len(s.body) == 100_000


def test_body_exactly_at_the_cap_is_accepted(loopback):
    s = send("GET", loopback.url("/huge?size=100000&chunked=1"), client={"limits": ClientLimits(max_response_bytes=100_000)})
    assert (s.ok, s.error, s.bytes) == (True, None, 100_000)


# --- environment policy --------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_prod_write_without_identity_is_refused_and_not_sent(loopback, method):
    url = loopback.url("/ok")
    with pytest.raises(PolicyRefused) as refused:
        send(method, url, environment="prod", json={"a": 1})
    assert str(refused.value) == (f"refused {method} {url}: environment 'prod' is read-only (GET, HEAD, OPTIONS); "
                                  "a write needs a known synthetic identity")
    assert loopback.requests == []


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_prod_reads_are_allowed_untagged(loopback, method):
    s = send(method, loopback.url("/ok"), environment="prod")
    assert s.status == 200
    assert "x-test-run" not in loopback.requests[0].headers


def test_prod_write_with_known_identity_is_sent_tagged(loopback):
    body = {"amount": 50, "tags": {"campaign": "spring", "test_run": "false"}}
    s = send("POST", loopback.url("/ok"), environment="prod", json=body, synthetic_identity="test_student_e2e_01",
             headers={"X-Test-Run": "false"})
    assert s.ok
    seen = loopback.requests[0]
    assert {k: seen.headers[k] for k in ("x-test-run", "x-source", "x-synthetic-identity", "x-env", "x-namespace")} == {
        "x-test-run": "true", "x-source": "qa", "x-synthetic-identity": "test_student_e2e_01",
        "x-env": "prod_observe", "x-namespace": "simulated_audit"}
    assert seen.json() == {"amount": 50, "tags": {
        "campaign": "spring", "test_run": "true", "source": "qa", "namespace": "simulated_audit",
        "env": "prod_observe", "synthetic_identity": "test_student_e2e_01"}}
    assert body["tags"]["test_run"] == "false"  # the caller's object is not mutated


def test_synthetic_raw_body_is_sent_unchanged_with_tag_headers(loopback):
    send("PUT", loopback.url("/ok"), environment="prod", content=b"raw", synthetic_identity="test_provider_e2e_01")
    seen = loopback.requests[0]
    assert seen.body == b"raw" and seen.headers["x-synthetic-identity"] == "test_provider_e2e_01"


@pytest.mark.parametrize("environment", ["prod", "staging"])
def test_unknown_synthetic_identity_is_refused(loopback, environment):
    url = loopback.url("/ok")
    with pytest.raises(PolicyRefused) as refused:
        send("POST", url, environment=environment, json={}, synthetic_identity="mallory")
    assert str(refused.value) == f"refused POST {url}: unknown synthetic identity 'mallory' (known: {KNOWN})"
    assert loopback.requests == []


def test_staging_allows_writes_and_tags_only_synthetic_ones(loopback):
    assert send("DELETE", loopback.url("/ok")).ok
    assert send("POST", loopback.url("/ok"), json={"x": 1}, synthetic_identity="test_provider_e2e_01").ok
    plain, tagged = loopback.requests
    assert "x-test-run" not in plain.headers
    assert tagged.headers["x-env"] == "staging" and tagged.json()["tags"]["env"] == "staging"


def test_host_outside_the_allowed_set_is_refused_before_any_lookup():
    with pytest.raises(PolicyRefused) as refused:
        send("GET", "http://example.invalid/x")
    assert str(refused.value) == ("refused GET http://example.invalid/x: host 'example.invalid' is not in the "
                                  "allowed hosts ['127.0.0.1', '::1', 'localhost']")


def test_localhost_is_an_allowed_loopback_name(loopback):
    assert send("GET", f"http://localhost:{loopback.port}/ok").ok


# --- trace and idempotency headers ---------------------------------------------------------

def test_trace_and_generated_idempotency_key_reach_the_server(loopback):
    s = send("POST", loopback.url("/ok"), json={}, idempotency_key=True)
    seen = loopback.requests[0].headers
    assert s.trace_id is not None and len(s.trace_id) == 32 and int(s.trace_id, 16) >= 0
    assert seen["x-trace-id"] == s.trace_id and seen["x-idempotency-key"] == s.idempotency_key
    assert s.idempotency_key is not None and s.idempotency_key != s.trace_id


def test_given_idempotency_key_is_used_and_none_sends_none(loopback):
    keyed = send("POST", loopback.url("/ok"), json={}, idempotency_key="order-42")
    bare = send("POST", loopback.url("/ok"), json={}, trace=False)
    first, second = loopback.requests
    assert keyed.idempotency_key == first.headers["x-idempotency-key"] == "order-42"
    assert (bare.trace_id, bare.idempotency_key) == (None, None)
    assert "x-trace-id" not in second.headers and "x-idempotency-key" not in second.headers


def test_caller_headers_win_over_generated_ones(loopback):
    s = send("GET", loopback.url("/ok"), headers={"X-Trace-Id": "caller-trace"},
             client={"default_headers": {"X-Team": "qa", "X-Trace-Id": "default"}})
    assert s.trace_id == "caller-trace"
    assert loopback.requests[0].headers["x-trace-id"] == "caller-trace"
    assert loopback.requests[0].headers["x-team"] == "qa"


# --- response headers, json(), records -----------------------------------------------------

def test_response_headers_drop_credentials_and_redact_cookies(loopback):
    s = send("GET", loopback.url("/cookies"))
    assert s.headers["set-cookie"] == "session=<redacted>; Path=/; HttpOnly; SameSite=None; Secure\ntheme=<redacted>"
    assert "authorization" not in s.headers and "x-api-key" not in s.headers
    assert s.headers["cache-control"] == "no-store"
    assert "leaked" not in json.dumps(s.to_record(headers=True)) and "s3cr3t" not in json.dumps(s.to_record(headers=True))


def test_json_on_a_garbage_body_names_the_request_and_the_problem(loopback):
    url = loopback.url("/not-json")
    s = send("GET", url, keep_body=True)
    with pytest.raises(ValueError) as bad:
        s.json()
    assert str(bad.value) == (f"GET {url}: response body is not JSON: Expecting value at line 1 column 1 "
                              "(status 200, body starts b'<html>oops</html>')")


def test_json_without_a_kept_body_says_how_to_keep_it(loopback):
    url = loopback.url("/ok")
    with pytest.raises(ValueError) as bad:
        send("GET", url).json()
    assert str(bad.value) == f"GET {url}: the response body was not kept (pass keep_body=True)"


def _sample(**overrides: Any) -> Sample:
    fields = dict(app="A1", method="GET", url="http://127.0.0.1:1/x", route="/x", status=200, ok=True, error=None,
                  started_at=1_700_000_000.5, connect_ms=0.4, tls_ms=None, wait_ms=3.25, total_ms=4.0, bytes=12,
                  trace_id="ab" * 16, idempotency_key=None, server_timing_ms=1.5, headers={"etag": "x"})
    return Sample(**{**fields, **overrides})


def test_json_refuses_a_failed_or_non_utf8_body():
    with pytest.raises(ValueError) as failed:
        _sample(status=200, ok=False, error="too_large", error_detail="body exceeds the cap", body=b"{").json()
    assert str(failed.value) == ("GET http://127.0.0.1:1/x: no complete response body to parse "
                                 "(too_large: body exceeds the cap)")
    with pytest.raises(ValueError) as latin:
        _sample(body='{"a": "é"}'.encode("latin-1")).json()
    assert str(latin.value) == ("GET http://127.0.0.1:1/x: response body is not JSON: not UTF-8 text "
                                "(invalid continuation byte at byte 7)")


def test_to_record_round_trips_through_json():
    sample = _sample(body=b"secret body")
    record = sample.to_record()
    assert "body" not in record and "headers" not in record
    assert json.loads(json.dumps(record)) == record
    assert Sample(**record) == dataclasses.replace(sample, body=None, headers={})
    with_headers = json.loads(json.dumps(sample.to_record(headers=True)))
    assert with_headers["headers"] == {"etag": "x"} and Sample(**with_headers) == dataclasses.replace(sample, body=None)
    assert pickle.loads(pickle.dumps(sample)) == sample


@pytest.mark.parametrize(("header", "expected"), [
    ("app;dur=12.3", 12.3), ("db;dur=2.5, app;dur=12.3", 12.3), ("total;dur=40, db;dur=3", 40.0),
    ("db;dur=3", 3.0), ("db;dur=3, cache;dur=1", None), ("miss", None), ('app;desc="x";dur="7.5"', 7.5),
    (["db;dur=1", "app;dur=2"], 2.0), ("app;dur=nan", None), (None, None), ("", None),
])
def test_parse_server_timing(header, expected):
    assert parse_server_timing(header) == expected


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "message"), [
    ({"json": {}, "content": b"x"}, "pass either json or content, not both"),
    ({"timeout_s": 0}, "timeout_s must be positive, got 0"),
    ({"idempotency_key": ""}, "idempotency_key must be a non-empty string, True or None"),
])
def test_bad_request_arguments(loopback, kwargs, message):
    with pytest.raises(ValueError) as bad:
        send("POST", loopback.url("/ok"), **kwargs)
    assert str(bad.value) == message


@pytest.mark.parametrize(("method", "url", "message"), [
    ("GE T", "http://127.0.0.1/", "HTTP method must be a word such as GET or POST, got 'GE T'"),
    ("GET", "ftp://127.0.0.1/x", "URL must be absolute http(s) with a host, got 'ftp://127.0.0.1/x'"),
    ("GET", "/relative", "URL must be absolute http(s) with a host, got '/relative'"),
])
def test_bad_method_or_url(method, url, message):
    with pytest.raises(ValueError) as bad:
        make_client().check(method, url)
    assert str(bad.value) == message


def test_synthetic_tags_must_be_an_object(loopback):
    with pytest.raises(TypeError) as bad:
        send("POST", loopback.url("/ok"), json={"tags": ["x"]}, synthetic_identity="test_student_e2e_01")
    assert str(bad.value) == "JSON body field 'tags' must be an object to carry synthetic tags, got list"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"environment": "qa"}, "environment must be 'staging' or 'prod', got 'qa'"),
    ({"environment": "prod", "env_tag": "staging"},
     "synthetic env_tag 'staging' does not match environment 'prod' (expected 'prod_observe')"),
])
def test_bad_client_configuration(kwargs, message):
    synthetic = SyntheticPolicy(identities=IDENTITIES, tags=TAGS, env_tag=kwargs.pop("env_tag", "staging"))
    with pytest.raises(ValueError) as bad:
        GuardedClient(synthetic=synthetic, **kwargs)
    assert str(bad.value) == message


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"identities": frozenset()}, "synthetic identities must be a non-empty set of non-empty names"),
    ({"tags": {"source": "qa"}}, "synthetic tags must include test_run: 'true' and source: 'qa'"),
    ({"tags": {**TAGS, "env": "x"}},
     "synthetic tag keys must be lower_snake_case and not 'env' or 'synthetic_identity', got ['env']"),
    ({"tags": {**TAGS, "Bad-Key": "x"}},
     "synthetic tag keys must be lower_snake_case and not 'env' or 'synthetic_identity', got ['Bad-Key']"),
    ({"env_tag": "production"}, "synthetic env_tag must be 'staging' or 'prod_observe', got 'production'"),
])
def test_bad_synthetic_policy(kwargs, message):
    with pytest.raises(ValueError) as bad:
        SyntheticPolicy(**{"identities": IDENTITIES, "tags": TAGS, "env_tag": "staging", **kwargs})
    assert str(bad.value) == message


def test_bad_limits():
    with pytest.raises(ValueError) as bad:
        ClientLimits(read_timeout_s=0)
    assert str(bad.value) == "ClientLimits.read_timeout_s must be a positive number, got 0"


# --- aio.run -------------------------------------------------------------------------------

async def _thread_id() -> int:
    return threading.get_ident()


def test_aio_run_outside_a_loop_runs_in_this_thread():
    assert aio.run(_thread_id()) == threading.get_ident()


def test_aio_run_inside_a_running_loop_uses_a_worker_thread_and_keeps_context():
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def read_var() -> tuple[int, str]:
        return threading.get_ident(), var.get()

    async def outer() -> tuple[int, str]:
        var.set("from caller")
        return aio.run(read_var())

    worker, seen = asyncio.run(outer())
    assert worker != threading.get_ident() and seen == "from caller"


async def _boom(kind: type[BaseException]) -> None:
    raise kind("boom")


@pytest.mark.parametrize("kind", [ValueError, KeyboardInterrupt])
def test_aio_run_propagates_exceptions_inside_and_outside_a_loop(kind):
    with pytest.raises(kind, match="^boom$"):
        aio.run(_boom(kind))

    async def outer() -> None:
        aio.run(_boom(kind))
    with pytest.raises(kind, match="^boom$"):
        asyncio.run(outer())


def test_aio_run_rejects_a_non_awaitable():
    with pytest.raises(TypeError) as bad:
        aio.run(42)  # type: ignore[arg-type]
    assert str(bad.value) == "aio.run needs a coroutine or other awaitable, got int"


def _interrupt_soon() -> threading.Timer:
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def _long_wait(cleaned: threading.Event) -> Any:
    async def wait() -> None:
        try:
            await asyncio.sleep(5)
        finally:
            cleaned.set()
    return wait()


def test_ctrl_c_under_asyncio_run_cancels_the_worker_and_raises_keyboard_interrupt():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cleaned = threading.Event()

    async def outer() -> None:
        _interrupt_soon()
        aio.run(_long_wait(cleaned))

    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(outer())
    assert cleaned.is_set() and time.perf_counter() - started < 3


def test_ctrl_c_in_a_kernel_style_loop_cancels_the_worker_and_reraises():
    """A loop without asyncio.run's SIGINT handler, as in a Jupyter kernel."""
    cleaned = threading.Event()

    async def outer() -> None:
        _interrupt_soon()
        aio.run(_long_wait(cleaned))

    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(outer())
    finally:
        loop.close()
    assert cleaned.is_set() and time.perf_counter() - started < 3



def test_aio_run_works_in_cleanup_of_an_already_cancelled_task():
    async def cleanup_value() -> str:
        await asyncio.sleep(0.1)
        return "cleaned"

    async def outer() -> str:
        asyncio.current_task().cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return aio.run(cleanup_value())
        return "not cancelled"

    assert asyncio.run(outer()) == "cleaned"
