"""The orchestration layer: the suite runner, headless notebook execution, the human approval gates and the command line.

It sits on top: it may import every other layer, and nothing imports it except the package's
lazy ``run_suite``.
"""

__all__ = ["cli", "gates", "notebook_exec", "runner"]
