"""A8's read-only cards: body validation, the write contract over HTTP, latest-wins, the dashboard.

The whole A8 app is built in process and driven through httpx's ASGI transport (the
lifespan is not run: nothing here needs the emitter thread or the outbound client; the
app's context is closed by the fixture).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.apps.a8_cards import CardError, safe_href, validate_card
from sandbox.apps.a8_command_center import DEFINITION
from sandbox.common.config import AppConfig
from sandbox.common.factory import build_app

ADMIN, KEY = "admin-" + secrets.token_hex(8), "telemetry-" + secrets.token_hex(8)


class Client:
    """A synchronous face over the ASGI app, one event loop per request."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://a8.test") as http:
                return await http.request(method, path, **kwargs)
        return asyncio.run(go())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    config = AppConfig(app_id="A8", host="127.0.0.1", port=30190, state_dir=tmp_path, admin_token=ADMIN,
                       app_urls={}, telemetry_key=KEY)
    app = build_app(config, DEFINITION)
    try:
        yield Client(app)
    finally:
        app.state.ctx.close()


def links_card(**changes: Any) -> dict[str, Any]:
    return {"id": "readiness.sandbox.status", "title": "Implementation & validation status", "kind": "links",
            "body": {"run_id": "20240501-120000", "links": [
                {"label": "validation report", "href": "reports/validation_report.md"},
                {"label": "runbook", "href": "https://example.org/runbook"}]}, **changes}


def score_card(**changes: Any) -> dict[str, Any]:
    return {"id": "readiness.sandbox.score", "title": "Enterprise readiness", "kind": "score",
            "body": {"run_id": "20240501-120000", "score": 78.4, "grade": "Yellow",
                     "actions": [{"text": "Fix security.headers.A1", "owner": "identity", "eta": "7d",
                                  "risk": "high"}]}, **changes}


def headers(token: str = KEY, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Idempotency-Key": key or uuid.uuid4().hex,
            "X-Trace-Id": uuid.uuid4().hex}


@pytest.mark.parametrize(("body", "field", "message"), [
    ([], "body", "body must be a JSON object"),
    (links_card(colour="red"), "colour", "unexpected field: colour"),
    (links_card(id="bad id"), "id",
     "id must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"),
    (links_card(id="ok\n"), "id",
     "id must be 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"),
    (links_card(title=" "), "title", "title must be a non-empty string of at most 200 characters"),
    (links_card(kind="chart"), "kind", "kind must be one of links, score"),
    (links_card(body=[]), "body", "body must be a JSON object"),
    (links_card(body={"links": []}), "body.links", "body.links must be a list of 1 to 100 links"),
    (links_card(body={"links": [{"label": "x", "href": "javascript:alert(1)"}]}), "body.links[0].href",
     "body.links[0].href must be an http(s) URL or a relative path"),
    (links_card(body={"links": [{"label": "x", "href": "/a", "rel": "x"}]}), "body.links[0].rel",
     "unexpected field: body.links[0].rel"),
    (links_card(body={"links": [{"href": "/a"}]}), "body.links[0].label",
     "body.links[0].label must be a non-empty string of at most 200 characters"),
    (links_card(body={"links": [{"label": "x", "href": "/a"}], "score": 1}), "body.score",
     "unexpected field: body.score"),
    (score_card(body={"score": 101, "grade": "Red", "actions": []}), "body.score",
     "body.score must be a number between 0 and 100"),
    (score_card(body={"score": True, "grade": "Red", "actions": []}), "body.score",
     "body.score must be a number between 0 and 100"),
    (score_card(body={"score": 50, "actions": []}), "body.grade",
     "body.grade must be a non-empty string of at most 64 characters"),
    (score_card(body={"score": 50, "grade": "Red", "actions": [{"text": "x"}] * 11}), "body.actions",
     "body.actions must be a list of at most 10 actions"),
    (score_card(body={"score": 50, "grade": "Red", "actions": [{"text": "x", "owner": ""}]}),
     "body.actions[0].owner", "body.actions[0].owner must be a non-empty string of at most 64 characters"),
    (links_card(tags={"a": 1}), "tags", "tags must be an object of at most 20 strings of at most 128 characters"),
])
def test_bad_cards_name_the_field(body: Any, field: str, message: str) -> None:
    with pytest.raises(CardError) as err:
        validate_card(body)
    assert (err.value.field, err.value.message) == (field, message)


