"""Phase 05_monetization: the library code behind ``notebooks/05_monetization.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#05-monetization.
"""

__all__ = ["checkout", "revenue_lineage"]
