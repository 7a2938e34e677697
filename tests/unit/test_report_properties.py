"""Charts, tables and number formatting never crash on the shape of the data, and never print 'nan'.

Third-party targets produce what the sandbox never does: no rows, every request failed or
timed out (+inf everywhere), values recorded as None, a single row, negative latencies from
a clock that went backwards, absurdly large numbers. Hypothesis generates frames with the
columns the phase modules pass (smoke/load: one row per endpoint from recorded checks;
latency_report/load/telemetry_sampling: histogram bins and ECDF grids from
``readiness.stats.latency``; ers: scored categories) and checks that every chart still
serializes to strict JSON within the row bound and names what it could not draw, and that
every report string is free of ``nan``. Rendering through vl-convert is slow, so it is done
in the explicit examples at the end rather than for every generated case.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readiness.core.check import COMPARATORS, Check, Status
from readiness.core.runfolder import RunFolder
from readiness.report import charts
from readiness.report.markdown import checks_frame, checks_table, fmt_interval, fmt_num, md_table, status_line
from readiness.stats.formatting import format_against, format_number, format_percent, format_ratio
from readiness.stats.latency import ecdf, histogram

PROPERTY = settings(max_examples=40, deadline=None, database=None)
SPECIAL = [0.0, -0.0, -1.0, 1e-9, 0.5, 120.0, 1e300, -1e300, math.inf, -math.inf, math.nan]
# Anything a caller may hand over where a number is expected, the awkward cases made likely.
NUMBERS = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=True, allow_infinity=True), st.none())
# Latencies as a timer records them (microsecond resolution, up to about eleven days), plus
# the values that break charts: 0 (no log axis), +inf (no answer). Far larger or closer-packed
# values make readiness.stats.latency.histogram itself refuse to bin (numpy: "Too many bins
# for data range"); histogram_chart is tested against those with NUMBERS below.
LATENCIES = st.one_of(st.sampled_from([0.0, 0.001, 5.0, 119.9, 120.0, 1e9, math.inf]),
                      st.integers(0, 10**12).map(lambda us: us / 1000))
UNWORDS = re.compile(r"\b(?:nan|NaN|None|inf)\b")


def _strict(spec: dict[str, Any]) -> str:
    """The spec as strict JSON (no NaN or Infinity token, which Vega cannot read)."""
    text = json.dumps(spec, allow_nan=False, ensure_ascii=False)
    assert charts.embedded_rows(spec) <= charts.MAX_CHART_ROWS
    return text


def _panel_lines(spec: dict[str, Any]) -> list[str] | None:
    """The lines of a no-data panel, or None when the chart is not one."""
    layers = spec.get("layer", [])
    if len(layers) != 1 or layers[0]["mark"]["type"] != "text":
        return None
    return [row["text"] for row in spec["datasets"][spec["data"]["name"]]]


def _drawn(spec: dict[str, Any], field: str) -> list[Any]:
    """Values of ``field`` in the dataset of the first layer that encodes it on x."""
    for layer in spec["layer"]:
        if layer["encoding"].get("x", {}).get("field") == field:
            name = layer.get("data", spec.get("data"))["name"]
            return [row[field] for row in spec["datasets"][name]]
    raise AssertionError(f"no layer draws {field}")


# --- latency_chart: one row per endpoint, as smoke.latency_frame and load.p95_chart build it --

@st.composite
def latency_frames(draw: st.DrawFn) -> pd.DataFrame:
    shape = draw(st.sampled_from(["mixed", "all +inf", "all NaN", "all None", "all finite"]))
    rows = []
    for i in range(draw(st.integers(0, 8))):
        p95 = {"mixed": draw(NUMBERS), "all +inf": math.inf, "all NaN": math.nan, "all None": None,
               "all finite": draw(st.floats(-1e300, 1e300))}[shape]
        rows.append({"label": f"A{i}.get", "p95_ms": p95, "ci_low_ms": draw(NUMBERS), "ci_high_ms": draw(NUMBERS),
                     "threshold_ms": draw(NUMBERS), "n": draw(st.one_of(st.none(), st.integers(0, 10**6))),
                     "status": draw(st.sampled_from([*(s.value for s in Status), None]))})
    if not rows and draw(st.booleans()):
        return pd.DataFrame([])  # what pd.DataFrame(records) gives when no check was recorded
    return pd.DataFrame(rows, columns=list(charts.LATENCY_COLUMNS))


@PROPERTY
@given(frame=latency_frames())
def test_latency_chart_draws_finite_p95s_and_names_every_other_row(frame: pd.DataFrame) -> None:
    spec = charts.latency_chart(frame).to_dict()
    text = _strict(spec)
    p95 = pd.to_numeric(frame.get("p95_ms", pd.Series(dtype=float)), errors="coerce").astype(float)
    finite = np.isfinite(p95.to_numpy())
    missing = [f"{row.label} (n = {'?' if pd.isna(row.n) else int(row.n)})"
               for row, ok in zip(frame.itertuples(), finite, strict=True) if not ok]
    if finite.any():
        assert sorted(_drawn(spec, "p95_ms")) == sorted(p95[finite].tolist())
    else:
        assert _panel_lines(spec) is not None
    for name in missing:
        assert name in text


# --- histograms: raw samples, and bins from latency_stats.histogram --------------------------

@PROPERTY
@given(values=st.lists(NUMBERS, max_size=60), bins=st.integers(1, 40), threshold=NUMBERS,
       n_sent=st.one_of(st.none(), st.integers(0, 10**6)))
def test_histogram_chart_bins_what_it_can_and_says_no_answer_otherwise(
        values: list[float | None], bins: int, threshold: float | None, n_sent: int | None) -> None:
    spec = charts.histogram_chart(values, bins=bins, threshold_ms=threshold, n_sent=n_sent).to_dict()
    _strict(spec)
    usable = [v for v in values if v is not None and not math.isnan(v) and v >= 0]
    answered = sum(math.isfinite(v) for v in usable)
    if answered:
        assert sum(_layer_counts(spec)) == answered
    else:
        lines = _panel_lines(spec)
        assert lines is not None and lines[0] == charts.no_answer_text(len(values) if n_sent is None else n_sent)


def _layer_counts(spec: dict[str, Any]) -> list[float]:
    bars = spec["layer"][0]
    return [row["count"] for row in spec["datasets"][bars.get("data", spec.get("data"))["name"]]]


@PROPERTY
@given(samples=st.lists(LATENCIES, max_size=60), bins=st.integers(1, 40), log=st.booleans(),
       log_scale=st.booleans(), threshold=NUMBERS)
def test_histogram_bins_chart_of_any_histogram_serializes(samples: list[float], bins: int, log: bool,
                                                          log_scale: bool, threshold: float | None) -> None:
    hist = histogram(samples, bins=bins, log=log)
    spec = charts.histogram_bins_chart(hist, threshold_ms=threshold, log_scale=log_scale).to_dict()
    _strict(spec)
    answered = sum(math.isfinite(v) for v in samples)
    if not answered:
        assert _panel_lines(spec) == [charts.no_answer_text(len(samples))]
        return
    x = spec["layer"][0]["encoding"]["x"]
    drawn = _drawn(spec, x["field"])
    if x.get("scale", {}).get("type") == "log":
        assert all(v > 0 for v in drawn)  # nothing at 0 or below on a log axis
    assert all(math.isfinite(v) for v in drawn)


# --- ECDFs: one grid per series, as latency_report, load and telemetry_sampling pass them ----

@PROPERTY
@given(series=st.dictionaries(st.sampled_from(["warm · direct", "cold · direct", "flag on", "probe events"]),
                              st.lists(LATENCIES, max_size=30), max_size=4),
       give_n=st.booleans(), log_scale=st.booleans(), threshold=NUMBERS)
def test_ecdf_chart_names_every_series_without_an_answer(series: dict[str, list[float]], give_n: bool,
                                                         log_scale: bool, threshold: float | None) -> None:
    frames = [ecdf(v).assign(series=name) for name, v in series.items()]
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(charts.ECDF_COLUMNS))
    n_sent = {name: len(v) for name, v in series.items()} if give_n else None
    spec = charts.ecdf_chart(curves, threshold_ms=threshold, log_scale=log_scale, n_sent=n_sent).to_dict()
    text = _strict(spec)
    silent = [name for name, v in series.items() if not any(math.isfinite(x) for x in v)]
    # A series with no sample has no ECDF row to carry its name; only n_sent can name it.
    known = [name for name in silent if give_n or series[name]]
    if len(silent) == len(series):
        lines = _panel_lines(spec)
        assert lines is not None and lines[0].startswith(charts.NO_ANSWER)
        if len(known) > 1:
            assert all(name in text for name in known)
        if give_n:
            assert lines[0] == charts.no_answer_text(sum(len(v) for v in series.values()))
    else:
        for name in known:
            assert (f"{name} (n = {len(series[name])})" if give_n else name) in text


# --- radar and heatmap: scored categories as ers passes them ----------------------------------

@st.composite
def categories(draw: st.DrawFn) -> list[dict[str, Any]]:
    scores = st.one_of(st.integers(0, 5), st.floats(0.0, 5.0), st.sampled_from([None, math.nan, math.inf]))
    return [{"key": f"c{i}", "score": draw(scores), "weight": draw(st.integers(0, 30)),
             "weighted": draw(NUMBERS)} for i in range(draw(st.integers(0, 7)))]


@PROPERTY
@given(cats=categories())
def test_radar_and_heatmap_draw_any_number_of_categories(cats: list[dict[str, Any]]) -> None:
    radar, heat = charts.radar_chart(cats).to_dict(), charts.heatmap_chart(cats).to_dict()
    radar_text, heat_text = _strict(radar), _strict(heat)
    assert UNWORDS.search(radar_text) is None and UNWORDS.search(heat_text) is None
    for cat in cats:
        scored = cat["score"] is not None and math.isfinite(cat["score"])
        assert (f"{cat['key']} ({float(cat['score']):g})" if scored else f"{cat['key']} (no score)") in radar_text
    if not cats:
        assert "no category to chart (0 categories)" in radar_text and "no category to chart" in heat_text


# --- report tables and number formatting ------------------------------------------------------

UNITS = st.sampled_from(["ms", "ratio", "rate", "", "requests", "s"])
# Free text without the letters of 'nan' and 'inf', so that any such word in the output came
# from formatting a number, not from the text itself.
SAFE_TEXT = st.text(alphabet="abcdeghjklmopqrstuvwxyz ABC|<>\n.-", max_size=24)


@st.composite
def checks(draw: st.DrawFn) -> Check:
    return Check(id=f"probe.A{draw(st.integers(0, 9))}.p95", phase="probe", title="t",
                 status=draw(st.sampled_from(list(Status))),
                 observed=draw(st.one_of(NUMBERS, st.integers(-10, 10**9), st.sampled_from(["200", "open"]))),
                 ci_low=draw(NUMBERS), ci_high=draw(NUMBERS),
                 threshold=draw(st.one_of(NUMBERS, st.sampled_from(["200"]))),
                 comparator=draw(st.sampled_from(COMPARATORS)), unit=draw(UNITS),
                 n=draw(st.one_of(st.none(), st.integers(0, 10**6))), detail=draw(SAFE_TEXT))


@PROPERTY
@given(items=st.lists(checks(), max_size=6))
def test_checks_tables_never_print_nan_none_or_inf(items: list[Check]) -> None:
    table = checks_table(items)
    assert UNWORDS.search(table) is None
    assert len(table.splitlines()) == 2 + len(items)
    frame = checks_frame(items)
    assert list(frame.index) == [c.id for c in items]
    assert UNWORDS.search(frame.to_string()) is None
    for check in items:
        assert UNWORDS.search(fmt_interval(check)) is None
    assert UNWORDS.search(status_line(items)) is None


@PROPERTY
@given(value=st.one_of(NUMBERS, st.integers(), st.just(np.float32(math.nan)), st.just(np.float64(-math.inf))),
       unit=UNITS, digits=st.integers(0, 4))
def test_fmt_num_shows_missing_as_a_dash_and_infinity_as_a_symbol(value: Any, unit: str, digits: int) -> None:
    text = fmt_num(value, unit, digits)
    assert UNWORDS.search(text) is None
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        assert text == "—"
    elif isinstance(value, float | np.floating) and math.isinf(value):
        assert text.startswith("∞" if value > 0 else "−∞")
    elif isinstance(value, float) and unit not in ("ratio", "rate"):
        assert text == f"{value:.{digits}f} {unit}".strip()  # finite numbers print as they always did


@PROPERTY
@given(rows=st.lists(st.lists(st.one_of(NUMBERS, st.integers(), SAFE_TEXT), min_size=3, max_size=3), max_size=5))
def test_md_table_cells_never_print_nan_none_or_inf(rows: list[list[Any]]) -> None:
    table = md_table(["a", "b", "c"], rows)
    assert UNWORDS.search(table) is None
    assert len(table.splitlines()) == 2 + len(rows)


@PROPERTY
@given(x=NUMBERS, versus=NUMBERS)
def test_number_formatters_never_print_nan(x: float | None, versus: float | None) -> None:
    for text in (format_number(x), format_percent(x), format_percent(x, versus), format_ratio(x),
                 format_against(x, versus), format_against(x, versus, format_ratio)):
        assert "nan" not in text.lower() and "None" not in text
        assert text == "—" if x is None or math.isnan(x) else text != "—"


# --- the export path: vl-convert renders every degenerate shape to a valid SVG ---------------

def _frame(**columns: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(columns, columns=list(charts.LATENCY_COLUMNS))


RENDERED: dict[str, alt.TopLevelMixin] = {
    "latency_single_row": charts.latency_chart(_frame(
        label=["A1.get"], p95_ms=[0.0], ci_low_ms=[0.0], ci_high_ms=[0.0], threshold_ms=[120.0], n=[59],
        status=["PASS"])),
    "latency_negative_and_huge": charts.latency_chart(_frame(
        label=["A1.get", "A2.get", "A3.get"], p95_ms=[-5.0, 1e300, math.nan], ci_low_ms=[-9.0, 1e299, None],
        ci_high_ms=[-1.0, math.inf, None], threshold_ms=[120.0, 150.0, None], n=[200, 400, 40],
        status=["PASS", "FAIL", None])),
    "latency_all_inf": charts.latency_chart(_frame(
        label=["A1.get"], p95_ms=[math.inf], ci_low_ms=[math.inf], ci_high_ms=[math.inf], threshold_ms=[120.0],
        n=[40], status=["FAIL"])),
    "hist_single_value": charts.histogram_chart([7.0]),
    "hist_huge": charts.histogram_chart([0.0, 1e300, math.inf], threshold_ms=1e308),
    "hist_log_only_open_bin": charts.histogram_bins_chart(histogram([math.inf] * 3, log=True), log_scale=True),
    "ecdf_single_sample": charts.ecdf_chart(ecdf([3.0]).assign(series="one"), threshold_ms=-1.0),
    "ecdf_all_nan": charts.ecdf_chart(pd.DataFrame({"p": [math.nan], "value_ms": [math.nan], "series": [None]})),
    "radar_single": charts.radar_chart([{"key": "only", "score": 5, "weight": 100}]),
}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_degenerate_charts_render_to_svg_through_save_chart(name: str, tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}\n")
    run = RunFolder.open(tmp_path)
    chart = RENDERED[name]
    svg_path, _ = charts.save_chart(run, name, chart)
    svg = run.path(svg_path).read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert re.search(r"\b(?:nan|NaN|Infinity)\b", svg) is None  # no coordinate or text from a broken value
    panel = _panel_lines(chart.to_dict())
    for line in panel or []:
        assert line.replace("&", "&amp;") in svg
