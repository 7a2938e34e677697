"""Charts for the audit: Altair specs that render with no network and stay small.

Two audiences read the same charts: analysts in JupyterLab and leadership in static
HTML opened from a disk or an archive, often with no internet access. So every chart is
rendered to inline SVG by vl-convert (:func:`enable_offline_rendering`) instead of
being drawn by Vega's JavaScript from a CDN, and every chart is also saved as a file
(:func:`save_chart`) so a report can link to it.

Charts embed their data. To keep an HTML report small whatever the sample size, data is
aggregated before it reaches a chart (a P95 per endpoint, a histogram instead of raw
samples) and no chart may embed more than :data:`MAX_CHART_ROWS` rows; Altair's own
5,000-row limit is left on as a second net.

Charts are drawn from whatever the targets did, and against third-party services that
includes nothing at all: every request of an endpoint failing or timing out, so that no
latency is finite. A chart function therefore never raises on the *shape* of its data
(no rows, one row, NaN or +inf everywhere, a mix): what cannot be drawn is named in the
chart ("no answered requests: A1.get (n = 40)") and, when nothing can, the chart is an
explicit panel that says so (:func:`no_data_chart`). A report that silently drops a
series would read as if the series were fine; a report that crashes loses every other
chart of the phase. Wrong arguments from code (a misspelt column, too many rows to embed)
still raise, because those are bugs to fix rather than findings to report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import altair as alt
import numpy as np
import pandas as pd
from altair.utils.mimebundle import spec_to_mimebundle

from readiness.stats.formatting import format_number

MAX_CHART_ROWS = 500
LEVELS = (0, 1, 2, 3, 4, 5)
LEVEL_NAMES = ("absent", "ad hoc", "basic", "managed", "measured", "optimized")
DEFAULT_GRADE_BANDS: tuple[tuple[float, str], ...] = ((90.0, "Green"), (75.0, "Yellow"), (0.0, "Red"))
GRADE_COLOURS = {"Green": "#2e7d32", "Yellow": "#f9a825", "Red": "#c62828"}
NOT_REACHED = "not reached"
STATUS_COLOURS = {
    "PASS": "#2e7d32", "FAIL": "#c62828", "INCONCLUSIVE": "#f9a825", "SKIPPED": "#9e9e9e",
    "STOPPED": "#6a1b9a", "BLOCKED": "#5d4037", "ERROR": "#37474f",
}
LATENCY_COLUMNS = ("label", "p95_ms", "ci_low_ms", "ci_high_ms", "threshold_ms", "n", "status")
HISTOGRAM_COLUMNS = ("bin_low_ms", "bin_high_ms", "count")
ECDF_COLUMNS = ("p", "value_ms", "series")
NO_ANSWER = "no answered requests"
#: Names listed in a chart before the rest is summarized as "… and k more".
MAX_NAMED = 12
#: Characters per subtitle line: Vega does not wrap text, and an SVG has no tooltip to
#: hold what overflows.
LINE_CHARS = 96
#: Latency checks record the two-sided 90% interval: its ends are the one-sided 95% bounds they
#: decide with.
_INTERVAL = "90% interval"
_NO_INTERVAL = "no interval (n too small)"
_OPEN_INTERVAL = "open above (unanswered)"
_CHART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


class _ChartWriter(Protocol):
    """The part of the run folder a chart needs: atomic, redacting writes."""

    def write_bytes(self, relpath: str, data: bytes, *, producer: str | None = None) -> Any: ...
    def write_json(self, relpath: str, obj: Any, *, producer: str | None = None) -> Any: ...


def enable_offline_rendering() -> None:
    """Display charts as inline SVG produced locally by vl-convert.

    The SVG output needs no JavaScript, so executed notebooks and the HTML rendered from
    them show charts with no network. Interactive tooltips are the price; for that
    reason every chart here puts the numbers a reader needs (n, interval) in labels.
    Calling it again is harmless.
    """
    if alt.renderers.active != "svg":
        alt.renderers.enable("svg")


def embedded_rows(spec: Mapping[str, Any] | list[Any]) -> int:
    """Count the data rows a Vega-Lite spec carries inline (named datasets and values)."""
    total = 0
    if isinstance(spec, Mapping):
        for key, value in spec.items():
            if key == "datasets" and isinstance(value, Mapping):
                total += sum(len(rows) for rows in value.values() if isinstance(rows, list))
            elif key == "values" and isinstance(value, list):
                total += len(value)
            elif isinstance(value, (Mapping, list)):
                total += embedded_rows(value)
    elif isinstance(spec, list):
        total += sum(embedded_rows(item) for item in spec if isinstance(item, (Mapping, list)))
    return total


def chart_to_svg(chart: alt.TopLevelMixin) -> str:
    """Render a chart to SVG text with the same engine as the notebook renderer."""
    bundle = spec_to_mimebundle(
        chart.to_dict(), format="svg", mode="vega-lite", vega_version=alt.VEGA_VERSION,
        vegaembed_version=alt.VEGAEMBED_VERSION, vegalite_version=alt.VEGALITE_VERSION,
    )
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    return str(data["image/svg+xml"])


def save_chart(run: _ChartWriter, name: str, chart: alt.TopLevelMixin) -> list[str]:
    """Write ``charts/<name>.svg`` and ``charts/<name>.vl.json``; return both relative paths.

    The SVG is what reports link to; the Vega-Lite JSON lets an analyst reopen the chart
    in any Vega tool. A chart that embeds too many rows is refused rather than bloating
    every report that includes it.
    """
    if not _CHART_NAME.match(name):
        raise ValueError(f"chart name must be letters, digits, '_', '-' or '.', got {name!r}")
    spec = chart.to_dict()
    rows = embedded_rows(spec)
    if rows > MAX_CHART_ROWS:
        raise ValueError(
            f"chart {name!r} embeds {rows} rows, more than {MAX_CHART_ROWS}; aggregate before charting")
    svg_path, json_path = f"charts/{name}.svg", f"charts/{name}.vl.json"
    run.write_bytes(svg_path, chart_to_svg(chart).encode("utf-8"), producer="charts")
    run.write_json(json_path, spec, producer="charts")
    return [svg_path, json_path]


def _check_rows(what: str, n_rows: int) -> None:
    """Refuse more rows than a chart may embed: the caller forgot to aggregate (a bug, not data)."""
    if n_rows > MAX_CHART_ROWS:
        raise ValueError(f"{what}: {n_rows} rows exceed the chart limit of {MAX_CHART_ROWS}; "
                         "aggregate before charting")


def _has_rows(what: str, df: pd.DataFrame, columns: Sequence[str]) -> bool:
    """True when ``df`` has rows to draw; raise when code passed the wrong columns.

    A frame with neither rows nor columns is what ``pd.DataFrame(records)`` gives for no
    records, so it counts as "no data" rather than as a missing-column bug.
    """
    if len(df.columns) == 0 and len(df) == 0:
        return False
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}")
    _check_rows(what, len(df))
    return len(df) > 0


def _numeric(values: pd.Series) -> pd.Series:
    """Floats, with anything that is not a number (None, pd.NA, text) as NaN, so that a
    column read from recorded checks (where NaN and inf were stored as None) can be
    tested with ``np.isfinite``."""
    return pd.to_numeric(values, errors="coerce").astype(float)


def _is_missing(value: Any) -> bool:
    """None, NaN, pd.NA or NaT: a scalar with no value to show."""
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _text(value: Any, missing: str = "(unnamed)") -> str:
    """A label for a chart: ``missing`` instead of the string 'nan' or 'None'."""
    return missing if _is_missing(value) else str(value)


def _count_text(n: Any) -> str:
    """A sample count for a label: whole numbers without '.0', '?' when unknown."""
    if _is_missing(n):
        return "?"
    try:
        value = float(n)
    except (TypeError, ValueError):
        return str(n)
    if not math.isfinite(value):
        return "?"
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _name_lines(head: str, names: Sequence[str]) -> list[str]:
    """``head: a, b, c`` split into lines of about :data:`LINE_CHARS` characters, at most
    :data:`MAX_NAMED` names. Vega never wraps a title, so a long list would run off the
    SVG; the names are what the reader needs, so they are listed rather than counted."""
    shown = list(names[:MAX_NAMED])
    if len(names) > MAX_NAMED:
        shown.append(f"… and {len(names) - MAX_NAMED} more")
    lines: list[str] = []
    line, used = f"{head}: ", False
    for i, name in enumerate(shown):
        piece = name + ("," if i < len(shown) - 1 else "")
        if used and len(line) + len(piece) > LINE_CHARS:
            lines.append(line.rstrip())
            line = "    "
        line += piece + " "
        used = True
    lines.append(line.rstrip())
    return lines


def no_answer_text(n_sent: int | None = None) -> str:
    """``no answered requests (n = 40)``; without ``n_sent`` just ``no answered requests``."""
    return NO_ANSWER if n_sent is None else f"{NO_ANSWER} (n = {_count_text(n_sent)})"


def no_data_chart(title: str, message: str, *, details: Sequence[str] = (), width: int = 380,
                  height: int | None = None) -> alt.LayerChart:
    """A panel that says why there is nothing to draw, in the place of a chart.

    Used when no value of a chart is finite (every request failed or timed out, or none
    was sent). An empty pair of axes would look like a rendering fault, and an exception
    would lose every other chart and table of the phase; this states the finding where
    the chart would have been. It holds one short text row per line, renders to SVG like
    any chart, and fits into ``alt.hconcat``/``alt.vconcat`` beside real charts (it uses
    no ``configure_*``, which concatenation forbids in its parts).
    """
    lines = [message, *details]
    data = pd.DataFrame({"line": range(len(lines)), "text": lines})
    text = alt.Chart(data).mark_text(align="center", baseline="middle", fontSize=13, color="#37474f").encode(
        x=alt.value(width / 2), y=alt.Y("line:O", axis=None), text="text:N")
    return alt.layer(text).properties(
        title=title, width=width, height=height if height is not None else max(80, 40 + 20 * len(lines)))


def _title(title: str, lines: Sequence[str]) -> alt.TitleParams | str:
    """The title with its subtitle lines; a single line stays a plain string in the spec."""
    if not lines:
        return title
    return alt.TitleParams(title, subtitle=lines[0] if len(lines) == 1 else list(lines))


def _status_scale(present: Iterable[str]) -> alt.Scale:
    """Fixed colour per verdict, legend limited to the verdicts actually shown."""
    shown = set(present)
    domain = [s for s in STATUS_COLOURS if s in shown] + sorted(shown - set(STATUS_COLOURS))
    return alt.Scale(domain=domain, range=[STATUS_COLOURS.get(s, "#000000") for s in domain])


def latency_chart(df: pd.DataFrame, *, title: str = "P95 latency with 90% interval") -> alt.LayerChart:
    """One row per app or endpoint: the P95 estimate, its 90% interval and the threshold.

    A row whose interval does not exist (too few samples for an order-statistic bound)
    is drawn as a faded diamond with "no interval" in its label, so nobody reads a bare
    point as a confident one. An upper bound of +inf (unanswered requests reach it) is
    drawn to the right edge and labelled "upper bound ∞". ``n`` is part of each row
    label because SVG output has no tooltips.

    A row with no finite P95 (its requests failed or got no answer, or none was sent;
    recorded checks store such a value as None) has no place on a latency axis: it is
    left out of the plot and named under the title with its n, so a reader sees which
    endpoints have no number instead of not seeing them at all. With no finite P95 in
    any row, or no row, the result is a :func:`no_data_chart` panel that lists them.
    """
    width = 460
    if not _has_rows("latency_chart", df, LATENCY_COLUMNS):
        return no_data_chart(title, "no endpoint latency to chart (0 rows)", width=width)
    data = df.loc[:, list(LATENCY_COLUMNS)].copy()
    for col in ("p95_ms", "ci_low_ms", "ci_high_ms", "threshold_ms", "n"):
        data[col] = _numeric(data[col])
    data["label"] = [_text(v) for v in data["label"]]
    data["status"] = [_text(v, "no verdict") for v in data["status"]]
    finite = np.isfinite(data["p95_ms"].to_numpy())
    absent = [f"{label} (n = {_count_text(n)})"
              for label, n, ok in zip(data["label"], data["n"], finite, strict=True) if not ok]
    missing_note = _name_lines("no finite P95 (requests unanswered or failed)", absent) if absent else []
    if not finite.any():
        return no_data_chart(title, "no finite P95 to chart: requests unanswered or failed",
                             details=_name_lines("endpoints", absent), width=width)
    data = data.loc[finite].reset_index(drop=True)
    low, high = data["ci_low_ms"].to_numpy(), data["ci_high_ms"].to_numpy()
    closed = np.isfinite(low) & np.isfinite(high)
    open_above = np.isfinite(low) & np.isposinf(high)
    values = data[["p95_ms", "ci_low_ms", "ci_high_ms", "threshold_ms"]].to_numpy().ravel()
    right_edge = float(values[np.isfinite(values)].max())  # some P95 is finite, so never empty
    data["has_interval"] = closed | open_above
    data["ci_high_drawn_ms"] = np.where(open_above, right_edge, high)
    data["interval"] = np.select([closed, open_above], [_INTERVAL, _OPEN_INTERVAL], _NO_INTERVAL)
    suffix = {_INTERVAL: "", _OPEN_INTERVAL: ", upper bound ∞", _NO_INTERVAL: ", no interval"}
    data["row"] = [f"{label} (n={_count_text(n)}{suffix[kind]})"
                   for label, n, kind in zip(data["label"], data["n"], data["interval"], strict=True)]
    shapes = {_INTERVAL: "circle", _NO_INTERVAL: "diamond"} | (
        {_OPEN_INTERVAL: "triangle-right"} if open_above.any() else {})
    y = alt.Y("row:N", sort=data["row"].tolist(), title=None)
    x_title = "latency (ms)"
    base = alt.Chart(data)
    status_scale = _status_scale(data["status"])
    points = base.mark_point(size=90, filled=True).encode(
        x=alt.X("p95_ms:Q", title=x_title), y=y,
        color=alt.Color("status:N", scale=status_scale, title="verdict"),
        shape=alt.Shape("interval:N", scale=alt.Scale(domain=list(shapes), range=list(shapes.values())),
                        title="P95 estimate"),
        opacity=alt.condition("datum.has_interval", alt.value(1.0), alt.value(0.45)),
    )
    bars = base.transform_filter("datum.has_interval").mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low_ms:Q", title=x_title), x2="ci_high_drawn_ms:Q", y=y,
        color=alt.Color("status:N", scale=status_scale),
    )
    limits = data["threshold_ms"].to_numpy()
    thresholds = np.unique(limits[np.isfinite(limits)])
    if len(thresholds) == 1:
        legend = "dashed red line: threshold (ms)"
        limit = alt.Chart(pd.DataFrame({"threshold_ms": [float(thresholds[0])]})).mark_rule(
            color="#c62828", strokeDash=[6, 4], strokeWidth=1.5).encode(x="threshold_ms:Q")
    else:
        legend = "red tick: threshold per row (ms)" if len(thresholds) else "no threshold given"
        limit = base.transform_filter("isValid(datum.threshold_ms)").mark_tick(
            color="#c62828", thickness=2).encode(x="threshold_ms:Q", y=y)
    return alt.layer(bars, limit, points).properties(
        title=_title(title, [legend, *missing_note]), width=width, height=max(60, 28 * len(data)))


def _floats(values: Iterable[float | None]) -> np.ndarray:
    """Samples as a float array, None as NaN. Arrays and Series are converted without a
    Python loop, since raw samples can number in the hundreds of thousands."""
    if isinstance(values, pd.Series):
        return _numeric(values).to_numpy()
    if isinstance(values, np.ndarray) and values.dtype != object:
        return values.astype(float).ravel()
    return np.asarray([math.nan if v is None else v for v in values], dtype=float)


def histogram_chart(values_ms: Iterable[float | None], *, bins: int = 40, threshold_ms: float | None = None,
                    title: str = "Latency distribution", n_sent: int | None = None) -> alt.LayerChart:
    """Histogram of raw samples: binned by :func:`readiness.stats.latency.histogram` first, so
    the chart carries ``bins`` rows whether the endpoint was probed 200 or 200,000 times.

    Values without a latency (None, NaN) and negative ones (a clock that went backwards)
    cannot be binned: they are left out and counted in the subtitle. With no finite
    value left the chart is a panel "no answered requests (n = …)", n being ``n_sent``
    when the caller knows how many requests were sent, else the number of values given.
    """
    from readiness.stats.latency import histogram

    if not 1 <= bins <= MAX_CHART_ROWS:
        raise ValueError(f"histogram_chart: bins must be between 1 and {MAX_CHART_ROWS}, got {bins}")
    values = _floats(values_ms)
    nan = np.isnan(values)
    negative = values < 0  # NaN compares False, -inf counts as negative
    notes = [f"{int(k.sum())} {why} left out" for k, why in ((nan, "without a timing"),
                                                            (negative, "negative")) if k.any()]
    usable = values[~nan & ~negative]
    answered = usable[np.isfinite(usable)]
    if not answered.size:
        return no_data_chart(title, no_answer_text(values.size if n_sent is None else n_sent),
                             details=notes, height=200)
    lo, hi = float(answered.min()), float(answered.max())
    if _splittable(lo, hi, bins):
        binned = histogram(usable, bins=bins)
    else:  # one bin; when every value is equal it ends at the value (growing it could overflow)
        binned = pd.DataFrame({"bin_low_ms": [lo if hi > lo else lo * (1 - 1e-9), hi], "bin_high_ms": [hi, math.inf],
                               "count": [answered.size, usable.size - answered.size]})
        notes.append(f"values too close together at this magnitude for {bins} bins: one bin")
    return _bins_chart(binned, threshold_ms=threshold_ms, log_scale=False, title=title, n_sent=n_sent, notes=notes)


def _splittable(lo: float, hi: float, bins: int) -> bool:
    """Whether ``bins`` equal-width bins over the finite range (widened to 1 ms when all
    values are equal, as :func:`readiness.stats.latency.histogram` does) have distinct
    and finite edges. At magnitudes around 2**47 ms and beyond, adjacent floats can be more
    than a bin apart, and numpy refuses such a histogram instead of returning one; near
    the largest float the edges themselves overflow."""
    top = hi if hi > lo else lo + 1.0
    try:
        with np.errstate(over="raise", invalid="raise"):  # numpy.histogram computes these same edges
            edges = np.linspace(lo, top, bins + 1)
    except FloatingPointError:
        return False
    return bool(top > lo and np.isfinite(edges).all() and np.all(edges[:-1] < edges[1:]))


def histogram_bins_chart(bins: pd.DataFrame, *, threshold_ms: float | None = None, log_scale: bool = False,
                         title: str = "Latency distribution", n_sent: int | None = None) -> alt.LayerChart:
    """Bars from pre-binned counts (columns bin_low_ms, bin_high_ms, count).

    A final open bin (``bin_high_ms`` = inf: requests that got no answer) cannot be drawn
    on a latency axis; it is counted in the subtitle instead. When no bin can be drawn
    (no sample, or only the open bin because every request went unanswered) the chart is
    a panel "no answered requests (n = …)", n being ``n_sent`` when given, else the
    samples counted in the bins. On a log scale a bin starting at 0 ms starts at half the
    smallest positive edge instead (said in the subtitle), and with no latency above
    0 ms the scale falls back to linear, because a log axis has no place for 0.
    """
    return _bins_chart(bins, threshold_ms=threshold_ms, log_scale=log_scale, title=title, n_sent=n_sent, notes=())


def _threshold_rule(threshold_ms: float | None, log_scale: bool) -> alt.Chart | None:
    """The dashed red threshold, or None when it cannot sit on the axis (not finite, or
    not above 0 on a log scale)."""
    if threshold_ms is None:
        return None
    limit = float(threshold_ms)
    if not math.isfinite(limit) or (log_scale and limit <= 0):
        return None
    return alt.Chart(pd.DataFrame({"threshold_ms": [limit]})).mark_rule(
        color="#c62828", strokeDash=[6, 4]).encode(x="threshold_ms:Q")


def _bins_chart(bins: pd.DataFrame, *, threshold_ms: float | None, log_scale: bool, title: str,
                n_sent: int | None, notes: Sequence[str]) -> alt.LayerChart:
    width, height = 380, 200
    notes = list(notes)
    if not _has_rows("histogram_bins_chart", bins, HISTOGRAM_COLUMNS):
        return no_data_chart(title, no_answer_text(0 if n_sent is None else n_sent), details=notes, height=height)
    data = pd.DataFrame({c: _numeric(bins[c]) for c in HISTOGRAM_COLUMNS})
    data["count"] = data["count"].fillna(0.0)
    low, high, count = data["bin_low_ms"].to_numpy(), data["bin_high_ms"].to_numpy(), data["count"].to_numpy()
    drawable = np.isfinite(low) & np.isfinite(high)
    n = int(round(float(count.sum())))
    unanswered = int(round(float(count[~drawable].sum())))
    if not drawable.any() or float(count[drawable].sum()) <= 0:
        return no_data_chart(title, no_answer_text(n if n_sent is None else n_sent), details=notes, height=height)
    x_field = "bin_low_ms"
    if log_scale:
        positive = drawable & (high > 0)
        if not positive.any():
            log_scale = False
            notes.append("log scale needs latencies above 0 ms: drawn on a linear scale")
        else:
            if (lost := drawable & ~positive).any():
                notes.append(f"{int(count[lost].sum())} samples at or below 0 ms not drawn on the log scale")
            drawable = positive
            edges = np.concatenate([low[positive], high[positive]])
            start = float(edges[edges > 0].min()) / 2
            if (low[positive] <= 0).any():
                notes.append(f"bins from 0 ms drawn from {format_number(start)} ms on the log scale")
            data["drawn_low_ms"] = np.where(low > 0, low, start)
            x_field = "drawn_low_ms"
    finite = data.loc[drawable].reset_index(drop=True)
    scale = alt.Scale(type="log") if log_scale else alt.Scale()
    bars = alt.Chart(finite).mark_bar(color="#1565c0").encode(
        x=alt.X(f"{x_field}:Q", title="latency (ms)" + (", log scale" if log_scale else ""), scale=scale),
        x2="bin_high_ms:Q", y=alt.Y("count:Q", title="samples"), y2=alt.datum(0))
    layers: list[alt.Chart] = [bars]
    if (rule := _threshold_rule(threshold_ms, log_scale)) is not None:
        layers.append(rule)
    head = f"n = {n} samples in {len(finite)} bins" + (f"; {unanswered} without answer" if unanswered else "")
    if n_sent is not None and n_sent != n:
        head += f" (of {_count_text(n_sent)} sent)"
    return alt.layer(*layers).properties(title=_title(title, [head, *notes]), width=width, height=height)


def ecdf_chart(curves: pd.DataFrame, *, threshold_ms: float | None = None, log_scale: bool = False,
               title: str = "ECDF", n_sent: int | Mapping[str, int] | None = None) -> alt.LayerChart:
    """Empirical CDFs on a fixed probability grid (columns p, value_ms, series): one line each.

    Infinite values (no answer) are left out of the line; the curve then stops short of 1,
    which is exactly what it should show. A series with no finite value at all is named
    under the title ("no answered requests: A1.get (n = 40)"); ``n_sent`` gives the n per
    series (a mapping, whose keys also name series that have no row at all) or, as an int,
    the requests behind a single series. With no finite value in any series the chart is
    a panel "no answered requests (n = …)". On a log scale values at 0 ms are left out
    (a log axis has no place for them), or the scale falls back to linear when no value
    is above 0 ms.
    """
    width, height = 380, 200
    per_series = dict(n_sent) if isinstance(n_sent, Mapping) else {}
    if _has_rows("ecdf_chart", curves, ECDF_COLUMNS):
        data = pd.DataFrame({"p": _numeric(curves["p"]), "value_ms": _numeric(curves["value_ms"]),
                             "series": [_text(s) for s in curves["series"]]})
    else:
        data = pd.DataFrame({"p": pd.Series(dtype=float), "value_ms": pd.Series(dtype=float),
                             "series": pd.Series(dtype=object)})
    values = data["value_ms"].to_numpy()
    drawable = np.isfinite(values) & np.isfinite(data["p"].to_numpy())
    answered = set(data.loc[drawable, "series"])  # before the log scale drops answers at 0 ms
    notes: list[str] = []
    if log_scale and drawable.any():
        positive = drawable & (values > 0)
        if not positive.any():
            log_scale = False
            notes.append("log scale needs latencies above 0 ms: drawn on a linear scale")
        else:
            if (drawable & ~positive).any():
                notes.append("values at or below 0 ms not drawn on the log scale")
            drawable = positive
    order = list(dict.fromkeys([*data["series"], *(str(k) for k in per_series)]))
    absent = [s for s in order if s not in answered]

    def named(series: str) -> str:
        n = per_series.get(series, n_sent if isinstance(n_sent, int) and len(order) == 1 else None)
        return series if n is None else f"{series} (n = {_count_text(n)})"

    if not answered:
        if isinstance(n_sent, Mapping):
            total: int | None = sum(per_series.values()) if all(s in per_series for s in absent) else None
        else:
            total = n_sent
        details = _name_lines("series", [named(s) for s in absent]) if len(absent) > 1 else []
        return no_data_chart(title, no_answer_text(total), details=[*details, *notes], height=height)
    if absent:
        notes = [*_name_lines(NO_ANSWER, [named(s) for s in absent]), *notes]
    scale = alt.Scale(type="log") if log_scale else alt.Scale()
    lines = alt.Chart(data.loc[drawable].reset_index(drop=True)).mark_line(
        interpolate="step-after", clip=True).encode(
        x=alt.X("value_ms:Q", title="latency (ms)" + (", log scale" if log_scale else ""), scale=scale),
        y=alt.Y("p:Q", title="share of requests ≤ x", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", columns=2)))
    layers: list[alt.Chart] = [lines]
    if (rule := _threshold_rule(threshold_ms, log_scale)) is not None:
        layers.append(rule)
    return alt.layer(*layers).properties(title=_title(title, notes), width=width, height=height)


def _validated_categories(what: str, categories: Sequence[Mapping[str, Any]],
                          fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Categories with ``score`` as a float and ``scored`` telling whether it had one.

    A missing score (None, NaN, ±inf) means the category was not scored: it is kept and
    drawn at 0 with "no score" in its label rather than raising, so the rest of the
    chart still reaches the report. Scores outside 0-5, missing fields and duplicate keys
    are bugs in the caller and raise.
    """
    _check_rows(what, len(categories))
    rows: list[dict[str, Any]] = []
    for i, cat in enumerate(categories):
        missing = [f for f in fields if f not in cat]
        if missing:
            raise ValueError(f"{what}: category #{i} is missing {missing}")
        raw = cat["score"]
        score = math.nan if _is_missing(raw) else float(raw)
        scored = math.isfinite(score)
        if scored and not 0.0 <= score <= 5.0:
            raise ValueError(f"{what}: category {cat['key']!r} score {cat['score']} is outside 0-5")
        rows.append({**{f: cat[f] for f in fields}, "score": score if scored else math.nan, "scored": scored})
    keys = [r["key"] for r in rows]
    duplicates = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if duplicates:
        raise ValueError(f"{what}: duplicate category keys {duplicates}")
    return rows


