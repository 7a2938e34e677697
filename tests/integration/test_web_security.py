"""The web security probes against real sandbox apps and small misbehaving servers.

Sandbox A1, A7 and A8 run on 29501–29503. Small Starlette servers play the bad cases:
29504 reflects any Origin with credentials and leaves an admin path open, 29505 sends
``*`` with credentials behind strong headers and has no admin paths, and 29506–29508 serve https with a
certificate about to expire, a healthy one, and one from an unknown CA.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from readiness.core.check import Status
from readiness.core.runfolder import RunFolder
from readiness.params.model import App, load_params
from readiness.params.sections import Security
from readiness.phasekit.context import Phase
from readiness.phasekit.observatory import grade
from readiness.phases.security_ops.web_security import (
    MIN_HEADER_SCORE,
    admin_endpoints,
    cors,
    observatory_grades,
    tls,
)
from sandbox import launcher

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "https://cors-probe.invalid"
STRONG = {"content-security-policy": "default-src 'none'; frame-ancestors 'none'",
          "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def _reflecting(request: Request) -> Response:
    origin = request.headers.get("origin", "")
    return JSONResponse({"ok": True}, headers={"Access-Control-Allow-Origin": origin,
                                               "Access-Control-Allow-Credentials": "true"})


def _wildcard(request: Request) -> Response:
    return JSONResponse({"ok": True}, headers={**STRONG, "Access-Control-Allow-Origin": "*",
                                               "Access-Control-Allow-Credentials": "true"})


BAD_APPS = {
    "X1": Starlette(routes=[Route("/", _reflecting, methods=["GET", "OPTIONS"]),
                            Route("/api/items", _reflecting, methods=["GET", "OPTIONS"]),
                            Route("/admin/faults", lambda r: JSONResponse({"faults": {}}))]),
    "X2": Starlette(routes=[Route("/", _wildcard, methods=["GET", "OPTIONS"]),
                            Route("/api/items", _wildcard, methods=["GET", "OPTIONS"])]),
}


def _cert(subject: str, key: Any, issuer: x509.Name, signer: Any, days: float, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        import ipaddress
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA, leaves valid 5 and 90 days signed by it, and a leaf from a CA nobody trusts."""
    folder = tmp_path_factory.mktemp("pki")
    out: dict[str, Path] = {}
    cas = {}
    for name in ("ca", "rogue"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"test {name}", key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test {name}")]),
                     key, 30, ca=True)
        cas[name] = (key, cert)
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[name] = folder / f"{name}.pem"
    for leaf, ca_name, days in (("short", "ca", 5), ("good", "ca", 90), ("untrusted", "rogue", 90)):
        key = ec.generate_private_key(ec.SECP256R1())
        ca_key, ca_cert = cas[ca_name]
        cert = _cert("127.0.0.1", key, ca_cert.subject, ca_key, days, ca=False)
        (folder / f"{leaf}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{leaf}.key").write_bytes(_pem_key(key))
        out[leaf] = folder / leaf
    return out


class _Server:
    """One uvicorn server in a thread on a fixed loopback port."""

    def __init__(self, app: Starlette, port: int, tls_files: Path | None = None) -> None:
        ssl_kw = {"ssl_certfile": f"{tls_files}.crt", "ssl_keyfile": f"{tls_files}.key"} if tls_files else {}
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off", **ssl_kw)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def _app(app_id: str, port: int, smoke: str, scheme: str = "http") -> App:
    return App(id=app_id, name=app_id, role="test", owner="test", base_url=f"{scheme}://127.0.0.1:{port}",
               smoke_action={"name": "smoke", "method": "GET", "path": smoke})


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> Iterator[Phase]:
    state_dir = tmp_path_factory.mktemp("sandbox-state")
    specs = [launcher.AppSpec("A1", 29501), launcher.AppSpec("A7", 29502), launcher.AppSpec("A8", 29503)]
    ok = Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))])
    servers = [_Server(BAD_APPS["X1"], 29504), _Server(BAD_APPS["X2"], 29505),
               _Server(ok, 29506, pki["short"]), _Server(ok, 29507, pki["good"]),
               _Server(ok, 29508, pki["untrusted"])]
    launcher.up(specs, state_dir, env={"A8_TELEMETRY_KEY": "test-" + secrets.token_urlsafe(12)}, timeout_s=20)
    try:
        for s in servers:
            s.start()
        params_file = ROOT / "params" / "sandbox.yaml"
        base = load_params(params_file)
        apps = [_app("A1", 29501, "/.well-known/openid-configuration"), _app("A7", 29502, "/sitemap.xml"),
                _app("A8", 29503, "/api/tiles"), _app("X1", 29504, "/api/items"), _app("X2", 29505, "/api/items"),
                _app("T1", 29506, "/", "https"), _app("T2", 29507, "/", "https"), _app("T3", 29508, "/", "https")]
        params = base.model_copy(update={"apps": apps, "target": "external",
                                         "security": Security(cors_probe_origin=ORIGIN)})
        run = RunFolder.create(tmp_path_factory.mktemp("outputs"), params, params_file, mode="interactive")
        yield Phase(name="10_security_ops", params=params, params_file=params_file, run=run)
    finally:
        for s in servers:
            s.stop()
        launcher.down(state_dir)


