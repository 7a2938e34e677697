"""Latency samples as data: one run's Parquet for analysts, every run's history through DuckDB.

Each run of ``02_latency_profile`` keeps its raw probes in
``evidence/latency_samples.parquet`` (schema: :data:`readiness.probe.prober.SAMPLE_COLUMNS`;
one row per request, labelled ``profile`` for the run's own configuration and e.g.
``a7_async_leads=on`` / ``a7_async_leads=rollback`` for flag comparisons). Because every
run writes the same file in the same place, the history of an endpoint across runs is a
single DuckDB query over ``outputs/*/evidence/latency_samples.parquet`` — no database to
maintain, and analysts can run the same SQL themselves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb
import pandas as pd

from readiness.core.runfolder import RUN_FILE, run_status

SAMPLES_FILE = "evidence/latency_samples.parquet"


def load_samples(run_dir: str | os.PathLike[str], *, label: str | None = None) -> pd.DataFrame:
    """The latency samples of one run (optionally one label), as a DataFrame."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the run has no latency profile")
    df = pd.read_parquet(path)
    return df[df.label == label].reset_index(drop=True) if label is not None else df


def p95_history(outputs_dir: str | os.PathLike[str], app: str, endpoint: str, *, mode: str = "warm",
                label: str = "profile", q: float = 0.95, complete_only: bool = True) -> pd.DataFrame:
    """One row per run: the endpoint's ``q``-quantile (nearest rank, as in the verdicts) and n.

    Interrupted and failed runs are left out unless ``complete_only`` is False: their
    samples may stop mid-profile. A request without a successful answer counts as +inf,
    exactly as in the run's own verdicts (:func:`readiness.phases.latency.profile.good_latencies`).
    """
    root = Path(outputs_dir)
    files = sorted(root.glob(f"*/{SAMPLES_FILE}"))
    columns = ["run", "started_at", "status", "n", "quantile_ms"]
    if not files:
        return pd.DataFrame(columns=columns)
    query = """
        SELECT filename AS file, count(*) AS n,
               quantile_disc(CASE WHEN ok THEN latency_ms ELSE 'inf'::DOUBLE END, ?) AS quantile_ms
        FROM read_parquet(?, filename = true)
        WHERE app = ? AND endpoint = ? AND mode = ? AND label = ?
        GROUP BY filename
    """
    with duckdb.connect() as con:
        rows = con.execute(query, [q, [str(f) for f in files], app, endpoint, mode, label]).df()
    out = []
    for row in rows.itertuples():
        run_dir = Path(row.file).parents[1]
        status = run_status(run_dir)
        if complete_only and status != "complete":
            continue
        try:
            started = json.loads((run_dir / RUN_FILE).read_text()).get("started_at")
        except (OSError, ValueError):
            started = None
        out.append({"run": run_dir.name, "started_at": started, "status": status, "n": int(row.n),
                    "quantile_ms": float(row.quantile_ms)})
    return pd.DataFrame(out, columns=columns).sort_values("run").reset_index(drop=True)
