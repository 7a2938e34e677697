"""The synthetic-data cleanup API every app exposes: ``GET|DELETE /admin/synthetic?namespace=NS``.

An audit leaves rows behind — pages built for a synthetic learner, checkout sessions,
providers, leads, telemetry events — all of them tagged by the requests that created
them (``X-Namespace``, see :data:`sandbox.common.middleware.TAG_HEADERS`). Removing them
must never touch business data, so the rule is narrow and lives here once:

* an app declares the tables that may hold synthetic rows in its
  :class:`~sandbox.common.context.AppDefinition` (``synthetic_tables``), each with the SQL
  condition that says a row belongs to a namespace — a ``namespace`` column filled at
  insert time, a JSON tag already stored with the row, or ownership by a tagged parent
  row (a checkout's ledger entry belongs to its session);
* ``GET`` lists what would go: per table a count and up to :data:`SAMPLE_IDS` ids;
* ``DELETE`` removes exactly those rows, in the declared order (dependents first, so
  foreign keys hold) and in one transaction, and answers the count per table.

A row whose namespace is missing (untagged traffic) or another namespace never matches:
the conditions compare with ``=``, and ``NULL = 'x'`` is not true in SQL. The namespace is
validated before any query; the conditions are written in code, never built from a
request. Both methods need the admin token (401 otherwise), like the rest of ``/admin``.

Older state folders created before a table had its ``namespace`` column are migrated
when the app opens its database (:func:`migrate`): the column is added, nullable, so
their existing rows count as untagged and are kept.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.common.admin import require_admin
from sandbox.common.context import ctx_of
from sandbox.common.middleware import MAX_TAG
from sandbox.common.sqlite import Database
from sandbox.common.synthetic_tables import SyntheticTable
from sandbox.common.web import json_error

ROUTE = "/admin/synthetic"
SAMPLE_IDS = 20
_NAMESPACE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_TAG - 1}}}$")
NAMESPACE_REQUIRED = f"namespace is required: {ROUTE}?namespace=<namespace>"
NAMESPACE_INVALID = (f"namespace must be 1 to {MAX_TAG} characters: letters, digits, '_', '-' or '.', "
                     "starting with a letter or digit")


def namespace_error(value: str | None) -> str | None:
    """Why ``value`` cannot name a namespace, or None when it can."""
    if value is None or not value.strip():
        return NAMESPACE_REQUIRED
    if not _NAMESPACE.match(value):
        return NAMESPACE_INVALID
    return None


def migrate(db: Database, tables: Sequence[SyntheticTable]) -> list[str]:
    """Add each declared ``add_column`` missing from its table; returns ``table.column`` added.

    ``CREATE TABLE IF NOT EXISTS`` leaves a table of an older state folder as it was, so
    the column its insert statements now name is added here, nullable (old rows: untagged).
    """
    added = []
    for spec in tables:
        if spec.add_column is None:
            continue
        columns = {row["name"] for row in db.query(f"PRAGMA table_info({spec.table})")}
        if not columns or spec.add_column in columns:
            continue
        try:
            db.execute(f"ALTER TABLE {spec.table} ADD COLUMN {spec.add_column} TEXT")
        except sqlite3.OperationalError as exc:  # another connection added it first
            if "duplicate column" not in str(exc):
                raise
        added.append(f"{spec.table}.{spec.add_column}")
    return added


def inventory(db: Database, tables: Sequence[SyntheticTable], namespace: str) -> dict[str, Any]:
    """``{"items": {table: count}, "sample": {table: [ids…]}}`` of the rows of ``namespace``."""
    items: dict[str, int] = {}
    sample: dict[str, list[Any]] = {}
    for spec in tables:
        where, params = spec.where(namespace)
        items[spec.table] = int(db.scalar(f"SELECT count(*) FROM {spec.table} {where}", params) or 0)
        rows = db.query(f"SELECT {spec.key} FROM {spec.table} {where} ORDER BY {spec.key} LIMIT ?",
                        [*params, SAMPLE_IDS])
        sample[spec.table] = [row[0] for row in rows]
    return {"items": items, "sample": sample}


def delete(db: Database, tables: Sequence[SyntheticTable], namespace: str) -> dict[str, int]:
    """Delete the rows of ``namespace`` table by table in the declared order, in one transaction."""
    deleted: dict[str, int] = {}
    with db.transaction() as conn:
        for spec in tables:
            where, params = spec.where(namespace)
            deleted[spec.table] = conn.execute(f"DELETE FROM {spec.table} {where}", params).rowcount
    return deleted


@require_admin
async def synthetic(request: Request) -> Response:
    """``GET`` lists, ``DELETE`` removes, the rows of ``?namespace=`` (see the module docstring)."""
    namespace = request.query_params.get("namespace")
    problem = namespace_error(namespace)
    if problem is not None:
        return json_error(422, problem, field="namespace")
    assert namespace is not None
    ctx = ctx_of(request)
    tables = ctx.definition.synthetic_tables
    head = {"app_id": ctx.config.app_id, "namespace": namespace}
    if request.method == "DELETE":
        deleted = await run_in_threadpool(delete, ctx.db, tables, namespace)
        return JSONResponse({**head, "deleted": deleted})
    return JSONResponse({**head, **await run_in_threadpool(inventory, ctx.db, tables, namespace)})


def synthetic_routes() -> list[Route]:
    return [Route(ROUTE, synthetic, methods=["GET", "DELETE"])]
