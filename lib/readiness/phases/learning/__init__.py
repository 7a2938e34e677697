"""Phase 08_learning_autonomy: the library code behind ``notebooks/08_learning_autonomy.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#08-learning-and-autonomy.
"""

__all__ = ["cta_bandit", "cta_policy", "error_correction"]
