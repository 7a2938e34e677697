"""Fault knobs and feature flags: validated, in-memory, per app process.

The knobs let an audit *cause* the conditions it must detect (slow routes, error
bursts, outages, lost telemetry, broken dependencies) without touching code. Flags gate
the four fixes so that one run can show before, after and rollback. Both are held in
memory by the app process they were set on, so a change takes effect on the very next
request; a restart returns to the launch-time flags and to no faults.

Randomness (latency samples, error-rate draws, telemetry drops) comes from one
``random.Random`` per app seeded with ``"<seed>:<app id>"`` (seed from
``SANDBOX_SEED``, default ``sandbox``), so a sequence of requests against a fresh app
sees the same draws from run to run.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from sandbox.common.web import FieldError

FLAG_NAMES = ("a2_readiness", "a7_async_leads", "a8_banner_ttl", "a8_demo_mode")
DEPENDENCIES = ("db", "queue", "upstream")
KNOB_NAMES = ("latency", "error_rate", "force_503_s", "telemetry_drop", "dependencies_down")
MAX_DELAY_MS = 60_000.0
MAX_FORCE_503_S = 86_400.0
_DIST_FIELDS = {"fixed": ("ms",), "lognormal": ("median_ms", "sigma"), "uniform": ("low_ms", "high_ms")}


class KnobError(FieldError):
    """An invalid knob or flag value; ``field`` names it, ``message`` says what is wrong."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _in_range(field: str, value: Any, low: float, high: float, what: str) -> float:
    number = _number(value)
    if number is None or not low <= number <= high:
        raise KnobError(field, f"{field} must be {what}")
    return number


def _route_key(knob: str, key: Any) -> str:
    if not isinstance(key, str) or not (key == "*" or key.startswith("/")):
        raise KnobError(knob, f"{knob}: route must be '*' or start with '/': {key}")
    return key


def _latency_spec(route: str, spec: Any) -> dict[str, Any]:
    return validate_distribution(f"latency[{route}]", spec)


def validate_distribution(field: str, spec: Any) -> dict[str, Any]:
    """Check one latency distribution (``fixed``, ``lognormal``, ``uniform``) named ``field``.

    Shared by the per-route latency knob and by app-specific knobs that simulate a slow
    dependency, so that every delay in the sandbox is described the same way.
    """
    if not isinstance(spec, dict) or "dist" not in spec:
        raise KnobError(field, f"{field} must be an object with a 'dist'")
    dist = spec["dist"]
    if dist not in _DIST_FIELDS:
        raise KnobError(f"{field}.dist", f"{field}.dist must be one of fixed, lognormal, uniform")
    extra = sorted(set(spec) - {"dist", *_DIST_FIELDS[dist]})
    if extra:
        raise KnobError(f"{field}.{extra[0]}", f"{field}: unexpected field {extra[0]} for dist {dist}")
    span = f"a number between 0 and {MAX_DELAY_MS:g}"
    out: dict[str, Any] = {"dist": dist}
    if dist == "fixed":
        out["ms"] = _in_range(f"{field}.ms", spec.get("ms"), 0, MAX_DELAY_MS, span)
    elif dist == "lognormal":
        out["median_ms"] = _in_range(f"{field}.median_ms", spec.get("median_ms"), 0, MAX_DELAY_MS, span)
        out["sigma"] = _in_range(f"{field}.sigma", spec.get("sigma"), 0, 5, "a number between 0 and 5")
    else:
        out["low_ms"] = _in_range(f"{field}.low_ms", spec.get("low_ms"), 0, MAX_DELAY_MS, span)
        out["high_ms"] = _in_range(f"{field}.high_ms", spec.get("high_ms"), 0, MAX_DELAY_MS, span)
        if out["high_ms"] < out["low_ms"]:
            raise KnobError(f"{field}.high_ms", f"{field}.high_ms must be >= low_ms")
    return out


class ExtraKnob(Protocol):
    """A fault knob one app adds to its ``/admin/faults`` (A7's ``mailer``, for instance).

    ``validate`` returns the normalised value or raises :class:`KnobError`; ``apply``
    installs a validated value; ``snapshot`` gives the current value in the ``PUT``
    shape; ``reset`` returns to the knob's default (``DELETE /admin/faults``).
    """

    def validate(self, value: Any) -> Any: ...

    def apply(self, value: Any) -> None: ...

    def snapshot(self) -> Any: ...

    def reset(self) -> None: ...


