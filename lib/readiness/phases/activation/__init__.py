"""Phase 07_activation_growth: the library code behind ``notebooks/07_activation_growth.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#07-activation-and-growth.
"""

__all__ = ["activation", "growth_hygiene"]
