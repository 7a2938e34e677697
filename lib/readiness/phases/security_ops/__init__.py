"""Phase 10_security_ops: the library code behind ``notebooks/10_security_ops.ipynb``.

What the notebook's cells call, and what they gather, judge and report. The package may import
``readiness.phasekit`` and the layers below; never another
phase package. Its requirements and numbers are in docs/phases.md#10-security-and-ops.
"""

__all__ = ["cleanup", "cost", "monitoring_rules", "ports", "secret_scan", "web_security"]
