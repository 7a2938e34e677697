"""The two records an app is built from: its *definition* (static) and its *context* (live).

A role module (``sandbox.apps.a3_orchestration`` …) exports one :class:`AppDefinition`:
its SQLite schema, how to seed it, its routes. The factory turns that into a running
Starlette app and an :class:`AppContext` holding the live parts (database, queue, knobs,
emitter). Handlers reach the context through ``request.app.state.ctx`` — see
:func:`ctx_of` — so role modules need no globals and two apps could share a process.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute

from sandbox.catalog import Role
from sandbox.common.config import AppConfig
from sandbox.common.emitter import Emitter, Sink
from sandbox.common.knobs import Faults, Flags
from sandbox.common.sqlite import Database
from sandbox.common.synthetic_tables import SyntheticTable
from sandbox.common.workqueue import WorkQueue


@dataclasses.dataclass(frozen=True)
class AppDefinition:
    """What makes one app different from the others.

    ``schema`` is applied to the app's main SQLite file (after the shared ``meta``
    table); ``seed`` fills it with the small real data its routes serve and must be
    idempotent; ``routes`` are the role's own routes (base page, health, ready and
    admin routes are added by the factory); ``ready_flag`` names a flag that must be ON
    for ``/ready`` to exist; ``setup`` runs before the emitter is built and may create
    extra services; ``make_sink`` replaces the default HTTP telemetry sink;
    ``synthetic_tables`` are the tables that may hold rows of synthetic traffic, in
    deletion order (dependents first), each saying how a row's namespace is known — the
    shared ``/admin/synthetic`` cleanup API lists and deletes only those rows
    (:mod:`sandbox.common.synthetic_cleanup`); an app that stores none declares nothing.
    """

    app_id: str
    schema: str
    seed: Callable[[AppContext], None]
    routes: Callable[[], list[BaseRoute]]
    ready_flag: str | None = None
    admin_routes: Callable[[], list[BaseRoute]] = list
    setup: Callable[[AppContext], None] | None = None
    make_sink: Callable[[AppContext], Sink | None] | None = None
    synthetic_tables: tuple[SyntheticTable, ...] = ()


@dataclasses.dataclass
class AppContext:
    """The live parts of one app process, shared by its middleware and handlers."""

    config: AppConfig
    role: Role
    definition: AppDefinition
    db: Database
    queue: WorkQueue
    faults: Faults
    flags: Flags
    rng: random.Random
    emitter: Emitter | None = None
    services: dict[str, Any] = dataclasses.field(default_factory=dict)

    def close(self) -> None:
        if self.emitter is not None:
            self.emitter.stop()
        for service in self.services.values():
            close = getattr(service, "close", None)
            if callable(close):
                close()
        self.queue.close()
        self.db.close()


def ctx_of(request: Request) -> AppContext:
    """The context of the app serving ``request``."""
    ctx: AppContext = request.app.state.ctx
    return ctx
