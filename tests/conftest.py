"""Shared fixtures: test params on their own ports, one sandbox per session, one suite run.

Tests use ports 281xx and a private state folder so that they never collide with a
sandbox a developer left running for `make lab` (181xx).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEST_PORT_BASE = 28100


def write_test_params(folder: Path, *, port_base: int = TEST_PORT_BASE,
                      edit: Callable[[dict[str, Any]], None] | None = None, **overrides: object) -> Path:
    """The sandbox params, moved to ports ``port_base + 1…8`` and a private state folder.

    ``edit`` may change the parsed YAML in place (nested settings); ``overrides`` replace
    top-level keys. Returns the written file (``folder/params.yaml``).
    """
    data = yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())
    for i, app in enumerate(data["apps"], 1):
        app["base_url"] = f"http://127.0.0.1:{port_base + i}"
    data["sandbox"]["state_dir"] = str(folder / "sandbox-state")
    data["rubric_file"] = str(ROOT / "params" / "rubric.yaml")
    data["security"] = {**data.get("security", {}), "scan_paths": [str(ROOT / "sandbox"), str(ROOT / "lib")]}
    if edit is not None:
        edit(data)
    for key, value in overrides.items():
        data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@contextlib.contextmanager
def apps_running(apps: list[Any], state_dir: Path, **up: Any) -> Iterator[Any]:
    """Some sandbox apps (``launcher.AppSpec``) started for a test module, always stopped."""
    from sandbox import launcher

    state = launcher.up(apps, state_dir, timeout_s=20, **up)
    try:
        yield state
    finally:
        launcher.down(state_dir)


@contextlib.contextmanager
def sandbox_running(params_file: Path) -> Iterator[Any]:
    """The sandbox of ``params_file`` running for the block (yields its launcher state); stopped
    after, and ``os.environ`` restored (starting it exports its generated secrets, which must
    not leak into other tests)."""
    from readiness.params.model import load_params
    from readiness.probe.sandbox_control import ensure_sandbox, stop_sandbox

    params = load_params(params_file)
    saved = dict(os.environ)
    state, _started = ensure_sandbox(params)
    try:
        yield state
    finally:
        stop_sandbox(params)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def params_factory() -> Callable[..., Path]:
    """``write_test_params`` for tests that need their own variant of the params (own ports)."""
    return write_test_params


@pytest.fixture(scope="session")
def start_sandbox() -> Callable[[Path], contextlib.AbstractContextManager[Any]]:
    """``sandbox_running`` for test modules that run a sandbox of their own."""
    return sandbox_running


@pytest.fixture(scope="session")
def sandbox_params_data() -> dict[str, Any]:
    """``params/sandbox.yaml`` parsed, not validated: tests change a copy and validate it."""
    return yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())


@pytest.fixture(scope="session")
def params_errors(sandbox_params_data: dict[str, Any]) -> Callable[[Callable[[dict[str, Any]], object]], list[str]]:
    """``params_errors(change)``: the validation errors of the sandbox params after ``change``
    (which edits a copy in place); fails the test when the changed params are valid."""
    from readiness.params.model import ParamsError, parse_params

    def errors(change: Callable[[dict[str, Any]], object]) -> list[str]:
        data = copy.deepcopy(sandbox_params_data)
        change(data)
        with pytest.raises(ParamsError) as info:
            parse_params(data, "test.yaml", {})
        return info.value.errors
    return errors


@pytest.fixture(scope="session")
def start_apps() -> Callable[..., contextlib.AbstractContextManager[Any]]:
    """``apps_running`` for test modules that start a few sandbox apps of their own."""
    return apps_running


@pytest.fixture(scope="session")
def test_params_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    def shorter(data: dict[str, Any]) -> None:  # the same phases, shorter loads (make test stays < 15 min)
        data["load"].update(duration_s=10, vu_scenario={"vus": 10, "duration_s": 5})
        data["activation"].update(users=5)  # the least n whose median has a 95% order-statistic interval
        data["resiliency"].update(cycles=2, cycle_s={"full": 120, "quick": 4}, recovery_s=5)
        # shorter windows where nothing is counted over them: a 3 s burn-in, banners with a 4 s
        # TTL, an 8 s dedupe window (the smoke's 400 probes per app over 20 s stay: fewer than
        # 299 cannot show an error rate below 1%)
        data["windows"]["quick"].update(burn_in_s=3, dedupe_s=8, sustained_s=4)
    return write_test_params(tmp_path_factory.mktemp("params"), edit=shorter)


@pytest.fixture(scope="session")
def sandbox(test_params_file: Path) -> Iterator[object]:
    """The eight sandbox apps on test ports for the whole session (stopped at the end)."""
    with sandbox_running(test_params_file) as state:
        yield state


@pytest.fixture(scope="session")
def suite_run(sandbox: object, test_params_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """One full `readiness run` of every notebook against the sandbox, shared by many tests."""
    from readiness.run.runner import run_suite

    out = tmp_path_factory.mktemp("outputs")
    lines: list[str] = []
    outcome = run_suite(test_params_file, outputs=out, echo=lines.append)
    outcome.log = lines  # type: ignore[attr-defined]
    return outcome
