"""A7's lead records and their idempotency ledger, in SQLite.

Two tables in A7's main database: ``leads`` (one row per captured lead, with its
delivery state) and ``lead_requests`` (one row per idempotency key and scope, holding
the request's hash and the exact response sent). A request is answered from
``lead_requests`` when its key was seen within the dedupe window: the same body gets
the stored response again, a different body is refused, and a key whose first request
is still being answered (the synchronous mailer call) gets a 409.

With asynchronous delivery the lead, its idempotency record and the delivery job are
written in **one transaction**: A7's work-queue file is attached to the connection
(``ATTACH … AS q``), so no lead exists without its job and no job without its lead.
SQLite commits attached WAL databases file by file, so only a machine crash in the
middle of a commit could separate them; a process crash cannot.

The delivery key of a lead is its id: every attempt to mail one lead — retried by a
worker, or after a restart — carries the same key, and the relay sends it once.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.common.mailer import Delivery
from sandbox.common.sqlite import Database
from sandbox.common.web import utc_now_iso

QUEUE_SCHEMA = "q"

SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    source TEXT,
    tags TEXT NOT NULL,            -- JSON list of the lead's tags
    mode TEXT NOT NULL CHECK (mode IN ('sync', 'async')),
    status TEXT NOT NULL CHECK (status IN ('sending', 'queued', 'sent', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    message_id TEXT,
    delivered_at TEXT,
    last_error TEXT,
    trace_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_tags TEXT NOT NULL,    -- JSON object: the telemetry tags of the capturing request
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lead_requests (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    lead_id TEXT NOT NULL REFERENCES leads (id),
    status_code INTEGER,           -- NULL while the first request is still being answered
    response TEXT,
    created_epoch REAL NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
"""

KEY_REUSED = "X-Idempotency-Key was already used with a different request body"
KEY_IN_PROGRESS = "a request with this X-Idempotency-Key is still being processed"


@dataclasses.dataclass(frozen=True)
class NewLead:
    """A validated lead and the request facts stored with it."""

    email: str
    name: str
    source: str | None
    tags: list[str]
    scope: str
    idempotency_key: str
    request_hash: str
    trace_id: str
    request_tags: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Answer:
    """A response decided by the store: a replay, a refusal, or a freshly created lead."""

    status: int
    body: dict[str, Any]
    replayed: bool = False
    lead_id: str | None = None  # set when this request created the lead


def new_lead_id() -> str:
    return f"lead_{secrets.token_hex(8)}"


