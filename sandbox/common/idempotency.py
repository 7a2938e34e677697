"""One idempotency store for every route with side effects, in its own SQLite file.

A client that retries a request after a timeout cannot know whether the first attempt
took effect; the ``X-Idempotency-Key`` it sends lets the server answer "already done"
instead of doing it twice. The rules, the same on every route that uses this module:

* **Scope.** A key belongs to its caller — the ``X-Synthetic-Identity`` header, else a
  digest of the ``Authorization`` credential (the credential stands for its subject
  without being trusted for anything else), else one global scope — and to its route,
  so two callers (or two routes) can never collide on a key.
* **Same key, same request** (the body compared in canonical JSON form, so whitespace
  and key order do not matter) within the window: the stored response is replayed,
  status and body, with ``Idempotent-Replayed: true``, and nothing runs again.
* **Same key, different request**: 422, nothing runs.
* **Same key while the first request is still running**: 409 — the first one's outcome
  is not known yet, so neither a replay nor a second run would be honest.
* **Expiry.** A key is remembered for ``window_s`` seconds from its first use (the
  dedupe window, compressed by the quick profile); after that a request with the same
  key is new.
* A 5xx outcome is not stored: the key is released so that a retry can succeed.

For audits, a route can be made to hold its key while it works: with the sandbox token
(``X-Sandbox-Token``), ``X-Sandbox-Hold-Ms: <ms>`` sleeps that long *after* the key is
reserved, so a concurrent duplicate reliably meets the in-flight marker. (The shared
``X-Sandbox-Delay-Ms`` delays a request before its handler runs, which cannot make two
requests overlap inside it.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.common.context import ctx_of
from sandbox.common.knobs import MAX_DELAY_MS
from sandbox.common.middleware import MAX_TAG
from sandbox.common.sqlite import Database
from sandbox.common.web import BadBody, json_error, missing_contract_headers, read_json, token_matches

SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,
    route TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code INTEGER,           -- NULL while the first request is still being answered
    response TEXT,                 -- the JSON body sent, replayed verbatim
    created_epoch REAL NOT NULL,
    PRIMARY KEY (scope, route, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_epoch);
"""

MAX_KEY = 255
KEY_REUSED = "X-Idempotency-Key was already used with a different request body"
KEY_IN_PROGRESS = "a request with this X-Idempotency-Key is still being processed"
REPLAYED_HEADER = "Idempotent-Replayed"
HOLD_HEADER = "x-sandbox-hold-ms"


def idempotency_scope(request: Request) -> str:
    """Whose key this is: the synthetic identity, else the credential's digest, else global."""
    identity = request.headers.get("x-synthetic-identity", "").strip()
    if identity:
        return f"identity:{identity[:MAX_TAG]}"
    credential = request.headers.get("authorization", "").strip()
    if credential:
        return "auth:" + hashlib.sha256(credential.encode()).hexdigest()[:32]
    return "global"


def request_hash(body: Any) -> str:
    """sha256 of the body's canonical JSON (sorted keys, no spaces): equal requests, equal hashes."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A response decided by the store (replay, 409, 422) or by the route's own work."""

    status: int
    body: dict[str, Any]
    replayed: bool = False
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def response(self) -> JSONResponse:
        headers = {**self.headers, **({REPLAYED_HEADER: "true"} if self.replayed else {})}
        return JSONResponse(self.body, status_code=self.status, headers=headers)


@dataclasses.dataclass(frozen=True)
class Reservation:
    """A key this request now holds (in flight) until :meth:`IdempotencyStore.finish` or ``release``."""

    scope: str
    route: str
    key: str
    request_hash: str
    created_epoch: float


