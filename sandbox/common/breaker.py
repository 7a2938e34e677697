"""Retry pacing and a circuit breaker for calls to a flaky third party.

Two rules keep a background worker from making an outage worse:

* **Exponential backoff with jitter** (:class:`Backoff`): after the n-th failed attempt
  the worker waits ``min(cap, base · 2^(n-1))`` scaled by a random factor in
  ``[1 - jitter, 1]``, so retries thin out as the failure persists and many workers that
  failed together do not retry in lockstep. Attempts are bounded, so a poison message
  ends as ``failed`` instead of circling forever.
* **Circuit breaker** (:class:`CircuitBreaker`): after ``failure_threshold`` consecutive
  failures the breaker *opens* and no call is made for ``open_s`` seconds; it then turns
  *half-open* and lets exactly one trial call through — success *closes* it, failure
  opens it again for another ``open_s``. While it is open the worker waits instead of
  spending its bounded attempts against a dependency known to be down.

Both are thread-safe (several worker threads share one breaker) and take their clock
and random source as arguments, so their behaviour is reproducible.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from sandbox.common.web import utc_now_iso

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
MAX_TRANSITIONS = 50


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter (see module docstring)."""

    max_attempts: int = 5
    base_s: float = 0.05
    cap_s: float = 2.0
    jitter: float = 0.5  # the delay is scaled by a factor drawn from [1 - jitter, 1]

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError("base_s must be > 0 and <= cap_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def ceiling_s(self, failed_attempts: int) -> float:
        """The un-jittered wait after ``failed_attempts`` failures (1-based)."""
        return min(self.cap_s, self.base_s * 2 ** max(0, failed_attempts - 1))

    def delay_s(self, failed_attempts: int, rng: random.Random) -> float:
        """The wait before the next attempt, after ``failed_attempts`` failures."""
        return self.ceiling_s(failed_attempts) * rng.uniform(1 - self.jitter, 1)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class CircuitBreaker:
    """closed → open → half-open → closed (see module docstring).

    ``allow()`` asks for permission to make one call; the caller must then report the
    outcome with ``record_success()`` or ``record_failure()``. In half-open state only
    one permission is handed out until its outcome is reported.
    """

    def __init__(
        self, failure_threshold: int = 3, open_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if open_s <= 0:
            raise ValueError("open_s must be > 0")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive_failures = 0
        self._open_until = 0.0
        self._trial_in_flight = False
        self._rejected = 0
        self._transitions: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_TRANSITIONS)

    def _move(self, to: str) -> None:
        self._transitions.append({"from": self._state, "to": to, "at": utc_now_iso()})
        self._state = to

    def _refresh(self) -> None:
        """Open turns half-open once its time is up (state is a function of time)."""
        if self._state == OPEN and self._clock() >= self._open_until:
            self._move(HALF_OPEN)
            self._trial_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            self._refresh()
            return self._state

    def allow(self) -> bool:
        """True when a call may be made now; False while open or while a trial is out."""
        with self._lock:
            self._refresh()
            if self._state == CLOSED:
                return True
            if self._state == HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            self._rejected += 1
            return False

    def wait_hint_s(self) -> float:
        """How long a refused caller should wait before asking again."""
        with self._lock:
            self._refresh()
            if self._state == OPEN:
                return max(0.0, self._open_until - self._clock())
            return 0.0 if self._state == CLOSED else min(0.05, self.open_s)

    def record_success(self) -> None:
        with self._lock:
            self._consecutive_failures = 0
            self._trial_in_flight = False
            if self._state != CLOSED:
                self._move(CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive_failures += 1
            self._trial_in_flight = False
            if self._state == HALF_OPEN or (
                self._state == CLOSED and self._consecutive_failures >= self.failure_threshold
            ):
                self._open_until = self._clock() + self.open_s
                self._move(OPEN)

    def reset(self) -> None:
        """Force the breaker closed (an operator's override); recorded as a transition."""
        with self._lock:
            self._consecutive_failures = 0
            self._trial_in_flight = False
            self._open_until = 0.0
            if self._state != CLOSED:
                self._move(CLOSED)

    def release(self) -> None:
        """Give back a permission that was not used (the caller stopped before calling)."""
        with self._lock:
            self._trial_in_flight = False

    def snapshot(self) -> dict[str, Any]:
        """State, counters and the recent transitions, for the admin API."""
        with self._lock:
            self._refresh()
            return {
                "state": self._state,
                "consecutive_failures": self._consecutive_failures,
                "failure_threshold": self.failure_threshold,
                "open_s": self.open_s,
                "retry_in_s": round(max(0.0, self._open_until - self._clock()), 3) if self._state == OPEN else 0.0,
                "rejected_calls": self._rejected,
                "transitions": list(self._transitions),
            }
