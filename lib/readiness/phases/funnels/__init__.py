"""Phase 04_funnels: the library code behind ``notebooks/04_funnels.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#04-funnels.
"""

__all__ = ["b2b", "b2c", "b2c_verdicts", "hardening", "hardening_rules"]
