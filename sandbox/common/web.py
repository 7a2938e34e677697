"""Small HTTP and time helpers shared by every app: JSON errors, bearer tokens, ISO-8601.

Error bodies have one shape everywhere, ``{"error": <sentence>, ...}``, so that a test or
an auditor can assert the exact message; timestamps are always UTC with a ``Z`` suffix so
that events from eight processes sort and compare as strings and as instants alike.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

UTC = dt.UTC


class BadBody(ValueError):
    """A request body that is not the JSON the route expects."""


class FieldError(ValueError):
    """A request body (or knob) the app cannot accept: ``field`` names the culprit, ``message``
    says what is wrong. Routes answer it as ``422 {"error": message, "field": field}``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message

    @classmethod
    def json_object(cls, value: Any, allowed: Iterable[str], *, where: str = "body",
                    unknown: str = "unexpected field", qualify: bool = False) -> dict[str, Any]:
        """``value`` when it is a JSON object holding only ``allowed`` keys; else this error
        naming the first culprit (``where.key`` with ``qualify``, else the bare key)."""
        if not isinstance(value, dict):
            raise cls(where, f"{where} must be a JSON object")
        extra = sorted(set(value) - set(allowed))
        if extra:
            name = f"{where}.{extra[0]}" if qualify else extra[0]
            raise cls(name, f"{unknown}: {name}")
        return value


def json_error(status: int, message: str, **extra: Any) -> JSONResponse:
    """A JSON error response ``{"error": message, **extra}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def read_json(request: Request) -> Any:
    """The parsed body; :class:`BadBody` when it is empty or not JSON."""
    raw = await request.body()
    if not raw:
        raise BadBody("body must be JSON")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadBody("body is not valid JSON") from None


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison, false when either side is missing."""
    if not given or not expected:
        return False
    return secrets.compare_digest(given.encode(), expected.encode())


def iso(ts: dt.datetime, timespec: str = "milliseconds") -> str:
    """``2024-05-01T12:00:00.123Z`` for an aware datetime (``timespec="microseconds"`` where
    gaps of a few milliseconds matter, e.g. retry attempts)."""
    return ts.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_from_epoch(epoch: float) -> str:
    return iso(dt.datetime.fromtimestamp(epoch, UTC))


def utc_now_iso() -> str:
    return iso(dt.datetime.now(UTC))


def parse_iso8601(value: object) -> float | None:
    """Epoch seconds of an ISO-8601 date-time string; None when it is not one.

    A value without a UTC offset is read as UTC, since every sandbox clock is UTC.
    A bare date (no time part) is not a point in time and is refused.
    """
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


CONTRACT_HEADERS = ("X-Idempotency-Key", "X-Trace-Id")


def missing_contract_headers(request: Request) -> Response | None:
    """428 naming the missing ``X-Idempotency-Key``/``X-Trace-Id``, or None when both are sent.

    Routes with side effects call this first: without both headers a retry cannot be told
    from a new request, and the effect cannot be traced end to end.
    """
    missing = [name for name in CONTRACT_HEADERS if not request.headers.get(name, "").strip()]
    if not missing:
        return None
    noun = "header" if len(missing) == 1 else "headers"
    return json_error(428, f"missing required {noun}: {', '.join(missing)}", missing=missing)


async def contract_json(request: Request) -> tuple[Any, Response | None]:
    """The JSON body of a request with side effects, or the 428/400 answer that refuses it.

    ``body, refused = await contract_json(request)``; return ``refused`` when it is set.
    """
    refused = missing_contract_headers(request)
    if refused is not None:
        return None, refused
    try:
        return await read_json(request), None
    except BadBody as exc:
        return None, json_error(400, str(exc))
