"""Small helpers for the markdown reports every phase writes.

Reports are read by people who will not open a notebook, so each one starts with the
same header (what ran, against what, under which profile) and renders checks the same
way: status, observed value with unit and interval, threshold, n.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

import numpy as np
import pandas as pd

from readiness.core.check import Check, summarize
from readiness.core.verdict import DECISION_LEVEL
from readiness.stats.formatting import format_percent

MISSING = "—"
_RATIO_UNITS = ("ratio", "rate")


def _is_missing(value: object) -> bool:
    """None, NaN (float, numpy or Decimal), pd.NA or NaT: a value that does not exist."""
    if value is None:
        return True
    if isinstance(value, Decimal):
        return value.is_nan()
    return bool(pd.api.types.is_scalar(value) and not isinstance(value, str) and pd.isna(value))


def _infinity(value: object) -> str | None:
    """``∞`` or ``−∞`` for an infinite number, else None. An infinite latency is a
    request that never answered: a finding to show, not a formatting accident."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return None
    x = float(value)
    return None if math.isfinite(x) else ("∞" if x > 0 else "−∞")


def fmt_num(value: float | str | None, unit: str = "", digits: int = 1) -> str:
    """A value with its unit for a report cell (``41.2 ms``, ``3.5%`` for a ratio).

    A value that does not exist (None, NaN, pd.NA) prints as ``—`` and an infinite one
    as ``∞ ms``, so that a check with no answered request reads as such instead of
    ``nan ms`` or ``inf ms``. Text is shown as given; integers and Decimals keep their
    own digits.
    """
    if isinstance(value, str):
        return value
    if _is_missing(value):
        return MISSING
    if (inf := _infinity(value)) is not None:
        return f"{inf}%" if unit in _RATIO_UNITS else f"{inf} {unit}".strip()
    if isinstance(value, bool):
        return f"{value} {unit}".strip()
    if unit in _RATIO_UNITS:
        percent = value * 100
        if (inf := _infinity(percent)) is not None:  # a finite ratio beyond 1.8e306 overflows
            return f"{inf}%"
        return f"{percent:.{digits}f}%"
    text = f"{value:.{digits}f}" if isinstance(value, float | np.floating) else str(value)
    return f"{text} {unit}".strip()


#: Every rule decides PASS and FAIL as one-sided tests at α = 5% and records the two-sided
#: 90% interval whose ends are those bounds; an interval at another level is marked.
DEFAULT_LEVEL = DECISION_LEVEL
INTERVAL_COLUMN = "interval (90% unless marked)"
#: Said once in every report's header: how to read a verdict and its interval.
DECISION_NOTE = ("each pass/fail decision is a one-sided test at α = 5%; intervals are two-sided 90% "
                 "(their ends are the one-sided 95% bounds that decide) unless marked")


def fmt_interval(check: Check) -> str:
    """``[low, high]`` with the check's unit; ``—`` when neither bound exists, and ``—``
    for the one bound that does not (``[35.0 ms, —]``). An interval whose recorded level
    is not 95% carries it (``[7.8%, 12.74%] 90%``)."""
    if _is_missing(check.ci_low) and _is_missing(check.ci_high):
        return MISSING
    text = f"[{fmt_num(check.ci_low, check.unit)}, {fmt_num(check.ci_high, check.unit)}]"
    level = check.ci_level
    if level is not None and not math.isclose(level, DEFAULT_LEVEL):
        text += f" {format_percent(level)}"
    return text


def interval_name(check: Check) -> str:
    """``95% CI``, ``90% CI``, or ``CI`` when the rule did not record its level."""
    return f"{format_percent(check.ci_level)} CI" if check.ci_level is not None else "CI"


def _fmt_threshold(check: Check) -> str:
    """``<= 120.0 ms``, or ``—`` for a check held against no threshold."""
    if _is_missing(check.threshold):
        return MISSING
    return f"{check.comparator} {fmt_num(check.threshold, check.unit)}".strip()


def _fmt_count(n: object) -> object:
    """A sample count as given, ``—`` when unknown (None or NaN)."""
    if _is_missing(n):
        return MISSING
    if isinstance(n, float | np.floating) and float(n).is_integer():
        return int(n)
    return n


def _cell(value: object) -> str:
    """A table cell as text: ``—`` for a missing value and ``∞`` for an infinite one
    instead of 'None', 'nan' or 'inf'; everything else exactly as ``str`` gives it."""
    if _is_missing(value):
        return MISSING
    if (inf := _infinity(value)) is not None:
        return inf
    return str(value)


_TAG_START = re.compile(r"<(?!https?://)(?=[A-Za-z/!?])")


def md_escape(text: str) -> str:
    """One Markdown table cell. Cells carry what targets sent (page snippets, error bodies):
    a ``<`` that would open an HTML tag is written as ``&lt;`` so that a rendered report
    never runs or loads what a target put in it; ``<https://…>`` autolinks stay links."""
    return _TAG_START.sub("&lt;", text.replace("|", "\\|").replace("\n", " "))


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; cells are escaped (:func:`md_escape`) and missing or infinite
    numbers shown as ``—``/``∞``, since rows are often built straight from measurements."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(md_escape(_cell(c)) for c in row) + " |")
    return "\n".join(lines)


def checks_table(checks: Sequence[Check]) -> str:
    """A markdown table of checks: the standard way to show verdicts in reports."""
    rows = [(c.id, f"**{c.status}**", fmt_num(c.observed, c.unit), fmt_interval(c), _fmt_threshold(c),
             _fmt_count(c.n), c.detail) for c in checks]
    return md_table(["check", "status", "observed", INTERVAL_COLUMN, "threshold", "n", "detail"], rows)


def checks_frame(checks: Sequence[Check]) -> pd.DataFrame:
    """Checks as a display table: status, value with unit, interval, threshold, n."""
    rows = [{"check": c.id, "status": str(c.status), "observed": fmt_num(c.observed, c.unit),
             INTERVAL_COLUMN: fmt_interval(c), "threshold": _fmt_threshold(c), "n": _fmt_count(c.n),
             "detail": c.detail} for c in checks]
    return pd.DataFrame(rows, columns=["check", "status", "observed", INTERVAL_COLUMN, "threshold", "n",
                                       "detail"]).set_index("check")


def header(title: str, *, ecosystem: str, environment: str, run_name: str, profile_note: str) -> str:
    return (f"# {title}\n\n"
            f"- Ecosystem: **{ecosystem}** ({environment})\n"
            f"- Run: `{run_name}`\n"
            f"- Profile: {profile_note}\n"
            f"- Verdicts: {DECISION_NOTE}\n")


def status_line(checks: Sequence[Check]) -> str:
    counts = {k: v for k, v in summarize(checks).items() if v}
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no checks"
