"""Phase 01_smoke: the library code behind ``notebooks/01_smoke.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#01-smoke.
"""

__all__ = ["smoke"]
