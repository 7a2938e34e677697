"""Charts: geometry, data bounds, offline rendering and files written through the run folder."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest

from readiness.core.runfolder import RunFolder
from readiness.core.verdict import latency_check
from readiness.report import charts
from readiness.stats.latency import ecdf, histogram

CATS = [
    {"key": "reliability", "score": 5.0, "weight": 15, "weighted": 15.0},
    {"key": "performance", "score": 2.5, "weight": 10, "weighted": 5.0},
    {"key": "security", "score": 0.0, "weight": 15, "weighted": 0.0},
    {"key": "observability", "score": 5.0, "weight": 10, "weighted": 10.0},
]


def _latency(**overrides: list[Any]) -> pd.DataFrame:
    data: dict[str, list[Any]] = {
        "label": ["A1 /health", "A2 /health", "A7 /"], "p95_ms": [40.0, 130.0, 90.0],
        "ci_low_ms": [35.0, 110.0, math.nan], "ci_high_ms": [48.0, 160.0, math.nan],
        "threshold_ms": [120.0, 120.0, 120.0], "n": [200, 200, 12],
        "status": ["PASS", "INCONCLUSIVE", "INCONCLUSIVE"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def _layer_rows(spec: dict[str, Any], layer: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a layer's named dataset; a chart of one layer keeps its data at the top."""
    return spec["datasets"][layer.get("data", spec.get("data"))["name"]]


@pytest.fixture
def run(tmp_path: Path) -> RunFolder:
    (tmp_path / "run.json").write_text("{}\n")
    return RunFolder.open(tmp_path)


@pytest.fixture
def restore_renderer() -> Iterator[None]:
    before = alt.renderers.active
    yield
    alt.renderers.enable(before)


def test_radar_vertices_follow_the_polar_formula_and_close() -> None:
    points = charts.radar_coordinates(CATS)
    assert len(points) == 5
    assert points["key"].tolist() == ["reliability", "performance", "security", "observability", "reliability"]
    expected = [(0.0, 1.0), (0.5, 0.0), (0.0, 0.0), (-1.0, 0.0), (0.0, 1.0)]
    for (x, y), got_x, got_y in zip(expected, points["x"], points["y"], strict=True):
        assert got_x == pytest.approx(x, abs=1e-12) and got_y == pytest.approx(y, abs=1e-12)
    assert points["order"].tolist() == [0, 1, 2, 3, 4]


def test_radar_chart_draws_the_polygon_rings_and_labels() -> None:
    spec = charts.radar_chart(CATS).to_dict()
    lines = [layer for layer in spec["layer"] if layer["mark"]["type"] == "line"]
    polygon = [layer for layer in lines if "detail" not in layer["encoding"]]
    rings = [layer for layer in lines if "detail" in layer["encoding"]]
    assert len(polygon) == 1 and len(rings) == 1
    vertices = _layer_rows(spec, polygon[0])
    assert vertices[0]["x"] == vertices[-1]["x"] and vertices[0]["y"] == vertices[-1]["y"]
    assert vertices[1]["x"] == pytest.approx(0.5)
    ring_rows = _layer_rows(spec, rings[0])
    assert sorted({r["level"] for r in ring_rows}) == [1, 2, 3, 4, 5]
    assert len(ring_rows) == 5 * (len(CATS) + 1)
    outer = [r for r in ring_rows if r["level"] == 5]
    assert all(math.hypot(r["x"], r["y"]) == pytest.approx(1.0) for r in outer)
    texts = [r["text"] for layer in spec["layer"] if layer["mark"]["type"] == "text"
             for r in _layer_rows(spec, layer)]
    assert texts.count("performance (2.5)") == 3  # one dataset shared by three aligned text layers
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == [-1.25, 1.25]


