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
    if n_rows == 0:
        raise ValueError(f"{what}: no rows to chart")
    if n_rows > MAX_CHART_ROWS:
        raise ValueError(f"{what}: {n_rows} rows exceed the chart limit of {MAX_CHART_ROWS}; "
                         "aggregate before charting")


def _status_scale(present: Iterable[str]) -> alt.Scale:
    """Fixed colour per verdict, legend limited to the verdicts actually shown."""
    shown = set(present)
    domain = [s for s in STATUS_COLOURS if s in shown] + sorted(shown - set(STATUS_COLOURS))
    return alt.Scale(domain=domain, range=[STATUS_COLOURS.get(s, "#000000") for s in domain])


def latency_chart(df: pd.DataFrame, *, title: str = "P95 latency with 95% interval") -> alt.LayerChart:
    """One row per app or endpoint: the P95 estimate, its 95% interval and the threshold.

    A row whose interval does not exist (too few samples for an order-statistic bound)
    is drawn as a faded diamond with "no interval" in its label, so nobody reads a bare
    point as a confident one. ``n`` is part of each row label because SVG output has no
    tooltips.
    """
    missing = [c for c in LATENCY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"latency_chart: missing columns {missing}")
    _check_rows("latency_chart", len(df))
    data = df.loc[:, list(LATENCY_COLUMNS)].copy()
    for col in ("p95_ms", "ci_low_ms", "ci_high_ms", "threshold_ms"):
        data[col] = pd.to_numeric(data[col], errors="coerce")
    if data["p95_ms"].isna().any():
        bad = data.loc[data["p95_ms"].isna(), "label"].tolist()
        raise ValueError(f"latency_chart: p95_ms missing for {bad}")
    data["status"] = data["status"].astype(str)
    data["has_interval"] = data["ci_low_ms"].notna() & data["ci_high_ms"].notna()
    data["row"] = [
        f"{label} (n={n})" if ok else f"{label} (n={n}, no interval)"
        for label, n, ok in zip(data["label"], data["n"], data["has_interval"], strict=True)
    ]
    data["interval"] = np.where(data["has_interval"], "95% interval", "no interval (n too small)")
    order = data["row"].tolist()
    y = alt.Y("row:N", sort=order, title=None)
    x_title = "latency (ms)"
    base = alt.Chart(data)
    status_scale = _status_scale(data["status"])
    points = base.mark_point(size=90, filled=True).encode(
        x=alt.X("p95_ms:Q", title=x_title), y=y,
        color=alt.Color("status:N", scale=status_scale, title="verdict"),
        shape=alt.Shape("interval:N", scale=alt.Scale(
            domain=["95% interval", "no interval (n too small)"], range=["circle", "diamond"]),
            title="P95 estimate"),
        opacity=alt.condition("datum.has_interval", alt.value(1.0), alt.value(0.45)),
    )
    bars = base.transform_filter("datum.has_interval").mark_rule(strokeWidth=2).encode(
        x=alt.X("ci_low_ms:Q", title=x_title), x2="ci_high_ms:Q", y=y,
        color=alt.Color("status:N", scale=status_scale),
    )
    thresholds = data["threshold_ms"].dropna().unique()
    legend = "dashed red line: threshold (ms)" if len(thresholds) == 1 else "red tick: threshold per row (ms)"
    if len(thresholds) == 1:
        limit = alt.Chart(pd.DataFrame({"threshold_ms": [float(thresholds[0])]})).mark_rule(
            color="#c62828", strokeDash=[6, 4], strokeWidth=1.5).encode(x="threshold_ms:Q")
    else:
        limit = base.transform_filter("isValid(datum.threshold_ms)").mark_tick(
            color="#c62828", thickness=2).encode(x="threshold_ms:Q", y=y)
    return alt.layer(bars, limit, points).properties(
        title=alt.TitleParams(title, subtitle=legend),
        width=460, height=max(60, 28 * len(data)))


