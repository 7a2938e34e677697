"""Incident banners: body validation, and the TTL / recovery rule driven by an explicit clock."""

from __future__ import annotations

import datetime as dt
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.apps import a8_banners
from sandbox.apps.a8_banners import BannerBoard, BannerError, BannerForm, validate_banner
from sandbox.common.knobs import Flags
from sandbox.common.sqlite import Database
from sandbox.telemetry.store import SCHEMA as STORE_SCHEMA
from sandbox.telemetry.store import TelemetryStore


@pytest.fixture
def board(tmp_path: Path) -> Iterator[BannerBoard]:
    db = Database(tmp_path / "a8.sqlite", STORE_SCHEMA + a8_banners.SCHEMA)
    ctx = types.SimpleNamespace(db=db, flags=Flags({"a8_banner_ttl": True}), services={})
    store = TelemetryStore(db, 900.0)
    yield BannerBoard(ctx, store)  # type: ignore[arg-type]  # sweeper not started: the test holds the clock
    db.close()


def raise_one(board: BannerBoard, *, app_id: str = "A3", ttl_s: float = 60.0, recovery_s: float = 10.0,
              key: str | None = None, digest: str = "h1") -> dict[str, Any]:
    form = BannerForm(app_id=app_id, message="degraded", severity="major", ttl_s=ttl_s, recovery_s=recovery_s,
                      tags={})
    status, body, _ = board.raise_banner(form, key or uuid.uuid4().hex, "trace-1", digest, {"test_run": "true"})
    assert status == 201
    return body["banner"]


def raised_at(board: BannerBoard, banner_id: str) -> float:
    return float(board.ctx.db.scalar("SELECT raised_at FROM banners WHERE id = ?", (banner_id,)))


def health(board: BannerBoard, app_id: str, at: float, status: int) -> None:
    stamp = dt.datetime.fromtimestamp(at, dt.UTC).isoformat()
    board.store.ingest([{"event_type": "http_request", "timestamp": stamp, "app_id": app_id, "status": status,
                         "trace_id": uuid.uuid4().hex, "idempotency_key": uuid.uuid4().hex}], "test")


@pytest.mark.parametrize(("body", "field", "message"), [
    ([], "body", "body must be a JSON object"),
    ({"app_id": "A3", "message": "x", "colour": "red"}, "colour", "unexpected field: colour"),
    ({"message": "x"}, "app_id", "app_id must be a non-empty string of at most 64 characters"),
    ({"app_id": "A3", "message": "  "}, "message", "message must be a non-empty string of at most 500 characters"),
    ({"app_id": "A3", "message": "x", "severity": "fatal"}, "severity",
     "severity must be one of info, minor, major, critical"),
    ({"app_id": "A3", "message": "x", "ttl_s": 0}, "ttl_s",
     "ttl_s must be a number of seconds greater than 0 and at most 86400"),
    ({"app_id": "A3", "message": "x", "recovery_s": True}, "recovery_s",
     "recovery_s must be a number of seconds greater than 0 and at most 3600"),
    ({"app_id": "A3", "message": "x", "tags": {"a": 1}}, "tags",
     "tags must be an object of at most 20 strings of at most 128 characters"),
])
def test_bad_bodies_name_the_field(body: Any, field: str, message: str) -> None:
    with pytest.raises(BannerError) as err:
        validate_banner(body)
    assert (err.value.field, err.value.message) == (field, message)


def test_defaults_are_filled_in() -> None:
    assert validate_banner({"app_id": " A3 ", "message": "slow"}) == BannerForm(
        app_id="A3", message="slow", severity="major", ttl_s=900.0, recovery_s=60.0, tags={})


def test_a_banner_expires_at_its_ttl_only_with_the_flag_on(board: BannerBoard) -> None:
    banner = raise_one(board, ttl_s=5.0)
    t0 = raised_at(board, banner["id"])
    board.ctx.flags.update({"a8_banner_ttl": False})
    assert board.sweep(now=t0 + 3600) == 0  # the original behaviour: stale forever
    board.ctx.flags.update({"a8_banner_ttl": True})
    assert board.sweep(now=t0 + 4.9) == 0
    assert board.sweep(now=t0 + 5.0) == 1
    cleared = board.get(banner["id"])
    assert (cleared["active"], cleared["cleared_reason"]) == (False, "expired")
    assert board.active() == []


def test_recovery_needs_a_clean_window_after_the_raise(board: BannerBoard) -> None:
    banner = raise_one(board, recovery_s=10.0)
    t0 = raised_at(board, banner["id"])
    for offset in (1, 2, 3):
        health(board, "A3", t0 + offset, 200)
    assert board.sweep(now=t0 + 9.9) == 0  # the window would start before the raise
    health(board, "A3", t0 + 11, 503)
    for offset in (12, 13):
        health(board, "A3", t0 + offset, 200)
    assert board.sweep(now=t0 + 14) == 0  # a server error inside the window
    assert board.sweep(now=t0 + 21.5) == 0  # clean since t0+11.5, but only two healthy events
    health(board, "A3", t0 + 20, 204)
    health(board, "A4", t0 + 20, 500)  # another app's errors do not matter
    assert board.sweep(now=t0 + 21.5) == 1
    assert board.get(banner["id"])["cleared_reason"] == "recovered"


def test_an_app_without_telemetry_waits_for_the_ttl(board: BannerBoard) -> None:
    banner = raise_one(board, app_id="Z9", ttl_s=30.0, recovery_s=1.0)
    t0 = raised_at(board, banner["id"])
    assert board.sweep(now=t0 + 29) == 0
    assert board.sweep(now=t0 + 30) == 1
    assert board.get(banner["id"])["cleared_reason"] == "expired"


def test_replays_return_the_banner_and_a_changed_body_is_refused(board: BannerBoard) -> None:
    first = raise_one(board, key="k1")
    form = BannerForm(app_id="A3", message="degraded", severity="major", ttl_s=60.0, recovery_s=10.0, tags={})
    status, body, replayed = board.raise_banner(form, "k1", "trace-2", "h1", {})
    assert (status, body["banner"]["id"], replayed) == (201, first["id"], True)
    status, body, replayed = board.raise_banner(form, "k1", "trace-3", "other", {})
    assert (status, body, replayed) == (422, {"error": "X-Idempotency-Key was already used with a different "
                                                       "request body"}, False)
    assert first["tags"] == {"test_run": "true"}


def test_an_admin_clear_is_final_and_idempotent(board: BannerBoard) -> None:
    banner = raise_one(board)
    cleared = board.clear(banner["id"])
    assert (cleared["active"], cleared["cleared_reason"]) == (False, "admin")
    again = board.clear(banner["id"])
    assert again["cleared_at"] == cleared["cleared_at"]
    assert board.clear("ban_missing") is None


def test_the_sweeper_thread_clears_without_a_reader(board: BannerBoard) -> None:
    banner = raise_one(board, ttl_s=0.2)
    board.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            row = board.ctx.db.query("SELECT cleared_reason FROM banners WHERE id = ?", (banner["id"],))[0]
            if row["cleared_reason"]:
                break
            time.sleep(0.05)
        assert row["cleared_reason"] == "expired"
    finally:
        board.close()
