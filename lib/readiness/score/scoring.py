"""The Enterprise Readiness Score: recorded checks + rubric -> score, grade, gaps and actions.

Why it is pure logic over files: the score must be reproducible by anyone holding the
run folder. It reads only ``checks/*.json`` and the rubric, and every number it prints
can be traced back to named checks and the evidence files they link.

Method. A category scores the highest level L (0..5) such that every level 1..L holds.
A level holds when its rule holds over the checks its selectors match (``all_pass``:
each selector matches at least one check and all are PASS; ``any_pass``: at least one
matched check is PASS) *and* the checks that carry it link at least one evidence file —
no score without linked artifacts. ``weighted = score / 5 × weight`` rounded to two
decimals, and ``overall_score`` is the exact sum of those rounded values, so the JSON
adds up. Gaps and actions describe the first level not reached. The grade comes from
the rubric's boundaries, capped by the blocking rule (a category at 1 or below, or a
failed P0 security check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from readiness.core.check import Check, Status
from readiness.score.rubric import (
    LEVEL_NAMES,
    MAX_LEVEL,
    Category,
    GradeBands,
    Level,
    Rubric,
    select,
)

VERSION = "1.0"
GRADES = ("Green", "Yellow", "Red")  # best first
_CENT = Decimal("0.01")
_NOT_DECIDED = (Status.INCONCLUSIVE, Status.SKIPPED, Status.STOPPED, Status.BLOCKED, Status.ERROR)
_VERB = {Status.FAIL: "Fix", Status.INCONCLUSIVE: "Collect enough data to decide", Status.SKIPPED: "Run",
         Status.STOPPED: "Clear the stop condition and rerun", Status.BLOCKED: "Unblock and run",
         Status.ERROR: "Repair and rerun"}
_DETAIL_MAX, _IDS_SHOWN = 120, 5  # characters of detail text, check ids named before "and N more"


@dataclasses.dataclass(frozen=True)
class RequirementResult:
    """One selector of a level and the checks it matched."""

    selector: str
    matched: tuple[Check, ...]

    def met(self, rule: str) -> bool:
        """The per-selector view used by the rubric checklist."""
        if rule == "any_pass":
            return any(c.passed for c in self.matched)
        return bool(self.matched) and all(c.passed for c in self.matched)


@dataclasses.dataclass(frozen=True)
class LevelResult:
    """Whether one level holds: ``rule_holds`` on statuses, ``satisfied`` also needs evidence."""

    level: Level
    requirements: tuple[RequirementResult, ...]
    rule_holds: bool
    satisfied: bool
    evidence: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CategoryScore:
    key: str
    title: str
    weight: int
    score: int
    weighted: Decimal
    evidence: tuple[str, ...]
    gaps: tuple[str, ...]
    actions: tuple[dict[str, str], ...]
    levels: tuple[LevelResult, ...]

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "weight": self.weight, "score": self.score, "weighted": float(self.weighted),
                "evidence": list(self.evidence), "gaps": list(self.gaps),
                "actions": [dict(a) for a in self.actions]}


@dataclasses.dataclass(frozen=True)
class ReadinessScore:
    overall: Decimal
    grade: str
    categories: tuple[CategoryScore, ...]
    blockers: tuple[str, ...]
    non_blocking_risks: tuple[str, ...]
    assumptions: tuple[str, ...]
    scoring_notes: str
    bands: GradeBands
    risk_order: tuple[str, ...]

    @property
    def overall_score(self) -> float:
        return float(self.overall)

    def category(self, key: str) -> CategoryScore:
        for cat in self.categories:
            if cat.key == key:
                return cat
        raise KeyError(key)

    def to_json(self) -> dict[str, Any]:
        """The ``readiness_score.json`` document, in the seed's exact shape."""
        return {"version": VERSION, "overall_score": self.overall_score, "grade": self.grade,
                "categories": [c.to_json() for c in self.categories], "blockers": list(self.blockers),
                "non_blocking_risks": list(self.non_blocking_risks), "assumptions": list(self.assumptions),
                "scoring_notes": self.scoring_notes}


# -- grades --------------------------------------------------------------------------
def grade_for(value: float | Decimal, bands: GradeBands) -> str:
    """Green at or above ``bands.green``, Yellow at or above ``bands.yellow``, else Red."""
    if value >= bands.green:
        return "Green"
    if value >= bands.yellow:
        return "Yellow"
    return "Red"


