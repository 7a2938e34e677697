"""The fixed facts about the eight reference apps: ids, roles, upstreams, default ports.

Kept free of web-framework imports so that the launcher and the CLI can read it without
paying for Starlette. Each app declares exactly one *upstream*, the service its deep
readiness check calls over HTTP: most apps depend on the command center (A8) because
that is where their telemetry goes; the student app (A2) and checkout (A5) depend on
identity (A1) because they cannot serve a signed-in user without it; A8 itself depends
on identity for the same reason (its dashboards are signed in).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Role:
    """What one app is for and which of its routes a smoke probe may call safely."""

    app_id: str
    title: str
    summary: str
    module: str
    upstream: str | None
    smoke_path: str


ROLES: dict[str, Role] = {
    role.app_id: role
    for role in (
        Role(
            "A1",
            "Identity",
            "OIDC-style identity provider: discovery document, clients, sessions.",
            "sandbox.apps.a1_identity",
            "A8",
            "/.well-known/openid-configuration",
        ),
        Role(
            "A2",
            "Student app",
            "The learner-facing application: course catalogue and onboarding.",
            "sandbox.apps.a2_student",
            "A1",
            "/api/courses",
        ),
        Role(
            "A3",
            "Orchestration",
            "Autonomous runs that build pages and emit calls to action.",
            "sandbox.apps.a3_orchestration",
            "A8",
            "/api/runs/status",
        ),
        Role(
            "A4",
            "Document hub",
            "Content and document storage for courses and providers.",
            "sandbox.apps.a4_documents",
            "A8",
            "/api/documents",
        ),
        Role(
            "A5",
            "Checkout",
            "Prices and checkout sessions for payments.",
            "sandbox.apps.a5_checkout",
            "A1",
            "/api/prices",
        ),
        Role(
            "A6",
            "Provider portal",
            "The B2B portal where providers publish listings.",
            "sandbox.apps.a6_provider",
            "A8",
            "/api/listings",
        ),
        Role(
            "A7",
            "Marketing",
            "Public marketing pages, sitemap and lead capture.",
            "sandbox.apps.a7_marketing",
            "A8",
            "/sitemap.xml",
        ),
        Role(
            "A8",
            "Command center",
            "Telemetry ingest and store, tiles and dashboards.",
            "sandbox.apps.a8_command_center",
            "A1",
            "/api/tiles",
        ),
    )
}

APP_IDS: tuple[str, ...] = tuple(ROLES)
DEFAULT_BASE_PORT = 18101


def default_port(app_id: str, base_port: int = DEFAULT_BASE_PORT) -> int:
    """Port of ``app_id`` when the apps sit on consecutive ports from ``base_port``."""
    return base_port + APP_IDS.index(app_id)


def base_url(host: str, port: int) -> str:
    """``http://host:port``, with an IPv6 literal in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def role(app_id: str) -> Role:
    """The role of ``app_id``; a clear error for an id the sandbox does not have."""
    try:
        return ROLES[app_id]
    except KeyError:
        raise ValueError(f"unknown sandbox app: {app_id} (known: {', '.join(APP_IDS)})") from None
