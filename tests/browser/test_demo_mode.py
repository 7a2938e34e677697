"""Fix D in a real Chromium: the demo badge on ``/dashboard``, screenshot evidence, before/after/rollback.

The module runs its own sandbox on ports 28961–28968 and the real
:func:`readiness.phasekit.command_center.check_demo_mode`, which drives the system Chromium
through Playwright's async API and files one dashboard screenshot per flag state.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phasekit import command_center
from readiness.phasekit.context import Phase

pytestmark = pytest.mark.browser

PORT_BASE = 28960


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory, params_factory, start_sandbox) -> Iterator[Phase]:
    folder = tmp_path_factory.mktemp("demo-mode")
    path = params_factory(folder, port_base=PORT_BASE)
    with start_sandbox(path):
        params = load_params(path)
        run = RunFolder.create(folder / "outputs", params, path, mode="interactive")
        yield Phase(name="05_monetization", params=params, params_file=path, run=run)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_badge_shows_only_with_demo_mode_and_screenshots_are_filed(phase: Phase) -> None:
    if not command_center.CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {command_center.CHROMIUM}; install the Debian package 'chromium'")
    frame = command_center.check_demo_mode(phase)
    got = dict(zip(frame.index, frame["status"], strict=True))
    assert {k: got[k] for k in ("demo_mode.before.badge", "demo_mode.after.badge", "demo_mode.rollback.badge")} == {
        "demo_mode.before.badge": "FAIL", "demo_mode.after.badge": "PASS", "demo_mode.rollback.badge": "PASS"}
    assert (got["demo_mode.before"], got["demo_mode.after"], got["demo_mode.rollback"]) == ("FAIL", "PASS", "PASS")
    checks = {c.id: c for c in phase.run.read_checks(phase.name)}
    for state in ("before", "after", "rollback"):
        shot = f"evidence/a8_demo_mode_screenshots/{state}_dashboard.png"
        assert checks[f"demo_mode.{state}.badge"].evidence == (shot,)
        width, height = png_size(phase.run.path(shot).read_bytes())
        assert width == 1280 and height >= 600
    after = checks["demo_mode.after.badge"]
    assert (after.observed, after.detail) == (True, "observed True meets == True")
