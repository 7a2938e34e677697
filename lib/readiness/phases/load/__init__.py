"""Phase 03_baseline_load: the library code behind ``notebooks/03_baseline_load.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#03-baseline-load.
"""

__all__ = ["baseline", "segments"]
