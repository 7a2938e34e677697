"""A3's orchestration loop: one autonomous run every ``ORCH_INTERVAL_S``, guarded by retries and a breaker.

Each cycle is a run ``orch-<hex>`` with its own trace id. It asks the content upstream
(A4 ``POST /api/render``, flaky by design: A4's ``render_flakiness`` knob) for the page
it publishes, then publishes it and refreshes a call to action. The upstream call is
where the resilience patterns live, each from the library an engineer would reach for:

* **tenacity** retries an upstream failure (5xx, timeout, refused connection) for at
  most ``MAX_ATTEMPTS`` attempts, waiting ``0.05 · 2^(n-1) + U(0, 0.05)`` s (at most
  1 s) after the n-th — exponential, jittered so retries never march in lockstep. A
  refusal by the breaker is never retried: that would only spend the attempts.
* **pybreaker** (``a3_upstream``: ``fail_max`` 5, ``reset_timeout`` 2 s) wraps every
  attempt, and the preview route shares it: five consecutive failures open it and calls
  are refused outright (the run is *shed*); 2 s later the next call is a half-open trial
  whose success closes it — A3 heals by itself once the upstream is back. pybreaker
  holds its lock during a guarded call, so calls are serialised; the short upstream
  timeout bounds that wait.

All of it is telemetry the audit reads back from A8: ``upstream_attempt`` per attempt
(``started_at`` in microseconds, taken as the attempt starts, so the gaps between
attempts *are* the waits), ``upstream_retry`` per scheduled retry with tenacity's wait,
``breaker_transition`` per state change, and the run's ``run_progress``,
``page_published``, ``cta_emitted``, ``orchestration_cycle_complete``. The latest
runs are kept in SQLite (:mod:`sandbox.apps.a3_runs`). The loop is a daemon thread in
``ctx.services``: it starts with the app, waits for the upstream's first healthy answer, never raises out
of the thread, and sleeps on an ``Event`` so that ``close()`` (shutdown) stops it at once.
"""

from __future__ import annotations

import collections
import random
import secrets
import sys
import threading
import time
import traceback
import uuid
from typing import Any

import httpx
import pybreaker
import tenacity

from sandbox.apps.a3_runs import RunStore, iso_us
from sandbox.common.context import AppContext
from sandbox.common.events import emit_event

ORCH_INTERVAL_S = 0.5
MAX_ATTEMPTS = 4
BACKOFF = {"multiplier": 0.05, "exp_base": 2, "max": 1.0, "jitter": 0.05}  # tenacity's "initial" is its multiplier
BREAKER_NAME = "a3_upstream"
BREAKER_FAIL_MAX = 5
BREAKER_RESET_S = 2.0
MAX_TRANSITIONS = 100
CONTENT_UPSTREAM = "A4"
RENDER_PATH = "/api/render"
CYCLE_ROUTE = "/orchestration/cycle"
BREAKER_ROUTE = "/orchestration/breaker"
CTA_ARMS = ("signup_hero", "pricing_banner", "provider_invite")
_OUTCOMES = {"ok": ("completed", 200), "failed": ("failed", 502), "shed": ("shed", 503)}  # run state, event status
_STATE_NAMES = {pybreaker.STATE_CLOSED: "closed", pybreaker.STATE_OPEN: "open", pybreaker.STATE_HALF_OPEN: "half_open"}


class UpstreamError(RuntimeError):
    """The upstream failed (5xx, timeout, refused connection): counted by the breaker, retried."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class UpstreamRejected(RuntimeError):
    """The upstream refused the request itself (4xx): neither retried nor held against the upstream."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class LoopStopped(Exception):
    """The app is shutting down while the loop waited; the run is abandoned."""