class LeadStore:
    """Reads and writes of ``leads`` and ``lead_requests`` (see module docstring)."""

    def __init__(self, db: Database, queue_path: Path, window_s: float, job_kind: str) -> None:
        self.db = db
        self.queue_path = queue_path
        self.window_s = window_s
        self.job_kind = job_kind

    def _attached(self) -> sqlite3.Connection:
        conn = self.db.connection()
        names = {row[1] for row in conn.execute("PRAGMA database_list")}
        if QUEUE_SCHEMA not in names:
            conn.execute(f"ATTACH DATABASE ? AS {QUEUE_SCHEMA}", (str(self.queue_path),))
        return conn

    def _existing(self, conn: sqlite3.Connection, lead: NewLead) -> Answer | None:
        """The answer owed to a key seen within the window, or None for a new key."""
        conn.execute(
            "DELETE FROM lead_requests WHERE scope = ? AND idempotency_key = ? AND created_epoch < ?",
            (lead.scope, lead.idempotency_key, time.time() - self.window_s),
        )
        row = conn.execute(
            "SELECT request_hash, status_code, response FROM lead_requests WHERE scope = ? AND idempotency_key = ?",
            (lead.scope, lead.idempotency_key),
        ).fetchone()
        if row is None:
            return None
        if row["request_hash"] != lead.request_hash:
            return Answer(422, {"error": KEY_REUSED})
        if row["status_code"] is None:
            return Answer(409, {"error": KEY_IN_PROGRESS})
        return Answer(int(row["status_code"]), json.loads(row["response"]), replayed=True)

    @staticmethod
    def _insert(
        conn: sqlite3.Connection, lead: NewLead, lead_id: str, mode: str, status: str, answer: Answer | None
    ) -> None:
        conn.execute(
            "INSERT INTO leads (id, email, name, source, tags, mode, status, trace_id, idempotency_key,"
            " request_tags, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                lead_id,
                lead.email,
                lead.name,
                lead.source,
                json.dumps(lead.tags),
                mode,
                status,
                lead.trace_id,
                lead.idempotency_key,
                json.dumps(lead.request_tags),
                utc_now_iso(),
            ),
        )
        conn.execute(
            "INSERT INTO lead_requests (scope, idempotency_key, request_hash, lead_id, status_code, response,"
            " created_epoch) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                lead.scope,
                lead.idempotency_key,
                lead.request_hash,
                lead_id,
                None if answer is None else answer.status,
                None if answer is None else json.dumps(answer.body),
                time.time(),
            ),
        )

    def create_queued(self, lead: NewLead) -> Answer:
        """Lead + idempotency record + delivery job in one transaction; the 202 is stored for replays."""
        self._attached()
        with self.db.transaction() as conn:
            known = self._existing(conn, lead)
            if known is not None:
                return known
            lead_id = new_lead_id()
            answer = Answer(202, {"lead_id": lead_id, "delivery": "queued"}, lead_id=lead_id)
            self._insert(conn, lead, lead_id, "async", "queued", answer)
            conn.execute(
                f"INSERT INTO {QUEUE_SCHEMA}.jobs (kind, payload, enqueued_at) VALUES (?, ?, ?)",
                (self.job_kind, json.dumps({"key": lead_id, "to": lead.email}), time.time()),
            )
        return answer

    def create_sending(self, lead: NewLead) -> Answer | str:
        """Reserve the key and store the lead before the synchronous mailer call.

        Returns the answer owed to a key already seen, or the new lead's id.
        """
        with self.db.transaction() as conn:
            known = self._existing(conn, lead)
            if known is not None:
                return known
            lead_id = new_lead_id()
            self._insert(conn, lead, lead_id, "sync", "sending", None)
        return lead_id

    def finish_sync(
        self, lead: NewLead, lead_id: str, answer: Answer, delivery: Delivery | None, error: str | None
    ) -> None:
        """Record the mailer's outcome and the response owed to replays of this key."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE leads SET status = ?, attempts = 1, message_id = ?, delivered_at = ?, last_error = ?"
                " WHERE id = ?",
                (
                    "sent" if delivery else "failed",
                    delivery.message_id if delivery else None,
                    delivery.accepted_at if delivery else None,
                    error,
                    lead_id,
                ),
            )
            conn.execute(
                "UPDATE lead_requests SET status_code = ?, response = ? WHERE scope = ? AND idempotency_key = ?",
                (answer.status, json.dumps(answer.body), lead.scope, lead.idempotency_key),
            )

    def abandon(self, lead: NewLead, lead_id: str, error: str) -> None:
        """The request died before the relay answered: mark the lead failed and free its key."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE leads SET status = 'failed', last_error = ? WHERE id = ?", (error, lead_id))
            conn.execute(
                "DELETE FROM lead_requests WHERE scope = ? AND idempotency_key = ? AND lead_id = ?",
                (lead.scope, lead.idempotency_key, lead_id),
            )

    def get(self, lead_id: str) -> sqlite3.Row | None:
        rows = self.db.query("SELECT * FROM leads WHERE id = ?", (lead_id,))
        return rows[0] if rows else None


class LeadLedger:
    """The delivery workers' ledger (:class:`sandbox.common.delivery.Ledger`) for A7's leads.

    ``on_outcome(event_type, lead_row, extra)`` is called once a lead is delivered or has
    failed for good, so the app can emit telemetry with the lead's own trace id.
    """

    def __init__(self, store: LeadStore, on_outcome: Callable[[str, sqlite3.Row, dict[str, Any]], None]) -> None:
        self.store = store
        self.on_outcome = on_outcome

    def attempts(self, key: str) -> int:
        return int(self.store.db.scalar("SELECT attempts FROM leads WHERE id = ?", (key,)) or 0)

    def attempt_started(self, key: str) -> int:
        row = self.store.db.execute(
            "UPDATE leads SET attempts = attempts + 1 WHERE id = ? RETURNING attempts", (key,)
        ).fetchone()
        return int(row[0]) if row else 1

    def delivered(self, key: str, delivery: Delivery, attempts: int) -> None:
        self.store.db.execute(
            "UPDATE leads SET status = 'sent', message_id = ?, delivered_at = ?, last_error = NULL WHERE id = ?",
            (delivery.message_id, delivery.accepted_at, key),
        )
        row = self.store.get(key)
        if row is not None:
            self.on_outcome("lead_delivered", row, {"attempts": attempts, "message_id": delivery.message_id})

    def failed(self, key: str, error: str, attempts: int, final: bool) -> None:
        if not final:
            self.store.db.execute("UPDATE leads SET last_error = ? WHERE id = ?", (error, key))
            return
        self.store.db.execute("UPDATE leads SET status = 'failed', last_error = ? WHERE id = ?", (error, key))
        row = self.store.get(key)
        if row is not None:
            self.on_outcome("lead_delivery_failed", row, {"attempts": attempts, "error": error})
