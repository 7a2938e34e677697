"""503 fault injection into an upstream app, with a rollback that always runs.

Phase 09 makes a dependency fail on purpose (``PUT {upstream}/admin/faults
{"force_503_s": s}``: every answer of the upstream becomes a 503 for ``s`` seconds) to
watch how its caller's circuit breaker reacts. A fault left behind would turn an audit
into an outage, so the injection is wrapped three times:

* it is **refused** — no HTTP request at all — unless :func:`readiness.core.approvals.require_approval`
  granted ``fault_injection_503`` for the apps it touches;
* :func:`fault_injection` is a context manager whose exit **always** removes the fault
  (``DELETE /admin/faults``) and then **verifies** the removal with a separate read, on a
  normal exit, an exception, ``KeyboardInterrupt`` or ``SIGTERM`` (turned into
  :class:`Terminated` while the scope is open). The removal runs on its own event loop, so
  a cancelled experiment cannot cancel its own cleanup, and once it has started no further
  injection is accepted. A removal that cannot be verified is escalated in
  ``reports/hitl_approvals.log``;
* the fault **expires by itself** (``force_503_s`` is the cycle length), so even a killed
  process cannot leave it on for longer than one cycle.

Every step is appended to the fault journal (``evidence/a3_fault_journal.jsonl``), the
record a reviewer reads to see what was switched on, when, and that it was switched off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from readiness.core import aio
from readiness.core.approvals import Decision, log_event
from readiness.core.runfolder import RunFolder
from readiness.params.model import App
from readiness.phasekit.context import Phase
from readiness.probe.client import GuardedClient
from readiness.probe.sandbox_control import ADMIN_TOKEN_ENV, admin_headers

ACTION = "fault_injection_503"
JOURNAL = "evidence/a3_fault_journal.jsonl"
FAULTS_PATH = "/admin/faults"
REQUEST_TIMEOUT_S = 1.5  # one admin request; loopback answers in milliseconds
ROLLBACK_DEADLINE_S = 4.0  # removal retried until verified or this long has passed
RETRY_PAUSE_S = 0.2


class FaultRefused(RuntimeError):
    """The injection was not approved; nothing was sent."""


class FaultError(RuntimeError):
    """The fault API could not be used as needed (no token, refused request, unverified state)."""


class Terminated(SystemExit):
    """SIGTERM arrived while a fault scope was open: unwinds the stack so the rollback runs."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def now_iso(t: float | None = None) -> str:
    """Wall-clock time with microseconds, the resolution breaker transitions are stamped with."""
    moment = dt.datetime.fromtimestamp(time.time() if t is None else t, tz=dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


class FaultJournal:
    """Append-only JSON lines, rewritten atomically by the run folder at every step.

    Opening an existing journal keeps its lines, so the final clean-up cell of a notebook
    appends to what an interrupted earlier cell wrote.
    """

    def __init__(self, run: RunFolder, relpath: str = JOURNAL) -> None:
        self.run, self.relpath = run, relpath
        path = run.path(relpath)
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        self.entries: list[dict[str, Any]] = [json.loads(line) for line in lines if line.strip()]
        self._lock = threading.Lock()

    def log(self, step: str, **fields: Any) -> dict[str, Any]:
        entry = {"at": now_iso(), "step": step, **fields}
        with self._lock:
            self.entries.append(entry)
            self.run.write_text(self.relpath, "".join(json.dumps(e, default=str) + "\n" for e in self.entries))
        return entry


def require_admin_headers() -> dict[str, str]:
    """The sandbox admin credential (:func:`readiness.probe.sandbox_control.admin_headers`), required:
    without it every fault call would be refused, so the scope fails before sending any."""
    headers = admin_headers()
    if not headers:
        raise FaultError(f"{ADMIN_TOKEN_ENV} is not set: the fault API needs the sandbox admin token "
                         "(is the sandbox running?)")
    return headers


@dataclasses.dataclass(frozen=True)
class FaultWindow:
    """One injection: sent and acknowledged (epoch seconds); the fault ends by itself at ``expires_at``."""

    cycle: int
    requested_s: float
    sent_at: float
    answered_at: float

    @property
    def expires_at(self) -> float:
        return self.sent_at + self.requested_s


@dataclasses.dataclass(frozen=True)
class Removal:
    """The outcome of removing the fault: ``verified`` only when a read-back showed none left."""

    answered_at: float
    verified: bool
    force_503_s_left: float | None
    detail: str


class FaultInjector:
    """503 injection into ``app`` through its admin API; built only by :func:`fault_injection`."""

    def __init__(self, *, app: App, client_factory: Callable[[], GuardedClient], journal: FaultJournal,
                 run: RunFolder, approval_id: str, headers: dict[str, str]) -> None:
        self.app, self.journal, self.run, self.approval_id = app, journal, run, approval_id
        self._client_factory, self._headers = client_factory, headers
        self._closed = threading.Event()
        self._guard = threading.Lock()  # an injection in flight finishes before the rollback removes it
        self.windows: list[FaultWindow] = []
        self.rollback_result: Removal | None = None

    async def read(self, client: GuardedClient) -> dict[str, Any]:
        """The upstream's current fault knobs (``GET /admin/faults``)."""
        sample = await client.get(self.app.url(FAULTS_PATH), app=self.app.id, route=FAULTS_PATH, keep_body=True,
                                  headers=self._headers, timeout_s=REQUEST_TIMEOUT_S)
        if not sample.ok:
            raise FaultError(f"GET {FAULTS_PATH} on {self.app.id} → {sample.status or sample.error}")
        return dict(sample.json())

    async def inject(self, client: GuardedClient, seconds: float, *, cycle: int) -> FaultWindow:
        """Turn every answer of the upstream into a 503 for ``seconds`` (it then ends by itself)."""
        with self._guard:
            if self._closed.is_set():
                self.journal.log("inject_refused", app=self.app.id, cycle=cycle, reason="rollback already started")
                raise FaultError("the fault scope is closing: no further injection")
            sent = time.time()
            self.journal.log("inject", app=self.app.id, cycle=cycle, force_503_s=seconds,
                             approval_id=self.approval_id, expires_by=now_iso(sent + seconds))
            sample = await client.put(self.app.url(FAULTS_PATH), json={"force_503_s": seconds}, app=self.app.id,
                                      route=FAULTS_PATH, headers=self._headers, keep_body=True,
                                      timeout_s=REQUEST_TIMEOUT_S)
            answered = time.time()
            try:
                left = sample.json().get("force_503_s") if sample.ok else None
            except (ValueError, AttributeError):
                left = None
            if not (isinstance(left, int | float) and left > 0):
                self.journal.log("inject_failed", app=self.app.id, cycle=cycle, status=sample.status,
                                 error=sample.error)
                raise FaultError(f"PUT {FAULTS_PATH} on {self.app.id} → {sample.status or sample.error}: "
                                 "the fault is not active")
            window = FaultWindow(cycle=cycle, requested_s=seconds, sent_at=sent, answered_at=answered)
            self.windows.append(window)
            self.journal.log("injected", app=self.app.id, cycle=cycle, force_503_s_left=left)
            return window

    async def remove(self, client: GuardedClient, *, cycle: int | None, reason: str) -> Removal:
        """``DELETE /admin/faults`` then a separate read: verified when the read shows no forced 503
        left (the read is the truth: a fault that expired by itself is gone even if the DELETE failed)."""
        self.journal.log("remove", app=self.app.id, cycle=cycle, reason=reason)
        sample = await client.delete(self.app.url(FAULTS_PATH), app=self.app.id, route=FAULTS_PATH,
                                     headers=self._headers, timeout_s=REQUEST_TIMEOUT_S)
        answered = time.time()
        try:
            left = float((await self.read(client)).get("force_503_s", 0.0))
        except (FaultError, ValueError) as exc:
            removal = Removal(answered, False, None, f"DELETE → {sample.status or sample.error}; read-back: {exc}")
        else:
            removal = Removal(answered, left == 0.0, left,
                              f"DELETE → {sample.status or sample.error}; force_503_s left {left:g} s")
        self.journal.log("removed" if removal.verified else "remove_unverified", app=self.app.id, cycle=cycle,
                         force_503_s_left=removal.force_503_s_left, detail=removal.detail)
        return removal

    async def _remove_until_verified(self, reason: str) -> Removal:
        deadline = time.monotonic() + ROLLBACK_DEADLINE_S
        async with self._client_factory() as client:
            while True:
                removal = await self.remove(client, cycle=None, reason=reason)
                if removal.verified or time.monotonic() >= deadline:
                    return removal
                await asyncio.sleep(RETRY_PAUSE_S)

    def rollback(self, reason: str) -> Removal:
        """Remove the fault and verify it, on a loop of its own; escalate when it cannot be verified.

        Synchronous on purpose: it runs from the ``finally`` of :func:`fault_injection`,
        after the experiment's loop has been cancelled or has finished. SIGINT/SIGTERM
        arriving meanwhile are held until the removal is done, then re-raised.
        """
        self._closed.set()
        acquired = self._guard.acquire(timeout=REQUEST_TIMEOUT_S * 2)
        try:
            self.journal.log("rollback", app=self.app.id, reason=reason)
            with _held_signals() as held:
                try:
                    removal = aio.run(self._remove_until_verified(reason))
                except Exception as exc:  # noqa: BLE001 - any failure here is an unverified rollback
                    removal = Removal(time.time(), False, None, f"rollback failed: {exc}")
        finally:
            if acquired:
                self._guard.release()
        self.rollback_result = removal
        self.journal.log("rollback_verified" if removal.verified else "rollback_unverified", app=self.app.id,
                         detail=removal.detail)
        if not removal.verified:
            _escalate(self.run, self.journal, self.app.id, removal, self.windows)
        if held:
            raise Terminated() if signal.SIGTERM in held else KeyboardInterrupt()
        return removal


def _escalate(run: RunFolder, journal: FaultJournal, app_id: str, removal: Removal,
              windows: list[FaultWindow]) -> None:
    expires = max((w.expires_at for w in windows), default=None)
    until = now_iso(expires) if expires else "no injection was acknowledged"
    journal.log("escalated", app=app_id, detail=removal.detail, self_expires_by=until)
    log_event(run, "escalated", action=ACTION, apps=[app_id], reason="fault removal could not be verified",
              detail=f"{removal.detail}; the injected fault expires by itself by {until}")


@contextlib.contextmanager
def _held_signals() -> Iterator[set[int]]:
    """Hold SIGINT/SIGTERM (main thread only) for the block; yields the set of signals held."""
    held: set[int] = set()
    if threading.current_thread() is not threading.main_thread():
        yield held
        return

    def hold(signum: int, frame: FrameType | None) -> None:
        held.add(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield held
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While open, SIGTERM raises :class:`Terminated` (main thread only) so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def fault_injection(phase: Phase, decision: Decision, upstream_app: str,
                    journal: FaultJournal | None = None) -> Iterator[FaultInjector]:
    """The scope inside which faults may be injected into ``upstream_app``; removal is guaranteed on exit.

    Raises :class:`FaultRefused` (nothing sent) when ``decision`` is not a granted
    ``fault_injection_503`` approval, :class:`FaultError` when the admin token is missing.
    """
    journal = journal or FaultJournal(phase.run)
    if decision.action != ACTION or not decision.granted or decision.approval is None:
        journal.log("refused", app=upstream_app, reason=decision.reason)
        raise FaultRefused(f"fault injection into {upstream_app} refused: {decision.reason}")
    headers = require_admin_headers()
    injector = FaultInjector(app=phase.params.app(upstream_app), client_factory=phase.client, journal=journal,
                             run=phase.run, approval_id=decision.approval.id, headers=headers)
    journal.log("scope_open", app=upstream_app, approval_id=decision.approval.id, reason=decision.reason)
    outcome = "completed"
    try:
        with _sigterm_unwinds():
            yield injector
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise
    finally:
        injector.rollback(outcome)


def clear_leftover(phase: Phase, upstream_app: str) -> dict[str, Any]:
    """Read the upstream's faults; if a forced 503 is still on (an interrupted cell), remove it.

    Clearing makes the ecosystem safer, so it needs no approval; it is journaled, and a
    removal that cannot be verified is escalated like any rollback.
    """
    journal = FaultJournal(phase.run)
    injector = FaultInjector(app=phase.params.app(upstream_app), client_factory=phase.client, journal=journal,
                             run=phase.run, approval_id="", headers=require_admin_headers())

    async def read() -> dict[str, Any]:
        async with phase.client() as client:
            return await injector.read(client)

    before = float(aio.run(read()).get("force_503_s", 0.0))
    journal.log("leftover_check", app=upstream_app, force_503_s_left=before)
    if before == 0.0:
        return {"app": upstream_app, "force_503_s_found": 0.0, "action": "none", "verified": True}
    removal = injector.rollback("leftover fault found by the final check")
    return {"app": upstream_app, "force_503_s_found": before, "action": "removed", "verified": removal.verified,
            "detail": removal.detail}
