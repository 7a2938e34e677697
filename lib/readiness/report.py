"""Small helpers for the markdown reports every phase writes.

Reports are read by people who will not open a notebook, so each one starts with the
same header (what ran, against what, under which profile) and renders checks the same
way: status, observed value with unit and interval, threshold, n.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

from readiness.check import Check, summarize


def fmt_num(value: float | str | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if unit in ("ratio", "rate"):
        return f"{value * 100:.{digits}f}%"
    text = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def fmt_interval(check: Check) -> str:
    if check.ci_low is None and check.ci_high is None:
        return "—"
    return f"[{fmt_num(check.ci_low, check.unit)}, {fmt_num(check.ci_high, check.unit)}]"


_TAG_START = re.compile(r"<(?!https?://)(?=[A-Za-z/!?])")


def md_escape(text: str) -> str:
    """One Markdown table cell. Cells carry what targets sent (page snippets, error bodies):
    a ``<`` that would open an HTML tag is written as ``&lt;`` so that a rendered report
    never runs or loads what a target put in it; ``<https://…>`` autolinks stay links."""
    return _TAG_START.sub("&lt;", text.replace("|", "\\|").replace("\n", " "))


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(md_escape(str(c)) for c in row) + " |")
    return "\n".join(lines)


def checks_table(checks: Sequence[Check]) -> str:
    """A markdown table of checks: the standard way to show verdicts in reports."""
    rows = [(c.id, f"**{c.status}**", fmt_num(c.observed, c.unit), fmt_interval(c),
             f"{c.comparator} {fmt_num(c.threshold, c.unit)}".strip() if c.threshold is not None else "—",
             c.n if c.n is not None else "—", c.detail) for c in checks]
    return md_table(["check", "status", "observed", "95% interval", "threshold", "n", "detail"], rows)


def checks_frame(checks: Sequence[Check]) -> pd.DataFrame:
    """Checks as a display table: status, value with unit, 95% interval, threshold, n."""
    rows = [{"check": c.id, "status": str(c.status), "observed": fmt_num(c.observed, c.unit),
             "95% interval": fmt_interval(c),
             "threshold": f"{c.comparator} {fmt_num(c.threshold, c.unit)}".strip() if c.threshold is not None else "—",
             "n": c.n if c.n is not None else "—", "detail": c.detail} for c in checks]
    return pd.DataFrame(rows, columns=["check", "status", "observed", "95% interval", "threshold", "n",
                                       "detail"]).set_index("check")


def header(title: str, *, ecosystem: str, environment: str, run_name: str, profile_note: str) -> str:
    return (f"# {title}\n\n"
            f"- Ecosystem: **{ecosystem}** ({environment})\n"
            f"- Run: `{run_name}`\n"
            f"- Profile: {profile_note}\n")


def status_line(checks: Sequence[Check]) -> str:
    counts = {k: v for k, v in summarize(checks).items() if v}
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "no checks"
