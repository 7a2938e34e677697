"""Ports, cost and monitoring rules of ``10_security_ops`` against a sandbox of their own.

The sandbox runs on 29701–29708 without the checkout app (A5): A5 would bring the local
Stripe API on the port below the lowest app port, outside this module's range, and none
of these checks needs payments. Its port stays free, so no app is expected there.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import load_params
from readiness.phasekit.context import Phase
from readiness.phases.security_ops import cost, monitoring_rules, ports
from sandbox import procs

pytestmark = pytest.mark.integration

PORT_BASE = 29700
PHASE = "10_security_ops"


def _edit(data: dict[str, Any]) -> None:
    data["apps"] = [a for a in data["apps"] if a["id"] != "A5"]
    data["gate"]["enforcement_routes"] = [r for r in data["gate"]["enforcement_routes"] if r["app"] != "A5"]
    data["hardening"]["routes"] = [r for r in data["hardening"]["routes"] if r["app"] != "A5"]
    data["monitoring"]["after"][0]["duration_s"] = 2  # the drive waits this long after the burst
    data["monitoring"]["traffic"].update(noise_failures=4, noise_spacing_s=0.3, incident_failures=20)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory, params_factory: Any, start_sandbox: Any) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("ops")
    params_file = params_factory(folder, port_base=PORT_BASE, edit=_edit)
    params = load_params(params_file)
    with start_sandbox(params_file) as state:
        def phase() -> Phase:
            run = RunFolder.create(folder / "outputs", params, params_file, mode="interactive")
            run.producer = PHASE
            return Phase(name=PHASE, params=params, params_file=params_file, run=run)
        yield {"phase": phase, "first": phase(), "state": state, "params": params}


def _checks(phase: Phase) -> dict[str, Any]:
    return {c.id: c for c in phase.run.read_checks(PHASE)}


def test_every_app_listens_on_loopback_alone(ops: dict[str, Any]) -> None:
    phase: Phase = ops["first"]
    table = ports.port_bindings(phase)
    checks = _checks(phase)
    apps = [a.id for a in ops["params"].apps]
    assert len(apps) == 7
    for app in ops["params"].apps:
        check = checks[f"ops.ports.{app.id}"]
        assert check.status is Status.PASS, check.detail
        assert table.loc[app.id, "listening on"] == f"127.0.0.1:{app.port}"
        assert table.loc[app.id, "second bind"] == "EADDRINUSE"
    assert checks["ops.ports.collisions"].status is Status.PASS
    facts = json.loads(phase.run.path(ports.EVIDENCE).read_text())["apps"]
    assert facts["A1"]["owners"] == [ops["state"].pids["A1"]] and facts["A1"]["bind_failures"] == []
    report = phase.run.path(ports.REPORT).read_text()
    assert all(f"127.0.0.1:{PORT_BASE + i}" in report for i in (1, 2, 3, 4, 6, 7, 8))


def test_replay_silences_noise_and_still_catches_credential_stuffing(ops: dict[str, Any]) -> None:
    phase: Phase = ops["first"]
    driven = monitoring_rules.drive_auth_traffic(phase).set_index("kind")
    assert driven.loc["noise"].tolist() == [4, 4, 4] and driven.loc["incident"].tolist() == [20, 20, 20]
    monitoring_rules.replay(phase)
    checks = _checks(phase)
    silenced, detected = checks["ops.monitoring.noise_silenced"], checks["ops.monitoring.incident_detected"]
    assert silenced.status is Status.PASS and silenced.observed == 0, silenced.detail
    assert "before rules: 4 noise alerts" in silenced.detail
    assert detected.status is Status.PASS and detected.observed == 1, detected.detail
    replay = json.loads(phase.run.path(monitoring_rules.REPLAY).read_text())
    before, after = replay["versions"]["before"][0], replay["versions"]["after"][0]
    assert before["matched_events"] == after["matched_events"] == 24
    assert sum(not a["incident"] for a in before["alerts"]) == 4 and len(before["alerts"]) == 24
    assert [a["incident"] for a in after["alerts"]] == [True]
    report = phase.run.path(monitoring_rules.REPORT).read_text()
    for section in ("## Rule changes (before → after)", "## Alerts that would have fired", "## Incident timeline"):
        assert section in report
    assert "| auth_failures | threshold | 1.0 | 10.0 | changed |" in report


def test_auth_failure_events_carry_the_reason_never_the_password(ops: dict[str, Any]) -> None:
    a8 = ops["params"].app("A8")
    since = ops["first"].run.info()["started_at"]
    events = httpx.get(a8.url("/api/telemetry/events"), params={"event_type": "auth_failure", "since": since},
                       timeout=5).json()["events"]
    assert len(events) == 24
    for e in events:
        assert e["app_id"] == "A1" and e["status"] == 401 and e["route"] == "/oauth2/login"
        assert e["reason"] == "email or password is wrong" and len(e["subject_digest"]) == 16
        assert e["tags"]["test_run"] == "true" and e["tags"]["source"] == "qa"
        assert "password" not in {k.lower() for k in e} and "@" not in json.dumps(e)


def test_cost_snapshot_and_delta_against_the_baseline_run(ops: dict[str, Any]) -> None:
    first: Phase = ops["first"]
    cost.snapshot(first)
    snap = json.loads(first.run.path(cost.SNAPSHOT).read_text())
    for app_id, pid in ops["state"].pids.items():
        usage = snap["apps"][app_id]
        assert usage["pid"] == pid and usage["cpu_s"] > 0 and usage["rss_mb"] > 10, usage
    assert snap["apps"]["A1"]["requests"] >= 24  # the failed logins at least
    assert snap["queues"][0]["key"] == "A3.queue_depth" and isinstance(snap["queues"][0]["depth"], int)
    checks = _checks(first)
    assert checks["ops.cost.A1.rss"].status is Status.INCONCLUSIVE
    assert "no baseline snapshot" in checks["ops.cost.A1.rss"].detail
    first.run.finalize("complete")
    second = ops["phase"]()
    table = cost.snapshot(second)
    after = _checks(second)
    assert json.loads(second.run.path(cost.SNAPSHOT).read_text())["baseline_run"] == first.run.root.name
    rss = table[(table.subject == "A1") & (table.metric == "rss_mb")].iloc[0]
    assert rss.baseline == snap["apps"]["A1"]["rss_mb"] and rss.current > 0
    assert after["ops.cost.A1.rss"].status is Status.PASS, after["ops.cost.A1.rss"].detail  # same processes
    assert after["ops.cost.queue.A3.queue_depth"].status in (Status.PASS, Status.FAIL)


def _wait_healthy(url: str, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                return True
        time.sleep(0.05)
    return False


def test_restart_and_a_squatter_on_the_port(ops: dict[str, Any]) -> None:
    """A7 restarted at once binds again (SO_REUSEADDR); a squatter makes the restart meet EADDRINUSE."""
    state, app = ops["state"], ops["params"].app("A7")
    folder = Path(state.state_dir)
    old = psutil.Process(state.pids["A7"])
    env = old.environ()  # the same configuration the launcher gave it (kept in memory only)
    log = folder / "logs" / "A7.log"
    spawned: list[int] = []
    squatter: socket.socket | None = None
    try:
        for _ in range(20):  # connections the server closes first leave TIME_WAIT behind
            httpx.get(f"{app.base_url}/health", headers={"Connection": "close"}, timeout=2)
        procs.stop([old.pid], timeout_s=3)
        spawned.append(procs.spawn("A7", app.host, app.port, folder, env, log))
        assert _wait_healthy(app.base_url)
        phase = ops["phase"]()
        ports.port_bindings(phase)
        check = _checks(phase)["ops.ports.A7"]
        assert check.status is Status.PASS, check.detail
        assert f"the launcher recorded pid {old.pid}: restarted since" in check.detail

        procs.stop(spawned, timeout_s=3)
        squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT would refuse it otherwise
        squatter.bind((app.host, app.port))
        squatter.listen()
        spawned.append(procs.spawn("A7", app.host, app.port, folder, env, log))
        deadline = time.monotonic() + 10
        while procs.exit_code(spawned[-1]) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procs.exit_code(spawned[-1]) == 3  # the sandbox's "port in use" exit
        phase = ops["phase"]()
        table = ports.port_bindings(phase)
        check = _checks(phase)["ops.ports.A7"]
        assert check.status is Status.FAIL
        assert "is not the sandbox process serving A7" in check.detail and "already in use" in check.detail
        assert table.loc["A7", "owner pids"] == str(psutil.Process().pid)
        assert _checks(phase)["ops.ports.A1"].status is Status.PASS
    finally:
        if squatter is not None:
            squatter.close()
        procs.stop(spawned, timeout_s=3)


def test_configured_collisions_and_remote_hosts(ops: dict[str, Any], tmp_path: Path) -> None:
    """Two apps configured on one address are a collision; a host that is not this machine is not local."""
    apps = list(ops["params"].apps)
    twin = apps[1].model_copy(update={"id": "A2b", "base_url": apps[1].base_url.replace("127.0.0.1", "localhost")})
    assert ports.shared_ports([*apps, twin]) == {f"127.0.0.1:{apps[1].port}": ["A2", "A2b"]}
    assert ports.shared_ports(apps) == {}
    assert ports.is_local("127.0.0.1") and ports.is_local("localhost")
    assert not ports.is_local("192.0.2.10", ports.local_addresses())  # TEST-NET-1: never this host
    log = tmp_path / "A9.log"
    log.write_text("sandbox A9: serving http://127.0.0.1:1 (pid 7)\nsandbox A9: port 1 on 127.0.0.1 is already in use\n"
                   "sandbox A9: serving http://127.0.0.1:1 (pid 8)\n")
    assert ports.log_findings(log) == (2, ["sandbox A9: port 1 on 127.0.0.1 is already in use"])
    assert ports.log_findings(tmp_path / "missing.log") == (0, [])
