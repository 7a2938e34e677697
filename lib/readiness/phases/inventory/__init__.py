"""Phase 00_inventory: the library code behind ``notebooks/00_inventory.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#00-inventory.
"""

__all__ = ["inventory"]
