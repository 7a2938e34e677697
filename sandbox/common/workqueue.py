"""A small durable work queue in its own SQLite file, one per app.

Real services put slow work (emails, page builds, webhooks) on a queue; the deep
readiness check must prove the queue *accepts work*, not merely that a file exists. The
queue lives in a separate file from the app's main database so that the two readiness
checks (``db`` and ``queue``) fail independently, as they would with a real broker.
Claiming is a single ``UPDATE … RETURNING`` statement, so two workers never get the same
job.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from sandbox.common.sqlite import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    enqueued_at REAL NOT NULL,
    claimed_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (kind, state, id);
"""

PROBE_KIND = "readiness_probe"


class QueueProbeError(RuntimeError):
    """The queue did not hand back the work it just accepted."""


@dataclasses.dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    enqueued_at: float


class WorkQueue:
    """Enqueue, claim, complete; plus the round-trip probe used by ``/ready``."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, SCHEMA)

    def enqueue(self, kind: str, payload: dict[str, Any]) -> int:
        cur = self.db.execute(
            "INSERT INTO jobs (kind, payload, enqueued_at) VALUES (?, ?, ?)",
            (kind, json.dumps(payload), time.time()),
        )
        return int(cur.lastrowid or 0)

    def claim(self, kind: str) -> Job | None:
        """Take the oldest pending job of ``kind``, or None when there is none."""
        row = (
            self.db.connection()
            .execute(
                "UPDATE jobs SET state = 'claimed', claimed_at = ? WHERE id = ("
                " SELECT id FROM jobs WHERE kind = ? AND state = 'pending' ORDER BY id LIMIT 1"
                ") RETURNING id, kind, payload, enqueued_at",
                (time.time(), kind),
            )
            .fetchone()
        )
        if row is None:
            return None
        return Job(int(row["id"]), row["kind"], json.loads(row["payload"]), float(row["enqueued_at"]))

    def complete(self, job_id: int) -> None:
        self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def depth(self, kind: str | None = None) -> int:
        """Pending jobs, of one kind or all."""
        if kind is None:
            return int(self.db.scalar("SELECT count(*) FROM jobs WHERE state = 'pending'"))
        return int(self.db.scalar("SELECT count(*) FROM jobs WHERE state = 'pending' AND kind = ?", (kind,)))

    def probe(self) -> None:
        """Enqueue a probe job and claim one back; raise when the round trip fails."""
        self.enqueue(PROBE_KIND, {"at": time.time()})
        job = self.claim(PROBE_KIND)
        if job is None:
            raise QueueProbeError("enqueued a probe job but could not claim it back")
        self.complete(job.id)

    def close(self) -> None:
        self.db.close()
