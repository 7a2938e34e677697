"""MailRelay: a simulated third-party mailer that behaves like a remote API.

A7's lead capture sends a welcome mail through a provider it does not control. The
relay lives in the app process, but each call behaves as a network call would: it
takes a time drawn from a latency distribution, it may fail (a drawn error, answered
after that time), and the caller stops waiting after ``timeout_ms`` — in which case
the relay has *still accepted* the mail, as a slow provider does, and the caller cannot
tell. That last case is why deliveries carry an idempotency key: the relay remembers
every accepted key and answers a repeat with the original delivery (counted as a
suppressed duplicate) instead of sending a second mail.

The relay's behaviour is the ``mailer`` fault knob of the app that owns it
(``PUT /admin/faults {"mailer": {...}}``); the knob is replaced as a whole and omitted
fields take their defaults. The default (lognormal, median 200 ms, sigma 0.3) makes a
synchronous call clearly too slow for a 150 ms hot-path target. Draws come from the
relay's own seeded ``random.Random``, so that calls made by background workers do not
shift the draws of the request path's fault knobs.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import random
import secrets
import threading
from collections.abc import Callable
from typing import Any

from sandbox.common.knobs import KnobError, sample_delay_ms, validate_distribution
from sandbox.common.web import utc_now_iso

KNOB = "mailer"
DEFAULT_LATENCY: dict[str, Any] = {"dist": "lognormal", "median_ms": 200.0, "sigma": 0.3}
DEFAULT_TIMEOUT_MS = 2000.0
MAX_TIMEOUT_MS = 60_000.0
MAX_REMEMBERED_KEYS = 100_000  # accepted keys the relay keeps; the oldest are forgotten first
_FIELDS = ("latency", "error_rate", "timeout_ms")


class MailerError(RuntimeError):
    """The relay did not accept the mail (a drawn error), or the caller gave up waiting."""


class MailerTimeout(MailerError):
    """The caller stopped waiting after ``timeout_ms``; the relay may have accepted the mail."""


class MailerInterrupted(MailerError):
    """The caller was asked to stop (shutdown) while waiting; nothing is known of the call."""


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One mail the relay accepted, keyed by the caller's idempotency key."""

    message_id: str
    key: str
    to: str
    accepted_at: str
    duplicates: int = 0

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Call:
    latency_ms: float
    fails: bool
    timeout_ms: float

    @property
    def wait_s(self) -> float:
        return min(self.latency_ms, self.timeout_ms) / 1000

    @property
    def times_out(self) -> bool:
        return self.latency_ms > self.timeout_ms


def default_settings() -> dict[str, Any]:
    return {"latency": dict(DEFAULT_LATENCY), "error_rate": 0.0, "timeout_ms": DEFAULT_TIMEOUT_MS}


def validate_settings(value: Any) -> dict[str, Any]:
    """Check a ``mailer`` knob value; return it with defaults filled in, or raise :class:`KnobError`."""
    if not isinstance(value, dict):
        raise KnobError(KNOB, f"{KNOB} must be an object with latency, error_rate and/or timeout_ms")
    extra = sorted(set(value) - set(_FIELDS))
    if extra:
        raise KnobError(f"{KNOB}.{extra[0]}", f"{KNOB}: unexpected field {extra[0]}")
    out = default_settings()
    if "latency" in value:
        out["latency"] = validate_distribution(f"{KNOB}.latency", value["latency"])
    if "error_rate" in value:
        out["error_rate"] = _bounded(f"{KNOB}.error_rate", value["error_rate"], 0, 1)
    if "timeout_ms" in value:
        out["timeout_ms"] = _bounded(f"{KNOB}.timeout_ms", value["timeout_ms"], 1, MAX_TIMEOUT_MS)
    return out


def _bounded(field: str, value: Any, low: float, high: float) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise KnobError(field, f"{field} must be a number between {low:g} and {high:g}")
    return float(value)


class MailRelay:
    """The simulated provider, its settings (an :class:`~sandbox.common.knobs.ExtraKnob`) and counters."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._settings = default_settings()
        self._accepted: collections.OrderedDict[str, Delivery] = collections.OrderedDict()
        self._counts = {
            "calls": 0,
            "sends": 0,
            "duplicates_suppressed": 0,
            "failures": 0,
            "errors": 0,
            "timeouts": 0,
        }

    # -- the fault knob -------------------------------------------------------------
    def validate(self, value: Any) -> dict[str, Any]:
        return validate_settings(value)

    def apply(self, value: Any) -> None:
        with self._lock:
            self._settings = dict(value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self._settings, "latency": dict(self._settings["latency"])}

    def reset(self) -> None:
        self.apply(default_settings())

    # -- calls ----------------------------------------------------------------------
    def _plan(self) -> _Call:
        with self._lock:
            s = self._settings
            latency = sample_delay_ms(s["latency"], self._rng)
            fails = s["error_rate"] > 0 and self._rng.random() < s["error_rate"]
            return _Call(latency, fails, s["timeout_ms"])

    def _finish(self, call: _Call, key: str, to: str) -> Delivery:
        """What the relay did with the call, once the caller's wait is over."""
        with self._lock:
            self._counts["calls"] += 1
            if call.fails:
                self._counts["failures"] += 1
                if call.times_out:
                    self._counts["timeouts"] += 1
                    raise MailerTimeout(f"MailRelay did not answer within {call.timeout_ms:g} ms")
                self._counts["errors"] += 1
                raise MailerError("MailRelay answered 503: service unavailable")
            delivery = self._accepted.get(key)
            if delivery is None:
                delivery = Delivery(f"msg_{secrets.token_hex(10)}", key, to, utc_now_iso())
                self._counts["sends"] += 1
            else:
                delivery = dataclasses.replace(delivery, duplicates=delivery.duplicates + 1)
                self._counts["duplicates_suppressed"] += 1
            self._accepted[key] = delivery
            self._accepted.move_to_end(key)
            while len(self._accepted) > MAX_REMEMBERED_KEYS:
                self._accepted.popitem(last=False)
            if call.times_out:  # accepted, but the caller has given up
                self._counts["failures"] += 1
                self._counts["timeouts"] += 1
                raise MailerTimeout(f"MailRelay did not answer within {call.timeout_ms:g} ms")
            return delivery

    async def send(self, key: str, to: str) -> Delivery:
        """One call from the event loop (the synchronous hot path awaits it)."""
        call = self._plan()
        await asyncio.sleep(call.wait_s)
        return self._finish(call, key, to)

    def send_blocking(self, key: str, to: str, wait: Callable[[float], bool]) -> Delivery:
        """One call from a worker thread; ``wait(s)`` sleeps and returns True when asked to stop."""
        call = self._plan()
        if wait(call.wait_s):
            raise MailerInterrupted("stopped while waiting for MailRelay")
        return self._finish(call, key, to)

    # -- inspection -----------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def lookup(self, key: str) -> Delivery | None:
        """The delivery accepted under ``key``, if the relay remembers one."""
        with self._lock:
            return self._accepted.get(key)
