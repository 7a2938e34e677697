"""Which tables of an app may hold synthetic rows, and how a row's namespace is known.

A leaf module: the app context declares its ``synthetic_tables`` with these types, and the
cleanup API (:mod:`sandbox.common.synthetic_cleanup`) reads them, so both depend on this
module and neither on the other.
"""

from __future__ import annotations

import dataclasses
import re

NAMESPACE_COLUMN = "namespace"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


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
