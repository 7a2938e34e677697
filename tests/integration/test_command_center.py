"""A8 as the command center: tiles from posted events, banners over HTTP, fixes C and D end to end.

The sandbox of this module runs on ports 28951–28958 in a private state folder, with the
quick windows shortened further (TTL 2 s, recovery 1.5 s) so that the before/after/
rollback scenarios of :mod:`readiness.phasekit.command_center` take seconds. Posting business
and synthetic revenue on purpose, it must not share a sandbox with any other module.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import Params, load_params
from readiness.phasekit import command_center
from readiness.phasekit.context import Phase
from readiness.probe.sandbox_control import set_flag

pytestmark = pytest.mark.integration

PORT_BASE = 28950


def short_windows(data: dict[str, Any]) -> None:
    data["windows"]["quick"] = {"stable_window_s": 20, "burn_in_s": 1.5, "dedupe_s": 30, "sustained_s": 2}


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[Path]:
    path = params_factory(tmp_path_factory.mktemp("command-center"), port_base=PORT_BASE, edit=short_windows)
    with start_sandbox(path):
        yield path


@pytest.fixture(scope="module")
def params(params_file: Path) -> Params:
    return load_params(params_file)


@pytest.fixture
def phase(params: Params, params_file: Path, tmp_path: Path) -> Phase:
    run = RunFolder.create(tmp_path / "outputs", params, params_file, mode="interactive")
    return Phase(name="06_telemetry_contract", params=params, params_file=params_file, run=run)


@pytest.fixture
def a8(params: Params) -> str:
    return params.app("A8").base_url


@pytest.fixture(autouse=True)
def flags_off(params_file: Path, params: Params) -> Iterator[None]:
    yield
    for flag in ("a8_banner_ttl", "a8_demo_mode"):
        set_flag(params, "A8", flag, False)


def key_headers(**extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['A8_TELEMETRY_KEY']}", "X-Idempotency-Key": uuid.uuid4().hex,
            "X-Trace-Id": uuid.uuid4().hex, **extra}


def contract() -> dict[str, str]:
    return {"X-Idempotency-Key": uuid.uuid4().hex, "X-Trace-Id": uuid.uuid4().hex}


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {os.environ['SANDBOX_ADMIN_TOKEN']}"}


def event(event_type: str, app_id: str, **fields: Any) -> dict[str, Any]:
    return {"event_type": event_type, "timestamp": dt.datetime.now(dt.UTC).isoformat(), "app_id": app_id,
            "trace_id": uuid.uuid4().hex, "idempotency_key": uuid.uuid4().hex, **fields}


def export(a8: str, tile: str) -> dict[str, Any]:
    r = httpx.get(f"{a8}/api/tiles/{tile}/export")
    assert r.status_code == 200
    return r.json()


def test_tiles_are_computed_from_posted_events(a8: str, params: Params) -> None:
    before = {t: export(a8, t)["tile"]["value"] for t in ("growth_signups", "finance_revenue_live", "b2b_billing")}
    money = {"currency": "usd", "stripe_mode": "live"}
    business = event("revenue_settled", "A5", finance_metrics={"amount_cents": 1900, **money}, tags={})
    simulated = event("revenue_settled", "A5", finance_metrics={"amount_cents": 50, **money},
                      tags={"namespace": "simulated_audit", "test_run": "true"})
    signup = event("identity_ok", "A1", signup=True)
    billed = event("provider_usage_billed", "A6", finance_metrics={"provider_fee_cents": 75, "ai_markup_cents": 300})
    posted = httpx.post(f"{a8}/api/telemetry/events", headers=key_headers(),
                        json={"events": [business, simulated, signup, event("identity_ok", "A1", signup=False),
                                         billed]})
    assert posted.json() == {"accepted": 5, "duplicates": 0, "rejected": []}

    live = export(a8, "finance_revenue_live")
    assert live["tile"]["value"] - before["finance_revenue_live"] == 1950  # flag OFF: the leak
    assert {business["trace_id"], simulated["trace_id"]} <= set(live["tile"]["recent_trace_ids"])
    assert export(a8, "growth_signups")["tile"]["value"] - before["growth_signups"] == 1
    assert signup["trace_id"] in export(a8, "growth_signups")["tile"]["recent_trace_ids"]
    billing = export(a8, "b2b_billing")["tile"]
    assert billing["value"] - before["b2b_billing"] == 375 and billed["trace_id"] in billing["recent_trace_ids"]

    set_flag(params, "A8", "a8_demo_mode", True)
    live = export(a8, "finance_revenue_live")
    assert simulated["trace_id"] not in {r["trace_id"] for r in live["rows"]}
    assert business["trace_id"] in {r["trace_id"] for r in live["rows"]}
    diagnostics = export(a8, "finance_revenue_diagnostics")
    ours = {r["trace_id"]: r["label"] for r in diagnostics["rows"]}
    assert (ours[simulated["trace_id"]], ours[business["trace_id"]]) == ("simulated", "business")
    body = httpx.get(f"{a8}/api/tiles").json()  # the cache is dropped when the flag changes
    assert body["demo_mode"] is True
    tile = {t["id"]: t for t in body["tiles"]}["finance_revenue_live"]
    assert tile["labels"][0] == "DEMO — simulated revenue" and simulated["trace_id"] not in tile["recent_trace_ids"]
    csv = httpx.get(f"{a8}/api/tiles/finance_revenue_diagnostics/export?format=csv")
    assert csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert csv.text.splitlines()[0].startswith("timestamp,trace_id,app_id,event_type,status,amount_cents")
    assert f",{simulated['trace_id']},A5,revenue_settled," in csv.text


def test_tile_export_refuses_unknown_tiles_and_formats(a8: str) -> None:
    r = httpx.get(f"{a8}/api/tiles/nope/export")
    assert (r.status_code, r.json()) == (404, {"error": "unknown tile: nope"})
    r = httpx.get(f"{a8}/api/tiles/b2b_billing/export?format=xml")
    assert (r.status_code, r.json()) == (422, {"error": "format must be json or csv", "field": "format"})


def test_banner_routes_check_credentials_headers_and_body(a8: str, params: Params) -> None:
    body = {"app_id": "A3", "message": "queue backlog"}
    r = httpx.post(f"{a8}/api/banners", json=body, headers=contract())
    assert (r.status_code, r.json()) == (401, {"error": "credential required: Authorization: Bearer "
                                                        "<the telemetry key or the admin token>"})
    r = httpx.post(f"{a8}/api/banners", json=body, headers={**contract(), "Authorization": "Bearer nope"})
    assert (r.status_code, r.json()) == (403, {"error": "credential not accepted: this route needs the telemetry "
                                                        "key or the admin token"})
    r = httpx.post(f"{a8}/api/banners", json=body, headers=admin())
    assert (r.status_code, r.json()["missing"]) == (428, ["X-Idempotency-Key", "X-Trace-Id"])
    r = httpx.post(f"{a8}/api/banners", json={**body, "ttl_s": -1}, headers=key_headers())
    assert (r.status_code, r.json()) == (422, {"error": "ttl_s must be a number of seconds greater than 0 and at "
                                                        "most 86400", "field": "ttl_s"})
    headers = key_headers(**{"X-Test-Run": "true"})
    first = httpx.post(f"{a8}/api/banners", json=body, headers=headers)
    replay = httpx.post(f"{a8}/api/banners", json=body, headers=headers)
    assert (first.status_code, replay.status_code, replay.headers["idempotent-replayed"]) == (201, 201, "true")
    banner = first.json()["banner"]
    assert replay.json() == {"banner": {**banner, "age_s": replay.json()["banner"]["age_s"]}}
    assert banner["tags"] == {"test_run": "true"} and banner["active"] is True
    assert banner["id"] in {b["id"] for b in httpx.get(f"{a8}/api/banners").json()["banners"]}
    assert 'data-banner-id="' + banner["id"] + '"' in httpx.get(f"{a8}/dashboard").text

    set_flag(params, "A8", "a8_banner_ttl", True)
    url = f"{a8}/api/banners/{banner['id']}"
    r = httpx.delete(url, headers=contract())
    assert (r.status_code, r.json()) == (401, {"error": "credential required: Authorization: Bearer "
                                                        "<the admin token>"})
    r = httpx.delete(url, headers=key_headers())  # the telemetry key raises banners, it does not clear them
    assert (r.status_code, r.json()) == (403, {"error": "credential not accepted: this route needs the admin token"})
    r = httpx.delete(url, headers={**admin(), **contract()})
    assert (r.status_code, r.json()["banner"]["cleared_reason"]) == (200, "admin")

    set_flag(params, "A8", "a8_banner_ttl", False)  # the original, open clear
    other = httpx.post(f"{a8}/api/banners", json=body, headers=key_headers()).json()["banner"]
    r = httpx.delete(f"{a8}/api/banners/{other['id']}", headers=contract())
    assert (r.status_code, r.json()["banner"]["active"]) == (200, False)
    r = httpx.get(f"{a8}/api/banners/ban_missing")
    assert (r.status_code, r.json()) == (404, {"error": "unknown banner: ban_missing"})


def statuses(frame: Any) -> dict[str, str]:
    return dict(zip(frame.index, frame["status"], strict=True))


def test_check_banners_fails_before_passes_after_and_rolls_back(phase: Phase, a8: str) -> None:
    got = statuses(command_center.check_banners(phase))
    assert got == {
        "banners.before.ttl_expiry": "FAIL", "banners.before.recovery_clear": "FAIL",
        "banners.before.clear_no_credential": "FAIL", "banners.before.clear_wrong_credential": "FAIL",
        "banners.before.clear_admin": "PASS", "banners.before": "FAIL",
        "banners.after.ttl_expiry": "PASS", "banners.after.recovery_clear": "PASS",
        "banners.after.clear_no_credential": "PASS", "banners.after.clear_wrong_credential": "PASS",
        "banners.after.clear_admin": "PASS", "banners.after": "PASS",
        "banners.rollback.ttl_ignored": "PASS", "banners.rollback.clear_open": "PASS", "banners.rollback": "PASS",
    }
    recorded = {c.id: c for c in phase.run.read_checks(phase.name)}
    assert recorded["banners.after"].evidence == ("evidence/banners_after.json",)
    # the flag OFF plants the defect on purpose: the before state is a demonstration, never scored
    assert all(c.demonstration == (".before" in c.id) for c in recorded.values())
    assert phase.run.path("evidence/banners_before.json").is_file()
    flags = httpx.get(f"{a8}/admin/flags", headers=admin()).json()
    assert flags["a8_banner_ttl"] is False  # the configured value is restored
    assert httpx.get(f"{a8}/api/banners").json()["banners"] == []  # the check cleans up after itself


def test_check_demo_mode_without_a_browser_is_never_a_pass(phase: Phase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command_center, "CHROMIUM", Path("/nonexistent/chromium"))
    got = statuses(command_center.check_demo_mode(phase))
    assert got == {
        "demo_mode.before.live_excludes_simulated": "FAIL", "demo_mode.before.diagnostics_includes_simulated": "PASS",
        "demo_mode.before.simulated_labelled": "FAIL", "demo_mode.before.badge": "INCONCLUSIVE",
        "demo_mode.before": "FAIL",
        "demo_mode.after.live_excludes_simulated": "PASS", "demo_mode.after.diagnostics_includes_simulated": "PASS",
        "demo_mode.after.simulated_labelled": "PASS", "demo_mode.after.badge": "INCONCLUSIVE",
        "demo_mode.after": "INCONCLUSIVE",
        "demo_mode.rollback.live_includes_simulated": "PASS",
        "demo_mode.rollback.diagnostics_includes_simulated": "PASS",
        "demo_mode.rollback.simulated_labelled": "PASS", "demo_mode.rollback.badge": "INCONCLUSIVE",
        "demo_mode.rollback": "INCONCLUSIVE",
    }
    badge = {c.id: c for c in phase.run.read_checks(phase.name)}["demo_mode.after.badge"]
    assert badge.status is Status.INCONCLUSIVE and badge.detail == "no data; no Chromium at /nonexistent/chromium"
    csv = phase.run.path("evidence/finance_tile_exports/after_finance_revenue_diagnostics.csv").read_text()
    live = phase.run.path("evidence/finance_tile_exports/after_finance_revenue_live.csv").read_text()
    record = yaml.safe_load(phase.run.path("evidence/demo_mode_after.json").read_text())
    assert all(t in csv and t not in live for t in record["trace_ids"])
    assert record["a8_demo_mode"] is True and record["badge_visible"] is None
