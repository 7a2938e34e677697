"""The event contract A8 enforces on ingest, one event at a time.

A batch is never all-or-nothing: each event is checked on its own and a bad one is
rejected with its index and a precise reason while its neighbours are stored. Required:
``event_type`` (non-empty and not the placeholder ``unknown``, which would hide a
wiring bug), ``timestamp`` (ISO-8601 date-time; UTC assumed without an offset),
``app_id``, ``trace_id`` and ``idempotency_key`` (the dedupe key). ``status`` and
``latency_ms`` must be numbers when present (``null`` counts as absent). Everything
else the producer sends (tags, finance metrics…) is kept verbatim in the stored body.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from sandbox.common.web import parse_iso8601

REQUIRED_FIELDS = ("event_type", "timestamp", "app_id", "trace_id", "idempotency_key")
ID_FIELDS = ("app_id", "trace_id", "idempotency_key")
OPTIONAL_STRINGS = ("route", "method")
NUMERIC_FIELDS = ("status", "latency_ms")
MAX_STRING = 512
MAX_EVENT_BYTES = 16_384


class EventError(ValueError):
    """Why one event was rejected."""


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """A validated event: indexed columns plus the original body as JSON text."""

    event_type: str
    timestamp: str
    ts_epoch: float
    app_id: str
    route: str | None
    method: str | None
    status: float | None
    latency_ms: float | None
    trace_id: str
    idempotency_key: str
    body: str


def _string(raw: dict[str, Any], name: str) -> str:
    value = raw[name]
    if not isinstance(value, str) or not value.strip():
        raise EventError(f"{name} must be a non-empty string")
    if len(value) > MAX_STRING:
        raise EventError(f"{name} must be at most {MAX_STRING} characters")
    return value


def _optional_string(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_STRING:
        raise EventError(f"{name} must be a string of at most {MAX_STRING} characters")
    return value


def _optional_number(raw: dict[str, Any], name: str) -> float | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EventError(f"{name} must be a number")
    return value


def validate_event(raw: Any) -> StoredEvent:
    """The event as stored, or :class:`EventError` with the first problem found."""
    if not isinstance(raw, dict):
        raise EventError("event must be a JSON object")
    for name in REQUIRED_FIELDS:
        if name not in raw:
            raise EventError(f"missing required field: {name}")
    event_type = raw["event_type"]
    if not isinstance(event_type, str) or not event_type.strip() or event_type.strip().lower() == "unknown":
        raise EventError("event_type must be a non-empty string other than 'unknown'")
    if len(event_type) > MAX_STRING:
        raise EventError(f"event_type must be at most {MAX_STRING} characters")
    ts_epoch = parse_iso8601(raw["timestamp"])
    if ts_epoch is None:
        raise EventError("timestamp must be an ISO-8601 date-time string")
    ids = {name: _string(raw, name) for name in ID_FIELDS}
    strings = {name: _optional_string(raw, name) for name in OPTIONAL_STRINGS}
    numbers = {name: _optional_number(raw, name) for name in NUMERIC_FIELDS}
    try:
        body = json.dumps(raw, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise EventError("event must not contain NaN or infinite numbers") from None
    if len(body.encode()) > MAX_EVENT_BYTES:
        raise EventError(f"event must be at most {MAX_EVENT_BYTES} bytes as JSON")
    return StoredEvent(
        event_type=event_type,
        timestamp=raw["timestamp"],
        ts_epoch=ts_epoch,
        app_id=ids["app_id"],
        route=strings["route"],
        method=strings["method"],
        status=numbers["status"],
        latency_ms=numbers["latency_ms"],
        trace_id=ids["trace_id"],
        idempotency_key=ids["idempotency_key"],
        body=body,
    )