def validate_faults(body: Any, extra: Mapping[str, ExtraKnob] | None = None) -> dict[str, Any]:
    """Check a ``PUT /admin/faults`` body; return it normalised or raise :class:`KnobError`.

    ``extra`` holds the app-specific knobs this app accepts besides the shared ones.
    """
    if not isinstance(body, dict):
        raise KnobError("body", "body must be a JSON object")
    extra = extra or {}
    out: dict[str, Any] = {}
    for knob, value in body.items():
        if knob in extra:
            out[knob] = extra[knob].validate(value)
            continue
        if knob not in KNOB_NAMES:
            raise KnobError(str(knob), f"unknown fault knob: {knob}")
        if knob == "latency":
            if not isinstance(value, dict):
                raise KnobError(knob, "latency must be an object mapping a route or '*' to a distribution")
            out[knob] = {_route_key(knob, r): _latency_spec(r, s) for r, s in value.items()}
        elif knob == "error_rate":
            if not isinstance(value, dict):
                raise KnobError(knob, "error_rate must be an object mapping a route or '*' to a rate")
            out[knob] = {
                _route_key(knob, r): _in_range(f"error_rate[{r}]", p, 0, 1, "a number between 0 and 1")
                for r, p in value.items()
            }
        elif knob == "force_503_s":
            out[knob] = _in_range(
                knob, value, 0, MAX_FORCE_503_S, f"a number of seconds between 0 and {MAX_FORCE_503_S:g}"
            )
        elif knob == "telemetry_drop":
            out[knob] = _in_range(knob, value, 0, 1, "a number between 0 and 1")
        else:
            if not isinstance(value, list) or any(d not in DEPENDENCIES for d in value):
                raise KnobError(knob, "dependencies_down must be a list drawn from db, queue, upstream")
            out[knob] = sorted(set(value))
    return out


def validate_flags(body: Any) -> dict[str, bool]:
    """Check a flags body (partial); return it or raise :class:`KnobError`."""
    if not isinstance(body, dict):
        raise KnobError("body", "body must be a JSON object")
    for name, value in body.items():
        if name not in FLAG_NAMES:
            raise KnobError(str(name), f"unknown flag: {name}")
        if not isinstance(value, bool):
            raise KnobError(name, f"flag {name} must be true or false")
    return dict(body)


def sample_delay_ms(spec: Mapping[str, Any], rng: random.Random) -> float:
    """One delay drawn from a validated latency spec, capped at :data:`MAX_DELAY_MS`."""
    dist = spec["dist"]
    if dist == "fixed":
        value = spec["ms"]
    elif dist == "uniform":
        value = rng.uniform(spec["low_ms"], spec["high_ms"])
    else:
        value = spec["median_ms"] * math.exp(rng.gauss(0.0, spec["sigma"]))
    return min(float(value), MAX_DELAY_MS)


class Faults:
    """The live fault settings of one app. ``PUT`` replaces the knobs it names."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._lock = threading.Lock()
        self._latency: dict[str, dict[str, Any]] = {}
        self._error_rate: dict[str, float] = {}
        self._force_503_until = 0.0
        self._telemetry_drop = 0.0
        self._down: list[str] = []
        self._extra: dict[str, ExtraKnob] = {}

    def register(self, name: str, knob: ExtraKnob) -> None:
        """Add an app-specific knob; it then validates, applies, snapshots and resets with the others."""
        if name in KNOB_NAMES or name in self._extra:
            raise ValueError(f"fault knob {name} already exists")
        self._extra[name] = knob

    def update(self, body: Any) -> None:
        """Validate everything first, then apply, so a bad body changes nothing."""
        knobs = validate_faults(body, self._extra)
        with self._lock:
            for name, knob in self._extra.items():
                if name in knobs:
                    knob.apply(knobs[name])
            if "latency" in knobs:
                self._latency = knobs["latency"]
            if "error_rate" in knobs:
                self._error_rate = knobs["error_rate"]
            if "force_503_s" in knobs:
                self._force_503_until = time.monotonic() + knobs["force_503_s"]
            if "telemetry_drop" in knobs:
                self._telemetry_drop = knobs["telemetry_drop"]
            if "dependencies_down" in knobs:
                self._down = knobs["dependencies_down"]

    def clear(self) -> None:
        with self._lock:
            self._latency, self._error_rate, self._down = {}, {}, []
            self._force_503_until = self._telemetry_drop = 0.0
            for knob in self._extra.values():
                knob.reset()

    def snapshot(self) -> dict[str, Any]:
        """Current knobs in the same shape ``PUT`` accepts (force_503_s = seconds left)."""
        with self._lock:
            return {
                "latency": {r: dict(s) for r, s in self._latency.items()},
                "error_rate": dict(self._error_rate),
                "force_503_s": round(max(0.0, self._force_503_until - time.monotonic()), 3),
                "telemetry_drop": self._telemetry_drop,
                "dependencies_down": list(self._down),
                **{name: knob.snapshot() for name, knob in self._extra.items()},
            }

    def delay_ms(self, route: str) -> float:
        spec = self._latency.get(route) or self._latency.get("*")
        return sample_delay_ms(spec, self.rng) if spec else 0.0

    def inject_error(self, route: str) -> bool:
        rate = self._error_rate.get(route, self._error_rate.get("*", 0.0))
        return rate > 0 and self.rng.random() < rate

    def forced_503_left_s(self) -> float:
        return max(0.0, self._force_503_until - time.monotonic())

    def drop_telemetry(self) -> bool:
        rate = self._telemetry_drop
        return rate > 0 and self.rng.random() < rate

    def dependency_down(self, name: str) -> bool:
        return name in self._down


class Flags:
    """The feature flags of one app, all OFF unless set at launch or through the admin API."""

    def __init__(self, initial: Mapping[str, bool] | None = None) -> None:
        self._values = {name: False for name in FLAG_NAMES}
        self._values.update(validate_flags(dict(initial or {})))

    def enabled(self, name: str) -> bool:
        return self._values[name]

    def update(self, body: Any) -> None:
        self._values.update(validate_flags(body))

    def snapshot(self) -> dict[str, bool]:
        return dict(self._values)