@pytest.mark.parametrize(("categories", "message"), [
    ([*CATS[:3], {"key": "cost", "score": 7, "weight": 5}], "radar_chart: category 'cost' score 7 is outside 0-5"),
    ([*CATS[:3], {"key": "cost", "score": 1}], "radar_chart: category #3 is missing ['weight']"),
    ([*CATS[:3], dict(CATS[0])], "radar_chart: duplicate category keys ['reliability']"),
])
def test_radar_rejects_bad_input(categories: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        charts.radar_chart(categories)


def test_heatmap_has_six_cells_per_category_filled_up_to_the_score() -> None:
    cells = charts.heatmap_cells(CATS)
    assert len(cells) == len(CATS) * 6
    reached = cells[cells["reached"]].groupby("key").size().to_dict()
    assert reached == {"reliability": 6, "performance": 3, "security": 1, "observability": 6}
    fills = cells[cells["reached"]].groupby("key")["fill"].first().to_dict()
    assert fills == {"reliability": "Green", "performance": "Red", "security": "Red", "observability": "Green"}
    assert set(cells.loc[~cells["reached"], "fill"]) == {charts.NOT_REACHED}


def test_heatmap_chart_is_a_rect_grid_with_a_weighted_column() -> None:
    spec = charts.heatmap_chart(CATS).to_dict()
    grid, text = spec["hconcat"]
    assert grid["mark"]["type"] == "rect" and text["mark"]["type"] == "text"
    assert len(_layer_rows(spec, grid)) == len(CATS) * 6
    assert [r["points"] for r in _layer_rows(spec, text)] == ["15.0 / 15", "5.0 / 10", "0.0 / 15", "10.0 / 10"]
    assert grid["encoding"]["color"]["scale"]["domain"] == ["Green", "Yellow", "Red", "not reached"]


def test_grade_bands_follow_the_default_thresholds() -> None:
    assert [charts.grade_band(p) for p in (100, 90, 89.99, 75, 74.99, 0)] == [
        "Green", "Green", "Yellow", "Yellow", "Red", "Red"]
    assert charts.grade_band(80, [(95.0, "Green"), (50.0, "Red")]) == "Red"


def test_latency_chart_has_the_threshold_rule_and_error_bars_only_where_bounds_exist() -> None:
    spec = charts.latency_chart(_latency()).to_dict()
    rules = [layer for layer in spec["layer"] if layer["mark"]["type"] == "rule"]
    threshold = [layer for layer in rules if layer["encoding"]["x"]["field"] == "threshold_ms"]
    assert len(threshold) == 1 and _layer_rows(spec, threshold[0]) == [{"threshold_ms": 120.0}]
    bars = [layer for layer in rules if layer["encoding"]["x"]["field"] == "ci_low_ms"]
    assert bars[0]["transform"] == [{"filter": "datum.has_interval"}]
    rows = _layer_rows(spec, bars[0])
    assert [r["row"] for r in rows] == ["A1 /health (n=200)", "A2 /health (n=200)", "A7 / (n=12, no interval)"]
    assert [r["has_interval"] for r in rows] == [True, True, False]
    assert rows[2]["ci_low_ms"] is None  # NaN is not valid JSON
    assert spec["layer"][2]["encoding"]["color"]["scale"]["domain"] == ["PASS", "INCONCLUSIVE"]
    assert spec["title"]["text"] == "P95 latency with 90% interval"
    assert spec["layer"][2]["encoding"]["x"]["title"] == "latency (ms)"


def test_latency_chart_marks_each_threshold_when_they_differ() -> None:
    spec = charts.latency_chart(_latency(threshold_ms=[120.0, 150.0, 150.0])).to_dict()
    ticks = [layer for layer in spec["layer"] if layer["mark"]["type"] == "tick"]
    assert len(ticks) == 1 and ticks[0]["encoding"]["x"]["field"] == "threshold_ms"
    assert spec["title"]["subtitle"] == "red tick: threshold per row (ms)"


def test_latency_chart_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=re.escape("latency_chart: missing columns ['n', 'status']")):
        charts.latency_chart(_latency().drop(columns=["n", "status"]))
    big = pd.concat([_latency()] * 200, ignore_index=True)
    with pytest.raises(ValueError, match=re.escape(
            "latency_chart: 600 rows exceed the chart limit of 500; aggregate before charting")):
        charts.latency_chart(big)


def test_histogram_embeds_bins_not_samples() -> None:
    samples = np.random.default_rng(7).lognormal(3.5, 0.4, 100_000)
    spec = charts.histogram_chart(samples, bins=40, threshold_ms=120).to_dict()
    assert charts.embedded_rows(spec) == 41  # 40 bins + the threshold
    bars = _layer_rows(spec, spec["layer"][0])
    assert sum(r["count"] for r in bars) == 100_000
    assert spec["title"]["subtitle"] == "n = 100000 samples in 40 bins"
    with pytest.raises(ValueError, match=re.escape("histogram_chart: bins must be between 1 and 500, got 0")):
        charts.histogram_chart([1.0], bins=0)


