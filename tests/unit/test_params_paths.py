"""Paths in the params resolve against the params file's folder, wherever the file is copied.

A params file copied out of ``params/`` must mean what it meant inside: its relative paths
follow it, the rubric falls back to the bundled one when none sits beside it, and a path
the user wrote that is not there is refused while validating, naming the field.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from readiness.params.model import BUNDLED_RUBRIC, SANDBOX_SCAN_PATHS, ParamsError, load_params, parse_params
from readiness.run.cli import main
from readiness.score.rubric import load_rubric

ROOT = Path(__file__).resolve().parents[2]
SANDBOX = ROOT / "params" / "sandbox.yaml"
STAGING = ROOT / "params" / "staging.example.yaml"
STAGING_ENV = {f"A{i}_BASE_URL": "http://127.0.0.1:1" for i in range(1, 9)}


def _copy(folder: Path, edit: Callable[[dict[str, Any]], object] | None = None, source: Path = SANDBOX) -> Path:
    """The params at ``source`` written to ``folder/params.yaml``, changed by ``edit`` first."""
    data = yaml.safe_load(source.read_text())
    if edit is not None:
        edit(data)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ParamsError) as info:
        load_params(path, env=env)
    return info.value.errors


@pytest.fixture()
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is neither the project nor the params file's folder."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# -- the rubric -----------------------------------------------------------------------------
def test_a_copied_params_file_validates_and_scores_with_the_bundled_rubric(tmp_path: Path, elsewhere: Path) -> None:
    path = tmp_path / "x" / "params.yaml"
    path.parent.mkdir()
    shutil.copy(SANDBOX, path)
    params = load_params(path)
    assert params.rubric_file is None
    assert params.rubric_path(path) == BUNDLED_RUBRIC == ROOT / "params" / "rubric.yaml"
    assert len(load_rubric(params.rubric_path(path)).categories) == 11


def test_the_staging_example_copied_elsewhere_validates(tmp_path: Path, elsewhere: Path) -> None:
    path = tmp_path / "ops" / "params.yaml"
    path.parent.mkdir()
    shutil.copy(STAGING, path)
    params = load_params(path, env=STAGING_ENV)
    assert params.rubric_path(path) == BUNDLED_RUBRIC
    assert params.scan_roots(path) == []  # an external ecosystem's code is not here unless named


def test_the_shipped_params_use_the_rubric_beside_them() -> None:
    assert load_params(SANDBOX).rubric_path(SANDBOX) == ROOT / "params" / "rubric.yaml"


def test_a_rubric_beside_the_params_file_wins_over_the_bundled_one(tmp_path: Path, elsewhere: Path) -> None:
    path = _copy(tmp_path / "x")
    shutil.copy(BUNDLED_RUBRIC, tmp_path / "x" / "rubric.yaml")
    assert load_params(path).rubric_path(path) == tmp_path / "x" / "rubric.yaml"


def test_an_explicit_relative_rubric_resolves_against_the_params_folder(tmp_path: Path, elsewhere: Path) -> None:
    path = _copy(tmp_path / "x", lambda d: d.update(rubric_file="ladders/mine.yaml"))
    (tmp_path / "x" / "ladders").mkdir()
    shutil.copy(BUNDLED_RUBRIC, tmp_path / "x" / "ladders" / "mine.yaml")
    assert load_params(path).rubric_path(path) == tmp_path / "x" / "ladders" / "mine.yaml"


def test_an_explicit_rubric_that_does_not_exist_is_refused(tmp_path: Path, elsewhere: Path) -> None:
    path = _copy(tmp_path / "x", lambda d: d.update(rubric_file="rubric.yaml"))
    assert _errors(path) == [f"rubric_file: rubric.yaml does not exist (resolved against {path}'s folder: "
                             f"{tmp_path / 'x' / 'rubric.yaml'})"]


def test_an_explicit_absolute_rubric_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "rubric.yaml"
    path = _copy(tmp_path / "x", lambda d: d.update(rubric_file=str(missing)))
    assert _errors(path) == [f"rubric_file: {missing} does not exist"]


def test_an_explicit_rubric_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    path = _copy(tmp_path / "x", lambda d: d.update(rubric_file="ladders"))
    (tmp_path / "x" / "ladders").mkdir()
    assert _errors(path) == [f"rubric_file: ladders is not a file (resolved against {path}'s folder: "
                             f"{tmp_path / 'x' / 'ladders'})"]


def test_an_empty_rubric_file_is_refused(params_errors: Callable[[Callable[[dict], object]], list[str]]) -> None:
    assert params_errors(lambda d: d.update(rubric_file="")) == [
        "rubric_file: String should have at least 1 character"]


# -- the secret scan's paths ----------------------------------------------------------------
def test_relative_scan_paths_resolve_against_the_params_file(tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "x" / "one.py").parent.mkdir()
    (tmp_path / "x" / "one.py").write_text("X = 1\n")
    path = _copy(tmp_path / "x", lambda d: d.update(security={"scan_paths": ["../src", "one.py"]}))
    assert load_params(path).scan_roots(path) == [("../src", tmp_path / "x" / ".." / "src"),
                                                  ("one.py", tmp_path / "x" / "one.py")]


def test_a_scan_path_that_does_not_exist_is_refused_naming_its_index(tmp_path: Path, elsewhere: Path) -> None:
    (tmp_path / "src").mkdir()
    path = _copy(tmp_path / "x", lambda d: d.update(security={"scan_paths": ["../src", "../sandbox", "/no/such"]}))
    assert _errors(path) == [
        f"security.scan_paths[1]: ../sandbox does not exist (resolved against {path}'s folder: "
        f"{tmp_path / 'x' / '..' / 'sandbox'})",
        "security.scan_paths[2]: /no/such does not exist"]


def test_without_a_params_file_relative_paths_resolve_against_the_working_directory(
        elsewhere: Path, sandbox_params_data: dict[str, Any]) -> None:
    (elsewhere / "src").mkdir()
    data = {**sandbox_params_data, "security": {"scan_paths": ["src"]}}
    assert parse_params(data, "inline", {}).scan_roots(None) == [("src", elsewhere / "src")]
    data["security"] = {"scan_paths": ["lib"]}
    with pytest.raises(ParamsError) as info:
        parse_params(data, "inline", {})
    assert info.value.errors == [
        f"security.scan_paths[0]: lib does not exist (resolved against the working directory: {elsewhere / 'lib'})"]


def test_default_scan_paths_are_the_suites_sources_on_the_sandbox_only(tmp_path: Path) -> None:
    path = _copy(tmp_path / "x")
    params = load_params(path)
    assert params.security.scan_paths is None
    assert params.scan_roots(path) == [(str(ROOT / "sandbox"), ROOT / "sandbox"), (str(ROOT / "lib"), ROOT / "lib")]
    assert all(p.is_dir() for p in SANDBOX_SCAN_PATHS)
    external = params.model_copy(update={"target": "external"})
    assert external.scan_roots(path) == []


def test_an_empty_scan_path_is_refused(params_errors: Callable[[Callable[[dict], object]], list[str]]) -> None:
    assert params_errors(lambda d: d.update(security={"scan_paths": ["lib", ""]})) == [
        "security.scan_paths[1]: String should have at least 1 character"]


def test_validate_exits_2_naming_the_field(tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _copy(tmp_path / "x", lambda d: d.update(security={"scan_paths": ["../sandbox"]}))
    assert main(["validate", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"security.scan_paths[0]: ../sandbox does not exist (resolved against {path}'s folder: " in err
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["params.yaml"]  # nothing written
