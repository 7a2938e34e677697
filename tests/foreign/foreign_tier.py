"""Helpers of the foreign tier (servers, guard environment, runs); fixtures are in conftest.py."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOREIGN_VENV = ROOT / ".venv-foreign"
PRODUCT_BIN = Path(sys.executable).parent  # the product venv running pytest (.venv/bin)
GUARD_DIR = Path(__file__).resolve().parent / "netguard"
GUARD_ENV = "READINESS_NETGUARD_FILE"
EXAMPLES = ROOT / "params" / "examples"
FAKE_SECRET_NAME = "A8_TELEMETRY_KEY"
FAKE_SECRET_VALUE = "foreign-secret-value-123"
START_TIMEOUT_S = 20.0
RUN_TIMEOUT_S = 420.0
# Servers end by themselves after this long even if pytest dies without its teardown.
SERVER_LIFETIME_S = 1800

# Environment variables a run must not inherit: credentials of any kind, and proxies (they
# would send loopback traffic elsewhere).
_SECRETISH = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|PRIVATE|_KEY$|^KEY$|AUTH|COOKIE|SESSION)",
                        re.IGNORECASE)
_DROP_PREFIXES = ("STRIPE_", "OIDC_", "AWS_", "GOOGLE_", "AZURE_", "GITHUB_", "READINESS_")
_PROXIES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}

SUMMARY: dict[str, Any] = {"runs": {}}
# Also written outside pytest's tmp folders, which concurrent sessions rotate away: the table
# of the last tier run stays readable (outputs/ is ignored by git; only folders there are runs).
SUMMARY_FILE = ROOT / "outputs" / "foreign-tier-summary.json"


# -- network namespace ------------------------------------------------------------------
@dataclasses.dataclass
class NetNamespace:
    """Where the tier's servers and runs live: a loopback-only namespace, or (fallback) the host's."""

    holder: subprocess.Popen[str] | None
    reason: str  # why there is no namespace (fallback), or a description of the one there is

    @property
    def isolated(self) -> bool:
        return self.holder is not None

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace (empty in the fallback)."""
        if self.holder is None:
            return []
        return [shutil.which("nsenter") or "nsenter", f"--net=/proc/{self.holder.pid}/ns/net"]

    def run(self, argv: list[str], timeout: float = 30, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix(), *argv], capture_output=True, text=True, timeout=timeout, **kw)


def namespace_unavailable() -> str | None:
    """None when ``unshare -n`` + ``nsenter`` can give us a loopback-only namespace, else why not.

    ``FOREIGN_NETNS=off`` forces the fallback (the socket-level guard alone), to check it on a
    machine where namespaces work.
    """
    if os.environ.get("FOREIGN_NETNS") == "off":
        return "FOREIGN_NETNS=off"
    missing = [t for t in ("unshare", "nsenter", "ip") if shutil.which(t) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    try:
        probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up && ip -o addr show lo"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n did not run: {exc}"
    if probe.returncode != 0 or "127.0.0.1" not in probe.stdout:
        return f"unshare -n failed (exit {probe.returncode}): {probe.stderr.strip()[:200]}"
    return None


# -- processes ----------------------------------------------------------------------------
def bounded(argv: list[str]) -> list[str]:
    """``argv`` under coreutils ``timeout``: TERM after SERVER_LIFETIME_S, KILL 5 s later."""
    return ["timeout", "--kill-after=5", str(SERVER_LIFETIME_S), *argv]


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL after ``grace_s`` (bounded)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace_s)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"({path}: {exc})"


_FREE_PORTS = """
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
"""

_HTTP_STATUS = """
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=2)
try:
    c.request("GET", sys.argv[2]); print(c.getresponse().status)
except OSError as e:
    print("down", type(e).__name__)
"""


def free_ports(ns: NetNamespace, n: int) -> list[int]:
    """``n`` distinct loopback ports nothing listens on (in the namespace the servers use)."""
    out = ns.run([sys.executable, "-c", _FREE_PORTS, str(n)])
    assert out.returncode == 0, out.stderr
    ports = [int(p) for p in out.stdout.split()]
    assert len(set(ports)) == n
    return ports


def http_status(ns: NetNamespace, port: int, path: str) -> str:
    """One GET inside the namespace: the status code as text, or ``down <error>``."""
    out = ns.run([sys.executable, "-c", _HTTP_STATUS, str(port), path], timeout=10)
    return out.stdout.strip() or f"down {out.stderr.strip()[-200:]}"