def final_grade(overall: float | Decimal, bands: GradeBands, *, blocked: bool) -> str:
    """Apply the blocking rule: a blocked score is at best Yellow when >= green, else Red."""
    grade = grade_for(overall, bands)
    if not blocked:
        return grade
    cap = "Yellow" if overall >= bands.green else "Red"
    return max(grade, cap, key=GRADES.index)


def is_p0_security_finding(check: Check) -> bool:
    """A failed P0 check that is about security (by id family or tag)."""
    return (check.status is Status.FAIL and check.severity == "P0" and not check.demonstration
            and (check.id.startswith("security.") or "security" in check.tags))


# -- describing checks -----------------------------------------------------------------
def _num(value: float | str | None, unit: str) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}" if unit else text


def _details(check: Check) -> str:
    """observed vs threshold and n, or the detail text when there is no number."""
    parts: list[str] = []
    if check.observed is not None or check.threshold is not None:
        observed = "no observation" if check.observed is None else _num(check.observed, check.unit)
        text = f"observed {observed}"
        if check.threshold is not None:
            comparator = f"{check.comparator} " if check.comparator else ""
            text += f" vs {comparator}{_num(check.threshold, check.unit)}"
        parts.append(text)
    if check.n is not None:
        parts.append(f"n={check.n}")
    if not parts and check.detail:
        detail = " ".join(check.detail.split())
        parts.append(detail if len(detail) <= _DETAIL_MAX else detail[:_DETAIL_MAX - 1] + "…")
    return ", ".join(parts)


def describe(check: Check) -> str:
    """``smoke.A3.p95 FAIL: observed 182 ms vs <= 120 ms, n=60``."""
    details = _details(check)
    return f"{check.id} {check.status}" + (f": {details}" if details else "")


def _shorten(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_IDS_SHOWN])
    return shown + (f" and {len(ids) - _IDS_SHOWN} more" if len(ids) > _IDS_SHOWN else "")


# -- evaluation --------------------------------------------------------------------------
def evaluate_level(level: Level, checks: Sequence[Check]) -> LevelResult:
    """Apply one level's rule to the recorded checks, then the evidence rule."""
    reqs = tuple(RequirementResult(sel, tuple(select(sel, checks))) for sel in level.require)
    if level.rule == "any_pass":
        supporting = [c for r in reqs for c in r.matched if c.passed]
        holds = bool(supporting)
    else:
        supporting = [c for r in reqs for c in r.matched]
        holds = all(r.met("all_pass") for r in reqs)
    evidence = tuple(sorted({p for c in supporting for p in c.evidence})) if holds else ()
    return LevelResult(level, reqs, holds, holds and bool(evidence), evidence)


def undersized(checks: Iterable[Check]) -> list[Check]:
    """Undecided checks whose sample was smaller than their design point needs
    (``design_n``): a level they hold back is not shown to be missed, only not evidenced
    at this profile's sample sizes."""
    out = {c.id: c for c in checks if c.status is Status.INCONCLUSIVE and c.design_n is not None
           and c.n is not None and c.n < c.design_n}
    return list(out.values())


def _action(owner: str, severity: str, rubric: Rubric, text: str) -> dict[str, str]:
    return {"owner": owner, "eta": rubric.eta_by_severity.of(severity),
            "risk": rubric.risk_by_severity.of(severity), "action": text}


def _shortfall(result: LevelResult, rubric: Rubric, owners: Mapping[str, str],
               default_owner: str) -> tuple[list[str], list[dict[str, str]]]:
    """Gap lines and actions for the first level a category has not reached."""
    number = result.level.level
    head = f"level {number} ({LEVEL_NAMES[number]})"
    missing = rubric.missing_evidence_severity
    if result.rule_holds:  # statuses are fine, only the linked artifacts are missing
        ids = list(dict.fromkeys(c.id for r in result.requirements for c in r.matched if c.passed))
        return ([f"{head}: the passing checks link no evidence files ({_shorten(ids)})"],
                [_action(default_owner, missing, rubric, f"Link evidence files to {_shorten(ids)}")])
    gaps: list[str] = []
    actions: list[dict[str, str]] = []
    seen: set[str] = set()
    short = undersized(c for r in result.requirements for c in r.matched)
    if short:
        named = ", ".join(f"{c.id} needs n ≥ {c.design_n}, has {c.n}" for c in short[:_IDS_SHOWN])
        more = f" and {len(short) - _IDS_SHOWN} more" if len(short) > _IDS_SHOWN else ""
        gaps.append(f"{head}: cannot be evidenced in this profile: {len(short)} undecided "
                    f"check{'s' if len(short) != 1 else ''} took fewer samples than the design point needs "
                    f"({named}{more})")
    for req in result.requirements:
        if not req.matched:
            gaps.append(f"{head}: no check matches {req.selector!r}")
            actions.append(_action(default_owner, missing, rubric,
                                   f"Record checks matching {req.selector!r} (none in this run)"))
            continue
        for check in req.matched:
            if check.passed or check.id in seen:
                continue
            seen.add(check.id)
            gaps.append(f"{head}: {describe(check)}")
            owner = owners.get(check.app, default_owner) if check.app else default_owner
            details = _details(check)
            verb = _VERB[check.status]
            if check in short:
                verb = f"Run with a sample of n ≥ {check.design_n} (the design point's size) for"
            text = f"{verb} {check.id} ({check.status}{': ' + details if details else ''})"
            actions.append(_action(owner, check.severity, rubric, text))
    return gaps, actions


