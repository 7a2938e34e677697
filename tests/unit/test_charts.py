"""Charts: geometry, data bounds, offline rendering and files written through the run folder."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest

from readiness import charts
from readiness.runfolder import RunFolder

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
    return spec["datasets"][layer["data"]["name"]]


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
    (CATS[:2], "radar_chart: needs at least 3 categories, got 2"),
    ([*CATS[:3], {"key": "cost", "score": 7, "weight": 5}], "radar_chart: category 'cost' score 7 is outside 0-5"),
    ([*CATS[:3], {"key": "cost", "score": 1}], "radar_chart: category #3 is missing ['weight']"),
    ([*CATS[:3], dict(CATS[0])], "radar_chart: duplicate category keys ['reliability']"),
    ([], "radar_chart: no rows to chart"),
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
    assert spec["title"]["text"] == "P95 latency with 95% interval"
    assert spec["layer"][2]["encoding"]["x"]["title"] == "latency (ms)"


def test_latency_chart_marks_each_threshold_when_they_differ() -> None:
    spec = charts.latency_chart(_latency(threshold_ms=[120.0, 150.0, 150.0])).to_dict()
    ticks = [layer for layer in spec["layer"] if layer["mark"]["type"] == "tick"]
    assert len(ticks) == 1 and ticks[0]["encoding"]["x"]["field"] == "threshold_ms"
    assert spec["title"]["subtitle"] == "red tick: threshold per row (ms)"


def test_latency_chart_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=re.escape("latency_chart: missing columns ['n', 'status']")):
        charts.latency_chart(_latency().drop(columns=["n", "status"]))
    with pytest.raises(ValueError, match=re.escape("latency_chart: p95_ms missing for ['A2 /health']")):
        charts.latency_chart(_latency(p95_ms=[40.0, math.nan, 90.0]))
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
    with pytest.raises(ValueError, match=re.escape("histogram_chart: no finite values to chart")):
        charts.histogram_chart([math.nan])
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
