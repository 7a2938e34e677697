"""The run's closing report (docs/phases.md#11-readiness-score, docs/phases.md#guardrails), written last by notebook 11.

Four functions, one per notebook cell, called after the score is computed:

* :func:`validation_report` — ``reports/validation_report.md``, leadership's summary: grade
  and score, the hot-path P95 delta with its interval, end-to-end verdicts, security and
  cost outcomes, every escalation condition (docs/phases.md#guardrails) with whether it occurred, and the
  check counts of every phase.
* :func:`e2e_results_after` — ``reports/e2e_results_after.json``: the end-to-end checks of
  the funnels, monetization and activation phases, with a verdict per funnel.
* :func:`a8_validation_after` — ``reports/a8_validation_after.json``: what the command
  center showed — the telemetry-contract verdicts, its tile/banner/demo-mode checks, and a
  fresh read of its tiles at closing time.
* :func:`post_cards` — the two read-only cards (run status with links, enterprise readiness),
  posted to the command center and, on the sandbox, verified on its dashboard in Chromium.

The report's text is built by :mod:`readiness.phases.readiness_score.closing_report` and the cards by
:mod:`readiness.phases.readiness_score.cards`; this module holds the cells and the two JSON documents.
Apart from the command center's answers, everything comes from the run folder: recorded
checks, ``run.json``, the approvals log and ``reports/comparison.csv``. A phase that did
not run is named with its reason and links nothing; a file that is not in the run folder
is written as missing, never as a link that leads nowhere. Both JSON documents are
validated against their packaged schemas before they are written. The closing checks
(``closing.cards.*``) belong to this phase, which the score never reads.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import Markdown
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from readiness.core import aio
from readiness.core.check import Check, summarize
from readiness.params.registry import phases_with
from readiness.phasekit.context import Phase
from readiness.phases.readiness_score import cards as closing_cards
from readiness.phases.readiness_score.closing_report import (
    E2E_PHASES,
    TELEMETRY,
    e2e_checks,
    funnel_summaries,
    phase_states,
    validation_markdown,
)
from readiness.report.markdown import fmt_num
from readiness.score.scoring import ReadinessScore

REPORT = "reports/validation_report.md"
E2E_FILE, A8_FILE = "reports/e2e_results_after.json", "reports/a8_validation_after.json"
A8_PHASES = phases_with("command_center")
MD_LINK = re.compile(r"\[([^\]]+)\]\([^)\s]+\)")
A8_CHECK = re.compile(r"^(banners|demo_mode)\.|tile")
SCHEMAS = {E2E_FILE: "e2e_results_after.schema.json", A8_FILE: "a8_validation_after.schema.json"}
__all__ = ["ClosingError", "a8_validation_after", "e2e_results_after", "post_cards", "validation_report"]


class ClosingError(ValueError):
    """A closing document that does not match its schema; the message names the place."""


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def check_json(check: Check, root: Path) -> dict[str, Any]:
    """A check for the JSON documents, its evidence split into files present and missing."""
    data = check.to_dict()
    keep = ("id", "phase", "title", "status", "observed", "ci_low", "ci_high", "threshold", "comparator", "unit", "n",
            "detail")
    return {**{k: data[k] for k in keep}, "evidence": [e for e in check.evidence if (root / e).exists()],
            "missing_evidence": [e for e in check.evidence if not (root / e).exists()]}


def validated(relpath: str, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` when it matches the schema of ``relpath``; :class:`ClosingError` naming the first problem."""
    errors = sorted(_validator(SCHEMAS[relpath]).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(document)"
        raise ClosingError(f"{relpath} does not match schemas/{SCHEMAS[relpath]} at {where}: {errors[0].message}")
    return document


@functools.cache
def _registry() -> Registry:
    """Both packaged schemas, by their ``$id`` (the A8 document refers to the e2e one's definitions)."""
    schemas = [json.loads(resources.files("readiness").joinpath("schemas", f).read_text()) for f in SCHEMAS.values()]
    registry: Registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    return registry


@functools.cache
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads(resources.files("readiness").joinpath("schemas", name).read_text())
    return Draft202012Validator(schema, registry=_registry())


@functools.cache
def _tile_validator() -> Draft202012Validator:
    return Draft202012Validator({"$ref": _validator(SCHEMAS[A8_FILE]).schema["$id"] + "#/$defs/tile"},
                                registry=_registry())


def tile_problem(tile: Any) -> str | None:
    """None when a tile has the documented shape (``#/$defs/tile``), else the first problem."""
    error = next(iter(_tile_validator().iter_errors(tile)), None)
    return None if error is None else error.message


# -- the four cells --------------------------------------------------------------------------
def _context(phase: Phase) -> tuple[Path, list[Check], dict[str, Any]]:
    return phase.run.root, phase.run.read_decisions().checks, phase.run.info()


def _base(phase: Phase) -> dict[str, Any]:
    return {"version": "1.0", "run_id": phase.run.root.name, "generated_at": now_iso(),
            "ecosystem": phase.params.ecosystem, "environment": phase.params.environment}


def validation_report(phase: Phase, score: ReadinessScore) -> Markdown:
    """Write ``reports/validation_report.md`` (see :func:`validation_markdown`) and show it.

    The file's links are relative to ``reports/``; the notebook's HTML pages live elsewhere
    (``html/``, ``html/leadership/``), so the copy shown here names the paths instead of
    linking them, rather than carry links that would lead nowhere.
    """
    root, checks, info = _context(phase)
    text = validation_markdown(run_name=root.name, ecosystem=phase.params.ecosystem,
                               environment=phase.params.environment, profile_note=phase.params.profile_note,
                               root=root, checks=checks, info=info, score=score, this_phase=phase.name)
    phase.run.write_text(REPORT, text)
    return Markdown(f"Written to `{REPORT}`.\n\n" + MD_LINK.sub(r"`\1`", text))


def e2e_document(base: Mapping[str, Any], root: Path, checks: Sequence[Check],
                 info: Mapping[str, Any]) -> dict[str, Any]:
    """The e2e document of a run, validated (pure: the cell adds only the file write)."""
    e2e = e2e_checks(checks)
    return validated(E2E_FILE, {**base, "phases": phase_states(E2E_PHASES, checks, info),
                                "funnels": funnel_summaries(e2e), "checks": [check_json(c, root) for c in e2e]})


def e2e_results_after(phase: Phase) -> pd.DataFrame:
    """``reports/e2e_results_after.json``: the end-to-end checks and one verdict per funnel."""
    root, checks, info = _context(phase)
    doc = e2e_document(_base(phase), root, checks, info)
    phase.run.write_json(E2E_FILE, doc)
    rows = [{"funnel": f["funnel"], "phase": f["phase"], "verdict": f["status"], "checks (n)": f["n_checks"]}
            for f in doc["funnels"]]
    rows += [{"funnel": "—", "phase": p, "verdict": f"did not run ({s['reason']})", "checks (n)": 0}
             for p, s in doc["phases"].items() if not s["ran"]]
    return pd.DataFrame(rows, columns=["funnel", "phase", "verdict", "checks (n)"])


def section(root: Path, part: Sequence[Check], phases: Sequence[str], checks: Sequence[Check],
            info: Mapping[str, Any]) -> dict[str, Any]:
    """Some of the run's checks, with the state of the phases that record them."""
    return {"phases": phase_states(phases, checks, info), "counts": summarize(part),
            "checks": [check_json(c, root) for c in part]}


async def read_tiles(phase: Phase) -> dict[str, Any]:
    """A fresh ``GET /api/tiles`` of the command center (a read: allowed in every environment)."""
    a8 = phase.params.app(phase.params.telemetry_app)
    out: dict[str, Any] = {"app": a8.id, "url": a8.url("/api/tiles"), "read_at": now_iso(), "status": None,
                           "error": None, "demo_mode": None, "tiles": []}
    async with phase.client() as client:
        sample = await client.get(out["url"], app=a8.id, route="/api/tiles", keep_body=True)
    out["status"] = sample.status
    if sample.status != 200:
        out["error"] = sample.error_detail or sample.error or f"HTTP {sample.status}"
        return out
    try:
        body = sample.json()
        tiles, demo = list(body["tiles"]), body.get("demo_mode")
    except (ValueError, KeyError, TypeError) as exc:
        out["error"] = f"unexpected /api/tiles body: {exc}"
        return out
    odd = []
    for i, tile in enumerate(tiles):
        why = tile_problem(tile)
        if why is None:
            out["tiles"].append(tile)
        else:
            odd.append(f"{tile.get('id') if isinstance(tile, dict) else f'#{i}'}: {why}")
    out["demo_mode"] = demo if isinstance(demo, bool) else None
    if odd:  # kept out of the document, named here
        out["error"] = "tiles without the documented shape: " + "; ".join(odd)
    return out


def a8_validation_after(phase: Phase) -> pd.DataFrame:
    """``reports/a8_validation_after.json``: the command center's verdicts and its tiles right now."""
    root, checks, info = _context(phase)
    contract = [c for c in checks if c.phase == TELEMETRY and c.id.startswith("telemetry.")]
    center = [c for c in checks if c.phase in A8_PHASES and A8_CHECK.search(c.id)]
    no_center = closing_cards.command_center_absent(phase)
    tiles = None if no_center else aio.run(read_tiles(phase))
    doc = validated(A8_FILE, {**_base(phase), "telemetry_contract": section(root, contract, (TELEMETRY,), checks, info),
                              "command_center": section(root, center, A8_PHASES, checks, info),
                              "tiles_now": tiles, **({"not_applicable": no_center} if no_center else {})})
    phase.run.write_json(A8_FILE, doc)
    if tiles is None:
        return pd.DataFrame([{"tile": "—", "value": no_center}])
    if tiles["status"] != 200:
        return pd.DataFrame([{"tile": "—", "value": f"GET {tiles['url']} failed: {tiles['error']}"}])
    return pd.DataFrame([{"tile": t.get("id"), "value": fmt_num(t.get("value"), t.get("unit", "")),
                          "labels": ", ".join(t.get("labels", []))} for t in tiles["tiles"]])


def post_cards(phase: Phase, score: ReadinessScore) -> pd.DataFrame:
    """The two read-only cards on the command center, and their checks (see :mod:`readiness.phases.readiness_score.cards`)."""
    return closing_cards.post_cards(phase, score)
