"""A3's orchestration runs in SQLite: one row per loop cycle, the latest :data:`MAX_RUNS` kept.

Separate from the seeded ``runs`` table that ``GET /api/runs/status`` has always
reported, so the loop's churn never changes those counts; the status route adds a
summary of these rows under ``orchestration``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sandbox.common.sqlite import Database
from sandbox.common.web import iso

MAX_RUNS = 200
RUN_STATES = ("running", "completed", "failed", "shed")


def iso_us(ts: dt.datetime | None = None) -> str:
    """``2024-05-01T12:00:00.123456Z``: retry gaps of tens of milliseconds need microseconds."""
    return iso(ts or dt.datetime.now(dt.UTC), "microseconds")


RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS orchestration_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    trace_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'completed', 'failed', 'shed')),
    outcome TEXT,  -- ok | failed | shed | stopped (shutdown) | error (a bug) | interrupted (process died)
    progress REAL NOT NULL CHECK (progress BETWEEN 0 AND 1),
    attempts INTEGER NOT NULL DEFAULT 0,
    page_id TEXT,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


class RunStore:
    """The loop's runs in SQLite, trimmed to the latest :data:`MAX_RUNS` as each run begins."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(self, run_id: str, trace_id: str) -> None:
        now = iso_us()
        with self.db.transaction() as conn:
            cur = conn.execute("INSERT INTO orchestration_runs (id, trace_id, state, progress, started_at, updated_at)"
                               " VALUES (?, ?, 'running', 0, ?, ?)", (run_id, trace_id, now, now))
            conn.execute("DELETE FROM orchestration_runs WHERE seq <= ?", ((cur.lastrowid or 0) - MAX_RUNS,))

    def progress(self, run_id: str, progress: float, attempts: int, page_id: str | None = None) -> None:
        self.db.execute("UPDATE orchestration_runs SET progress = ?, attempts = ?, page_id = COALESCE(?, page_id),"
                        " updated_at = ? WHERE id = ?", (progress, attempts, page_id, iso_us(), run_id))

    def finish(self, run_id: str, state: str, outcome: str, attempts: int) -> None:
        self.db.execute("UPDATE orchestration_runs SET state = ?, outcome = ?, attempts = ?, updated_at = ?"
                        " WHERE id = ?", (state, outcome, attempts, iso_us(), run_id))

    def interrupt_leftovers(self) -> None:
        """Runs a previous process left running can never finish: mark them failed."""
        self.db.execute("UPDATE orchestration_runs SET state = 'failed', outcome = 'interrupted', updated_at = ?"
                        " WHERE state = 'running'", (iso_us(),))

    def count(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM orchestration_runs") or 0)

    def summary(self, latest: int = 5) -> dict[str, Any]:
        """Counts per state over the kept runs and the latest few, for ``GET /api/runs/status``."""
        counts = {r["state"]: r["n"] for r in self.db.query(
            "SELECT state, COUNT(*) AS n FROM orchestration_runs GROUP BY state")}
        rows = self.db.query("SELECT id, trace_id, state, outcome, progress, attempts, page_id, started_at, updated_at"
                             " FROM orchestration_runs ORDER BY seq DESC LIMIT ?", (latest,))
        return {"counts": {s: counts.get(s, 0) for s in RUN_STATES}, "kept": sum(counts.values()),
                "max_kept": MAX_RUNS, "latest": [dict(r) for r in rows]}
