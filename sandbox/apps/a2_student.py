"""A2 — student app: the course catalogue learners browse after signing in.

A2 is where fix A of the staging runbook lives: in the "before" state the app has only
liveness, and ``/ready`` answers 404 exactly like an unknown path. With the flag
``a2_readiness`` ON it gains the deep readiness check every other app has; turning the
flag OFF restores the 404 on the next request (the rollback the audit verifies).

The learner's way in — sign-in with A1, checkout on A5, first page from A3 — is in
:mod:`sandbox.apps.a2_onboarding`, the guided first AI action in
:mod:`sandbox.apps.a2_guide`; the learner API (``/api/me``, AI actions that take
credits) in :mod:`sandbox.apps.a2_actions`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.apps.a2_actions import SCHEMA as ACTIONS_SCHEMA
from sandbox.apps.a2_actions import action_routes
from sandbox.apps.a2_guide import guide_routes
from sandbox.apps.a2_onboarding import SCHEMA as ONBOARDING_SCHEMA
from sandbox.apps.a2_onboarding import onboarding_routes
from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.synthetic_tables import owned_by, tagged

SCHEMA = """
CREATE TABLE IF NOT EXISTS courses (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    level TEXT NOT NULL,
    lessons INTEGER NOT NULL,
    published INTEGER NOT NULL DEFAULT 1
);
"""

COURSES = [
    ("course-python-101", "Python foundations", "beginner", 12, 1),
    ("course-data-viz", "Data visualisation that tells the truth", "intermediate", 9, 1),
    ("course-stats-ci", "Confidence intervals in practice", "intermediate", 7, 1),
    ("course-ml-ops", "Shipping models safely", "advanced", 10, 1),
    ("course-draft-sql", "SQL for analysts", "beginner", 8, 0),
]


def seed(ctx: AppContext) -> None:
    ctx.db.seed("courses", ("id", "title", "level", "lessons", "published"), COURSES)


def list_courses(request: Request) -> Response:
    """Published courses only: drafts are not part of the catalogue."""
    rows = ctx_of(request).db.query("SELECT id, title, level, lessons FROM courses WHERE published = 1 ORDER BY id")
    courses = [dict(row) for row in rows]
    return JSONResponse({"courses": courses, "count": len(courses)})


def routes() -> list[BaseRoute]:
    return [Route("/api/courses", list_courses, methods=["GET"]), *onboarding_routes(), *guide_routes(), *action_routes()]


LEARNERS = tagged("learners", key="user_id")
#: A synthetic learner goes with its sessions and actions; a tagged action of another learner goes alone.
SYNTHETIC_TABLES = (owned_by("ai_actions", "user_id", LEARNERS, own_namespace=True),
                    owned_by("learner_sessions", "user_id", LEARNERS, key="user_id"), LEARNERS)

DEFINITION = AppDefinition(app_id="A2", schema=SCHEMA + ONBOARDING_SCHEMA + ACTIONS_SCHEMA, seed=seed, routes=routes,
                           ready_flag="a2_readiness", synthetic_tables=SYNTHETIC_TABLES)
