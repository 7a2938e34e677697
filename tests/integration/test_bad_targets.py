"""Dead, garbage-spewing and slow targets are recorded failures, never exceptions."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from readiness.core.check import Status
from readiness.phasekit.context import open_phase
from readiness.phases.smoke import smoke

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def garbage_server() -> Iterator[int]:
    """Accepts connections and answers bytes that are not HTTP."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"\x00\x01 garbage \xff\xfe\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join(2)
    srv.close()


def test_smoke_against_dead_and_garbage_targets(tmp_path: Path, garbage_server: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = yaml.safe_load((ROOT / "params" / "sandbox.yaml").read_text())
    dead = _free_port()
    data["target"] = "external"
    data["apps"] = [{**data["apps"][0], "base_url": f"http://127.0.0.1:{dead}"},
                    {**data["apps"][1], "base_url": f"http://127.0.0.1:{garbage_server}"}]
    data["telemetry_app"] = "A1"
    data["gate"]["enforcement_routes"] = []
    data["latency"]["compare_flags"] = []
    data["smoke"] = {"samples_per_app": 12, "stable_slices": 2}
    data["windows"]["quick"]["stable_window_s"] = 1
    data["windows"]["quick"]["burn_in_s"] = 0.5
    data["thresholds"]["telemetry_arrival_s"] = 1
    data["rubric_file"] = str(ROOT / "params" / "rubric.yaml")
    for section in ("funnels", "hardening", "b2b", "telemetry_contract", "load", "learning", "resiliency",
                    "monitoring", "approvals", "activation", "growth"):  # they name the sandbox's other apps
        data.pop(section, None)
    params_file = tmp_path / "bad-targets.yaml"
    params_file.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("READINESS_OUTPUTS", str(tmp_path / "outputs"))

    phase = open_phase("01_smoke", str(params_file))
    started = time.monotonic()
    summary = smoke.probe_window(phase)
    method_b = smoke.corroborate(phase)
    smoke.evaluate(phase)
    smoke.write_report(phase)
    assert time.monotonic() - started < 30  # bounded: timeouts, not hangs

    samples = smoke.load_samples(phase)
    assert set(samples[samples.app == "A1"].error) == {"connect_error"}
    assert set(samples[samples.app == "A2"].error) == {"protocol_error"}
    assert summary.ok.sum() == 0
    assert method_b.error.notna().all()  # the telemetry store is dead too: no method B data

    checks = {c.id: c for c in phase.run.read_checks("01_smoke")}
    for app in ("A1", "A2"):
        assert checks[f"smoke.{app}.success"].status is Status.FAIL
        assert checks[f"smoke.{app}.error_rate"].status is Status.FAIL
        assert checks[f"smoke.{app}.p95"].status is Status.FAIL  # no answer counts as infinitely slow
        assert checks[f"smoke.{app}.stable"].status is not Status.PASS
        assert checks[f"smoke.{app}.agreement"].status is Status.INCONCLUSIVE
        assert checks[f"smoke.{app}.liveness"].status is Status.FAIL
    assert "connect_error" in checks["smoke.A1.health"].detail
    assert (phase.run.root / "reports" / "ecosystem_double_confirm.md").is_file()
