"""The open-model latency prober: n requests per endpoint on a fixed schedule, as data.

Open model, no coordinated omission: request ``seq`` of a target is due at
``first + seq / qps`` and is launched as its own task at that moment, whatever the
earlier requests are doing. A closed loop (send, wait for the answer, send the next)
lets a slow response postpone the requests that would have seen the same slowness, so
its percentiles look better than what users live through; here a stall shows up in
every request it touches. Each row records when the request was due (``intended_at``)
and when it actually left (``sent_at``), so the prober's own lateness is visible and
can be told apart from the target's.

All targets run concurrently, each on its own client (``client_factory(keep_alive)``,
shaped like :meth:`readiness.phasekit.context.Phase.client`), so one slow target cannot starve
another's connection pool. Targets are staggered evenly within one interval, so several
endpoints probed at the same rate do not fire at the same instant and queue behind each
other in the prober. Modes: ``warm`` keeps one keep-alive client per target (the first
request's connect time is part of the data, later ones reuse the connection unless
requests overlap); ``cold`` opens a new connection for every request
(``GuardedClient(keep_alive=False)`` keeps no idle connection, so each request
connects).

The prober keeps its own hiccups out of the data: sends are timed to microseconds (a
timer, then yielding to the loop for the last few milliseconds, see
:func:`_wait_until`) and the cyclic garbage collector is held off while requests are
timed (see :func:`_cyclic_gc_paused`).

Every target is checked against the client's policy before anything is sent, so a
refused target raises without a single request having left. During the probe, failures
are rows, never exceptions. The run is bounded in count (``n`` per target) and in time
(``n / qps`` plus the client's total timeout per request); cancelling it (Ctrl-C, a
cancelled task) cancels the outstanding requests and closes the connections.

One row per request; the columns, their dtypes and meaning are :data:`SAMPLE_COLUMNS`
(dtypes are stable: float64 with NaN for a missing timing, nullable ``Int64`` for the
status, nullable ``string`` for text), so the frame goes to Parquet and back unchanged:

label, app, endpoint, method, url, mode
    what was probed, how, and in which probe set (``label`` is the caller's).
seq, intended_at, sent_at, send_lag_ms
    the schedule: index within the target, due and actual send time (epoch seconds),
    and the lateness in ms.
status, ok, error
    the outcome (:class:`readiness.probe.sample.Sample` semantics).
connect_ms, tls_ms, wait_ms, total_ms, server_timing_ms, bytes
    timing phases from the client's trace and the server's ``Server-Timing``.
trace_id
    the ``X-Trace-Id`` sent, to find the request in the target's telemetry.
latency_ms
    ``total_ms`` when an answer arrived, ``+inf`` otherwise: a request that was never
    answered is infinitely slow, never missing, so it lands in the tail of every
    percentile instead of silently improving it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import math
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

import pandas as pd

from readiness.core import aio
from readiness.probe.client import GuardedClient, Sample

__all__ = ["SAMPLE_COLUMNS", "ProbeSettings", "ProbeTarget", "RateRefused", "probe_targets", "run_probe",
           "sample_frame"]

Mode = Literal["warm", "cold"]
ClientFactory = Callable[[bool], GuardedClient]

#: The sample schema: column → (pandas dtype, meaning). The Parquet evidence has exactly these.
SAMPLE_COLUMNS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "label": ("string", "the probe set this row belongs to, as named by the caller (e.g. 'profile')"),
    "app": ("string", "app id of the target"),
    "endpoint": ("string", "target name (the critical route's name)"),
    "method": ("string", "HTTP method as sent, upper-case"),
    "url": ("string", "absolute URL requested"),
    "mode": ("string", "'warm' (keep-alive client) or 'cold' (a new connection per request)"),
    "seq": ("int64", "0-based index of the request within its target; it was due at first + seq / qps"),
    "intended_at": ("float64", "epoch seconds at which the schedule said to send the request"),
    "sent_at": ("float64", "epoch seconds at which the request started on its way (the client then "
                           "prepares and writes it; the timings below start there)"),
    "send_lag_ms": ("float64", "sent_at - intended_at in ms: the prober's own lateness, not the target's"),
    "status": ("Int64", "HTTP status; <NA> when no response arrived"),
    "ok": ("bool", "a complete response with a status below 400"),
    "error": ("string", "failure code (timeout, connect_error, dns_error, tls_error, connection_reset, protocol_error, too_large, invalid_body, "
                        "network_error, transport_error); <NA> when none"),
    "connect_ms": ("float64", "TCP connect time; NaN when a kept-alive connection was reused"),
    "tls_ms": ("float64", "TLS handshake time; NaN for plain http or a reused connection"),
    "wait_ms": ("float64", "request fully written to first response bytes read (time to first byte); "
                        "NaN without a response"),
    "total_ms": ("float64", "first byte on the wire (connection opening when one was opened) to the last "
                         "body byte read, or until the failure was known; NaN if never started"),
    "server_timing_ms": ("float64", "duration the server reported in Server-Timing (app, else total); "
                                    "NaN when absent"),
    "bytes": ("int64", "response body bytes read"),
    "trace_id": ("string", "X-Trace-Id sent with the request"),
    "latency_ms": ("float64", "total_ms when the response arrived (complete, or cut at the size cap), +inf "
                              "otherwise: unanswered is infinitely slow, never missing"),
})

_START_DELAY_S = 0.02  # lets every target's scheduler start before the first request is due
_SPIN_S = 0.003  # the last stretch before a send is waited out by yielding to the loop (see _wait_until)
_ANSWERED_ERRORS = frozenset({None, "too_large"})  # the server answered; only the client stopped reading


class RateRefused(ValueError):
    """A probe rate above the configured ceiling (``http.max_qps``); nothing is sent."""


@dataclasses.dataclass(frozen=True)
class ProbeTarget:
    """One endpoint to probe. ``name`` identifies it within ``app`` (the ``endpoint`` column).

    ``json_body`` is sent as JSON; ``headers`` go with every request (e.g. auth);
    ``idempotency`` sends a fresh ``X-Idempotency-Key`` per request, as a mutating route
    requires; ``synthetic_identity`` labels the traffic as synthetic (and is what lets a
    write through in prod).
    """

    app: str
    name: str
    method: str
    url: str
    json_body: Any = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    idempotency: bool = False
    synthetic_identity: str | None = None

    def __post_init__(self) -> None:
        for attr in ("app", "name", "method", "url"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"ProbeTarget.{attr} must be a non-empty string, got {value!r}")
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """How many requests per target, at which rate, over which kind of connection.

    ``max_qps`` is the ceiling from params (``http.max_qps``): a ``qps`` above it is
    refused with :class:`RateRefused` when the settings are made, before any traffic.
    """

    n: int
    qps: float = 2.0
    mode: Mode = "warm"
    max_qps: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, numbers.Integral) or self.n < 1:
            raise ValueError(f"n must be a whole number of samples per target, at least 1, got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))
        for attr in ("qps", "max_qps"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                raise ValueError(f"{attr} must be a positive number of requests per second, got {value!r}")
            object.__setattr__(self, attr, float(value))
        if self.mode not in ("warm", "cold"):
            raise ValueError(f"mode must be 'warm' or 'cold', got {self.mode!r}")
        if self.qps > self.max_qps:
            raise RateRefused(f"probe rate {self.qps:g} requests/s per endpoint is above http.max_qps "
                              f"({self.max_qps:g})")


@dataclasses.dataclass(frozen=True)
class _Shot:
    """One request's schedule and outcome, kept raw until the probe ends (no work in the hot path)."""

    seq: int
    intended: float  # loop clock
    sent: float      # loop clock
    sample: Sample


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Hold the cyclic garbage collector off while requests are being timed.

    A collection stops the whole process, so one landing during a request adds its pause
    (0.2-2 ms measured for young generations, far more for a full one in a notebook
    kernel holding large frames) to that request's latency or to the next send's lag: an
    artifact of the prober, not a property of the target. Reference counting still frees
    everything acyclic; the few cycles a bounded probe leaves behind wait for the next
    collection after it. The collector is switched back on only if it was on before.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _validate_targets(targets: Sequence[ProbeTarget]) -> list[ProbeTarget]:
    targets = list(targets)
    if not targets:
        raise ValueError("no targets to probe")
    wrong = [type(t).__name__ for t in targets if not isinstance(t, ProbeTarget)]
    if wrong:
        raise TypeError(f"targets must be ProbeTarget instances, got {', '.join(sorted(set(wrong)))}")
    counts = collections.Counter(f"{t.app}/{t.name}" for t in targets)
    repeated = sorted(key for key, count in counts.items() if count > 1)
    if repeated:
        raise ValueError(f"targets must be unique per app and name; repeated: {', '.join(repeated)}")
    return targets


