"""Scoring logic over fake check sets: levels, evidence rule, grades, blocking, outputs."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from readiness.core.check import Check, CheckFileError, Status, load_checks
from readiness.score.rubric import Rubric, load_rubric, parse_rubric
from readiness.score.scoring import (
    final_grade,
    grade_for,
    heatmap_rows,
    radar_series,
    rubric_markdown,
    score_checks,
    top_actions,
)

SHIPPED = Path(__file__).resolve().parents[2] / "params" / "rubric.yaml"
EV = ("evidence/x.json",)


def ladder(key: str, weight: int, *, rule: str = "all_pass") -> dict[str, Any]:
    """A category whose level n needs every ``<key>.l<n>.*`` check to pass."""
    return {"key": key, "title": key.upper(), "weight": weight,
            "levels": [{"level": n, "description": f"{key} level {n}", "require": [f"{key}.l{n}.*"], "rule": rule}
                       for n in range(1, 6)]}


def small_rubric(*cats: dict[str, Any]) -> Rubric:
    return parse_rubric({
        "grade": {"green": 90, "yellow": 75},
        "eta_by_severity": {"P0": "24h", "P1": "3 days", "P2": "2 weeks", "P3": "next quarter"},
        "risk_by_severity": {"P0": "critical", "P1": "high", "P2": "medium", "P3": "low"},
        "categories": list(cats),
    })


def chk(cid: str, status: Status = Status.PASS, *, evidence: tuple[str, ...] = EV, **kw: Any) -> Check:
    return Check(id=cid, phase=kw.pop("phase", "01_smoke"), title=cid, status=status, evidence=evidence, **kw)


def up_to(key: str, level: int) -> list[Check]:
    """Passing checks reaching exactly ``level`` of a :func:`ladder` category."""
    return [chk(f"{key}.l{n}.x", evidence=(f"evidence/{key}{n}.json",)) for n in range(1, level + 1)]


A95_B5 = small_rubric(ladder("a", 95), ladder("b", 5))
RUBRIC = load_rubric(SHIPPED)


# -- grade boundaries ---------------------------------------------------------------------
BANDS = A95_B5.grade


@pytest.mark.parametrize(("value", "grade"), [(74.99, "Red"), (75, "Yellow"), (89.99, "Yellow"), (90, "Green"),
                                              (Decimal("74.99"), "Red"), (Decimal("90.00"), "Green"),
                                              (0, "Red"), (100, "Green")])
def test_grade_boundaries(value: float, grade: str) -> None:
    assert grade_for(value, BANDS) == grade
    assert final_grade(value, BANDS, blocked=False) == grade


@pytest.mark.parametrize(("value", "grade"), [(100, "Yellow"), (90, "Yellow"), (89.99, "Red"), (75, "Red"),
                                              (74.99, "Red")])
def test_blocking_caps_the_grade(value: float, grade: str) -> None:
    assert final_grade(value, BANDS, blocked=True) == grade


def test_blocked_score_at_or_above_90_is_yellow() -> None:
    score = score_checks(up_to("a", 5) + up_to("b", 1), A95_B5)
    assert (score.overall_score, score.grade) == (96.0, "Yellow")
    assert score.blockers == ("b scores 1/5 (a category at 1 or below blocks the grade)",)


def test_blocked_score_below_90_is_red() -> None:
    score = score_checks(up_to("a", 4) + up_to("b", 1), A95_B5)
    assert (score.overall_score, score.grade) == (77.0, "Red")
    assert grade_for(score.overall, score.bands) == "Yellow"  # would be Yellow without the blocker


def test_unblocked_full_marks_are_green() -> None:
    score = score_checks(up_to("a", 5) + up_to("b", 2), A95_B5)
    assert (score.overall_score, score.grade, score.blockers) == (97.0, "Green", ())


def test_p0_security_finding_blocks_by_id_or_tag() -> None:
    clean = up_to("a", 5) + up_to("b", 5)
    finding = chk("security.secrets.scan", Status.FAIL, severity="P0", observed=2.0, threshold=0.0,
                  comparator="==", n=214, phase="10_security_ops")
    by_tag = chk("growth.A7.headers", Status.FAIL, severity="P0", tags=("security",), detail="no CSP header")
    for extra, line in [(finding, "security.secrets.scan FAIL: observed 2 vs == 0, n=214"),
                        (by_tag, "growth.A7.headers FAIL: no CSP header")]:
        score = score_checks([*clean, extra], A95_B5)
        assert (score.overall_score, score.grade) == (100.0, "Yellow")
        assert score.blockers == (f"P0 security finding: {line}",)


def test_findings_that_are_not_p0_security_do_not_block() -> None:
    clean = up_to("a", 5) + up_to("b", 5)
    others = [chk("security.tls.x", Status.FAIL, severity="P1"), chk("ops.ports.x", Status.FAIL, severity="P0"),
              chk("security.cors.x", Status.INCONCLUSIVE, severity="P0")]
    score = score_checks(clean + others, A95_B5)
    assert (score.grade, score.blockers) == ("Green", ())


# -- levels and the evidence rule ------------------------------------------------------------
def test_category_without_evidence_scores_zero_with_gap() -> None:
    score = score_checks([], load_rubric(SHIPPED))
    assert score.overall_score == 0.0 and score.grade == "Red"
    for cat in score.categories:
        assert (cat.score, cat.weighted, cat.evidence, cat.gaps) == (0, Decimal("0.00"), (), ("no evidence",))
    assert len(score.blockers) == 11


def test_passing_checks_without_evidence_do_not_score() -> None:
    score = score_checks([chk("a.l1.x", evidence=()), chk("a.l1.y", evidence=())], A95_B5).category("a")
    assert (score.score, score.evidence) == (0, ())
    assert score.gaps == ("level 1 (ad hoc): the passing checks link no evidence files (a.l1.x, a.l1.y)",)
    assert score.actions == ({"owner": "platform", "eta": "2 weeks", "risk": "medium",
                              "action": "Link evidence files to a.l1.x, a.l1.y"},)


def test_one_evidence_file_among_the_checks_is_enough() -> None:
    score = score_checks([chk("a.l1.x", evidence=()), chk("a.l1.y")], A95_B5).category("a")
    assert (score.score, score.evidence) == (1, EV)


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.PASS])
def test_only_pass_satisfies_a_level(status: Status) -> None:
    score = score_checks([chk("a.l1.x"), chk("a.l1.y", status)], A95_B5).category("a")
    assert score.score == 0


def test_any_pass_needs_one_pass_and_takes_evidence_from_passing_checks_only() -> None:
    rubric = small_rubric(ladder("a", 100, rule="any_pass"))
    checks = [chk("a.l1.x", Status.FAIL, evidence=("evidence/fail.json",)),
              chk("a.l1.y", evidence=("evidence/ok.json",))]
    assert score_checks(checks, rubric).category("a").evidence == ("evidence/ok.json",)
    assert score_checks(checks[:1], rubric).category("a").score == 0


def test_all_pass_needs_every_selector_matched() -> None:
    cat = ladder("a", 95)
    cat["levels"][0]["require"] = ["a.l1.*", "latency.*"]
    score = score_checks(up_to("a", 5), small_rubric(cat, ladder("b", 5))).category("a")
    assert score.score == 0
    assert score.gaps == ("level 1 (ad hoc): no check matches 'latency.*'",)
    assert score.actions == ({"owner": "platform", "eta": "2 weeks", "risk": "medium",
                              "action": "Record checks matching 'latency.*' (none in this run)"},)


def test_score_stops_at_first_unmet_level_and_reports_it() -> None:
    checks = up_to("a", 5)
    checks[2] = chk("a.l3.x", Status.FAIL, app="A3", severity="P1", observed=182.0, threshold=120.0,
                    comparator="<=", unit="ms", n=60)
    cat = score_checks(checks, A95_B5, owners={"A3": "orchestration-team"}).category("a")
    assert (cat.score, cat.weighted, cat.evidence) == (2, Decimal("38.00"), ("evidence/a1.json", "evidence/a2.json"))
    assert cat.gaps == ("level 3 (managed): a.l3.x FAIL: observed 182 ms vs <= 120 ms, n=60",)
    assert cat.actions == ({"owner": "orchestration-team", "eta": "3 days", "risk": "high",
                            "action": "Fix a.l3.x (FAIL: observed 182 ms vs <= 120 ms, n=60)"},)


def test_actions_for_undecided_checks_say_what_to_do() -> None:
    checks = [chk("a.l1.x", Status.INCONCLUSIVE, app="A9", n=12, severity="P3"),
              chk("a.l1.y", Status.BLOCKED, detail="gate 1 waiting for approval", severity="P0")]
    cat = score_checks(checks, A95_B5).category("a")
    assert [a["action"] for a in cat.actions] == ["Collect enough data to decide a.l1.x (INCONCLUSIVE: n=12)",
                                                  "Unblock and run a.l1.y (BLOCKED: gate 1 waiting for approval)"]
    assert [(a["owner"], a["eta"], a["risk"]) for a in cat.actions] == [("platform", "next quarter", "low"),
                                                                        ("platform", "24h", "critical")]


def test_full_ladder_has_no_gaps() -> None:
    cat = score_checks(up_to("a", 5), A95_B5).category("a")
    assert (cat.score, cat.gaps, cat.actions) == (5, (), ())
    assert cat.evidence == tuple(f"evidence/a{n}.json" for n in range(1, 6))


def test_non_blocking_risks_and_assumptions() -> None:
    checks = [chk("inventory.gate.stripe_price", Status.SKIPPED, phase="00_inventory"),
              *[chk(f"smoke.A{i}.p95", Status.INCONCLUSIVE) for i in range(1, 8)], chk("smoke.A8.p95")]
    score = score_checks(checks, A95_B5, assumptions=["profile quick: windows compressed to seconds"])
    assert score.non_blocking_risks == (
        "00_inventory: 1 SKIPPED (inventory.gate.stripe_price)",
        "01_smoke: 7 INCONCLUSIVE (smoke.A1.p95, smoke.A2.p95, smoke.A3.p95, smoke.A4.p95, smoke.A5.p95 and 2 more)")
    assert score.assumptions[0] == "profile quick: windows compressed to seconds"
    assert "Categories without evidence score 0; a level counts only with linked evidence files." in score.assumptions
    assert score.assumptions[-1] == "The score covers the phases that recorded checks: 00_inventory, 01_smoke."


# -- output shapes --------------------------------------------------------------------------
def test_to_json_has_exactly_the_seed_shape() -> None:
    checks = up_to("a", 3) + [chk("b.l1.x", Status.FAIL, app="A1")]
    doc = score_checks(checks, A95_B5).to_json()
    assert list(doc) == ["version", "overall_score", "grade", "categories", "blockers", "non_blocking_risks",
                         "assumptions", "scoring_notes"]
    assert doc["version"] == "1.0" and isinstance(doc["scoring_notes"], str)
    for cat in doc["categories"]:
        assert list(cat) == ["key", "weight", "score", "weighted", "evidence", "gaps", "actions"]
        for action in cat["actions"]:
            assert list(action) == ["owner", "eta", "risk", "action"]
    assert json.loads(json.dumps(doc, allow_nan=False)) == doc


def _random_checks(rng: random.Random) -> list[Check]:
    apps = [f"A{i}" for i in range(1, 9)]
    families = ([f"inventory.{a}.{k}" for a in apps for k in ("base", "health", "ready")]
                + [f"smoke.{a}.{k}" for a in apps for k in ("health", "ready", "action", "p95", "error_rate",
                                                            "success", "stable", "agreement", "liveness")]
                + ["inventory.tools.k6", "inventory.tools.chromium", "inventory.gate.go", "inventory.gate.stripe_key",
                   "inventory.gate.stripe_price", "inventory.gate.base_endpoints",
                   "inventory.gate.telemetry_acceptance", "inventory.secrets.STRIPE_SECRET_KEY",
                   "inventory.gate.enforce_428.A5", "inventory.gate.enforce_428.A8",
                   "latency.A7.hot_path", "latency.regression.A1", "load.A1.p95", "funnels.b2c.signup_rate",
                   "funnels.b2b.signup_rate", "hardening.A5.checkout_sessions.replay", "monetization.ledger.credited",
                   "demo_mode.after", "demo_mode.rollback", "telemetry.acceptance.burn_in", "banners.after",
                   "banners.rollback",
                   "learning.retry.exponential", "learning.retry.jitter", "resiliency.time_to_open",
                   "resiliency.time_to_recover", "resiliency.transitions", "resiliency.auto_heal",
                   "resiliency.rollback", "security.secrets.scan", "ops.ports.A1", "ops.cost.A1.rss",
                   "ops.monitoring.noise_silenced",
                   "cleanup.dry_run", "gate.gate1"])
    # one id for every id selector of the rubric, so a rubric line added with a new check or
    # phase is covered here without a second list to keep in step
    named = [s.replace("*", "A1").replace("?", "x") for c in RUBRIC.categories for s in c.selectors()
             if not s.startswith("tag:")]
    families = list(dict.fromkeys([*families, *named]))
    tags = [c.key for c in RUBRIC.categories]
    healthy = rng.random() < 0.5  # half the sets: every family present and nearly all passing
    undecided = [s for s in Status if s is not Status.PASS]
    chosen = families if healthy else rng.sample(families, rng.randint(0, len(families)))
    return [Check(id=cid, phase="p", title=cid,
                  status=Status.PASS if rng.random() < (0.985 if healthy else 0.6) else rng.choice(undecided),
                  severity=rng.choice(["P0", "P1", "P2"]), tags=tuple(rng.sample(tags, rng.randint(1, 3))),
                  evidence=(f"evidence/{cid}.json",) if healthy or rng.random() < 0.9 else ())
            for cid in chosen]


def test_overall_is_the_exact_sum_of_weighted_for_random_check_sets() -> None:
    rubric = RUBRIC
    rng = random.Random(20240611)
    grades = {"Green": 0, "Yellow": 0, "Red": 0}
    for _ in range(150):
        checks = _random_checks(rng)
        score = score_checks(checks, rubric)
        doc = score.to_json()
        assert sum(c["weight"] for c in doc["categories"]) == 100
        assert Decimal(str(doc["overall_score"])) == sum(Decimal(str(c["weighted"])) for c in doc["categories"])
        for cat in doc["categories"]:
            assert 0 <= cat["score"] <= 5
            assert Decimal(str(cat["weighted"])) == Decimal(cat["score"] * cat["weight"]) / 5
            assert (cat["score"] == 0) or cat["evidence"]
        blocked = any(c["score"] <= 1 for c in doc["categories"]) or any(
            c.status is Status.FAIL and c.severity == "P0" and (c.id.startswith("security.") or "security" in c.tags)
            for c in checks)
        assert doc["grade"] == final_grade(score.overall, rubric.grade, blocked=blocked)
        assert bool(doc["blockers"]) == blocked
        all_pass = score_checks([c.with_status(Status.PASS) for c in checks], rubric)
        assert all(b.score >= a.score for a, b in zip(score.categories, all_pass.categories, strict=True))
        grades[doc["grade"]] += 1
    assert min(grades.values()) > 0  # the seeded sets reach every grade


def test_heatmap_and_radar() -> None:
    score = score_checks(up_to("a", 4) + up_to("b", 5), A95_B5)
    assert heatmap_rows(score) == [
        {"Category": "a", "Score": 4, "Weight": 95, "Weighted": 76.0, "Grade": "Yellow"},
        {"Category": "b", "Score": 5, "Weight": 5, "Weighted": 5.0, "Grade": "Green"}]
    assert radar_series(score) == {"labels": ["a", "b"], "titles": ["A", "B"],
                                   "series": [{"name": "score", "values": [0.8, 1.0]}], "range": [0.0, 1.0],
                                   "overall_score": 81.0, "grade": "Yellow"}


def test_top_actions_by_risk_then_weight_without_duplicates() -> None:
    shared = chk("shared.x", Status.FAIL, severity="P2")
    cats = [ladder("a", 60), ladder("b", 40)]
    for cat in cats:
        cat["levels"][0]["require"].append("shared.*")
    rubric = small_rubric(*cats)
    checks = [chk("a.l1.low", Status.FAIL, severity="P3"), chk("b.l1.crit", Status.FAIL, severity="P0"),
              chk("a.l1.med", Status.FAIL, severity="P2"), shared]
    got = [(a["action"].split()[1], a["categories"], a["risk"]) for a in top_actions(score_checks(checks, rubric))]
    assert got == [("b.l1.crit", ["b"], "critical"), ("a.l1.med", ["a"], "medium"),
                   ("shared.x", ["a", "b"], "medium"), ("a.l1.low", ["a"], "low")]
    assert len(top_actions(score_checks(checks, rubric), k=2)) == 2


def test_rubric_markdown_with_and_without_score() -> None:
    bare = rubric_markdown(A95_B5)
    assert "## A (`a`, weight 95)" in bare and "- [ ] `a.l1.*`" in bare and "[x]" not in bare
    checks = [*up_to("a", 2), chk("a.l3.x", Status.FAIL)]
    text = rubric_markdown(A95_B5, score_checks(checks, A95_B5))
    assert "**Overall: 38 / 100 — Red**" in text
    assert "### Level 2: basic — reached" in text and "### Level 3: managed — not reached" in text
    assert "- [x] `a.l1.*` — 1 matched, 1 PASS" in text
    assert "- [ ] `a.l3.*` — 1 matched, 0 PASS" in text
    assert "- [ ] `b.l1.*` — no matching check" in text
    assert "- [x] evidence: `evidence/a1.json`" in text


def test_shipped_rubric_renders_every_category() -> None:
    rubric = load_rubric(SHIPPED)
    text = rubric_markdown(rubric)
    assert all(f"(`{c.key}`, weight {c.weight})" in text for c in rubric.categories)


# -- reading checks files ------------------------------------------------------------------------
def _write(root: Path, name: str, text: str) -> None:
    (root / "checks").mkdir(parents=True, exist_ok=True)
    (root / "checks" / name).write_text(text)


def test_load_checks_round_trips_every_phase_file(tmp_path: Path) -> None:
    first = [chk("inventory.A1.base", phase="00_inventory", app="A1", observed=0.012, unit="s")]
    second = [chk("smoke.A1.p95", Status.INCONCLUSIVE, n=30, tags=("performance",))]
    _write(tmp_path, "01_smoke.json", json.dumps({"phase": "01_smoke", "checks": [c.to_dict() for c in second]}))
    _write(tmp_path, "00_inventory.json", json.dumps({"phase": "00_inventory",
                                                      "checks": [c.to_dict() for c in first]}))
    assert load_checks(tmp_path) == first + second


def test_load_checks_without_checks_folder_is_empty(tmp_path: Path) -> None:
    assert load_checks(tmp_path) == []


@pytest.mark.parametrize(("text", "message"), [
    ('{"phase": "01_smoke", "checks": [}', "checks/01_smoke.json: not valid JSON (line 1, column 34: Expecting value)"),
    ('[]', 'checks/01_smoke.json: expected an object {"phase": "<name>", "checks": [...]}'),
    ('{"phase": "01_smoke", "checks": [3]}', "checks/01_smoke.json: checks[0]: expected an object, got int"),
    ('{"phase": "01_smoke", "checks": [{"id": "x", "phase": "01_smoke"}]}',
     "checks/01_smoke.json: checks[0]: missing keys ['title', 'status']"),
    ('{"phase": "01_smoke", "checks": [{"id": "x", "phase": "p", "title": "t", "status": "MAYBE"}]}',
     "checks/01_smoke.json: checks[0]: 'MAYBE' is not a valid Status"),
    ('{"phase": "01_smoke", "checks": [{"id": "x", "phase": "p", "title": "t", "status": "PASS", "colour": 1}]}',
     "checks/01_smoke.json: checks[0]: check record has unknown keys: ['colour']"),
])
def test_load_checks_names_the_malformed_file(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path, "00_inventory.json", json.dumps({"phase": "00_inventory", "checks": []}))
    _write(tmp_path, "01_smoke.json", text)
    with pytest.raises(CheckFileError) as info:
        load_checks(tmp_path)
    assert str(info.value) == message


def test_load_checks_on_a_missing_run_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckFileError) as info:
        load_checks(tmp_path / "gone")
    assert str(info.value) == f"{tmp_path / 'gone'}: run folder not found"


def test_a_planted_defect_is_no_blocker_and_no_risk() -> None:
    """A demonstration FAIL (the defect a fix removes, planted on purpose) neither blocks the
    grade as a P0 security finding nor is listed among the risks."""
    from readiness.core.check import DEMONSTRATION, Check, Status
    from readiness.score.scoring import is_p0_security_finding

    planted = Check(id="banners.before.clear_no_credential", phase="06_telemetry_contract", title="t",
                    status=Status.FAIL, severity="P0", tags=("security", DEMONSTRATION))
    real = Check(id="banners.after.clear_no_credential", phase="06_telemetry_contract", title="t",
                 status=Status.FAIL, severity="P0", tags=("security",))
    assert not is_p0_security_finding(planted) and is_p0_security_finding(real)
    undecided = Check(id="demo_mode.before.badge", phase="05_monetization", title="t", status=Status.INCONCLUSIVE,
                      tags=(DEMONSTRATION,))
    from readiness.score.scoring import _non_blocking
    assert _non_blocking([undecided]) == []
