"""Fix D in a real Chromium: the demo badge on ``/dashboard``, screenshot evidence, before/after/rollback.

The module runs its own sandbox on ports 28961–28968 and the real
:func:`readiness.command_center.check_demo_mode`, which drives the system Chromium
through Playwright's async API and files one dashboard screenshot per flag state.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from readiness import command_center
from readiness.params import load_params
from readiness.phase import Phase
from readiness.runfolder import RunFolder
from readiness.sandbox_control import ensure_sandbox, stop_sandbox

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
PORT_BASE = 28960


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    folder = tmp_path_factory.mktemp("demo-mode")
    data = yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())
    for i, app in enumerate(data["apps"], 1):
        app["base_url"] = f"http://127.0.0.1:{PORT_BASE + i}"
    data["sandbox"]["state_dir"] = str(folder / "sandbox-state")
    data["rubric_file"] = str(ROOT / "params" / "rubric.yaml")
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_params(path)
    saved = dict(os.environ)
    ensure_sandbox(params)
    try:
        run = RunFolder.create(folder / "outputs", params, path, mode="interactive")
        yield Phase(name="05_monetization", params=params, params_file=path, run=run)
    finally:
        stop_sandbox(params)
        os.environ.clear()
        os.environ.update(saved)


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
