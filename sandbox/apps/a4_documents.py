"""A4 — document hub: content and documents that courses and providers link to.

Its smoke action lists the document metadata (never the content) from SQLite.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.web import utc_now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    kind TEXT NOT NULL,
    size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
    owner_app TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


def seed(ctx: AppContext) -> None:
    now = utc_now_iso()
    ctx.db.seed(
        "documents",
        ("id", "title", "kind", "size_bytes", "owner_app", "updated_at"),
        [
            ("doc-syllabus-py101", "Python foundations — syllabus", "syllabus", 18_432, "A2", now),
            ("doc-provider-terms", "Provider terms of service", "policy", 42_118, "A6", now),
            ("doc-refund-policy", "Refund policy", "policy", 9_870, "A5", now),
            ("doc-brand-kit", "Brand kit", "asset", 1_204_224, "A7", now),
        ],
    )


def list_documents(request: Request) -> Response:
    rows = ctx_of(request).db.query(
        "SELECT id, title, kind, size_bytes, owner_app, updated_at FROM documents ORDER BY id"
    )
    documents = [dict(r) for r in rows]
    return JSONResponse({"documents": documents, "count": len(documents)})


def routes() -> list[BaseRoute]:
    return [Route("/api/documents", list_documents, methods=["GET"])]


DEFINITION = AppDefinition(app_id="A4", schema=SCHEMA, seed=seed, routes=routes)
