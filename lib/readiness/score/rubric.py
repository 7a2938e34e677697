"""The readiness rubric: which checks lift each category from one maturity level to the next.

Why a rubric file instead of scoring code: the Enterprise Readiness Score must be
explainable and overridable per ecosystem. ``params/rubric.yaml`` states, for each of
the eleven categories, its weight and a ladder of five levels (1 ad hoc … 5 optimized);
each level names the checks that must hold to reach it. The scorer
(:mod:`readiness.score.scoring`) only applies the ladder, so a reader can audit a score by
reading the YAML next to ``checks/*.json``.

A *selector* names checks in one of two ways:

- a check-id glob, ``smoke.*.ready`` (``*`` and ``?`` as in shell globs; ``*`` also
  spans dots), matched against :attr:`readiness.core.check.Check.id`;
- ``tag:<name>``, every check carrying that tag (phases tag checks with the rubric
  categories they inform).

Demonstrations (checks tagged ``demonstration``: a fix's ``before`` state, with the defect
planted on purpose) are never selected, by a tag or a glob.

A level's ``rule`` says how the matched checks must fare: ``all_pass`` (every selector
matches at least one check and every matched check is PASS) or ``any_pass`` (at least
one matched check is PASS).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from readiness.core.check import Check
from readiness.params.model import (  # one wording for every "field.path: problem" line
    ConfigFileError,
    format_validation_error,
    read_yaml,
)
from readiness.params.sections import StrictModel

LEVEL_NAMES: dict[int, str] = {0: "absent", 1: "ad hoc", 2: "basic", 3: "managed", 4: "measured", 5: "optimized"}
MAX_LEVEL = 5
TOTAL_WEIGHT = 100
_GLOB = re.compile(r"^[A-Za-z0-9_.*?-]+$")
_TAG = re.compile(r"^[A-Za-z0-9_.-]+$")


class RubricError(ConfigFileError):
    """Invalid rubric file."""

    what = "rubric"


def _check_selector(value: str) -> str:
    """Reject selectors that could never be meant: spaces, brackets, empty tags."""
    if value.startswith("tag:"):
        ok = bool(_TAG.match(value[4:]))
    else:
        ok = bool(_GLOB.match(value))
    if not ok:
        raise ValueError(f"bad selector {value!r}: expected a check-id glob "
                         "(letters, digits, '.', '_', '-', '*', '?') or 'tag:<name>'")
    return value


Selector = Annotated[str, AfterValidator(_check_selector)]


def selector_matches(selector: str, check: Check) -> bool:
    """True when ``check`` is named by ``selector`` (a tag or a case-sensitive id glob)."""
    if selector.startswith("tag:"):
        return selector[4:] in check.tags
    return fnmatch.fnmatchcase(check.id, selector)


def select(selector: str, checks: Iterable[Check]) -> list[Check]:
    """The checks a selector names, in their original order; never a demonstration (a
    fix's ``before`` state, which plants the defect on purpose: evidence about the fix, not
    about the system as configured), whatever the selector."""
    return [c for c in checks if not c.demonstration and selector_matches(selector, c)]


class Level(StrictModel):
    """One rung of a category's ladder and the evidence that reaches it."""

    level: int = Field(ge=1, le=MAX_LEVEL)
    description: str = Field(min_length=1)
    require: tuple[Selector, ...] = Field(min_length=1)
    rule: Literal["all_pass", "any_pass"] = "all_pass"

    @property
    def name(self) -> str:
        return LEVEL_NAMES[self.level]


class Category(StrictModel):
    """A weighted readiness category with exactly the five levels 1..5, in order."""

    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str = Field(min_length=1)
    weight: int = Field(gt=0, le=TOTAL_WEIGHT)
    levels: tuple[Level, ...]

    @field_validator("levels")
    @classmethod
    def _one_to_five(cls, levels: tuple[Level, ...]) -> tuple[Level, ...]:
        got = [lv.level for lv in levels]
        if got != list(range(1, MAX_LEVEL + 1)):
            raise ValueError(f"expected levels 1, 2, 3, 4, 5 in order, got {got}")
        return levels

    def selectors(self) -> list[str]:
        """Every selector of every level, first occurrence order (for 'any evidence?')."""
        return list(dict.fromkeys(s for lv in self.levels for s in lv.require))


class GradeBands(StrictModel):
    """Lower bounds (inclusive) of the Green and Yellow grades on the 0–100 scale."""

    green: float = Field(gt=0, le=100)
    yellow: float = Field(gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> GradeBands:
        if self.yellow >= self.green:
            raise ValueError(f"yellow ({self.yellow:g}) must be below green ({self.green:g})")
        return self


class BySeverity(StrictModel):
    """One value per check severity, so every action gets an ETA and a risk."""

    P0: str = Field(min_length=1)
    P1: str = Field(min_length=1)
    P2: str = Field(min_length=1)
    P3: str = Field(min_length=1)

    def of(self, severity: str) -> str:
        return str(getattr(self, severity))

    def ordered(self) -> tuple[str, ...]:
        """Values from the most to the least severe (used to rank actions by risk)."""
        return (self.P0, self.P1, self.P2, self.P3)


class Rubric(StrictModel):
    """The whole rubric; weights of all categories sum to exactly 100."""

    categories: tuple[Category, ...] = Field(min_length=1)
    grade: GradeBands
    eta_by_severity: BySeverity
    risk_by_severity: BySeverity
    missing_evidence_severity: Literal["P0", "P1", "P2", "P3"] = "P2"

    @model_validator(mode="after")
    def _consistent(self) -> Rubric:
        seen: dict[str, int] = {}
        for i, cat in enumerate(self.categories):
            if cat.key in seen:
                raise ValueError(f"categories[{i}].key: duplicate category key {cat.key!r} "
                                 f"(first at categories[{seen[cat.key]}])")
            seen[cat.key] = i
        total = sum(cat.weight for cat in self.categories)
        if total != TOTAL_WEIGHT:
            raise ValueError(f"categories: weights must sum to {TOTAL_WEIGHT}, got {total}")
        return self

    def category(self, key: str) -> Category:
        for cat in self.categories:
            if cat.key == key:
                return cat
        raise KeyError(key)


def parse_rubric(data: Any, source: str = "<rubric>") -> Rubric:
    """Validate an already-parsed rubric document."""
    if not isinstance(data, dict):
        raise RubricError(source, ["(top level): expected a mapping of keys to values"])
    try:
        return Rubric.model_validate(data)
    except ValidationError as exc:
        raise RubricError(source, [format_validation_error(e) for e in exc.errors()]) from None


def load_rubric(path: str | os.PathLike[str]) -> Rubric:
    """Read and validate a rubric file; :class:`RubricError` names every bad field."""
    return parse_rubric(read_yaml(path, RubricError), str(Path(path)))
