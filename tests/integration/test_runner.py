"""The runner and CLI: bad input, failing notebooks, a NO-GO gate, and interruption."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from readiness.core.check import Status, load_checks
from readiness.core.runfolder import run_status
from readiness.run.cli import main
from readiness.run.runner import run_suite

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def notebook(path: Path, *lines: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell('params_file: str = ""  # params\nrun_dir: str = ""  # run folder',
                                          metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(src) for src in lines)]
    nbformat.write(nb, path)


def gate_notebook(path: Path, status: str) -> None:
    notebook(path, "from readiness.core.runfolder import RunFolder\nfrom readiness.core.check import Check, Status\n"
                   "run = RunFolder.open(run_dir)\n"
                   f"run.record_checks('00_inventory', [Check(id='inventory.gate.go', phase='00_inventory', "
                   f"title='gate', status=Status.{status}, observed=1, detail='test gate {status}')])")


@pytest.fixture()
def books(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(ROOT / "notebooks" / "11_readiness_score.ipynb", folder)
    monkeypatch.setenv("READINESS_NOTEBOOKS", str(folder))
    return folder


def test_bad_params_exit_2_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "params" / "sandbox.yaml").read_text().replace("p95_ms: 120 ", "p59_ms: 120 ", 1))
    out = tmp_path / "outputs"
    assert main(["run", "--params", str(bad), "--out", str(out)]) == 2
    assert "thresholds.p59_ms: unknown key" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_phase_exit_2_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    assert main(["run", "--phases", "42", "--out", str(out)]) == 2
    assert "unknown phase '42'" in capsys.readouterr().err
    assert not out.exists()


def test_validate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--params", str(ROOT / "params" / "sandbox.yaml")]) == 0
    assert "valid (8 apps, staging, profile quick" in capsys.readouterr().out


def test_failing_notebook_is_kept_and_the_run_goes_on(sandbox, test_params_file: Path, books: Path,
                                                      tmp_path: Path) -> None:
    gate_notebook(books / "00_inventory.ipynb", "PASS")
    notebook(books / "01_smoke.ipynb", "import os\nprint('leaked:', os.environ['STRIPE_SECRET_KEY'])",
             "raise RuntimeError('probe exploded')")
    outcome = run_suite(test_params_file, outputs=tmp_path / "out", fail_on="red", echo=lambda _l: None)
    assert [(p.phase, p.status) for p in outcome.phases] == [
        ("00_inventory", "OK"), ("01_smoke", "ERROR"), ("11_readiness_score", "OK")]
    assert "RuntimeError: probe exploded" in (outcome.phases[1].error or "")
    failed = nbformat.read(outcome.run_dir / "notebooks" / "01_smoke.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in failed.cells for o in c.get("outputs", []))
    assert (outcome.run_dir / "html" / "01_smoke.html").is_file()
    secret = os.environ["STRIPE_SECRET_KEY"]
    for rel in ("notebooks/01_smoke.ipynb", "html/01_smoke.html"):
        text = (outcome.run_dir / rel).read_text()
        assert secret not in text and "leaked: [REDACTED:STRIPE_SECRET_KEY]" in text, rel
    checks = {c.id: c for c in load_checks(outcome.run_dir)}
    assert checks["run.01_smoke"].status is Status.ERROR
    # A run with an ERROR phase did not finish its audit: failed, non-zero, never a baseline.
    assert outcome.status == "failed" and run_status(outcome.run_dir) == "failed"
    assert not (outcome.run_dir / "readiness_score.json").is_file()
    assert (outcome.run_dir / "readiness_score.incomplete.json").is_file()
    assert outcome.grade is None and outcome.exit_code == 1
    assert json.loads((outcome.run_dir / "run.json").read_text())["error"] == "phases ended ERROR: 01_smoke"


def test_the_last_line_names_the_phases_that_erred(sandbox, test_params_file: Path, books: Path,
                                                   tmp_path: Path) -> None:
    gate_notebook(books / "00_inventory.ipynb", "PASS")
    notebook(books / "01_smoke.ipynb", "raise RuntimeError('probe exploded')")
    lines: list[str] = []
    outcome = run_suite(test_params_file, outputs=tmp_path / "out", echo=lines.append)
    assert outcome.exit_code == 1
    assert lines[-1] == "phases ended ERROR: 01_smoke (status failed, exit 1)"


def test_a_phase_the_ecosystem_does_not_declare_is_skipped_not_run(sandbox, test_params_file: Path, books: Path,
                                                                   tmp_path: Path) -> None:
    gate_notebook(books / "00_inventory.ipynb", "PASS")
    notebook(books / "05_monetization.ipynb", "raise AssertionError('must not run')")
    data = yaml.safe_load(test_params_file.read_text())
    data["capabilities"] = ["telemetry_store", "admin_api", "orchestration"]
    data["phases"] = ["00_inventory", "05_monetization", "11_readiness_score"]
    params_file = tmp_path / "no_payments.yaml"
    params_file.write_text(yaml.safe_dump(data))
    outcome = run_suite(params_file, outputs=tmp_path / "out", echo=lambda _l: None)
    assert [(p.phase, p.status) for p in outcome.phases] == [
        ("00_inventory", "OK"), ("05_monetization", "SKIPPED"), ("11_readiness_score", "OK")]
    assert not (outcome.run_dir / "notebooks" / "05_monetization.ipynb").exists()
    skipped = {c.id: c for c in load_checks(outcome.run_dir)}["run.05_monetization"]
    assert skipped.status is Status.SKIPPED
    assert skipped.detail.startswith("not applicable: 05_monetization needs what the ecosystem does not declare")
    assert "payments (a Stripe-compatible payments API)" in skipped.detail
    assert outcome.status == "complete" and outcome.exit_code == 0


def test_a_full_disk_stops_the_run_at_once_and_keeps_what_was_written(
        sandbox, test_params_file: Path, books: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        gate_notebook(books / "00_inventory.ipynb", "PASS")
        notebook(books / "01_smoke.ipynb", "from readiness.core.runfolder import RunFolder\n"
                 "RunFolder.open(run_dir).write_bytes('evidence/big.bin', bytes(2_000_000))")
        notebook(books / "02_latency_profile.ipynb", "raise AssertionError('must not run')")
        lines: list[str] = []
        outcome = run_suite(test_params_file, outputs=small, echo=lines.append)
        assert outcome.status == "failed" and outcome.exit_code == 1
        assert [(p.phase, p.status) for p in outcome.phases] == [("00_inventory", "OK")]
        info = json.loads((outcome.run_dir / "run.json").read_text())
        assert info["status"] == "failed" and info["error"].startswith("disk full, the run stopped: 01_smoke: ")
        assert (outcome.run_dir / "checks" / "00_inventory.json").is_file()  # kept
        assert not (outcome.run_dir / "evidence" / "big.bin").exists()
        assert any(line.startswith("run failed: disk full, the run stopped") for line in lines)
        assert lines[-1].startswith("run failed (exit 1): disk full, the run stopped")
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_no_go_gate_blocks_later_phases(sandbox, test_params_file: Path, books: Path, tmp_path: Path) -> None:
    gate_notebook(books / "00_inventory.ipynb", "FAIL")
    notebook(books / "01_smoke.ipynb", "raise AssertionError('must not run')")
    outcome = run_suite(test_params_file, outputs=tmp_path / "out", echo=lambda _l: None)
    assert [p.status for p in outcome.phases] == ["OK", "BLOCKED", "OK"]
    assert not (outcome.run_dir / "notebooks" / "01_smoke.ipynb").exists()
    blocked = {c.id: c for c in load_checks(outcome.run_dir)}["run.01_smoke"]
    assert blocked.status is Status.BLOCKED and "NO-GO" in blocked.detail
    assert outcome.exit_code == 0  # no --fail-on


def test_a_stop_condition_stops_later_phases_and_the_run_still_reports(sandbox, test_params_file: Path,
                                                                        books: Path, tmp_path: Path) -> None:
    gate_notebook(books / "00_inventory.ipynb", "PASS")
    notebook(books / "01_smoke.ipynb", "from readiness.core.runfolder import RunFolder\nrun = RunFolder.open(run_dir)\n"
             "run.update_info(stop_conditions=[{'phase': '01_smoke', 'reason': 'regression above 20%'}])")
    notebook(books / "02_latency_profile.ipynb", "raise AssertionError('must not run')")
    outcome = run_suite(test_params_file, outputs=tmp_path / "out", echo=lambda _l: None)
    assert [(p.phase, p.status) for p in outcome.phases] == [
        ("00_inventory", "OK"), ("01_smoke", "OK"), ("02_latency_profile", "STOPPED"), ("11_readiness_score", "OK")]
    stopped = {c.id: c for c in load_checks(outcome.run_dir)}["run.02_latency_profile"]
    assert stopped.status is Status.STOPPED and "regression above 20%" in stopped.detail
    assert outcome.status == "complete"
    index = (outcome.run_dir / "index.html").read_text()
    assert "02_latency_profile" in index and "STOPPED" in index


def test_ctrl_c_leaves_an_interrupted_run_without_score(sandbox, test_params_file: Path, books: Path,
                                                        tmp_path: Path) -> None:
    gate_notebook(books / "00_inventory.ipynb", "PASS")
    notebook(books / "01_smoke.ipynb", "import time\ntime.sleep(120)")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "readiness.run.cli", "run", "--params", str(test_params_file),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ})
    seen = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if "01_smoke …" in line or time.monotonic() > deadline:
            break
    time.sleep(2)  # let the kernel start executing the sleeping cell
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    run_dir = next(out.iterdir())
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    assert run_status(run_dir) == "interrupted"
    assert not (run_dir / "readiness_score.json").exists()
    assert (run_dir / "checks" / "00_inventory.json").is_file()  # what was written is kept
    assert (run_dir / "manifest.json").is_file() and (run_dir / "index.html").is_file()


def test_sandbox_port_taken_fails_the_run_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  params_factory) -> None:
    """A port held by another program: status failed, the reason recorded, exit 1, no traceback."""
    import socket

    params_file = params_factory(tmp_path)
    data = params_file.read_text().replace("127.0.0.1:2810", "127.0.0.1:2830")
    params_file.write_text(data)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 28304))
    blocker.listen(1)
    try:
        assert main(["run", "--params", str(params_file), "--out", str(tmp_path / "out")]) == 1
    finally:
        blocker.close()
    err = capsys.readouterr().err
    assert "run failed: sandbox did not start: cannot start A4: port 28304 on 127.0.0.1 is already in use" in err
    run_dir = next((tmp_path / "out").iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and "port 28304" in info["error"]
    assert not (run_dir / "readiness_score.json").exists()


def test_bad_rubric_exit_2_and_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               params_factory) -> None:
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text((ROOT / "params" / "rubric.yaml").read_text().replace("weight: 15", "weight: 14", 1))
    params_file = params_factory(tmp_path, rubric_file=str(rubric))
    out = tmp_path / "outputs"
    assert main(["run", "--params", str(params_file), "--out", str(out)]) == 2
    assert "categories: weights must sum to 100, got 99" in capsys.readouterr().err
    assert not out.exists()
    assert main(["validate", "--params", str(params_file)]) == 2


def test_undecided_gate_blocks_too(sandbox, test_params_file: Path, books: Path, tmp_path: Path) -> None:
    gate_notebook(books / "00_inventory.ipynb", "INCONCLUSIVE")
    notebook(books / "01_smoke.ipynb", "raise AssertionError('must not run')")
    outcome = run_suite(test_params_file, outputs=tmp_path / "out", echo=lambda _l: None)
    assert [p.status for p in outcome.phases] == ["OK", "BLOCKED", "OK"]
    assert "not GO (INCONCLUSIVE)" in (outcome.phases[1].error or "")


def test_reset_restores_flags_and_clears_faults(sandbox, test_params_file: Path) -> None:
    import httpx

    from readiness.params.model import load_params
    from readiness.probe.sandbox_control import reset_sandbox

    auth = {"Authorization": f"Bearer {sandbox.admin_token}"}
    a2 = sandbox.apps["A2"]
    httpx.put(f"{a2}/admin/flags", json={"a2_readiness": True}, headers=auth).raise_for_status()
    httpx.put(f"{a2}/admin/faults", json={"error_rate": {"*": 1.0}}, headers=auth).raise_for_status()
    assert httpx.get(f"{a2}/health").status_code == 500
    applied = reset_sandbox(load_params(test_params_file), sandbox)
    assert applied["A2"]["a2_readiness"] is False
    assert httpx.get(f"{a2}/health").status_code == 200
    assert httpx.get(f"{a2}/ready").status_code == 404  # fix A is OFF again: rolled back


def _without_gate_approval(params_file: Path, folder: Path) -> tuple[Path, dict]:
    data = yaml.safe_load(params_file.read_text())
    gate = next(a for a in data["approvals"] if a["action"] == "gate_1_staging_mutation")
    data["approvals"] = [a for a in data["approvals"] if a is not gate]
    data["release"] = {"pr_links": [{"title": "A7: leads off the hot path", "url": "https://git.example.test/a7/pull/42"}]}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, gate


def test_gate_1_pauses_the_run_and_resume_completes_it(sandbox, test_params_file: Path, books: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gate_notebook(books / "00_inventory.ipynb", "PASS")
    notebook(books / "01_smoke.ipynb", "x = 1")
    notebook(books / "02_latency_profile.ipynb", "from readiness.core.runfolder import RunFolder\n"
             "RunFolder.open(run_dir).write_text('reports/after_gate.txt', 'ran')")
    params, approval = _without_gate_approval(test_params_file, tmp_path / "p")
    out = tmp_path / "out"
    assert main(["run", "--params", str(params), "--out", str(out)]) == 3  # paused at a gate
    run_dir = next(out.iterdir())
    said = capsys.readouterr().out
    assert "paused at Gate 1 before 02_latency_profile" in said and "GATE_1_HUMAN_APPROVAL_REQUIRED.md" in said
    info = json.loads((run_dir / "run.json").read_text())
    assert run_status(run_dir) == "paused" and info["gates"]["1"]["status"] == "waiting"
    assert [info["phases"][p]["status"] for p in ("00_inventory", "01_smoke", "02_latency_profile",
                                                  "11_readiness_score")] == ["OK", "OK", "WAITING", "WAITING"]
    assert not (run_dir / "reports" / "after_gate.txt").exists() and not (run_dir / "readiness_score.json").exists()
    gate_file = (run_dir / "reports" / "GATE_1_HUMAN_APPROVAL_REQUIRED.md").read_text()
    assert "**WAITING**" in gate_file and "`02_latency_profile`" in gate_file and "01_smoke" in gate_file
    assert f"readiness run --resume {run_dir}" in gate_file and "gate_1_staging_mutation" in gate_file
    bundle = run_dir / "reports" / "gate_1"
    assert "https://git.example.test/a7/pull/42" in (bundle / "pr_links.md").read_text()
    assert "auth_failures" in (bundle / "monitoring_rule_changes.md").read_text()
    rollback = (bundle / "rollback_readiness.md").read_text()
    assert "Every flag's rollback was rehearsed and verified." in rollback
    assert all(f"`{flag}`" in rollback for flag in ("a2_readiness", "a7_async_leads", "a8_banner_ttl", "a8_demo_mode"))
    assert "endpoints" in json.loads((bundle / "baseline_slo_snapshot.json").read_text())
    assert "WAITING" in (run_dir / "index.html").read_text()
    gate_checks = {c.id: c for c in load_checks(run_dir, "gates")}
    assert gate_checks["gate.gate_1.approval"].status is Status.BLOCKED
    assert gate_checks["gate.gate_1.rollback_rehearsed"].status is Status.PASS
    assert main(["verify", str(run_dir)]) == 0  # a paused run is signed like any other

    # resuming without the approval pauses again; a change beyond the approvals is refused
    assert main(["run", "--resume", str(run_dir)]) == 3
    changed = yaml.safe_load(params.read_text())
    changed["smoke"]["samples_per_app"] = 7
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(changed, sort_keys=False))
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir), "--params", str(other)]) == 2
    assert "changed beyond their approvals" in capsys.readouterr().err

    data = yaml.safe_load(params.read_text())
    data["approvals"].append(approval)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["run", "--resume", str(run_dir)]) == 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["gates"]["1"]["status"] == "approved"
    assert [info["phases"][p]["status"] for p in ("00_inventory", "01_smoke", "02_latency_profile",
                                                  "11_readiness_score")] == ["OK"] * 4
    assert (run_dir / "reports" / "after_gate.txt").read_text() == "ran" and (run_dir / "readiness_score.json").is_file()
    assert "**APPROVED**" in (run_dir / "reports" / "GATE_1_HUMAN_APPROVAL_REQUIRED.md").read_text()
    approved = {c.id: c for c in load_checks(run_dir, "gates")}["gate.gate_1.approval"]
    assert approved.status is Status.PASS and approved.observed == approval["id"]
    gate_2 = (run_dir / "reports" / "GATE_2_HUMAN_APPROVAL_REQUIRED.md").read_text()
    assert "**WAITING**" in gate_2 and "gate_2_production_action" in gate_2 and "environment: prod" in gate_2
    log = [json.loads(line) for line in (run_dir / "reports" / "hitl_approvals.log").read_text().splitlines()]
    gate_log = [(e["kind"], e["approval_id"]) for e in log if e["action"] == "gate_1_staging_mutation"]
    assert gate_log == [("refused", None), ("refused", None), ("approved", approval["id"])]
    assert len(info["resumes"]) == 2
    assert main(["verify", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["run", "--resume", str(run_dir)]) == 2  # a complete run is not resumed
    assert "is complete, not paused at a gate" in capsys.readouterr().err
