"""The presentation layer: markdown helpers, charts and HTML rendering.

It turns checks and numbers into text, Vega-Lite/SVG charts and self-contained pages, and
survives empty, all-failed and NaN data. It may import ``core``, ``stats`` and ``params``, never
a probe, a phase or the score.
"""

__all__ = ["charts", "markdown", "render"]
