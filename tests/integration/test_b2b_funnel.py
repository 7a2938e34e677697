"""The B2B funnel with real k6 against a live sandbox (ports 28811–28818), healthy and broken.

Small N keeps it fast; the signup target is lowered to 50% so that 5/5 can PASS under
Wilson (at 90% a PASS needs n >= 35).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from readiness.core.check import Status
from readiness.phasekit.context import open_phase
from readiness.phases.funnels import b2b
from readiness.probe.sandbox_control import ADMIN_TOKEN_ENV

pytestmark = pytest.mark.integration

BASE_PORT = 28810
N = 5


@pytest.fixture(scope="module")
def base_params(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[dict[str, Any]]:
    def edit(data: dict[str, Any]) -> None:
        data["thresholds"]["funnel_success_min"] = 0.5
        data["thresholds"]["telemetry_arrival_s"] = 15
        data["b2b"].update(provider_signups=N, vus=2, max_duration_s=60)
    path = params_factory(tmp_path_factory.mktemp("b2b"), port_base=BASE_PORT, edit=edit)
    with start_sandbox(path):
        yield yaml.safe_load(path.read_text())


@pytest.fixture()
def faults(base_params: dict[str, Any]) -> Iterator[Any]:
    """PUT a fault body on A6; every A6 fault is cleared after the test."""
    url = f"{base_params['apps'][5]['base_url']}/admin/faults"

    def headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {os.environ[ADMIN_TOKEN_ENV]}"}

    yield lambda body: httpx.put(url, json=body, headers=headers(), timeout=5).raise_for_status()
    httpx.delete(url, headers=headers(), timeout=5).raise_for_status()


def funnel(base: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(base), sort_keys=False))
    monkeypatch.setenv("READINESS_OUTPUTS", str(tmp_path / "outputs"))
    phase = open_phase("04_funnels", str(path))
    journeys = b2b.run_b2b_funnel(phase)
    b2b.verify_billing(phase, journeys)
    b2b.b2b_verdicts(phase, journeys)
    return phase.run.root, {c.id: c for c in phase.run.read_checks("04_funnels")}


def tile_served(base: dict[str, Any]) -> bool:
    tiles = httpx.get(f"{base['apps'][7]['base_url']}/api/tiles", timeout=5).json().get("tiles", [])
    return any(t.get("id") == "b2b_billing" for t in tiles)


def test_healthy_funnel_passes_with_exact_billing(base_params: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root, checks = funnel(base_params, tmp_path, monkeypatch)
    for name in ("signup_rate", "listing_published", "billing_lineage", "billing_events"):
        assert checks[f"funnels.b2b.{name}"].status is Status.PASS, checks[f"funnels.b2b.{name}"].detail
    tile = checks["funnels.b2b.billing_tile"]
    assert tile.status is (Status.PASS if tile_served(base_params) else Status.INCONCLUSIVE), tile.detail
    results = json.loads((root / b2b.RESULTS).read_text())
    assert (results["journeys"], results["signups"], results["charges"], results["k6_exit_code"]) == (N, N, N, 0)
    assert results["k6_thresholds_crossed"] == {"b2b_signup: rate>=0.5": False}
    verification = (root / b2b.VERIFICATION).read_text()
    assert "ROUND_HALF_UP" in verification and "| 0 |" in verification
    assert (root / b2b.POINTS).read_bytes()[:2] == b"\x1f\x8b"  # gzipped k6 points kept as evidence


def test_fee_of_2_5_pct_fails_the_billing_lineage(base_params: dict[str, Any], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, faults: Any) -> None:
    faults({"provider_portal": {"provider_fee_pct": 2.5}})
    root, checks = funnel(base_params, tmp_path, monkeypatch)
    lineage = checks["funnels.b2b.billing_lineage"]
    # costs 1234, 37, 999, 5, 1234: at 2.5% the fees of 37 (3.7 → 4) and 5 (0.5 → 1) equal the 3% ones
    assert (lineage.status, lineage.observed, lineage.n) == (Status.FAIL, 3, N) and "fee_pct ['2.5']" in lineage.detail
    assert checks["funnels.b2b.billing_events"].status is Status.FAIL
    assert checks["funnels.b2b.signup_rate"].status is Status.PASS
    recovery = (root / b2b.RECOVERY).read_text()
    assert "## `funnels.b2b.billing_lineage` — FAIL" in recovery and "rounded half up" in recovery


def test_broken_signup_fails_and_k6_reports_the_crossed_threshold(base_params: dict[str, Any], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  faults: Any) -> None:
    faults({"error_rate": {"/api/providers": 1.0}})
    root, checks = funnel(base_params, tmp_path, monkeypatch)
    signup = checks["funnels.b2b.signup_rate"]
    assert (signup.status, signup.observed, signup.n) == (Status.FAIL, 0.0, N)
    assert checks["funnels.b2b.billing_lineage"].status is Status.INCONCLUSIVE
    results = json.loads((root / b2b.RESULTS).read_text())
    assert results["k6_exit_code"] == b2b.THRESHOLD_FAILED and results["k6_threshold_failed"] is True
    assert results["k6_thresholds_crossed"] == {"b2b_signup: rate>=0.5": True}
    assert "## `funnels.b2b.signup_rate` — FAIL" in (root / b2b.RECOVERY).read_text()
