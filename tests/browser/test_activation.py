"""Phase 07 activation in the system Chromium against a real sandbox (ports 30011–30018, Stripe 30010):
two learners from the landing page through the guided onboarding to their first AI answer,
their events found in the telemetry store, the verdicts honest about n = 2."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phasekit.context import Phase
from readiness.phases.activation import activation

pytestmark = pytest.mark.browser

BASE_PORT = 30010
PHASE = "07_activation_growth"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[Path]:
    path = params_factory(tmp_path_factory.mktemp("activation"), port_base=BASE_PORT,
                          edit=lambda d: d["activation"].update(users=2, concurrency=2))
    with start_sandbox(path):
        yield path


def test_two_learners_reach_first_value(params_file: Path, tmp_path: Path) -> None:
    params = load_params(params_file)
    run = RunFolder.create(tmp_path, params, params_file, mode="interactive")
    run.producer = PHASE
    phase = Phase(name=PHASE, params=params, params_file=params_file, run=run)

    journeys = activation.run_onboarding(phase)
    assert journeys["ok"].tolist() == [True, True], journeys
    assert activation.verify_events(phase).all().all()
    activation.evaluate(phase)
    activation.ttfv_chart(phase)

    checks = {c.id: c for c in run.read_checks(PHASE)}
    for cid in ("activation.journeys", "activation.events.credit_decrement", "activation.events.activation_first_use",
                "activation.ttfv.within_target"):
        assert checks[cid].status is Status.INCONCLUSIVE and (checks[cid].observed, checks[cid].n) == (1.0, 2)
    assert "95% upper bound needs n ≥ 5" in checks["activation.ttfv.p50"].detail
    assert checks["activation.ttfv.crosscheck"].status is Status.PASS, checks["activation.ttfv.crosscheck"].detail

    log = json.loads(run.path(activation.JOURNEYS).read_text())
    for row in log["rows"]:
        assert [s["step"] for s in row["steps"]] == ["landing", "cta", "signup", "checkout", "first_page",
                                                     "first_action"]
        assert row["steps"][-1]["http_status"] == 201 and row["blocked_requests"] == []
        assert 0 < row["signin_to_answer_s"] < row["ttfv_s"] < params.thresholds.ttfv_s
    results = json.loads(run.path(activation.RESULTS).read_text())
    assert results["events"] == {"credit_decrement": 2, "activation_first_use": 2}
    assert results["ttfv"]["n"] == 2 and results["ttfv"]["unit"] == "s"
    for user in results["per_user"]:
        first_use = user["events"]["activation_first_use"]
        assert abs(first_use["seconds_since_signup"] - user["signin_to_answer_s"]) < 1
        assert user["events"]["credit_decrement"]["delta"] == -1
    assert run.path("charts/activation_ttfv.svg").is_file()
    written = "".join(p.read_text() for folder in ("evidence", "reports") for p in run.path(folder).glob("*.json"))
    assert os.environ["OIDC_CLIENT_SECRET"] not in written
    assert "@example.test" not in written and "eyJ" not in written and "code=" not in written
