"""A8's tiles: what the command center shows, computed from the telemetry store on request.

Every tile has the same shape, the contract dashboards and audits code against::

    {"id", "title", "metric", "value", "unit", "window_s", "updated_at",
     "recent_trace_ids": [...], "breakdown": {...}, "labels": [...]}

(the four operational tiles also keep their original ``values`` object). Tiles are
listed in the ``dashboard_tiles`` table (id, title, metric, unit, window, position) and
each ``metric`` has one function here that turns store queries into a tile and, for
exports, the rows behind it.

``GET /api/tiles`` answers every tile, recomputed at most once per ``TILE_REFRESH_S``
(each tile scans its window, and a page polled by many viewers must not scale that scan
with the number of viewers). While the tiles are polled, a stale body is answered at once
and recomputed in the background (stale-while-revalidate), so no request waits for the
scan; a body older than ``TILE_MAX_STALE_S`` (nobody asked for a while) or computed under
the other demo-flag state is recomputed before answering, so a reader after a pause
never sees old numbers.
``GET /api/tiles/{id}/export?format=json|csv`` (:mod:`sandbox.apps.a8_tile_exports`)
recomputes one tile and adds the rows behind it, the evidence an audit files.

Business tiles:

* ``growth_signups`` — ``identity_ok`` events with ``signup: true``.
* ``finance_revenue_live`` — revenue in cents from ``revenue_settled`` events. With the
  flag ``a8_demo_mode`` ON, synthetic revenue (see :data:`SYNTHETIC_SQL`) is left out
  and the tile says how much was left out; OFF, it is summed with business revenue and
  nothing says so — the state an audit must catch.
* ``finance_revenue_diagnostics`` — all revenue, broken down by namespace and Stripe
  mode, whatever the flag.
* ``b2b_billing`` — provider fees and AI markup (``provider_fee_cents``,
  ``ai_markup_cents`` in the finance metrics of A6's billing events).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.common.context import AppContext, ctx_of
from sandbox.common.web import utc_now_iso
from sandbox.telemetry.store import SYNTHETIC_SQL, EventScope, TelemetryStore

DEMO_FLAG = "a8_demo_mode"
RECENT_TRACES = 20
SIMULATED_NAMESPACE = "simulated_audit"
DEMO_LABEL = "DEMO — simulated revenue"
TILE_REFRESH_S = 1.0
TILE_MAX_STALE_S = 3.0  # older than this (no reader meanwhile): recomputed before answering

SCHEMA = """
CREATE TABLE IF NOT EXISTS dashboard_tiles (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    metric TEXT NOT NULL CHECK (metric IN ('requests', 'errors', 'p95_ms', 'acceptance', 'signups',
                                           'revenue_live', 'revenue_diagnostics', 'b2b_billing')),
    unit TEXT NOT NULL,
    window_s REAL NOT NULL CHECK (window_s > 0),
    position INTEGER NOT NULL
);
"""

TILE_DEFS = [
    ("requests_per_app", "Requests per app (last minute)", "requests", "requests", 60, 1),
    ("errors_per_app", "Server errors per app (last minute)", "errors", "errors", 60, 2),
    ("p95_ms_per_app", "P95 latency per app, ms (last minute)", "p95_ms", "ms", 60, 3),
    ("telemetry_acceptance", "Telemetry acceptance (last 5 minutes)", "acceptance", "ratio", 300, 4),
    ("growth_signups", "Sign-ups (last hour)", "signups", "signups", 3600, 5),
    ("finance_revenue_live", "Revenue, live (last 24 hours)", "revenue_live", "cents", 86_400, 6),
    ("finance_revenue_diagnostics", "Revenue diagnostics, all sources (last 24 hours)", "revenue_diagnostics",
     "cents", 86_400, 7),
    ("b2b_billing", "B2B billing: provider fees and AI markup (last 24 hours)", "b2b_billing", "cents", 86_400, 8),
]

SIGNUPS = EventScope(event_type="identity_ok", condition="json_extract(body, '$.signup') = 1")
LOGINS = EventScope(event_type="identity_ok")
REVENUE = EventScope(event_type="revenue_settled")
BUSINESS_REVENUE = EventScope(event_type="revenue_settled", condition=f"NOT {SYNTHETIC_SQL}")
BILLING = EventScope(
    app_id="A6",
    condition="event_type <> 'http_request' AND (json_extract(body, '$.finance_metrics.provider_fee_cents') IS NOT NULL"
    " OR json_extract(body, '$.finance_metrics.ai_markup_cents') IS NOT NULL)",
)
SERVER_ERRORS = EventScope(event_type="http_request", condition="status >= 500")

REVENUE_FIELDS = {
    "amount_cents": "$.finance_metrics.amount_cents",
    "currency": "$.finance_metrics.currency",
    "stripe_mode": "$.finance_metrics.stripe_mode",
    "namespace": "$.tags.namespace",
    "test_run": "$.tags.test_run",
    "revenue_event_id": "$.revenue_event_id",
    "synthetic": "synthetic",
}
BILLING_FIELDS = {
    "provider_fee_cents": "$.finance_metrics.provider_fee_cents",
    "ai_markup_cents": "$.finance_metrics.ai_markup_cents",
    "revenue_event_id": "$.revenue_event_id",
    "synthetic": "synthetic",
}


@dataclasses.dataclass(frozen=True)
class TileDef:
    id: str
    title: str
    metric: str
    unit: str
    window_s: float


@dataclasses.dataclass(frozen=True)
class View:
    """What one tile computation needs: the store, the window start, and the demo flag.

    ``memo`` is shared by the tiles of one refresh, so tiles over the same window (requests,
    errors and P95 per app) scan it once.
    """

    store: TelemetryStore
    since: float
    demo_mode: bool
    memo: dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False)

    def per_app(self) -> dict[str, dict[str, Any]]:
        key = ("per_app", self.since)
        if key not in self.memo:
            self.memo[key] = self.store.per_app(self.since)
        found: dict[str, dict[str, Any]] = self.memo[key]
        return found


@dataclasses.dataclass
class Tile:
    """A computed tile (``as_json`` is the contract shape) and the rows an export holds."""

    definition: TileDef
    value: float | None
    recent_trace_ids: list[str]
    breakdown: dict[str, Any]
    labels: list[str]
    rows: Callable[[int], list[dict[str, Any]]]
    values: dict[str, Any] | None = None

    def as_json(self, updated_at: str) -> dict[str, Any]:
        d = self.definition
        out: dict[str, Any] = {
            "id": d.id, "title": d.title, "metric": d.metric, "value": self.value, "unit": d.unit,
            "window_s": d.window_s, "updated_at": updated_at, "recent_trace_ids": self.recent_trace_ids,
            "breakdown": self.breakdown, "labels": self.labels,
        }
        if self.values is not None:
            out["values"] = self.values
        return out


def seed(ctx: AppContext) -> None:
    ctx.db.seed("dashboard_tiles", ("id", "title", "metric", "unit", "window_s", "position"), TILE_DEFS)


def definitions(ctx: AppContext) -> list[TileDef]:
    rows = ctx.db.query("SELECT id, title, metric, unit, window_s FROM dashboard_tiles ORDER BY position")
    return [TileDef(**dict(r)) for r in rows]


def _traces(rows: list[dict[str, Any]]) -> list[str]:
    return [r["trace_id"] for r in rows]


def _per_app(d: TileDef, v: View) -> Tile:
    values = v.per_app()[d.metric]
    numbers = [x for x in values.values() if x is not None]
    if d.metric == "p95_ms":
        value = max(numbers) if numbers else None  # the worst app is what a reader must see first
    else:
        value = sum(numbers)
    recent = v.store.scope_rows(SERVER_ERRORS, v.since, {}, RECENT_TRACES) if d.metric == "errors" else []
    return Tile(d, value, _traces(recent), dict(values), [],
                lambda limit: [{"app_id": app, d.metric: x} for app, x in values.items()], values=values)


def _acceptance(d: TileDef, v: View) -> Tile:
    counts = v.store.stats(since=v.since, until=None)
    received = counts["received"]
    ratio = (counts["accepted"] + counts["duplicates"]) / received if received else None
    values: dict[str, Any] = {**counts, "ratio": ratio}
    return Tile(d, ratio, [], dict(counts), [], lambda limit: [values], values=values)


def _signups(d: TileDef, v: View) -> Tile:
    groups = v.store.scope_totals(LOGINS, v.since, {"signup": "$.signup", "synthetic": "synthetic"}, {})
    signups = sum(g["events"] for g in groups if g["signup"] == 1)
    breakdown = {
        "signups": signups,
        "logins": sum(g["events"] for g in groups if g["signup"] != 1),
        "synthetic_signups": sum(g["events"] for g in groups if g["signup"] == 1 and g["synthetic"]),
    }
    fields = {"user_id": "$.user_id", "synthetic": "synthetic"}
    recent = v.store.scope_rows(SIGNUPS, v.since, fields, RECENT_TRACES)
    return Tile(d, signups, _traces(recent), breakdown, [],
                lambda limit: v.store.scope_rows(SIGNUPS, v.since, fields, limit))


def _revenue_groups(v: View) -> list[dict[str, Any]]:
    keys = {"namespace": "$.tags.namespace", "stripe_mode": "$.finance_metrics.stripe_mode",
            "currency": "$.finance_metrics.currency", "synthetic": "synthetic"}
    return v.store.scope_totals(REVENUE, v.since, keys, {"amount_cents": "$.finance_metrics.amount_cents"})


def _sum_by(groups: list[dict[str, Any]], key: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for g in groups:
        name = str(g[key]) if g[key] is not None else "none"
        out[name] = out.get(name, 0) + int(g["amount_cents"])
    return dict(sorted(out.items()))


def _labelled(rows: list[dict[str, Any]], demo_mode: bool) -> list[dict[str, Any]]:
    """Rows of revenue events with ``label`` = simulated/business (demo mode) or empty."""
    for row in rows:
        row["synthetic"] = bool(row["synthetic"])
        row["label"] = ("simulated" if row["synthetic"] else "business") if demo_mode else ""
    return rows


def _revenue_live(d: TileDef, v: View) -> Tile:
    groups = _revenue_groups(v)
    simulated = [g for g in groups if g["synthetic"]]
    business = [g for g in groups if not g["synthetic"]]
    counted = business if v.demo_mode else groups
    scope = BUSINESS_REVENUE if v.demo_mode else REVENUE
    breakdown: dict[str, Any] = {
        "events": sum(g["events"] for g in counted),
        "by_currency": _sum_by(counted, "currency"),
        "non_numeric_amounts": sum(int(g["non_numeric"]) for g in counted),
    }
    labels: list[str] = []
    if v.demo_mode:
        excluded = sum(int(g["amount_cents"]) for g in simulated)
        breakdown["simulated_excluded_cents"] = excluded
        breakdown["simulated_excluded_events"] = sum(g["events"] for g in simulated)
        labels = [DEMO_LABEL, f"simulated revenue excluded: {excluded} cents"]

    def rows(limit: int) -> list[dict[str, Any]]:
        return _labelled(v.store.scope_rows(scope, v.since, REVENUE_FIELDS, limit), v.demo_mode)

    recent = v.store.scope_rows(scope, v.since, {}, RECENT_TRACES)
    return Tile(d, sum(int(g["amount_cents"]) for g in counted), _traces(recent), breakdown, labels, rows)


def _revenue_diagnostics(d: TileDef, v: View) -> Tile:
    groups = _revenue_groups(v)
    breakdown = {
        "events": sum(g["events"] for g in groups),
        "by_namespace": _sum_by(groups, "namespace"),
        "by_stripe_mode": _sum_by(groups, "stripe_mode"),
        "by_currency": _sum_by(groups, "currency"),
        "synthetic_cents": sum(int(g["amount_cents"]) for g in groups if g["synthetic"]),
        "business_cents": sum(int(g["amount_cents"]) for g in groups if not g["synthetic"]),
        "non_numeric_amounts": sum(int(g["non_numeric"]) for g in groups),
    }
    labels = ["all revenue, synthetic included"]
    if v.demo_mode:
        labels.append(f"{DEMO_LABEL}: {breakdown['synthetic_cents']} cents labelled simulated")

    def rows(limit: int) -> list[dict[str, Any]]:
        return _labelled(v.store.scope_rows(REVENUE, v.since, REVENUE_FIELDS, limit), v.demo_mode)

    recent = v.store.scope_rows(REVENUE, v.since, {}, RECENT_TRACES)
    return Tile(d, breakdown["synthetic_cents"] + breakdown["business_cents"], _traces(recent), breakdown,
                labels, rows)


def _b2b_billing(d: TileDef, v: View) -> Tile:
    sums = {"provider_fee_cents": "$.finance_metrics.provider_fee_cents",
            "ai_markup_cents": "$.finance_metrics.ai_markup_cents"}
    groups = v.store.scope_totals(BILLING, v.since, {"event_type": "$.event_type", "synthetic": "synthetic"}, sums)
    fee = sum(int(g["provider_fee_cents"]) for g in groups)
    markup = sum(int(g["ai_markup_cents"]) for g in groups)
    by_type: dict[str, int] = {}
    for g in groups:
        by_type[g["event_type"]] = by_type.get(g["event_type"], 0) + g["events"]
    breakdown = {
        "provider_fee_cents": fee, "ai_markup_cents": markup, "events": sum(g["events"] for g in groups),
        "synthetic_events": sum(g["events"] for g in groups if g["synthetic"]), "by_event_type": by_type,
        "non_numeric_amounts": sum(int(g["non_numeric"]) for g in groups),
    }
    recent = v.store.scope_rows(BILLING, v.since, {}, RECENT_TRACES)
    return Tile(d, fee + markup, _traces(recent), breakdown, [],
                lambda limit: v.store.scope_rows(BILLING, v.since, BILLING_FIELDS, limit))


COMPUTE: dict[str, Callable[[TileDef, View], Tile]] = {
    "requests": _per_app, "errors": _per_app, "p95_ms": _per_app, "acceptance": _acceptance,
    "signups": _signups, "revenue_live": _revenue_live, "revenue_diagnostics": _revenue_diagnostics,
    "b2b_billing": _b2b_billing,
}


def compute(d: TileDef, store: TelemetryStore, demo_mode: bool, now: float | None = None,
            memo: dict[Any, Any] | None = None) -> Tile:
    """One tile over its window ending now (``memo``: shared by the tiles of one refresh)."""
    now = time.time() if now is None else now
    return COMPUTE[d.metric](d, View(store, now - d.window_s, demo_mode, {} if memo is None else memo))


def all_tiles(ctx: AppContext, store: TelemetryStore) -> dict[str, Any]:
    """The ``/api/tiles`` body: every tile in position order, with the demo flag it was computed under."""
    demo = ctx.flags.enabled(DEMO_FLAG)
    now = time.time()
    updated = utc_now_iso()
    memo: dict[Any, Any] = {}
    tiles = [compute(d, store, demo, now, memo).as_json(updated) for d in definitions(ctx)]
    return {"generated_at": updated, "demo_mode": demo, "tiles": tiles}


class TileCache:
    """The ``/api/tiles`` body, refreshed stale-while-revalidate (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._body: dict[str, Any] | None = None
        self._at = 0.0
        self._refreshing = False

    def get(self, ctx: AppContext) -> dict[str, Any]:
        demo = ctx.flags.enabled(DEMO_FLAG)
        with self._lock:
            body, age = self._body, time.time() - self._at
            if body is not None and body["demo_mode"] == demo and age < TILE_MAX_STALE_S:
                if age >= TILE_REFRESH_S and not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._refresh, args=(ctx,), name="a8-tiles", daemon=True).start()
                return body
        return self._refresh(ctx)

    def _refresh(self, ctx: AppContext) -> dict[str, Any]:
        try:
            body = {**all_tiles(ctx, ctx.services["store"]), "refresh_s": TILE_REFRESH_S}
            with self._lock:
                self._body, self._at = body, time.time()
            return body
        finally:
            with self._lock:
                self._refreshing = False


def cached_tiles(ctx: AppContext) -> dict[str, Any]:
    """:func:`all_tiles` through the app's :class:`TileCache`."""
    cache: TileCache = ctx.services.setdefault("tile_cache", TileCache())
    return cache.get(ctx)


def tiles_endpoint(request: Request) -> Response:
    return JSONResponse(cached_tiles(ctx_of(request)))
