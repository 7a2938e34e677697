"""The sandbox for integration tests: eight apps on ports 28201–28208, started by ``launcher.up``.

The apps run with a telemetry key (so every emitter must authenticate to A8, and the
arrival tests prove it does). How long ``launcher.up`` took is printed in the terminal
summary: it is a measurement to watch, not a test verdict.

The fixture is module-scoped and on its own ports, apart from the suite-wide ``sandbox``
fixture of ``tests/conftest.py`` (281xx) that the notebook tests audit: this module turns
fault knobs on and posts rejected and duplicate events on purpose, none of which may
leak into the ecosystem the notebooks measure.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from sandbox import launcher

INTEGRATION_BASE_PORT = 28201
_startup: dict[str, float] = {}


@pytest.fixture(scope="session")
def telemetry_key() -> str:
    """The A8_TELEMETRY_KEY the integration sandbox runs with."""
    return "test-telemetry-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def sandbox_state(tmp_path_factory: pytest.TempPathFactory, telemetry_key: str) -> Iterator[launcher.SandboxState]:
    """All eight apps, healthy, in a private state folder; stopped when the module using it ends."""
    state_dir = tmp_path_factory.mktemp("sandbox-state")
    apps = launcher.default_apps(INTEGRATION_BASE_PORT)
    started = time.perf_counter()
    state = launcher.up(apps, state_dir, env={"A8_TELEMETRY_KEY": telemetry_key}, timeout_s=20)
    _startup.setdefault("seconds", time.perf_counter() - started)
    _startup.setdefault("apps", len(apps))
    try:
        yield state
    finally:
        launcher.down(state_dir)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _startup:
        terminalreporter.write_line(
            f"sandbox: {int(_startup['apps'])} apps healthy {_startup['seconds']:.2f} s after launcher.up"
        )
