"""Background telemetry emission: every served request becomes one event for A8.

The request path only appends to a bounded in-memory queue (``put_nowait``): it never
waits for the network, never raises, and when the queue is full the event is dropped and
counted instead of slowing the app down. A daemon thread drains the queue every
``flush_interval_s`` and hands batches to a *sink*: over HTTP to A8's ingest API for
apps A1–A7, straight into the store for A8 itself (an app must not call itself over
HTTP to record its own requests).

A batch that fails to send is kept and retried on the next flushes (up to
``MAX_ATTEMPTS``) with the same ``X-Idempotency-Key`` and ``X-Trace-Id``, so a retry
after a lost response cannot double-count: A8 deduplicates the events by their own keys.

An optional *sampler* (:class:`sandbox.common.sampling.SamplingPolicy`) decides at the
source which business events are shipped and stamps the rate on them; events it samples
out are counted (``sampled_out``), never queued. Without a sampler every event ships.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import httpx

MAX_BATCH = 500
MAX_ATTEMPTS = 3
SEND_TIMEOUT_S = 2.0

Event = dict[str, Any]


class Sink(Protocol):
    """Where batches go. ``send`` raises on failure so the emitter can retry."""

    def send(self, events: list[Event], batch_key: str, batch_trace: str) -> None: ...

    def close(self) -> None: ...


class Sampler(Protocol):
    """Decides at the source whether an event ships: the event to queue, or None."""

    def admit(self, event: Event) -> Event | None: ...


class HttpSink:
    """POST batches to A8's ``/api/telemetry/events`` with the contract headers."""

    def __init__(self, ingest_url: str, telemetry_key: str | None, app_id: str) -> None:
        self.url = ingest_url
        headers = {"X-Source": f"telemetry-emitter-{app_id}"}
        if telemetry_key:
            headers["Authorization"] = f"Bearer {telemetry_key}"
        self._client = httpx.Client(timeout=SEND_TIMEOUT_S, headers=headers)

    def send(self, events: list[Event], batch_key: str, batch_trace: str) -> None:
        response = self._client.post(
            self.url,
            json={"events": events},
            headers={"X-Idempotency-Key": batch_key, "X-Trace-Id": batch_trace},
        )
        if response.status_code != 202:
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:200]}")

    def close(self) -> None:
        self._client.close()


class Emitter:
    """Bounded queue + flusher thread + counters."""

    def __init__(
        self,
        sink: Sink | None,
        *,
        flush_interval_s: float = 0.25,
        max_queue: int = 10_000,
        should_drop: Callable[[], bool] = lambda: False,
        sampler: Sampler | None = None,
    ) -> None:
        self.sink = sink
        self.sampler = sampler
        self.flush_interval_s = flush_interval_s
        self.should_drop = should_drop
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=max_queue)
        self._retry: tuple[list[Event], str, str, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts = {
            "emitted": 0,
            "sent": 0,
            "dropped_by_fault": 0,
            "dropped_queue_full": 0,
            "dropped_after_retries": 0,
            "send_failures": 0,
            "no_sink": 0,
            "sampled_out": 0,
        }

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def emit(self, event: Event) -> None:
        """Queue one event (unless the sampler keeps it out); never blocks, never raises."""
        self._count("emitted")
        if self.sampler is not None:
            admitted = self.sampler.admit(event)
            if admitted is None:
                self._count("sampled_out")
                return
            event = admitted
        if self.sink is None:
            self._count("no_sink")
            return
        if self.should_drop():
            self._count("dropped_by_fault")
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count("dropped_queue_full")

    def counters(self) -> dict[str, int]:
        with self._lock:
            return {**self._counts, "queued": self._queue.qsize()}

    def start(self) -> None:
        if self.sink is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="telemetry-emitter", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread after one last flush (bounded by ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.sink is not None:
            with contextlib.suppress(Exception):
                self.sink.close()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()
        self.flush()

    def flush(self) -> None:
        """Send the pending retry batch, then everything queued, in batches."""
        if self._retry is not None:
            events, key, trace, attempts = self._retry
            self._retry = None
            if not self._send(events, key, trace, attempts):
                return
        while True:
            batch: list[Event] = []
            with contextlib.suppress(queue.Empty):
                while len(batch) < MAX_BATCH:
                    batch.append(self._queue.get_nowait())
            if not batch:
                return
            if not self._send(batch, uuid.uuid4().hex, uuid.uuid4().hex, 0):
                return

    def _send(self, events: list[Event], key: str, trace: str, attempts: int) -> bool:
        assert self.sink is not None
        try:
            self.sink.send(events, key, trace)
        except Exception:
            self._count("send_failures")
            if attempts + 1 >= MAX_ATTEMPTS:
                self._count("dropped_after_retries", len(events))
            else:
                self._retry = (events, key, trace, attempts + 1)
            return False
        self._count("sent", len(events))
        return True
