"""09_resiliency against a live sandbox (ports 29301–29308): 503s injected into A4 while A3's
preview route is loaded, the breaker's transitions read back from telemetry, the fault
always removed — at the end, on SIGINT and on SIGTERM — and nothing sent without the approval.

The experiment is shortened for the test (2 cycles of 4 s, 2 s steady states); the
params' quick profile (3 × (6 s + 8 s)) is what a run uses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import papermill
import pytest

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phasekit.context import Phase
from readiness.phases.resiliency.faults import JOURNAL
from readiness.phases.resiliency.metrics import CHECK_IDS

pytestmark = pytest.mark.integration
PORT_BASE = 29300  # apps on 29301–29308
PHASE = "09_resiliency"
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, threading, time
from readiness.phases.resiliency import resiliency
from readiness.phasekit.context import open_phase

phase = open_phase("09_resiliency", sys.argv[1], sys.argv[2])
journal = phase.run.path("evidence/a3_fault_journal.jsonl")

def ready() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if journal.exists() and '"step": "injected"' in journal.read_text():
            print("READY", flush=True)
            return
        time.sleep(0.05)

threading.Thread(target=ready, daemon=True).start()
resiliency.run_experiment(phase)
"""


def _edit(data: dict[str, Any]) -> None:
    data["resiliency"].update({"cycles": 2, "cycle_s": {"full": 120, "quick": 4}, "recovery_s": 5,
                               "steady_state_s": 2})
    data["thresholds"]["telemetry_arrival_s"] = 10


@pytest.fixture(scope="module")
def params_file(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("resiliency")
    path = params_factory(folder, port_base=PORT_BASE, edit=_edit)
    with start_sandbox(path):
        os.environ["READINESS_OUTPUTS"] = str(folder / "outputs")
        yield path


def variant(params_file: Path, folder: Path, params_factory, change: Callable[[dict[str, Any]], None]) -> Path:
    """Params for the same running sandbox, changed by ``change``."""
    def edit(data: dict[str, Any]) -> None:
        _edit(data)
        data["sandbox"]["state_dir"] = str(params_file.parent / "sandbox-state")
        change(data)

    return params_factory(folder, port_base=PORT_BASE, edit=edit)


def a4_faults(params_file: Path) -> dict[str, Any]:
    url = load_params(params_file).app("A4").url("/admin/faults")
    r = httpx.get(url, timeout=5, headers={"Authorization": f"Bearer {os.environ['SANDBOX_ADMIN_TOKEN']}"})
    assert r.status_code == 200, r.text
    return r.json()


def steps(root: Path) -> list[str]:
    path = root / JOURNAL
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def statuses(phase: Phase) -> dict[str, Status]:
    return {c.id: c.status for c in phase.run.read_checks(PHASE)}


def test_without_the_approval_everything_is_blocked_and_no_fault_sent(params_file: Path, tmp_path: Path,
                                                                       params_factory) -> None:
    def no_approval(data: dict[str, Any]) -> None:
        data["approvals"] = [a for a in data["approvals"] if a["action"] != "fault_injection_503"]

    refused = variant(params_file, tmp_path, params_factory, no_approval)
    run = RunFolder.create(tmp_path / "outputs", load_params(refused), refused)
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{PHASE}.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"params_file": str(refused), "run_dir": str(run.root)},
                               kernel_name="python3", progress_bar=False, cwd=str(ROOT / "notebooks"))
    checks = run.read_checks(PHASE)
    assert {c.id for c in checks} == set(CHECK_IDS)
    assert all(c.status is Status.BLOCKED for c in checks)
    assert all(c.detail == "fault injection into A4 refused: refused: no approval for this action in "
                           "params.approvals" for c in checks)
    log = [json.loads(line) for line in run.path("reports/hitl_approvals.log").read_text().splitlines()]
    assert [(e["kind"], e["action"]) for e in log] == [("refused", "fault_injection_503")]
    assert "inject" not in steps(run.root) and steps(run.root)[0] == "refused"
    assert a4_faults(refused)["force_503_s"] == 0
    assert run.path("reports/a3_resiliency_report.md").is_file()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_cycle_removes_the_fault_and_journals_the_rollback(params_file: Path, tmp_path: Path,
                                                                       params_factory, sig: int) -> None:
    def long_fault(data: dict[str, Any]) -> None:
        data["resiliency"].update({"cycle_s": {"full": 120, "quick": 30}, "steady_state_s": 1})

    long_cycle = variant(params_file, tmp_path, params_factory, long_fault)
    run = RunFolder.create(tmp_path / "outputs", load_params(long_cycle), long_cycle)
    with subprocess.Popen([sys.executable, "-c", SCRIPT, str(long_cycle), str(run.root)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "READY", proc.communicate(timeout=10)[1]
            assert a4_faults(long_cycle)["force_503_s"] > 20  # the fault is on, and would stay ~30 s by itself
            time.sleep(0.5)
            proc.send_signal(sig)
            stderr = proc.communicate(timeout=8)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == (-signal.SIGINT if sig == signal.SIGINT else 128 + signal.SIGTERM), stderr
    assert a4_faults(long_cycle)["force_503_s"] == 0
    journal = steps(run.root)
    assert journal[-3:] == ["remove", "removed", "rollback_verified"] and "rollback" in journal
    results = json.loads(run.path("evidence/a3_cb_results.json").read_text())
    assert results["status"] == "interrupted" and results["rollback"]["verified"] is True
