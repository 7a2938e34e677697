"""The phase registry: phases in order, what they need, and the not-applicable reasons."""

from __future__ import annotations

import pytest

from readiness.params import model as params
from readiness.params import registry
from readiness.params.registry import CAPABILITIES, PARTS, PHASES, not_applicable_reason, phase_spec
from readiness.run import gates


def test_phases_have_unique_numbers_the_score_runs_last_and_params_uses_the_same_tuple() -> None:
    numbers = [phase_spec(p).number for p in PHASES]
    assert len(set(numbers)) == len(numbers) and all(n.isdigit() and len(n) == 2 for n in numbers)
    assert PHASES[0] == registry.phase_with("gate") and PHASES[-1] == registry.phase_with("score")
    assert params.PHASES == PHASES


def test_every_need_is_a_known_capability() -> None:
    needs = {n for spec in registry.REGISTRY for n in (*spec.needs, *spec.needs_any)}
    needs |= {n for part_needs in PARTS.values() for n in part_needs}
    assert needs <= set(CAPABILITIES), needs - set(CAPABILITIES)


def test_mutating_phases_come_from_the_registry() -> None:
    assert set(gates.MUTATES) == {s.name for s in registry.REGISTRY if s.mutates}
    assert "00_inventory" not in gates.MUTATES and "11_readiness_score" not in gates.MUTATES


def test_everything_declared_makes_every_phase_and_part_apply() -> None:
    everything = list(CAPABILITIES)
    assert all(not_applicable_reason(p, everything) is None for p in PHASES)
    for spec in registry.REGISTRY:
        for part in spec.parts:
            assert not_applicable_reason(spec.name, everything, part) is None


def test_nothing_declared_leaves_the_plain_http_phases() -> None:
    applies = [p for p in PHASES if not_applicable_reason(p, []) is None]
    assert {"00_inventory", "01_smoke", "02_latency_profile", "03_baseline_load", "10_security_ops",
            "11_readiness_score"} <= set(applies)
    assert not {"04_funnels", "05_monetization", "06_telemetry_contract", "07_activation_growth",
                "08_learning_autonomy", "09_resiliency"} & set(applies)


def test_reason_names_the_missing_capability_and_what_it_means() -> None:
    reason = not_applicable_reason("05_monetization", ["telemetry_store"])
    assert reason is not None and reason.startswith("not applicable: 05_monetization needs")
    assert "payments (a Stripe-compatible payments API)" in reason


def test_a_phase_of_independent_parts_applies_when_any_part_does() -> None:
    assert not_applicable_reason("04_funnels", ["provider_portal"]) is None
    assert not_applicable_reason("04_funnels", ["provider_portal"], "b2c") is not None
    assert not_applicable_reason("04_funnels", ["provider_portal"], "b2b") is None
    reason = not_applicable_reason("04_funnels", [])
    assert reason is not None and "any one of its parts" in reason


def test_unknown_names_raise() -> None:
    with pytest.raises(KeyError, match="unknown phase '99_x'"):
        phase_spec("99_x")
    with pytest.raises(KeyError, match="unknown part 'nope'; known: enforcement, "):
        not_applicable_reason("00_inventory", [], "nope")


def test_a_part_asks_the_same_question_from_any_phase() -> None:
    from_05 = not_applicable_reason("05_monetization", ["payments"], "command_center")
    from_06 = not_applicable_reason("06_telemetry_contract", ["telemetry_store"], "command_center")
    assert from_05 == from_06 and from_05 is not None and "05_monetization (command_center)" in from_05


def test_a_part_the_ecosystem_does_not_declare_is_recorded_skipped_and_not_called(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    from IPython.display import Markdown

    from readiness.core.check import Status
    from readiness.phasekit.context import open_phase, part

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    data = yaml.safe_load((root / "params" / "staging.example.yaml").read_text())
    data["capabilities"] = ["provider_portal"]
    data["telemetry_app"] = None
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(data))
    for i in range(1, 9):
        monkeypatch.setenv(f"A{i}_BASE_URL", f"http://127.0.0.1:{9 + i}")
    monkeypatch.setenv("READINESS_OUTPUTS", str(tmp_path / "out"))
    phase = open_phase("04_funnels", str(params_file))
    calls: list[str] = []

    @part("hardening")
    def audit(ph: object) -> str:
        calls.append("hardening")
        return "ran"

    @part("b2b")
    def journeys(ph: object) -> str:
        calls.append("b2b")
        return "ran"

    shown = audit(phase)
    assert calls == [] and isinstance(shown, Markdown) and shown.data.startswith("**SKIPPED** — not applicable")
    assert journeys(phase) == "ran" and calls == ["b2b"]
    recorded = {c.id: c for c in phase.run.read_checks("04_funnels")}
    skipped = recorded["04_funnels.hardening.applicable"]
    assert skipped.status is Status.SKIPPED and "idempotency_contract" in skipped.detail
    assert "04_funnels.b2b.applicable" not in recorded


# -- the registry as the one place that names a phase ---------------------------------------
def test_every_phase_has_its_notebook_and_its_package() -> None:
    import importlib

    from readiness.phasekit.context import project_root

    for spec in registry.REGISTRY:
        assert (project_root() / "notebooks" / spec.notebook).is_file(), spec.notebook
        assert importlib.import_module(spec.module).__doc__, f"{spec.module} has no docstring"


def test_claim_prefixes_are_prefixes_the_phase_records() -> None:
    for spec in registry.REGISTRY:
        assert spec.prefixes, f"{spec.name} declares no check-id prefix"
        for claim, prefixes in spec.claims.items():
            assert claim in registry.CLAIMS
            assert set(prefixes) <= set(spec.prefixes), (spec.name, claim)


def test_every_claim_is_evidenced_by_a_phase_or_the_runner() -> None:
    for claim in registry.CLAIMS:
        assert registry.claim_prefixes(claim), claim
        assert registry.claim_phases(claim) or claim in registry.RUNNER_CLAIMS


def test_the_attestation_and_the_closing_report_read_the_registry() -> None:
    from readiness.phases.readiness_score import closing, closing_report
    from readiness.score import attestation

    assert [c.key for c in attestation.CLAIMS] == list(registry.CLAIMS)
    live = next(c for c in attestation.CLAIMS if c.key == "live")
    assert live.prefixes == ("inventory.", "smoke.") and live.phases == ("00_inventory", "01_smoke")
    center = next(c for c in attestation.CLAIMS if c.key == "command_center")
    assert center.phases == ("05_monetization", "06_telemetry_contract")
    assert closing_report.E2E_PHASES == registry.phases_with("journey")
    assert closing.A8_PHASES == registry.phases_with("command_center")
    assert {e.phase for e in closing_report.ESCALATIONS} == {"03_baseline_load", "04_funnels", "05_monetization",
                                                              "06_telemetry_contract"}


def test_roles_are_known_and_the_single_ones_are_single() -> None:
    for spec in registry.REGISTRY:
        assert set(spec.roles) <= set(registry.ROLES), spec.name
    for role in ("gate", "score", "latency_profile", "telemetry_contract", "security", "monitoring_rules"):
        registry.phase_with(role)
    with pytest.raises(LookupError, match="not one"):
        registry.phase_with("journey")
    with pytest.raises(KeyError, match="unknown role"):
        registry.phases_with("nope")


def test_phase_of_check_finds_the_recording_phase() -> None:
    assert registry.phase_of_check("latency.A1.health.warm.p95") == "02_latency_profile"
    assert registry.phase_of_check("hardening.A7.leads.replay") == "04_funnels"
    assert registry.phase_of_check("gate.gate_1.approval") is None