def histogram_chart(values_ms: Iterable[float], *, bins: int = 40, threshold_ms: float | None = None,
                    title: str = "Latency distribution") -> alt.LayerChart:
    """Histogram of raw samples: binned by :func:`readiness.latency_stats.histogram` first, so
    the chart carries ``bins`` rows whether the endpoint was probed 200 or 200,000 times."""
    from readiness.latency_stats import histogram

    if not 1 <= bins <= MAX_CHART_ROWS:
        raise ValueError(f"histogram_chart: bins must be between 1 and {MAX_CHART_ROWS}, got {bins}")
    values = np.asarray([v for v in values_ms if v is not None], dtype=float)
    if not np.isfinite(values).any():
        raise ValueError("histogram_chart: no finite values to chart")
    return histogram_bins_chart(histogram(values, bins=bins), threshold_ms=threshold_ms, title=title)


def histogram_bins_chart(bins: pd.DataFrame, *, threshold_ms: float | None = None, log_scale: bool = False,
                         title: str = "Latency distribution") -> alt.LayerChart:
    """Bars from pre-binned counts (columns bin_low_ms, bin_high_ms, count).

    A final open bin (``bin_high_ms`` = inf: requests that got no answer) cannot be drawn
    on a latency axis; it is counted in the subtitle instead.
    """
    finite = bins[np.isfinite(bins.bin_high_ms)]
    _check_rows("histogram_bins_chart", len(finite))
    unanswered = int(bins[~np.isfinite(bins.bin_high_ms)]["count"].sum())
    scale = alt.Scale(type="log") if log_scale else alt.Scale()
    bars = alt.Chart(finite).mark_bar(color="#1565c0").encode(
        x=alt.X("bin_low_ms:Q", title="latency (ms)" + (", log scale" if log_scale else ""), scale=scale),
        x2="bin_high_ms:Q", y=alt.Y("count:Q", title="samples"))
    layers: list[alt.Chart] = [bars]
    if threshold_ms is not None:
        layers.append(alt.Chart(pd.DataFrame({"threshold_ms": [float(threshold_ms)]})).mark_rule(
            color="#c62828", strokeDash=[6, 4]).encode(x="threshold_ms:Q"))
    n = int(bins["count"].sum())
    subtitle = f"n = {n} samples in {len(finite)} bins" + (f"; {unanswered} without answer" if unanswered else "")
    return alt.layer(*layers).properties(title=alt.TitleParams(title, subtitle=subtitle), width=380, height=200)


