"""Background delivery of queued mails: worker threads, bounded retries, a circuit breaker.

A request handler that must send mail through a slow third party enqueues a job in
its app's SQLite work queue and answers at once; these workers take the job and make
the call off the request path. Each job carries the delivery's idempotency ``key``
and the recipient; every attempt for that job sends the same key, so the provider
accepts the mail once however often a timeout makes the worker try again.

Per job: ask the breaker (wait while it is open), count the attempt in the app's
ledger, call the relay; on failure wait the backoff and try again, up to
``backoff.max_attempts`` attempts counted across restarts by the ledger; then the job
is complete — delivered or failed for good. The ledger (the owning app) records the
outcome where its users look for it.

Threads start with :meth:`DeliveryWorkers.start` and stop with :meth:`close`: a worker
waiting on the relay, a backoff or the breaker wakes at once, puts its job back as
pending and exits. Jobs still claimed when a process died are put back at the next
start, so queued work survives restarts and a stopped worker loses nothing.
"""

from __future__ import annotations

import random
import sys
import threading
import traceback
from typing import Any, Protocol

from sandbox.common.breaker import Backoff, CircuitBreaker
from sandbox.common.mailer import Delivery, MailerError, MailerInterrupted, MailRelay
from sandbox.common.workqueue import Job, WorkQueue

KIND = "mail_delivery"
IDLE_POLL_S = 0.5  # a worker with nothing to do looks at the queue this often (jobs also wake it)
ERROR_PAUSE_S = 0.2


class Ledger(Protocol):
    """Where the owning app records attempts and outcomes, keyed by the delivery key."""

    def attempts(self, key: str) -> int:
        """Attempts already made for ``key`` (survives restarts)."""
        ...

    def attempt_started(self, key: str) -> int:
        """Count one more attempt; return the attempt number (1-based)."""
        ...

    def delivered(self, key: str, delivery: Delivery, attempts: int) -> None: ...

    def failed(self, key: str, error: str, attempts: int, final: bool) -> None: ...


class DeliveryWorkers:
    """A small pool of threads draining one job kind from a :class:`WorkQueue`."""

    def __init__(
        self,
        queue: WorkQueue,
        relay: MailRelay,
        ledger: Ledger,
        rng: random.Random,
        *,
        kind: str = KIND,
        workers: int = 4,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.queue = queue
        self.relay = relay
        self.ledger = ledger
        self.kind = kind
        self.backoff = backoff or Backoff()
        self.breaker = breaker or CircuitBreaker()
        self._rng = rng
        self._size = workers
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._counts = {"attempts": 0, "retries": 0, "delivered": 0, "failed": 0, "in_flight": 0, "worker_errors": 0}

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def start(self) -> None:
        """Put back jobs a dead process left claimed, then start the threads."""
        if self._threads:
            return
        # The queue has no lease expiry; with one pool per app, any job of this kind
        # still 'claimed' before the pool starts belongs to a process that is gone.
        self.queue.db.execute(
            "UPDATE jobs SET state = 'pending', claimed_at = NULL WHERE kind = ? AND state = 'claimed'", (self.kind,)
        )
        for i in range(self._size):
            thread = threading.Thread(target=self._run, name=f"{self.kind}-worker-{i + 1}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def notify(self) -> None:
        """A job was just enqueued: wake the idle workers."""
        self._wake.set()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop every worker (each returns its job to the queue) and wait for them."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout_s)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
        return {
            **counts,
            "workers": self._size,
            "running": sum(t.is_alive() for t in self._threads),
            "pending": self.queue.depth(self.kind),
            "backoff": self.backoff.as_json(),
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(IDLE_POLL_S)
            self._wake.clear()
            while not self._stop.is_set():
                try:
                    job = self.queue.claim(self.kind)
                    if job is None:
                        break
                    self._count("in_flight")
                    try:
                        self._deliver(job)
                    finally:
                        self._count("in_flight", -1)
                except Exception:  # a worker must outlive one bad job or a busy database
                    self._count("worker_errors")
                    print(f"{threading.current_thread().name}: {traceback.format_exc()}", file=sys.stderr, flush=True)
                    self._stop.wait(ERROR_PAUSE_S)

    def _release(self, job: Job) -> None:
        self.queue.db.execute("UPDATE jobs SET state = 'pending', claimed_at = NULL WHERE id = ?", (job.id,))

    def _deliver(self, job: Job) -> None:
        key, to = str(job.payload["key"]), str(job.payload["to"])
        limit = self.backoff.max_attempts
        while not self._stop.is_set():
            if not self.breaker.allow():
                self._stop.wait(max(self.breaker.wait_hint_s(), 0.01))
                continue
            if self.ledger.attempts(key) >= limit:  # attempts used up before a restart
                self.breaker.release()
                self._finish_failed(job, key, "no attempts left", limit)
                return
            attempt = self.ledger.attempt_started(key)
            self._count("attempts")
            try:
                delivery = self.relay.send_blocking(key, to, self._stop.wait)
            except MailerInterrupted:
                self.breaker.release()
                break
            except MailerError as exc:
                self.breaker.record_failure()
                if attempt >= limit:
                    self._finish_failed(job, key, str(exc), attempt)
                    return
                self.ledger.failed(key, str(exc), attempt, final=False)
                self._count("retries")
                self._stop.wait(self.backoff.delay_s(attempt, self._rng))
                continue
            self.breaker.record_success()
            self.ledger.delivered(key, delivery, attempt)
            self.queue.complete(job.id)
            self._count("delivered")
            return
        self._release(job)

    def _finish_failed(self, job: Job, key: str, error: str, attempts: int) -> None:
        self.ledger.failed(key, error, attempts, final=True)
        self.queue.complete(job.id)
        self._count("failed")
