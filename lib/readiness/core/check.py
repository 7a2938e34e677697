"""The Check record: one verdict, with everything a reader needs to trust or doubt it.

Every phase reports what it found as a list of :class:`Check` records, written to
``checks/<phase>.json`` by the run folder. The readiness score reads nothing else, so a
check must carry its own evidence: the observed value, its interval, the threshold it was
held against, how many samples it rests on and over which window. The verdict *rules*
that turn numbers into a status live in :mod:`readiness.core.verdict`; this module only
defines the record so that every part of the suite shares one shape.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class Status(enum.StrEnum):
    """Outcome of a check.

    PASS/FAIL are decided by the data; INCONCLUSIVE when the data cannot decide (too few
    samples, an interval straddling the threshold, no data at all); SKIPPED when the
    check was deliberately not run (with a reason in ``detail``); STOPPED when a stop
    condition ended the phase; BLOCKED when a gate or a missing approval prevented it;
    ERROR when the check itself broke.
    """

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    SKIPPED = "SKIPPED"
    STOPPED = "STOPPED"
    BLOCKED = "BLOCKED"
    ERROR = "ERROR"


SEVERITIES = ("P0", "P1", "P2", "P3")
#: The tag of a check that demonstrates a fix by planting the defect it removes (a fix's
#: ``before`` state, with its flag switched OFF on purpose). Its verdict is evidence about
#: the fix, never a verdict on the system as configured: the score does not count it.
DEMONSTRATION = "demonstration"
COMPARATORS = ("<=", "<", ">=", ">", "==", "")


def _clean_number(value: Any) -> Any:
    """JSON has no NaN/inf: store them as None so files stay strictly valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclasses.dataclass(frozen=True)
class Check:
    """One verdict.

    ``id`` is stable across runs (``smoke.A3.p95``) so history and the rubric can refer
    to it. ``evidence`` holds paths relative to the run folder. ``tags`` name rubric
    categories (``reliability``, ``performance``…) plus free labels such as ``gate``.
    """

    id: str
    phase: str
    title: str
    status: Status
    app: str | None = None
    observed: float | str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    #: Two-sided coverage of [ci_low, ci_high]: 0.90 for the rules, which decide each side
    #: at a one-sided 5% (the interval's ends are those one-sided 95% bounds); None when
    #: the rule does not state it.
    ci_level: float | None = None
    #: The statistical design of the decision, for a reader and for the run-wide
    #: corrections: ``rule`` names the family (``success_rate``, ``error_rate``,
    #: ``latency``, ``share``, ``noninferiority``, ``comparison``, ``interval``; empty for a
    #: fact such as a status code), ``sided`` how PASS and FAIL are tested
    #: (``one-sided``: each a one-sided test at ``alpha``; ``TOST``: two one-sided tests),
    #: ``alpha`` the one-sided significance level, ``p_value`` the one-sided p-value of the
    #: FAIL side (evidence against "meets the bar"; None where the rule has none) and ``q``
    #: the quantile a latency rule judges.
    rule: str = ""
    sided: str = ""
    alpha: float | None = None
    p_value: float | None = None
    q: float | None = None
    #: The n a system at the design point needs to PASS with the planned probability
    #: (:mod:`readiness.stats.design`), set when the check is recorded; None when the rule
    #: has no design point or none is declared.
    design_n: int | None = None
    threshold: float | str | None = None
    comparator: str = ""
    unit: str = ""
    n: int | None = None
    window: str | None = None
    severity: str = "P2"
    tags: tuple[str, ...] = ()
    evidence: tuple[str, ...] = ()
    detail: str = ""

    def __post_init__(self) -> None:
        if not self.id or any(ch.isspace() for ch in self.id):
            raise ValueError(f"check id must be a non-empty token without spaces, got {self.id!r}")
        if not isinstance(self.status, Status):
            object.__setattr__(self, "status", Status(self.status))
        if self.severity not in SEVERITIES:
            raise ValueError(f"check {self.id}: severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.comparator not in COMPARATORS:
            raise ValueError(f"check {self.id}: comparator must be one of {COMPARATORS}, got {self.comparator!r}")
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "evidence", tuple(self.evidence))

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS

    @property
    def demonstration(self) -> bool:
        """True for a check that plants a defect on purpose to show a fix (tag ``demonstration``)."""
        return DEMONSTRATION in self.tags

    def with_status(self, status: Status, detail: str | None = None) -> Check:
        """A copy with another status (e.g. STOPPED by a stop condition)."""
        return dataclasses.replace(self, status=status, detail=self.detail if detail is None else detail)

    def with_evidence(self, *paths: str) -> Check:
        return dataclasses.replace(self, evidence=tuple(self.evidence) + tuple(paths))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        data["tags"] = list(self.tags)
        data["evidence"] = list(self.evidence)
        for key in ("observed", "ci_low", "ci_high", "ci_level", "threshold", "alpha", "p_value", "q"):
            data[key] = _clean_number(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Check:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"check record has unknown keys: {sorted(unknown)}")
        return cls(**{**data, "status": Status(data["status"]),
                      "tags": tuple(data.get("tags", ())), "evidence": tuple(data.get("evidence", ()))})


def summarize(checks: Iterable[Check]) -> dict[str, int]:
    """Count checks per status, every status present (zeros included) for stable tables."""
    counts = {s.value: 0 for s in Status}
    for check in checks:
        counts[check.status.value] += 1
    return counts


class CheckFileError(Exception):
    """A ``checks/*.json`` file cannot be read as recorded checks; the message names it."""


def load_checks(run_root: str | Path, phase: str | None = None) -> list[Check]:
    """Every check of every ``checks/*.json`` file (sorted by file name), or of one phase.

    A run folder without a ``checks/`` directory yields no checks (every category then
    scores 0); a malformed file raises :class:`CheckFileError` naming the file.
    """
    root = Path(run_root)
    if not root.is_dir():
        raise CheckFileError(f"{root}: run folder not found")
    out: list[Check] = []
    pattern = f"{phase}.json" if phase else "*.json"
    for path in sorted((root / "checks").glob(pattern)):
        rel = path.relative_to(root).as_posix()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CheckFileError(f"{rel}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckFileError(f"{rel}: cannot read file ({exc})") from None
        if not (isinstance(data, dict) and isinstance(data.get("phase"), str) and isinstance(data.get("checks"), list)):
            raise CheckFileError(f'{rel}: expected an object {{"phase": "<name>", "checks": [...]}}')
        for i, item in enumerate(data["checks"]):
            if not isinstance(item, dict):
                raise CheckFileError(f"{rel}: checks[{i}]: expected an object, got {type(item).__name__}")
            absent = [k for k in ("id", "phase", "title", "status") if k not in item]
            if absent:
                raise CheckFileError(f"{rel}: checks[{i}]: missing keys {absent}")
            try:
                out.append(Check.from_dict(item))
            except (ValueError, TypeError) as exc:
                raise CheckFileError(f"{rel}: checks[{i}]: {exc}") from None
    return out
