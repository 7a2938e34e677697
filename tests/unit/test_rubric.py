"""The rubric file and its loader: the shipped ladder, selectors, and exact errors for bad input."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from readiness.core.check import Check, Status
from readiness.score.rubric import LEVEL_NAMES, RubricError, load_rubric, parse_rubric, select, selector_matches

RUBRIC = Path(__file__).resolve().parents[2] / "params" / "rubric.yaml"
EXPECTED_WEIGHTS = {
    "reliability": 15, "performance": 10, "security": 15, "data_protection": 10, "observability": 10,
    "resiliency": 10, "release_engineering": 8, "test_quality": 6, "runbooks_handover": 6,
    "cost_capacity": 5, "dependency_health": 5,
}
# Check-id families recorded by the phases that exist today (inventory and smoke).
TODAY = ("inventory.", "smoke.")


@pytest.fixture()
def doc() -> dict[str, Any]:
    return yaml.safe_load(RUBRIC.read_text())


def _errors(tmp_path: Path, data: Any) -> tuple[str, list[str]]:
    path = tmp_path / "rubric.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    return str(info.value), info.value.errors


def _check(cid: str, tags: tuple[str, ...] = ()) -> Check:
    return Check(id=cid, phase="01_smoke", title=cid, status=Status.PASS, tags=tags)


# -- the shipped rubric ------------------------------------------------------------------
def test_shipped_rubric_has_the_eleven_categories_with_their_weights() -> None:
    rubric = load_rubric(RUBRIC)
    assert {c.key: c.weight for c in rubric.categories} == EXPECTED_WEIGHTS
    assert [c.key for c in rubric.categories] == list(EXPECTED_WEIGHTS)
    assert sum(c.weight for c in rubric.categories) == 100


def test_shipped_rubric_grades_and_severity_tables() -> None:
    rubric = load_rubric(RUBRIC)
    assert (rubric.grade.green, rubric.grade.yellow) == (90, 75)
    assert rubric.eta_by_severity.model_dump() == {"P0": "24h", "P1": "3 days", "P2": "2 weeks",
                                                   "P3": "next quarter"}
    assert rubric.risk_by_severity.model_dump() == {"P0": "critical", "P1": "high", "P2": "medium", "P3": "low"}
    assert rubric.risk_by_severity.ordered() == ("critical", "high", "medium", "low")


def test_every_category_has_five_described_levels() -> None:
    for cat in load_rubric(RUBRIC).categories:
        assert [lv.level for lv in cat.levels] == [1, 2, 3, 4, 5]
        assert all(lv.description and lv.require for lv in cat.levels)
        assert [lv.name for lv in cat.levels] == ["ad hoc", "basic", "managed", "measured", "optimized"]


def test_no_level_rests_on_the_auditors_own_tooling() -> None:
    """Whether k6 or Chromium run on the auditing machine says nothing about the ecosystem."""
    for cat in load_rubric(RUBRIC).categories:
        for level in cat.levels[:4]:
            assert not any(sel.startswith("inventory.tools") for sel in level.require), f"{cat.key} {level.level}"


def test_categories_without_ecosystem_evidence_today_start_at_a_later_phase() -> None:
    """Cost and handover have no inventory/smoke evidence: they score 0 until their phases run."""
    cats = {c.key: c for c in load_rubric(RUBRIC).categories}
    for key in ("cost_capacity", "runbooks_handover"):
        assert not any(sel.startswith(TODAY) for sel in cats[key].levels[0].require), key


def test_top_level_tops_out_on_the_category_tag() -> None:
    """Level 5 asks every check tagged with the category to pass."""
    for cat in load_rubric(RUBRIC).categories:
        assert f"tag:{cat.key}" in cat.levels[4].require


def test_level_names_cover_zero_to_five() -> None:
    assert LEVEL_NAMES == {0: "absent", 1: "ad hoc", 2: "basic", 3: "managed", 4: "measured", 5: "optimized"}


# -- selectors ---------------------------------------------------------------------------
def test_glob_selector_matches_ids_case_sensitively_and_across_dots() -> None:
    assert selector_matches("smoke.*.ready", _check("smoke.A1.ready"))
    assert not selector_matches("smoke.*.ready", _check("smoke.A1.readiness"))
    assert not selector_matches("smoke.*.ready", _check("Smoke.A1.ready"))
    assert selector_matches("funnel.*", _check("funnel.b2c.signup"))
    assert selector_matches("inventory.A?.base", _check("inventory.A7.base"))
    assert not selector_matches("inventory.*.base", _check("inventory.gate.base_endpoints"))


def test_tag_selector_matches_tags_not_ids() -> None:
    tagged = _check("smoke.A1.p95", tags=("performance", "reliability"))
    assert selector_matches("tag:performance", tagged)
    assert not selector_matches("tag:performance", _check("performance.x"))
    assert select("tag:reliability", [tagged, _check("smoke.A2.p95")]) == [tagged]


# -- validation errors, exact messages -------------------------------------------------------
def test_unknown_top_level_key(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["colour"] = "green"
    message, errors = _errors(tmp_path, doc)
    assert errors == ["colour: unknown key"]
    assert message == f"{tmp_path / 'rubric.yaml'}: invalid rubric\n  - colour: unknown key"


def test_unknown_category_key(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][3]["owner"] = "data-team"
    assert _errors(tmp_path, doc)[1] == ["categories[3].owner: unknown key"]


def test_misspelled_level_key(tmp_path: Path, doc: dict[str, Any]) -> None:
    level = doc["categories"][1]["levels"][2]
    level["requires"] = level.pop("require")
    assert _errors(tmp_path, doc)[1] == ["categories[1].levels[2].require: required field is missing",
                                         "categories[1].levels[2].requires: unknown key"]


def test_weights_not_summing_to_100_name_the_sum(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][3]["weight"] = 9
    assert _errors(tmp_path, doc)[1] == ["categories: weights must sum to 100, got 99"]


def test_non_positive_weight_names_the_field(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][3]["weight"] = 0
    assert _errors(tmp_path, doc)[1] == ["categories[3].weight: Input should be greater than 0"]


def test_fractional_weight_is_refused(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][3]["weight"] = 9.5
    assert _errors(tmp_path, doc)[1] == [
        "categories[3].weight: Input should be a valid integer, got a number with a fractional part"]


def test_duplicate_category_key(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][4]["key"] = "security"
    assert _errors(tmp_path, doc)[1] == ["categories[4].key: duplicate category key 'security' "
                                         "(first at categories[2])"]


def test_bad_category_key(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][0]["key"] = "Reliability"
    assert _errors(tmp_path, doc)[1] == ["categories[0].key: String should match pattern '^[a-z][a-z0-9_]*$'"]


@pytest.mark.parametrize("selector", ["smoke A1", "tag:", "smoke.[A1].p95", ""])
def test_bad_selector(tmp_path: Path, doc: dict[str, Any], selector: str) -> None:
    doc["categories"][0]["levels"][1]["require"][2] = selector
    assert _errors(tmp_path, doc)[1] == [
        f"categories[0].levels[1].require[2]: bad selector {selector!r}: expected a check-id glob "
        "(letters, digits, '.', '_', '-', '*', '?') or 'tag:<name>'"]


def test_empty_require_list(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][0]["levels"][0]["require"] = []
    assert _errors(tmp_path, doc)[1] == [
        "categories[0].levels[0].require: Tuple should have at least 1 item after validation, not 0"]


def test_bad_rule(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["categories"][0]["levels"][0]["rule"] = "most_pass"
    assert _errors(tmp_path, doc)[1] == ["categories[0].levels[0].rule: Input should be 'all_pass' or 'any_pass'"]


def test_missing_level(tmp_path: Path, doc: dict[str, Any]) -> None:
    del doc["categories"][3]["levels"][2]
    assert _errors(tmp_path, doc)[1] == [
        "categories[3].levels: expected levels 1, 2, 3, 4, 5 in order, got [1, 2, 4, 5]"]


def test_levels_out_of_order(tmp_path: Path, doc: dict[str, Any]) -> None:
    levels = doc["categories"][0]["levels"]
    levels[0], levels[1] = levels[1], levels[0]
    assert _errors(tmp_path, doc)[1] == [
        "categories[0].levels: expected levels 1, 2, 3, 4, 5 in order, got [2, 1, 3, 4, 5]"]


def test_level_above_five(tmp_path: Path, doc: dict[str, Any]) -> None:
    extra = copy.deepcopy(doc["categories"][0]["levels"][4])
    extra["level"] = 6
    doc["categories"][0]["levels"].append(extra)
    assert _errors(tmp_path, doc)[1] == ["categories[0].levels[5].level: Input should be less than or equal to 5"]


def test_grade_boundaries_out_of_order(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["grade"] = {"green": 90, "yellow": 95}
    assert _errors(tmp_path, doc)[1] == ["grade: yellow (95) must be below green (90)"]


def test_severity_table_must_cover_every_severity(tmp_path: Path, doc: dict[str, Any]) -> None:
    del doc["eta_by_severity"]["P3"]
    doc["risk_by_severity"]["P4"] = "trivial"
    assert _errors(tmp_path, doc)[1] == ["eta_by_severity.P3: required field is missing",
                                         "risk_by_severity.P4: unknown key"]


def test_bad_missing_evidence_severity(tmp_path: Path, doc: dict[str, Any]) -> None:
    doc["missing_evidence_severity"] = "P9"
    assert _errors(tmp_path, doc)[1] == [
        "missing_evidence_severity: Input should be 'P0', 'P1', 'P2' or 'P3'"]


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(RubricError) as info:
        parse_rubric(["reliability"], "inline")
    assert str(info.value) == "inline: invalid rubric\n  - (top level): expected a mapping of keys to values"


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "rubric.yaml"
    path.write_text("grade: {green: 90\ncategories: []\n")
    with pytest.raises(RubricError) as info:
        load_rubric(path)
    assert info.value.errors == ["line 2, column 11: not valid YAML (expected ',' or '}', but got ':')"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RubricError) as info:
        load_rubric(tmp_path / "nope.yaml")
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: invalid rubric\n  - cannot read file: No such file or directory"


def test_a_demonstration_is_never_selected_by_a_tag_or_a_glob() -> None:
    """A fix's ``before`` state plants the defect on purpose: evidence about the fix, never a
    verdict on the system as configured, so no rubric selector may count it."""
    from readiness.core.check import DEMONSTRATION, Check, Status
    from readiness.score.rubric import select

    planted = Check(id="demo_mode.before.badge", phase="05_monetization", title="t", status=Status.FAIL,
                    tags=("release_engineering", DEMONSTRATION), evidence=("evidence/x.json",))
    after = Check(id="demo_mode.after.badge", phase="05_monetization", title="t", status=Status.PASS,
                  tags=("release_engineering",), evidence=("evidence/x.json",))
    for selector in ("tag:release_engineering", "demo_mode.*", "demo_mode.before.badge", f"tag:{DEMONSTRATION}"):
        assert planted not in select(selector, [planted, after])
    assert select("tag:release_engineering", [planted, after]) == [after]
    assert planted.demonstration and not after.demonstration
