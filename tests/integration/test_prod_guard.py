"""``environment: prod`` keeps 04_funnels, 05_monetization and 06_telemetry_contract read-only.

A sandbox runs on this module's ports (Stripe 28600, A1–A8 28601–28608) and is audited
as an *external* ecosystem in ``prod`` (a sandbox target is staging only). Without a
``production_write`` approval every write check is BLOCKED with the refusal, the approvals
log holds the refusals, and the apps' own request telemetry shows no mutating request
from the suite (every request the suite could send carries the synthetic tags, so a write
of the suite would appear as a tagged non-GET ``http_request`` event). With an approval
the writes go ahead, tagged as synthetic.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from readiness.core.approvals import LOG
from readiness.core.check import Check, Status
from readiness.params.model import load_params
from readiness.phasekit import command_center
from readiness.phasekit.context import Phase, open_phase
from readiness.phases.funnels import b2b, b2c, hardening
from readiness.phases.monetization import checkout as monetization
from readiness.phases.monetization import revenue_lineage
from readiness.phases.telemetry import contract as telemetry_contract
from readiness.phases.telemetry import sampling as telemetry_sampling
from readiness.probe import payments
from readiness.probe.client import SAFE_METHODS
from readiness.probe.sandbox_control import sandbox_status

pytestmark = pytest.mark.integration

BASE_PORT = 28600  # its Stripe on 28600, A1 = 28601 … A8 = 28608
SETTLE_S = 2.0  # eight flush intervals of the apps' telemetry emitters
ARRIVAL_S = 10.0
APPROVAL = {"id": "HITL-PROD-QA-1", "action": "production_write", "scope": "synthetic QA writes in prod",
            "granted_by": "release-lead", "environment": "prod"}


def _shrink(data: dict[str, Any]) -> None:
    """Small runs: the guard is under test here, not the statistics."""
    data["thresholds"]["telemetry_arrival_s"] = 10
    data["funnels"]["b2c_signups"] = 2
    data["b2b"]["provider_signups"] = 2
    data["b2b"]["vus"] = 2
    data["hardening"]["check_expiry"] = False
    data["hardening"]["concurrency_attempts"] = 1
    tc = data["telemetry_contract"]
    tc.update(sampling_probe_events=20, error_probe_events=10, burn_in_probe_events=2, dedupe_probe_pairs=3)


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[dict[str, Any]]:
    """The sandbox on this module's ports (started from staging params); yields those params as data."""
    path = params_factory(tmp_path_factory.mktemp("prod-guard"), port_base=BASE_PORT, edit=_shrink)
    with start_sandbox(path):
        yield {"data": yaml.safe_load(path.read_text()), "params": load_params(path)}


def prod_params(staging: dict[str, Any], folder: Path, approvals: list[dict[str, Any]]) -> Path:
    """The same ecosystem as an external ``prod`` target."""
    data = copy.deepcopy(staging["data"])
    data.update(environment="prod", target="external", approvals=approvals)
    data["latency"]["compare_flags"] = []  # flags are switched on the bundled sandbox only
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def phases(path: Path, outputs: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Phase, Phase, Phase]:
    """The three phases, sharing one run folder."""
    monkeypatch.setenv("READINESS_OUTPUTS", str(outputs))
    first = open_phase("04_funnels", str(path))
    root = str(first.run.root)
    return first, open_phase("05_monetization", str(path), root), open_phase("06_telemetry_contract", str(path), root)


def _tagged_writes(staging: dict[str, Any], since: dt.datetime) -> list[dict[str, Any]]:
    a8 = staging["params"].app("A8").base_url
    found = []
    for app in staging["params"].apps:
        answer = httpx.get(f"{a8}/api/telemetry/events", params={
            "event_type": "http_request", "app_id": app.id, "since": since.isoformat().replace("+00:00", "Z"),
            "limit": 1000}, timeout=10)
        assert answer.status_code == 200, answer.text
        found += [e for e in answer.json()["events"]
                  if e.get("method") not in SAFE_METHODS and (e.get("tags") or {}).get("test_run") == "true"]
    return found