@pytest.mark.parametrize(("href", "safe"), [
    ("reports/validation_report.md", True), ("../evidence/x.json", True), ("/dashboard", True),
    ("https://example.org/a?b=1", True), ("http://127.0.0.1:8/x", True),
    ("javascript:alert(1)", False), ("data:text/html,x", False), ("//evil.example/x", False),
    ("https:///nohost", False), ("file:///etc/passwd", False), ("a b", False), ("a\\b", False),
])
def test_only_http_or_relative_links_are_safe(href: str, safe: bool) -> None:
    assert safe_href(href) is safe


def test_posting_needs_a_credential_then_the_contract_headers(client: Client) -> None:
    r = client.post("/api/cards", json=links_card())
    assert (r.status_code, r.json()["error"]) == (
        401, "credential required: Authorization: Bearer <the telemetry key or the admin token>")
    r = client.post("/api/cards", json=links_card(), headers=headers(token="wrong"))
    assert (r.status_code, r.json()["error"]) == (
        403, "credential not accepted: this route needs the telemetry key or the admin token")
    r = client.post("/api/cards", json=links_card(), headers={"Authorization": f"Bearer {KEY}"})
    assert (r.status_code, r.json()["error"]) == (428, "missing required headers: X-Idempotency-Key, X-Trace-Id")
    r = client.post("/api/cards", json=links_card(kind="chart"), headers=headers())
    assert (r.status_code, r.json()) == (422, {"error": "kind must be one of links, score", "field": "kind"})
    assert client.get("/api/cards").json() == {"cards": [], "count": 0}


def test_replay_is_idempotent_and_a_new_post_is_a_new_version(client: Client) -> None:
    sent = headers(key="card-key-1")
    first = client.post("/api/cards", json=links_card(), headers=sent)
    assert first.status_code == 201 and first.json()["card"]["version"] == 1
    replay = client.post("/api/cards", json=links_card(), headers=headers(key="card-key-1"))
    assert (replay.status_code, replay.json(), replay.headers.get("idempotent-replayed")) == (201, first.json(), "true")
    changed = client.post("/api/cards", json=links_card(title="Other"), headers=headers(key="card-key-1"))
    assert changed.status_code == 422
    assert changed.json()["error"] == "X-Idempotency-Key was already used with a different request body"
    second = client.post("/api/cards", json=links_card(title="Status, again"), headers=headers(token=ADMIN))
    assert second.status_code == 201 and second.json()["card"]["version"] == 2
    client.post("/api/cards", json=score_card(), headers=headers())
    listed = client.get("/api/cards").json()
    assert listed["count"] == 2
    assert [(c["id"], c["version"], c["title"]) for c in listed["cards"]] == [
        ("readiness.sandbox.status", 2, "Status, again"), ("readiness.sandbox.score", 1, "Enterprise readiness")]
    assert listed["cards"][1]["body"]["actions"][0] == {"text": "Fix security.headers.A1", "owner": "identity",
                                                       "eta": "7d", "risk": "high"}


def test_there_is_no_way_to_edit_a_card(client: Client) -> None:
    client.post("/api/cards", json=links_card(), headers=headers())
    for method in ("PUT", "PATCH", "DELETE"):
        assert client.request(method, "/api/cards", headers=headers()).status_code == 405
        assert client.request(method, "/api/cards/readiness.sandbox.status", headers=headers()).status_code == 404


def test_the_dashboard_shows_cards_escaped_and_without_controls(client: Client) -> None:
    hostile = links_card(title="<script>alert(1)</script>", body={"text": "<b>bold</b>", "links": [
        {"label": "<i>report</i>", "href": "reports/validation_report.md"},
        {"label": "runbook", "href": "https://example.org/run?a=1&b=2"}]})
    assert client.post("/api/cards", json=hostile, headers=headers()).status_code == 201
    assert client.post("/api/cards", json=score_card(), headers=headers()).status_code == 201
    page = client.get("/dashboard").text
    cards = page[page.index('<section id="cards"'):]
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in cards
    assert "&lt;b&gt;bold&lt;/b&gt;" in cards and "&lt;i&gt;report&lt;/i&gt;: <code>reports/validation_report.md</code>" \
        in cards
    assert '<a href="https://example.org/run?a=1&amp;b=2" rel="noopener noreferrer">runbook</a>' in cards
    assert re.findall(r'data-card-id="([^"]+)" data-version="(\d+)"', cards) == [
        ("readiness.sandbox.status", "1"), ("readiness.sandbox.score", "1")]
    assert 'data-grade="Yellow"' in cards and "Fix security.headers.A1" in cards
    assert not re.search(r"<(button|form|input|select|textarea)\b", cards)
