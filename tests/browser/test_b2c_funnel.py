"""The B2C funnel of Phase 04 in the system Chromium against a real sandbox (ports 28721–28728).

One test runs the healthy funnel and expects every configuration check to PASS (the
sign-up rate stays INCONCLUSIVE: three journeys cannot prove 90% with confidence); the
other breaks the identity provider through its ``identity`` fault knob — the session
cookie loses ``Secure`` and id tokens are signed with a key absent from the JWKS — and
expects the cookie, id-token and sign-up checks to FAIL with the evidence to show why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phasekit.context import Phase
from readiness.phases.funnels import b2c

pytestmark = pytest.mark.browser

BASE_PORT = 28720  # A1 = 28721 … A8 = 28728




@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[Path]:
    """The sandbox params on this module's ports and state folder; the sandbox runs for the module."""
    path = params_factory(tmp_path_factory.mktemp("b2c"), port_base=BASE_PORT)
    with start_sandbox(path):
        yield path


def make_phase(params_file: Path, outputs: Path, signups: int) -> Phase:
    params = load_params(params_file)
    params = params.model_copy(update={"funnels": params.funnels.model_copy(update={"b2c_signups": signups})})
    run = RunFolder.create(outputs, params, params_file, mode="interactive")
    run.producer = "04_funnels"
    return Phase(name="04_funnels", params=params, params_file=params_file, run=run)


def run_funnel(phase: Phase) -> dict[str, object]:
    b2c.probe_identity(phase)
    b2c.run_signups(phase)
    b2c.evaluate(phase)
    b2c.write_recovery(phase)
    return {c.id: c for c in phase.run.read_checks("04_funnels")}


def test_healthy_funnel_in_chromium(params_file: Path, tmp_path: Path) -> None:
    phase = make_phase(params_file, tmp_path, signups=3)
    checks = run_funnel(phase)
    passing = ["oidc.jwks", "oidc.redirect_allowlist", "oidc.pkce", "oidc.id_token", "oidc.code_replay",
               "oidc.userinfo", "cookie.A1.a1_session", "cookie.A2.a2_session", "attribution", "growth_tile",
               "growth_tile_arrival"]
    assert {k: checks[f"funnels.b2c.{k}"].status for k in passing} == dict.fromkeys(passing, Status.PASS), \
        {k: checks[f"funnels.b2c.{k}"].detail for k in passing}
    rate = checks["funnels.b2c.signup_rate"]
    assert rate.status is Status.INCONCLUSIVE and (rate.observed, rate.n) == (1.0, 3)
    assert "a PASS needs n ≥ 29 with zero failures" in rate.detail
    assert rate.design_n == 167 and rate.detail.endswith("needs n ≥ 167 for the design point")
    root = phase.run.root
    log = json.loads((root / "evidence" / "auth_trace_log.json").read_text())
    assert [j["ok"] for j in log["journeys"]] == [True] * 3
    assert all(j["blocked"] == [] for j in log["journeys"])
    text = "".join(p.read_text() for p in (root / "evidence").glob("*.json"))
    assert os.environ["OIDC_CLIENT_SECRET"] not in text
    assert "code=" not in text and "state=" not in text  # redirect URLs are logged without their query
    assert "eyJ" not in text  # no JWT (id token) anywhere: its base64url header would start so
    assert "a1_session=<redacted>; Domain=127.0.0.1; Path=/; Max-Age=3600" in text
    results = json.loads((root / "reports" / "b2c_funnel_results.json").read_text())
    assert results["signups_completed"] == 3 and len(results["step_ms"]["signup"]) == 3
    recovery = (root / "reports" / "b2c_recovery.md").read_text()
    assert "INCONCLUSIVE · P1 · sign-ups complete landing → first page" in recovery
    assert not list((root / "evidence").glob("screenshots/*.png"))


def test_broken_identity_provider_fails_the_checks(params_file: Path, tmp_path: Path) -> None:
    phase = make_phase(params_file, tmp_path, signups=2)
    a1 = phase.params.app("A1").base_url
    admin = {"Authorization": f"Bearer {os.environ['SANDBOX_ADMIN_TOKEN']}"}
    broken = httpx.put(f"{a1}/admin/faults", headers=admin,
                       json={"identity": {"cookie_secure": False, "signing_key": "unlisted"}})
    assert broken.status_code == 200
    try:
        checks = run_funnel(phase)
    finally:
        httpx.delete(f"{a1}/admin/faults", headers=admin)
    cookie = checks["funnels.b2c.cookie.A1.a1_session"]
    assert cookie.status is Status.FAIL
    assert cookie.detail == ("observed 2 findings does not meet == 0 findings; cookie a1_session has no Secure "
                             "attribute; the browser did not keep cookie a1_session")
    token = checks["funnels.b2c.oidc.id_token"]
    assert token.status is Status.FAIL and "is not in the JWKS (published: " in token.detail
    rate = checks["funnels.b2c.signup_rate"]
    assert rate.status is Status.FAIL and rate.observed == 0.0 and "failed at: signup, signup" in rate.detail
    log = json.loads((phase.run.root / "evidence" / "auth_trace_log.json").read_text())
    assert {j["steps"][-1]["error"] for j in log["journeys"]} == {
        "StepFailed: page shows an error: the id token signature does not verify against A1's JWKS"}
    shots = sorted((phase.run.root / "evidence" / "screenshots").glob("*_signup.png"))
    assert len(shots) == 2 and all(s.stat().st_size > 1000 for s in shots)
    assert set(rate.evidence) >= {f"evidence/screenshots/{s.name}" for s in shots}
    assert checks["funnels.b2c.growth_tile"].status is Status.INCONCLUSIVE  # no sign-up completed to look for
    recovery = (phase.run.root / "reports" / "b2c_recovery.md").read_text()
    assert recovery.index("FAIL · P0 · id token verifies") < recovery.index("INCONCLUSIVE")
    assert "Set the session cookie with Secure; HttpOnly; SameSite=None" in recovery
