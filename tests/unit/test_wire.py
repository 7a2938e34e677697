"""Socket-level stamps (readiness.probe.wire): what is stamped, when, and into whose marks."""

from __future__ import annotations

import asyncio

import httpcore
import httpx

from readiness.core import aio
from readiness.probe.wire import WireMarks, _TimedStream, stamping, timed_transport


class _FakeStream(httpcore.AsyncNetworkStream):
    """An in-memory stream: reads pop queued chunks after an optional pause."""

    def __init__(self, chunks: list[bytes], pause_s: float = 0.0) -> None:
        self.chunks = list(chunks)
        self.pause_s = pause_s
        self.written = bytearray()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await asyncio.sleep(self.pause_s)
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written += buffer

    async def aclose(self) -> None:
        pass


def test_stamps_are_ordered_and_only_the_first_write_starts_the_span():
    async def go() -> WireMarks:
        stream = _TimedStream(_FakeStream([b"a", b"b"], pause_s=0.02))
        with stamping(WireMarks()) as marks:
            await stream.write(b"GET / HTTP/1.1\r\n")
            first = marks.first_write
            await stream.write(b"\r\n")
            assert marks.first_write == first
            await stream.read(10)
            await stream.read(10)
        return marks
    marks = aio.run(go())
    assert None not in (marks.first_write, marks.sent, marks.first_read, marks.last_read)
    assert marks.first_write <= marks.sent < marks.first_read < marks.last_read
    assert marks.last_read - marks.first_read >= 0.015  # the second read came one pause later


def test_outside_a_stamping_block_nothing_is_recorded():
    async def go() -> WireMarks:
        marks = WireMarks()
        stream = _TimedStream(_FakeStream([b"a"]))
        with stamping(marks):
            pass
        await stream.write(b"x")
        await stream.read(1)
        return marks
    assert aio.run(go()) == WireMarks()


def test_concurrent_tasks_stamp_their_own_marks():
    async def one(pause_s: float) -> WireMarks:
        stream = _TimedStream(_FakeStream([b"a"], pause_s=pause_s))
        with stamping(WireMarks()) as marks:
            await stream.write(b"x")
            await stream.read(1)
        return marks

    async def go() -> list[WireMarks]:
        return list(await asyncio.gather(one(0.15), one(0.0)))
    slow, fast = aio.run(go())
    assert slow.last_read - slow.first_write >= 0.14
    assert fast.last_read - fast.first_write < 0.1


def test_timed_transport_keeps_the_configured_pool_limits():
    limits = httpx.Limits(max_connections=7, max_keepalive_connections=0)
    transport = timed_transport(verify=True, limits=limits)
    pool = transport._pool
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert (pool._max_connections, pool._max_keepalive_connections) == (7, 0)