async def _wait_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Return as soon as the loop clock reaches ``when``: a timer for most of the wait, then yields.

    A timer alone wakes late: the event loop's ``epoll`` timeout has a 1 ms resolution
    (rounded up) and waking an idle process costs more on a virtual machine, so requests
    left 1-2 ms late at P50 and up to ~6 ms at P99. The timer therefore stops
    :data:`_SPIN_S` early and the rest is spent yielding to the loop (``sleep(0)``), which
    keeps serving the other targets' I/O meanwhile; the send then lags by microseconds.
    The price is at most ``_SPIN_S`` of CPU per request.
    """
    delay = when - _SPIN_S - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    while loop.time() < when:
        await asyncio.sleep(0)


async def _send(client: GuardedClient, target: ProbeTarget, seq: int, intended: float,
                loop: asyncio.AbstractEventLoop) -> _Shot:
    sent = loop.time()
    sample = await client.request(target.method, target.url, app=target.app, route=target.name,
                                  json=target.json_body, headers=target.headers,
                                  idempotency_key=True if target.idempotency else None,
                                  synthetic_identity=target.synthetic_identity)
    return _Shot(seq, intended, sent, sample)


async def _schedule(client: GuardedClient, target: ProbeTarget, settings: ProbeSettings, first: float) -> list[_Shot]:
    """Launch request ``seq`` at ``first + seq / qps`` as its own task; collect them all."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / settings.qps
    tasks: list[asyncio.Task[_Shot]] = []
    try:
        for seq in range(settings.n):
            intended = first + seq * interval
            await _wait_until(loop, intended)
            tasks.append(loop.create_task(_send(client, target, seq, intended, loop)))
        return list(await asyncio.gather(*tasks))
    finally:
        await _cancel(tasks)