def test_every_chart_stays_within_the_row_bound() -> None:
    eleven = [{"key": f"c{i}", "score": i % 6, "weight": 9, "weighted": i % 6 / 5 * 9} for i in range(11)]
    for chart in (charts.radar_chart(eleven), charts.heatmap_chart(eleven), charts.latency_chart(_latency())):
        assert 0 < charts.embedded_rows(chart.to_dict()) <= charts.MAX_CHART_ROWS
    assert alt.data_transformers.options.get("max_rows", 5000) == 5000


def test_offline_rendering_is_svg_and_idempotent(restore_renderer: None) -> None:
    charts.enable_offline_rendering()
    charts.enable_offline_rendering()
    assert alt.renderers.active == "svg"
    bundle = charts.radar_chart(CATS)._repr_mimebundle_()
    bundle = bundle[0] if isinstance(bundle, tuple) else bundle
    assert list(bundle) == ["image/svg+xml"]
    assert bundle["image/svg+xml"].startswith("<svg") and "reliability (5)" in bundle["image/svg+xml"]


def test_save_chart_writes_svg_and_spec_through_the_run_folder(run: RunFolder) -> None:
    chart = charts.heatmap_chart(CATS)
    paths = charts.save_chart(run, "readiness_heatmap", chart)
    assert paths == ["charts/readiness_heatmap.svg", "charts/readiness_heatmap.vl.json"]
    svg = run.path(paths[0]).read_text()
    assert svg.startswith("<svg") and "observability" in svg and "<script" not in svg
    assert json.loads(run.path(paths[1]).read_text()) == chart.to_dict()


def test_save_chart_refuses_bad_names_and_oversized_data(run: RunFolder) -> None:
    with pytest.raises(ValueError, match=re.escape(
            "chart name must be letters, digits, '_', '-' or '.', got '../escape'")):
        charts.save_chart(run, "../escape", charts.radar_chart(CATS))
    raw = alt.Chart(pd.DataFrame({"v": range(600)})).mark_tick().encode(x="v:Q")
    with pytest.raises(ValueError, match=re.escape(
            "chart 'raw' embeds 600 rows, more than 500; aggregate before charting")):
        charts.save_chart(run, "raw", raw)
    assert not (run.root / "charts").exists()


def test_embedded_rows_counts_named_and_inline_data() -> None:
    spec = {"datasets": {"a": [{}, {}], "b": [{}]}, "layer": [{"data": {"values": [1, 2, 3]}}, {"mark": "x"}]}
    assert charts.embedded_rows(spec) == 6


# --- degenerate data: what third-party targets produce -------------------------------------


def _saved_svg(run: RunFolder, name: str, chart: alt.TopLevelMixin) -> str:
    """The chart through the project's export path (vl-convert via save_chart), as SVG text."""
    svg_path, json_path = charts.save_chart(run, name, chart)
    svg = run.path(svg_path).read_text()
    assert svg.startswith("<svg") and "<script" not in svg
    assert "NaN" not in svg and "Infinity" not in svg  # no coordinate from a broken scale
    assert json.loads(run.path(json_path).read_text()) == chart.to_dict()
    return svg


def _recorded_latency_frame(run: RunFolder, samples: dict[str, list[float]]) -> pd.DataFrame:
    """The frame smoke.latency_frame and load.p95_chart build: checks recorded to disk (where
    NaN and inf become None) and read back, one row per endpoint."""
    run.record_checks("probe", [
        latency_check(id=f"probe.{label}.p95", phase="probe", title=f"{label} P95", app=label,
                      samples_ms=np.asarray(values, dtype=float), threshold_ms=120.0)
        for label, values in samples.items()])
    rows = [{"label": c.app, "p95_ms": c.observed, "ci_low_ms": c.ci_low, "ci_high_ms": c.ci_high,
             "threshold_ms": c.threshold, "n": c.n, "status": str(c.status)} for c in run.read_checks("probe")]
    return pd.DataFrame(rows).astype({"ci_low_ms": float, "ci_high_ms": float})


def _all_text(spec: dict[str, Any]) -> str:
    return json.dumps(spec, ensure_ascii=False)


