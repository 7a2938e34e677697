"""The statistics layer: order-statistic quantile intervals, Wilson rate intervals, latency summaries, the exceedance comparison test, serial dependence, operating characteristics and sample-size planning, and the bandit mathematics.

Pure numerical functions over numbers and arrays. They know nothing of checks, params, HTTP or
run folders and import nothing else from the library, so they can be tested and reused alone.
How a number prints for a person (``formatting``) is kept apart from the mathematics.
"""

__all__ = ["bandit", "dependence", "design", "exceedance", "formatting", "latency", "quantiles", "rates"]
