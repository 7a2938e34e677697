"""A8's incident banners: raised by an app or an operator, shown on the dashboard.

``POST /api/banners`` raises a banner for an app. It takes the telemetry key (the
credential every producer already holds, so an app can announce its own incident) or
the admin token: 401 without a bearer credential, 403 with one that is neither. Then
the contract headers (428), then the body::

    {"app_id": "A3", "message": "orchestration degraded", "severity": "major",
     "ttl_s": 900, "recovery_s": 60, "tags": {...}}

``severity`` (info, minor, major, critical; default major), ``ttl_s`` (default 900) and
``recovery_s`` (default 60) are optional. A replay of the same ``X-Idempotency-Key``
gets the same banner (``Idempotent-Replayed: true``); the same key with another body is
a 422. ``GET /api/banners`` lists the active banners, ``GET /api/banners/{id}`` shows one,
cleared or not, with how and when it was cleared.

The flag ``a8_banner_ttl`` (fix C) decides how a banner ends:

* OFF (the original behaviour): a banner stays until someone deletes it, and
  ``DELETE /api/banners/{id}`` asks for no credential — stale banners pile up and
  anyone can clear a real one.
* ON: a banner is cleared ``expired`` once ``ttl_s`` has passed, or ``recovered`` once
  the app has looked healthy to A8 for ``recovery_s``: over the last ``recovery_s``
  seconds, all of them after the banner was raised, A8 stored at least
  ``MIN_HEALTHY_EVENTS`` events of that app with a status and none of them a server
  error (>= 500). An app that sends no telemetry never looks recovered; its banner
  waits for the TTL. ``DELETE`` needs the admin token (401 without a credential, 403
  with another one, the telemetry key included: clearing is an operator's decision).

A sweeper thread applies the rule every ``SWEEP_S`` and every read applies it first, so
a cleared banner is gone within ``SWEEP_S`` of its deadline whether or not anyone looks.
The flag is read at each sweep: switching it OFF restores the old behaviour at once
(banners cleared while it was ON stay cleared).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import secrets
import sqlite3
import threading
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.common.context import AppContext, ctx_of
from sandbox.common.events import request_tags
from sandbox.common.web import (
    FieldError,
    bearer_token,
    contract_json,
    iso_from_epoch,
    json_error,
    missing_contract_headers,
    token_matches,
)
from sandbox.telemetry.store import TelemetryStore

FLAG = "a8_banner_ttl"
SEVERITIES = ("info", "minor", "major", "critical")
DEFAULT_TTL_S = 900.0
DEFAULT_RECOVERY_S = 60.0
MAX_TTL_S = 86_400.0
MAX_RECOVERY_S = 3_600.0
MIN_HEALTHY_EVENTS = 3
SWEEP_S = 0.5
MAX_APP_ID, MAX_MESSAGE, MAX_TAGS, MAX_TAG = 64, 500, 20, 128
FIELDS = ("app_id", "message", "severity", "ttl_s", "recovery_s", "tags")

SCHEMA = """
CREATE TABLE IF NOT EXISTS banners (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    request_hash TEXT NOT NULL,
    app_id TEXT NOT NULL,
    message TEXT NOT NULL,
    severity TEXT NOT NULL,
    ttl_s REAL NOT NULL,
    recovery_s REAL NOT NULL,
    tags TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    raised_at REAL NOT NULL,
    cleared_at REAL,
    cleared_reason TEXT CHECK (cleared_reason IN ('expired', 'recovered', 'admin'))
);
CREATE INDEX IF NOT EXISTS banners_active ON banners (cleared_at, raised_at);
"""


class BannerError(FieldError):
    """A banner body the API cannot accept; ``field`` names the culprit."""


@dataclasses.dataclass(frozen=True)
class BannerForm:
    app_id: str
    message: str
    severity: str
    ttl_s: float
    recovery_s: float
    tags: dict[str, str]


def _seconds(body: dict[str, Any], name: str, default: float, maximum: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 < value <= maximum:
        raise BannerError(name, f"{name} must be a number of seconds greater than 0 and at most {maximum:g}")
    return float(value)


def validate_banner(body: Any) -> BannerForm:
    """The banner of a parsed JSON body, or :class:`BannerError` naming the first bad field."""
    body = BannerError.json_object(body, FIELDS)
    app_id, message = body.get("app_id"), body.get("message")
    if not isinstance(app_id, str) or not app_id.strip() or len(app_id) > MAX_APP_ID:
        raise BannerError("app_id", f"app_id must be a non-empty string of at most {MAX_APP_ID} characters")
    if not isinstance(message, str) or not message.strip() or len(message) > MAX_MESSAGE:
        raise BannerError("message", f"message must be a non-empty string of at most {MAX_MESSAGE} characters")
    severity = body.get("severity", "major")
    if severity not in SEVERITIES:
        raise BannerError("severity", f"severity must be one of {', '.join(SEVERITIES)}")
    tags = body.get("tags", {})
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS or not all(
        isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= MAX_TAG and len(v) <= MAX_TAG
        for k, v in tags.items()
    ):
        raise BannerError("tags", f"tags must be an object of at most {MAX_TAGS} strings of at most "
                                  f"{MAX_TAG} characters")
    return BannerForm(app_id=app_id.strip(), message=message.strip(), severity=severity,
                      ttl_s=_seconds(body, "ttl_s", DEFAULT_TTL_S, MAX_TTL_S),
                      recovery_s=_seconds(body, "recovery_s", DEFAULT_RECOVERY_S, MAX_RECOVERY_S),
                      tags=dict(tags))


def banner_json(row: sqlite3.Row, now: float) -> dict[str, Any]:
    """The API shape of a stored banner; ``expires_at`` is when the TTL would clear it."""
    cleared = row["cleared_at"]
    return {
        "id": row["id"], "app_id": row["app_id"], "message": row["message"], "severity": row["severity"],
        "ttl_s": row["ttl_s"], "recovery_s": row["recovery_s"], "tags": json.loads(row["tags"]),
        "trace_id": row["trace_id"], "raised_at": iso_from_epoch(row["raised_at"]),
        "expires_at": iso_from_epoch(row["raised_at"] + row["ttl_s"]),
        "age_s": round((cleared if cleared is not None else now) - row["raised_at"], 3),
        "active": cleared is None,
        "cleared_at": iso_from_epoch(cleared) if cleared is not None else None,
        "cleared_reason": row["cleared_reason"],
    }


class BannerBoard:
    """Banners in SQLite, and the sweeper that applies TTL and recovery when the flag is ON."""

    def __init__(self, ctx: AppContext, store: TelemetryStore) -> None:
        self.ctx = ctx
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="a8-banner-sweeper", daemon=True)

    def start(self) -> None:
        """Start the sweeper (the app does; a test may call :meth:`sweep` with its own clock instead)."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SWEEP_S):
            try:
                self.sweep()
            except sqlite3.ProgrammingError:  # the database closed under us: the app is stopping
                return

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def sweep(self, now: float | None = None) -> int:
        """Clear what the TTL and recovery rules say is over; return how many were cleared."""
        if not self.ctx.flags.enabled(FLAG):
            return 0
        now = time.time() if now is None else now
        cleared = 0
        for row in self.ctx.db.query("SELECT * FROM banners WHERE cleared_at IS NULL"):
            reason = self._ending(row, now)
            if reason is not None:
                cleared += self.ctx.db.execute(
                    "UPDATE banners SET cleared_at = ?, cleared_reason = ? WHERE id = ? AND cleared_at IS NULL",
                    (now, reason, row["id"]),
                ).rowcount
        return cleared

    def _ending(self, row: sqlite3.Row, now: float) -> str | None:
        if now >= row["raised_at"] + row["ttl_s"]:
            return "expired"
        start = now - row["recovery_s"]
        if start < row["raised_at"]:
            return None
        seen = self.store.health_window(row["app_id"], start, now)
        return "recovered" if seen["healthy"] >= MIN_HEALTHY_EVENTS and seen["errors"] == 0 else None

    def raise_banner(self, form: BannerForm, key: str, trace_id: str, request_hash: str,
                     extra_tags: dict[str, str]) -> tuple[int, dict[str, Any], bool]:
        """Store a new banner, or answer a replay of ``key``: (status, body, replayed)."""
        now = time.time()
        existing = self.ctx.db.query("SELECT * FROM banners WHERE idempotency_key = ?", (key,))
        if not existing:
            try:
                self.ctx.db.execute(
                    "INSERT INTO banners (id, idempotency_key, request_hash, app_id, message, severity, ttl_s,"
                    " recovery_s, tags, trace_id, raised_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (f"ban_{secrets.token_hex(8)}", key, request_hash, form.app_id, form.message, form.severity,
                     form.ttl_s, form.recovery_s, json.dumps({**extra_tags, **form.tags}), trace_id, now),
                )
                row = self.ctx.db.query("SELECT * FROM banners WHERE idempotency_key = ?", (key,))[0]
                return 201, {"banner": banner_json(row, now)}, False
            except sqlite3.IntegrityError:  # a concurrent request with the same key won the insert
                existing = self.ctx.db.query("SELECT * FROM banners WHERE idempotency_key = ?", (key,))
        if existing[0]["request_hash"] != request_hash:
            return 422, {"error": "X-Idempotency-Key was already used with a different request body"}, False
        return 201, {"banner": banner_json(existing[0], now)}, True

    def active(self) -> list[dict[str, Any]]:
        self.sweep()
        now = time.time()
        rows = self.ctx.db.query("SELECT * FROM banners WHERE cleared_at IS NULL ORDER BY raised_at DESC, id")
        return [banner_json(r, now) for r in rows]

    def get(self, banner_id: str) -> dict[str, Any] | None:
        self.sweep()
        rows = self.ctx.db.query("SELECT * FROM banners WHERE id = ?", (banner_id,))
        return banner_json(rows[0], time.time()) if rows else None

    def clear(self, banner_id: str) -> dict[str, Any] | None:
        """Clear by hand (``admin``); clearing a cleared banner changes nothing."""
        self.ctx.db.execute("UPDATE banners SET cleared_at = ?, cleared_reason = 'admin'"
                            " WHERE id = ? AND cleared_at IS NULL", (time.time(), banner_id))
        return self.get(banner_id)


