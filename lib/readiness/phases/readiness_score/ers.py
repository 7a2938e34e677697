"""The Enterprise Readiness Score phase (docs/phases.md#the-readiness-score): recorded checks → score, files, charts.

The scoring rules live in :mod:`readiness.score.scoring` and the rubric in ``params/rubric.yaml``;
this module is the notebook's side: it reads only the run's ``checks/*.json`` and the
rubric, and writes ``readiness_score.json`` plus the heatmap, radar and rubric reports.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Any

import altair as alt
import pandas as pd
from IPython.display import Markdown

from readiness.core.runfolder import PENDING_SCORE, SCORE_FILE
from readiness.phasekit.context import Phase
from readiness.report.charts import heatmap_chart, radar_chart, save_chart
from readiness.score.attestation import sign_run, write_attestation
from readiness.score.rubric import Rubric, load_rubric
from readiness.score.scoring import (
    ReadinessScore,
    heatmap_rows,
    radar_series,
    rubric_markdown,
    score_checks,
    top_actions,
)

#: What the run-wide multiplicity correction kept and demoted.
MULTIPLICITY = "evidence/multiplicity.json"


def rubric(phase: Phase) -> Rubric:
    return load_rubric(phase.params.rubric_path(phase.params_file))


def compute(phase: Phase) -> ReadinessScore:
    """Score every check the other phases recorded in this run, as the run decides them
    (each FAIL held to the run-wide multiplicity correction, written to ``MULTIPLICITY``).

    Evidence paths that do not exist in the run folder are dropped first: the evidence
    rule is about files a reader can open, not about names.
    """
    root = phase.run.root
    decided = phase.run.read_decisions(exclude_phase=phase.name)
    phase.run.write_json(MULTIPLICITY, decided.summary())
    checks = [dataclasses.replace(c, evidence=tuple(e for e in c.evidence if (root / e).is_file()))
              for c in decided.checks]
    return score_checks(checks, rubric(phase), owners=phase.params.owners,
                        assumptions=[phase.params.profile_note,
                                     f"Ecosystem {phase.params.ecosystem} ({phase.params.environment}).",
                                     decided.sentence()])


def _categories(score: ReadinessScore) -> list[dict[str, Any]]:
    return [{"key": c.key, "score": c.score, "weight": c.weight, "weighted": float(c.weighted)}
            for c in score.categories]


def write_outputs(phase: Phase, score: ReadinessScore) -> pd.DataFrame:
    """readiness_score.json, readiness_heatmap.csv, readiness_radar.json, readiness_rubric.md."""
    run = phase.run
    run.write_json(PENDING_SCORE, score.to_json())  # promoted to readiness_score.json by a complete run
    rows = heatmap_rows(score)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["Category", "Score", "Weight", "Weighted", "Grade"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    run.write_text("reports/readiness_heatmap.csv", buf.getvalue())
    run.write_json("reports/readiness_radar.json", radar_series(score))
    run.write_text("reports/readiness_rubric.md",
                   f"> {phase.params.profile_note}\n\n" + rubric_markdown(rubric(phase), score))
    return pd.DataFrame(rows).set_index("Category")


def summary(score: ReadinessScore) -> Markdown:
    """Grade, score, blockers and the top five actions, for leadership."""
    lines = [f"## Grade **{score.grade}** — {score.overall_score:.2f} / 100", ""]
    if score.blockers:
        lines += ["**Blockers**", ""] + [f"- {b}" for b in score.blockers] + [""]
    actions = top_actions(score, 5)
    if actions:
        lines += ["**Top actions**", "", "| risk | owner | eta | action |", "|---|---|---|---|"]
        lines += [f"| {a['risk']} | {a['owner']} | {a['eta']} | {a['action']} |" for a in actions]
    return Markdown("\n".join(lines))


def radar(phase: Phase, score: ReadinessScore) -> alt.LayerChart:
    chart = radar_chart(_categories(score))
    save_chart(phase.run, "readiness_radar", chart)
    return chart


def heatmap(phase: Phase, score: ReadinessScore) -> alt.HConcatChart:
    g = score.bands
    chart = heatmap_chart(_categories(score), bands=[(float(g.green), "Green"), (float(g.yellow), "Yellow"),
                                                     (0.0, "Red")])
    save_chart(phase.run, "readiness_heatmap", chart)
    return chart


def publish(phase: Phase) -> Markdown:
    """Publish ``readiness_score.json``: by the runner at the end of a complete run, or here
    when the notebook runs on its own in JupyterLab (that run is then complete)."""
    if phase.run.info().get("mode") != "interactive":
        return Markdown("`readiness_score.json` is published by the runner when the whole run completes.")
    write_attestation(phase.run, phase.params, status="complete")
    phase.run.finalize("complete")
    signed = sign_run(phase.run.root, phase.params)
    return Markdown(f"Published `{SCORE_FILE}` in `{phase.run.root.name}` (run marked complete; manifest signed, "
                    f"key sha256 {signed.fingerprint[:16]}…).")
