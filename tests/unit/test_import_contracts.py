"""The library's layers hold: import-linter's contracts pass, and they cover every package."""

from __future__ import annotations

import configparser
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import readiness
from readiness.params.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
LIB = Path(readiness.__file__).parent


def _contract(name: str) -> configparser.SectionProxy:
    cfg = configparser.ConfigParser()
    cfg.read(CONFIG)
    return cfg[f"importlinter:contract:{name}"]


def _packages(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}


def _lint(config: Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter) is not installed"
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_lint_imports_passes() -> None:
    done = _lint(CONFIG)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_the_phase_contract_catches_one_phase_importing_another(tmp_path: Path) -> None:
    """The independence contract is not vacuous: applied to a copy of the library in which
    one phase package imports another, it breaks and names the import."""
    copy = tmp_path / "src"
    shutil.copytree(LIB, copy / "readiness", ignore=shutil.ignore_patterns("__pycache__"))
    smoke = copy / "readiness" / "phases" / "smoke" / "smoke.py"
    smoke.write_text(smoke.read_text() + "\nfrom readiness.phases.latency import profile  # noqa: E402,F401\n")
    cfg = tmp_path / ".importlinter"
    cfg.write_text(CONFIG.read_text())
    done = _lint(cfg, cwd=copy, env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    assert done.returncode != 0, done.stdout
    assert "readiness.phases.smoke.smoke -> readiness.phases.latency.profile" in done.stdout


def test_every_registered_phase_is_a_phase_package_and_nothing_else_is() -> None:
    assert _contract("phases")["modules"].split() == ["readiness.phases.*"]
    assert _packages(LIB / "phases") == {spec.package for spec in REGISTRY}


def test_every_top_level_subpackage_is_a_layer() -> None:
    layers = {name.strip() for line in _contract("layers")["layers"].strip().splitlines() for name in line.split("|")}
    assert layers == {f"readiness.{name}" for name in _packages(LIB)}


def test_every_package_says_what_lives_there_and_declares_its_surface() -> None:
    for init in LIB.rglob("__init__.py"):
        text = init.read_text()
        assert text.startswith('"""'), f"{init} has no docstring"
        assert "__all__" in text, f"{init} has no __all__"
        if init.parent != LIB:
            listed = set(importlib.import_module(_dotted(init.parent)).__all__)
            on_disk = {p.stem for p in init.parent.glob("*.py") if p.stem != "__init__"} | _packages(init.parent)
            assert listed == on_disk, (init, listed ^ on_disk)


def _dotted(folder: Path) -> str:
    return ".".join(("readiness", *folder.relative_to(LIB).parts))
