"""The shared idempotency store of the sandbox: replay, mismatch, in-flight, scope, expiry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from sandbox.common.idempotency import (
    KEY_IN_PROGRESS,
    KEY_REUSED,
    IdempotencyStore,
    Outcome,
    Reservation,
    idempotency_scope,
    request_hash,
    run_idempotent,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def store(tmp_path: Path, clock: Clock):
    s = IdempotencyStore(tmp_path / "idem.sqlite", window_s=30, clock=clock)
    yield s
    s.close()


def test_first_use_reserves_and_replay_returns_the_stored_response(store: IdempotencyStore) -> None:
    first = store.begin("identity:a", "/r", "k1", "h1")
    assert isinstance(first, Reservation)
    store.finish(first, Outcome(201, {"id": "x1"}))
    again = store.begin("identity:a", "/r", "k1", "h1")
    assert again == Outcome(201, {"id": "x1"}, replayed=True)
    assert again.response().headers["Idempotent-Replayed"] == "true"


def test_same_key_with_another_body_is_422(store: IdempotencyStore) -> None:
    store.finish(store.begin("global", "/r", "k1", "h1"), Outcome(201, {"id": "x1"}))
    assert store.begin("global", "/r", "k1", "h2") == Outcome(422, {"error": KEY_REUSED, "field": "X-Idempotency-Key"})


def test_key_in_flight_is_409_until_finished(store: IdempotencyStore) -> None:
    held = store.begin("global", "/r", "k1", "h1")
    assert store.begin("global", "/r", "k1", "h1") == Outcome(409, {"error": KEY_IN_PROGRESS,
                                                                     "field": "X-Idempotency-Key"})
    store.finish(held, Outcome(200, {"ok": True}))
    assert store.begin("global", "/r", "k1", "h1").replayed


def test_keys_are_scoped_per_caller_and_route(store: IdempotencyStore) -> None:
    store.finish(store.begin("identity:a", "/r", "k1", "h1"), Outcome(201, {"id": "a"}))
    assert isinstance(store.begin("identity:b", "/r", "k1", "h1"), Reservation)
    assert isinstance(store.begin("identity:a", "/other", "k1", "h1"), Reservation)


def test_key_expires_after_the_window(store: IdempotencyStore, clock: Clock) -> None:
    store.finish(store.begin("global", "/r", "k1", "h1"), Outcome(201, {"id": "old"}))
    clock.now += 29.999
    assert store.begin("global", "/r", "k1", "h1").replayed
    clock.now += 0.002
    assert isinstance(store.begin("global", "/r", "k1", "h2"), Reservation)  # new, even with another body


def test_server_error_releases_the_key_and_release_frees_it(store: IdempotencyStore) -> None:
    store.finish(store.begin("global", "/r", "k1", "h1"), Outcome(503, {"error": "down"}))
    held = store.begin("global", "/r", "k1", "h1")
    assert isinstance(held, Reservation)
    store.release(held)
    assert isinstance(store.begin("global", "/r", "k1", "h1"), Reservation)


def test_purge_drops_expired_keys_only(store: IdempotencyStore, clock: Clock) -> None:
    store.begin("global", "/r", "old", "h")
    clock.now += 20
    store.begin("global", "/r", "new", "h")
    clock.now += 15
    assert store.purge() == 1
    assert store.begin("global", "/r", "new", "h").status == 409


def test_bad_key_and_window_are_refused(tmp_path: Path, store: IdempotencyStore) -> None:
    with pytest.raises(ValueError, match=r"^idempotency key must be 1 to 255 characters$"):
        store.begin("global", "/r", "k" * 256, "h")
    with pytest.raises(ValueError, match=r"^window_s must be >= 0 seconds, got -1$"):
        IdempotencyStore(tmp_path / "x.sqlite", window_s=-1)


def test_request_hash_is_canonical() -> None:
    assert request_hash({"a": 1, "b": [1, 2]}) == request_hash({"b": [1, 2], "a": 1})
    assert request_hash({"a": 1}) != request_hash({"a": 2})


def _request(headers: dict[str, str]) -> Request:
    return Request({"type": "http", "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


def test_scope_prefers_identity_then_credential_digest_then_global() -> None:
    assert idempotency_scope(_request({"X-Synthetic-Identity": "test_provider_e2e_01",
                                       "Authorization": "Bearer t"})) == "identity:test_provider_e2e_01"
    scope = idempotency_scope(_request({"Authorization": "Bearer secret-token"}))
    assert scope.startswith("auth:") and "secret" not in scope and len(scope) == 37
    assert idempotency_scope(_request({})) == "global"


def _app(tmp_path: Path, **kwargs: bool) -> tuple[Starlette, list[object]]:
    calls: list[object] = []
    store = IdempotencyStore(tmp_path / "app.sqlite", window_s=30)

    async def work(body: object) -> Outcome:
        calls.append(body)
        return Outcome(201, {"n": len(calls)})

    async def endpoint(request: Request):
        return await run_idempotent(request, store, "/things", work, **kwargs)

    return Starlette(routes=[Route("/things", endpoint, methods=["POST"])]), calls


def _post_all(app: Starlette, requests: list[dict[str, object]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            return [await client.post("/things", **r) for r in requests]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_run_idempotent_enforces_the_contract(tmp_path: Path) -> None:
    app, calls = _app(tmp_path)
    headers = {"X-Trace-Id": "t", "X-Idempotency-Key": "k"}
    missing, first, again, other, bad = _post_all(app, [
        {"json": {"a": 1}, "headers": {"X-Trace-Id": "t"}}, {"json": {"a": 1}, "headers": headers},
        {"json": {"a": 1}, "headers": headers}, {"json": {"a": 2}, "headers": headers},
        {"content": b"{", "headers": headers}])
    assert (missing.status_code, missing.json()["error"]) == (428, "missing required header: X-Idempotency-Key")
    assert (first.status_code, first.json(), "idempotent-replayed" in first.headers) == (201, {"n": 1}, False)
    assert (again.status_code, again.json(), again.headers["idempotent-replayed"]) == (201, {"n": 1}, "true")
    assert (other.status_code, other.json()["error"]) == (422, KEY_REUSED)
    assert (bad.status_code, bad.json()["error"]) == (400, "body is not valid JSON")
    assert calls == [{"a": 1}]


def test_broken_modes_process_every_request(tmp_path: Path) -> None:
    app, calls = _app(tmp_path, enforce_headers=False, dedupe=False)
    headers = {"X-Trace-Id": "t", "X-Idempotency-Key": "k"}
    answers = _post_all(app, [{"json": {"a": 1}}, {"json": {"a": 1}, "headers": headers},
                              {"json": {"a": 1}, "headers": headers}])
    assert [r.status_code for r in answers] == [201, 201, 201]
    assert [r.json()["n"] for r in answers] == [1, 2, 3]
    assert len(calls) == 3
