"""Params of the load and autonomy phases: bounded values, known apps, exact messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from readiness.params.model import load_params

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "params" / "sandbox.yaml"


def test_sandbox_sections_and_labelled_approvals() -> None:
    p = load_params(SANDBOX)
    assert p.load.vus <= 20 and p.load.vu_scenario.vus <= 20 and p.resiliency.concurrency <= 20
    assert p.load.autonomy_signals == ["run_progress", "cta_emitted", "page_published", "orchestration_cycle_complete"]
    assert p.resiliency.cycles == 3 and p.resiliency.cycle_s.full == 120
    assert (p.learning.reward.page_view, p.learning.reward.lead, p.learning.reward.checkout,
            p.learning.reward.complaint) == (0.05, 0.3, 0.65, -0.4)
    by_action = {a.action: a for a in p.approvals}
    assert set(by_action) == {"fault_injection_503", "bandit_policy_change", "gate_1_staging_mutation"}
    for appr in p.approvals:  # a sandbox approval says so where a reviewer reads it
        assert appr.id.startswith("SANDBOX-") and "SANDBOX ONLY" in appr.scope and "not a human" in appr.granted_by
    assert by_action["fault_injection_503"].cycles == 3 and by_action["fault_injection_503"].apps == ["A3", "A4"]


def test_staging_example_holds_no_sandbox_approval() -> None:
    env = {f"A{i}_BASE_URL": f"https://a{i}.staging.example.com" for i in range(1, 9)}
    approvals = load_params(ROOT / "params" / "staging.example.yaml", env=env).approvals
    assert approvals and not [a.id for a in approvals if a.id.startswith("SANDBOX-")]
    assert all(a.expires is not None for a in approvals)  # a real approval expires
    assert not [a for a in approvals if a.action.startswith("gate_")]  # a real run pauses at its gates


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["load"].update(vus=30), "load: vus (30) and vu_scenario.vus (10) must be "
                                         "<= max_concurrency (20)"),
    (lambda d: d["load"]["vu_scenario"].update(vus=21), "load: vus (20) and vu_scenario.vus (21) "
                                                        "must be <= max_concurrency (20)"),
    (lambda d: d["load"].update(thresholds={"http_req_failed": []}),
     "load.thresholds: thresholds of ['http_req_failed'] must be non-empty k6 expressions such as "
     "'p(95)<150'"),
    (lambda d: d["load"].update(rate_per_s=0), "load.rate_per_s: Input should be greater than 0"),
    (lambda d: d["load"].update(autonomy_app="A9"), "load.autonomy_app: unknown app 'A9'"),
    (lambda d: d["load"].update(apps=["A1", "Z1"]), "load.apps[1]: unknown app 'Z1'"),
    (lambda d: d["resiliency"].update(concurrency=21), "resiliency.concurrency: Input should be less than or "
                                                       "equal to 20"),
    (lambda d: d["resiliency"].update(cycles=11), "resiliency.cycles: Input should be less than or equal to 10"),
    (lambda d: d["resiliency"].update(upstream_app="A0"), "resiliency.upstream_app: unknown app 'A0'"),
    (lambda d: d["resiliency"].update(route="api/x"), "resiliency.route: path must start with '/', "
                                                      "got 'api/x'"),
    (lambda d: d["learning"].update(simulate_visits=50_001), "learning.simulate_visits: Input should be less "
                                                             "than or equal to 50000"),
    (lambda d: d["learning"].update(cta_app="A10"), "learning.cta_app: unknown app 'A10'"),
    (lambda d: d["monitoring"]["capacity"].update(queue_probes=[{"app": "A9", "path": "/q", "field": "depth"}]),
     "monitoring.capacity.queue_probes[0].app: unknown app 'A9'"),
    (lambda d: d["learning"].update(apply_policy="always"), "learning.apply_policy: Input should be 'never' or "
                                                            "'if_approved'"),
])
def test_bad_values_name_the_field(params_errors: Callable[[Callable[[dict], object]], list[str]], change: Callable[[dict], object], message: str) -> None:
    assert message in params_errors(change)
