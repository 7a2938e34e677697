"""Run folder: atomic, redacted writes; manifest; statuses; baseline discovery."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from readiness.core.check import Check, CheckFileError, Status
from readiness.core.runfolder import RunFolder, RunFolderError, latest_complete_run, run_status
from readiness.params.model import load_params

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params" / "sandbox.yaml"


@pytest.fixture()
def params():
    return load_params(PARAMS)


@pytest.fixture()
def run(tmp_path, params) -> RunFolder:
    return RunFolder.create(tmp_path / "outputs", params, PARAMS)


def test_create_writes_run_json(run: RunFolder, params) -> None:
    info = run.info()
    assert info["status"] == "running" and info["params_digest"] == params.digest()
    assert info["version"] and info["platform"]["python"] and info["profile"] == "quick"
    assert len(run.root.name) == 15 and run.root.name[8] == "-"  # YYYYMMDD-HHMMSS
    assert json.loads(run.path("params.json").read_text())["ecosystem"] == "sandbox"


def test_two_runs_in_the_same_second_get_distinct_folders(tmp_path, params) -> None:
    import datetime as dt
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    a = RunFolder.create(tmp_path, params, PARAMS, now=now)
    b = RunFolder.create(tmp_path, params, PARAMS, now=now)
    assert a.root != b.root and b.root.name.endswith("-2")


def test_secret_values_are_redacted_everywhere(run: RunFolder, monkeypatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_supersecret123")
    monkeypatch.setenv("SANDBOX_ADMIN_TOKEN", "admintoken-xyz-987")
    run.write_text("reports/a.md", "key=sk_test_supersecret123 token admintoken-xyz-987")
    run.write_json("evidence/b.json", {"header": "Bearer sk_test_supersecret123"})
    run.write_bytes("evidence/c.bin", b"\x00sk_test_supersecret123\x00")
    for rel in ("reports/a.md", "evidence/b.json", "evidence/c.bin"):
        data = run.path(rel).read_bytes()
        assert b"supersecret" not in data and b"admintoken" not in data
    assert "[REDACTED:STRIPE_SECRET_KEY]" in run.path("reports/a.md").read_text()
    assert "[REDACTED:SANDBOX_ADMIN_TOKEN]" in run.path("reports/a.md").read_text()


def test_short_values_are_not_redacted(run: RunFolder, monkeypatch) -> None:
    monkeypatch.setenv("OIDC_CLIENT_SECRET", "1")
    run.write_text("reports/a.md", "1 2 3")
    assert run.path("reports/a.md").read_text() == "1 2 3"


def test_full_disk_keeps_previous_content(run: RunFolder, monkeypatch) -> None:
    run.write_text("reports/a.md", "old")

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(RunFolderError) as info:
        run.write_text("reports/a.md", "new")
    assert str(info.value) == "could not write reports/a.md: disk full; the previous content (if any) is unchanged"
    assert run.path("reports/a.md").read_text() == "old"
    assert not [p for p in run.path("reports").iterdir() if p.name.endswith(".tmp")]


def test_paths_cannot_escape(run: RunFolder) -> None:
    with pytest.raises(RunFolderError, match="points outside the run folder"):
        run.write_text("../escape.txt", "x")


def test_record_checks_merges_by_id(run: RunFolder) -> None:
    a = Check(id="smoke.A1.p95", phase="01_smoke", title="t", status=Status.INCONCLUSIVE)
    run.record_checks("01_smoke", [a, Check(id="smoke.A1.ready", phase="01_smoke", title="t", status=Status.FAIL)])
    run.record_checks("01_smoke", [a.with_status(Status.PASS)])
    got = {c.id: c.status for c in run.read_checks("01_smoke")}
    assert got == {"smoke.A1.p95": Status.PASS, "smoke.A1.ready": Status.FAIL}


def test_malformed_checks_file_is_named(run: RunFolder) -> None:
    run.write_text("checks/01_smoke.json", '{"phase": "01_smoke"}')
    with pytest.raises(CheckFileError, match=r"checks/01_smoke.json: checks\[0\]|checks/01_smoke.json: expected an object"):
        run.read_checks()


def test_manifest_hashes_every_file(run: RunFolder) -> None:
    run.producer = "01_smoke"
    run.write_text("reports/x.md", "hello")
    run.finalize("complete")
    manifest = json.loads(run.path("manifest.json").read_text())
    rows = {r["path"]: r for r in manifest["files"]}
    assert rows["reports/x.md"]["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert rows["reports/x.md"]["producer"] == "01_smoke" and rows["reports/x.md"]["bytes"] == 5
    assert "params.json" in rows and "run.json" not in rows
    assert run.info()["status"] == "complete" and run.info()["finished_at"]


def test_interrupted_run_keeps_no_score(run: RunFolder) -> None:
    run.write_json("readiness_score.json", {"grade": "Green"})
    run.finalize("interrupted")
    assert not run.path("readiness_score.json").exists()
    assert run.path("readiness_score.incomplete.json").exists()
    assert run_status(run.root) == "interrupted"


def test_dead_running_process_reads_as_interrupted(run: RunFolder) -> None:
    run.update_info(pid=2**22 + 12345)
    assert run_status(run.root) == "interrupted"


def test_latest_complete_run_skips_incomplete_and_excluded(tmp_path, params) -> None:
    import datetime as dt
    t = dt.datetime(2026, 5, 1, 10, 0, 0, tzinfo=dt.UTC)
    old = RunFolder.create(tmp_path, params, PARAMS, now=t)
    old.finalize("complete")
    mid = RunFolder.create(tmp_path, params, PARAMS, now=t + dt.timedelta(minutes=1))
    mid.finalize("complete")
    newest = RunFolder.create(tmp_path, params, PARAMS, now=t + dt.timedelta(minutes=2))
    newest.finalize("interrupted")
    assert latest_complete_run(tmp_path) == mid.root
    assert latest_complete_run(tmp_path, exclude=mid.root) == old.root
    assert latest_complete_run(tmp_path, ecosystem="other") is None
    assert latest_complete_run(tmp_path / "missing") is None


def test_open_requires_a_run_folder(tmp_path) -> None:
    with pytest.raises(RunFolderError, match="is not a run folder"):
        RunFolder.open(tmp_path)


def test_pending_score_is_promoted_only_by_a_complete_run(tmp_path, params) -> None:
    done = RunFolder.create(tmp_path / "a", params, PARAMS)
    done.write_json("readiness_score.pending.json", {"grade": "Red"})
    assert not done.path("readiness_score.json").exists()
    done.finalize("complete")
    assert json.loads(done.path("readiness_score.json").read_text()) == {"grade": "Red"}
    assert not done.path("readiness_score.pending.json").exists()
    cut = RunFolder.create(tmp_path / "b", params, PARAMS)
    cut.write_json("readiness_score.pending.json", {"grade": "Red"})
    cut.finalize("failed")
    assert not cut.path("readiness_score.json").exists() and cut.path("readiness_score.incomplete.json").exists()


def test_reopen_demotes_a_finished_run_and_keeps_its_old_score(run: RunFolder) -> None:
    run.write_json("readiness_score.pending.json", {"grade": "Red"})
    run.finalize("complete")
    assert run.reopen() is True
    info = run.info()
    assert info["status"] == "running" and info["mode"] == "interactive" and info["pid"] == os.getpid()
    assert not run.path("readiness_score.json").exists() and run.path("readiness_score.superseded.json").exists()
    assert run.reopen() is False  # already being written by this live process


def test_parquet_is_redacted_before_serialising(run: RunFolder, monkeypatch) -> None:
    import pandas as pd

    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_parquetsecret42")
    frame = pd.DataFrame({"error_detail": ["boom sk_test_parquetsecret42", None], "n": [1, 2]})
    run.write_frame("evidence/s.parquet", frame)
    back = pd.read_parquet(run.path("evidence/s.parquet"))
    assert back.error_detail[0] == "boom [REDACTED:STRIPE_SECRET_KEY]" and back.n.tolist() == [1, 2]
    assert b"parquetsecret" not in run.path("evidence/s.parquet").read_bytes()


def test_binary_artifacts_with_a_secret_are_refused_not_patched(run: RunFolder, monkeypatch) -> None:
    monkeypatch.setenv("A8_TELEMETRY_KEY", "telemetrykey-123456")
    with pytest.raises(RunFolderError) as info:
        run.write_bytes("evidence/x.parquet", b"PAR1 telemetrykey-123456 PAR1")
    assert str(info.value) == ("could not write evidence/x.parquet: it contains the value of A8_TELEMETRY_KEY; "
                               "binary artifacts must be redacted before they are serialised")
    assert not run.path("evidence/x.parquet").exists()


def test_artifacts_are_readable_by_others(run: RunFolder) -> None:
    path = run.write_text("reports/r.md", "x")
    assert path.stat().st_mode & 0o044 == 0o044
