"""Each fault of the tier is real, seen by an independent client (curl) in the same namespace.

The suite's verdicts on the fault mix mean something only if httpbin and nginx really
produce the faults the params claim: a refused connection, a TLS handshake against plain
HTTP, a route slower than the read timeout, random bytes served as JSON, only 503, a body
cut short after the headers, and a telemetry store that answers 404.
"""

from __future__ import annotations

import json
import shutil

import pytest
from foreign_tier import ForeignServers

pytestmark = pytest.mark.foreign

# kind → (path, curl exit code, HTTP status curl reports, what the fault is)
FAULTS = {
    "refused": ("/get", 7, "000", "connection refused"),
    "tls_mismatch": ("/get", 35, "000", "TLS handshake against a plain-HTTP port"),
    "slow": ("/get", 28, "000", "no answer within the client's 2 s read timeout"),
    "only_503": ("/anything", 0, "503", "503 on every path"),
    "reset": ("/listings.json", 18, "200", "headers sent, then the connection closes mid-body"),
}


def _curl(servers: ForeignServers, url: str, *extra: str) -> tuple[int, str, bytes]:
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is missing: run `make foreign-setup` (make test installs it from Debian)")
    done = servers.ns.run([curl, "-sS", "-k", "--max-time", "3", "-o", "-", "-w", "\n%{http_code}", *extra, url],
                          timeout=20)
    body, _, code = done.stdout.rpartition("\n")
    return done.returncode, code, body.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_is_real(foreign_servers: ForeignServers, kind: str) -> None:
    path, exit_code, status, what = FAULTS[kind]
    url = foreign_servers.url(kind, "A1") + path
    got_exit, got_status, _ = _curl(foreign_servers, url)
    assert (got_exit, got_status) == (exit_code, status), f"{url}: not {what}\n{foreign_servers.logs()}"


def test_garbage_is_served_as_json_but_is_not_json(foreign_servers: ForeignServers) -> None:
    url = foreign_servers.url("garbage", "A4") + "/catalog.json"
    done = foreign_servers.ns.run([shutil.which("curl") or "curl", "-sS", "-D", "-", "-o", "/dev/null", url])
    assert done.returncode == 0 and " 200" in done.stdout.splitlines()[0], done.stdout + done.stderr
    assert "content-type: application/json" in done.stdout.lower(), done.stdout
    body = (foreign_servers.nginx.prefix_dir / "garbage" / "garbage.bin").read_bytes()
    with pytest.raises(ValueError):
        json.loads(body)


def test_telemetry_store_route_answers_404_while_the_app_is_up(foreign_servers: ForeignServers) -> None:
    base = foreign_servers.url("static", "A8")
    assert _curl(foreign_servers, base + "/health.json")[:2] == (0, "200")
    assert _curl(foreign_servers, base + "/api/telemetry/events?limit=1")[:2] == (0, "404")
    assert _curl(foreign_servers, base + "/api/telemetry/events", "-X", "POST", "-d", "{}")[:2] == (0, "404")


def test_healthy_routes_answer(foreign_servers: ForeignServers) -> None:
    """The healthy example's routes exist on their servers (else its verdicts would be about typos)."""
    for app, kind, paths in (("A1", "httpbin", ("/", "/status/200", "/get", "/json", "/html", "/uuid")),
                             ("A4", "static", ("/", "/health.json", "/ready.json", "/catalog.json",
                                               "/listings.json", "/sitemap.xml", "/index.html", "/tiles.json"))):
        for path in paths:
            code = _curl(foreign_servers, foreign_servers.url(kind, app) + path)[:2]
            assert code == (0, "200"), f"{app} {kind} {path}: {code}"
