"""A8 tiles computed from a real store file: synthetic revenue, demo mode, windows, exports, the page."""

from __future__ import annotations

import datetime as dt
import types
import uuid
from pathlib import Path
from typing import Any

import pytest

from sandbox.apps import a8_dashboard, a8_tile_exports, a8_tiles
from sandbox.common.knobs import Flags
from sandbox.common.sqlite import Database
from sandbox.telemetry.store import SCHEMA as STORE_SCHEMA
from sandbox.telemetry.store import EventScope, TelemetryStore


@pytest.fixture
def ctx(tmp_path: Path) -> types.SimpleNamespace:
    db = Database(tmp_path / "a8.sqlite", STORE_SCHEMA + a8_tiles.SCHEMA)
    context = types.SimpleNamespace(db=db, flags=Flags(), services={})
    a8_tiles.seed(context)  # type: ignore[arg-type]
    context.services["store"] = TelemetryStore(db, 900.0)
    yield context
    db.close()


def event(event_type: str, app_id: str = "A5", ago_s: float = 0.0, **fields: Any) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago_s)
    return {"event_type": event_type, "timestamp": stamp.isoformat(), "app_id": app_id,
            "trace_id": uuid.uuid4().hex, "idempotency_key": uuid.uuid4().hex, **fields}


def revenue(cents: Any, *, mode: str = "live", ago_s: float = 0.0, **tags: Any) -> dict[str, Any]:
    return event("revenue_settled", ago_s=ago_s, tags=tags,
                 finance_metrics={"amount_cents": cents, "currency": "usd", "stripe_mode": mode})


def tiles(ctx: types.SimpleNamespace, demo: bool) -> dict[str, dict[str, Any]]:
    ctx.flags.update({"a8_demo_mode": demo})
    return {t["id"]: t for t in a8_tiles.all_tiles(ctx, ctx.services["store"])["tiles"]}


# One event per synthetic rule, two business events, one too old to count.
REVENUE = [
    (revenue(1, namespace="simulated_audit"), True),
    (revenue(2, test_run="true"), True),
    (revenue(4, test_run=True), True),
    (revenue(8, mode="test"), True),
    (revenue(16), False),
    (revenue(32, test_run="false", namespace="prod"), False),
    (revenue(64, ago_s=2 * 86_400), None),
]


def test_revenue_tiles_follow_the_demo_flag(ctx: types.SimpleNamespace) -> None:
    ctx.services["store"].ingest([e for e, _ in REVENUE], "test")
    business = [e["trace_id"] for e, synthetic in REVENUE if synthetic is False]
    every = [e["trace_id"] for e, synthetic in REVENUE if synthetic is not None]

    off = tiles(ctx, demo=False)
    assert off["finance_revenue_live"]["value"] == 63  # the leak: simulated revenue counted as business
    assert off["finance_revenue_live"]["labels"] == []
    assert sorted(off["finance_revenue_live"]["recent_trace_ids"]) == sorted(every)

    on = tiles(ctx, demo=True)
    live = on["finance_revenue_live"]
    assert (live["value"], live["unit"], live["window_s"]) == (48, "cents", 86_400.0)
    assert sorted(live["recent_trace_ids"]) == sorted(business)
    assert live["breakdown"]["simulated_excluded_cents"] == 15
    assert live["breakdown"]["simulated_excluded_events"] == 4
    assert live["labels"] == ["DEMO — simulated revenue", "simulated revenue excluded: 15 cents"]

    for state in (off, on):
        diag = state["finance_revenue_diagnostics"]
        assert diag["value"] == 63
        assert diag["breakdown"]["by_namespace"] == {"none": 30, "prod": 32, "simulated_audit": 1}
        assert diag["breakdown"]["by_stripe_mode"] == {"live": 55, "test": 8}
        assert (diag["breakdown"]["synthetic_cents"], diag["breakdown"]["business_cents"]) == (15, 48)
    assert on["finance_revenue_diagnostics"]["labels"][-1] == "DEMO — simulated revenue: 15 cents labelled simulated"


