"""Approvals: one function decides, every decision is logged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from readiness.core.approvals import LOG, log_event, require_approval
from readiness.core.runfolder import RunFolder
from readiness.params.model import parse_params
from readiness.params.sections import RESTRICTED_ACTIONS

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
    d = require_approval(params, run, "fault_injection_503", phase="09_resiliency", apps=("A3",))
    assert not d.granted and d.reason == "refused: no approval for this action in params.approvals"
    assert entries(run)[0]["kind"] == "refused" and entries(run)[0]["action"] == "fault_injection_503"


def test_granted_within_scope_and_logged(tmp_path) -> None:
    params, run = make(tmp_path, [{"id": "HITL-A3-503", "action": "fault_injection_503", "scope": "A3 only",
                                   "granted_by": "ceo", "apps": ["A3"]}])
    d = require_approval(params, run, "fault_injection_503", phase="09_resiliency", apps=("A3",))
    assert d.granted and d.approval and d.approval.id == "HITL-A3-503"
    assert entries(run)[0]["approval_id"] == "HITL-A3-503"


@pytest.mark.parametrize(("approval", "kwargs", "why"), [
    ({"apps": ["A3"]}, {"apps": ("A5",)}, "HITL-X does not cover A5 (covers A3)"),
    ({"max_vus": 60}, {"vus": 80}, "HITL-X allows at most 60 virtual users, 80 requested"),
    ({"expires": "2026-01-01"}, {"today": dt.date(2026, 2, 1)}, "HITL-X expired on 2026-01-01"),
    ({"environment": "prod"}, {}, "HITL-X is for prod, this run targets staging"),
    ({"cycles": 3}, {"cycles": 4}, "HITL-X allows at most 3 cycles, 4 requested"),
])
def test_out_of_scope_is_refused_with_reason(tmp_path, approval, kwargs, why) -> None:
    action = "load_over_60_vus"
    params, run = make(tmp_path, [{"id": "HITL-X", "action": action, "scope": "s", "granted_by": "ceo", **approval}])
    d = require_approval(params, run, action, phase="03_baseline_load", **kwargs)
    assert not d.granted and d.reason == f"refused: {why}"


def test_unknown_action_is_an_error(tmp_path) -> None:
    params, run = make(tmp_path, [])
    with pytest.raises(ValueError, match="unknown restricted action 'reboot'"):
        require_approval(params, run, "reboot", phase="x")


def test_escalations_append(tmp_path) -> None:
    params, run = make(tmp_path, [])
    log_event(run, "escalated", reason="Stripe failure")
    require_approval(params, run, "secret_rotation", phase="10_security_ops")
    assert [e["kind"] for e in entries(run)] == ["escalated", "refused"]


@pytest.mark.parametrize("action", RESTRICTED_ACTIONS)
def test_every_restricted_action_is_refused_without_a_valid_approval(tmp_path, action: str) -> None:
    today = dt.date(2026, 6, 1)
    valid = {"id": "HITL-OK", "action": action, "scope": "s", "granted_by": "ceo", "apps": ["A3"],
             "expires": "2026-12-31"}
    cases = {
        "none": [],
        "another action": [{**valid, "action": next(a for a in RESTRICTED_ACTIONS if a != action)}],
        "expired": [{**valid, "expires": "2026-05-31"}],
        "wrong apps": [{**valid, "apps": ["A5"]}],
        "wrong environment": [{**valid, "environment": "prod"}],
    }
    for name, approvals in cases.items():
        params, run = make(tmp_path / name, approvals)
        d = require_approval(params, run, action, phase="p", apps=("A3",), today=today)
        assert not d.granted, name
        assert entries(run)[-1]["kind"] == "refused" and entries(run)[-1]["action"] == action, name
    params, run = make(tmp_path / "valid", [valid])
    assert require_approval(params, run, action, phase="p", apps=("A3",), today=today).granted
