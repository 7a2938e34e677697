"""Readiness audit suite: the shared library behind the phase notebooks.

Public surface (everything a notebook, a test or an analyst needs):

- configuration: :func:`load_params`, :class:`Params`, :class:`ParamsError`
- verdicts: :class:`Check`, :class:`Status`, :func:`rate_check`, :func:`error_rate_check`,
  :func:`latency_check`, :func:`value_check`, :func:`combine`, :func:`wilson_interval`,
  :func:`quantile_interval`, :func:`min_n_for_bound`
- run folders: :class:`RunFolder`, :func:`latest_complete_run`, :func:`run_status`
- phases: :func:`open_phase`, :class:`Phase`
- HTTP: :class:`GuardedClient`, :class:`Sample`, :class:`PolicyRefused`
- approvals: :func:`require_approval`
- running: :func:`run_suite`
- latency data: :func:`load_samples` (one run's probes), :func:`p95_history` (every run, via DuckDB),
  :func:`percentile_summary`, :func:`quantile_difference`, :func:`plan_sample_size`
- verdict rules for shares: :func:`share_check` (a sampled stream must arrive at its declared rate)
- learning: :class:`ThompsonBandit`, :func:`ips_estimate`, :func:`compare_with_uniform`, :func:`change_risk`
- phase modules, imported by name (``from readiness import b2c``): inventory, smoke, latency,
  latency_report, b2c, b2b, hardening, monetization, revenue_lineage, telemetry_contract,
  telemetry_sampling, command_center, bandit, load, load_segments, k6run, stop_conditions, learning,
  cta_learning, cta_policy, faults, resiliency, resiliency_metrics, attestation, secret_scan, observatory,
  web_security, ports, cost, monitoring_rules, cleanup, gates, closing, closing_report, closing_cards,
  activation, growth_hygiene, signup_journey
"""

from readiness.check import Check, Status
from readiness.params import Params, ParamsError, load_params
from readiness.quantiles import min_n_for_bound, quantile_interval
from readiness.runfolder import RunFolder, latest_complete_run, run_status
from readiness.verdict import (
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

__all__ = [
    "Check", "GuardedClient", "Params", "ParamsError", "Phase", "PolicyRefused", "RunFolder", "Sample", "Status",
    "combine", "error_rate_check", "improvement_check", "latency_check", "latest_complete_run", "load_params",
    "load_samples", "min_n_for_bound", "open_phase", "p95_history", "percentile_summary", "plan_sample_size",
    "quantile_difference", "quantile_interval", "rate_check", "regression_check", "require_approval", "run_status",
    "run_suite", "value_check", "wilson_interval", "share_check", "ThompsonBandit", "ips_estimate",
    "compare_with_uniform", "change_risk",
]


def __getattr__(name: str):  # heavier parts load on first use, keeping `import readiness` fast
    if name in ("open_phase", "Phase"):
        from readiness import phase
        return getattr(phase, name)
    if name in ("GuardedClient", "Sample", "PolicyRefused"):
        from readiness import client
        return getattr(client, name)
    if name == "require_approval":
        from readiness.approvals import require_approval
        return require_approval
    if name in ("load_samples", "p95_history"):
        from readiness import history
        return getattr(history, name)
    if name in ("percentile_summary", "quantile_difference", "plan_sample_size"):
        from readiness import latency_stats
        return getattr(latency_stats, name)
    if name in ("ThompsonBandit", "ips_estimate", "compare_with_uniform", "change_risk"):
        from readiness import bandit
        return getattr(bandit, name)
    if name == "run_suite":
        from readiness.runner import run_suite
        return run_suite
    raise AttributeError(f"module 'readiness' has no attribute {name!r}")