def suite_writes(staging: dict[str, Any], since: dt.datetime, expect_apps: frozenset[str] = frozenset()
                 ) -> list[dict[str, Any]]:
    """Mutating requests carrying the synthetic tags that any app recorded since ``since``.

    The apps batch their request telemetry (flushed every 0.25 s): the store is read until
    ``expect_apps`` all show writes, or for ``SETTLE_S`` when none are expected.
    """
    deadline = time.monotonic() + (ARRIVAL_S if expect_apps else SETTLE_S)
    while True:
        found = _tagged_writes(staging, since)
        if (expect_apps and expect_apps <= {e["app_id"] for e in found}) or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def checks_of(phase: Phase) -> dict[str, Check]:
    return {c.id: c for name in ("04_funnels", "05_monetization", "06_telemetry_contract")
            for c in phase.run.read_checks(name)}


def log_of(phase: Phase) -> list[dict[str, Any]]:
    return [json.loads(line) for line in phase.run.path(LOG).read_text().splitlines()]


def write_check_ids(params: Any) -> set[str]:
    """Every check whose evidence needs a write to the ecosystem."""
    ids = {f"funnels.b2c.oidc.{n}" for n in ("pkce", "id_token", "code_replay", "userinfo")}
    ids |= {"funnels.b2c.signup_rate", "funnels.b2c.attribution", "funnels.b2c.growth_tile",
            "funnels.b2c.growth_tile_arrival"}
    ids |= {f"funnels.b2c.cookie.{c.app}.{c.name}" for c in params.funnels.session_cookies}
    ids |= {f"funnels.b2b.{n}" for n in ("signup_rate", "listing_published", "billing_lineage", "billing_events",
                                         "billing_tile")}
    ids |= {f"{t.prefix}.{rule}" for t in hardening.plan(params) for rule in hardening.RULES}
    ids |= {f"monetization.checkout.{n}" for n in monetization.CHECKOUT_CHECKS}
    ids |= {"monetization.ledger.credited", "monetization.ledger.balance_delta",
            "monetization.tiles.diagnostics_visible", "monetization.tiles.live_excludes_synthetic",
            "monetization.lineage.revenue_fields", "demo_mode.observed",
            "telemetry.dedupe.replay_stored_once", "telemetry.dedupe.distinct_pairs_kept"}
    ids |= {f"monetization.lineage.{e}_arrival" for e in revenue_lineage.EVENTS}
    ids |= {cid for cid, _title in telemetry_sampling.BLOCKABLE}
    return ids


