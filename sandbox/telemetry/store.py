"""A8's telemetry store in SQLite: ingest with dedupe, queries, summaries, ingest stats, tiles.

Dedupe is on the pair (``idempotency_key``, ``trace_id``) and holds for
``dedupe_window_s`` seconds from the first time the pair was *received*: a producer that
retries a batch inside the window is counted as duplicate, never twice; after the window
the same pair is new again. The ``dedupe`` table keeps one row per pair with the time it
was last accepted and is pruned of rows older than the window.

Every ingest call records one ``ingest_attempts`` row (received, accepted, duplicates,
rejected) with its time, so acceptance over any window is a query, not a guess. Time
filters on events use the *event* timestamp (``since`` inclusive, ``until`` exclusive);
on attempts, the time A8 received them. Percentiles interpolate linearly between order
statistics (the common "type 7" definition).

Tiles read business events through :class:`EventScope` queries that run in SQL over the
stored JSON body (``json_extract``) after the indexed columns have narrowed the rows to
one event type or one app and a time window, so a tile costs one indexed range scan
whatever else the store holds. A revenue event is *synthetic* (:data:`SYNTHETIC_SQL`)
when its tags say ``namespace=simulated_audit`` or ``test_run=true``, or its finance
metrics say ``stripe_mode=test``: the rule lives here once, in SQL, so a tile and its
export can never disagree about which revenue was simulated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.common.sqlite import Database
from sandbox.common.web import iso_from_epoch
from sandbox.telemetry.schema import EventError, StoredEvent, validate_event

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    ts_epoch REAL NOT NULL,
    event_type TEXT NOT NULL,
    app_id TEXT NOT NULL,
    route TEXT,
    method TEXT,
    status INTEGER,
    latency_ms REAL,
    trace_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts_epoch);
CREATE INDEX IF NOT EXISTS events_app_ts ON events (app_id, ts_epoch);
CREATE INDEX IF NOT EXISTS events_type_ts ON events (event_type, ts_epoch);
CREATE INDEX IF NOT EXISTS events_trace ON events (trace_id);
-- covers the per-app request tiles: a window of http_request events read from the index alone
CREATE INDEX IF NOT EXISTS events_requests ON events (event_type, ts_epoch, app_id, status, latency_ms);
CREATE TABLE IF NOT EXISTS dedupe (
    idempotency_key TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (idempotency_key, trace_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ingest_attempts (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    received INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    rejected INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ingest_attempts_at ON ingest_attempts (at);
"""

PRUNE_EVERY_S = 60.0
_INSERT_EVENT = (
    "INSERT INTO events (received_at, ts_epoch, event_type, app_id, route, method, status, latency_ms,"
    " trace_id, idempotency_key, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_DEDUPE = (
    "INSERT INTO dedupe (idempotency_key, trace_id, seen_at) VALUES (?, ?, ?)"
    " ON CONFLICT (idempotency_key, trace_id) DO UPDATE SET seen_at = excluded.seen_at"
)


