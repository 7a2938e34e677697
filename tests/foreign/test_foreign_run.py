"""The whole suite against third-party servers: httpbin under gunicorn and nginx, on loopback.

Three runs of ``readiness run`` as subprocesses inside the network guard (see conftest.py):

* ``healthy``: ``params/examples/foreign_healthy.yaml``, all twelve phases, every app on a
  working httpbin route or nginx static file, nothing declared but plain HTTP;
* ``faults``: ``params/examples/foreign_faults.yaml``, all twelve phases, each app on its own
  fault (refused, TLS mismatch, timeout, garbage, 503, reset mid-body, no telemetry store);
* ``faults_01_02_03``: the same params, ``--phases 01,02,03``: without Phase 0 no gate
  blocks them, so smoke, latency and the baseline load meet the faults head on.

The assertions are the suite's contract with an ecosystem it did not write: no phase
breaks (ERROR); every phase that did not run says why; a target that cannot be reached
FAILs with the class of the failure, never INCONCLUSIVE and never PASS; a PASS always rests
on data; no secret reaches disk; and no process of the run leaves loopback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from foreign_tier import (
    FAKE_SECRET_VALUE,
    FAULT_APPS,
    HEALTHY_APPS,
    PARAMS,
    ForeignRun,
    ForeignServers,
    read_violations,
    run_readiness,
    tail,
)

pytestmark = pytest.mark.foreign

ALL_PHASES = ("00_inventory", "01_smoke", "02_latency_profile", "03_baseline_load", "04_funnels",
              "05_monetization", "06_telemetry_contract", "07_activation_growth", "08_learning_autonomy",
              "09_resiliency", "10_security_ops", "11_readiness_score")
# Phases that need nothing but HTTP services: they run against plain httpbin and nginx.
PLAIN_HTTP_PHASES = ("00_inventory", "01_smoke", "02_latency_profile", "03_baseline_load", "10_security_ops",
                     "11_readiness_score")
EXPLAINED = ("SKIPPED", "BLOCKED", "STOPPED")
RUNS = ("healthy", "faults", "faults_01_02_03")


@pytest.fixture(scope="module")
def runs() -> dict[str, ForeignRun]:
    """Each run happens once, on first use, and is shared by the tests that read it."""
    return {}


def _get(runs: dict[str, ForeignRun], servers: ForeignServers, tmp: pytest.TempPathFactory, name: str) -> ForeignRun:
    if name not in runs:
        params, apps = PARAMS["faults" if name.startswith("faults") else "healthy"]
        phases = "01,02,03" if name == "faults_01_02_03" else None
        runs[name] = run_readiness(servers, name, params, apps, tmp.mktemp(f"run-{name}"), phases=phases)
    return runs[name]


@pytest.fixture(params=RUNS)
def run(request: pytest.FixtureRequest, runs: dict[str, ForeignRun], foreign_servers: ForeignServers,
        tmp_path_factory: pytest.TempPathFactory) -> ForeignRun:
    return _get(runs, foreign_servers, tmp_path_factory, request.param)


@pytest.fixture
def healthy(runs: dict[str, ForeignRun], foreign_servers: ForeignServers,
            tmp_path_factory: pytest.TempPathFactory) -> ForeignRun:
    return _get(runs, foreign_servers, tmp_path_factory, "healthy")


@pytest.fixture
def faults(runs: dict[str, ForeignRun], foreign_servers: ForeignServers,
           tmp_path_factory: pytest.TempPathFactory) -> ForeignRun:
    return _get(runs, foreign_servers, tmp_path_factory, "faults")


@pytest.fixture
def faults_partial(runs: dict[str, ForeignRun], foreign_servers: ForeignServers,
                   tmp_path_factory: pytest.TempPathFactory) -> ForeignRun:
    return _get(runs, foreign_servers, tmp_path_factory, "faults_01_02_03")


def _why(run: ForeignRun, phase: str, row: dict[str, Any]) -> str:
    return (f"{run.name}: {phase} is {row['status']}: {row.get('error')}\n"
            f"notebook traceback:\n{run.notebook_traceback(phase)}")


def _checks(run: ForeignRun, phase: str | None = None) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in run.checks() if phase is None or c["phase"] == phase}


# -- every run ----------------------------------------------------------------------------------
def test_run_folder_and_status(run: ForeignRun) -> None:
    """The run ends complete (exit 0), or paused at a gate whose approval is missing (exit 3)."""
    assert run.run_dir is not None, f"{run.name}: exit {run.returncode}, no run folder; console:\n{tail(run.console)}"
    info = run.info
    if info["status"] == "paused":
        waiting = [p for p, rec in info["phases"].items() if rec.get("status") == "WAITING"]
        gate_files = sorted(p.name for p in (run.run_dir / "reports").glob("GATE_*_HUMAN_APPROVAL_REQUIRED.md"))
        assert waiting and gate_files and run.returncode == 3, (waiting, gate_files, run.returncode)
    else:
        assert info["status"] == "complete", (f"{run.name}: run {info['status']} (exit {run.returncode}): "
                                              f"{info.get('error')}\nconsole:\n{tail(run.console, 15)}")
        assert run.returncode == 0, tail(run.console, 15)


def test_no_phase_errors(run: ForeignRun) -> None:
    table = run.phase_table()
    errors = [_why(run, phase, row) for phase, row in table.items() if row["status"] == "ERROR"]
    assert not errors, "\n\n".join(errors)
    erred_checks = [f"{c['id']}: {c['detail']}" for c in run.checks() if c["status"] == "ERROR"]
    assert not erred_checks, erred_checks


def test_every_phase_ran_or_says_why(run: ForeignRun) -> None:
    table = run.phase_table()
    expected = ("01_smoke", "02_latency_profile", "03_baseline_load") if run.name == "faults_01_02_03" else ALL_PHASES
    assert tuple(table) == expected
    for phase, row in table.items():
        assert row["status"] in ("OK", *EXPLAINED), _why(run, phase, row)
        if row["status"] in EXPLAINED:
            assert (row.get("error") or "").strip(), f"{run.name}: {phase} is {row['status']} without a reason"
        if row["status"] == "SKIPPED":
            assert row["error"].startswith("not applicable"), _why(run, phase, row)


def test_a_pass_always_rests_on_data(run: ForeignRun) -> None:
    """A PASS has an observed value, and n > 0 wherever the check records n."""
    empty = [f"{c['id']} (observed={c['observed']!r}, n={c['n']!r}): {c['detail']}" for c in run.checks()
             if c["status"] == "PASS" and (c["observed"] is None or (c["n"] is not None and c["n"] <= 0))]
    assert not empty, f"{run.name}: PASS without data:\n" + "\n".join(empty)


def test_no_secret_value_on_disk(run: ForeignRun) -> None:
    assert run.run_dir is not None
    if (run.run_dir / "evidence" / "secrets_presence.json").exists():  # the secret did reach the run
        presence = json.loads((run.run_dir / "evidence" / "secrets_presence.json").read_text())["secrets"]
        assert {"secret": "A8_TELEMETRY_KEY", "present": True, "required": False} in presence, presence
    needle = FAKE_SECRET_VALUE.encode()
    leaks = [str(p.relative_to(run.run_dir)) for p in sorted(run.run_dir.rglob("*"))
             if p.is_file() and needle in p.read_bytes()]
    assert not leaks, f"{run.name}: the value of A8_TELEMETRY_KEY is written in {leaks}"
    assert needle not in run.console.read_bytes(), f"{run.name}: the secret value is printed on the console"


def test_network_guard_saw_nothing(run: ForeignRun, foreign_servers: ForeignServers) -> None:
    violations = read_violations(run.violations)
    assert violations == [], f"{run.name}: non-loopback traffic attempted: {violations}"
    assert read_violations(foreign_servers.violations) == [], "the servers attempted non-loopback traffic"
    # the guard was active where it had to be: the runner and every kernel it started
    procs = Path(f"{run.violations}.procs").read_text().splitlines()
    assert any("readiness" in line for line in procs), procs
    kernels = [line for line in procs if "ipykernel" in line]
    assert len(kernels) >= sum(row["status"] == "OK" for row in run.phase_table().values()), procs


# -- healthy ----------------------------------------------------------------------------------
def test_healthy_plain_http_phases_run_and_the_rest_are_not_applicable(healthy: ForeignRun) -> None:
    table = healthy.phase_table()
    ran = {p: r["status"] for p, r in table.items() if p in PLAIN_HTTP_PHASES}
    assert ran == dict.fromkeys(PLAIN_HTTP_PHASES, "OK"), {p: table[p] for p in PLAIN_HTTP_PHASES}
    others = {p: r["status"] for p, r in table.items() if p not in PLAIN_HTTP_PHASES}
    assert others == dict.fromkeys(others, "SKIPPED"), {p: table[p] for p in others}


def test_healthy_inventory_passes_and_the_gate_is_go(healthy: ForeignRun) -> None:
    checks = _checks(healthy, "00_inventory")
    for app in HEALTHY_APPS:
        for kind in ("base", "health", "ready"):
            c = checks[f"inventory.{app}.{kind}"]
            assert c["status"] == "PASS", f"{c['id']}: {c['status']} {c['detail']}"
    go = checks["inventory.gate.go"]
    assert go["status"] == "PASS", f"Phase 0 gate {go['status']}: {go['detail']}"


# -- faults -------------------------------------------------------------------------------------
UNREACHABLE = {"A1": "connect_error", "A2": "tls_error", "A3": "timeout"}


@pytest.mark.parametrize(("app", "error_class"), sorted(UNREACHABLE.items()))
def test_unreachable_apps_fail_inventory_with_the_error_class(faults: ForeignRun, app: str, error_class: str) -> None:
    assert FAULT_APPS[app] in ("refused", "tls_mismatch", "slow")
    checks = _checks(faults, "00_inventory")
    for kind in ("base", "health", "ready"):
        c = checks[f"inventory.{app}.{kind}"]
        assert c["status"] == "FAIL", f"{c['id']}: {c['status']} (want FAIL): {c['detail']}"
        assert error_class in c["detail"], f"{c['id']}: detail does not name {error_class}: {c['detail']}"


def test_503_only_fails_inventory(faults: ForeignRun) -> None:
    checks = _checks(faults, "00_inventory")
    for kind in ("base", "health", "ready"):
        c = checks[f"inventory.A5.{kind}"]
        assert c["status"] == "FAIL" and "503" in c["detail"], f"{c['id']}: {c['status']} {c['detail']}"


def test_reset_mid_body_fails_inventory_with_the_error_class(faults: ForeignRun) -> None:
    """200 and the headers, then the connection closes before the promised body: no answer."""
    assert faults.run_dir is not None
    probes = json.loads((faults.run_dir / "evidence" / "inventory_probes.json").read_text())
    checks = _checks(faults, "00_inventory")
    for probe in (p for p in probes if p["app"] == "A6"):
        # the fault is real: the client saw the body cut short (else this test proves nothing)
        assert probe["status"] == 200 and probe["error"] and probe["bytes"] < 2, probe
        c = checks[f"inventory.A6.{probe['kind']}"]
        assert c["status"] == "FAIL", (f"{c['id']}: {c['status']} (want FAIL: the body was cut short, "
                                       f"{probe['error']}: {probe['error_detail']}): {c['detail']}")
        assert probe["error"] in c["detail"], f"{c['id']}: detail does not name {probe['error']}: {c['detail']}"


def test_faults_gate_is_no_go_and_blocks_later_phases(faults: ForeignRun) -> None:
    go = _checks(faults, "00_inventory")["inventory.gate.go"]
    assert go["status"] == "FAIL", f"Phase 0 gate {go['status']} (want FAIL, NO-GO): {go['detail']}"
    table = faults.phase_table()
    for phase in ALL_PHASES[1:-1]:
        assert table[phase]["status"] in ("BLOCKED", "SKIPPED"), _why(faults, phase, table[phase])
    assert table["11_readiness_score"]["status"] == "OK", _why(faults, "11_readiness_score",
                                                              table["11_readiness_score"])


def test_declared_telemetry_store_that_answers_404_fails(faults: ForeignRun) -> None:
    """A declared capability that does not answer is a FAIL with evidence, not INCONCLUSIVE."""
    c = _checks(faults, "00_inventory")["inventory.gate.telemetry_acceptance"]
    assert c["status"] == "FAIL", f"{c['id']}: {c['status']} (want FAIL): {c['detail']}"
    assert "404" in c["detail"], c["detail"]


def test_faults_phases_01_02_03_end_ok_or_stopped(faults_partial: ForeignRun) -> None:
    table = faults_partial.phase_table()
    for phase, row in table.items():
        assert row["status"] in ("OK", "STOPPED"), _why(faults_partial, phase, row)
    load = table["03_baseline_load"]
    if load["status"] == "OK":  # it ran: against these faults it must have stopped on a stop condition
        stops = faults_partial.info.get("stop_conditions") or []
        assert any(s.get("phase") == "03_baseline_load" for s in stops), (
            f"03_baseline_load ran against refused, timing-out and 503 apps without meeting a stop condition; "
            f"stop conditions recorded: {stops}; load checks: "
            f"{ {k: (c['status'], c['detail'][:160]) for k, c in _checks(faults_partial, '03_baseline_load').items()} }")


def test_a_declared_store_that_is_absent_leaves_method_b_inconclusive_and_stops_nothing(
        faults_partial: ForeignRun) -> None:
    """No telemetry source is too little data (INCONCLUSIVE, with the reason), not lost events."""
    checks = _checks(faults_partial, "01_smoke")
    for app in FAULT_APPS:
        c = checks[f"smoke.{app}.agreement"]
        assert c["status"] == "INCONCLUSIVE" and "no telemetry source" in c["detail"], f"{c['id']}: {c}"
    stops = faults_partial.info.get("stop_conditions") or []
    assert all("telemetry" not in s["reason"] for s in stops), stops


def test_healthy_apps_with_few_samples_are_inconclusive_with_the_n_needed(healthy: ForeignRun) -> None:
    """Everything answered, but the example's 30 probes per endpoint cannot show 95%: no PASS on hope."""
    checks = _checks(healthy, "01_smoke")
    for app in HEALTHY_APPS:
        c = checks[f"smoke.{app}.health"]
        assert c["status"] == "INCONCLUSIVE" and "a PASS needs n ≥" in c["detail"], f"{c['id']}: {c}"
        agreement = checks[f"smoke.{app}.agreement"]
        assert agreement["status"] == "SKIPPED" and agreement["detail"].startswith("not applicable"), agreement
