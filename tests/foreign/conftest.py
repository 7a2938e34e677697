"""The foreign tier: the suite run against real third-party HTTP servers on loopback.

Servers (installed by ``make foreign-setup``, which ``make test`` depends on):

* **httpbin 0.10 under gunicorn** from PyPI, in its own venv (``.venv-foreign/``): two
  instances, one serving the healthy routes and one serving the slow and dripping routes
  the faults are made of, so that requests held open by a fault never starve a healthy app.
* **nginx** from Debian, on a config written here into a tmp folder: static files, random
  bytes served as JSON, ``return 503``, httpbin's ``/delay`` behind a proxy, and httpbin's
  ``/drip`` behind a 1 s ``proxy_read_timeout`` (headers and one byte, then the connection
  closes: a body cut short).

Network guard, both layers:

(a) when ``unshare -n`` works (root), one network namespace with nothing but ``lo`` holds the
    servers and every ``readiness run`` of the tier (entered with ``nsenter --net``): no
    process of a run can reach anything but loopback, whatever language it is written in
    (k6, Chromium);
(b) always, ``netguard/sitecustomize.py`` on ``PYTHONPATH`` with ``READINESS_NETGUARD_FILE``:
    every Python process (the runner, its papermill kernels, the httpbin workers) records and
    refuses any non-loopback connect or name lookup. The tests assert the files are empty.

Ports are found free (in the namespace when there is one), every wait is bounded, and the
servers' logs stay in the tier's tmp folder for failure messages.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from foreign_tier import (
    SUMMARY,
    SUMMARY_FILE,
    ForeignServers,
    NetNamespace,
    free_ports,
    namespace_unavailable,
    start_httpbin,
    start_nginx,
    stop_process,
)


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNamespace]:
    """One loopback-only network namespace for the whole tier, or the documented fallback."""
    why_not = namespace_unavailable()
    if why_not:
        SUMMARY["network_namespace"] = f"unavailable ({why_not}): socket-level guard only"
        yield NetNamespace(None, why_not)
        return
    holder = subprocess.Popen(["unshare", "-n", "sh", "-c", "ip link set lo up && echo ready && exec sleep 3600"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()  # bounded: sh prints "ready" or exits (EOF)
        if line.strip() != "ready":
            raise RuntimeError(f"network namespace holder did not start: {line}{holder.stdout.read()}")
        ns = NetNamespace(holder, f"loopback-only namespace held by pid {holder.pid}")
        links = ns.run(["ip", "-o", "link", "show"]).stdout.strip().splitlines()
        assert [ln.split(":")[1].strip() for ln in links] == ["lo"], f"namespace has links other than lo: {links}"
        SUMMARY["network_namespace"] = "loopback-only (unshare -n), servers and runs inside"
        yield ns
    finally:
        stop_process(holder)
        holder.stdout.close()  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def foreign_servers(netns: NetNamespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForeignServers]:
    """httpbin (twice: healthy routes, fault upstream) and nginx on free loopback ports."""
    workdir = tmp_path_factory.mktemp("foreign-servers")
    violations = workdir / "servers.netguard.jsonl"
    ports = free_ports(netns, 8 + 8 + 6)  # httpbin and nginx static: one per app; the faults: one each
    httpbin_ports, static_ports = ports[:8], ports[8:16]
    hb_faults, garbage, s503, slow, reset, dead = ports[16:]
    started: list[subprocess.Popen[Any]] = []
    try:
        httpbin = start_httpbin(netns, httpbin_ports, workdir, "httpbin", threads=8, violations=violations)
        started.append(httpbin.proc)
        httpbin_faults = start_httpbin(netns, [hb_faults], workdir, "httpbin-faults", threads=64,
                                       violations=violations)
        started.append(httpbin_faults.proc)
        nginx = start_nginx(netns, workdir / "nginx",
                            {"garbage": garbage, "s503": s503, "slow": slow, "reset": reset}, static_ports,
                            fault_upstream=hb_faults, delay_s=4)
        started.append(nginx.proc)
        yield ForeignServers(netns, httpbin, httpbin_faults, nginx, dead, 4, workdir, violations)
    finally:
        for proc in reversed(started):
            stop_process(proc)


@pytest.fixture(scope="session", autouse=True)
def foreign_summary_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "foreign-summary.json"
    SUMMARY["path"] = str(path)
    return path


def _table(summary: dict[str, Any]) -> list[str]:
    lines = []
    statuses = ("PASS", "FAIL", "INCONCLUSIVE", "SKIPPED", "BLOCKED", "STOPPED", "ERROR")
    for name, run in summary.get("runs", {}).items():
        lines.append(f"{name}: {run.get('params')} --phases {run.get('phases_arg') or 'all'} → status "
                     f"{run.get('status')}, exit {run.get('exit_code')}, {run.get('elapsed_s')} s")
        lines.append(f"  {'phase':<24} {'status':<8} " + " ".join(f"{s[:5]:>5}" for s in statuses))
        for phase, row in (run.get("phases") or {}).items():
            counts = row.get("checks", {})
            lines.append(f"  {phase:<24} {str(row.get('status')):<8} "
                         + " ".join(f"{counts.get(s, 0):>5}" for s in statuses))
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not SUMMARY.get("runs"):
        return
    path = SUMMARY.get("path")
    text = json.dumps(SUMMARY, indent=2)
    if path:
        Path(path).write_text(text)
    SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY_FILE.write_text(text)
    terminalreporter.section("foreign tier: per-phase status and check counts")
    terminalreporter.write_line(f"network guard: {SUMMARY.get('network_namespace')}; socket-level guard on")
    for line in _table(SUMMARY):
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"summary JSON: {SUMMARY_FILE} (and {path})")
