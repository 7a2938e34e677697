"""Small real HTTP servers on 127.0.0.1 for the client tests.

:class:`LoopbackServer` speaks HTTP/1.1 by hand over asyncio streams in a background
thread, because the behaviours under test are exactly the ones a framework would hide:
a response that stalls, dribbles, lies about its length, is not HTTP at all, or is huge.
It records every request it parsed (method, path, headers, body, connection number, arrival
time, and whether the cyclic GC was on — the server shares the client's process), so tests
assert on what the server actually received and when.

Routes (query parameters in brackets):

========================  ==================================================================
``/ok``                   200 JSON ``{"ok": true}``, ``Server-Timing: db;dur=2.5, app;dur=12.3``
``/slow`` [delay]         sleeps ``delay`` seconds, then 200
``/stall`` [nth, delay]   200, but the ``nth`` request to ``/stall`` (1-based) waits ``delay`` s first
``/dribble`` [n, every]   200 chunked, ``n`` chunks one every ``every`` seconds
``/huge`` [size, chunked] ``size`` bytes, with Content-Length unless ``chunked=1``
``/status`` [code]        that status with a short text body
``/not-json``             200 ``text/html`` body
``/cookies``              two ``Set-Cookie`` lines plus credential-like response headers
``/bad-gzip``             ``Content-Encoding: gzip`` over bytes that are not gzip
``/short``                declares 100 bytes, sends 10, closes
``/garbage``              answers with bytes that are not HTTP, then closes
========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclasses.dataclass(frozen=True)
class SeenRequest:
    """One request as the server parsed it (header names lower-case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int
    at: float = 0.0  # wall clock on arrival
    gc_enabled: bool = True  # gc.isenabled() on arrival

    def json(self) -> object:
        return json.loads(self.body)


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class LoopbackServer:
    """A hand-written HTTP/1.1 server with keep-alive, in a thread with its own loop."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[SeenRequest] = []
        self.connections = 0
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loopback-server", daemon=True)
        self.port = 0

    @property
    def base(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> LoopbackServer:
        self._thread.start()
        assert self._ready.wait(5), "loopback server did not start"
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()
            for _ in range(3):  # let the transports' connection_lost callbacks close their sockets
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {}
                for line in filter(None, header_lines):
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = urlsplit(target).path
                query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
                self.requests.append(SeenRequest(method, path, headers, body, number, time.time(), gc.isenabled()))
                if not await self._respond(path, query, writer):
                    return
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):  # closed now, not at GC
                await writer.wait_closed()
            self._tasks.discard(task)

    async def _respond(self, path: str, query: dict[str, str], writer: asyncio.StreamWriter) -> bool:
        """Write one response; return False when the connection must close afterwards."""
        if path == "/ok":
            writer.write(_response(200, b'{"ok": true}', {"Content-Type": "application/json",
                                                         "Server-Timing": "db;dur=2.5, app;dur=12.3"}))
        elif path == "/slow":
            await asyncio.sleep(float(query.get("delay", "1")))
            writer.write(_response(200, b"slow"))
        elif path == "/stall":
            if sum(r.path == "/stall" for r in self.requests) == int(query.get("nth", "0")):
                await asyncio.sleep(float(query.get("delay", "1")))
            writer.write(_response(200, b"ok"))
        elif path == "/dribble":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(int(query.get("n", "10"))):
                await writer.drain()
                await asyncio.sleep(float(query.get("every", "0.1")))
                writer.write(b"1\r\nx\r\n")
            writer.write(b"0\r\n\r\n")
        elif path == "/huge":
            size, piece = int(query["size"]), b"x" * 65536
            chunked = query.get("chunked") == "1"
            framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
            writer.write(f"HTTP/1.1 200 OK\r\n{framing}\r\n\r\n".encode())
            while size > 0:
                part = piece[:size]
                writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
                size -= len(part)
                await writer.drain()
            if chunked:
                writer.write(b"0\r\n\r\n")
        elif path == "/status":
            writer.write(_response(int(query["code"]), b"status body"))
        elif path == "/not-json":
            writer.write(_response(200, b"<html>oops</html>", {"Content-Type": "text/html"}))
        elif path == "/cookies":
            writer.write(_response(200, b"{}", {
                "Set-Cookie": "session=s3cr3t-value; Path=/; HttpOnly; SameSite=None; Secure",
                "set-cookie": "theme=dark",
                "Authorization": "Bearer leaked-token", "X-Api-Key": "leaked-key",
                "Cache-Control": "no-store"}))
        elif path == "/bad-gzip":
            writer.write(_response(200, b"this is not gzip at all", {"Content-Encoding": "gzip"}))
        elif path == "/short":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
            return False
        elif path == "/garbage":
            writer.write(b"\x00\x17\x03garbage that is not HTTP\r\n\r\n")
            await writer.drain()
            return False
        else:
            writer.write(_response(404, b"no such route"))
        await writer.drain()
        return True


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    srv = LoopbackServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command line."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed; TLS timing cannot be exercised")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_loopback(tls_files: tuple[Path, Path]) -> Iterator[LoopbackServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    srv = LoopbackServer(tls=context).start()
    yield srv
    srv.stop()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (a port just released by the kernel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