def test_export_rows_are_labelled_only_in_demo_mode(ctx: types.SimpleNamespace) -> None:
    ctx.services["store"].ingest([e for e, _ in REVENUE], "test")
    expected = {e["trace_id"]: synthetic for e, synthetic in REVENUE if synthetic is not None}
    ctx.flags.update({"a8_demo_mode": True})
    diag = a8_tile_exports.export_body(ctx, "finance_revenue_diagnostics")
    assert {r["trace_id"]: r["synthetic"] for r in diag["rows"]} == expected
    assert {r["label"] for r in diag["rows"] if r["synthetic"]} == {"simulated"}
    live = a8_tile_exports.export_body(ctx, "finance_revenue_live")
    assert {r["trace_id"] for r in live["rows"]} == {t for t, s in expected.items() if not s}
    ctx.flags.update({"a8_demo_mode": False})
    assert {r["label"] for r in a8_tile_exports.export_body(ctx, "finance_revenue_diagnostics")["rows"]} == {""}
    assert a8_tile_exports.export_body(ctx, "no_such_tile") is None


def test_a_string_amount_is_counted_apart_not_added(ctx: types.SimpleNamespace) -> None:
    ctx.services["store"].ingest([revenue("50"), revenue(7)], "test")
    live = tiles(ctx, demo=False)["finance_revenue_live"]
    assert (live["value"], live["breakdown"]["non_numeric_amounts"], live["breakdown"]["events"]) == (7, 1, 2)


def test_growth_signups_counts_signup_true_only(ctx: types.SimpleNamespace) -> None:
    earlier = event("identity_ok", "A1", ago_s=5, signup=True)
    signup = event("identity_ok", "A1", signup=True, user_id="u1")
    synthetic = event("identity_ok", "A1", signup=True, tags={"test_run": "true"})
    ctx.services["store"].ingest([
        earlier, signup, synthetic,
        event("identity_ok", "A1", signup=False), event("identity_ok", "A1", signup="true"),
        event("identity_ok", "A1", ago_s=7200, signup=True),
    ], "test")
    tile = tiles(ctx, demo=False)["growth_signups"]
    assert (tile["value"], tile["unit"], tile["window_s"]) == (3, "signups", 3600.0)
    assert tile["breakdown"] == {"signups": 3, "logins": 2, "synthetic_signups": 1}
    assert tile["recent_trace_ids"][-1] == earlier["trace_id"]  # newest first
    assert set(tile["recent_trace_ids"]) == {earlier["trace_id"], signup["trace_id"], synthetic["trace_id"]}


def test_b2b_billing_sums_provider_fees_and_markup_from_a6(ctx: types.SimpleNamespace) -> None:
    billed = [event("provider_usage_billed", "A6", finance_metrics={"provider_fee_cents": f, "ai_markup_cents": m},
                    tags=tags) for f, m, tags in ((30, 120, {}), (3, 12, {"namespace": "simulated_audit"}))]
    ignored = [event("provider_usage_billed", "A5", finance_metrics={"provider_fee_cents": 999}),
               event("provider_listing_published", "A6", finance_metrics=None)]
    ctx.services["store"].ingest([*billed, *ignored], "test")
    tile = tiles(ctx, demo=True)["b2b_billing"]
    assert tile["value"] == 165
    assert tile["breakdown"] == {"provider_fee_cents": 33, "ai_markup_cents": 132, "events": 2, "synthetic_events": 1,
                                 "by_event_type": {"provider_usage_billed": 2}, "non_numeric_amounts": 0}
    assert sorted(tile["recent_trace_ids"]) == sorted(e["trace_id"] for e in billed)