def test_latency_chart_when_every_endpoint_went_unanswered_is_a_panel_naming_them(run: RunFolder) -> None:
    """01_smoke / 03_baseline_load against a dead service: no finite P95 anywhere."""
    frame = _recorded_latency_frame(run, {"A1.get": [math.inf] * 40, "A2.get": [math.inf] * 12})
    assert frame["p95_ms"].isna().all()  # what used to raise "p95_ms missing for [...]"
    chart = charts.latency_chart(frame, title="P95 under baseline load with 90% interval")
    spec = chart.to_dict()
    texts = [r["text"] for r in _layer_rows(spec, spec["layer"][0])]
    assert texts == ["no finite P95 to chart: requests unanswered or failed",
                     "endpoints: A1.get (n = 40), A2.get (n = 12)"]
    svg = _saved_svg(run, "smoke_latency", chart)
    assert "A1.get (n = 40), A2.get (n = 12)" in svg


def test_latency_chart_draws_the_endpoints_with_a_p95_and_names_the_others(run: RunFolder) -> None:
    ok = list(np.random.default_rng(0).permutation(np.linspace(20.0, 60.0, 200)))  # no trend in time
    frame = _recorded_latency_frame(run, {"A1.get": ok, "A2.get": [math.inf] * 40, "A3.get": ok[:10]})
    spec = charts.latency_chart(frame).to_dict()
    points = spec["layer"][2]
    assert [r["row"] for r in _layer_rows(spec, points)] == ["A1.get (n=200)", "A3.get (n=10, no interval)"]
    assert spec["title"]["subtitle"] == ["dashed red line: threshold (ms)",
                                         "no finite P95 (requests unanswered or failed): A2.get (n = 40)"]
    svg = _saved_svg(run, "load_p95", charts.latency_chart(frame))
    assert "A2.get (n = 40)" in svg and "A1.get (n=200)" in svg


def test_latency_chart_draws_an_open_interval_to_the_edge_when_unanswered_reach_the_upper_bound() -> None:
    frame = _latency(ci_high_ms=[48.0, math.inf, math.nan], p95_ms=[40.0, 130.0, 90.0])
    spec = charts.latency_chart(frame).to_dict()
    bars = spec["layer"][0]
    rows = _layer_rows(spec, bars)
    assert [r["row"] for r in rows] == ["A1 /health (n=200)", "A2 /health (n=200, upper bound ∞)",
                                        "A7 / (n=12, no interval)"]
    assert rows[1]["ci_high_ms"] is None and rows[1]["ci_high_drawn_ms"] == 130.0  # the largest finite value
    assert bars["encoding"]["x2"]["field"] == "ci_high_drawn_ms"
    shapes = spec["layer"][2]["encoding"]["shape"]["scale"]
    assert shapes["range"] == ["circle", "diamond", "triangle-right"]


def test_latency_chart_of_no_rows_or_no_threshold_still_draws() -> None:
    empty = charts.latency_chart(pd.DataFrame([])).to_dict()
    assert _layer_rows(empty, empty["layer"][0]) == [{"line": 0, "text": "no endpoint latency to chart (0 rows)"}]
    with_columns = charts.latency_chart(_latency().iloc[:0]).to_dict()
    assert "no endpoint latency to chart (0 rows)" in _all_text(with_columns)
    spec = charts.latency_chart(_latency(threshold_ms=[math.nan, math.inf, None])).to_dict()
    assert spec["title"]["subtitle"] == "no threshold given"


def test_latency_chart_still_refuses_code_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("latency_chart: missing columns ['p95_ms']")):
        charts.latency_chart(_latency().drop(columns=["p95_ms"]).iloc[:0])


def test_distributions_of_an_endpoint_that_never_answered_are_panels(run: RunFolder) -> None:
    """02_latency_profile: the warm profile of an endpoint whose requests all failed is only the
    open bin; it used to raise "histogram_bins_chart: no rows to chart"."""
    warm = np.full(40, math.inf)
    hist = histogram(warm, bins=40)
    assert hist["bin_low_ms"].tolist() == [math.inf]
    curves = pd.concat([ecdf(warm).assign(series="warm · direct"), ecdf(warm[:25]).assign(series="cold · direct")],
                       ignore_index=True)
    chart = alt.hconcat(
        charts.histogram_bins_chart(hist, threshold_ms=120.0, title=f"A1 get: warm profile (n={int(hist['count'].sum())})"),
        charts.ecdf_chart(curves, threshold_ms=120.0, title="A1 get: ECDF"))
    svg = _saved_svg(run, "latency_A1_get", chart)
    assert "no answered requests (n = 40)" in svg
    assert "no answered requests" in svg and "series: warm · direct, cold · direct" in svg
    with_n = charts.ecdf_chart(curves, n_sent={"warm · direct": 40, "cold · direct": 25}).to_dict()
    texts = [r["text"] for r in _layer_rows(with_n, with_n["layer"][0])]
    assert texts == ["no answered requests (n = 65)", "series: warm · direct (n = 40), cold · direct (n = 25)"]