async def _cancel(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel what is still running and wait for it, so connections close before the client does."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)


async def probe_targets(targets: Sequence[ProbeTarget], settings: ProbeSettings, client_factory: ClientFactory,
                        *, label: str = "") -> pd.DataFrame:
    """Probe every target ``settings.n`` times at ``settings.qps``; one row per request.

    Raises before sending anything when a target is malformed or refused by the client's
    policy (:class:`readiness.probe.client.PolicyRefused`). See the module docstring for the
    schedule and :data:`SAMPLE_COLUMNS` for the result.
    """
    targets = _validate_targets(targets)
    if not isinstance(settings, ProbeSettings):
        raise TypeError(f"settings must be ProbeSettings, got {type(settings).__name__}")
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(client_factory(settings.mode == "warm")) for _ in targets]
        for client, target in zip(clients, targets, strict=True):
            client.check(target.method, target.url, target.synthetic_identity)
        interval = 1.0 / settings.qps
        wall, mono = time.time(), loop.time()  # one anchor: loop clock → epoch seconds
        first = mono + _START_DELAY_S
        with _cyclic_gc_paused():
            tasks = [loop.create_task(_schedule(client, target, settings, first + k * interval / len(targets)))
                     for k, (client, target) in enumerate(zip(clients, targets, strict=True))]
            try:
                shots = await asyncio.gather(*tasks)
            except BaseException:
                await _cancel(tasks)
                raise
    offset = wall - mono
    rows = [_row(target, shot, settings.mode, label, offset)
            for target, target_shots in zip(targets, shots, strict=True) for shot in target_shots]
    return sample_frame(rows)


def run_probe(targets: Sequence[ProbeTarget], settings: ProbeSettings, client_factory: ClientFactory,
              *, label: str = "") -> pd.DataFrame:
    """:func:`probe_targets` for synchronous callers (notebooks), via :func:`readiness.core.aio.run`.

    ``client_factory`` is called inside the probe's event loop, as a client must be.
    """
    return aio.run(probe_targets(targets, settings, client_factory, label=label))


def _row(target: ProbeTarget, shot: _Shot, mode: str, label: str, offset: float) -> dict[str, Any]:
    s = shot.sample
    answered = s.status is not None and s.error in _ANSWERED_ERRORS and s.total_ms is not None
    return {
        "label": label, "app": target.app, "endpoint": target.name, "method": s.method, "url": s.url,
        "mode": mode, "seq": shot.seq, "intended_at": shot.intended + offset, "sent_at": shot.sent + offset,
        "send_lag_ms": (shot.sent - shot.intended) * 1000.0, "status": s.status, "ok": s.ok, "error": s.error,
        "connect_ms": s.connect_ms, "tls_ms": s.tls_ms, "wait_ms": s.wait_ms, "total_ms": s.total_ms,
        "server_timing_ms": s.server_timing_ms, "bytes": s.bytes, "trace_id": s.trace_id,
        "latency_ms": s.total_ms if answered else math.inf,
    }


def sample_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with exactly the :data:`SAMPLE_COLUMNS`, in order, with their dtypes."""
    frame = pd.DataFrame(list(rows), columns=list(SAMPLE_COLUMNS))
    return frame.astype({name: dtype for name, (dtype, _) in SAMPLE_COLUMNS.items()})
