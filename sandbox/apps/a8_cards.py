"""A8's read-only cards: what an audit run leaves on the command center's panel.

``POST /api/cards`` posts a card. It takes the same credentials as a banner — the
telemetry key (the audit already holds it to send events) or the admin token: 401
without a bearer credential, 403 with one that is neither — then the shared idempotency
contract (:mod:`sandbox.common.idempotency`: 428 without ``X-Idempotency-Key`` and
``X-Trace-Id``, a replay of the same key and body gets the stored answer with
``Idempotent-Replayed: true``, the same key with another body is 422). The body::

    {"id": "readiness.sandbox.status", "title": "Implementation & validation status",
     "kind": "links", "body": {"run_id": "20240501-120000", "text": "...",
                               "links": [{"label": "validation report", "href": "reports/validation_report.md"}]},
     "tags": {...}}

    {"id": "readiness.sandbox.score", "title": "Enterprise readiness", "kind": "score",
     "body": {"run_id": "...", "score": 78.4, "grade": "Yellow",
              "actions": [{"text": "Fix ...", "owner": "platform", "eta": "7d", "risk": "high"}]}}

A link's ``href`` is an ``http(s)`` URL or a relative path (a file of the run folder);
any other scheme (``javascript:``, ``data:``…) is refused, so the dashboard never carries
a link a reader should not follow.

"Read-only" is the point of a card: there is no route that edits or deletes one. Posting
again with the same ``id`` adds a new version and the latest version wins; earlier ones
are kept, so a card's history is its own audit trail. ``GET /api/cards`` lists the latest
version of every card. Cards live in their own SQLite file, opened on first use.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.common.context import AppContext, ctx_of
from sandbox.common.idempotency import IdempotencyStore, Outcome, run_idempotent
from sandbox.common.sqlite import Database
from sandbox.common.web import FieldError, bearer_token, iso_from_epoch, json_error, token_matches

ROUTE = "/api/cards"
SERVICE = "cards"
KINDS = ("links", "score")
FIELDS = ("id", "title", "kind", "body", "tags")
BODY_FIELDS = {"links": ("run_id", "text", "links"), "score": ("run_id", "text", "links", "score", "grade", "actions")}
ACTION_FIELDS = ("text", "owner", "eta", "risk")
CARD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAX_TITLE, MAX_TEXT, MAX_LABEL, MAX_HREF, MAX_SHORT = 200, 2000, 200, 2000, 64
MAX_LINKS, MAX_ACTIONS, MAX_ACTION_TEXT, MAX_TAGS, MAX_TAG = 100, 10, 500, 20, 128

SCHEMA = """
CREATE TABLE IF NOT EXISTS cards (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    tags TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    posted_at REAL NOT NULL,
    PRIMARY KEY (id, version)
);
"""


class CardError(FieldError):
    """A card body the API cannot accept; ``field`` names the culprit."""


@dataclasses.dataclass(frozen=True)
class CardForm:
    id: str
    title: str
    kind: str
    body: dict[str, Any]
    tags: dict[str, str]


def safe_href(href: str) -> bool:
    """An ``http(s)`` URL with a host, or a relative path: nothing a browser would run or fetch elsewhere."""
    if any(ch.isspace() or ord(ch) < 32 or ch == "\\" for ch in href) or href.startswith("//"):
        return False
    parts = urlsplit(href)
    if parts.scheme:
        return parts.scheme in ("http", "https") and bool(parts.netloc)
    return not parts.netloc


def _text(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise CardError(where, f"{where} must be a non-empty string of at most {limit} characters")
    return value.strip()


def _optional(raw: dict[str, Any], name: str, where: str, limit: int) -> dict[str, str]:
    """``{name: text}`` when the field is present (and valid), else nothing."""
    return {name: _text(raw[name], f"{where}.{name}", limit)} if name in raw else {}


def _links(value: Any, *, required: bool) -> list[dict[str, str]]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or not (1 if required else 0) <= len(value) <= MAX_LINKS:
        raise CardError("body.links", f"body.links must be a list of {'1' if required else '0'} to {MAX_LINKS} links")
    links = []
    for i, item in enumerate(value):
        where = f"body.links[{i}]"
        link = CardError.json_object(item, ("label", "href"), where=where, qualify=True)
        href = _text(link.get("href"), f"{where}.href", MAX_HREF)
        if not safe_href(href):
            raise CardError(f"{where}.href", f"{where}.href must be an http(s) URL or a relative path")
        links.append({"label": _text(link.get("label"), f"{where}.label", MAX_LABEL), "href": href})
    return links


def _actions(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or len(value) > MAX_ACTIONS:
        raise CardError("body.actions", f"body.actions must be a list of at most {MAX_ACTIONS} actions")
    actions = []
    for i, item in enumerate(value):
        where = f"body.actions[{i}]"
        action = CardError.json_object(item, ACTION_FIELDS, where=where, qualify=True)
        clean = {"text": _text(action.get("text"), f"{where}.text", MAX_ACTION_TEXT)}
        for name in ACTION_FIELDS[1:]:
            clean |= _optional(action, name, where, MAX_SHORT)
        actions.append(clean)
    return actions


def _body(kind: str, value: Any) -> dict[str, Any]:
    raw = CardError.json_object(value, BODY_FIELDS[kind], qualify=True)
    body: dict[str, Any] = {**_optional(raw, "run_id", "body", MAX_TAG), **_optional(raw, "text", "body", MAX_TEXT)}
    body["links"] = _links(raw.get("links"), required=kind == "links")
    if kind == "score":
        score = raw.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score) \
                or not 0 <= score <= 100:
            raise CardError("body.score", "body.score must be a number between 0 and 100")
        body |= {"score": score, "grade": _text(raw.get("grade"), "body.grade", MAX_SHORT),
                 "actions": _actions(raw.get("actions"))}
    return body


def validate_card(value: Any) -> CardForm:
    """The card of a parsed JSON body, or :class:`CardError` naming the first bad field."""
    card = CardError.json_object(value, FIELDS)
    card_id = card.get("id")
    if not isinstance(card_id, str) or not CARD_ID.fullmatch(card_id):
        raise CardError("id", "id must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter "
                              "or digit")
    title = _text(card.get("title"), "title", MAX_TITLE)
    kind = card.get("kind")
    if kind not in KINDS:
        raise CardError("kind", f"kind must be one of {', '.join(KINDS)}")
    tags = card.get("tags", {})
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= MAX_TAG and len(v) <= MAX_TAG
            for k, v in tags.items()):
        raise CardError("tags", f"tags must be an object of at most {MAX_TAGS} strings of at most {MAX_TAG} "
                                "characters")
    return CardForm(id=card_id, title=title, kind=kind, body=_body(kind, card.get("body")), tags=dict(tags))


def card_json(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "version": row["version"], "title": row["title"], "kind": row["kind"],
            "body": json.loads(row["body"]), "tags": json.loads(row["tags"]), "trace_id": row["trace_id"],
            "posted_at": iso_from_epoch(row["posted_at"])}


class CardBoard:
    """Card versions in SQLite, and the idempotency keys of the posts that made them."""

    def __init__(self, ctx: AppContext) -> None:
        self.db = Database(ctx.config.db_path("cards"), SCHEMA)
        self.keys = IdempotencyStore(ctx.config.db_path("card_keys"), ctx.config.dedupe_window_s)

    def post(self, form: CardForm, trace_id: str) -> dict[str, Any]:
        """Store the next version of ``form.id``; the stored card."""
        with self.db.transaction() as conn:
            version = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM cards WHERE id = ?",
                                   (form.id,)).fetchone()[0]
            conn.execute("INSERT INTO cards (id, version, title, kind, body, tags, trace_id, posted_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (form.id, version, form.title, form.kind, json.dumps(form.body), json.dumps(form.tags),
                          trace_id, time.time()))
        rows = self.db.query("SELECT * FROM cards WHERE id = ? AND version = ?", (form.id, version))
        return card_json(rows[0])

    def latest(self) -> list[dict[str, Any]]:
        """The latest version of every card, oldest card first."""
        rows = self.db.query(
            "SELECT c.* FROM cards c JOIN (SELECT id, MAX(version) AS version FROM cards GROUP BY id) m"
            " ON c.id = m.id AND c.version = m.version ORDER BY (SELECT MIN(posted_at) FROM cards f"
            " WHERE f.id = c.id), c.id")
        return [card_json(r) for r in rows]

    def close(self) -> None:
        self.keys.close()
        self.db.close()


_opening = threading.Lock()


def board_of(ctx: AppContext) -> CardBoard:
    """The app's card board, opened on first use (the command center's setup need not know it)."""
    board: CardBoard | None = ctx.services.get(SERVICE)
    if board is None:
        with _opening:
            board = ctx.services.get(SERVICE)
            if board is None:
                board = ctx.services[SERVICE] = CardBoard(ctx)
    return board


def _refuse(request: Request) -> Response | None:
    """401 without a bearer credential, 403 with one that is neither the telemetry key nor the admin token."""
    config = ctx_of(request).config
    given = bearer_token(request)
    if given is None:
        return json_error(401, "credential required: Authorization: Bearer <the telemetry key or the admin token>")
    if token_matches(given, config.admin_token) or token_matches(given, config.telemetry_key):
        return None
    return json_error(403, "credential not accepted: this route needs the telemetry key or the admin token")


async def post_endpoint(request: Request) -> Response:
    refused = _refuse(request)
    if refused is not None:
        return refused
    ctx = ctx_of(request)
    board = await run_in_threadpool(board_of, ctx)

    async def work(body: Any) -> Outcome:
        try:
            form = validate_card(body)
        except CardError as exc:
            return Outcome(422, {"error": exc.message, "field": exc.field})
        card = await run_in_threadpool(board.post, form, request.headers["x-trace-id"].strip())
        return Outcome(201, {"card": card})

    return await run_idempotent(request, board.keys, ROUTE, work)


async def list_endpoint(request: Request) -> Response:
    board = await run_in_threadpool(board_of, ctx_of(request))
    cards = await run_in_threadpool(board.latest)
    return JSONResponse({"cards": cards, "count": len(cards)}, headers={"Cache-Control": "no-store"})