def score_category(category: Category, checks: Sequence[Check], rubric: Rubric, *,
                   owners: Mapping[str, str], default_owner: str) -> CategoryScore:
    """Climb one category's ladder; stop at the first level that does not hold."""
    levels = tuple(evaluate_level(lv, checks) for lv in category.levels)
    score = 0
    while score < MAX_LEVEL and levels[score].satisfied:
        score += 1
    gaps: list[str] = []
    actions: list[dict[str, str]] = []
    if score < MAX_LEVEL:
        gaps, actions = _shortfall(levels[score], rubric, owners, default_owner)
    if not any(r.matched for lr in levels for r in lr.requirements):
        gaps = ["no evidence"]
    weighted = (Decimal(score) * category.weight / MAX_LEVEL).quantize(_CENT, rounding=ROUND_HALF_UP)
    evidence = tuple(sorted({p for lr in levels[:score] for p in lr.evidence}))
    return CategoryScore(category.key, category.title, category.weight, score, weighted, evidence,
                         tuple(gaps), tuple(actions), levels)


def _non_blocking(checks: Sequence[Check]) -> list[str]:
    """Undecided checks grouped per phase and status: compact, yet every one counted."""
    groups: dict[tuple[str, Status], list[str]] = {}
    for check in checks:
        if check.status in _NOT_DECIDED and not check.demonstration:
            groups.setdefault((check.phase, check.status), []).append(check.id)
    return [f"{phase}: {len(ids)} {status} ({_shorten(ids)})" for (phase, status), ids in groups.items()]


def _notes(bands: GradeBands) -> str:
    return (f"Each category scores the highest level L (0-{MAX_LEVEL}) such that every rubric level 1..L "
            "holds: all_pass needs every selector to match recorded checks that all PASS, any_pass needs one "
            "matched PASS, and in both cases the passing checks must link at least one evidence file. "
            f"weighted = score / {MAX_LEVEL} x weight, rounded to 2 decimals; overall_score is the sum of the "
            f"weighted values. Green >= {bands.green:g}, Yellow >= {bands.yellow:g}, Red below. A category "
            f"at 1 or below, or a failed P0 security check, caps the grade at Yellow when overall_score >= "
            f"{bands.green:g} and at Red otherwise. Gaps and actions describe the first level each category "
            "has not reached; ETA and risk follow the severity of the check behind each action.")


def score_checks(checks: Sequence[Check], rubric: Rubric, *, owners: Mapping[str, str] | None = None,
                 default_owner: str = "platform", assumptions: Sequence[str] = ()) -> ReadinessScore:
    """Score recorded checks against the rubric.

    ``owners`` maps an app id to its owning team (actions on checks without an app, or
    on apps not listed, go to ``default_owner``). ``assumptions`` are notes the caller
    wants stated next to the score, such as the profile the run used.
    """
    owners = owners or {}
    cats = tuple(score_category(c, checks, rubric, owners=owners, default_owner=default_owner)
                 for c in rubric.categories)
    overall = sum((c.weighted for c in cats), Decimal("0.00"))
    blockers = [f"{c.key} scores {c.score}/{MAX_LEVEL} (a category at 1 or below blocks the grade)"
                for c in cats if c.score <= 1]
    blockers += [f"P0 security finding: {describe(c)}" for c in checks if is_p0_security_finding(c)]
    phases = sorted({c.phase for c in checks})
    stated = list(assumptions) + [
        "Categories without evidence score 0; a level counts only with linked evidence files.",
        "Only PASS satisfies a level; INCONCLUSIVE, SKIPPED, STOPPED, BLOCKED and ERROR do not.",
        "The score covers the phases that recorded checks: " + (", ".join(phases) if phases else "none") + ".",
    ]
    return ReadinessScore(
        overall=overall, grade=final_grade(overall, rubric.grade, blocked=bool(blockers)), categories=cats,
        blockers=tuple(blockers), non_blocking_risks=tuple(_non_blocking(checks)), assumptions=tuple(stated),
        scoring_notes=_notes(rubric.grade), bands=rubric.grade, risk_order=rubric.risk_by_severity.ordered())


