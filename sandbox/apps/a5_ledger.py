"""A5's credit ledger: what a completed checkout gives its buyer, kept as an append-only log.

Every completed checkout session appends exactly one grant to the buyer's ledger in the
same SQLite transaction that marks the session complete, so a session can never be
complete without its credits or credited twice (the grant is unique per session). The
balance is the sum of the entries; nothing is ever updated in place, so the ledger is
also its own audit trail.

Credits per unit bought: :data:`CREDITS_PER_UNIT` for the catalogue's credit packs, one
for any other price (the micro price included) — the audit only needs a grant it can
predict and see.

``GET /api/ledger/{user_id}`` answers the balance and the newest entries of one user.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.common.context import ctx_of
from sandbox.common.web import json_error

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkout_completions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    payment_intent TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    stripe_mode TEXT NOT NULL,
    revenue_event_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    completed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS credit_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL UNIQUE REFERENCES checkout_completions (session_id),
    credits INTEGER NOT NULL CHECK (credits >= 0),
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credit_ledger_user ON credit_ledger (user_id, id);
"""

CREDITS_PER_UNIT = {"price_credits_100": 100}
MAX_USER_ID = 128
MAX_ENTRIES = 100


def credits_for(price_id: str, quantity: int) -> int:
    """Credits granted for ``quantity`` units of ``price_id``."""
    return CREDITS_PER_UNIT.get(price_id, 1) * quantity


def valid_user_id(value: Any) -> str | None:
    """The user id when it is a usable one (non-empty, at most 128 characters), else None."""
    if isinstance(value, str) and value.strip() and len(value) <= MAX_USER_ID:
        return value.strip()
    return None


def record_completion(conn: sqlite3.Connection, completion: dict[str, Any], credits: int, reason: str) -> None:
    """Append the completion and its grant, inside the caller's transaction."""
    conn.execute(
        "INSERT INTO checkout_completions (session_id, user_id, payment_intent, amount_cents, currency,"
        " stripe_mode, revenue_event_id, trace_id, completed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (completion["session_id"], completion["user_id"], completion["payment_intent"], completion["amount_cents"],
         completion["currency"], completion["stripe_mode"], completion["revenue_event_id"], completion["trace_id"],
         completion["completed_at"]),
    )
    conn.execute(
        "INSERT INTO credit_ledger (user_id, session_id, credits, reason, created_at) VALUES (?, ?, ?, ?, ?)",
        (completion["user_id"], completion["session_id"], credits, reason, completion["completed_at"]),
    )


def completion_of(request: Request, session_id: str) -> dict[str, Any] | None:
    rows = ctx_of(request).db.query("SELECT * FROM checkout_completions WHERE session_id = ?", (session_id,))
    return dict(rows[0]) if rows else None


def read_ledger(request: Request) -> Response:
    """``GET /api/ledger/{user_id}``: balance, number of entries and the newest entries."""
    user_id = valid_user_id(request.path_params["user_id"])
    if user_id is None:
        return json_error(422, f"user_id must be 1 to {MAX_USER_ID} characters")
    db = ctx_of(request).db
    balance = db.scalar("SELECT COALESCE(SUM(credits), 0) FROM credit_ledger WHERE user_id = ?", (user_id,))
    count = db.scalar("SELECT COUNT(*) FROM credit_ledger WHERE user_id = ?", (user_id,))
    rows = db.query(
        "SELECT l.id, l.session_id, l.credits, l.reason, l.created_at, c.payment_intent, c.amount_cents,"
        " c.currency, c.stripe_mode, c.revenue_event_id FROM credit_ledger l"
        " JOIN checkout_completions c ON c.session_id = l.session_id"
        " WHERE l.user_id = ? ORDER BY l.id DESC LIMIT ?",
        (user_id, MAX_ENTRIES),
    )
    return JSONResponse({"user_id": user_id, "balance": int(balance), "entries_total": int(count),
                         "entries": [dict(r) for r in rows]})
