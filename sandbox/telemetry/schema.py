"""The event contract A8 enforces on ingest, one event at a time.

A batch is never all-or-nothing: each event is checked on its own and a bad one is
rejected with its index and a precise reason while its neighbours are stored. Required:
``event_type`` (non-empty and not the placeholder ``unknown``, which would hide a
wiring bug), ``timestamp`` (ISO-8601 date-time; UTC assumed without an offset),
``app_id``, ``trace_id`` and ``idempotency_key`` (the dedupe key). ``status``,
``latency_ms`` and ``p95_ms`` must be numbers when present (``null`` counts as absent);
the other contract fields are typed too when present — ``finance_metrics`` an object,
``revenue_event_id`` a string, and ``sample_rate`` (the share the producer kept when it
sampled at the source) a number in (0, 1] — because a consumer scales counts by it and
sums finance metrics: a wrong type there would be a wrong number on a dashboard, not a
visible error. Everything else the producer sends (tags, extras…) is kept verbatim in
the stored body.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from sandbox.common.web import parse_iso8601

REQUIRED_FIELDS = ("event_type", "timestamp", "app_id", "trace_id", "idempotency_key")
ID_FIELDS = ("app_id", "trace_id", "idempotency_key")
OPTIONAL_STRINGS = ("route", "method", "revenue_event_id")
NUMERIC_FIELDS = ("status", "latency_ms", "p95_ms")
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


def _check_contract_extras(raw: dict[str, Any]) -> None:
    """Types of the contract fields the store keeps only in the body."""
    finance = raw.get("finance_metrics")
    if finance is not None and not isinstance(finance, dict):
        raise EventError("finance_metrics must be an object or null")
    rate = raw.get("sample_rate")
    numeric = isinstance(rate, int | float) and not isinstance(rate, bool) and math.isfinite(rate)
    if rate is not None and not (numeric and 0 < rate <= 1):
        raise EventError("sample_rate must be a number in (0, 1]")


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
    _check_contract_extras(raw)
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