def ecdf_chart(curves: pd.DataFrame, *, threshold_ms: float | None = None, log_scale: bool = False,
               title: str = "ECDF") -> alt.LayerChart:
    """Empirical CDFs on a fixed probability grid (columns p, value_ms, series): one line each.

    Infinite values (no answer) are left out of the line; the curve then stops short of 1,
    which is exactly what it should show.
    """
    data = curves[np.isfinite(curves.value_ms)]
    _check_rows("ecdf_chart", len(data))
    scale = alt.Scale(type="log") if log_scale else alt.Scale()
    lines = alt.Chart(data).mark_line(interpolate="step-after").encode(
        x=alt.X("value_ms:Q", title="latency (ms)" + (", log scale" if log_scale else ""), scale=scale),
        y=alt.Y("p:Q", title="share of requests ≤ x", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", columns=2)))
    layers: list[alt.Chart] = [lines]
    if threshold_ms is not None:
        layers.append(alt.Chart(pd.DataFrame({"threshold_ms": [float(threshold_ms)]})).mark_rule(
            color="#c62828", strokeDash=[6, 4]).encode(x="threshold_ms:Q"))
    return alt.layer(*layers).properties(title=title, width=380, height=200)


def _validated_categories(what: str, categories: Sequence[Mapping[str, Any]],
                          fields: tuple[str, ...]) -> list[dict[str, Any]]:
    _check_rows(what, len(categories))
    rows: list[dict[str, Any]] = []
    for i, cat in enumerate(categories):
        missing = [f for f in fields if f not in cat]
        if missing:
            raise ValueError(f"{what}: category #{i} is missing {missing}")
        score = float(cat["score"])
        if not 0.0 <= score <= 5.0:
            raise ValueError(f"{what}: category {cat['key']!r} score {cat['score']} is outside 0-5")
        rows.append({**{f: cat[f] for f in fields}, "score": score})
    keys = [r["key"] for r in rows]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"{what}: duplicate category keys {duplicates}")
    return rows


def radar_coordinates(categories: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Vertices of the score polygon, closed: the first vertex is repeated at the end.

    Category ``i`` of ``k`` sits at angle θ = 2πi/k measured clockwise from the top, at
    radius r = score/5, so x = r·sin θ and y = r·cos θ.
    """
    rows = _validated_categories("radar_chart", categories, ("key", "score", "weight"))
    if len(rows) < 3:
        raise ValueError(f"radar_chart: needs at least 3 categories, got {len(rows)}")
    k = len(rows)
    points = []
    for order, i in enumerate([*range(k), 0]):
        theta = 2 * math.pi * i / k
        r = rows[i]["score"] / 5.0
        points.append({"order": order, "key": rows[i]["key"], "score": rows[i]["score"],
                       "weight": rows[i]["weight"], "x": r * math.sin(theta), "y": r * math.cos(theta)})
    return pd.DataFrame(points)


def radar_chart(categories: Sequence[Mapping[str, Any]], *, title: str = "Readiness by category (0-5)"
                ) -> alt.LayerChart:
    """Radar drawn from computed polar coordinates: rings per level, spokes, the score polygon.

    Vega-Lite has no polar line mark, so the geometry is computed here; that also keeps
    the drawn shape testable as plain numbers.
    """
    polygon = radar_coordinates(categories)
    k = len(polygon) - 1
    angles = [2 * math.pi * i / k for i in range(k)]
    rings = pd.DataFrame([
        {"level": level, "order": j, "x": level / 5 * math.sin(angles[j % k]), "y": level / 5 * math.cos(angles[j % k])}
        for level in LEVELS[1:] for j in range(k + 1)])
    spokes = pd.DataFrame({"x": 0.0, "y": 0.0, "x2": [math.sin(a) for a in angles],
                           "y2": [math.cos(a) for a in angles]})
    label_r = 1.12
    labels = pd.DataFrame({
        "text": [f"{row.key} ({row.score:g})" for row in polygon.iloc[:k].itertuples()],
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
    return alt.layer(grid, spoke, shape, vertices, *texts).properties(
        title=alt.TitleParams(title, subtitle="rings: levels 1-5"), width=380, height=380,
        padding={"left": 140, "right": 140, "top": 10, "bottom": 10}).configure_view(stroke=None)


def grade_band(percent: float, bands: Sequence[tuple[float, str]] = DEFAULT_GRADE_BANDS) -> str:
    """Name of the first band whose lower bound ``percent`` reaches (bands high to low)."""
    for lower, name in sorted(bands, key=lambda b: b[0], reverse=True):
        if percent >= lower:
            return name
    return sorted(bands, key=lambda b: b[0])[0][1]


def heatmap_cells(categories: Sequence[Mapping[str, Any]],
                  bands: Sequence[tuple[float, str]] = DEFAULT_GRADE_BANDS) -> pd.DataFrame:
    """One row per category × level 0-5; a cell is coloured by the category's band once reached."""
    rows = _validated_categories("heatmap_chart", categories, ("key", "score", "weight", "weighted"))
    cells = []
    for cat in rows:
        band = grade_band(cat["score"] / 5 * 100, bands)
        for level in LEVELS:
            reached = cat["score"] >= level
            cells.append({"key": cat["key"], "level": level, "level_name": f"{level} {LEVEL_NAMES[level]}",
                          "score": cat["score"], "reached": reached, "fill": band if reached else NOT_REACHED})
    return pd.DataFrame(cells)


def heatmap_chart(categories: Sequence[Mapping[str, Any]], *,
                  bands: Sequence[tuple[float, str]] = DEFAULT_GRADE_BANDS,
                  title: str = "Readiness heatmap: level reached per category") -> alt.HConcatChart:
    """Rect chart over categories × levels, with the weighted points as a text column."""
    cells = heatmap_cells(categories, bands)
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
    points = pd.DataFrame([{"key": c["key"], "points": f"{float(c['weighted']):.1f} / {float(c['weight']):g}"}
                           for c in categories])
    text = alt.Chart(points).mark_text(align="left", fontSize=12).encode(
        x=alt.value(6), y=alt.Y("key:N", sort=order, axis=None), text="points:N",
    ).properties(width=80, height=26 * len(order), title="weighted")
    return (alt.hconcat(grid, text, spacing=8).properties(title=title).resolve_scale(y="shared")
            .configure_view(stroke=None))
