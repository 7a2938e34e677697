"""A4 — document hub: content and documents that courses and providers link to.

Its smoke action lists the document metadata (never the content) from SQLite.

``POST /api/render`` renders content for A3's orchestration runs and page previews. It
is a flaky dependency on purpose: by default one call in five answers 503 (the
``render_flakiness`` fault knob, 0.2 unless set; ``DELETE /admin/faults`` restores 0.2,
not 0), so that A3's retries happen in normal operation and an audit can observe them.
The draws come from a random generator of the renderer's own, seeded from the sandbox
seed, so a fresh A4 fails the same calls from run to run and no other knob's draws
shift. The shared ``force_503_s`` knob still makes every route answer 503, this one
included: that is the outage an audit injects.
"""

from __future__ import annotations

import math
import random
import threading
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.common.context import AppContext, AppDefinition, ctx_of
from sandbox.common.knobs import KnobError
from sandbox.common.web import BadBody, json_error, read_json, utc_now_iso

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


RENDER_ROUTE = "/api/render"
KNOB = "render_flakiness"
DEFAULT_FLAKINESS = 0.2
MAX_RUN_ID = 128
TEMPLATES = {
    "orchestration_cycle": "Course page refreshed by the orchestration run",
    "page_preview": "Preview of the learner's next page",
}


class RenderFlakiness:
    """The ``render_flakiness`` knob (an :class:`~sandbox.common.knobs.ExtraKnob`) and its seeded draws."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._lock = threading.Lock()
        self._rate = DEFAULT_FLAKINESS

    def validate(self, value: Any) -> float:
        ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
        if not ok or not 0 <= value <= 1:
            raise KnobError(KNOB, f"{KNOB} must be a number between 0 and 1")
        return float(value)

    def apply(self, value: Any) -> None:
        with self._lock:
            self._rate = float(value)

    def snapshot(self) -> float:
        with self._lock:
            return self._rate

    def reset(self) -> None:
        self.apply(DEFAULT_FLAKINESS)

    def fails(self) -> bool:
        """One draw: does this render call fail?"""
        with self._lock:
            return self._rate > 0 and self._rng.random() < self._rate


def setup_render(ctx: AppContext) -> None:
    """Register the ``render_flakiness`` knob with its own seeded generator."""
    knob = RenderFlakiness(random.Random(f"{ctx.config.seed}:{ctx.config.app_id}:render"))
    ctx.faults.register(KNOB, knob)
    ctx.services["render"] = knob


def _render_request(body: Any) -> tuple[str, str | None] | str:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    unexpected = sorted(set(body) - {"template", "run_id"})
    if unexpected:
        return f"unexpected field: {unexpected[0]}"
    template, run_id = body.get("template"), body.get("run_id")
    if template not in TEMPLATES:
        return f"template must be one of {', '.join(sorted(TEMPLATES))}"
    if run_id is not None and (not isinstance(run_id, str) or not run_id or len(run_id) > MAX_RUN_ID):
        return f"run_id must be null or a non-empty string of at most {MAX_RUN_ID} characters"
    return template, run_id


async def render(request: Request) -> Response:
    """Render one piece of content (no side effect: nothing is stored, so no idempotency key)."""
    try:
        body = await read_json(request)
    except BadBody as exc:
        return json_error(400, str(exc))
    valid = _render_request(body)
    if isinstance(valid, str):
        return json_error(422, valid)
    template, run_id = valid
    knob: RenderFlakiness = ctx_of(request).services["render"]
    if knob.fails():
        return json_error(503, f"renderer busy, try again (fault knob {KNOB})")
    return JSONResponse({"rendered": True, "template": template, "run_id": run_id,
                         "html": f"<section><h1>{TEMPLATES[template]}</h1></section>", "rendered_at": utc_now_iso()})


def list_documents(request: Request) -> Response:
    rows = ctx_of(request).db.query(
        "SELECT id, title, kind, size_bytes, owner_app, updated_at FROM documents ORDER BY id"
    )
    documents = [dict(r) for r in rows]
    return JSONResponse({"documents": documents, "count": len(documents)})


def routes() -> list[BaseRoute]:
    return [Route("/api/documents", list_documents, methods=["GET"]), Route(RENDER_ROUTE, render, methods=["POST"])]


DEFINITION = AppDefinition(app_id="A4", schema=SCHEMA, seed=seed, routes=routes, setup=setup_render)
