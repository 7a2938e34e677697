"""Phase 09_resiliency: the library code behind ``notebooks/09_resiliency.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#09-resiliency.
"""

__all__ = ["faults", "metrics", "resiliency"]
