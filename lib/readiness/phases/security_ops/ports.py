"""Port bindings of the local target processes: the right interface, one owner, no EADDRINUSE.

A service that listens on 0.0.0.0 when it should listen on loopback is exposed; two
processes on one port (one on 127.0.0.1, another on a wider address, or a stray copy
started twice) split or steal traffic; a restart that meets ``EADDRINUSE`` leaves the
service down until someone notices. Each of these is visible from the host, so the phase
looks rather than trusts the configuration:

- *listening*: some socket listens on the app's configured host and port;
- *interface*: nothing else listens on that port on another address;
- *one owner*: every listener on the port belongs to one process — on the sandbox, the
  process serving that app from its state folder (the launcher's own test);
- *exclusive*: a second bind of the address, the way a restarting server binds
  (``SO_REUSEADDR``), is refused with ``EADDRINUSE`` while the app runs — a successful
  bind would mean a second listener could join it;
- *restarts* (sandbox): the app's log, appended to across every start of the sandbox,
  records no bind failure.

Apps on other hosts are not local processes: their checks are SKIPPED.
"""

from __future__ import annotations

import contextlib
import errno
import re
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

from readiness.core.check import Check, Status
from readiness.core.verdict import combine, value_check
from readiness.params.model import App, is_loopback
from readiness.phasekit.context import Phase
from readiness.report.markdown import checks_table, header, md_table

EVIDENCE = "evidence/port_bindings.json"
REPORT = "reports/port_bindings_report_after.md"
TAGS = ("release_engineering", "reliability")
WILDCARDS = frozenset({"0.0.0.0", "::"})
#: What a failed bind leaves in a log: the sandbox's own line, Python's errno text, uvicorn's.
BIND_FAILURE = re.compile(r"is already in use|address already in use|EADDRINUSE|\[Errno 98\]", re.IGNORECASE)
STARTED = re.compile(r"serving \S+ \(pid \d+\)")


@dataclass(frozen=True)
class Listener:
    """One listening TCP socket on this host and the process that holds it."""

    ip: str
    port: int
    pid: int | None
    process: str  # name and arguments, shortened; empty when the process cannot be read


def _describe(pid: int | None) -> str:
    if pid is None:
        return ""
    with contextlib.suppress(psutil.Error):
        return " ".join(psutil.Process(pid).cmdline())[:200]
    return ""


def listeners(port: int | None = None) -> list[Listener]:
    """Every listening TCP socket (of one port), with its owning process where readable."""
    out = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and (port is None or conn.laddr.port == port):
            out.append(Listener(conn.laddr.ip, conn.laddr.port, conn.pid, _describe(conn.pid)))
    return sorted(out, key=lambda x: (x.port, x.ip, x.pid or 0))


def local_addresses() -> set[str]:
    """The IP addresses of this host's interfaces (where a local process can listen)."""
    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family in (socket.AF_INET, socket.AF_INET6)}


def is_local(host: str, addresses: set[str] | None = None) -> bool:
    """The app's host is this machine: loopback, or one of its interface addresses."""
    return is_loopback(host) or host.strip("[]") in (local_addresses() if addresses is None else addresses)


