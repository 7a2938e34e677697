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
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Sequence
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
        """The newest ``limit`` matching events, returned oldest first (newest last)."""
        where, params = self._filters(app_id, event_type, trace_id, since, until)
        rows = self.db.query(
            f"SELECT body FROM events {where} ORDER BY ts_epoch DESC, id DESC LIMIT ?", [*params, limit]
        )
        return [json.loads(r["body"]) for r in reversed(rows)]

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

    def per_app(self, metric: str, since: float) -> dict[str, Any]:
        """One value per app over ``http_request`` events since ``since``: requests, errors or p95_ms."""
        scope = "FROM events WHERE event_type = 'http_request' AND ts_epoch >= ?"
        if metric == "requests":
            rows = self.db.query(f"SELECT app_id, count(*) AS v {scope} GROUP BY app_id ORDER BY app_id", (since,))
            return {r["app_id"]: int(r["v"]) for r in rows}
        if metric == "errors":
            rows = self.db.query(
                f"SELECT app_id, count(*) FILTER (WHERE status >= 500) AS v {scope} GROUP BY app_id ORDER BY app_id",
                (since,),
            )
            return {r["app_id"]: int(r["v"]) for r in rows}
        by_app: dict[str, list[float]] = {}
        for r in self.db.query(
            f"SELECT app_id, latency_ms {scope} AND latency_ms IS NOT NULL ORDER BY app_id, latency_ms", (since,)
        ):
            by_app.setdefault(r["app_id"], []).append(r["latency_ms"])
        return {app: percentile(values, 0.95) for app, values in by_app.items()}
