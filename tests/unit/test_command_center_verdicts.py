"""How fixes C and D turn observations into checks, without a sandbox: timings and verdict wiring."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from readiness.core.check import Status
from readiness.params.model import load_params
from readiness.phasekit import command_center as cc

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def phase() -> types.SimpleNamespace:
    return types.SimpleNamespace(name="06_telemetry_contract", params=load_params(ROOT / "params" / "sandbox.yaml"))


def test_banner_timing_follows_the_active_windows(phase: types.SimpleNamespace) -> None:
    assert cc.BannerTiming.of(phase) == cc.BannerTiming(ttl_s=10.0, recovery_s=5.0, grace_s=2.0)
    full = types.SimpleNamespace(params=phase.params.model_copy(
        update={"windows": phase.params.windows.model_copy(update={"profile": "full"})}))
    assert cc.BannerTiming.of(full) == cc.BannerTiming(ttl_s=300.0, recovery_s=900.0, grace_s=180.0)


def banner_seen(expiry: dict[str, Any], recovery: dict[str, Any], **clears: int | None) -> dict[str, Any]:
    return {"expiry": {"observed_after_s": 12.0, **expiry}, "recovery": {"observed_after_s": 7.0, **recovery},
            "health_requests": 35, "clear_no_credential": 401, "clear_wrong_credential": 403, "clear_admin": 200,
            **clears}


def test_a_banner_that_recovers_instead_of_expiring_is_not_a_ttl_pass(phase: types.SimpleNamespace) -> None:
    seen = banner_seen({"active": False, "cleared_reason": "recovered"}, {"active": False,
                                                                          "cleared_reason": "recovered"})
    checks = {c.id: c for c in cc._banner_checks(phase, "after", ("e.json",), seen)}
    assert checks["banners.after.ttl_expiry"].status is Status.FAIL
    assert checks["banners.after.ttl_expiry"].detail == ("observed 'recovered' does not meet == 'expired'; "
                                                         "cleared 12 s after raise")
    assert checks["banners.after.recovery_clear"].status is Status.PASS
    assert checks["banners.after"].status is Status.FAIL


def test_an_unreadable_banner_is_inconclusive_and_open_clears_fail(phase: types.SimpleNamespace) -> None:
    seen = banner_seen({"active": None, "error": 502}, {"active": True}, clear_no_credential=200,
                       clear_wrong_credential=200)
    checks = {c.id: c for c in cc._banner_checks(phase, "before", ("e.json",), seen)}
    assert checks["banners.before.ttl_expiry"].status is Status.INCONCLUSIVE
    assert checks["banners.before.recovery_clear"].status is Status.FAIL
    assert checks["banners.before.clear_no_credential"].status is Status.FAIL
    assert checks["banners.before"].status is Status.FAIL
    assert checks["banners.before"].evidence == ("e.json",)


def demo_seen(live_ids: list[str], labels: list[str], row_label: str, badge: bool | None) -> dict[str, Any]:
    ids = ["t1", "t2", "t3"]
    return {"trace_ids": ids, "badge": badge, "browser_note": "",
            "live": {"tile": {"labels": labels}, "rows": [{"trace_id": t} for t in [*live_ids, "biz"]]},
            "diagnostics": {"rows": [{"trace_id": t, "label": row_label} for t in [*ids, "biz"]]}}


def test_demo_mode_verdicts_per_state(phase: types.SimpleNamespace) -> None:
    excluded = ["DEMO — simulated revenue", "simulated revenue excluded: 150 cents"]
    after = {c.id: c.status for c in cc._demo_checks(phase, "after", demo_seen([], excluded, "simulated", True),
                                                     ("x.json",), ("p.png",))}
    assert set(after.values()) == {Status.PASS}
    before = {c.id: c for c in cc._demo_checks(phase, "before", demo_seen(["t1", "t2", "t3"], [], "", False),
                                               ("x.json",), ("p.png",))}
    assert before["demo_mode.before.live_excludes_simulated"].detail == (
        "observed 3 events does not meet == 0 events; 3 of 3 posted synthetic events in finance_revenue_live")
    assert [c.status for c in before.values()] == [Status.FAIL, Status.PASS, Status.FAIL, Status.FAIL, Status.FAIL]
    assert before["demo_mode.before.badge"].evidence == ("p.png",)
    leaked_once = {c.id: c.status for c in cc._demo_checks(phase, "after", demo_seen(["t2"], excluded, "simulated",
                                                                                     True), ("x.json",), ("p.png",))}
    assert leaked_once["demo_mode.after"] is Status.FAIL
    rollback = {c.id: c.status for c in cc._demo_checks(phase, "rollback", demo_seen(["t1", "t2", "t3"], [], "", False),
                                                        ("x.json",), ("p.png",))}
    assert set(rollback.values()) == {Status.PASS}
    assert "demo_mode.rollback.live_includes_simulated" in rollback