def _address_of(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    return host.strip("[]")


def bind_probe(host: str, port: int) -> int | None:
    """Bind ``host:port`` the way a restarting server does; the errno (None when it bound)."""
    address = _address_of(host)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return exc.errno
    return None


def log_findings(log: Path) -> tuple[int, list[str]]:
    """(starts recorded, bind-failure lines) in an app's log; a missing log has neither."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return 0, []
    return sum(bool(STARTED.search(line)) for line in lines), [line for line in lines if BIND_FAILURE.search(line)]


def shared_ports(apps: Sequence[App]) -> dict[str, list[str]]:
    """Configured collisions: ``host:port`` → the apps that share it."""
    by_addr: dict[str, list[str]] = {}
    for app in apps:
        by_addr.setdefault(f"{_address_of(app.host)}:{app.port}", []).append(app.id)
    return {addr: ids for addr, ids in by_addr.items() if len(ids) > 1}


def _sandbox_owner(phase: Phase) -> tuple[Path, dict[str, int]] | None:
    """The sandbox's state folder and recorded pids, when the params target a running sandbox."""
    if phase.params.target != "sandbox":
        return None
    from readiness.probe.sandbox_control import sandbox_status, state_dir

    state = sandbox_status(phase.params)  # its folder as the launcher resolved it: process command lines name it
    return (state.state_dir, dict(state.pids)) if state else (state_dir(phase.params).resolve(), {})


def _app_parts(phase: Phase, app: App, found: list[Listener], sandbox: tuple[Path, dict[str, int]] | None
               ) -> tuple[list[Check], dict[str, Any]]:
    """The per-app facts and the checks they decide."""
    expected = _address_of(app.host)
    common = dict(phase=phase.name, app=app.id, tags=TAGS, evidence=(EVIDENCE, REPORT))
    at_host = [x for x in found if x.ip == expected]
    elsewhere = [x for x in found if x.ip != expected]
    owners = sorted({x.pid for x in found if x.pid is not None})
    probe = bind_probe(app.host, app.port) if found else None
    fact: dict[str, Any] = {"expected": f"{expected}:{app.port}", "listeners": [asdict(x) for x in found],
                            "owners": owners, "bind_probe_errno": probe,
                            "bind_probe": "EADDRINUSE" if probe == errno.EADDRINUSE else
                            ("bound" if probe is None else errno.errorcode.get(probe, str(probe)))}
    parts = [
        value_check(id=f"ops.ports.{app.id}.listening", title=f"{app.id} listens on {expected}:{app.port}",
                    observed=bool(at_host), expected=True,
                    detail=", ".join(f"{x.ip}:{x.port} pid {x.pid}" for x in found) or "no listener", **common),
        value_check(id=f"ops.ports.{app.id}.interface", title=f"{app.id}: no listener on another address",
                    observed=len(elsewhere), expected=0, unit="listeners",
                    detail=", ".join(f"{x.ip}:{x.port} pid {x.pid}" for x in elsewhere), **common),
        value_check(id=f"ops.ports.{app.id}.exclusive", title=f"{app.id}: a second bind meets EADDRINUSE",
                    observed=fact["bind_probe"] if found else None, expected="EADDRINUSE", **common),
    ]
    owner_ok: bool | None = len(owners) == 1 if found else None
    why = f"pids {owners}" if owners else "owner not readable"
    if sandbox is not None and owner_ok:
        from sandbox import procs

        folder, recorded = sandbox
        owner_ok = procs.is_sandbox_app(owners[0], app.id, folder)
        why = f"pid {owners[0]} {'is' if owner_ok else 'is not'} the sandbox process serving {app.id}"
        if app.id in recorded and recorded[app.id] != owners[0]:
            why += f" (the launcher recorded pid {recorded[app.id]}: restarted since)"
    parts.append(value_check(id=f"ops.ports.{app.id}.owner", title=f"{app.id}: one process owns the port",
                             observed=owner_ok, expected=True, detail=why, **common))
    if sandbox is not None:
        starts, failures = log_findings(sandbox[0] / "logs" / f"{app.id}.log")
        fact.update(starts_logged=starts, bind_failures=failures[-5:])
        parts.append(value_check(id=f"ops.ports.{app.id}.restarts", title=f"{app.id}: no EADDRINUSE on any start",
                                 observed=len(failures), expected=0, unit="bind failures", n=starts,
                                 detail=f"{starts} starts logged" + (f"; last: {failures[-1]}" if failures else ""),
                                 **common))
    return parts, fact


def port_bindings(phase: Phase) -> pd.DataFrame:
    """Check every app's port binding; write the evidence and ``port_bindings_report_after.md``.

    Records ``ops.ports.<APP>`` (all of listening, interface, one owner, exclusive and, on
    the sandbox, restarts) and ``ops.ports.collisions`` (no two apps configured on one
    address).
    """
    p = phase.params
    sandbox = _sandbox_owner(phase)
    addresses, everything = local_addresses(), listeners()
    checks: list[Check] = []
    facts: dict[str, Any] = {}
    rows = []
    for app in p.apps:
        title = f"{app.id} listens on its port, alone, and restarts without EADDRINUSE"
        if not is_local(app.host, addresses):
            checks.append(Check(id=f"ops.ports.{app.id}", phase=phase.name, app=app.id, title=title,
                                status=Status.SKIPPED, tags=TAGS, detail=f"{app.host}: not a local process"))
            rows.append((app.id, f"{app.host}:{app.port}", "—", "—", "—", "SKIPPED"))
            continue
        parts, fact = _app_parts(phase, app, [x for x in everything if x.port == app.port], sandbox)
        facts[app.id] = fact
        check = combine(f"ops.ports.{app.id}", phase.name, title, parts, app=app.id, tags=TAGS,
                        evidence=(EVIDENCE, REPORT), severity="P1",
                        detail="; ".join(f"{c.id.rsplit('.', 1)[1]}: {c.detail}" for c in parts if c.detail))
        checks.append(check)
        rows.append((app.id, fact["expected"], ", ".join(f"{x['ip']}:{x['port']}" for x in fact["listeners"]) or "—",
                     ", ".join(map(str, fact["owners"])) or "—", fact["bind_probe"] if fact["listeners"] else "—",
                     str(check.status)))
    shared = shared_ports(p.apps)
    checks.append(value_check(id="ops.ports.collisions", phase=phase.name, title="No two apps share an address",
                              observed=len(shared), expected=0, unit="shared addresses", n=len(p.apps), tags=TAGS,
                              evidence=(EVIDENCE, REPORT), severity="P1",
                              detail="; ".join(f"{a}: {', '.join(ids)}" for a, ids in shared.items())))
    phase.record(checks)
    phase.run.write_json(EVIDENCE, {"apps": facts, "shared_addresses": shared})
    columns = ["app", "expected", "listening on", "owner pids", "second bind", "status"]
    text = "\n".join([
        header("Port bindings (after)", ecosystem=p.ecosystem, environment=p.environment,
               run_name=phase.run.root.name, profile_note=p.profile_note),
        "Each app must listen on its configured address only, in one process; a second bind of that "
        "address must meet EADDRINUSE while the app runs"
        + (", and no start of the sandbox may have met it (app logs)." if sandbox is not None else "."),
        "", md_table(columns, rows), "", "## Checks", "", checks_table(checks), ""])
    phase.run.write_text(REPORT, text)
    return pd.DataFrame(rows, columns=columns).set_index("app")
