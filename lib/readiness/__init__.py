"""Readiness audit suite: the shared library behind the phase notebooks.

The library is layered; each layer is a subpackage that imports only the layers below it
(the contracts in ``.importlinter`` enforce this, see docs/architecture.md):

- ``run``: the suite runner, headless notebook execution, approval gates, the CLI
- ``phases``: one package per audit phase, independent of each other
- ``phasekit``: the phase context (``open_phase``) and what two or more phases use
- ``score``: the rubric, the Enterprise Readiness Score, the signed attestation
- ``report`` and ``probe`` (side by side): presentation; HTTP, k6, browser, telemetry store, payments
- ``core``: checks, verdict rules, the run folder, approvals, stop conditions, history
- ``stats`` and ``params`` (side by side, at the bottom): pure statistics; the params model and
  the phase registry

Public surface (everything a notebook, a test or an analyst needs), importable from here:

- configuration: :func:`load_params`, :class:`Params`, :class:`ParamsError`
- verdicts: :class:`Check`, :class:`Status`, :func:`rate_check`, :func:`error_rate_check`,
  :func:`latency_check`, :func:`value_check`, :func:`combine`, :func:`wilson_interval`,
  :func:`quantile_interval`, :func:`min_n_for_bound`, :func:`share_check`
- run folders: :class:`RunFolder`, :func:`latest_complete_run`, :func:`run_status`
- phases: :func:`open_phase`, :class:`Phase`
- HTTP: :class:`GuardedClient`, :class:`Sample`, :class:`PolicyRefused`
- approvals: :func:`require_approval`
- running: :func:`run_suite`
- latency data: :func:`load_samples` (one run's probes), :func:`p95_history` (every run, via DuckDB),
  :func:`percentile_summary`, :func:`quantile_difference`, :func:`plan_sample_size`
- learning: :class:`ThompsonBandit`, :func:`ips_estimate`, :func:`compare_with_uniform`, :func:`change_risk`

The notebooks import phase modules by their short names (``from readiness import latency``):
:data:`MODULES` maps each short name to its module in the layered tree, and the module is
imported on first use.
"""

from importlib import import_module
from types import MappingProxyType

from readiness.core.check import Check, Status
from readiness.core.runfolder import RunFolder, latest_complete_run, run_status
from readiness.core.verdict import (
    combine,
    error_rate_check,
    improvement_check,
    latency_check,
    rate_check,
    regression_check,
    share_check,
    value_check,
    wilson_interval,
)
from readiness.params.model import Params, ParamsError, load_params
from readiness.stats.quantiles import min_n_for_bound, quantile_interval

#: Modules the notebooks and analyst code import by their own short name (the last part of the path).
_BY_LEAF = (
    "phases.inventory.inventory",
    "phases.smoke.smoke",
    "phases.funnels.b2c",
    "phases.funnels.b2b",
    "phases.funnels.hardening",
    "phases.monetization.revenue_lineage",
    "phasekit.command_center",
    "phases.activation.activation",
    "phases.activation.growth_hygiene",
    "phasekit.signup_journey",
    "phases.learning.cta_policy",
    "phases.resiliency.resiliency",
    "phases.resiliency.faults",
    "phases.security_ops.cleanup",
    "phases.security_ops.cost",
    "phases.security_ops.monitoring_rules",
    "phases.security_ops.ports",
    "phases.security_ops.secret_scan",
    "phases.security_ops.web_security",
    "phases.readiness_score.closing",
    "phases.readiness_score.ers",
    "stats.quantiles",
    "stats.bandit",
    "core.history",
    "report.charts",
    "score.rubric",
    "score.attestation",
    "run.gates",
)
#: Short names that differ from the module's own name in the layered tree.
_RENAMED = (
    ("latency", "phases.latency.profile"),
    ("latency_report", "phases.latency.report"),
    ("load", "phases.load.baseline"),
    ("load_segments", "phases.load.segments"),
    ("monetization", "phases.monetization.checkout"),
    ("telemetry_contract", "phases.telemetry.contract"),
    ("telemetry_sampling", "phases.telemetry.sampling"),
    ("learning", "phases.learning.error_correction"),
    ("cta_learning", "phases.learning.cta_bandit"),
    ("resiliency_metrics", "phases.resiliency.metrics"),
    ("latency_stats", "stats.latency"),
)
#: Short module name (``from readiness import latency``) → its module in the layered tree.
MODULES = MappingProxyType({**{path.rsplit(".", 1)[1]: f"readiness.{path}" for path in _BY_LEAF},
                              **{short: f"readiness.{path}" for short, path in _RENAMED}})

#: Names that load on first use, keeping ``import readiness`` fast, and where they live.
_LAZY = MappingProxyType({
    "open_phase": "readiness.phasekit.context", "Phase": "readiness.phasekit.context",
    "GuardedClient": "readiness.probe.client", "Sample": "readiness.probe.client",
    "PolicyRefused": "readiness.probe.client",
    "require_approval": "readiness.core.approvals",
    "load_samples": "readiness.core.history", "p95_history": "readiness.core.history",
    "percentile_summary": "readiness.stats.latency", "quantile_difference": "readiness.stats.latency",
    "plan_sample_size": "readiness.stats.latency",
    "ThompsonBandit": "readiness.stats.bandit", "ips_estimate": "readiness.stats.bandit",
    "compare_with_uniform": "readiness.stats.bandit", "change_risk": "readiness.stats.bandit",
    "run_suite": "readiness.run.runner",
})

__all__ = [
    "Check", "GuardedClient", "MODULES", "Params", "ParamsError", "Phase", "PolicyRefused", "RunFolder", "Sample",
    "Status", "ThompsonBandit", "change_risk", "combine", "compare_with_uniform", "error_rate_check",
    "improvement_check", "ips_estimate", "latency_check", "latest_complete_run", "load_params", "load_samples",
    "min_n_for_bound", "open_phase", "p95_history", "percentile_summary", "plan_sample_size", "quantile_difference",
    "quantile_interval", "rate_check", "regression_check", "require_approval", "run_status", "run_suite",
    "share_check", "value_check", "wilson_interval",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in MODULES:
        return import_module(MODULES[name])
    raise AttributeError(f"module 'readiness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *MODULES})
