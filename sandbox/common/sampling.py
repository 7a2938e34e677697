"""Telemetry sampling at the source: what share of each kind of business event reaches A8.

High-volume success events (``cta_impression``: one per page view that shows a call to
action) would cost more to ship and store than they are worth one by one, so the emitter
keeps a seeded random ``SUCCESS_RATE`` share of them and writes that rate on each kept
event (``sample_rate``), so a consumer can scale counts back up (``count / sample_rate``).
Everything an audit must be able to count exactly is never sampled:

* errors — ``status >= 500`` or an ``error`` field on the event;
* finance — any event with ``finance_metrics`` (checkouts, settled revenue, billing);
* request telemetry (``http_request``), which dual-source checks match one by one.

Decisions draw from the app's seeded RNG (``ctx.rng``), so the same request sequence
against a fresh app keeps the same events from run to run.

The ``telemetry_sampling`` fault knob breaks the policy on purpose, so that an audit can
prove its sampling check detects a leak: ``sample_everything`` samples errors and finance
at the success rate too (they go missing), ``sample_nothing`` ships every success event
(the sampling is gone). ``policy`` is the correct behaviour and the default.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Any

from sandbox.common.knobs import KnobError

if TYPE_CHECKING:
    from sandbox.common.context import AppContext

SUCCESS_RATE = 0.10
HIGH_VOLUME_SUCCESS_TYPES = frozenset({"cta_impression"})
UNSAMPLED_TYPES = frozenset({"http_request"})
KNOB = "telemetry_sampling"
MODES = ("policy", "sample_everything", "sample_nothing")
SERVICE = "sampling"


def is_error(event: dict[str, Any]) -> bool:
    """A server error (status >= 500) or an event that reports an error of its own."""
    status = event.get("status")
    numeric = isinstance(status, int | float) and not isinstance(status, bool)
    return (numeric and status >= 500) or event.get("error") not in (None, "", False)


def is_finance(event: dict[str, Any]) -> bool:
    return event.get("finance_metrics") is not None


class SamplingPolicy:
    """Decides, per event, whether it is shipped and at which recorded rate.

    Also the ``telemetry_sampling`` fault knob (validate/apply/snapshot/reset), so a
    ``DELETE /admin/faults`` restores the correct policy with every other knob.
    """

    def __init__(self, rng: random.Random, success_rate: float = SUCCESS_RATE,
                 high_volume_types: frozenset[str] = HIGH_VOLUME_SUCCESS_TYPES) -> None:
        if not 0 < success_rate <= 1:
            raise ValueError(f"success_rate must be in (0, 1], got {success_rate!r}")
        self.rng = rng
        self.success_rate = success_rate
        self.high_volume_types = high_volume_types
        self.mode = "policy"
        self._lock = threading.Lock()
        self._counts = {"kept_full": 0, "sampled_kept": 0, "sampled_out": 0}

    def rate_for(self, event: dict[str, Any]) -> float | None:
        """The share of events like this one that are shipped; None: not subject to sampling."""
        if event.get("event_type") in UNSAMPLED_TYPES:
            return None
        if self.mode == "sample_everything":
            return self.success_rate
        if is_error(event) or is_finance(event):
            return 1.0
        if event.get("event_type") in self.high_volume_types and self.mode == "policy":
            return self.success_rate
        return 1.0

    def admit(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The event to ship (with ``sample_rate`` set), or None when it is sampled out."""
        rate = self.rate_for(event)
        if rate is None:
            return event
        if rate >= 1.0:
            self._count("kept_full")
            return {**event, "sample_rate": 1.0}
        with self._lock:
            keep = self.rng.random() < rate
        self._count("sampled_kept" if keep else "sampled_out")
        return {**event, "sample_rate": rate} if keep else None

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # -- the fault knob ------------------------------------------------------------
    def validate(self, value: Any) -> str:
        if value not in MODES:
            raise KnobError(KNOB, f"{KNOB} must be one of {', '.join(MODES)}")
        return str(value)

    def apply(self, value: Any) -> None:
        self.mode = value

    def snapshot(self) -> str:
        return self.mode

    def reset(self) -> None:
        self.mode = "policy"


def install(ctx: AppContext) -> SamplingPolicy:
    """The app's sampling policy, created on first use: seeded from ``ctx.rng``, attached to
    the emitter and registered as the ``telemetry_sampling`` fault knob. Idempotent."""
    policy: SamplingPolicy | None = ctx.services.get(SERVICE)
    if policy is not None:
        return policy
    policy = SamplingPolicy(ctx.rng)
    ctx.services[SERVICE] = policy
    ctx.faults.register(KNOB, policy)
    if ctx.emitter is not None:
        ctx.emitter.sampler = policy
    return policy
