"""Phase 06_telemetry_contract: the library code behind ``notebooks/06_telemetry_contract.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#06-telemetry-contract.
"""

__all__ = ["contract", "sampling"]