def test_histogram_bins_chart_of_no_sample_says_how_many_were_sent() -> None:
    spec = charts.histogram_bins_chart(histogram([]), n_sent=12).to_dict()
    assert [r["text"] for r in _layer_rows(spec, spec["layer"][0])] == ["no answered requests (n = 12)"]
    spec = charts.histogram_bins_chart(pd.DataFrame([])).to_dict()
    assert [r["text"] for r in _layer_rows(spec, spec["layer"][0])] == ["no answered requests (n = 0)"]
    with pytest.raises(ValueError, match=re.escape("histogram_bins_chart: missing columns ['count']")):
        charts.histogram_bins_chart(pd.DataFrame({"bin_low_ms": [1.0], "bin_high_ms": [2.0]}))


def test_histogram_bins_chart_counts_the_open_bin_and_draws_the_rest(run: RunFolder) -> None:
    hist = histogram([10.0, 11.0, 30.0, math.inf, math.inf], bins=4)
    spec = charts.histogram_bins_chart(hist, threshold_ms=math.nan, n_sent=7).to_dict()
    assert spec["title"]["subtitle"] == "n = 5 samples in 4 bins; 2 without answer (of 7 sent)"
    assert len(spec["layer"]) == 1  # a threshold that is not a number has no place on the axis
    bars = spec["layer"][0]
    assert bars["encoding"]["y2"] == {"datum": 0}  # vertical bars from 0 up to the count
    assert sum(r["count"] for r in _layer_rows(spec, bars)) == 3
    _saved_svg(run, "hist_open_bin", charts.histogram_bins_chart(hist, threshold_ms=120.0))


def test_log_scale_histogram_and_ecdf_survive_zero_latencies(run: RunFolder) -> None:
    hist = histogram([0.0, 0.0, 5.0, 50.0, math.inf], bins=5, log=True)
    assert hist["bin_low_ms"].iloc[0] == 0.0
    spec = charts.histogram_bins_chart(hist, threshold_ms=120.0, log_scale=True).to_dict()
    bars = spec["layer"][0]
    assert bars["encoding"]["x"]["field"] == "drawn_low_ms"
    assert min(r["drawn_low_ms"] for r in _layer_rows(spec, bars)) > 0
    assert spec["title"]["subtitle"][1].startswith("bins from 0 ms drawn from ")
    zeros = charts.histogram_bins_chart(pd.DataFrame({"bin_low_ms": [0.0], "bin_high_ms": [0.0], "count": [3]}),
                                        log_scale=True).to_dict()
    assert zeros["title"]["subtitle"][1] == "log scale needs latencies above 0 ms: drawn on a linear scale"
    assert "scale" not in zeros["layer"][0]["encoding"]["x"] or zeros["layer"][0]["encoding"]["x"]["scale"] == {}
    curve = ecdf([0.0, 0.0, 4.0, 9.0]).assign(series="probe")
    ecdf_spec = charts.ecdf_chart(curve, log_scale=True, threshold_ms=0.0).to_dict()
    assert ecdf_spec["title"]["subtitle"] == "values at or below 0 ms not drawn on the log scale"
    assert all(r["value_ms"] > 0 for r in _layer_rows(ecdf_spec, ecdf_spec["layer"][0]))
    assert len(ecdf_spec["layer"]) == 1  # a threshold of 0 cannot sit on a log axis
    _saved_svg(run, "log_zero", alt.hconcat(charts.histogram_bins_chart(hist, log_scale=True),
                                            charts.ecdf_chart(curve, log_scale=True)))


def test_histogram_chart_leaves_out_what_is_not_a_latency_and_says_so(run: RunFolder) -> None:
    spec = charts.histogram_chart([None, math.nan, -3.0, 12.0, 14.0, math.inf], bins=2).to_dict()
    assert spec["title"]["subtitle"] == ["n = 3 samples in 2 bins; 1 without answer",
                                         "2 without a timing left out", "1 negative left out"]
    panel = charts.histogram_chart([None, math.nan, math.inf], n_sent=50)
    assert [r["text"] for r in _layer_rows(panel.to_dict(), panel.to_dict()["layer"][0])] == [
        "no answered requests (n = 50)", "2 without a timing left out"]
    assert "no answered requests (n = 0)" in _all_text(charts.histogram_chart([]).to_dict())
    svg = _saved_svg(run, "hist_unanswered", charts.histogram_chart([math.inf] * 9))
    assert "no answered requests (n = 9)" in svg