def board_of(request: Request) -> BannerBoard:
    board: BannerBoard = ctx_of(request).services["banners"]
    return board


def _refuse(request: Request, *, telemetry_key_allowed: bool) -> Response | None:
    """401 without a bearer credential, 403 with one that is not accepted here, else None."""
    config = ctx_of(request).config
    given = bearer_token(request)
    accepted = "the telemetry key or the admin token" if telemetry_key_allowed else "the admin token"
    if given is None:
        return json_error(401, f"credential required: Authorization: Bearer <{accepted}>")
    if token_matches(given, config.admin_token) or (telemetry_key_allowed and token_matches(given, config.telemetry_key)):
        return None
    return json_error(403, f"credential not accepted: this route needs {accepted}")


async def raise_endpoint(request: Request) -> Response:
    refused = _refuse(request, telemetry_key_allowed=True)
    if refused is not None:
        return refused
    body, refused = await contract_json(request)
    if refused is not None:
        return refused
    try:
        form = validate_banner(body)
    except BannerError as exc:
        return json_error(422, exc.message, field=exc.field)
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    status, answer, replayed = await run_in_threadpool(
        board_of(request).raise_banner, form, request.headers["x-idempotency-key"].strip(),
        request.headers["x-trace-id"].strip(), request_hash, request_tags(request))
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return JSONResponse(answer, status_code=status, headers=headers)


def list_endpoint(request: Request) -> Response:
    ctx = ctx_of(request)
    banners = board_of(request).active()
    return JSONResponse({"banners": banners, "count": len(banners), "ttl_enforced": ctx.flags.enabled(FLAG)})


def get_endpoint(request: Request) -> Response:
    banner_id = request.path_params["banner_id"]
    banner = board_of(request).get(banner_id)
    if banner is None:
        return json_error(404, f"unknown banner: {banner_id}")
    return JSONResponse({"banner": banner})


async def clear_endpoint(request: Request) -> Response:
    if ctx_of(request).flags.enabled(FLAG):
        refused = _refuse(request, telemetry_key_allowed=False)
        if refused is not None:
            return refused
    refused = missing_contract_headers(request)
    if refused is not None:
        return refused
    banner_id = request.path_params["banner_id"]
    banner = await run_in_threadpool(board_of(request).clear, banner_id)
    if banner is None:
        return json_error(404, f"unknown banner: {banner_id}")
    return JSONResponse({"banner": banner})
