"""The secret scan over a small tree: findings by file, line and type, never by value."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import Params, load_params
from readiness.params.sections import Security
from readiness.phasekit.context import Phase
from readiness.phases.security_ops.secret_scan import CHECK_ID, collect_files, compile_excludes, secrets_check
from readiness.phases.security_ops.secret_scan import scan_secrets as scan

ROOT = Path(__file__).resolve().parents[2]


def _fake_aws_key() -> str:
    """An AWS-looking access key id, made at run time so no such literal sits in the repo."""
    rng = random.Random(7)
    return "AKIA" + "".join(rng.choice(string.ascii_uppercase + "234567") for _ in range(16))


def _phase(tmp_path: Path, **security: object) -> Phase:
    params_file = tmp_path / "params" / "params.yaml"
    params_file.parent.mkdir(parents=True)
    params_file.write_text((ROOT / "params" / "sandbox.yaml").read_text())
    params: Params = load_params(params_file).model_copy(update={"security": Security(**security)})
    return Phase(name="10_security_ops", params=params, params_file=params_file,
                 run=RunFolder.create(tmp_path / "outputs", params, params_file, mode="interactive"))


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, str]:
    """src/ with one leak, one allowlisted line and clean code; fixtures/ with a deliberate fake."""
    key = _fake_aws_key()
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "clean.py").write_text('NAME = "STRIPE_SECRET_KEY"\n\ndef f() -> int:\n    return 1\n')
    (src / "pkg" / "leak.py").write_text(f'"""Settings."""\n\nREGION = "eu"\nAWS_ID = "{key}"\n')
    (src / "pkg" / "allowed.py").write_text(f'AWS_ID = "{key}"  # pragma: allowlist secret\n')
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "fake.py").write_text(f'AWS_ID = "{key}"\n')
    return {"key": key}


def test_finding_reported_by_file_line_type_only(tmp_path: Path, tree: dict[str, str]) -> None:
    phase = _phase(tmp_path, scan_paths=["../src", "../fixtures"], scan_exclude=[r"^\.\./fixtures/"])
    frame = scan(phase)
    assert frame.to_dict("records") == [{"file": "../src/pkg/leak.py", "line": 4, "type": "AWS Access Key"}]
    check = phase.run.read_checks("10_security_ops")[0]
    assert (check.id, check.status, check.severity, check.observed) == (CHECK_ID, Status.FAIL, "P0", 1)
    assert check.detail.endswith("; ../src/pkg/leak.py:4:AWS Access Key")
    assert check.n == 3  # clean, leak, allowed; the excluded fixture is not scanned
    text = phase.run.path("evidence/secret_scan.json").read_text()
    assert tree["key"] not in text and "hashed_secret" not in text
    evidence = json.loads(text)
    assert evidence["files_scanned"] == 3 and evidence["findings"] == frame.to_dict("records")


def test_clean_tree_passes_with_files_counted(tmp_path: Path, tree: dict[str, str]) -> None:
    phase = _phase(tmp_path, scan_paths=["../src"], scan_exclude=[r"leak\.py$"])
    assert scan(phase).empty
    check = phase.run.read_checks("10_security_ops")[0]
    assert (check.status, check.observed, check.n) == (Status.PASS, 0, 2)
    assert check.detail.endswith("; 2 files scanned, no finding")


def test_excluded_directory_is_pruned(tmp_path: Path, tree: dict[str, str]) -> None:
    phase = _phase(tmp_path, scan_paths=["../src"], scan_exclude=[r"pkg/"])
    scan(phase)
    check = phase.run.read_checks("10_security_ops")[0]
    assert check.status is Status.INCONCLUSIVE
    assert check.detail == "no data; no file was scanned"


def test_missing_scan_path_cannot_pass(tmp_path: Path, tree: dict[str, str]) -> None:
    phase = _phase(tmp_path, scan_paths=["../src", "../nowhere"], scan_exclude=[r"leak\.py$"])
    scan(phase)
    check = phase.run.read_checks("10_security_ops")[0]
    assert check.status is Status.INCONCLUSIVE
    assert check.detail.endswith("but scan paths not found: ../nowhere")


def test_relative_scan_paths_follow_the_params_file(tmp_path: Path, tree: dict[str, str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Validated and scanned from another working directory, ``../src`` is still beside ``params/``."""
    params_file = tmp_path / "params" / "params.yaml"
    params_file.parent.mkdir()
    text = (ROOT / "params" / "sandbox.yaml").read_text()
    params_file.write_text(text + "\nsecurity: {scan_paths: [../src], scan_exclude: ['leak\\.py$']}\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    params = load_params(params_file)
    phase = Phase(name="10_security_ops", params=params, params_file=params_file,
                  run=RunFolder.create(tmp_path / "outputs", params, params_file, mode="interactive"))
    assert scan(phase).empty
    evidence = json.loads(phase.run.path("evidence/secret_scan.json").read_text())
    assert (evidence["scan_paths"], evidence["files_scanned"], evidence["missing_paths"]) == (["../src"], 2, [])


def test_the_sandbox_scans_the_suites_own_sources_by_default(tmp_path: Path) -> None:
    phase = _phase(tmp_path)  # sandbox target, security.scan_paths left out
    roots = phase.params.scan_roots(phase.params_file)
    assert roots == [(str(ROOT / "sandbox"), ROOT / "sandbox"), (str(ROOT / "lib"), ROOT / "lib")]
    files, missing = collect_files(phase.params_file.parent, roots, compile_excludes([r"__pycache__/"]))
    assert not missing and any(shown.endswith("/lib/readiness/phases/security_ops/secret_scan.py") for _, shown in files)



def test_the_suites_own_sources_give_its_secret_scan_no_finding() -> None:
    """The sandbox run scans lib/ and sandbox/; a name like ``"secret_scan": "…"`` in a mapping
    reads as a keyword secret to detect-secrets, and the run's security check would FAIL."""
    from readiness.phases.security_ops.secret_scan import scan_files

    params_file = ROOT / "params" / "sandbox.yaml"
    params = load_params(params_file)
    files, missing = collect_files(params_file.parent, params.scan_roots(params_file),
                                   compile_excludes(params.security.scan_exclude))
    assert not missing and files
    assert scan_files(files) == []

def test_no_files_is_inconclusive() -> None:
    check = secrets_check("10_security_ops", [], 0, [])
    assert check.status is Status.INCONCLUSIVE and check.n == 0


def test_bad_exclude_regex_is_named() -> None:
    with pytest.raises(ValueError, match=r"^security\.scan_exclude\[1\]: invalid regex '\(': "):
        compile_excludes([r"ok/", "("])