def test_prod_without_approval_blocks_every_write_and_sends_none(staging: dict[str, Any], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    funnels, money, wiring = phases(prod_params(staging, tmp_path / "p", []), tmp_path / "out", monkeypatch)
    assert funnels.params.environment == "prod"
    b2c.probe_identity(funnels)
    assert list(b2c.run_signups(funnels)["status"]) == ["BLOCKED"]
    b2c.evaluate(funnels)
    b2c.write_recovery(funnels)
    journeys = b2b.run_b2b_funnel(funnels)
    assert len(b2b.verify_billing(funnels, journeys)) == 0
    b2b.b2b_verdicts(funnels, journeys)
    hardening.run_hardening(funnels)
    monetization.run_micro_checkout(money)
    monetization.verify_ledger(money)
    revenue_lineage.verify_revenue_arrival(money)
    revenue_lineage.check_finance_tiles(money)
    command_center.check_demo_mode(money)
    revenue_lineage.lineage_stages(money)
    revenue_lineage.write_reports(money)
    telemetry_contract.dedupe(wiring)
    assert list(telemetry_sampling.drive_probes(wiring)["status"]) == ["BLOCKED"]
    telemetry_sampling.sampling(wiring)
    telemetry_contract.contract(wiring)
    telemetry_sampling.arrival(wiring)
    assert "No arrival latency to chart: refused:" in telemetry_sampling.arrival_chart(wiring).data
    command_center.check_banners(wiring)
    telemetry_contract.write_verdict(wiring)

    checks = checks_of(funnels)
    wanted = write_check_ids(funnels.params)
    assert wanted <= set(checks), sorted(wanted - set(checks))
    not_blocked = {cid: str(checks[cid].status) for cid in wanted if checks[cid].status is not Status.BLOCKED}
    assert not not_blocked
    refusal = "refused: no approval for this action in params.approvals"
    assert all(checks[cid].detail == refusal for cid in wanted)
    # the read-only parts still observe: discovery and JWKS of the identity provider
    assert checks["funnels.b2c.oidc.jwks"].status is Status.PASS
    assert suite_writes(staging, since) == []

    log = log_of(funnels)
    refused = {(e["phase"], e["action"]) for e in log if e["kind"] == "refused"}
    assert refused == {(p, "production_write") for p in ("04_funnels", "05_monetization", "06_telemetry_contract")}
    assert not [e for e in log if e["kind"] == "approved"]
    assert "not run" in funnels.run.path(b2b.RECOVERY).read_text()
    assert "BLOCKED" in funnels.run.path("reports/b2c_recovery.md").read_text()
    results = json.loads(funnels.run.path("reports/b2c_funnel_results.json").read_text())
    assert results["blocked"] == refusal and results["signups_attempted"] == 0


def test_a_read_only_prod_audit_passes_the_phase_0_gate_without_its_write_parts(
        staging: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a production_write approval the gate's write parts say BLOCKED and do not count.

    Placed before the tests that write with an approval: their tagged writes, still reaching
    the store, would otherwise be counted here."""
    from readiness.phases.inventory import inventory

    path = prod_params(staging, tmp_path / "p", [])
    data = yaml.safe_load(path.read_text())
    data["stripe"]["api_base"] = f"http://127.0.0.1:{BASE_PORT}"  # the sandbox's local Stripe, never Stripe's API
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv("READINESS_OUTPUTS", str(tmp_path / "out"))
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    phase = open_phase("00_inventory", str(path))
    inventory.probe_endpoints(phase)
    inventory.check_secrets(phase)
    inventory.check_enforcement(phase)
    inventory.telemetry_burn_in(phase)
    inventory.stripe_price_step(phase)
    inventory.go_no_go(phase)
    checks = {c.id: c for c in phase.run.read_checks("00_inventory")}
    writes = [cid for cid in checks if cid.startswith("inventory.gate.enforce_428.")]
    writes.append("inventory.gate.telemetry_acceptance")
    assert {cid: str(checks[cid].status) for cid in writes} == {cid: "BLOCKED" for cid in writes}
    go = checks["inventory.gate.go"]
    assert go.status is Status.PASS, go.detail
    assert "not counted: " in go.detail and "inventory.gate.telemetry_acceptance (BLOCKED)" in go.detail
    assert suite_writes(staging, since) == []


def test_prod_with_approval_sends_tagged_writes(staging: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    path = prod_params(staging, tmp_path / "p", [APPROVAL])
    funnels, money, wiring = phases(path, tmp_path / "out", monkeypatch)
    journeys = b2b.run_b2b_funnel(funnels)
    assert int(journeys["register"].sum()) == 2
    telemetry_contract.dedupe(wiring)
    stripe_url = sandbox_status(staging["params"]).stripe_url
    monkeypatch.setattr(payments, "api_base", lambda params: stripe_url)  # the sandbox's Stripe, not Stripe's API
    monetization.run_micro_checkout(money)
    checks = checks_of(funnels)
    assert checks["telemetry.dedupe.replay_stored_once"].status is Status.PASS
    assert checks["monetization.checkout.completed"].status is Status.PASS
    assert checks["monetization.checkout.tagged"].status is Status.PASS
    writes = suite_writes(staging, since, frozenset({"A5", "A6", "A8"}))
    assert {e["app_id"] for e in writes} >= {"A5", "A6", "A8"}
    assert all(e["tags"].get("env") == "prod_observe" and e["tags"].get("source") == "qa" for e in writes)
    log = log_of(funnels)
    assert {(e["kind"], e["approval_id"]) for e in log} == {("approved", "HITL-PROD-QA-1")}


@pytest.mark.browser
def test_prod_oidc_probe_and_journeys_with_approval(staging: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    funnels, _money, _wiring = phases(prod_params(staging, tmp_path / "p", [APPROVAL]), tmp_path / "out",
                                      monkeypatch)
    assert os.environ.get(funnels.params.funnels.oidc_client_secret)
    b2c.probe_identity(funnels)  # the token POSTs are refused by the prod client unless tagged
    journeys = b2c.run_signups(funnels)
    checks = checks_of(funnels)
    for name in ("pkce", "id_token", "code_replay", "userinfo"):
        assert checks[f"funnels.b2c.oidc.{name}"].status is Status.PASS, checks[f"funnels.b2c.oidc.{name}"].detail
    assert bool(journeys["ok"].all())
    writes = suite_writes(staging, since, frozenset({"A1", "A2"}))
    by_app = {e["app_id"] for e in writes}
    assert {"A1", "A2"} <= by_app
    odd = [(e["app_id"], e["method"], e["route"], e["tags"]) for e in writes if e["app_id"] in b2c.write_apps(
        funnels.params) and e["tags"].get("synthetic_identity") != funnels.synthetic_identity]
    assert not odd

