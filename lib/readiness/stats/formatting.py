"""How the suite writes a number for a person: with enough digits to be honest, never ``nan``.

Check details, chart labels and report tables all print numbers through these functions,
so a bound that differs from its threshold never prints equal to it (``0.998% < 1%``, not
``1% < 1%``), sub-millisecond values never print as ``0``, and a value that does not exist
prints as :data:`MISSING_TEXT`. They are pure functions of numbers, kept apart from the
quantile mathematics, and sit at the bottom of the library so that the verdict rules and
the reports format alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["MISSING_TEXT", "format_against", "format_number", "format_percent", "format_ratio"]


#: What a report shows for a number that does not exist (NaN, None): never "nan".
MISSING_TEXT = "—"


def _non_finite(x: float | None) -> str | None:
    """The text of a value that has no digits to print, or None for a finite number.

    NaN and None are "no value" and print as :data:`MISSING_TEXT`; infinities stay
    ``inf``/``-inf`` because they are a finding (a request with no answer is slower than
    any threshold) that reports and recorded details already spell that way.
    """
    if x is None or math.isnan(x):
        return MISSING_TEXT
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return None


def format_number(x: float | None) -> str:
    """One decimal for readable magnitudes (``41.2``, ``120``), three significant digits
    below 1 (``0.0123``), so sub-millisecond values do not print as ``0``. NaN and None
    print as ``—``, infinities as ``inf``."""
    if (text := _non_finite(x)) is not None:
        return text
    assert x is not None
    if x == 0 or abs(x) >= 1:
        text = f"{x:.1f}"
        return text.removesuffix(".0")
    return f"{x:.3g}"


def format_percent(x: float | None, versus: float | None = None) -> str:
    """A proportion as a percentage with up to two decimals, or more when two decimals
    would make a bound print equal to the threshold it differs from (``0.998%`` rather
    than ``1% < 1%``). NaN and None print as ``—``, infinities as ``inf%``."""
    if (special := _non_finite(x)) is not None:
        return special if special == MISSING_TEXT else f"{special}%"
    assert x is not None
    comparable = versus is not None and math.isfinite(versus)
    for decimals in range(2, 9):
        text = f"{x * 100:.{decimals}f}"
        if not comparable or x == versus or text != f"{versus * 100:.{decimals}f}":
            break
    return f"{text.rstrip('0').rstrip('.')}%"


def format_ratio(x: float | None) -> str:
    """Three significant digits (``1.05``, ``0.912``, ``12.5``): a ratio near 1 needs
    them, one decimal would print 1.05 and 1.14 alike. NaN and None print as ``—``."""
    if (text := _non_finite(x)) is not None:
        return text
    return f"{x:.3g}"


def format_against(x: float | None, versus: float | None, fmt: Callable[[float], str] = format_number) -> str:
    """``x`` printed with ``fmt``, with extra decimals when rounding would hide that it
    differs from the threshold it is compared with (``120.04 ms > 120 ms``, not ``120 ms > 120 ms``).
    A value or threshold without digits (NaN, None, inf) has nothing to disambiguate."""
    if x is None:
        return MISSING_TEXT
    if not math.isfinite(x):
        return fmt(x)  # every formatter here prints NaN and inf itself
    text = fmt(x)
    if versus is not None and math.isfinite(versus) and x != versus and text == fmt(versus):
        for decimals in range(2, 9):
            text = f"{x:.{decimals}f}"
            if text != f"{versus:.{decimals}f}":
                break
    return text


def format_p(p: float) -> str:
    """A p-value for a sentence: ``p = 0.031``, ``p < 1e-6``."""
    return "p < 1e-6" if p < 1e-6 else f"p = {p:.2g}"