RADAR_COLUMNS = ("order", "key", "score", "weight", "x", "y", "scored")


def radar_coordinates(categories: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Vertices of the score polygon, closed: the first vertex is repeated at the end.

    Category ``i`` of ``k`` sits at angle θ = 2πi/k measured clockwise from the top, at
    radius r = score/5, so x = r·sin θ and y = r·cos θ. A category without a score sits
    at the centre (r = 0) with ``scored`` False. One or two categories give a point or a
    segment, which is what their scores are; no category gives an empty frame.
    """
    rows = _validated_categories("radar_chart", categories, ("key", "score", "weight"))
    k = len(rows)
    points = []
    for order, i in enumerate([*range(k), 0] if k else []):
        theta = 2 * math.pi * i / k
        r = rows[i]["score"] / 5.0 if rows[i]["scored"] else 0.0
        points.append({"order": order, "key": rows[i]["key"], "score": rows[i]["score"],
                       "weight": rows[i]["weight"], "x": r * math.sin(theta), "y": r * math.cos(theta),
                       "scored": rows[i]["scored"]})
    return pd.DataFrame(points, columns=list(RADAR_COLUMNS))


def radar_chart(categories: Sequence[Mapping[str, Any]], *, title: str = "Readiness by category (0-5)"
                ) -> alt.LayerChart:
    """Radar drawn from computed polar coordinates: rings per level, spokes, the score polygon.

    Vega-Lite has no polar line mark, so the geometry is computed here; that also keeps
    the drawn shape testable as plain numbers. With fewer than three categories there is
    no polygon to close, so the rings are drawn as circles and the scores as a point or
    a segment; with none the chart is a panel saying so.
    """
    polygon = radar_coordinates(categories)
    k = len(polygon) - 1
    if k < 1:
        return no_data_chart(title, "no category to chart (0 categories)")
    angles = [2 * math.pi * i / k for i in range(k)]
    corners = k if k >= 3 else 72  # fewer than 3 spokes cannot outline a ring: draw a circle
    rings = pd.DataFrame([
        {"level": level, "order": j, "x": level / 5 * math.sin(2 * math.pi * (j % corners) / corners),
         "y": level / 5 * math.cos(2 * math.pi * (j % corners) / corners)}
        for level in LEVELS[1:] for j in range(corners + 1)])
    spokes = pd.DataFrame({"x": 0.0, "y": 0.0, "x2": [math.sin(a) for a in angles],
                           "y2": [math.cos(a) for a in angles]})
    label_r = 1.12
    labels = pd.DataFrame({
        "text": [f"{row.key} ({row.score:g})" if row.scored else f"{row.key} (no score)"
                 for row in polygon.iloc[:k].itertuples()],
        "x": [label_r * math.sin(a) for a in angles], "y": [label_r * math.cos(a) for a in angles]})
    labels["align"] = np.select([labels["x"] > 0.05, labels["x"] < -0.05], ["left", "right"], "center")
    scale = alt.Scale(domain=[-1.25, 1.25], nice=False, zero=False)
    x = alt.X("x:Q", scale=scale, axis=None)
    y = alt.Y("y:Q", scale=scale, axis=None)
    grid = alt.Chart(rings).mark_line(color="#cfd8dc", strokeWidth=1).encode(
        x=x, y=y, detail="level:N", order="order:Q")
    spoke = alt.Chart(spokes).mark_rule(color="#cfd8dc").encode(x=x, y=y, x2="x2:Q", y2="y2:Q")
    shape = alt.Chart(polygon).mark_line(color="#1565c0", strokeWidth=2.5, fill="#1565c0",
                                         fillOpacity=0.18).encode(x=x, y=y, order="order:Q")
    vertices = alt.Chart(polygon.iloc[:k]).mark_point(color="#1565c0", filled=True, size=40).encode(x=x, y=y)
    texts = [alt.Chart(labels).transform_filter(f"datum.align == '{a}'").mark_text(
        align=a, baseline="middle", fontSize=11, color="#263238").encode(x=x, y=y, text="text:N")
        for a in ("left", "right", "center")]
    unscored = [str(key) for key, ok in zip(polygon["key"][:k], polygon["scored"][:k], strict=True) if not ok]
    subtitle = ["rings: levels 1-5", *(_name_lines("no score (drawn at 0)", unscored) if unscored else [])]
    return alt.layer(grid, spoke, shape, vertices, *texts).properties(
        title=_title(title, subtitle), width=380, height=380,
        padding={"left": 140, "right": 140, "top": 10, "bottom": 10}).configure_view(stroke=None)


def grade_band(percent: float, bands: Sequence[tuple[float, str]] = DEFAULT_GRADE_BANDS) -> str:
    """Name of the first band whose lower bound ``percent`` reaches (bands high to low)."""
    for lower, name in sorted(bands, key=lambda b: b[0], reverse=True):
        if percent >= lower:
            return name
    return sorted(bands, key=lambda b: b[0])[0][1]


HEATMAP_COLUMNS = ("key", "level", "level_name", "score", "reached", "fill")


def heatmap_cells(categories: Sequence[Mapping[str, Any]],
                  bands: Sequence[tuple[float, str]] = DEFAULT_GRADE_BANDS) -> pd.DataFrame:
    """One row per category × level 0-5; a cell is coloured by the category's band once reached.

    A category without a score reaches no level, not even 0 ("absent" is a finding; no
    score is the lack of one). No category gives an empty frame with the same columns.
    """
    rows = _validated_categories("heatmap_chart", categories, ("key", "score", "weight", "weighted"))
    cells = []
    for cat in rows:
        band = grade_band(cat["score"] / 5 * 100, bands) if cat["scored"] else NOT_REACHED
        for level in LEVELS:
            reached = bool(cat["scored"] and cat["score"] >= level)
            cells.append({"key": cat["key"], "level": level, "level_name": f"{level} {LEVEL_NAMES[level]}",
                          "score": cat["score"], "reached": reached, "fill": band if reached else NOT_REACHED})
    return pd.DataFrame(cells, columns=list(HEATMAP_COLUMNS))


def _points_text(weighted: Any, weight: Any) -> str:
    """``12.5 / 15``: weighted points of the weight; '—' for a part that has no number."""
    def number(value: Any, spec: str) -> str:
        try:
            x = float(value)
        except (TypeError, ValueError):
            return "—"
        return format(x, spec) if math.isfinite(x) else "—"

    return f"{number(weighted, '.1f')} / {number(weight, 'g')}"


def heatmap_chart(categories: Sequence[Mapping[str, Any]], *,
                  bands: Sequence[tuple[float, str]] = DEFAULT_GRADE_BANDS,
                  title: str = "Readiness heatmap: level reached per category") -> alt.HConcatChart:
    """Rect chart over categories × levels, with the weighted points as a text column.

    With no category the chart is a panel saying so (still an ``HConcatChart``, the type
    callers lay out); a category without a score is a row with no level reached and
    "no score" next to its points.
    """
    cells = heatmap_cells(categories, bands)
    if cells.empty:
        return alt.hconcat(no_data_chart(title, "no category to chart (0 categories)"))
    order = list(dict.fromkeys(cells["key"]))
    colours = {**GRADE_COLOURS, NOT_REACHED: "#eceff1"}
    domain = [name for _, name in bands if name in colours] + [NOT_REACHED]
    y = alt.Y("key:N", sort=order, title=None)
    grid = alt.Chart(cells).mark_rect(stroke="white", strokeWidth=2).encode(
        x=alt.X("level_name:O", sort=[f"{lv} {LEVEL_NAMES[lv]}" for lv in LEVELS], title="level",
                axis=alt.Axis(labelAngle=0)),
        y=y, color=alt.Color("fill:N", scale=alt.Scale(domain=domain, range=[colours[d] for d in domain]),
                             title="band"),
    ).properties(width=6 * 62, height=26 * len(order))
    scored = {key: bool(np.isfinite(score)) for key, score in zip(cells["key"], cells["score"], strict=True)}
    points = pd.DataFrame([{"key": c["key"], "points": _points_text(c["weighted"], c["weight"])
                            + ("" if scored[c["key"]] else " (no score)")} for c in categories])
    text = alt.Chart(points).mark_text(align="left", fontSize=12).encode(
        x=alt.value(6), y=alt.Y("key:N", sort=order, axis=None), text="points:N",
    ).properties(width=110 if not all(scored.values()) else 80, height=26 * len(order), title="weighted")
    return (alt.hconcat(grid, text, spacing=8).properties(title=title).resolve_scale(y="shared")
            .configure_view(stroke=None))
