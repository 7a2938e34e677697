"""The ecosystem's apps in the params: each app's base URL, owner, routes and SLOs.

Split from :mod:`readiness.params.model` to keep each module to one concept;
:class:`readiness.params.model.Params` composes these and re-exports them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from readiness.params.sections import HttpUrl, StrictModel, UrlPath

HTTP_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
_APP_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class Route(StrictModel):
    """An HTTP route of an app, named so that checks and history can refer to it."""

    name: str = Field(min_length=1)
    method: str = "GET"
    path: UrlPath
    hot_path: bool = False
    body: dict[str, Any] | None = None  # JSON sent when probing a mutating route (synthetic data)
    remediation: str | None = None  # named in the report when the route misses its target

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v.upper() not in HTTP_METHODS:
            raise ValueError(f"unknown HTTP method {v!r} (expected one of {', '.join(HTTP_METHODS)})")
        return v.upper()



class Slo(StrictModel):
    """Per-app SLO. Fields left out take the global ``thresholds`` (see Params._slo_defaults)."""

    p95_ms: float = Field(default=120, gt=0)
    error_rate_max: float = Field(default=0.01, gt=0, lt=1)
    availability: float = Field(default=0.999, gt=0, le=1)


class App(StrictModel):
    """One service of the ecosystem (docs/phases.md#targets-and-environments)."""

    id: str
    name: str = Field(min_length=1)
    role: str = Field(min_length=1)
    base_url: HttpUrl
    owner: str = Field(min_length=1)
    health_path: UrlPath = "/health"
    ready_path: UrlPath = "/ready"
    smoke_action: Route
    critical_routes: list[Route] = Field(default_factory=list)
    mutating_routes: list[Route] = Field(default_factory=list)
    slo: Slo = Field(default_factory=Slo)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _APP_ID.match(v):
            raise ValueError(f"app id must be a letter followed by letters, digits, '-' or '_' (max 32), got {v!r}")
        return v


    @model_validator(mode="after")
    def _unique_routes(self) -> App:
        names = [r.name for r in self.critical_routes + self.mutating_routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate route names: {', '.join(dupes)}")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    def url(self, path: str) -> str:
        return self.base_url + path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
