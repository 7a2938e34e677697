"""The guarded HTTP client: every request the suite makes passes through here.

One client so that the environment policy is enforced in one place and cannot be
forgotten by a phase: ``prod`` is read-only (GET, HEAD, OPTIONS) unless the request
carries a known synthetic identity, in which case it is tagged as synthetic so that the
target can keep it out of business data. A refused request raises
:class:`PolicyRefused`; it is never sent and never becomes a sample.

Everything that *was* sent becomes a :class:`Sample`, failures included: a timeout, a
dead port or a server speaking garbage is data about the target, not a crash of the
audit. The client also attaches ``X-Trace-Id``/``X-Idempotency-Key`` when asked, caps
the response size while streaming, and records timing phases: connect and TLS from
httpx's ``trace`` extension, the wait and the total span from stamps taken at the socket
(:mod:`readiness.probe.wire`), so the client's own Python work is not counted as the target's
latency. For honest measurements it follows no redirects (an OIDC audit wants to see
the 302, and a redirect must not carry a request past the host guard), keeps no cookie
jar (one app's cookies never leak into another's requests on the same loopback host;
pass ``Cookie`` explicitly) and ignores proxy settings from the environment.

The client is async because probers run many apps concurrently; sync callers wrap the
coroutine with :func:`readiness.core.aio.run`. An instance belongs to the event loop that
first uses it: create it inside the coroutine that ``aio.run`` executes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.cookiejar
import re
import socket
import ssl
import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import httpx

from readiness.probe.sample import Sample, parse_server_timing, safe_headers
from readiness.probe.wire import WireMarks, timed_transport
from readiness.probe.wire import stamping as _stamping

__all__ = ["LOOPBACK_HOSTS", "SAFE_METHODS", "ClientLimits", "GuardedClient", "PolicyRefused", "Sample",
           "SyntheticPolicy", "parse_server_timing", "safe_headers"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ENV_TAGS: Mapping[str, str] = MappingProxyType({"staging": "staging", "prod": "prod_observe"})
_RESERVED_TAGS = frozenset({"env", "synthetic_identity"})
_TAG_KEY = re.compile(r"^[a-z][a-z0-9_]*$")
_METHOD = re.compile(r"^[A-Z]+$")


class PolicyRefused(Exception):
    """A request the environment policy forbids.

    Raised, never recorded as a sample: the request was not sent, so there is nothing to
    measure, and the caller either has a bug or lacks the synthetic identity it needs.
    """


@dataclasses.dataclass(frozen=True)
class SyntheticPolicy:
    """Who may write to prod, and how synthetic traffic is labelled.

    ``tags`` are sent as ``X-<Tag-Name>`` headers (``test_run`` → ``X-Test-Run``) and
    merged into a JSON object body under ``"tags"``; ``env_tag`` is sent as ``X-Env`` and
    as the ``env`` tag, and must match the client's environment (``staging`` for
    staging, ``prod_observe`` for prod) so synthetic data is attributed correctly.
    """

    identities: frozenset[str]
    tags: Mapping[str, str]
    env_tag: str

    def __post_init__(self) -> None:
        identities = frozenset(self.identities)
        if not identities or any(not isinstance(i, str) or not i.strip() for i in identities):
            raise ValueError("synthetic identities must be a non-empty set of non-empty names")
        tags = dict(self.tags)
        if tags.get("test_run") != "true" or tags.get("source") != "qa":
            raise ValueError("synthetic tags must include test_run: 'true' and source: 'qa'")
        bad = sorted(k for k in tags if not _TAG_KEY.match(k) or k in _RESERVED_TAGS)
        if bad:
            raise ValueError(f"synthetic tag keys must be lower_snake_case and not 'env' or "
                             f"'synthetic_identity', got {bad}")
        if self.env_tag not in ENV_TAGS.values():
            raise ValueError(f"synthetic env_tag must be 'staging' or 'prod_observe', got {self.env_tag!r}")
        object.__setattr__(self, "identities", identities)
        object.__setattr__(self, "tags", MappingProxyType(tags))

    def body_tags(self, identity: str) -> dict[str, str]:
        """The ``tags`` object merged into a synthetic JSON body."""
        return {**self.tags, "env": self.env_tag, "synthetic_identity": identity}

    def headers(self, identity: str) -> dict[str, str]:
        """The headers that mark a request as synthetic."""
        return {"X-" + "-".join(p.capitalize() for p in key.split("_")): value
                for key, value in self.body_tags(identity).items()}


@dataclasses.dataclass(frozen=True)
class ClientLimits:
    """Timeouts (seconds) and the response-size cap (bytes) applied to every request.

    ``read_timeout_s`` bounds the silence between two reads (and the time to send the
    request); ``total_timeout_s`` bounds the whole exchange, so a server dribbling bytes
    just fast enough to dodge the read timeout still ends in a ``timeout`` sample.
    """

    connect_timeout_s: float = 2.0
    read_timeout_s: float = 5.0
    total_timeout_s: float = 10.0
    max_response_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"ClientLimits.{f.name} must be a positive number, got {value!r}")


class _PhaseClock:
    """Receives httpcore trace events and stamps each with ``perf_counter``.

    Event names look like ``connection.connect_tcp.started`` or
    ``http11.receive_response_headers.complete``; the first component (the emitting
    module) is dropped so HTTP/1.1 and HTTP/2 events share one key.
    """

    def __init__(self) -> None:
        self.marks: dict[str, float] = {}
        self.wire = WireMarks()  # stamped at the socket (readiness.probe.wire)

    async def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        key = name.split(".", 1)[-1]
        if key.endswith(".started"):
            self.marks.setdefault(key, time.perf_counter())
        else:
            self.marks[key] = time.perf_counter()

    def span_ms(self, start: str, end: str) -> float | None:
        if start in self.marks and end in self.marks:
            return max(0.0, (self.marks[end] - self.marks[start]) * 1000.0)
        return None

    def wire_ms(self, fallback_start: float, end: float) -> float:
        """From the first byte on the wire to ``end``.

        The start is the connection opening, or on a reused connection the first byte of
        the request written to the socket: the span k6 reports as blocked + connecting +
        http_req_duration. The client's own request building before that is left out, as
        its parsing after the last read is (``end`` is the socket's last read for a
        complete response, see :mod:`readiness.probe.wire`). Without any mark (a request that
        failed before reaching the network) the span starts at ``fallback_start``.
        """
        opened = self.marks.get("connect_tcp.started")
        start = opened if opened is not None else self.wire.first_write
        return max(0.0, (end - (start if start is not None else fallback_start)) * 1000.0)

    def wait_ms(self) -> float | None:
        """Request fully written to the first response bytes read, at the socket."""
        sent, received = self.wire.sent, self.wire.first_read
        return None if sent is None or received is None else max(0.0, (received - sent) * 1000.0)


def _no_cookies() -> http.cookiejar.CookieJar:
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


def _verb(method: str) -> Any:
    """A thin ``request(method, url, **kwargs)`` shortcut, one per HTTP method."""
    async def shortcut(self: GuardedClient, url: str, **kwargs: Any) -> Sample:
        return await self.request(method, url, **kwargs)
    shortcut.__name__ = shortcut.__qualname__ = method.lower()
    shortcut.__doc__ = f"``request({method!r}, url, **kwargs)``."
    return shortcut


class GuardedClient:
    """The one HTTP client of the suite; see the module docstring for the rules.

    ``allowed_hosts`` (lower-case host names or IP literals), when given, refuses any
    other host before a connection is attempted; tests and the sandbox use
    :data:`LOOPBACK_HOSTS`. ``keep_alive=False`` opens a fresh connection per request,
    which makes every sample include connect time. ``verify`` is passed to httpx (an
    ``ssl.SSLContext`` trusts a private CA).
    """

    def __init__(self, *, environment: Literal["staging", "prod"], synthetic: SyntheticPolicy,
                 limits: ClientLimits = ClientLimits(), keep_alive: bool = True,
                 default_headers: Mapping[str, str] | None = None,
                 allowed_hosts: frozenset[str] | None = None, verify: Any = True) -> None:
        if environment not in ENV_TAGS:
            raise ValueError(f"environment must be 'staging' or 'prod', got {environment!r}")
        if synthetic.env_tag != ENV_TAGS[environment]:
            raise ValueError(f"synthetic env_tag {synthetic.env_tag!r} does not match environment "
                             f"{environment!r} (expected {ENV_TAGS[environment]!r})")
        self.environment = environment
        self.synthetic = synthetic
        self.limits = limits
        self.keep_alive = keep_alive
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self._default_headers = dict(default_headers or {})
        pool = httpx.Limits(max_connections=100, max_keepalive_connections=20 if keep_alive else 0)
        self._http = httpx.AsyncClient(transport=timed_transport(verify=verify, limits=pool),
                                       follow_redirects=False, trust_env=False, cookies=_no_cookies(),
                                       headers={"User-Agent": "readiness-audit"})

    async def __aenter__(self) -> GuardedClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._http.aclose()

    def check(self, method: str, url: str, synthetic_identity: str | None = None) -> str:
        """Apply the URL, host and environment rules; return the upper-case method.

        Raises ``ValueError`` for malformed input and :class:`PolicyRefused` for a request
        the policy forbids. Public so a phase can ask before preparing a request.
        """
        method = method.upper() if isinstance(method, str) else method
        if not isinstance(method, str) or not _METHOD.match(method):
            raise ValueError(f"HTTP method must be a word such as GET or POST, got {method!r}")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError(f"invalid URL {url!r}: {exc}") from None
        host = parsed.host
        if parsed.scheme not in ("http", "https") or not host:
            raise ValueError(f"URL must be absolute http(s) with a host, got {url!r}")
        if self.allowed_hosts is not None and host.lower() not in self.allowed_hosts:
            raise PolicyRefused(f"refused {method} {url}: host {host!r} is not in the allowed hosts "
                                f"{sorted(self.allowed_hosts)}")
        if synthetic_identity is not None and synthetic_identity not in self.synthetic.identities:
            raise PolicyRefused(f"refused {method} {url}: unknown synthetic identity {synthetic_identity!r} "
                                f"(known: {sorted(self.synthetic.identities)})")
        if self.environment == "prod" and method not in SAFE_METHODS and synthetic_identity is None:
            raise PolicyRefused(f"refused {method} {url}: environment 'prod' is read-only "
                                "(GET, HEAD, OPTIONS); a write needs a known synthetic identity")
        return method

    async def request(self, method: str, url: str, *, app: str | None = None, route: str | None = None,
                      json: Any = None, content: bytes | str | None = None,
                      headers: Mapping[str, str] | None = None, trace: bool = True,
                      idempotency_key: str | bool | None = None, synthetic_identity: str | None = None,
                      keep_body: bool = False, timeout_s: float | None = None) -> Sample:
        """Send one request and return its :class:`Sample`; raise only for refusals and bad input.

        Header precedence, lowest first: ``default_headers``, the generated trace and
        idempotency headers, the caller's ``headers``, then the synthetic headers (the
        policy's labels cannot be overridden). ``timeout_s`` replaces the total limit for
        this request and also caps the connect and read timeouts.
        """
        url = str(url)
        method = self.check(method, url, synthetic_identity)
        if json is not None and content is not None:
            raise ValueError("pass either json or content, not both")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if synthetic_identity is not None and isinstance(json, Mapping):
            json = self._tag_body(json, synthetic_identity)
        sent = httpx.Headers(self._default_headers)
        if trace:
            sent["X-Trace-Id"] = uuid.uuid4().hex
        if idempotency_key is True:
            sent["X-Idempotency-Key"] = uuid.uuid4().hex
        elif isinstance(idempotency_key, str):
            if not idempotency_key:
                raise ValueError("idempotency_key must be a non-empty string, True or None")
            sent["X-Idempotency-Key"] = idempotency_key
        for key, value in (headers or {}).items():
            sent[key] = value
        if synthetic_identity is not None:
            for key, value in self.synthetic.headers(synthetic_identity).items():
                sent[key] = value
        total = self.limits.total_timeout_s if timeout_s is None else timeout_s
        timeout = httpx.Timeout(connect=min(self.limits.connect_timeout_s, total),
                                read=min(self.limits.read_timeout_s, total),
                                write=min(self.limits.read_timeout_s, total),
                                pool=min(self.limits.connect_timeout_s, total))
        clock = _PhaseClock()
        request = self._http.build_request(method, url, json=json, content=content, headers=sent,
                                           timeout=timeout, extensions={"trace": clock})
        base = {"app": app, "method": method, "url": url, "route": route,
                "trace_id": sent.get("x-trace-id"), "idempotency_key": sent.get("x-idempotency-key")}
        return await self._exchange(request, clock, base, timeout, total, keep_body)

    def _tag_body(self, body: Mapping[str, Any], identity: str) -> dict[str, Any]:
        existing = body.get("tags", {})
        if not isinstance(existing, Mapping):
            raise TypeError(f"JSON body field 'tags' must be an object to carry synthetic tags, "
                            f"got {type(existing).__name__}")
        return {**body, "tags": {**existing, **self.synthetic.body_tags(identity)}}

    async def _exchange(self, request: httpx.Request, clock: _PhaseClock, base: dict[str, Any],
                        timeout: httpx.Timeout, total: float, keep_body: bool) -> Sample:
        cap = self.limits.max_response_bytes
        status: int | None = None
        response_headers: dict[str, str] = {}
        server_timing: float | None = None
        error: str | None = None
        detail: str | None = None
        received = 0
        kept = bytearray()
        started_at = time.time()
        t0 = time.perf_counter()
        complete = False  # the body was read to its end (or to the size cap)
        with _stamping(clock.wire):
            try:
                async with asyncio.timeout(total):
                    response = await self._http.send(request, stream=True)
                    try:
                        status = response.status_code
                        response_headers = safe_headers(response.headers)
                        server_timing = parse_server_timing(response.headers.get_list("server-timing"))
                        declared = response.headers.get("content-length", "")
                        if declared.isdigit() and int(declared) > cap:
                            error, detail = "too_large", f"Content-Length {declared} exceeds the {cap} byte cap"
                        else:
                            async for chunk in response.aiter_bytes():
                                received += len(chunk)
                                if keep_body:
                                    kept += chunk[: max(0, cap - len(kept))]
                                if received > cap:
                                    error = "too_large"
                                    detail = f"body exceeds the {cap} byte cap (stopped after {received} bytes)"
                                    break
                        complete = True
                    finally:
                        await response.aclose()
            except TimeoutError:
                error, detail = "timeout", f"response not complete within the total limit of {total:g} s"
            except (httpx.TransportError, httpx.DecodingError) as exc:
                error, detail = _classify(exc, timeout)
        now = time.perf_counter()
        end = clock.wire.last_read if complete and clock.wire.last_read is not None else now
        total_ms = clock.wire_ms(t0, end)
        return Sample(
            **base, status=status, ok=error is None and status is not None and status < 400,
            error=error, error_detail=detail, started_at=started_at,
            connect_ms=clock.span_ms("connect_tcp.started", "connect_tcp.complete"),
            tls_ms=clock.span_ms("start_tls.started", "start_tls.complete"),
            wait_ms=clock.wait_ms() if status is not None else None, total_ms=total_ms, bytes=received, server_timing_ms=server_timing,
            body=bytes(kept) if keep_body and status is not None else None, headers=response_headers)

    get = _verb("GET")
    head = _verb("HEAD")
    options = _verb("OPTIONS")
    post = _verb("POST")
    put = _verb("PUT")
    patch = _verb("PATCH")
    delete = _verb("DELETE")

# Most specific first: ConnectError is a NetworkError, every timeout a TransportError.
_FAILURES: tuple[tuple[type[Exception], str, str], ...] = (
    (httpx.ConnectTimeout, "timeout", "connect did not complete within {t.connect:g} s"),
    (httpx.ReadTimeout, "timeout", "no data from the server for {t.read:g} s"),
    (httpx.WriteTimeout, "timeout", "request could not be sent within {t.write:g} s"),
    (httpx.PoolTimeout, "timeout", "no free pooled connection within {t.pool:g} s"),
    (httpx.ConnectError, "connect_error", "connection failed: {e}"),
    (httpx.ProtocolError, "protocol_error", "not a valid HTTP exchange: {e}"),
    (httpx.DecodingError, "invalid_body", "body could not be decoded: {e}"),
    (httpx.NetworkError, "network_error", "{n}: {e}"),
    (httpx.TransportError, "transport_error", "{n}: {e}"),
)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first (bounded: chains can loop)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def _connect_class(exc: BaseException) -> tuple[str, str] | None:
    """A finer class for a failed connection: DNS, TLS or refused (each an observation)."""
    chain = _causes(exc)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "dns_error", "name resolution failed: {e}"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return "tls_error", "TLS handshake failed: {e}"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "All connection attempts failed" in str(exc):
        return "connect_error", "connection refused (nothing accepted the connection): {e}"
    return None


def _classify(exc: Exception, timeout: httpx.Timeout) -> tuple[str, str]:
    """Map an httpx failure to a stable ``Sample.error`` code and a short message."""
    code, text = next((c, t) for kind, c, t in _FAILURES if isinstance(exc, kind))
    if isinstance(exc, httpx.ConnectError):
        code, text = _connect_class(exc) or (code, text)
    elif isinstance(exc, httpx.TransportError) and any(isinstance(e, ConnectionResetError) for e in _causes(exc)):
        code, text = "connection_reset", "the connection was reset by the peer: {e}"
    return code, text.format(t=timeout, e=str(exc) or type(exc).__name__, n=type(exc).__name__)