# -- derived views -------------------------------------------------------------------------
def heatmap_rows(score: ReadinessScore) -> list[dict[str, Any]]:
    """Rows of ``readiness_heatmap.csv``; Grade is the category's band (score/5 on 0–100)."""
    return [{"Category": c.key, "Score": c.score, "Weight": c.weight, "Weighted": float(c.weighted),
             "Grade": grade_for(Decimal(c.score) * 100 / MAX_LEVEL, score.bands)} for c in score.categories]


def radar_series(score: ReadinessScore) -> dict[str, Any]:
    """``readiness_radar.json``: one normalised (0–1) value per category, in rubric order."""
    return {"labels": [c.key for c in score.categories], "titles": [c.title for c in score.categories],
            "series": [{"name": "score", "values": [c.score / MAX_LEVEL for c in score.categories]}],
            "range": [0.0, 1.0], "overall_score": score.overall_score, "grade": score.grade}


def top_actions(score: ReadinessScore, k: int = 5) -> list[dict[str, Any]]:
    """The k most pressing actions: highest risk first, then heaviest category weight.

    The same action listed under several categories appears once, naming all of them.
    """
    rank = {risk: i for i, risk in enumerate(score.risk_order)}
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    order: list[tuple[int, int, int, tuple[str, str]]] = []
    for cat in score.categories:
        for action in cat.actions:
            ident = (action["owner"], action["action"])
            if ident in merged:
                merged[ident]["categories"].append(cat.key)
                continue
            merged[ident] = {"categories": [cat.key], **action}
            order.append((rank.get(action["risk"], len(rank)), -cat.weight, len(order), ident))
    return [merged[ident] for *_, ident in sorted(order)[:k]]


def rubric_markdown(rubric: Rubric, score: ReadinessScore | None = None) -> str:
    """``readiness_rubric.md``: every ladder, with a ticked evidence checklist when scored."""
    bands = rubric.grade
    lines = ["# Enterprise Readiness rubric", "",
             "Levels: " + ", ".join(f"{n} {name}" for n, name in LEVEL_NAMES.items()) + ". "
             f"Grade: Green >= {bands.green:g}, Yellow >= {bands.yellow:g}, Red below.", ""]
    if score is not None:
        lines += [f"**Overall: {score.overall_score:g} / 100 — {score.grade}**", ""]
    for cat in rubric.categories:
        result = None if score is None else score.category(cat.key)
        lines += [f"## {cat.title} (`{cat.key}`, weight {cat.weight})", ""]
        if result is not None:
            lines += [f"Score {result.score}/{MAX_LEVEL}, weighted {float(result.weighted):g} of {cat.weight}.", ""]
        for i, level in enumerate(cat.levels):
            lr = None if result is None else result.levels[i]
            state = "" if result is None else (" — reached" if i < result.score else " — not reached")
            lines += [f"### Level {level.level}: {level.name}{state}", "", level.description, "",
                      f"Rule: `{level.rule}`.", ""]
            for j, selector in enumerate(level.require):
                if lr is None:
                    lines.append(f"- [ ] `{selector}`")
                    continue
                req = lr.requirements[j]
                passing = sum(c.passed for c in req.matched)
                found = f"{len(req.matched)} matched, {passing} PASS" if req.matched else "no matching check"
                lines.append(f"- [{'x' if req.met(level.rule) else ' '}] `{selector}` — {found}")
            if lr is not None and lr.rule_holds and not lr.evidence:
                lines.append("- [ ] evidence files linked")
            elif lr is not None and lr.evidence:
                lines.append("- [x] evidence: " + ", ".join(f"`{p}`" for p in lr.evidence))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
