"""A8 tile exports: ``GET /api/tiles/{id}/export?format=json|csv``.

An export recomputes one tile (never the cached body of ``/api/tiles``) and adds the rows
behind it, at most ``EXPORT_LIMIT``, newest first: the evidence an audit files next to
its verdict, in JSON or as CSV for a spreadsheet.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.apps.a8_tiles import DEMO_FLAG, compute, definitions
from sandbox.common.context import AppContext, ctx_of
from sandbox.common.web import json_error, utc_now_iso

EXPORT_LIMIT = 10_000
EXPORT_FORMATS = ("json", "csv")


def export_body(ctx: AppContext, tile_id: str) -> dict[str, Any] | None:
    """One tile, freshly computed, with the rows behind it; None for an unknown tile id."""
    found = [d for d in definitions(ctx) if d.id == tile_id]
    if not found:
        return None
    tile = compute(found[0], ctx.services["store"], ctx.flags.enabled(DEMO_FLAG))
    updated = utc_now_iso()
    rows = tile.rows(EXPORT_LIMIT + 1)
    return {"tile": tile.as_json(updated), "exported_at": updated, "demo_mode": ctx.flags.enabled(DEMO_FLAG),
            "row_limit": EXPORT_LIMIT, "truncated": len(rows) > EXPORT_LIMIT, "rows": rows[:EXPORT_LIMIT]}


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV, columns in first-seen order; booleans as true/false, missing values empty."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("true" if v is True else "false" if v is False else v) for k, v in row.items()})
    return out.getvalue()


async def export_endpoint(request: Request) -> Response:
    fmt = request.query_params.get("format", "json")
    if fmt not in EXPORT_FORMATS:
        return json_error(422, "format must be json or csv", field="format")
    tile_id = request.path_params["tile_id"]
    body = await run_in_threadpool(export_body, ctx_of(request), tile_id)
    if body is None:
        return json_error(404, f"unknown tile: {tile_id}")
    if fmt == "json":
        return JSONResponse(body)
    headers = {"Content-Disposition": f'attachment; filename="{tile_id}.csv"'}
    return Response(to_csv(body["rows"]), media_type="text/csv; charset=utf-8", headers=headers)