class ContentUpstream:
    """A4's render API over a synchronous httpx client with a short timeout."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url
        self._client = httpx.Client(timeout=timeout_s, headers={"X-Source": "a3-orchestration"})

    def render(self, template: str, run_id: str | None, trace_id: str) -> dict[str, Any]:
        """The rendered content, or :class:`UpstreamError` / :class:`UpstreamRejected`."""
        try:
            r = self._client.post(f"{self.base_url}{RENDER_PATH}", json={"template": template, "run_id": run_id},
                                  headers={"X-Trace-Id": trace_id})
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{CONTENT_UPSTREAM} {RENDER_PATH}: {type(exc).__name__}", None) from None
        if r.status_code >= 500:
            raise UpstreamError(f"{CONTENT_UPSTREAM} {RENDER_PATH} answered {r.status_code}", r.status_code)
        if r.status_code != 200:
            raise UpstreamRejected(f"{CONTENT_UPSTREAM} {RENDER_PATH} answered {r.status_code}", r.status_code)
        try:
            body: dict[str, Any] = r.json()
        except ValueError:
            raise UpstreamError(f"{CONTENT_UPSTREAM} {RENDER_PATH} answered 200 without JSON", 200) from None
        return body

    def healthy(self) -> bool:
        """True once ``/health`` answers 200; any failure to ask counts as not yet."""
        try:
            return self._client.get(f"{self.base_url}/health").status_code == 200
        except Exception:
            return False

    def close(self) -> None:
        self._client.close()


class BreakerLog(pybreaker.CircuitBreakerListener):
    """Records and emits every state change of the breaker, naming the run whose call caused it.

    pybreaker calls the listener in the thread making the guarded call, so the caller's
    run id and trace id travel in a thread-local set around each call.
    """

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.caller = threading.local()
        self._lock = threading.Lock()
        self._prefix = f"{BREAKER_NAME}:{secrets.token_hex(6)}"
        self._seq = 0
        self._transitions: collections.deque[dict[str, str]] = collections.deque(maxlen=MAX_TRANSITIONS)

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: pybreaker.CircuitBreakerState | None,
                     new_state: pybreaker.CircuitBreakerState) -> None:
        if old_state is None:
            return
        from_state = _STATE_NAMES.get(old_state.name, old_state.name)
        to_state = _STATE_NAMES.get(new_state.name, new_state.name)
        at = iso_us()
        with self._lock:
            self._seq += 1
            key = f"{self._prefix}:{self._seq}"
            self._transitions.append({"from_state": from_state, "to_state": to_state, "at": at})
        run_id = getattr(self.caller, "run_id", None)
        trace_id = getattr(self.caller, "trace_id", None) or uuid.uuid4().hex
        emit_event(self.ctx, "breaker_transition", route=BREAKER_ROUTE, status=200, trace_id=trace_id,
                   idempotency_key=key, breaker=BREAKER_NAME, from_state=from_state, to_state=to_state, at=at,
                   trigger_run_id=run_id, run_id=run_id)

    def transitions(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._transitions)


class _Run:
    """One cycle in progress."""

    def __init__(self) -> None:
        self.run_id = f"orch-{secrets.token_hex(6)}"
        self.trace_id = uuid.uuid4().hex
        self.attempts = 0


class Orchestrator:
    """The loop thread, the guarded upstream and their counters (``ctx.services["orchestration"]``)."""

    def __init__(self, ctx: AppContext, upstream: ContentUpstream | None, *,
                 interval_s: float = ORCH_INTERVAL_S) -> None:
        self.ctx = ctx
        self.upstream = upstream
        self.interval_s = interval_s
        self.runs = RunStore(ctx.db)
        self.log = BreakerLog(ctx)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=BREAKER_FAIL_MAX, reset_timeout=BREAKER_RESET_S, name=BREAKER_NAME, listeners=[self.log],
            exclude=[UpstreamRejected], throw_new_error_on_trip=False)
        self._rng = random.Random(f"{ctx.config.seed}:{ctx.config.app_id}:orchestration")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cycles = {"ok": 0, "failed": 0, "shed": 0}
        self._loop_errors = 0
        self.phase = "disabled" if upstream is None else "created"

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop thread (once); without an upstream there is nothing to orchestrate."""
        if self.upstream is None or self._thread is not None:
            return
        self.runs.interrupt_leftovers()
        self._thread = threading.Thread(target=self._run, name="a3-orchestration", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the loop at once (its waits are on the stop event) and release the HTTP client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.upstream is not None:
            self.upstream.close()

    def _run(self) -> None:
        self.phase = "waiting_for_upstream"
        while not self._stop.is_set() and not (self.upstream is not None and self.upstream.healthy()):
            self._stop.wait(self.interval_s)
        self.phase = "running"
        while not self._stop.wait(self.interval_s):
            try:
                self.cycle()
            except LoopStopped:
                break
            except Exception:  # the loop must outlive one bad cycle (a busy database, a bug)
                with self._lock:
                    self._loop_errors += 1
                print(f"a3-orchestration: {traceback.format_exc()}", file=sys.stderr, flush=True)
        self.phase = "stopped"

    def _sleep(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise LoopStopped

    # -- one cycle ------------------------------------------------------------------
    def cycle(self) -> str:
        """Run one orchestration cycle; its outcome (ok, failed or shed)."""
        run = _Run()
        started = time.perf_counter()
        self.runs.begin(run.run_id, run.trace_id)
        try:
            content = self._render_with_retries(run)
        except pybreaker.CircuitBreakerError:
            return self._finish(run, "shed", started)
        except (UpstreamError, UpstreamRejected):
            return self._finish(run, "failed", started)
        except BaseException as exc:  # shutdown (LoopStopped) or a bug: this run can never finish
            self.runs.finish(run.run_id, "failed", "stopped" if isinstance(exc, LoopStopped) else "error", run.attempts)
            raise
        self.runs.progress(run.run_id, 0.5, run.attempts)
        self._emit("run_progress", run, 200, "run_progress:0.5", progress=0.5)
        page_id = f"pg_{secrets.token_hex(8)}"
        self._emit("page_published", run, 201, "page_published", page_id=page_id,
                   template=content.get("template"))
        self._emit("cta_emitted", run, 202, "cta_emitted", arm_id=self._rng.choice(CTA_ARMS), page_id=page_id)
        self.runs.progress(run.run_id, 1.0, run.attempts, page_id=page_id)
        self._emit("run_progress", run, 200, "run_progress:1.0", progress=1.0)
        return self._finish(run, "ok", started)

    def _finish(self, run: _Run, outcome: str, started: float) -> str:
        state, status = _OUTCOMES[outcome]
        self.runs.finish(run.run_id, state, outcome, run.attempts)
        with self._lock:
            self._cycles[outcome] += 1
        self._emit("orchestration_cycle_complete", run, status, "orchestration_cycle_complete", outcome=outcome,
                   attempts=run.attempts, duration_ms=round((time.perf_counter() - started) * 1000, 3))
        return outcome

    @staticmethod
    def retrying(**hooks: Any) -> tenacity.Retrying:
        """The one retry policy of A3's upstream calls: at most MAX_ATTEMPTS, exponential
        backoff with jitter, only upstream failures (never a refusal by the open breaker)."""
        return tenacity.Retrying(stop=tenacity.stop_after_attempt(MAX_ATTEMPTS),
                                 wait=tenacity.wait_exponential_jitter(**BACKOFF),
                                 retry=tenacity.retry_if_exception_type(UpstreamError), reraise=True, **hooks)

    def _render_with_retries(self, run: _Run) -> dict[str, Any]:
        retrying = self.retrying(before_sleep=lambda state: self._on_retry(run, state), sleep=self._sleep)
        content: dict[str, Any] = retrying(self._attempt, run)
        return content

    def _attempt(self, run: _Run) -> dict[str, Any]:
        """One breaker call, reported as ``upstream_attempt`` whatever happens."""
        run.attempts += 1
        started_at, t0 = iso_us(), time.perf_counter()
        outcome, status, upstream_status = "error", 502, None
        try:
            content = self.guarded_render("orchestration_cycle", run.run_id, run.trace_id)
            outcome, status, upstream_status = "ok", 200, 200
            return content
        except pybreaker.CircuitBreakerError:
            outcome, status = "shed", 503
            raise
        except (UpstreamError, UpstreamRejected) as exc:
            upstream_status = exc.status
            status = exc.status if exc.status is not None and exc.status >= 400 else 502
            raise
        finally:
            self._emit("upstream_attempt", run, status, f"upstream_attempt:{run.attempts}", attempt=run.attempts,
                       started_at=started_at, outcome=outcome, upstream_status=upstream_status,
                       elapsed_ms=round((time.perf_counter() - t0) * 1000, 3))

    def _on_retry(self, run: _Run, state: tenacity.RetryCallState) -> None:
        wait_s = state.next_action.sleep if state.next_action is not None else state.upcoming_sleep
        failure = state.outcome.exception() if state.outcome is not None else None
        status = getattr(failure, "status", None) or 502
        self._emit("upstream_retry", run, status, f"upstream_retry:{state.attempt_number}",
                   attempt=state.attempt_number, wait_s=round(float(wait_s), 6))

    def _emit(self, event_type: str, run: _Run, status: int, key: str, **fields: Any) -> None:
        emit_event(self.ctx, event_type, route=CYCLE_ROUTE, status=status, trace_id=run.trace_id,
                   idempotency_key=f"{run.run_id}:{key}", run_id=run.run_id, **fields)

    # -- shared with the preview route ----------------------------------------------
    def preview_render(self, trace_id: str) -> dict[str, Any]:
        """The preview's call: the loop's retry policy around breaker calls, so a transient
        upstream failure costs the visitor at most ~0.4 s of waits instead of an error;
        a refusal by the open breaker is never retried (the visitor gets a fast 503)."""
        content: dict[str, Any] = self.retrying()(self.guarded_render, "page_preview", None, trace_id)
        return content

    def guarded_render(self, template: str, run_id: str | None, trace_id: str) -> dict[str, Any]:
        """One upstream call through the breaker (``CircuitBreakerError`` when it refuses)."""
        if self.upstream is None:
            raise UpstreamError(f"content upstream {CONTENT_UPSTREAM} is not part of this sandbox", None)
        self.log.caller.run_id, self.log.caller.trace_id = run_id, trace_id
        try:
            return self.breaker.call(self.upstream.render, template, run_id, trace_id)
        finally:
            self.log.caller.run_id = self.log.caller.trace_id = None

    def state(self) -> str:
        """The breaker's state in the contract's spelling (``half_open``, not pybreaker's ``half-open``)."""
        return _STATE_NAMES.get(self.breaker.current_state, self.breaker.current_state)

    def snapshot(self) -> dict[str, Any]:
        """``GET /admin/breaker``: the breaker, its recent transitions and the cycle outcomes."""
        with self._lock:
            cycles, errors = dict(self._cycles), self._loop_errors
        return {"state": self.state(), "fail_counter": self.breaker.fail_counter, "fail_max": self.breaker.fail_max,
                "reset_timeout_s": float(self.breaker.reset_timeout), "transitions": self.log.transitions(),
                "cycles": cycles, "loop": {"phase": self.phase, "interval_s": self.interval_s,
                                           "loop_errors": errors, "kept_runs": self.runs.count()}}


def setup_orchestration(ctx: AppContext) -> None:
    """Create the loop (``ctx.services["orchestration"]``, closed with the app) and start it."""
    base = ctx.config.app_urls.get(CONTENT_UPSTREAM)
    upstream = ContentUpstream(base, ctx.config.upstream_timeout_s) if base else None
    orchestrator = Orchestrator(ctx, upstream)
    ctx.services["orchestration"] = orchestrator
    orchestrator.start()
