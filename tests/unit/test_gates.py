"""Human approval gates: where each phase stands, what a gate file says, the rollback table."""

from __future__ import annotations

from pathlib import Path

import pytest

from readiness.core.runfolder import RunFolder
from readiness.params.model import PHASES, load_params
from readiness.run.gates import (
    ACTIONS,
    MUTATES,
    behaviour_check,
    gate_for,
    gate_text,
    rehearse_rollbacks,
    rollback_text,
)
from readiness.run.runner import _core_digest

ROOT = Path(__file__).resolve().parents[2]
ENV = {f"A{i}_BASE_URL": f"https://a{i}.staging.example.com" for i in range(1, 9)}


@pytest.fixture(scope="module")
def sandbox_params():
    return load_params(ROOT / "params" / "sandbox.yaml")


@pytest.fixture(scope="module")
def staging_params():
    return load_params(ROOT / "params" / "staging.example.yaml", env=ENV)


def test_gate_1_on_staging_gate_2_on_prod_none_for_reading_phases(sandbox_params) -> None:
    reading = [p for p in PHASES if p not in MUTATES]
    assert {"00_inventory", "01_smoke", "03_baseline_load", "11_readiness_score"} <= set(reading)
    assert not {"02_latency_profile", "04_funnels", "05_monetization", "09_resiliency"} & set(reading)
    assert {gate_for(sandbox_params, p) for p in MUTATES} == {1}
    assert {gate_for(sandbox_params, p) for p in reading} == {None}
    prod = sandbox_params.model_copy(update={"environment": "prod"})
    assert {gate_for(prod, p) for p in MUTATES} == {2}
    assert set(MUTATES) <= set(PHASES) and set(ACTIONS.values()) == {"gate_1_staging_mutation",
                                                                     "gate_2_production_action"}


def test_only_approvals_may_change_across_a_resume(sandbox_params) -> None:
    fewer = sandbox_params.model_copy(update={"approvals": sandbox_params.approvals[:1]})
    assert _core_digest(fewer) == _core_digest(sandbox_params) and fewer.digest() != sandbox_params.digest()
    other = sandbox_params.model_copy(update={"ecosystem": "elsewhere"})
    assert _core_digest(other) != _core_digest(sandbox_params)


def test_a_waiting_gate_says_what_waits_and_how_to_continue(tmp_path: Path, sandbox_params) -> None:
    run = RunFolder.create(tmp_path, sandbox_params, ROOT / "params" / "sandbox.yaml")
    entry = {"status": "waiting", "before_phase": "04_funnels", "reason": "refused: no approval for this action"}
    text = gate_text(run, sandbox_params, 1, ["04_funnels", "11_readiness_score"],
                     {"00_inventory": {"status": "OK", "html": "html/00_inventory.html"},
                      "04_funnels": {"status": "WAITING"}}, entry)
    assert text.startswith("# Gate 1 — human approval required")
    assert "**WAITING** — the run is paused before `04_funnels`: refused: no approval" in text
    assert f"| `04_funnels` | {MUTATES['04_funnels']} |" in text
    assert "| `00_inventory` | OK | no checks | [report](../html/00_inventory.html) |" in text
    assert "| `04_funnels` | WAITING" not in text  # a phase that has not run is not evidence
    assert "action: gate_1_staging_mutation" in text and "environment: staging" in text
    assert f"readiness run --resume {run.root}" in text and "gate_1/rollback_readiness.md" in text
    approved = gate_text(run, sandbox_params, 1, ["04_funnels"], {}, {**entry, "status": "approved"})
    assert "**APPROVED**" in approved and "--resume" not in approved


def test_rollback_table_names_each_flag_and_what_was_not_verified(sandbox_params) -> None:
    rows = [{"flag": "a7_async_leads", "app": "A7", "configured": False, "verified": True, "switch_ms": 50.0,
             "rollback_ms": 61.2, "detail": "ok"},
            {"flag": "a8_demo_mode", "app": "A8", "configured": False, "verified": False, "switch_ms": None,
             "rollback_ms": None, "detail": "rehearsal failed: 503"}]
    text = rollback_text(sandbox_params, rows, {"ecosystem": "e", "environment": "staging", "run_name": "r",
                                                "profile_note": "p"})
    assert "Not verified: a8_demo_mode" in text and "| 61.2 |" in text
    assert behaviour_check(sandbox_params, "a7_async_leads") == "`latency.A7.lead_capture.a7_async_leads.rollback`"
    assert behaviour_check(sandbox_params, "a8_demo_mode") == "`demo_mode.rollback`"
    assert behaviour_check(sandbox_params, "a2_readiness") == "none in this suite (the read-back only)"


def test_external_flags_are_not_switched(staging_params) -> None:
    rows = rehearse_rollbacks(staging_params)  # would raise without a sandbox if it tried
    assert rows and all(not r["verified"] and r["detail"].startswith("not rehearsed") for r in rows)
