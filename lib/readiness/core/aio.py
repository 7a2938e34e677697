"""Run a coroutine to completion from synchronous code, even inside a running event loop.

Notebooks call plain functions, while the HTTP layer is async so probers can measure
many apps at once. ``asyncio.run`` refuses to start when a loop is already running, and
a Jupyter kernel always has one, so :func:`run` executes the coroutine on a fresh loop in
a worker thread in that case (the calling loop is blocked meanwhile, exactly as a sync
call would block it). Outside a loop it is plain ``asyncio.run``.

Interrupts: when the caller is interrupted while waiting (Ctrl-C in a terminal, "interrupt
kernel" in Jupyter) the worker's task is cancelled, so its ``finally`` blocks and
``async with`` exits run and connections close, and the interrupt is re-raised. Under
``asyncio.run`` the first Ctrl-C cancels the calling task instead of raising; that
cancellation is honoured the same way and surfaces as ``KeyboardInterrupt`` from
``asyncio.run``. Any exception of the coroutine (``KeyboardInterrupt`` included) is
re-raised in the caller unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")

_POLL_S = 0.05        # how often a blocked caller checks whether its own task was cancelled
_CANCEL_GRACE_S = 5.0  # how long cleanup of a cancelled coroutine may take before the caller gives up


class _Worker:
    """One coroutine on its own loop in its own thread, with a handle to cancel it."""

    def __init__(self, awaitable: Awaitable[T]) -> None:
        self._awaitable = awaitable
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        # Waiting on an Event rather than Thread.join: a KeyboardInterrupt that lands inside
        # join() can leave the Thread marked as stopped while it still runs (CPython 3.11).
        self.finished = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        context = contextvars.copy_context()  # logging/tracing context follows the call
        self.thread = threading.Thread(target=context.run, args=(self._main,), name="readiness-aio", daemon=True)

    def _main(self) -> None:
        try:
            self.result = asyncio.run(self._wrapper())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, who re-raises it
            self.error = exc
        finally:
            self._started.set()
            self.finished.set()

    async def _wrapper(self) -> Any:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        return await self._awaitable

    def cancel(self) -> None:
        """Ask the worker's task to stop; safe to call at any moment, from any thread."""
        self._started.wait(_CANCEL_GRACE_S)
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop already closed: the task has finished
                pass


def _cancel_requests() -> int:
    """Pending cancellations of the calling task (compared before/after, so that aio.run
    still works in cleanup code of a task that was already being cancelled)."""
    task = asyncio.current_task()
    return 0 if task is None else task.cancelling()


def run(awaitable: Awaitable[T] | Coroutine[Any, Any, T]) -> T:
    """Run ``awaitable`` to completion and return its result (see the module docstring)."""
    if not inspect.isawaitable(awaitable):
        raise TypeError(f"aio.run needs a coroutine or other awaitable, got {type(awaitable).__name__}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coroutine(awaitable) if not inspect.iscoroutine(awaitable) else awaitable)
    worker = _Worker(awaitable)
    already_cancelling = _cancel_requests()
    worker.thread.start()
    try:
        while not worker.finished.wait(_POLL_S):
            if _cancel_requests() > already_cancelling:
                worker.cancel()
                worker.finished.wait(_CANCEL_GRACE_S)
                raise asyncio.CancelledError("the calling task was cancelled while aio.run waited")
    except KeyboardInterrupt:
        worker.cancel()
        worker.finished.wait(_CANCEL_GRACE_S)
        raise
    if worker.error is not None:
        raise worker.error
    return worker.result


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
