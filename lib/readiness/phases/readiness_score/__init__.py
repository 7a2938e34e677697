"""Phase 11_readiness_score: the library code behind ``notebooks/11_readiness_score.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#11-readiness-score.
"""

__all__ = ["cards", "closing", "closing_report", "ers"]
