"""Timestamps taken at the socket, so a request's latency is the wire's and not the client's.

httpx reports when it *starts* sending headers and when it has *finished* parsing the
body; between the bytes and those marks sit h11's parsing, httpcore's bookkeeping and
httpx's stream machinery — about 1 ms of Python per request at 2 requests/s on a small
VM (caches are cold after each idle gap), which a load tool written in Go does not add.
Reported as the target's latency it would make every endpoint look slower than k6 says.

So the transport's network streams are wrapped: the first ``write`` of a request and
every ``read`` that returns are stamped with ``perf_counter`` into the :class:`WireMarks`
of the request in flight. The request's marks travel in a context variable, set by the
caller around one exchange (:func:`stamping`); a request runs in one task (HTTP/1.1 in
httpcore does not hand reads to other tasks), and every task gets its own copy of the
context, so concurrent requests on other connections never mix their marks. What is
left inside the span is the kernel, the event loop's wake-up and the target — the same
things any client pays.

The transport is httpx's own, with the connection pool rebuilt around the wrapped
network backend (anyio's, which httpx uses by default, so TLS, timeouts and errors are
unchanged). httpx has no public hook for a network backend; :func:`timed_transport`
checks the one private attribute it replaces and fails loudly if httpx changes it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

__all__ = ["WireMarks", "stamping", "timed_transport"]


@dataclasses.dataclass
class WireMarks:
    """``perf_counter`` stamps of one request at the socket.

    ``first_write``: the first byte of the request handed to the socket; ``sent``: the
    last write done; ``first_read`` and ``last_read``: the first and last reads
    returning data (or end of stream).
    """

    first_write: float | None = None
    sent: float | None = None
    first_read: float | None = None
    last_read: float | None = None


_CURRENT: contextvars.ContextVar[WireMarks | None] = contextvars.ContextVar("readiness_wire_marks", default=None)


@contextlib.contextmanager
def stamping(marks: WireMarks) -> Iterator[WireMarks]:
    """Stamp the socket reads and writes made inside this block (in this task) into ``marks``."""
    token = _CURRENT.set(marks)
    try:
        yield marks
    finally:
        _CURRENT.reset(token)


class _TimedStream(httpcore.AsyncNetworkStream):
    """A network stream that stamps the current request's :class:`WireMarks`."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._inner.read(max_bytes, timeout)
        marks = _CURRENT.get()
        if marks is not None:
            marks.last_read = time.perf_counter()
            if marks.first_read is None:
                marks.first_read = marks.last_read
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        marks = _CURRENT.get()
        if marks is not None and marks.first_write is None:
            marks.first_write = time.perf_counter()
        await self._inner.write(buffer, timeout)
        if marks is not None:
            marks.sent = time.perf_counter()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _TimedStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _TimedBackend(httpcore.AsyncNetworkBackend):
    """anyio's network backend with every stream it opens wrapped in :class:`_TimedStream`."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _TimedStream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _TimedStream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def timed_transport(*, verify: Any, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport (no proxies, HTTP/1.1) whose connections stamp :class:`WireMarks`."""
    ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, limits=limits, trust_env=False)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError(f"httpx {httpx.__version__} no longer keeps its connection pool in "
                           "AsyncHTTPTransport._pool; readiness.probe.wire needs updating")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context, max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
        network_backend=_TimedBackend())
    return transport
