"""``readiness verify RUN_DIR``: exit codes and report, on run folders built in tmp_path (no sandbox)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from readiness.core.check import Check, Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.run.cli import main
from readiness.score.attestation import sign_run, write_attestation

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params" / "sandbox.yaml"
ENV = "READINESS_ATTESTATION_KEY"


def _signed_run(tmp_path: Path, *, sign: bool = True) -> Path:
    """A finished run the way the runner ends one: attestation, finalize, sign."""
    params = load_params(PARAMS)
    run = RunFolder.create(tmp_path / "outputs", params, PARAMS)
    run.write_json("evidence/A1_health.json", {"status": 200}, producer="01_smoke")
    run.record_checks("01_smoke", [Check(id="smoke.A1.liveness", phase="01_smoke", title="A1 live",
                                         status=Status.PASS, evidence=("evidence/A1_health.json",))])
    run.set_phase("01_smoke", status="OK")
    write_attestation(run, params, status="complete")
    run.finalize("complete")
    if sign:
        sign_run(run.root, params)
    return run.root


@pytest.fixture()
def env_key(monkeypatch: pytest.MonkeyPatch) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv(ENV, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode())
    return key


def _public_pem(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_verified_run_exits_0_with_a_short_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    root = _signed_run(tmp_path)
    assert main(["verify", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{root}: verified"
    assert out[1].startswith("  files: ") and out[1].endswith(" match manifest.json (sha256 and size)")
    assert out[2].startswith("  signature: Ed25519 over sha256(manifest.json) ")
    assert " verifies with attestation/public_key.pem (key sha256 " in out[2]
    assert out[3] == ("  note: run.json is not covered: it is written after the manifest, with the final status "
                      "(status: complete)")


def test_each_problem_is_listed_and_exit_is_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _signed_run(tmp_path)
    (root / "evidence" / "A1_health.json").write_text('{"status": 503}\n')
    (root / "checks" / "01_smoke.json").unlink()
    assert main(["verify", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{root}: NOT verified — 2 problems"
    assert out[1] == "  - checks/01_smoke.json: missing"
    assert out[2].startswith("  - evidence/A1_health.json: changed since the manifest (sha256 ")


def test_trusted_and_wrong_public_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       env_key: Ed25519PrivateKey) -> None:
    root = _signed_run(tmp_path)
    trusted = _public_pem(tmp_path / "trusted.pem", env_key)
    assert main(["verify", str(root), "--public-key", str(trusted)]) == 0
    assert f"verifies with {trusted} (key sha256 " in capsys.readouterr().out
    wrong = _public_pem(tmp_path / "wrong.pem", Ed25519PrivateKey.generate())
    assert main(["verify", str(root), "--public-key", str(wrong)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{root}: NOT verified — 1 problem"
    assert out[1].startswith(f"  - attestation/manifest.sig: the signature does not verify against manifest.json "
                             f"with {wrong} (key sha256 ")


def test_unsigned_run_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _signed_run(tmp_path, sign=False)
    assert main(["verify", str(root)]) == 1
    assert "  - attestation/manifest.sig: missing (the run was not signed)" in capsys.readouterr().out


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nope'}: no such run folder\n"
    root = _signed_run(tmp_path)
    assert main(["verify", str(root), "--public-key", str(tmp_path / "absent.pem")]) == 2
    assert capsys.readouterr().err == f"error: --public-key {tmp_path / 'absent.pem'}: missing\n"


def test_the_installed_command(tmp_path: Path) -> None:
    """The console script in its own process: a changed manifest byte is exit 1 (one process: imports cost seconds)."""
    root = _signed_run(tmp_path)
    manifest = root / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"files"', b'"files" '))
    script = Path(sys.executable).with_name("readiness")
    bad = subprocess.run([str(script), "verify", str(root)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1, bad.stderr
    assert bad.stdout.startswith(f"{root}: NOT verified — 2 problems\n")
    assert "  - manifest.json: changed after signing (sha256 " in bad.stdout