def _checks(phase: Phase, prefix: str) -> dict[str, Any]:
    return {c.app: c for c in phase.run.read_checks("10_security_ops") if c.id == f"{prefix}.{c.app}"}


def test_header_grades_follow_the_real_headers(phase: Phase) -> None:
    frame = observatory_grades(phase)
    evidence = json.loads(phase.run.path("evidence/security_headers.json").read_text())
    checks = _checks(phase, "security.headers")
    for app_id in ("A1", "A7", "A8", "X2"):
        pages = evidence["apps"][app_id]["pages"]
        assert len(pages) == 2
        scores = []
        for page in pages:
            cookies = page["headers"].get("set-cookie", "")
            scores.append(grade(page["headers"], cookies.split("\n") if cookies else [], https=False).score)
            assert page["score"] == scores[-1]
        check = checks[app_id]
        assert check.observed == min(scores) == frame.loc[app_id, "score"]
        assert check.status is (Status.PASS if min(scores) >= MIN_HEADER_SCORE else Status.FAIL)
        assert check.severity == "P1" and check.tags == ("security",)
    # the sandbox sends no security headers: a finding, with the failing tests named
    assert checks["A7"].status is Status.FAIL and "content-security-policy" in checks["A7"].detail
    # strong headers over http still lose HSTS and redirection: 100 - 20 - 20 = 60 (bonuses withheld)
    assert checks["X2"].observed == 60 and frame.loc["X2", "grade"] == "C+"


def test_cors_reflection_and_wildcard_with_credentials_fail(phase: Phase) -> None:
    cors(phase)
    checks = _checks(phase, "security.cors")
    for app_id in ("A1", "A7", "A8"):
        assert checks[app_id].status is Status.PASS, checks[app_id].detail
    assert checks["X1"].status is Status.FAIL and checks["X1"].observed == 2
    assert f"reflects the probe origin {ORIGIN} with Access-Control-Allow-Credentials: true" in checks["X1"].detail
    assert checks["X2"].status is Status.FAIL
    assert "Access-Control-Allow-Origin: * with Access-Control-Allow-Credentials: true" in checks["X2"].detail


def test_admin_paths_need_credentials(phase: Phase) -> None:
    admin_endpoints(phase)
    checks = _checks(phase, "security.admin")
    for app_id in ("A1", "A7", "A8"):
        assert checks[app_id].status is Status.PASS
        assert checks[app_id].detail.endswith("/admin/faults 401, /admin/flags 401")
    assert checks["X1"].status is Status.FAIL
    assert checks["X1"].detail.endswith("/admin/faults answered 200 without credentials")
    assert checks["X2"].status is Status.SKIPPED
    assert checks["X2"].detail == "no admin path exists on X2: /admin/faults, /admin/flags answered 404"
    # the https servers' private CA is unknown to the HTTP client: no answer, no verdict
    assert checks["T2"].status is Status.FAIL and "certificate verify failed" in checks["T2"].detail  # a TLS failure is observed


def test_tls_expiry_protocol_and_trust(phase: Phase, pki: dict[str, Path]) -> None:
    tls(phase, cafile=str(pki["ca"]))
    checks = _checks(phase, "security.tls")
    for app_id in ("A1", "A7", "A8", "X1"):
        assert checks[app_id].status is Status.SKIPPED and checks[app_id].detail.startswith("not https")
    assert checks["T2"].status is Status.PASS
    assert checks["T1"].status is Status.FAIL and "T1.expiry (FAIL)" in checks["T1"].detail
    expiry = next(c for c in phase.run.read_checks("10_security_ops") if c.id == "security.tls.T1.expiry")
    assert 4.9 < expiry.observed <= 5.0 and expiry.threshold == 14.0
    assert checks["T3"].status is Status.FAIL and "certificate not trusted" in checks["T3"].detail
