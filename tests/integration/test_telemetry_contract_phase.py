"""The telemetry contract phase against a live sandbox (ports 28900–28908): dedupe, sampling,
arrival and acceptance PASS on the healthy sandbox, and FAIL when a knob breaks them.

The sandbox is private to this module: the knobs it turns (a sampling leak in A7, dedupe
switched off in A8) must never reach an ecosystem another test audits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from readiness.core.check import Status
from readiness.phasekit.context import Phase, open_phase
from readiness.phases.inventory.inventory import telemetry_burn_in
from readiness.phases.telemetry.contract import contract, dedupe, write_verdict
from readiness.phases.telemetry.sampling import acceptance, arrival, arrival_chart, drive_probes, sampling

pytestmark = pytest.mark.integration
BASE_PORT = 28900
PHASE = "06_telemetry_contract"


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[Path]:
    """Sandbox params on this module's ports; the sandbox runs for the module, then stops."""
    folder = tmp_path_factory.mktemp("telemetry-contract")

    def edit(data: dict[str, Any]) -> None:
        data["thresholds"]["telemetry_arrival_s"] = 8  # a lost event is declared lost after 8 s, not 60
    path = params_factory(folder, port_base=BASE_PORT, edit=edit)
    with start_sandbox(path):
        os.environ["READINESS_OUTPUTS"] = str(folder / "outputs")  # restored with the environment after
        yield path


@pytest.fixture()
def phase(params_file: Path) -> Phase:
    """A fresh run folder per test, so one test's evidence never feeds another's verdict."""
    return open_phase(PHASE, str(params_file))


def admin(phase: Phase, app_id: str, method: str, path: str, body: Any = None) -> dict:
    token = os.environ["SANDBOX_ADMIN_TOKEN"]
    r = httpx.request(method, phase.params.app(app_id).url(path), json=body,
                      headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def statuses(phase: Phase) -> dict[str, Status]:
    return {c.id: c.status for c in phase.run.read_checks(PHASE)}


def test_dedupe_passes_on_the_healthy_sandbox(phase: Phase) -> None:
    dedupe(phase)
    got = statuses(phase)
    assert got["telemetry.dedupe.replay_stored_once"] is Status.PASS
    assert got["telemetry.dedupe.distinct_pairs_kept"] is Status.PASS
    samples = (phase.run.root / "evidence" / "a8_post_samples.json").read_text()
    assert os.environ["A8_TELEMETRY_KEY"] not in samples and '"status": 202' in samples


def test_dedupe_fails_when_the_store_stops_deduplicating(phase: Phase) -> None:
    before = admin(phase, "A8", "GET", "/admin/config")["dedupe_window_s"]
    admin(phase, "A8", "PUT", "/admin/config", {"dedupe_window_s": 0})
    try:
        dedupe(phase)
    finally:
        admin(phase, "A8", "PUT", "/admin/config", {"dedupe_window_s": before})
    checks = {c.id: c for c in phase.run.read_checks(PHASE)}
    once = checks["telemetry.dedupe.replay_stored_once"]
    assert once.status is Status.FAIL and once.observed == 0
    assert "0/20 pairs stored exactly once, 20 stored more than once" in once.detail
    assert checks["telemetry.dedupe.distinct_pairs_kept"].status is Status.PASS


def test_sampling_arrival_and_contract_pass_on_the_healthy_sandbox(phase: Phase, params_file: Path) -> None:
    a7 = phase.params.app("A7")
    assert httpx.get(a7.url("/api/cta/config"), timeout=5).status_code == 200
    click = httpx.post(a7.url("/api/cta/clicks"), json={"arm_id": "signup_hero", "page": "/pricing"},
                       headers={"X-Idempotency-Key": "click-1", "X-Trace-Id": "click-trace-1"}, timeout=5)
    assert click.status_code == 202
    summary = drive_probes(phase)
    assert int(summary.sent.sum()) == 820 and int(summary.acknowledged.sum()) == 820
    sampling(phase)
    arrival(phase)
    arrival_chart(phase)
    inventory = open_phase("00_inventory", str(params_file), str(phase.run.root))
    telemetry_burn_in(inventory)
    acceptance(phase)
    contract(phase)
    write_verdict(phase)
    checks = {c.id: c for c in phase.run.read_checks(PHASE)}
    for cid in ("telemetry.controls.dual_source", "telemetry.sampling.success_share",
                "telemetry.sampling.success_rate_declared", "telemetry.sampling.errors_complete",
                "telemetry.arrival.latency", "telemetry.acceptance.burn_in",
                "telemetry.contract.bandit_config", "telemetry.contract.cta_impression",
                "telemetry.contract.cta_emitted", "telemetry.contract.no_unknown_types"):
        assert checks[cid].status is Status.PASS, (cid, checks[cid].detail)
    share = checks["telemetry.sampling.success_share"]
    assert share.n == 400 and share.ci_low <= 0.10 <= share.ci_high
    assert checks["telemetry.sampling.errors_complete"].n == 400
    assert checks["telemetry.sampling.finance_complete"].status in (Status.PASS, Status.INCONCLUSIVE)
    for c in checks.values():  # a required event nobody produced is a FAIL that says so, never a PASS
        if c.id.startswith("telemetry.contract.") and c.status is Status.FAIL:
            assert "never arrived" in c.detail or "invalid" in c.unit
    assert (phase.run.root / "charts" / "telemetry_arrival_ecdf.svg").exists()
    assert "telemetry.sampling.success_share" in (phase.run.root / "reports" / "a8_wiring_verdict.md").read_text()


@pytest.mark.parametrize(("mode", "failing"), [
    ("sample_nothing", ("telemetry.sampling.success_share", "telemetry.sampling.success_rate_declared")),
    ("sample_everything", ("telemetry.sampling.errors_complete",)),
])
def test_a_sampling_leak_fails_the_sampling_checks(phase: Phase, mode: str, failing: tuple[str, ...]) -> None:
    assert httpx.get(phase.params.app("A7").url("/api/cta/config"), timeout=5).status_code == 200  # policy installed
    admin(phase, "A7", "PUT", "/admin/faults", {"telemetry_sampling": mode})
    try:
        drive_probes(phase)
    finally:
        admin(phase, "A7", "DELETE", "/admin/faults")
    sampling(phase)
    got = statuses(phase)
    assert got["telemetry.controls.dual_source"] is Status.PASS
    for cid in failing:
        assert got[cid] is Status.FAIL, cid


def test_contract_without_any_event_is_inconclusive(phase: Phase) -> None:
    """A window that holds nothing proves nothing: every contract check is INCONCLUSIVE."""
    phase.run.update_info(started_at="2099-01-01T00:00:00.000Z")
    contract(phase)
    got = statuses(phase)
    assert {got[f"telemetry.contract.{e}"] for e in phase.params.telemetry_contract.required_events} \
        == {Status.INCONCLUSIVE}
    assert got["telemetry.contract.no_unknown_types"] is Status.INCONCLUSIVE
