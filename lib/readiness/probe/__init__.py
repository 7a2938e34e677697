"""The measurement layer: everything that talks to an audited system or drives a tool.

The guarded HTTP client and its wire timings, the scheduled prober, the k6 runner, the browser,
the OIDC probe, the telemetry store client, the payments client and the sandbox's admin control.
It may import ``core``, ``stats`` and ``params``; it records no checks of its own beyond what
``core`` provides, and never imports a phase, a report or the score.
"""

__all__ = ["browser", "client", "k6run", "oidc", "oidc_probe", "payments", "prober", "sample", "sandbox_control", "telemetry_store", "wire"]
