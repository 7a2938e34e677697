"""The outcome of one request: :class:`Sample`, and the header parsing it relies on.

A failure is data: a timeout, a dead port or a garbage answer becomes a Sample with an
``error`` code, never an exception, so that probers and verdicts can count it. Response
headers are kept only in a safe form (credentials dropped, cookie values redacted) so a
sample can be written to evidence files as is.
"""

from __future__ import annotations

import dataclasses
import json as jsonlib
import math
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["Sample", "parse_server_timing", "safe_headers"]

_DROPPED_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "x-auth-token"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sample:
    """One request's outcome. A failure is data: it is recorded here, never raised.

    ``ok`` is true exactly when a complete response arrived (``error is None``) with a
    status below 400; a 3xx counts as ok because redirects are not followed. ``error``
    is a stable code (``timeout``, ``connect_error`` (refused or otherwise not connected),
    ``dns_error``, ``tls_error``, ``connection_reset``, ``protocol_error``, ``too_large``,
    ``invalid_body``, ``network_error``, ``transport_error``) and ``error_detail`` a
    short message; an HTTP error status is not an ``error`` (read ``status``), and
    ``too_large`` keeps the status.

    Timings are milliseconds from ``perf_counter``. ``connect_ms`` (TCP connect) and
    ``tls_ms`` (TLS handshake) are None when the request reused a kept-alive connection,
    since nothing was opened for it; ``tls_ms`` is None for plain http. ``wait_ms`` runs
    from the request fully written to the socket to the first response bytes read from
    it (None without a response); ``total_ms`` from the first byte on the wire
    (connection opening, or the request's first byte written on a reused connection) to
    the last body byte read from the socket — the span load tools such as k6 report — or
    for a failed request until the failure was known (so latency statistics should use
    ``ok`` samples). ``started_at`` is the wall clock (epoch seconds) at the send. ``bytes`` counts body bytes read after content
    decoding. ``server_timing_ms`` comes from ``Server-Timing`` (see
    :func:`parse_server_timing`). ``headers`` are the response headers with lower-case
    keys, credentials dropped and cookie values redacted (:func:`safe_headers`).
    """

    app: str | None
    method: str
    url: str
    route: str | None
    status: int | None
    ok: bool
    error: str | None
    started_at: float
    connect_ms: float | None
    tls_ms: float | None
    wait_ms: float | None
    total_ms: float | None
    bytes: int
    trace_id: str | None
    idempotency_key: str | None
    server_timing_ms: float | None
    error_detail: str | None = None
    body: bytes | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", dict(self.headers))  # a copy; a plain dict keeps samples picklable

    def json(self) -> Any:
        """Parse the kept body as JSON; the ``ValueError`` says why when it cannot."""
        where = f"{self.method} {self.url}"
        if self.error is not None:
            raise ValueError(f"{where}: no complete response body to parse ({self.error}: {self.error_detail})")
        if self.body is None:
            raise ValueError(f"{where}: the response body was not kept (pass keep_body=True)")
        try:
            return jsonlib.loads(self.body)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{where}: response body is not JSON: not UTF-8 text "
                             f"({exc.reason} at byte {exc.start})") from None
        except jsonlib.JSONDecodeError as exc:
            raise ValueError(f"{where}: response body is not JSON: {exc.msg} at line {exc.lineno} column "
                             f"{exc.colno} (status {self.status}, body starts {self.body[:40]!r})") from None

    def to_record(self, *, headers: bool = False) -> dict[str, Any]:
        """Flat JSON-safe dict for evidence files: every field except ``body``.

        ``headers`` (a nested object) is included only when asked, so records stay flat
        for tables by default.
        """
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("body", "headers")}
        if headers:
            record["headers"] = dict(self.headers)
        return record


def parse_server_timing(values: str | list[str] | None) -> float | None:
    """Server-reported duration in ms from ``Server-Timing`` header value(s).

    The ``app`` metric wins, then ``total``, else the only metric with a finite ``dur``;
    several other metrics are ambiguous, so the answer is None rather than a guess.
    """
    if not values:
        return None
    durations: dict[str, float] = {}
    for entry in ",".join([values] if isinstance(values, str) else values).split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        for param in params:
            key, _, raw = param.partition("=")
            try:
                value = float(raw.strip().strip('"'))
            except ValueError:
                continue
            if key.strip().lower() == "dur" and math.isfinite(value):
                durations.setdefault(name.lower(), value)
    for name in ("app", "total"):
        if name in durations:
            return durations[name]
    return next(iter(durations.values())) if len(durations) == 1 else None


def safe_headers(headers: httpx.Headers) -> dict[str, str]:
    """Response headers fit for evidence: credentials dropped, cookie values redacted.

    Repeated headers are joined with ``", "``; ``set-cookie`` lines with a newline (their
    dates contain commas), each as ``name=<redacted>; <attributes>`` so cookie flags stay
    auditable while the value never reaches a file.
    """
    kept: dict[str, str] = {}
    for key, value in headers.multi_items():
        key = key.lower()
        if key in _DROPPED_HEADERS:
            continue
        separator = ", "
        if key == "set-cookie":
            name, _, rest = value.partition("=")
            attributes = rest.partition(";")[2]
            value, separator = f"{name.strip()}=<redacted>" + (f";{attributes}" if attributes else ""), "\n"
        kept[key] = f"{kept[key]}{separator}{value}" if key in kept else value
    return kept


