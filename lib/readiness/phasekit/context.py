"""What a notebook opens first: params, run folder, sandbox, client — in one call.

A notebook gets two parameters, ``params_file`` and ``run_dir``. Run by the runner,
``run_dir`` names the run folder being filled; opened by an analyst in JupyterLab with
``run_dir`` empty, a fresh run folder is created so that re-running one phase never
touches an earlier run's evidence.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from IPython.display import Markdown

from readiness.core.approvals import require_approval
from readiness.core.check import Check, Status
from readiness.core.runfolder import RunFolder
from readiness.core.sizing import annotate_all
from readiness.params.model import SUITE_ROOT, Params, load_params
from readiness.params.registry import PHASES, not_applicable_reason
from readiness.probe.client import ClientLimits, GuardedClient, SyntheticPolicy
from readiness.probe.sandbox_control import ensure_sandbox
from readiness.probe.telemetry_store import A8HttpSource, AbsentSource
from readiness.report.charts import enable_offline_rendering


def project_root() -> Path:
    """The checkout holding params/ and notebooks/ (the library lives in lib/readiness)."""
    return SUITE_ROOT


def default_outputs_dir() -> Path:
    env = os.environ.get("READINESS_OUTPUTS")
    return Path(env) if env else project_root() / "outputs"


@dataclass
class Phase:
    """The context of one phase: validated params, its run folder, and helpers."""

    name: str
    params: Params
    params_file: Path
    run: RunFolder
    _clients: list[GuardedClient] = field(default_factory=list)

    def client(self, *, keep_alive: bool = True) -> GuardedClient:
        """A guarded client configured from params (policy, limits, loopback guard)."""
        h = self.params.http
        return GuardedClient(
            environment=self.params.environment,
            synthetic=SyntheticPolicy(
                identities=frozenset(self.params.synthetic.identities.values()),
                tags=dict(self.params.synthetic.tags),
                env_tag="staging" if self.params.environment == "staging" else "prod_observe"),
            limits=ClientLimits(connect_timeout_s=h.connect_timeout_s, read_timeout_s=h.read_timeout_s,
                                total_timeout_s=h.total_timeout_s, max_response_bytes=h.max_response_bytes),
            keep_alive=keep_alive,
            allowed_hosts=frozenset(a.host for a in self.params.apps) if self.params.target == "sandbox" else None)

    def telemetry(self, client: GuardedClient) -> A8HttpSource | AbsentSource:
        """The telemetry store's client, or a source whose every read says there is none.

        Callers already treat :class:`TelemetryUnavailable` as "method B has no data", so an
        undeclared store reaches them the same way a store that does not answer does, with
        the reason "no telemetry source".
        """
        if not self.params.provides("telemetry_store"):  # validation ties a null telemetry_app to this
            return AbsentSource("no telemetry source: the ecosystem declares no telemetry store "
                                "(params telemetry_app / capabilities)")
        app = self.params.app(self.params.telemetry_app)
        return A8HttpSource(app.base_url, client, app.id)

    def telemetry_auth(self) -> dict[str, str]:
        """Authorization for writes to the telemetry ingest (the value stays in memory only)."""
        name = self.params.telemetry_key_secret
        key = os.environ.get(name) if name else None
        return {"Authorization": f"Bearer {key}"} if key else {}

    def auth_headers(self, app_id: str) -> dict[str, str]:
        """Credentials a write to ``app_id`` needs (today: the telemetry store's ingest key)."""
        return self.telemetry_auth() if app_id == self.params.telemetry_app else {}

    def not_applicable(self, part: str | None = None) -> str | None:
        """None when this phase (or one registered part of it) applies to the ecosystem; else why not."""
        return not_applicable_reason(self.name, self.params.capabilities, part)

    def skip_part(self, part: str, reason: str) -> Check:
        """Record that one part of this phase does not apply (SKIPPED, with the reason)."""
        check = Check(id=f"{self.name}.{part}.applicable", phase=self.name, title=f"{part} applies to this ecosystem",
                      status=Status.SKIPPED, severity="P3", tags=("not_applicable",), detail=reason)
        self.record([check])
        return check

    def record(self, checks: list[Check]) -> list[Check]:
        """Write ``checks`` to the run, each statistical one stamped with the n its design
        point needs (:func:`readiness.core.sizing.annotate`); returns what was written."""
        checks = annotate_all(checks, self.params.design)
        self.run.record_checks(self.name, checks)
        return checks

    @property
    def synthetic_identity(self) -> str:
        return self.params.synthetic.identities["student"]

    def banner(self) -> Markdown:
        """The context every rendered notebook starts with (profile note included)."""
        return Markdown(f"**Run** `{self.run.root.name}` · **ecosystem** {self.params.ecosystem} "
                        f"({self.params.environment}) · **params digest** `{self.params.digest()[:12]}`\n\n"
                        f"> {self.params.profile_note}")


def production_writes_allowed(phase: Phase, what: str, apps: tuple[str, ...]) -> str | None:
    """None when this phase may write; otherwise the reason it may not (prod without approval).

    Every phase that writes to the audited ecosystem asks here first, so a read-only
    production audit is one rule in one place: writes to ``environment: prod`` need a
    ``production_write`` approval in the approvals log.
    """
    if phase.params.environment != "prod":
        return None
    decision = require_approval(phase.params, phase.run, "production_write", phase=phase.name, apps=apps,
                                detail=what)
    return None if decision.granted else decision.reason


def open_phase(name: str, params_file: str, run_dir: str = "") -> Phase:
    """Open a phase: validate params, join or create the run folder, start the sandbox if targeted."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; known: {', '.join(PHASES)}")
    path = Path(params_file)
    if not path.is_absolute() and not path.exists():
        path = project_root() / params_file
    params = load_params(path)
    if params.target == "sandbox":
        ensure_sandbox(params)
    if run_dir:
        run = RunFolder.open(run_dir, producer=name)
        run.reopen()  # no-op while the runner writes it; an analyst's re-run of a finished run
    else:
        run = RunFolder.create(default_outputs_dir(), params, path, mode="interactive")
    run.producer = name
    enable_offline_rendering()
    return Phase(name=name, params=params, params_file=path, run=run)


_R = TypeVar("_R")


def part(name: str) -> Callable[[Callable[..., _R]], Callable[..., _R | Markdown]]:
    """Mark a notebook-cell function as one registered part of its phase (see ``registry.PARTS``).

    When the ecosystem does not declare what the part needs, the function is not called:
    a SKIPPED check with the reason is recorded and the cell shows it. The function's first
    argument must be the :class:`Phase`.
    """

    def decorate(fn: Callable[..., _R]) -> Callable[..., _R | Markdown]:
        @functools.wraps(fn)
        def wrapper(phase: Phase, *args: Any, **kwargs: Any) -> _R | Markdown:
            reason = phase.not_applicable(name)
            if reason:
                phase.skip_part(name, reason)
                return Markdown(f"**SKIPPED** — {reason}")
            return fn(phase, *args, **kwargs)

        return wrapper

    return decorate
