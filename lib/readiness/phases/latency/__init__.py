"""Phase 02_latency_profile: the library code behind ``notebooks/02_latency_profile.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#02-latency-profile.
"""

__all__ = ["profile", "report"]