def wait_until_answering(ns: NetNamespace, proc: subprocess.Popen[Any], port: int, path: str, expect: str,
                         log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before answering; log {log}:\n{tail(log)}")
        last = http_status(ns, port, path)
        if last == expect:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {expect} on 127.0.0.1:{port}{path} within {START_TIMEOUT_S:g} s "
                       f"(last: {last}); log {log}:\n{tail(log)}")


def guard_env(violations: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: the stripped environment) with the socket-level guard switched on."""
    env = dict(base if base is not None else clean_env())
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env[GUARD_ENV] = str(violations)
    return env


def clean_env() -> dict[str, str]:
    """This process's environment without secrets, credentials, proxies or readiness settings."""
    out = {}
    for key, value in os.environ.items():
        if key.lower() in _PROXIES or key.startswith(_DROP_PREFIXES) or _SECRETISH.search(key):
            continue
        out[key] = value
    return out


def read_violations(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- servers --------------------------------------------------------------------------------
@dataclasses.dataclass
class Gunicorn:
    ports: list[int]  # one bind per port (an app each, so that no two apps share an address)
    proc: subprocess.Popen[str]
    log: Path


def start_httpbin(ns: NetNamespace, ports: list[int], workdir: Path, name: str, threads: int,
                  violations: Path) -> Gunicorn:
    gunicorn = FOREIGN_VENV / "bin" / "gunicorn"
    if not gunicorn.exists():
        pytest.fail(f"{gunicorn} is missing: run `make foreign-setup` (make test builds it)")
    help_text = subprocess.run([str(gunicorn), "--help"], capture_output=True, text=True, timeout=30).stdout
    control = ["--no-control-socket"] if "--no-control-socket" in help_text else []
    log = workdir / f"{name}.log"
    binds = [arg for port in ports for arg in ("-b", f"127.0.0.1:{port}")]
    argv = [str(gunicorn), *control, *binds, "-w", "2", "-k", "gthread", "--threads", str(threads),
            "--timeout", "30", "--graceful-timeout", "2", "--error-logfile", str(log), "--access-logfile",
            str(workdir / f"{name}.access.log"), "--chdir", str(workdir), "httpbin:app"]
    with log.open("a") as out:
        proc = subprocess.Popen([*ns.prefix(), *bounded(argv)], stdout=out, stderr=subprocess.STDOUT, text=True,
                                env=guard_env(violations), start_new_session=True, cwd=workdir)
    server = Gunicorn(ports, proc, log)
    try:
        for port in ports:
            wait_until_answering(ns, proc, port, "/status/200", "200", log, f"gunicorn httpbin ({name})")
    except BaseException:
        stop_process(proc)
        raise
    return server


NGINX_CONF = """\
# written by tests/foreign/conftest.py
{user_line}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ text/html html; application/json json; application/xml xml; text/plain txt; }}
    default_type application/octet-stream;
    upstream httpbin_faults {{ server 127.0.0.1:{fault_upstream}; keepalive 8; }}

    # static files: a healthy service; no telemetry store (its events route answers 404)
    server {{
{static_listens}
        root {d}/www;
        location /api/telemetry/ {{ return 404; }}
    }}
    # garbage: 200 with random binary bytes, declared as the JSON the suite expects, on every path
    server {{
        listen 127.0.0.1:{garbage};
        root {d}/garbage;
        location / {{ default_type application/json; rewrite ^ /garbage.bin break; }}
    }}
    # only 503
    server {{
        listen 127.0.0.1:{s503};
        location / {{ return 503; }}
    }}
    # slower than the client's read timeout: every path is httpbin /delay/{delay_s}
    server {{
        listen 127.0.0.1:{slow};
        location / {{
            proxy_read_timeout 30s;
            rewrite ^ /delay/{delay_s}? break;
            proxy_pass http://httpbin_faults;
        }}
    }}
    # reset mid-body: httpbin /drip promises 2 bytes over 4 s; nginx forwards the headers and the
    # first byte, then gives up on the upstream after 1 s and closes the client connection
    server {{
        listen 127.0.0.1:{reset};
        location / {{
            proxy_buffering off;
            proxy_read_timeout 1s;
            rewrite ^ /drip?duration=4&numbytes=2&code=200&delay=0? break;
            proxy_pass http://httpbin_faults;
        }}
    }}
}}
"""

STATIC_FILES = {
    "index.html": "<!doctype html><html><head><title>foreign tier</title></head><body><h1>nginx</h1></body></html>\n",
    "health.json": '{"status": "ok"}\n',
    "ready.json": '{"ready": true}\n',
    "catalog.json": '{"documents": [{"id": "doc-1", "title": "Intro"}, {"id": "doc-2", "title": "Advanced"}]}\n',
    "listings.json": '{"listings": [{"id": "lst-1", "title": "Tutoring", "price_cents": 1000}]}\n',
    "prices.json": '{"prices": [{"id": "price_micro_qa", "unit_amount": 50, "currency": "usd"}]}\n',
    "tiles.json": '{"tiles": [{"id": "growth_signups", "value": 0}]}\n',
    "robots.txt": "User-agent: *\nAllow: /\n",
    "sitemap.xml": ('<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                    "<url><loc>http://127.0.0.1/index.html</loc></url></urlset>\n"),
}


@dataclasses.dataclass
class Nginx:
    ports: dict[str, int]  # one port per fault
    static_ports: list[int]  # the static site, one port per app
    proc: subprocess.Popen[str]
    prefix_dir: Path

    @property
    def error_log(self) -> Path:
        return self.prefix_dir / "logs" / "error.log"


def start_nginx(ns: NetNamespace, prefix_dir: Path, ports: dict[str, int], static_ports: list[int],
                fault_upstream: int, delay_s: int) -> Nginx:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is missing: run `make foreign-setup` (make test installs it from Debian)")
    for sub in ("logs", "tmp", "www", "garbage"):
        (prefix_dir / sub).mkdir(parents=True, exist_ok=True)
    for name, text in STATIC_FILES.items():
        (prefix_dir / "www" / name).write_text(text)
    garbage = os.urandom(4096)
    if garbage.lstrip()[:1] in (b"{", b"["):  # never accidentally the start of JSON
        garbage = b"\xff" + garbage
    (prefix_dir / "garbage" / "garbage.bin").write_bytes(garbage)
    # As root, nginx's workers would switch to 'nobody', who cannot read a private tmp folder.
    user_line = "user root;" if os.geteuid() == 0 else ""
    listens = "\n".join(f"        listen 127.0.0.1:{port};" for port in static_ports)
    conf = NGINX_CONF.format(d=prefix_dir, fault_upstream=fault_upstream, delay_s=delay_s, user_line=user_line,
                             static_listens=listens, **ports)
    (prefix_dir / "nginx.conf").write_text(conf)
    argv = [binary, "-p", str(prefix_dir), "-c", str(prefix_dir / "nginx.conf"), "-e",
            str(prefix_dir / "logs" / "error.log"), "-g", "daemon off;"]
    check = ns.run([*argv, "-t"])
    assert check.returncode == 0, f"nginx -t refused the generated config:\n{check.stderr}"
    log = prefix_dir / "logs" / "stderr.log"
    with log.open("a") as out:
        proc = subprocess.Popen([*ns.prefix(), *bounded(argv)], stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    server = Nginx(ports, static_ports, proc, prefix_dir)
    try:
        for port in static_ports:
            wait_until_answering(ns, proc, port, "/health.json", "200", server.error_log, "nginx")
        wait_until_answering(ns, proc, ports["s503"], "/health.json", "503", server.error_log, "nginx")
    except BaseException:
        stop_process(proc)
        raise
    return server


@dataclasses.dataclass
class ForeignServers:
    """The third-party servers of the tier and the URL of each fault."""

    ns: NetNamespace
    httpbin: Gunicorn
    httpbin_faults: Gunicorn
    nginx: Nginx
    dead_port: int
    delay_s: int
    workdir: Path
    violations: Path  # the servers' own guard file (httpbin workers)

    def url(self, kind: str, app: str) -> str:
        """The base URL of ``app`` on the server (or fault) ``kind``; every app has its own port."""
        i = APPS.index(app)
        n = self.nginx.ports
        return {
            "httpbin": f"http://127.0.0.1:{self.httpbin.ports[i]}",
            "tls_mismatch": f"https://127.0.0.1:{self.httpbin.ports[i]}",
            "refused": f"http://127.0.0.1:{self.dead_port}",
            "static": f"http://127.0.0.1:{self.nginx.static_ports[i]}",
            "garbage": f"http://127.0.0.1:{n['garbage']}",
            "only_503": f"http://127.0.0.1:{n['s503']}",
            "slow": f"http://127.0.0.1:{n['slow']}",
            "reset": f"http://127.0.0.1:{n['reset']}",
        }[kind]

    def logs(self) -> str:
        return "\n".join(f"--- {p}\n{tail(p, 15)}" for p in (self.httpbin.log, self.httpbin_faults.log,
                                                               self.nginx.error_log))


# -- running the suite ------------------------------------------------------------------------
APPS = ("A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8")
HEALTHY_APPS = {"A1": "httpbin", "A2": "httpbin", "A3": "httpbin", "A4": "static", "A5": "httpbin",
                "A6": "static", "A7": "static", "A8": "static"}
FAULT_APPS = {"A1": "refused", "A2": "tls_mismatch", "A3": "slow", "A4": "garbage", "A5": "only_503",
              "A6": "reset", "A7": "httpbin", "A8": "static"}
PARAMS = {"healthy": (EXAMPLES / "foreign_healthy.yaml", HEALTHY_APPS),
          "faults": (EXAMPLES / "foreign_faults.yaml", FAULT_APPS)}


@dataclasses.dataclass
class ForeignRun:
    """One ``readiness run`` of the tier, read back from its run folder."""

    name: str
    argv: list[str]
    returncode: int
    run_dir: Path | None
    console: Path
    violations: Path
    elapsed_s: float
    namespace: bool

    @property
    def info(self) -> dict[str, Any]:
        assert self.run_dir is not None, f"{self.name}: no run folder was created; console:\n{tail(self.console)}"
        return json.loads((self.run_dir / "run.json").read_text())

    def checks(self) -> list[dict[str, Any]]:
        assert self.run_dir is not None
        out = []
        for path in sorted((self.run_dir / "checks").glob("*.json")):
            out.extend(json.loads(path.read_text())["checks"])
        return out

    def phase_table(self) -> dict[str, dict[str, Any]]:
        """phase → {status, error, elapsed_s, counts per check status}."""
        info = self.info
        checks = self.checks()
        table: dict[str, dict[str, Any]] = {}
        for phase in info.get("phases_selected") or []:
            rec = (info.get("phases") or {}).get(phase, {})
            mine = [c for c in checks if c.get("phase") == phase]
            counts: dict[str, int] = {}
            for c in mine:
                counts[c["status"]] = counts.get(c["status"], 0) + 1
            table[phase] = {"status": rec.get("status"), "error": rec.get("error"),
                            "elapsed_s": rec.get("elapsed_s"), "checks": counts}
        return table

    def notebook_traceback(self, phase: str) -> str:
        """The first error output of the executed notebook of ``phase`` (for failure messages)."""
        assert self.run_dir is not None
        nb = self.run_dir / "notebooks" / f"{phase}.ipynb"
        if not nb.exists():
            return "(no executed notebook)"
        data = json.loads(nb.read_text())
        for cell in data.get("cells", []):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    tb = "\n".join(output.get("traceback", []))
                    return re.sub(r"\x1b\[[0-9;]*m", "", tb)[-2500:]
        return "(no error output in the notebook)"


def run_readiness(servers: ForeignServers, name: str, params_file: Path, apps: Mapping[str, str], out: Path,
                  phases: str | None = None) -> ForeignRun:
    """``readiness run`` as a subprocess inside the guard, base URLs pointing at the servers."""
    out.mkdir(parents=True, exist_ok=True)
    violations = out.parent / f"{out.name}.netguard.jsonl"
    console = out.parent / f"{out.name}.console.log"
    env = guard_env(violations)
    env.update({f"{app}_BASE_URL": servers.url(kind, app) for app, kind in apps.items()})
    env[FAKE_SECRET_NAME] = FAKE_SECRET_VALUE
    env["K6_NO_USAGE_REPORT"] = "true"
    argv = [str(PRODUCT_BIN / "readiness"), "run", "--params", str(params_file), "--out", str(out)]
    if phases:
        argv += ["--phases", phases]
    t0 = time.monotonic()
    with console.open("w") as log:
        proc = subprocess.Popen([*servers.ns.prefix(), *argv], stdout=log, stderr=subprocess.STDOUT, text=True,
                                env=env, cwd=out, start_new_session=True)
        try:
            proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_process(proc, grace_s=20)
            log.write(f"\n[foreign tier] killed after {RUN_TIMEOUT_S:g} s\n")
    folders = [p for p in out.iterdir() if (p / "run.json").exists()]
    run = ForeignRun(name, argv, proc.returncode, folders[0] if len(folders) == 1 else None, console, violations,
                     round(time.monotonic() - t0, 1), servers.ns.isolated)
    if run.run_dir is not None:
        SUMMARY["runs"][name] = {"params": str(params_file.relative_to(ROOT)), "phases_arg": phases,
                                  "exit_code": proc.returncode, "status": run.info.get("status"),
                                  "elapsed_s": run.elapsed_s, "run_dir": str(run.run_dir),
                                  "network_namespace": servers.ns.isolated, "phases": run.phase_table()}
    else:
        SUMMARY["runs"][name] = {"params": str(params_file.relative_to(ROOT)), "exit_code": proc.returncode,
                                  "run_dir": None, "console_tail": tail(console, 10)}
    return run