def test_operational_tiles_keep_their_values_and_gain_the_contract_keys(ctx: types.SimpleNamespace) -> None:
    store = ctx.services["store"]
    bad = event("http_request", "A3", status=503, latency_ms=40.0)
    store.ingest([event("http_request", "A3", status=200, latency_ms=10.0), bad,
                  event("http_request", "A4", status=200, latency_ms=20.0)], "test")
    by_id = tiles(ctx, demo=False)
    assert list(by_id) == [d[0] for d in a8_tiles.TILE_DEFS]
    keys = {"id", "title", "metric", "value", "unit", "window_s", "updated_at", "recent_trace_ids", "breakdown",
            "labels"}
    assert all(keys <= set(t) for t in by_id.values())
    assert (by_id["requests_per_app"]["value"], by_id["requests_per_app"]["values"]) == (3, {"A3": 2, "A4": 1})
    assert (by_id["errors_per_app"]["value"], by_id["errors_per_app"]["recent_trace_ids"]) == (1, [bad["trace_id"]])
    assert by_id["p95_ms_per_app"]["value"] == by_id["p95_ms_per_app"]["values"]["A3"] == 38.5
    assert by_id["telemetry_acceptance"]["value"] == 1.0


def test_scope_fields_must_be_json_paths_or_derived() -> None:
    from sandbox.telemetry.store import _field

    with pytest.raises(ValueError) as err:
        _field("amount", "finance_metrics.amount_cents; DROP TABLE events")
    assert str(err.value) == ("field amount: source must be a JSON path like $.tags.namespace or one of "
                              "['synthetic']")
    with pytest.raises(ValueError, match="field name must be lower_snake_case, got 'Amount'"):
        _field("Amount", "$.a")
    assert EventScope(event_type="x", condition="status >= 500").where(5.0) == (
        "WHERE ts_epoch >= ? AND event_type = ? AND (status >= 500)", [5.0, "x"])


@pytest.mark.parametrize("scope", [a8_tiles.SIGNUPS, a8_tiles.REVENUE, a8_tiles.BUSINESS_REVENUE, a8_tiles.BILLING,
                                   a8_tiles.SERVER_ERRORS])
def test_every_tile_scope_is_an_indexed_range_search(ctx: types.SimpleNamespace, scope: EventScope) -> None:
    where, params = scope.where(0.0)
    plan = " ".join(r["detail"] for r in ctx.db.query(f"EXPLAIN QUERY PLAN SELECT trace_id FROM events {where}",
                                                      params))
    assert plan.startswith("SEARCH events USING INDEX events_"), plan
    assert "ts_epoch>?" in plan, plan


def test_csv_writes_booleans_and_missing_values_plainly() -> None:
    rows = [{"trace_id": "t1", "synthetic": True, "amount_cents": 50}, {"trace_id": "t2", "synthetic": False,
                                                                         "amount_cents": None, "label": "business"}]
    assert a8_tile_exports.to_csv(rows) == ("trace_id,synthetic,amount_cents,label\nt1,true,50,\nt2,false,,business\n")


def test_dashboard_shows_the_badge_only_in_demo_mode_and_escapes_banners(ctx: types.SimpleNamespace) -> None:
    banner = {"id": "ban_1", "app_id": "A3", "severity": "critical", "message": "<script>x</script>",
              "raised_at": "2024-01-01T00:00:00.000Z", "tags": {"test_run": "true"}}
    page = a8_dashboard.render(a8_tiles.all_tiles(ctx, ctx.services["store"]), [banner])
    assert 'id="demo-badge"' not in page and "DEMO" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert 'data-banner-id="ban_1"' in page and '<span class="label">synthetic</span>' in page
    ctx.flags.update({"a8_demo_mode": True})
    page = a8_dashboard.render(a8_tiles.all_tiles(ctx, ctx.services["store"]), [])
    assert '<span class="badge" id="demo-badge" role="status">DEMO — simulated revenue</span>' in page
    assert 'id="no-banners"' in page


@pytest.mark.parametrize(("value", "unit", "shown"), [
    (None, "cents", "no data"), (1234, "cents", "1,234"), (0.995, "ratio", "99.50%"), (12.345, "ms", "12.3"),
])
def test_values_are_formatted_for_reading(value: Any, unit: str, shown: str) -> None:
    assert a8_dashboard.format_value(value, unit) == shown
