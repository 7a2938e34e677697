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

import dataclasses
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
from sandbox.common.web import json_error

ROUTE = "/admin/synthetic"
SAMPLE_IDS = 20
NAMESPACE_COLUMN = "namespace"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_NAMESPACE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_TAG - 1}}}$")
NAMESPACE_REQUIRED = f"namespace is required: {ROUTE}?namespace=<namespace>"
NAMESPACE_INVALID = (f"namespace must be 1 to {MAX_TAG} characters: letters, digits, '_', '-' or '.', "
                     "starting with a letter or digit")


@dataclasses.dataclass(frozen=True)
class SyntheticTable:
    """One table that may hold synthetic rows, and how a row's namespace is known.

    ``match`` is an SQL condition in which every ``?`` is bound to the namespace asked
    for; ``key`` is the column listed as sample ids; ``add_column`` names a nullable
    column :func:`migrate` adds to state files created before the table had it.
    """

    table: str
    match: str = f"{NAMESPACE_COLUMN} = ?"
    key: str = "id"
    add_column: str | None = NAMESPACE_COLUMN

    def __post_init__(self) -> None:
        for name in (self.table, self.key, *([self.add_column] if self.add_column else [])):
            if not _IDENT.match(name):
                raise ValueError(f"synthetic table {self.table!r}: {name!r} is not a lower_snake_case identifier")
        if "?" not in self.match:
            raise ValueError(f"synthetic table {self.table!r}: match must compare with the namespace (a '?')")

    def where(self, namespace: str) -> tuple[str, list[str]]:
        return f"WHERE ({self.match})", [namespace] * self.match.count("?")


def tagged(table: str, *, key: str = "id") -> SyntheticTable:
    """A table with its own ``namespace`` column, filled from the request's ``X-Namespace``."""
    return SyntheticTable(table, key=key)


def tagged_json(table: str, column: str, path: str, *, key: str = "id") -> SyntheticTable:
    """A table that already stores the request's tags as JSON in ``column`` (``path``: ``$.namespace``)."""
    if not _IDENT.match(column) or not re.match(r"^\$(\.[a-z_]+)+$", path):
        raise ValueError(f"synthetic table {table!r}: bad JSON column {column!r} or path {path!r}")
    return SyntheticTable(table, match=f"json_extract({column}, '{path}') = ?", key=key, add_column=None)


def owned_by(table: str, column: str, parent: SyntheticTable, *, key: str = "id",
             own_namespace: bool = False) -> SyntheticTable:
    """Rows that belong to a tagged ``parent`` row through ``column`` (and, with ``own_namespace``,
    rows tagged themselves): declared before the parent, they go first and no foreign key breaks."""
    if not _IDENT.match(column):
        raise ValueError(f"synthetic table {table!r}: {column!r} is not a lower_snake_case identifier")
    via = f"{column} IN (SELECT {parent.key} FROM {parent.table} WHERE ({parent.match}))"
    match = f"{NAMESPACE_COLUMN} = ? OR {via}" if own_namespace else via
    return SyntheticTable(table, match=match, key=key, add_column=NAMESPACE_COLUMN if own_namespace else None)


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
