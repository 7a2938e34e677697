"""Measured comparisons of the suite against its own targets (``python -m benchmarks``).

Performance and fidelity are measured here, never asserted inside tests: a timing
assert fails on a busy CI machine for reasons unrelated to the code, while a benchmark
records what it measured, on which machine, next to the target, and leaves the reading
to a person.

Contract for a benchmark: a module ``benchmarks/bench_<name>.py`` exposing
``run(out_dir: pathlib.Path) -> dict``. ``out_dir`` is ``benchmarks/results/``, where it
may leave extra files (raw outputs) named after itself; the returned dict must be JSON
serialisable and is written to ``benchmarks/results/<name>.json`` by the runner. Two keys
are read by the runner when present: ``summary`` (one line for the console) and
``targets`` (``{name: {"target", "measured", "unit", "comparator", "met"}}``, best built
with :func:`target`). See ``benchmarks/README.md`` for the file format.
"""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_COMPARATORS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


def target(measured: float | None, limit: float, unit: str, comparator: str = "<=") -> dict[str, Any]:
    """One target as the results file records it: ``met`` is True when ``measured``
    satisfies ``comparator limit``, False when it does not, and None when nothing was
    measured (a missing figure is not a pass)."""
    if comparator not in _COMPARATORS:
        raise ValueError(f"target: comparator must be one of {tuple(_COMPARATORS)}, got {comparator!r}")
    if measured is None or (isinstance(measured, float) and math.isnan(measured)):
        met = None
    else:
        met = bool(_COMPARATORS[comparator](measured, limit))
    return {"target": limit, "measured": measured, "unit": unit, "comparator": comparator, "met": met}