class IdempotencyStore:
    """Reservations and stored responses of one app, in ``path`` (see the module docstring)."""

    def __init__(self, path: Path, window_s: float, clock: Callable[[], float] = time.time) -> None:
        if not window_s >= 0:
            raise ValueError(f"window_s must be >= 0 seconds, got {window_s!r}")
        self.db = Database(path, SCHEMA)
        self.window_s = float(window_s)
        self.clock = clock

    def begin(self, scope: str, route: str, key: str, hashed: str) -> Reservation | Outcome:
        """Reserve ``key`` for this request, or return the answer owed to a key already seen.

        Expired rows of this key are dropped first, in the same transaction, so the
        check and the reservation cannot interleave with a concurrent duplicate.
        """
        if not key or len(key) > MAX_KEY:
            raise ValueError(f"idempotency key must be 1 to {MAX_KEY} characters")
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = ? AND route = ? AND idempotency_key = ?"
                " AND created_epoch <= ?",
                (scope, route, key, now - self.window_s),
            )
            row = conn.execute(
                "SELECT request_hash, status_code, response FROM idempotency_keys"
                " WHERE scope = ? AND route = ? AND idempotency_key = ?",
                (scope, route, key),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO idempotency_keys (scope, route, idempotency_key, request_hash, created_epoch)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (scope, route, key, hashed, now),
                )
                return Reservation(scope, route, key, hashed, now)
        if row["request_hash"] != hashed:
            return Outcome(422, {"error": KEY_REUSED, "field": "X-Idempotency-Key"})
        if row["status_code"] is None:
            return Outcome(409, {"error": KEY_IN_PROGRESS, "field": "X-Idempotency-Key"})
        return Outcome(int(row["status_code"]), json.loads(row["response"]), replayed=True)

    def finish(self, reservation: Reservation, outcome: Outcome) -> None:
        """Store the outcome for replays; a 5xx releases the key instead (a retry may succeed)."""
        if outcome.status >= 500:
            self.release(reservation)
            return
        self.db.execute(
            "UPDATE idempotency_keys SET status_code = ?, response = ?"
            " WHERE scope = ? AND route = ? AND idempotency_key = ? AND created_epoch = ?",
            (outcome.status, json.dumps(outcome.body), reservation.scope, reservation.route, reservation.key,
             reservation.created_epoch),
        )

    def release(self, reservation: Reservation) -> None:
        """Forget a reservation whose request ended without an answer worth replaying."""
        self.db.execute(
            "DELETE FROM idempotency_keys WHERE scope = ? AND route = ? AND idempotency_key = ? AND created_epoch = ?",
            (reservation.scope, reservation.route, reservation.key, reservation.created_epoch),
        )

    def purge(self) -> int:
        """Drop every expired key (stored or abandoned in flight); returns how many."""
        cursor = self.db.execute("DELETE FROM idempotency_keys WHERE created_epoch <= ?",
                                 (self.clock() - self.window_s,))
        return cursor.rowcount

    def close(self) -> None:
        self.db.close()


Work = Callable[[Any], Awaitable[Outcome]]


def _hold_ms(request: Request) -> float | Response:
    """The audit's hold (``X-Sandbox-Hold-Ms``, only with the sandbox token), or the 422 refusing it."""
    raw = request.headers.get(HOLD_HEADER)
    if raw is None or not token_matches(request.headers.get("x-sandbox-token"), ctx_of(request).config.admin_token):
        return 0.0
    try:
        hold = float(raw)
    except ValueError:
        hold = -1.0
    if not 0 <= hold <= MAX_DELAY_MS:
        return json_error(422, f"X-Sandbox-Hold-Ms must be a number between 0 and {MAX_DELAY_MS:g}")
    return hold


async def run_idempotent(request: Request, store: IdempotencyStore, route: str, work: Work, *,
                         enforce_headers: bool = True, dedupe: bool = True) -> Response:
    """Answer a mutating request under the contract: headers, body, key, then ``work(body)``.

    ``work`` validates the body and does the side effect, returning its :class:`Outcome`;
    it runs at most once per key within the window. ``enforce_headers=False`` and
    ``dedupe=False`` exist only to reproduce broken services in the sandbox: without them
    a request lacking the headers is processed anyway, and a repeated key runs again.
    """
    if enforce_headers:
        refused = missing_contract_headers(request)
        if refused is not None:
            return refused
    key = request.headers.get("x-idempotency-key", "").strip()
    if len(key) > MAX_KEY:
        return json_error(422, f"X-Idempotency-Key must be at most {MAX_KEY} characters", field="X-Idempotency-Key")
    try:
        body = await read_json(request)
    except BadBody as exc:
        return json_error(400, str(exc), field="body")
    hold = _hold_ms(request)
    if isinstance(hold, Response):
        return hold
    if not key or not dedupe:
        if hold:
            await asyncio.sleep(hold / 1000)
        return (await work(body)).response()
    reserved = await run_in_threadpool(store.begin, idempotency_scope(request), route, key, request_hash(body))
    if isinstance(reserved, Outcome):
        return reserved.response()
    try:
        if hold:
            await asyncio.sleep(hold / 1000)
        outcome = await work(body)
    except BaseException:  # failed or cancelled mid-work: free the key so the caller can retry it
        await asyncio.shield(run_in_threadpool(store.release, reserved))
        raise
    await run_in_threadpool(store.finish, reserved, outcome)
    return outcome.response()


PURGE_EVERY_S = 60.0


class PurgedKeys:
    """A route's idempotency store, purged of expired keys at most once per :data:`PURGE_EVERY_S`.

    The store drops an expired key only when that same key comes back; routes that see a
    new key with every request (telemetry batches, CTA assignments) would otherwise grow
    their file with the traffic.
    """

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store
        self._next_purge = 0.0
        self._lock = threading.Lock()

    def purge_due(self) -> bool:
        """Whether this request should purge the expired keys (true at most once per period)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_purge:
                return False
            self._next_purge = now + PURGE_EVERY_S
            return True

    def close(self) -> None:
        self.store.close()


async def run_idempotent_purged(request: Request, keys: PurgedKeys, route: str, work: Work) -> Response:
    """:func:`run_idempotent` on ``keys.store``, then the periodic purge when it is due."""
    response = await run_idempotent(request, keys.store, route, work)
    if keys.purge_due():
        await run_in_threadpool(keys.store.purge)
    return response