def test_ecdf_chart_names_series_without_answers_and_draws_the_others(run: RunFolder) -> None:
    curves = pd.concat([ecdf([math.inf] * 5).assign(series="A1 · warm"),
                        ecdf([1.0, 2.0, math.inf]).assign(series="A1 · cold")], ignore_index=True)
    chart = charts.ecdf_chart(curves, threshold_ms=120.0, n_sent={"A1 · warm": 5, "A1 · cold": 3, "A1 · flag": 8})
    spec = chart.to_dict()
    assert spec["title"]["subtitle"] == "no answered requests: A1 · warm (n = 5), A1 · flag (n = 8)"
    drawn = _layer_rows(spec, spec["layer"][0])
    assert {r["series"] for r in drawn} == {"A1 · cold"} and all(math.isfinite(r["value_ms"]) for r in drawn)
    assert "A1 · flag (n = 8)" in _saved_svg(run, "ecdf_mixed", chart)
    single = charts.ecdf_chart(ecdf([math.inf] * 4).assign(series="probe events"), n_sent=4).to_dict()
    assert [r["text"] for r in _layer_rows(single, single["layer"][0])] == ["no answered requests (n = 4)"]


def test_radar_with_one_or_two_categories_draws_circles_and_the_scores(run: RunFolder) -> None:
    one = charts.radar_coordinates(CATS[:1])
    assert one[["x", "y"]].to_numpy().tolist() == [[0.0, 1.0], [0.0, 1.0]]
    two = charts.radar_chart([CATS[1], {**CATS[2], "score": None}])
    spec = two.to_dict()
    rings = [layer for layer in spec["layer"] if layer["mark"]["type"] == "line" and "detail" in layer["encoding"]]
    assert len(_layer_rows(spec, rings[0])) == 5 * 73  # 72-gon per level, closed
    assert spec["title"]["subtitle"] == ["rings: levels 1-5", "no score (drawn at 0): security"]
    assert "security (no score)" in _all_text(spec)
    assert "performance (2.5)" in _saved_svg(run, "radar_two", two)
    assert charts.radar_coordinates([]).empty
    empty = charts.radar_chart([]).to_dict()
    assert _layer_rows(empty, empty["layer"][0])[0]["text"] == "no category to chart (0 categories)"


def test_heatmap_of_no_category_or_an_unscored_one_draws(run: RunFolder) -> None:
    cells = charts.heatmap_cells([{"key": "cost", "score": math.nan, "weight": 10, "weighted": math.nan}])
    assert not cells["reached"].any() and set(cells["fill"]) == {charts.NOT_REACHED}
    chart = charts.heatmap_chart([CATS[0], {"key": "cost", "score": None, "weight": 10, "weighted": None}])
    spec = chart.to_dict()
    assert [r["points"] for r in _layer_rows(spec, spec["hconcat"][1])] == ["15.0 / 15", "— / 10 (no score)"]
    assert "— / 10 (no score)" in _saved_svg(run, "heatmap_unscored", chart)
    empty = charts.heatmap_chart([])
    assert isinstance(empty, alt.HConcatChart)
    assert "no category to chart (0 categories)" in _saved_svg(run, "heatmap_empty", empty)


@pytest.mark.parametrize(("values", "bins"), [
    ([2.0**47], 40), ([5.0, 5.0 + 2**-50], 40), ([1e300, 1e300, math.inf], 40),
    ([0.0, sys.float_info.max], 3),  # the edges overflow while numpy computes them
    ([sys.float_info.max], 1),
])
def test_histogram_chart_of_values_too_close_to_split_draws_one_bin(values: list[float], bins: int,
                                                                    run: RunFolder) -> None:
    """numpy refuses bins narrower than the float spacing ("Too many bins for data range")
    and warns when their edges overflow; the chart then puts every answered value into one
    bin and says why."""
    chart = charts.histogram_chart(values, bins=bins)
    spec = chart.to_dict()
    answered = sum(math.isfinite(v) for v in values)
    assert sum(r["count"] for r in _layer_rows(spec, spec["layer"][0])) == answered
    assert spec["title"]["subtitle"][-1] == f"values too close together at this magnitude for {bins} bins: one bin"
    _saved_svg(run, "hist_too_close", chart)