#: Synthetic revenue: simulated-audit namespace, a test run, or a Stripe test-mode charge.
#: ``json_extract`` turns a JSON ``true`` into 1, so ``lower(...)`` accepts true, "true" and 1.
SYNTHETIC_SQL = (
    "(coalesce(json_extract(body, '$.tags.namespace'), '') = 'simulated_audit'"
    " OR lower(coalesce(json_extract(body, '$.tags.test_run'), '')) IN ('true', '1')"
    " OR coalesce(json_extract(body, '$.finance_metrics.stripe_mode'), '') = 'test')"
)
#: Derived columns a scope query may select or group by, besides JSON paths.
DERIVED = {"synthetic": SYNTHETIC_SQL}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH = re.compile(r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclasses.dataclass(frozen=True)
class EventScope:
    """The stored events one tile reads.

    ``event_type`` or ``app_id`` select an index; ``condition`` is an extra SQL condition
    over the columns or the JSON body. It is written in code, never built from a request.
    """

    event_type: str | None = None
    app_id: str | None = None
    condition: str = ""

    def where(self, since: float) -> tuple[str, list[Any]]:
        clauses, params = ["ts_epoch >= ?"], [since]
        for column, value in (("event_type", self.event_type), ("app_id", self.app_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.condition:
            clauses.append(f"({self.condition})")
        return "WHERE " + " AND ".join(clauses), params


def _field(name: str, source: str) -> tuple[str, list[Any]]:
    """``<expr> AS name`` for a JSON path (bound as a parameter) or a :data:`DERIVED` column."""
    if not _NAME.match(name):
        raise ValueError(f"field name must be lower_snake_case, got {name!r}")
    if source in DERIVED:
        return f"{DERIVED[source]} AS {name}", []
    if not _PATH.match(source):
        raise ValueError(f"field {name}: source must be a JSON path like $.tags.namespace or one of {list(DERIVED)}")
    return f"json_extract(body, ?) AS {name}", [source]


@dataclasses.dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; None for no data."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    value = sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)
    return round(value, 3)


def _window(column: str, since: float | None, until: float | None) -> tuple[str, list[float]]:
    clauses, params = [], []
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(until)
    return " AND ".join(clauses), params


class TelemetryStore:
    """All reads and writes of A8's telemetry tables."""

    def __init__(self, db: Database, dedupe_window_s: float) -> None:
        self.db = db
        self.dedupe_window_s = dedupe_window_s
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()

    def ingest(self, raw_events: Sequence[Any], source: str) -> IngestResult:
        """Validate each event, drop duplicates in the window, store the rest in one transaction."""
        now = time.time()
        valid: list[StoredEvent] = []
        rejected: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_events):
            try:
                valid.append(validate_event(raw))
            except EventError as exc:
                rejected.append({"index": index, "error": str(exc)})
        fresh: list[StoredEvent] = []
        duplicates = 0
        window_start = now - self.dedupe_window_s
        with self.db.transaction() as conn:
            seen: set[tuple[str, str]] = set()
            for event in valid:
                key = (event.idempotency_key, event.trace_id)
                row = conn.execute(
                    "SELECT seen_at FROM dedupe WHERE idempotency_key = ? AND trace_id = ?", key
                ).fetchone()
                if key in seen or (row is not None and row[0] >= window_start):
                    duplicates += 1
                    continue
                seen.add(key)
                fresh.append(event)
            conn.executemany(
                _INSERT_EVENT,
                [
                    (
                        now,
                        e.ts_epoch,
                        e.event_type,
                        e.app_id,
                        e.route,
                        e.method,
                        e.status,
                        e.latency_ms,
                        e.trace_id,
                        e.idempotency_key,
                        e.body,
                    )
                    for e in fresh
                ],
            )
            conn.executemany(_UPSERT_DEDUPE, [(e.idempotency_key, e.trace_id, now) for e in fresh])
            conn.execute(
                "INSERT INTO ingest_attempts (at, source, received, accepted, duplicates, rejected)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (now, source, len(raw_events), len(fresh), duplicates, len(rejected)),
            )
        self._maybe_prune(now)
        return IngestResult(len(fresh), duplicates, rejected)

    def _maybe_prune(self, now: float) -> None:
        with self._prune_lock:
            if now - self._last_prune < PRUNE_EVERY_S:
                return
            self._last_prune = now
        self.db.execute("DELETE FROM dedupe WHERE seen_at < ?", (now - self.dedupe_window_s,))

    def events(
        self,
        *,
        app_id: str | None = None,
        event_type: str | None = None,
        trace_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` matching events, returned oldest first (newest last).

        Each is the body as the producer sent it plus ``received_at``, the store's own
        arrival time (ISO-8601 UTC), so arrival latency can be measured without polling.
        """
        where, params = self._filters(app_id, event_type, trace_id, since, until)
        rows = self.db.query(
            f"SELECT body, received_at FROM events {where} ORDER BY ts_epoch DESC, id DESC LIMIT ?", [*params, limit]
        )
        return [{**json.loads(r["body"]), "received_at": iso_from_epoch(r["received_at"])} for r in reversed(rows)]

    @staticmethod
    def _filters(
        app_id: str | None, event_type: str | None, trace_id: str | None, since: float | None, until: float | None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("app_id", app_id), ("event_type", event_type), ("trace_id", trace_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        window, window_params = _window("ts_epoch", since, until)
        if window:
            clauses.append(window)
            params.extend(window_params)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def summary(
        self, *, app_id: str | None, event_type: str, since: float | None, until: float | None
    ) -> dict[str, Any]:
        """Count, server errors (status >= 500), P50/P95 latency, first and last timestamps."""
        where, params = self._filters(app_id, event_type, None, since, until)
        rows = self.db.query(f"SELECT ts_epoch, status, latency_ms FROM events {where}", params)
        latencies = sorted(r["latency_ms"] for r in rows if r["latency_ms"] is not None)
        stamps = [r["ts_epoch"] for r in rows]
        return {
            "app_id": app_id,
            "event_type": event_type,
            "n": len(rows),
            "errors": sum(1 for r in rows if r["status"] is not None and r["status"] >= 500),
            "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95),
            "first": iso_from_epoch(min(stamps)) if stamps else None,
            "last": iso_from_epoch(max(stamps)) if stamps else None,
        }

    def stats(self, *, since: float | None, until: float | None) -> dict[str, int]:
        """Ingest counts summed over the attempts received in the window."""
        window, params = _window("at", since, until)
        row = self.db.query(
            "SELECT count(*) AS attempts, coalesce(sum(received), 0) AS received,"
            " coalesce(sum(accepted), 0) AS accepted, coalesce(sum(duplicates), 0) AS duplicates,"
            " coalesce(sum(rejected), 0) AS rejected FROM ingest_attempts" + (f" WHERE {window}" if window else ""),
            params,
        )[0]
        return {key: int(row[key]) for key in ("received", "accepted", "duplicates", "rejected", "attempts")}

    def per_app(self, since: float) -> dict[str, dict[str, Any]]:
        """Per app over ``http_request`` events since ``since``: ``requests``, ``errors`` (5xx) and
        ``p95_ms`` (:func:`percentile`'s interpolation).

        The work stays in SQLite, on the ``events_requests`` covering index: one grouped count,
        then per app only the two ranks around P95, read from the top (a short sort of the
        slowest 5%) — a busy minute of traffic costs milliseconds, not a Python loop over
        every event.
        """
        scope = "FROM events WHERE event_type = 'http_request' AND ts_epoch >= ?"
        counts = self.db.query(
            "SELECT app_id, count(*) AS n, count(*) FILTER (WHERE status >= 500) AS errors, count(latency_ms) AS timed"
            f" {scope} GROUP BY app_id ORDER BY app_id", (since,))
        p95: dict[str, Any] = {}
        for r in counts:
            if not r["timed"]:
                continue
            pos = (r["timed"] - 1) * 0.95
            low, high = math.floor(pos), math.ceil(pos)
            top = [row["latency_ms"] for row in self.db.query(
                f"SELECT latency_ms {scope} AND app_id = ? AND latency_ms IS NOT NULL"
                " ORDER BY latency_ms DESC LIMIT ? OFFSET ?", (since, r["app_id"], high - low + 1, r["timed"] - 1 - high))]
            p95[r["app_id"]] = percentile(top[::-1], 1.0) if low == high else \
                round(top[-1] + (top[0] - top[-1]) * (pos - low), 3)
        return {"requests": {r["app_id"]: int(r["n"]) for r in counts},
                "errors": {r["app_id"]: int(r["errors"]) for r in counts}, "p95_ms": p95}

    def scope_rows(
        self, scope: EventScope, since: float, fields: Mapping[str, str], limit: int
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` events of ``scope`` since ``since``, newest first.

        Each row holds ``timestamp``, ``trace_id``, ``app_id``, ``event_type``, ``status``
        and one value per ``fields`` entry (name → JSON path or derived column).
        """
        selected, params = [], []
        for name, source in fields.items():
            expr, bound = _field(name, source)
            selected.append(expr)
            params.extend(bound)
        where, where_params = scope.where(since)
        columns = ", ".join(["ts_epoch", "trace_id", "app_id", "event_type", "status", *selected])
        rows = self.db.query(
            f"SELECT {columns} FROM events {where} ORDER BY ts_epoch DESC, id DESC LIMIT ?",
            [*params, *where_params, limit],
        )
        out = []
        for row in rows:
            item = dict(row)
            out.append({"timestamp": iso_from_epoch(item.pop("ts_epoch")), **item})
        return out

    def scope_totals(
        self, scope: EventScope, since: float, group_by: Mapping[str, str], sums: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Event counts and sums per group, in one aggregate query.

        ``sums`` maps an output name to a JSON path; only numeric values are added (a
        string amount is counted in ``non_numeric`` instead of being coerced), and a sum
        over no numeric value is 0.
        """
        keys, params = [], []
        for name, source in group_by.items():
            expr, bound = _field(name, source)
            keys.append(expr)
            params.extend(bound)
        aggregates, numeric_checks = [], []
        for name, path in sums.items():
            if not _NAME.match(name) or not _PATH.match(path):
                raise ValueError(f"sum {name!r}: name must be lower_snake_case and source a JSON path, got {path!r}")
            numeric = "json_type(body, ?) IN ('integer', 'real')"
            aggregates.append(f"coalesce(sum(CASE WHEN {numeric} THEN json_extract(body, ?) END), 0) AS {name}")
            params.extend([path, path])
            numeric_checks.append(path)
        non_numeric = " OR ".join("(json_type(body, ?) IS NOT NULL AND json_type(body, ?) NOT IN ('integer', 'real'))"
                                  for _ in numeric_checks) or "0"
        for path in numeric_checks:
            params.extend([path, path])
        where, where_params = scope.where(since)
        select = ", ".join([*keys, "count(*) AS events", *aggregates, f"sum({non_numeric}) AS non_numeric"])
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}" if keys else ""
        rows = self.db.query(f"SELECT {select} FROM events {where}{group}", [*params, *where_params])
        return [dict(r) for r in rows if r["events"]]

    def health_window(self, app_id: str, since: float, until: float) -> dict[str, int]:
        """Events of ``app_id`` with a status in [since, until): healthy (< 500) and server errors."""
        row = self.db.query(
            "SELECT count(*) FILTER (WHERE status < 500) AS healthy, count(*) FILTER (WHERE status >= 500) AS errors"
            " FROM events WHERE app_id = ? AND ts_epoch >= ? AND ts_epoch < ? AND status IS NOT NULL",
            (app_id, since, until),
        )[0]
        return {"healthy": int(row["healthy"]), "errors": int(row["errors"])}
