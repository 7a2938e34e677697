"""Approvals: one function decides, every decision is logged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from readiness.approvals import LOG, log_event, request_approval
from readiness.params import parse_params
from readiness.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[2]


def make(tmp_path, approvals):
    data = yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())
    data["approvals"] = approvals
    params = parse_params(data, "t.yaml", {})
    return params, RunFolder.create(tmp_path, params, ROOT / "params" / "sandbox.yaml")


def entries(run):
    return [json.loads(line) for line in run.path(LOG).read_text().splitlines()]


def test_refused_without_approval(tmp_path) -> None:
    params, run = make(tmp_path, [])
    d = request_approval(params, run, "fault_injection_503", phase="09_resiliency", apps=("A3",))
    assert not d.granted and d.reason == "refused: no approval for this action in params.approvals"
    assert entries(run)[0]["kind"] == "refused" and entries(run)[0]["action"] == "fault_injection_503"


def test_granted_within_scope_and_logged(tmp_path) -> None:
    params, run = make(tmp_path, [{"id": "HITL-A3-503", "action": "fault_injection_503", "scope": "A3 only",
                                   "granted_by": "ceo", "apps": ["A3"]}])
    d = request_approval(params, run, "fault_injection_503", phase="09_resiliency", apps=("A3",))
    assert d.granted and d.approval and d.approval.id == "HITL-A3-503"
    assert entries(run)[0]["approval_id"] == "HITL-A3-503"


@pytest.mark.parametrize(("approval", "kwargs", "why"), [
    ({"apps": ["A3"]}, {"apps": ("A5",)}, "HITL-X does not cover A5 (covers A3)"),
    ({"max_vus": 60}, {"vus": 80}, "HITL-X allows at most 60 virtual users, 80 requested"),
    ({"expires": "2026-01-01"}, {"today": dt.date(2026, 2, 1)}, "HITL-X expired on 2026-01-01"),
    ({"environment": "prod"}, {}, "HITL-X is for prod, this run targets staging"),
])
def test_out_of_scope_is_refused_with_reason(tmp_path, approval, kwargs, why) -> None:
    action = "load_over_60_vus"
    params, run = make(tmp_path, [{"id": "HITL-X", "action": action, "scope": "s", "granted_by": "ceo", **approval}])
    d = request_approval(params, run, action, phase="03_baseline_load", **kwargs)
    assert not d.granted and d.reason == f"refused: {why}"


def test_unknown_action_is_an_error(tmp_path) -> None:
    params, run = make(tmp_path, [])
    with pytest.raises(ValueError, match="unknown restricted action 'reboot'"):
        request_approval(params, run, "reboot", phase="x")


def test_escalations_append(tmp_path) -> None:
    params, run = make(tmp_path, [])
    log_event(run, "escalated", reason="Stripe failure")
    request_approval(params, run, "secret_rotation", phase="10_security_ops")
    assert [e["kind"] for e in entries(run)] == ["escalated", "refused"]
