"""The attestation: claims from recorded checks, Ed25519 signature over the manifest, verifier."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from readiness.core.check import Check, Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.params.sections import Attestation
from readiness.score.attestation import (
    CLAIMS,
    PUBLIC_KEY,
    REPORT,
    SIGNATURE,
    AttestationError,
    sign_run,
    verify_run,
    write_attestation,
)

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "params" / "sandbox.yaml"
ENV = "READINESS_ATTESTATION_KEY"
BAD_KEY = "environment variable READINESS_ATTESTATION_KEY does not hold an unencrypted PEM (PKCS#8) Ed25519 private key"


@pytest.fixture()
def params(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(ENV, raising=False)
    return load_params(PARAMS)


def _check(id: str, phase: str, status: Status = Status.PASS, evidence: tuple[str, ...] = ()) -> Check:
    return Check(id=id, phase=phase, title=id, status=status, evidence=evidence)


def _run(tmp_path: Path, params) -> RunFolder:
    """A run with passing live checks, a failing funnel check and a blocked resiliency phase."""
    run = RunFolder.create(tmp_path / "outputs", params, PARAMS)
    run.write_json("evidence/A1_health.json", {"status": 200}, producer="01_smoke")
    run.write_text("reports/ecosystem_inventory.md", "# inventory\n", producer="00_inventory")
    run.record_checks("00_inventory", [_check("inventory.gate.go", "00_inventory",
                                              evidence=("reports/ecosystem_inventory.md",))])
    run.record_checks("01_smoke", [_check("smoke.A1.liveness", "01_smoke", evidence=("evidence/A1_health.json",))])
    run.write_json("evidence/b2b_funnel_results.json", {"signups": 3}, producer="04_funnels")
    run.record_checks("04_funnels", [_check("funnels.b2b.signup_rate", "04_funnels", Status.FAIL,
                                            ("evidence/b2b_funnel_results.json",))])
    for phase in ("00_inventory", "01_smoke", "04_funnels"):
        run.set_phase(phase, status="OK")
    run.set_phase("09_resiliency", status="BLOCKED", error="Phase 0 gate is NO-GO")
    return run


def _finished(tmp_path: Path, params) -> RunFolder:
    run = _run(tmp_path, params)
    write_attestation(run, params, status="complete")
    run.finalize("complete")
    sign_run(run.root, params)
    return run


def _section(text: str, claim_key: str) -> str:
    statement = next(c.statement for c in CLAIMS if c.key == claim_key)
    return text.split(f"## {statement}\n", 1)[1].split("\n## ", 1)[0].strip()


# -- the attestation report -----------------------------------------------------------
def test_claims_take_their_verdict_from_checks_and_link_evidence(tmp_path: Path, params) -> None:
    run = _run(tmp_path, params)
    text = write_attestation(run, params, status="complete").read_text()
    live = _section(text, "live")
    assert "Verdict: **PASS** — all 2 parts PASS" in live
    for rel in ("checks/00_inventory.json", "checks/01_smoke.json", "evidence/A1_health.json",
                "reports/ecosystem_inventory.md"):
        assert f"[{rel}](../{rel})" in live and (run.root / rel).is_file()
    assert "Verdict: **FAIL** — 0/1 parts PASS; not passing: funnels.b2b.signup_rate (FAIL)" in _section(text, "funnels")
    assert f"**Not attested**: 1 of {len(CLAIMS)} claims hold" in text
    assert f"- Params digest: `{params.digest()}`" in text and f"- Run: `{run.root.name}`" in text
    assert "the signature covers `manifest.json`" in text


def test_a_claim_without_checks_is_not_evidenced_and_says_why(tmp_path: Path, params) -> None:
    text = write_attestation(_run(tmp_path, params), params).read_text()
    assert _section(text, "resiliency").startswith(
        "Verdict: **NOT EVIDENCED** — not evidenced in this run: phase 09_resiliency is BLOCKED "
        "(Phase 0 gate is NO-GO)")
    assert "not evidenced in this run: phase 08_learning_autonomy did not run" in _section(text, "learning")
    assert ("not evidenced in this run: phase 04_funnels recorded no check with an id starting hardening."
            in _section(text, "hardening"))


def test_no_claim_says_pass_without_checks(tmp_path: Path, params) -> None:
    run = RunFolder.create(tmp_path / "outputs", params, PARAMS)
    text = write_attestation(run, params).read_text()
    assert "PASS" not in text
    assert text.count("Verdict: **NOT EVIDENCED** — not evidenced in this run:") == len(CLAIMS)
    assert f"**Not attested**: 0 of {len(CLAIMS)} claims hold" in text


def test_passing_checks_whose_evidence_is_missing_are_not_evidenced(tmp_path: Path, params) -> None:
    run = _run(tmp_path, params)
    run.path("evidence/A1_health.json").unlink()
    text = write_attestation(run, params).read_text()
    assert ("Verdict: **NOT EVIDENCED** — not evidenced in this run: evidence named by its checks is missing: "
            "evidence/A1_health.json; the checks it has say PASS") in _section(text, "live")


def test_a_claim_is_not_evidenced_while_one_of_its_phases_is_missing(tmp_path: Path, params) -> None:
    run = RunFolder.create(tmp_path / "outputs", params, PARAMS)
    run.record_checks("00_inventory", [_check("inventory.gate.go", "00_inventory")])
    run.set_phase("00_inventory", status="OK")
    assert _section(write_attestation(run, params).read_text(), "live") == (
        "Verdict: **NOT EVIDENCED** — not evidenced in this run: phase 01_smoke did not run; "
        "the checks it has say PASS")


def test_a_failed_notebook_keeps_its_claim_from_passing(tmp_path: Path, params) -> None:
    run = _run(tmp_path, params)
    run.record_checks("01_smoke", [_check("run.01_smoke", "01_smoke", Status.ERROR)])
    assert "Verdict: **ERROR**" in _section(write_attestation(run, params).read_text(), "live")


def test_every_claim_passing_is_attested(tmp_path: Path, params) -> None:
    run = RunFolder.create(tmp_path / "outputs", params, PARAMS)
    for claim in CLAIMS:
        for phase in claim.phases or ("gates",):  # a run-level claim (the gates) has no phase of its own
            run.record_checks(phase, [_check(f"{claim.prefixes[0]}{phase}", phase)])
    text = write_attestation(run, params).read_text()
    assert "**Attested**: every claim below holds" in text and "NOT EVIDENCED" not in text


def test_the_report_is_in_the_manifest(tmp_path: Path, params) -> None:
    run = _finished(tmp_path, params)
    listed = {f["path"] for f in json.loads(run.path("manifest.json").read_text())["files"]}
    assert REPORT in listed and not any(p.startswith("attestation/") for p in listed)


# -- signing and verifying ------------------------------------------------------------
def test_sign_then_verify(tmp_path: Path, params) -> None:
    run = _finished(tmp_path, params)
    result = verify_run(run.root)
    assert result.ok and result.signature_ok, result.problems
    assert result.files_checked == len(json.loads(run.path("manifest.json").read_text())["files"])
    assert any(n.startswith("run.json is not covered") and "status: complete" in n for n in result.notes)


def test_tampered_artifact_is_named(tmp_path: Path, params) -> None:
    run = _finished(tmp_path, params)
    target = run.path("evidence/A1_health.json")
    data = bytearray(target.read_bytes())
    data[3] ^= 0x01
    target.write_bytes(bytes(data))
    result = verify_run(run.root)
    assert not result.ok and result.signature_ok  # the manifest itself is intact
    assert len(result.problems) == 1
    assert result.problems[0].startswith("evidence/A1_health.json: changed since the manifest (sha256 ")


def test_tampered_manifest_fails_the_signature(tmp_path: Path, params) -> None:
    """Changing an artifact *and* its manifest hash passes the file check; only the signature catches it."""
    run = _finished(tmp_path, params)
    import hashlib
    run.path("evidence/A1_health.json").write_text('{"status": 500}\n')
    manifest = json.loads(run.path("manifest.json").read_text())
    for f in manifest["files"]:
        if f["path"] == "evidence/A1_health.json":
            f["sha256"] = hashlib.sha256(run.path(f["path"]).read_bytes()).hexdigest()
            f["bytes"] = run.path(f["path"]).stat().st_size
    run.path("manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    result = verify_run(run.root)
    assert not result.signature_ok
    assert [p.split(" (")[0] for p in result.problems] == [
        "manifest.json: changed after signing",
        "attestation/manifest.sig: the signature does not verify against manifest.json with attestation/public_key.pem"]


def test_the_recorded_digest_is_not_trusted(tmp_path: Path, params) -> None:
    run = _finished(tmp_path, params)
    run.path("manifest.json").write_text(run.path("manifest.json").read_text() + " ")
    sig = json.loads(run.path(SIGNATURE).read_text())
    import hashlib
    sig["manifest_sha256"] = hashlib.sha256(run.path("manifest.json").read_bytes()).hexdigest()
    run.path(SIGNATURE).write_text(json.dumps(sig))
    result = verify_run(run.root)
    assert not result.signature_ok and len(result.problems) == 1
    assert result.problems[0].startswith("attestation/manifest.sig: the signature does not verify")


def test_deleted_and_added_files_are_reported(tmp_path: Path, params) -> None:
    run = _finished(tmp_path, params)
    run.path("evidence/A1_health.json").unlink()
    run.path("evidence/late.json").write_text("{}")
    run.path("attestation/extra.txt").write_text("not a signature file")
    assert verify_run(run.root).problems == [
        "evidence/A1_health.json: missing",
        "attestation/extra.txt: not in manifest.json (added after the run was finalized)",
        "evidence/late.json: not in manifest.json (added after the run was finalized)"]


def test_run_json_and_hidden_files_written_after_the_manifest_are_expected(tmp_path: Path, params) -> None:
    run = _finished(tmp_path, params)
    run.update_info(note="written after the manifest")  # also appends to the hidden producer ledger
    assert verify_run(run.root).ok


def test_unsigned_run_and_missing_manifest(tmp_path: Path, params) -> None:
    run = _run(tmp_path, params)
    with pytest.raises(AttestationError) as exc:
        sign_run(run.root, params)
    assert str(exc.value) == f"{run.root}: no manifest.json; a run is signed after it is finalized"
    assert verify_run(run.root).problems[0] == "manifest.json: missing (the run was never finalized)"
    run.finalize("complete")
    assert verify_run(run.root).problems == ["attestation/manifest.sig: missing (the run was not signed)"]


def test_a_malformed_manifest_is_neither_signed_nor_verified(tmp_path: Path, params) -> None:
    run = _run(tmp_path, params)
    run.path("manifest.json").write_text('{"files": [{"path": "x"}]}')
    with pytest.raises(AttestationError) as exc:
        sign_run(run.root, params)
    assert str(exc.value) == "manifest.json: unreadable as a manifest (KeyError: 'sha256')"
    assert verify_run(run.root).problems[0] == "manifest.json: unreadable as a manifest (KeyError: 'sha256')"


def test_a_manifest_listing_the_signature_is_refused(tmp_path: Path, params) -> None:
    run = _finished(tmp_path, params)
    manifest = json.loads(run.path("manifest.json").read_text())
    manifest["files"].append({"path": SIGNATURE, "sha256": "0" * 64, "bytes": 1, "producer": "runner"})
    run.path("manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AttestationError) as exc:
        sign_run(run.root, params)
    assert str(exc.value) == ("manifest.json lists attestation/manifest.sig: a manifest cannot cover the signature "
                              "that signs it; leave attestation/ out of the manifest and finalize again")
    assert ("attestation/manifest.sig: listed in manifest.json, which cannot cover the signature that signs it"
            in verify_run(run.root).problems)


def _pem_file(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_wrong_public_key_fails_and_the_right_one_passes(tmp_path: Path, params, monkeypatch) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv(ENV, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode())
    run = _finished(tmp_path, params)
    other = _pem_file(tmp_path / "other.pem", Ed25519PrivateKey.generate())
    result = verify_run(run.root, other)
    assert not result.ok and not result.signature_ok
    assert result.problems == [f"attestation/manifest.sig: the signature does not verify against manifest.json "
                               f"with {other} (key sha256 {result.fingerprint})"]
    trusted = verify_run(run.root, _pem_file(tmp_path / "trusted.pem", key))
    assert trusted.ok and not any("key stored in the folder" in n for n in trusted.notes)


def test_a_resigned_folder_passes_its_own_key_but_not_a_trusted_one(tmp_path: Path, params, monkeypatch) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv(ENV, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode())
    run = _finished(tmp_path, params)
    monkeypatch.delenv(ENV)
    run.path("manifest.json").write_text(run.path("manifest.json").read_text() + " ")
    sign_run(run.root, params)  # a forger's per-run key replaces the folder's key
    assert verify_run(run.root).ok
    assert not verify_run(run.root, _pem_file(tmp_path / "trusted.pem", key)).ok


def test_env_key_is_used_and_its_public_half_written(tmp_path: Path, params, monkeypatch) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv(ENV, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode())
    run = _run(tmp_path, params)
    run.finalize("complete")
    signed = sign_run(run.root, params)
    expected = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert run.path(PUBLIC_KEY).read_bytes() == expected
    assert signed.key_source == f"environment variable {ENV}"
    record = json.loads(run.path(SIGNATURE).read_text())
    assert record["algorithm"] == "Ed25519" and record["key_source"] == signed.key_source
    import hashlib
    digest = hashlib.sha256(run.path("manifest.json").read_bytes()).digest()
    key.public_key().verify(base64.b64decode(record["signature"]), digest)  # raises if it does not verify


def test_key_env_names_another_variable(tmp_path: Path, params, monkeypatch) -> None:
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("AUDIT_SIGNING_KEY", key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()).decode())
    custom = params.model_copy(update={"attestation": Attestation(key_env="AUDIT_SIGNING_KEY")})
    run = _run(tmp_path, params)
    run.finalize("complete")
    assert sign_run(run.root, custom).key_source == "environment variable AUDIT_SIGNING_KEY"


def test_without_an_env_key_each_run_gets_its_own(tmp_path: Path, params) -> None:
    a, b = _finished(tmp_path / "a", params), _finished(tmp_path / "b", params)
    assert a.path(PUBLIC_KEY).read_bytes() != b.path(PUBLIC_KEY).read_bytes()
    assert json.loads(a.path(SIGNATURE).read_text())["key_source"] == "per-run key (its private half is not kept)"


@pytest.mark.parametrize(("value", "why"), [
    ("not-a-key-but-a-long-secret-value", "the value is not a PEM private key"),
    ("encrypted", "the key is password-protected"),
    ("rsa", "it holds a key of another type (RSAPrivateKey)"),
])
def test_bad_env_key_names_the_variable_not_the_value(tmp_path: Path, params, monkeypatch, value: str,
                                                      why: str) -> None:
    if value == "encrypted":
        value = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase")).decode()
    elif value == "rsa":
        value = rsa.generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    monkeypatch.setenv(ENV, value)
    run = _run(tmp_path, params)
    run.finalize("complete")
    with pytest.raises(AttestationError) as exc:
        sign_run(run.root, params)
    assert str(exc.value) == f"{BAD_KEY}: {why}"
    assert exc.value.__cause__ is None and (exc.value.__context__ is None or exc.value.__suppress_context__)
    assert not run.path("attestation").exists()


@pytest.mark.parametrize("from_env", [True, False])
def test_no_private_key_is_written_anywhere(tmp_path: Path, params, monkeypatch, from_env: bool) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    if from_env:
        monkeypatch.setenv(ENV, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()).decode())
    run = _finished(tmp_path, params)
    files = [p for p in run.root.rglob("*") if p.is_file()]
    assert run.path(SIGNATURE) in files and run.path(PUBLIC_KEY) in files
    for f in files:
        data = f.read_bytes()
        assert b"PRIVATE KEY" not in data, f
        assert raw not in data and base64.b64encode(raw) not in data, f


def test_bad_verifier_input(tmp_path: Path, params) -> None:
    with pytest.raises(AttestationError) as exc:
        verify_run(tmp_path / "nope")
    assert str(exc.value) == f"{tmp_path / 'nope'}: no such run folder"
    run = _finished(tmp_path, params)
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("hello")
    with pytest.raises(AttestationError) as exc:
        verify_run(run.root, bogus)
    assert str(exc.value) == f"--public-key {bogus}: not a PEM public key"
    run.path(PUBLIC_KEY).unlink()
    assert verify_run(run.root).problems == ["attestation/public_key.pem: missing"]
