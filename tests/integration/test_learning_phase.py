"""08_learning_autonomy against a live sandbox (ports 29401–29408): retry statistics from A3's
telemetry, and the bandit loop through A7 — applied, observed and restored under the sandbox
approval; BLOCKED with A7's policy untouched when the approval is removed.

A4's render upstream is made flakier than its default (50% instead of 20%) for this module
so that retries at two attempt indices accumulate in seconds rather than a minute.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from readiness.core.check import Status
from readiness.phasekit.context import Phase, open_phase

pytestmark = pytest.mark.integration
PORT_BASE = 29400  # apps on 29401–29408
PHASE = "08_learning_autonomy"


def _edit(data: dict[str, Any]) -> None:
    data["learning"].update({"lookback_s": 300, "observe_max_s": 40, "min_retry_gaps": 20, "simulate_visits": 20_000})
    data["thresholds"]["telemetry_arrival_s"] = 8


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("learning")
    path = params_factory(folder, port_base=PORT_BASE, edit=_edit)
    with start_sandbox(path):
        os.environ["READINESS_OUTPUTS"] = str(folder / "outputs")
        admin(path, "A4", "PUT", "/admin/faults", {"render_flakiness": 0.5})
        yield path


def admin(params_file: Path, app_id: str, method: str, path: str, body: Any = None) -> Any:
    from readiness.params.model import load_params

    url = load_params(params_file).app(app_id).url(path)
    r = httpx.request(method, url, json=body, timeout=10,
                      headers={"Authorization": f"Bearer {os.environ['SANDBOX_ADMIN_TOKEN']}"})
    assert r.status_code == 200, r.text
    return r.json()


def statuses(phase: Phase) -> dict[str, Status]:
    return {c.id: c.status for c in phase.run.read_checks(PHASE)}


def test_without_the_approval_the_change_is_blocked_and_a7_untouched(params_file: Path,
                                                                     tmp_path: Path, params_factory) -> None:
    from readiness.phases.learning import cta_bandit as cta_learning
    from readiness.phases.learning import cta_policy

    state_dir = params_file.parent / "sandbox-state"

    def edit(data: dict[str, Any]) -> None:
        _edit(data)
        data["sandbox"]["state_dir"] = str(state_dir)  # the same running sandbox
        data["approvals"] = [a for a in data["approvals"] if a["action"] != "bandit_policy_change"]

    refused = params_factory(tmp_path, port_base=PORT_BASE, edit=edit)
    phase = open_phase(PHASE, str(refused))
    before = admin(refused, "A7", "GET", "/admin/cta/policy")
    cta_learning.simulate_traffic(phase)
    cta_learning.learn_policy(phase)
    frame = cta_policy.change_policy(phase)
    change = json.loads((phase.run.root / "evidence" / "cta_policy_change.json").read_text())
    assert change["risk"] in ("medium", "high"), "a low-risk change needs no approval: nothing to refuse"
    got = statuses(phase)
    assert got["learning.bandit.policy_change"] is Status.BLOCKED
    assert got["learning.bandit.observed_allocation"] is Status.BLOCKED
    assert "refused: no approval for this action in params.approvals" in frame.loc["learning.bandit.policy_change",
                                                                                    "detail"]
    assert admin(refused, "A7", "GET", "/admin/cta/policy") == before
    entries = [json.loads(line) for line in
               (phase.run.root / "reports" / "hitl_approvals.log").read_text().splitlines()]
    assert [(e["kind"], e["action"]) for e in entries] == [("refused", "bandit_policy_change")]
